import { type Family, familyBits, formatAddress } from '../bindings/address.js';
import { type Binding, type Protocol } from '../bindings/binding.js';
import { type Table } from '../table/table.js';

/**
 * Kernel steering's first step: the whole table compiled, with its precedence, into disjoint rectangles
 * (address interval . port interval) -> label, one sorted list per protocol and family, ready to become the
 * elements of an nftables interval map (`ipv4_addr . inet_service : verdict`). Pure: no nftables here.
 *
 * A lookup of (address, port) asks two groups, port 0 ("wild") and the port itself ("specific"): the
 * longer prefix wins, the specific port at equal length. So, with W the wild group's answer at an address:
 *
 *   - every port gets W's label, except
 *   - port p wherever p's group answers with a prefix at least as long as W's and a different label
 *     (an "exception" of port p).
 *
 * Each maximal address run of one W label is emitted port-major: the ports no exception touches inside the
 * run as whole-run rectangles, and for each port that has exceptions, the parts of the run its exceptions
 * leave. The exceptions themselves are one rectangle per maximal address run. This keeps the count linear
 * in the flattened intervals (address-major slicing would repeat every exception port in every slice).
 */
export interface Entry {
  /** Addresses as unsigned integers (IPv6 as 128 bits), inclusive. */
  readonly addrLo: bigint;
  readonly addrHi: bigint;
  /** Inclusive; 0-65535 is every port. */
  readonly portLo: number;
  readonly portHi: number;
  readonly label: string;
}

export type CompiledTable = Record<Protocol, Record<Family, Entry[]>>;

const MAX_PORT = 65535;

export function compileTable(table: Table): CompiledTable {
  return {
    tcp: { 4: compileSpace(table, 'tcp', 4), 6: compileSpace(table, 'tcp', 6) },
    udp: { 4: compileSpace(table, 'udp', 4), 6: compileSpace(table, 'udp', 6) },
  };
}

/** One protocol and family's entries, sorted by address then port, with no two overlapping. */
export function compileSpace(table: Table, protocol: Protocol, family: Family): Entry[] {
  const bits = familyBits(family);
  const top = (1n << BigInt(bits)) - 1n;
  let wild: Segment[] = [{ lo: 0n, hi: top, label: undefined, length: -1 }];
  const specific: { port: number; segments: Segment[] }[] = [];
  for (const { port, bindings } of table.groups(protocol, family)) {
    if (port === 0) wild = flatten(bindings, bits);
    else specific.push({ port, segments: flatten(bindings, bits) });
  }

  // The wild answer's runs by label alone (precedence needed the lengths; the output does not).
  const runs: Run[] = [];
  const runOf: number[] = [];
  for (const w of wild) {
    const last = runs[runs.length - 1];
    if (last !== undefined && last.label === w.label) last.hi = w.hi;
    else runs.push({ lo: w.lo, hi: w.hi, label: w.label, exceptions: [] });
    runOf.push(runs.length - 1);
  }

  const out: MutableEntry[] = [];
  for (const { port, segments } of specific) {
    let last: MutableEntry | undefined;
    for (const s of segments) {
      if (s.label === undefined) continue;
      for (let i = segmentAt(wild, s.lo); i < wild.length && wild[i]!.lo <= s.hi; i++) {
        const w = wild[i]!;
        if (s.length < w.length || s.label === w.label) continue;
        const lo = s.lo > w.lo ? s.lo : w.lo;
        const hi = s.hi < w.hi ? s.hi : w.hi;
        runs[runOf[i]!]!.exceptions.push({ port, lo, hi });
        if (last !== undefined && last.label === s.label && last.addrHi + 1n === lo) last.addrHi = hi;
        else out.push((last = { addrLo: lo, addrHi: hi, portLo: port, portHi: port, label: s.label }));
      }
    }
  }
  for (const run of runs) if (run.label !== undefined) carve(run, run.label, out);
  return merge(out);
}

interface Segment {
  readonly lo: bigint;
  hi: bigint;
  readonly label: string | undefined;
  /** The winning prefix's length, -1 for none. */
  readonly length: number;
}

/** A maximal run of one wild label, and the exceptions inside it: ascending by port, then address. */
interface Run {
  readonly lo: bigint;
  hi: bigint;
  readonly label: string | undefined;
  readonly exceptions: { port: number; lo: bigint; hi: bigint }[];
}

type MutableEntry = { -readonly [K in keyof Entry]: Entry[K] };

/** Emits the run's label everywhere in it that its exceptions leave. */
function carve(run: Run, label: string, out: MutableEntry[]): void {
  let freePort = 0;
  const x = run.exceptions;
  for (let i = 0; i < x.length;) {
    const port = x[i]!.port;
    if (port > freePort) out.push({ addrLo: run.lo, addrHi: run.hi, portLo: freePort, portHi: port - 1, label });
    freePort = port + 1;
    let at = run.lo;
    for (; i < x.length && x[i]!.port === port; i++) {
      if (x[i]!.lo > at) out.push({ addrLo: at, addrHi: x[i]!.lo - 1n, portLo: port, portHi: port, label });
      at = x[i]!.hi + 1n;
    }
    if (at <= run.hi) out.push({ addrLo: at, addrHi: run.hi, portLo: port, portHi: port, label });
  }
  if (freePort <= MAX_PORT) out.push({ addrLo: run.lo, addrHi: run.hi, portLo: freePort, portHi: MAX_PORT, label });
}

/**
 * A group's longest-match answer as segments covering the whole space (none where nothing matches),
 * neighbours with the same answer joined. `bindings` are sorted by address then length, as a group holds
 * them, so a stack of the prefixes enclosing the position is enough (as PrefixIndex's flatten).
 */
function flatten(bindings: readonly Binding[], bits: number): Segment[] {
  const out: Segment[] = [];
  let at = 0n;
  const emit = (hi: bigint, owner: Binding | undefined): void => {
    if (hi < at) return;
    const label = owner?.label;
    const length = owner?.length ?? -1;
    const last = out[out.length - 1];
    if (last !== undefined && last.label === label && last.length === length) last.hi = hi;
    else out.push({ lo: at, hi, label, length });
    at = hi + 1n;
  };
  const stack: { binding: Binding; end: bigint }[] = [];
  for (const binding of bindings) {
    const start = addressOf(binding);
    for (let t = stack[stack.length - 1]; t !== undefined && t.end < start; t = stack[stack.length - 1]) {
      stack.pop();
      emit(t.end, t.binding);
    }
    emit(start - 1n, stack[stack.length - 1]?.binding);
    stack.push({ binding, end: start + (1n << BigInt(bits - binding.length)) - 1n });
  }
  for (let t = stack.pop(); t !== undefined; t = stack.pop()) emit(t.end, t.binding);
  emit((1n << BigInt(bits)) - 1n, undefined);
  return out;
}

function addressOf(b: Binding): bigint {
  if (b.family === 4) return BigInt(b.word(0));
  return (BigInt(b.word(0)) << 96n) | (BigInt(b.word(1)) << 64n) | (BigInt(b.word(2)) << 32n) | BigInt(b.word(3));
}

/** The segment holding `address` (segments cover the space, ascending). */
function segmentAt(segments: readonly Segment[], address: bigint): number {
  let lo = 0;
  let hi = segments.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (segments[mid]!.lo <= address) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * Joins rectangles with the same label that share one interval and abut in the other, ports first (the
 * complements of neighbouring ports with the same exceptions), then addresses, until nothing joins; then
 * sorts by address and port, a total order for disjoint rectangles.
 */
function merge(entries: MutableEntry[]): Entry[] {
  let count;
  do {
    count = entries.length;
    entries = join(
      entries,
      byAddressThenPort,
      (a, b) => a.addrLo === b.addrLo && a.addrHi === b.addrHi && a.portHi + 1 === b.portLo,
      'port',
    );
    entries = join(
      entries,
      byPortThenAddress,
      (a, b) => a.portLo === b.portLo && a.portHi === b.portHi && a.addrHi + 1n === b.addrLo,
      'address',
    );
  } while (entries.length < count);
  return entries.sort((a, b) => compareBig(a.addrLo, b.addrLo) || a.portLo - b.portLo);
}

function join(
  entries: MutableEntry[],
  order: (a: Entry, b: Entry) => number,
  abuts: (a: Entry, b: Entry) => boolean,
  along: 'port' | 'address',
): MutableEntry[] {
  entries.sort(order);
  const out: MutableEntry[] = [];
  for (const e of entries) {
    const last = out[out.length - 1];
    if (last === undefined || last.label !== e.label || !abuts(last, e)) out.push(e);
    else if (along === 'port') last.portHi = e.portHi;
    else last.addrHi = e.addrHi;
  }
  return out;
}

// Label before the abutting interval's start, so that rectangles that could join are neighbours.
function byAddressThenPort(a: Entry, b: Entry): number {
  return compareBig(a.addrLo, b.addrLo) || compareBig(a.addrHi, b.addrHi) || compareText(a.label, b.label) || a.portLo - b.portLo;
}

function byPortThenAddress(a: Entry, b: Entry): number {
  return a.portLo - b.portLo || a.portHi - b.portHi || compareText(a.label, b.label) || compareBig(a.addrLo, b.addrLo);
}

function compareBig(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The entries as nftables interval map elements, one a line, comma-separated:
 * `198.51.100.0-198.51.100.127 . 443 : jump to_a`. A single address or port is written alone.
 * `verdict` names what a label's traffic does (`jump <chain>`); the caller owns the chain names.
 */
export function renderElements(entries: readonly Entry[], family: Family, verdict: (label: string) => string): string {
  const address = (a: bigint): string => formatAddress(family, family === 4 ? [Number(a)] : words(a));
  const range = <T>(lo: T, hi: T, show: (x: T) => string): string => (lo === hi ? show(lo) : `${show(lo)}-${show(hi)}`);
  return entries
    .map((e) => `${range(e.addrLo, e.addrHi, address)} . ${range(e.portLo, e.portHi, String)} : ${verdict(e.label)}`)
    .join(',\n');
}

/** A whole map declaration (for inside a `table inet ... { }`); an empty map has no elements clause. */
export function renderMap(name: string, family: Family, entries: readonly Entry[], verdict: (label: string) => string): string {
  const head = [`map ${name} {`, `  type ${family === 4 ? 'ipv4_addr' : 'ipv6_addr'} . inet_service : verdict`, '  flags interval'];
  if (entries.length === 0) return [...head, '}'].join('\n');
  const elements = renderElements(entries, family, verdict).replace(/^/gm, '    ');
  return [...head, '  elements = {', elements, '  }', '}'].join('\n');
}

function words(a: bigint): number[] {
  return [96n, 64n, 32n, 0n].map((shift) => Number((a >> shift) & 0xffffffffn));
}
