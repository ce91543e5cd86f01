import { type Family, formatAddress } from '../bindings/address.js';
import { type Entry } from './compile.js';

/**
 * A space's entries cut into shards: aligned address blocks (prefixes) of at most `max` entries each, found
 * by halving the space until each half is small enough. The kernel's concatenated-interval set (pipapo)
 * costs per lookup in proportion to its size (bitmaps of a bit per rule), and per change in proportion to
 * its size again (a commit copies the whole set); a small map per shard behind an address-only map bounds
 * both (measured at 100,000 bindings: datagrams/s 0.26x of 10 bindings' with one map, flat with shards).
 *
 *   map tcp4 { type ipv4_addr : verdict; flags interval;
 *     elements = { 198.51.100.0/25 : jump tcp4.c6336400.25, 198.51.100.128/25 : jump tcp4.c6336480.25 } }
 *   chain tcp4.c6336400.25 { ip daddr . tcp dport vmap @tcp4.c6336400.25 }
 *
 * A shard is named by its prefix, which depends only on the entries inside it: a change splits or merges
 * only the shards on its own path, and an update rewrites only those.
 */
export interface Shard {
  /** `tcp4.c6336400.25`: the shard's chain and map. */
  readonly name: string;
  /** Its block, as nftables writes a prefix: `198.51.100.0/25`. */
  readonly prefix: string;
  /** Clipped to the block; sorted by first address, then first port. */
  readonly entries: readonly Entry[];
}

/**
 * At most this many entries per shard. A pipapo lookup ANDs a bitmap word per 64 rules of its set, so a
 * smaller shard costs less per packet and more shards (more maps, more elements cut at their edges).
 */
export const SHARD_SIZE = 256;

export function shardEntries(space: string, family: Family, entries: readonly Entry[], max = SHARD_SIZE): Shard[] {
  const width = family === 4 ? 32 : 128;
  const shards: Shard[] = [];
  const emit = (list: readonly Entry[], base: number[], length: number): void => {
    const hex = base.map((w) => (w >>> 0).toString(16).padStart(8, '0')).join('');
    shards.push({ name: `${space}.${hex}.${length}`, prefix: `${formatAddress(family, base)}/${length}`, entries: list });
  };
  const cut = (list: readonly Entry[], base: number[], length: number): void => {
    if (list.length === 0) return;
    if (list.length <= max || length === width) return emit(list, base, length);
    const mid = withBit(base, length);
    const below = decrement(mid);
    const left: Entry[] = [];
    const right: Entry[] = [];
    let clipped = false;
    for (const e of list) {
      if (compare(e.addrLo, mid) < 0) left.push(compare(e.addrHi, mid) < 0 ? e : { ...e, addrHi: below });
      if (compare(e.addrHi, mid) >= 0) {
        if (compare(e.addrLo, mid) >= 0) right.push(e);
        else {
          right.push({ ...e, addrLo: mid });
          clipped = true;
        }
      }
    }
    // Entries wider than half the block go to both halves: where they are many (a prefix bound on many
    // ports), halving only copies them, down to single addresses. Such a block stays one shard.
    if (left.length + right.length > list.length + (list.length >> 3)) return emit(list, base, length);
    // Clipped entries all start at `mid` now: back into address-then-port order.
    if (clipped) right.sort((a, b) => compare(a.addrLo, b.addrLo) || a.portLo - b.portLo);
    cut(left, base, length + 1);
    cut(right, mid, length + 1);
  };
  cut(entries, family === 4 ? [0] : [0, 0, 0, 0], 0);
  return shards;
}

/** `words` with bit `bit` (0 is the most significant) set. */
function withBit(words: readonly number[], bit: number): number[] {
  const out = [...words];
  out[bit >> 5] = (out[bit >> 5]! | (1 << (31 - (bit & 31)))) >>> 0;
  return out;
}

/** The address just below `words` (never called on 0: `mid` has a bit set). */
function decrement(words: readonly number[]): number[] {
  const out = [...words];
  for (let i = out.length - 1; i >= 0; i--) {
    if (out[i] !== 0) {
      out[i] = (out[i]! - 1) >>> 0;
      return out;
    }
    out[i] = 0xffffffff;
  }
  return out;
}

/** Unsigned word-wise order, as the entries are kept. */
export function compare(a: readonly number[], b: readonly number[]): number {
  for (let k = 0; k < a.length; k++) if (a[k] !== b[k]) return (a[k]! >>> 0) - (b[k]! >>> 0);
  return 0;
}
