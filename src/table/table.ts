import { type Address, type Family, maskWords, parseAddress } from '../bindings/address.js';
import { Binding, type Protocol, removalOf } from '../bindings/binding.js';
import { compareForList } from '../bindings/order.js';
import { DispatcherError } from '../errors.js';
import { PrefixIndex } from './prefix-index.js';

/**
 * The binding table: an immutable snapshot. Changes return a new table, so a reader holding one reference
 * sees the whole old table or the whole new one.
 *
 *   spaces[protocol][family] ──> groups: Array(65536), indexed by port
 *                                  [0]    the port-0 (every port) bindings  ─┐ a lookup of port p asks
 *                                  [p]    the bindings for port p           ─┘ both, then applies precedence
 *
 * Each group holds its bindings sorted by address then length, and a PrefixIndex over them. A change
 * rebuilds only the group it touches, so adding one binding to a table of a million costs one group.
 *
 * The accept path reads only the indexes' typed arrays: each interval's payload is (label id << 8) | prefix
 * length, enough for precedence and the label. Touching Binding objects there cost a cache miss per
 * lookup, measured as a 3x slow-down at 100k bindings.
 */
interface Group {
  readonly bindings: readonly Binding[];
  readonly index: PrefixIndex;
}

/**
 * Label names by id, shared by the snapshots derived from one Table.from. Append-only, so an older
 * snapshot never meets an id it did not assign; a full rebuild starts a fresh one, which bounds it.
 */
class Labels {
  readonly names: string[] = [];
  readonly #ids = new Map<string, number>();

  id(name: string): number {
    let id = this.#ids.get(name);
    if (id === undefined) {
      id = this.names.length;
      if (id >= MAX_LABELS) throw new DispatcherError('ERR_LABEL', `more than ${MAX_LABELS} distinct labels`);
      this.names.push(name);
      this.#ids.set(name, id);
    }
    return id;
  }
}

// Payloads must stay below 2^30 (PrefixIndex encodes them negated), so label ids below 2^22.
const MAX_LABELS = 1 << 22;

type Space = readonly (Group | undefined)[];
const PORTS = 65536;
const PROTOCOL_INDEX: Record<Protocol, number> = { tcp: 0, udp: 1 };

export interface Diff {
  readonly added: Binding[];
  readonly removed: Binding[];
}

export class Table {
  // [protocol][0 for IPv4, 1 for IPv6]
  readonly #spaces: readonly (readonly Space[])[];
  readonly #labels: Labels;
  readonly size: number;

  private constructor(spaces: readonly (readonly Space[])[], labels: Labels, size: number) {
    this.#spaces = spaces;
    this.#labels = labels;
    this.size = size;
  }

  static empty(): Table {
    const space = (): Space => new Array<Group | undefined>(PORTS).fill(undefined);
    return new Table(
      [
        [space(), space()],
        [space(), space()],
      ],
      new Labels(),
      0,
    );
  }

  /** Builds a table from bindings with distinct (protocol, prefix, port); the caller checks distinctness. */
  static from(bindings: Iterable<Binding>): Table {
    const buckets = new Map<number, Binding[]>();
    for (const b of bindings) {
      const key = groupKey(b.protocol, b.family, b.port);
      let list = buckets.get(key);
      if (list === undefined) buckets.set(key, (list = []));
      list.push(b);
    }
    const empty = Table.empty();
    const spaces = empty.#spaces.map((s) => s.map((space) => space.slice()));
    let size = 0;
    for (const [key, list] of buckets) {
      list.sort(compareInGroup);
      for (let i = 1; i < list.length; i++) {
        if (compareInGroup(list[i - 1]!, list[i]!) === 0) {
          throw new DispatcherError('ERR_BINDINGS_FILE', `${list[i]!.protocol} ${list[i]!.prefix} port ${list[i]!.port} is bound twice`);
        }
      }
      spaces[key >>> 17]![(key >>> 16) & 1]![key & 0xffff] = makeGroup(list, empty.#labels);
      size += list.length;
    }
    return new Table(spaces, empty.#labels, size);
  }

  /** Adds `binding`, replacing the label of one with the same (protocol, prefix, port). */
  with(binding: Binding): { table: Table; replaced: Binding | undefined } {
    const list = this.#group(binding)?.bindings ?? [];
    const { found, at } = search(list, binding);
    const replaced = found ? list[at] : undefined;
    const next = found ? [...list.slice(0, at), binding, ...list.slice(at + 1)] : [...list.slice(0, at), binding, ...list.slice(at)];
    return { table: this.#withGroup(binding, next, found ? 0 : 1), replaced };
  }

  /** Removes the binding with `binding`'s (protocol, prefix, port), which must carry the same label. */
  without(binding: Binding): Table {
    const list = this.#group(binding)?.bindings ?? [];
    const { found, at } = search(list, binding);
    removalOf(found ? list[at] : undefined, binding);
    return this.#withGroup(binding, [...list.slice(0, at), ...list.slice(at + 1)], -1);
  }

  /** The binding that receives traffic to `address`:`port`, by Tubular's precedence. */
  lookup(protocol: Protocol, address: string, port: number): Binding | undefined {
    const a: Address = parseAddress(address);
    const hit = this.#match(protocol, a.family, a.words, port);
    if (hit < 0) return undefined;
    // The payload names the winning group and prefix length; the binding is that prefix of the address.
    const winner = new Binding(
      this.#labels.names[hit >>> 9]!,
      protocol,
      a.family,
      maskWords(a.words.slice(), hit & 255),
      hit & 255,
      (hit & 256) === 0 ? port : 0,
    );
    return this.find(winner);
  }

  /**
   * The accept path's form: the address as words (one for IPv4, four for IPv6), no string parsing, and
   * only the label comes back.
   */
  lookupLabel(protocol: Protocol, family: 4 | 6, words: Uint32Array, port: number): string | undefined {
    const hit = this.#match(protocol, family, words, port);
    return hit < 0 ? undefined : this.#labels.names[hit >>> 9];
  }

  /**
   * Longest prefix wins; at equal length the specific port beats port 0. Returns -1, or the winner's
   * payload shifted left by one with bit 8 set if it came from the port-0 group.
   */
  #match(protocol: Protocol, family: 4 | 6, words: Uint32Array, port: number): number {
    const space = this.#spaces[protocol === 'tcp' ? 0 : 1]![family === 4 ? 0 : 1]!;
    const specific = port === 0 ? undefined : space[port];
    const wildcard = space[0];
    const s = specific === undefined ? -1 : specific.index.lookup(words);
    const w = wildcard === undefined ? -1 : wildcard.index.lookup(words);
    if (s < 0) return w < 0 ? -1 : wildPayload(w);
    if (w < 0 || (s & 255) >= (w & 255)) return ((s >>> 8) << 9) | (s & 255);
    return wildPayload(w);
  }

  /** Every binding, in the list order (see bindings/order.ts). */
  bindings(): Binding[] {
    const all: Binding[] = [];
    for (const families of this.#spaces) {
      for (const space of families) {
        for (const group of space) if (group !== undefined) for (const b of group.bindings) all.push(b);
      }
    }
    return all.sort(compareForList);
  }

  /** Each non-empty port group of (protocol, family), port ascending (0 first), its bindings by address then length. */
  *groups(protocol: Protocol, family: Family): Generator<{ port: number; bindings: readonly Binding[] }> {
    const space = this.#spaces[PROTOCOL_INDEX[protocol]]![family === 4 ? 0 : 1]!;
    for (let port = 0; port < PORTS; port++) {
      const group = space[port];
      if (group !== undefined) yield { port, bindings: group.bindings };
    }
  }

  /**
   * The (protocol, family) space as an opaque key: the same object in every snapshot where that space did
   * not change (a change copies only its own space), so what is derived from a space can be cached on it.
   */
  spaceKey(protocol: Protocol, family: Family): object {
    return this.#spaces[PROTOCOL_INDEX[protocol]]![family === 4 ? 0 : 1]!;
  }

  /** The same binding (key and label) if this table has it. */
  find(binding: Binding): Binding | undefined {
    const list = this.#group(binding)?.bindings ?? [];
    const { found, at } = search(list, binding);
    return found ? list[at] : undefined;
  }

  /**
   * What changes when this table is replaced by `next`, each list in the list order; a relabelled binding is
   * removed and added. Groups are walked side by side in their own order, skipping those the two snapshots
   * share, so only what changed is sorted: loading a file of 100,000 bindings that changes ten sorts ten.
   */
  diff(next: Table): Diff {
    const added: Binding[] = [];
    const removed: Binding[] = [];
    for (let p = 0; p < this.#spaces.length; p++) {
      for (let f = 0; f < 2; f++) {
        const mine = this.#spaces[p]![f]!;
        const theirs = next.#spaces[p]![f]!;
        if (mine === theirs) continue;
        for (let port = 0; port < PORTS; port++) {
          const a = mine[port];
          const b = theirs[port];
          if (a !== b) groupChanges(a?.bindings ?? [], b?.bindings ?? [], added, removed);
        }
      }
    }
    return { added: added.sort(compareForList), removed: removed.sort(compareForList) };
  }

  /** Ports that at least one binding of `protocol` names, ascending (0 included if any port-0 binding). */
  ports(protocol: Protocol): number[] {
    const out: number[] = [];
    const families = this.#spaces[PROTOCOL_INDEX[protocol]]!;
    for (let port = 0; port < PORTS; port++) {
      if (families[0]![port] !== undefined || families[1]![port] !== undefined) out.push(port);
    }
    return out;
  }

  #group(b: Binding): Group | undefined {
    return this.#spaces[PROTOCOL_INDEX[b.protocol]]![b.family === 4 ? 0 : 1]![b.port];
  }

  #withGroup(b: Binding, list: Binding[], delta: number): Table {
    const p = PROTOCOL_INDEX[b.protocol];
    const f = b.family === 4 ? 0 : 1;
    const space = this.#spaces[p]![f]!.slice();
    space[b.port] = list.length === 0 ? undefined : makeGroup(list, this.#labels);
    const spaces = this.#spaces.map((families, i) => (i === p ? families.map((s, j) => (j === f ? space : s)) : families));
    return new Table(spaces, this.#labels, this.size + delta);
  }
}

function groupKey(protocol: Protocol, family: 4 | 6, port: number): number {
  return (PROTOCOL_INDEX[protocol] << 17) | ((family === 4 ? 0 : 1) << 16) | port;
}

function wildPayload(w: number): number {
  return ((w >>> 8) << 9) | 256 | (w & 255);
}

function makeGroup(sorted: Binding[], labels: Labels): Group {
  const payloads = Int32Array.from(sorted, (b) => (labels.id(b.label) << 8) | b.length);
  return { bindings: sorted, index: new PrefixIndex(sorted[0]!.family === 4 ? 1 : 4, sorted, payloads) };
}

/** Address ascending, then length ascending: the order PrefixIndex needs. */
function compareInGroup(a: Binding, b: Binding): number {
  const words = a.family === 4 ? 1 : 4;
  for (let i = 0; i < words; i++) {
    const x = a.word(i);
    const y = b.word(i);
    if (x !== y) return x < y ? -1 : 1;
  }
  return a.length - b.length;
}

/** The two sorted lists of one group merged: what only one has, or has under another label. */
function groupChanges(old: readonly Binding[], now: readonly Binding[], added: Binding[], removed: Binding[]): void {
  let i = 0;
  let j = 0;
  while (i < old.length || j < now.length) {
    const order = i === old.length ? 1 : j === now.length ? -1 : compareInGroup(old[i]!, now[j]!);
    if (order < 0) removed.push(old[i++]!);
    else if (order > 0) added.push(now[j++]!);
    else {
      const was = old[i++]!;
      const is = now[j++]!;
      if (was.label !== is.label) {
        removed.push(was);
        added.push(is);
      }
    }
  }
}

function search(list: readonly Binding[], b: Binding): { found: boolean; at: number } {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const c = compareInGroup(list[mid]!, b);
    if (c === 0) return { found: true, at: mid };
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return { found: false, at: lo };
}
