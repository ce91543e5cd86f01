import { type Family } from '../bindings/address.js';
import { type Binding, type Protocol } from '../bindings/binding.js';
import { type Table } from '../table/table.js';
import { type Coordinates, coordinates } from './coordinates.js';

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
 * leave. The exceptions themselves are one rectangle per maximal address run. The count stays near that of
 * the runs and the exceptions (address-major slicing would repeat every exception port in every slice).
 */
export interface Entry {
  /** First and last address, inclusive, as words: one for IPv4, four for IPv6, most significant first. */
  readonly addrLo: readonly number[];
  readonly addrHi: readonly number[];
  /** Inclusive; 0-65535 is every port. */
  readonly portLo: number;
  readonly portHi: number;
  readonly label: string;
}

export type CompiledTable = Record<Protocol, Record<Family, Entry[]>>;

const MAX_PORT = 65535;

// A change copies only its own space of the table: the other three compile to what they did.
const compiled = new WeakMap<object, Entry[]>();

export function compileTable(table: Table): CompiledTable {
  const space = (protocol: Protocol, family: Family): Entry[] => {
    const key = table.spaceKey(protocol, family);
    let entries = compiled.get(key);
    if (entries === undefined) compiled.set(key, (entries = compileSpace(table, protocol, family)));
    return entries;
  };
  return { tcp: { 4: space('tcp', 4), 6: space('tcp', 6) }, udp: { 4: space('udp', 4), 6: space('udp', 6) } };
}

/** One protocol and family's entries, sorted by address then port, with no two overlapping. */
export function compileSpace(table: Table, protocol: Protocol, family: Family): Entry[] {
  const groups = [...table.groups(protocol, family)];
  const all = groups.flatMap((g) => g.bindings);
  const at = coordinates(family, all);
  const names: string[] = [];
  const ids = new Map<string, number>();
  const labelOf = Int32Array.from(all, (b) => {
    let id = ids.get(b.label);
    if (id === undefined) ids.set(b.label, (id = names.push(b.label) - 1));
    return id;
  });

  let wild: Segment[] = [{ lo: 0, end: at.top, label: -1, length: -1 }];
  const specific: { port: number; segments: Segment[] }[] = [];
  let offset = 0;
  for (const { port, bindings } of groups) {
    const segments = flatten(bindings, offset, at, labelOf);
    offset += bindings.length;
    if (port === 0) wild = segments;
    else specific.push({ port, segments });
  }

  // The wild answer's runs by label alone (precedence needed the lengths; the output does not).
  const runs: Run[] = [];
  const runOf: number[] = [];
  for (const w of wild) {
    const last = runs[runs.length - 1];
    if (last !== undefined && last.label === w.label) last.end = w.end;
    else runs.push({ lo: w.lo, end: w.end, label: w.label, exceptions: [] });
    runOf.push(runs.length - 1);
  }

  const out: Box[] = [];
  for (const { port, segments } of specific) {
    let last: Box | undefined;
    for (const s of segments) {
      if (s.label < 0) continue;
      for (let i = segmentAt(wild, s.lo); i < wild.length && wild[i]!.lo < s.end; i++) {
        const w = wild[i]!;
        if (s.length < w.length || s.label === w.label) continue;
        const lo = Math.max(s.lo, w.lo);
        const end = Math.min(s.end, w.end);
        runs[runOf[i]!]!.exceptions.push({ port, lo, end });
        if (last !== undefined && last.label === s.label && last.end === lo) last.end = end;
        else out.push((last = { lo, end, portLo: port, portHi: port, label: s.label }));
      }
    }
  }
  for (const run of runs) if (run.label >= 0) carve(run, out);
  return merge(out).map((b) => ({
    addrLo: at.first(b.lo),
    addrHi: at.last(b.end),
    portLo: b.portLo,
    portHi: b.portHi,
    label: names[b.label]!,
  }));
}

/** Addresses [lo, end) in coordinates; label -1 for none. */
interface Segment {
  readonly lo: number;
  end: number;
  readonly label: number;
  /** The winning prefix's length, -1 for none. */
  readonly length: number;
}

/** A maximal run of one wild label, and the exceptions inside it: ascending by port, then address. */
interface Run {
  readonly lo: number;
  end: number;
  readonly label: number;
  readonly exceptions: { port: number; lo: number; end: number }[];
}

/** An entry in the making: addresses [lo, end) in coordinates, the label's id. */
interface Box {
  lo: number;
  end: number;
  portLo: number;
  portHi: number;
  readonly label: number;
}

/** Emits the run's label everywhere in it that its exceptions leave. */
function carve(run: Run, out: Box[]): void {
  const { label, exceptions: x } = run;
  let freePort = 0;
  for (let i = 0; i < x.length;) {
    const port = x[i]!.port;
    if (port > freePort) out.push({ lo: run.lo, end: run.end, portLo: freePort, portHi: port - 1, label });
    freePort = port + 1;
    let at = run.lo;
    for (; i < x.length && x[i]!.port === port; i++) {
      if (x[i]!.lo > at) out.push({ lo: at, end: x[i]!.lo, portLo: port, portHi: port, label });
      at = x[i]!.end;
    }
    if (at < run.end) out.push({ lo: at, end: run.end, portLo: port, portHi: port, label });
  }
  if (freePort <= MAX_PORT) out.push({ lo: run.lo, end: run.end, portLo: freePort, portHi: MAX_PORT, label });
}

/**
 * A group's longest-match answer as segments covering the whole space (none where nothing matches),
 * neighbours with the same answer joined. `bindings` are sorted by address then length, as a group holds
 * them, so a stack of the prefixes enclosing the position is enough (as PrefixIndex's flatten). Binding i
 * is number `offset + i` in `at` and `labelOf`.
 */
function flatten(bindings: readonly Binding[], offset: number, at: Coordinates, labelOf: Int32Array): Segment[] {
  const out: Segment[] = [];
  let position = 0;
  // Gives [position, end) to binding i (-1: none).
  const emit = (end: number, i: number): void => {
    if (end <= position) return;
    const label = i < 0 ? -1 : labelOf[offset + i]!;
    const length = i < 0 ? -1 : bindings[i]!.length;
    const last = out[out.length - 1];
    if (last !== undefined && last.label === label && last.length === length) last.end = end;
    else out.push({ lo: position, end, label, length });
    position = end;
  };
  const stack: number[] = [];
  const top = (): number => (stack.length === 0 ? -1 : stack[stack.length - 1]!);
  for (let i = 0; i < bindings.length; i++) {
    const start = at.starts[offset + i]!;
    while (stack.length > 0 && at.ends[offset + top()]! <= start) emit(at.ends[offset + top()]!, stack.pop()!);
    emit(start, top());
    stack.push(i);
  }
  while (stack.length > 0) emit(at.ends[offset + top()]!, stack.pop()!);
  emit(at.top, -1);
  return out;
}

/** The segment holding coordinate `x` (segments cover the space, ascending). */
function segmentAt(segments: readonly Segment[], x: number): number {
  let lo = 0;
  let hi = segments.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (segments[mid]!.lo <= x) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * Joins boxes with the same label that share one interval and abut in the other, until nothing joins, in
 * the output order: by address then port, a total order for disjoint boxes. Joins are rare (ports bound
 * alike side by side, a complement meeting an exception of its own label), so they are found in linear
 * passes over that order rather than by sorting again for each axis.
 */
function merge(boxes: Box[]): Box[] {
  boxes.sort((a, b) => a.lo - b.lo || a.portLo - b.portLo);
  for (let count = Infinity; boxes.length < count;) {
    count = boxes.length;
    boxes = joinPorts(joinAddresses(boxes));
  }
  return boxes;
}

/** A box's neighbour below in addresses comes before it in the order; they are found by where they end. */
function joinAddresses(boxes: readonly Box[]): Box[] {
  const out: Box[] = [];
  const endingAt = new Map<number, Box[]>();
  const add = (b: Box): void => {
    const list = endingAt.get(b.end);
    if (list === undefined) endingAt.set(b.end, [b]);
    else list.push(b);
  };
  for (const b of boxes) {
    const below = endingAt.get(b.lo);
    const i = below === undefined ? -1 : below.findIndex((a) => a.portLo === b.portLo && a.portHi === b.portHi && a.label === b.label);
    if (i < 0) {
      out.push(b);
      add(b);
    } else {
      const a = below!.splice(i, 1)[0]!;
      a.end = b.end;
      add(a);
    }
  }
  return out;
}

/** Boxes that start at the same address are consecutive, by port: a neighbour in ports is the one before. */
function joinPorts(boxes: readonly Box[]): Box[] {
  const out: Box[] = [];
  for (const b of boxes) {
    const a = out[out.length - 1];
    if (a !== undefined && a.lo === b.lo && a.end === b.end && a.label === b.label && a.portHi + 1 === b.portLo) a.portHi = b.portHi;
    else out.push(b);
  }
  return out;
}
