import { type Family } from '../bindings/address.js';
import { type Binding } from '../bindings/binding.js';

/**
 * Addresses as plain numbers, so that the compiler compares and abuts intervals with number operations
 * (on bigints the whole compile took about twice as long at 100k bindings). An interval is [start, end).
 *
 * IPv4: the address itself; 2^32 is exact in a double. IPv6: the address's rank among the bindings' first
 * addresses and the addresses just past their last ones (with 0 and 2^128). Only those ever bound an
 * interval, so ranks keep both the order and the adjacency that matter.
 */
export interface Coordinates {
  /** Per binding, in the order given: where its prefix starts and ends (exclusive). */
  readonly starts: Float64Array;
  readonly ends: Float64Array;
  /** The end of the space (2^32 for IPv4). */
  readonly top: number;
  /** The address at coordinate `x`, as words (one for IPv4, four for IPv6, most significant first). */
  first(x: number): readonly number[];
  /** The address just before coordinate `end`, as words. */
  last(end: number): readonly number[];
}

export function coordinates(family: Family, bindings: readonly Binding[]): Coordinates {
  return family === 4 ? ipv4(bindings) : ipv6(bindings);
}

function ipv4(bindings: readonly Binding[]): Coordinates {
  const starts = Float64Array.from(bindings, (b) => b.word(0));
  const ends = Float64Array.from(bindings, (b, i) => starts[i]! + 2 ** (32 - b.length));
  return { starts, ends, top: 2 ** 32, first: (x) => [x], last: (end) => [end - 1] };
}

function ipv6(bindings: readonly Binding[]): Coordinates {
  // Boundary 0 is address 0, boundary 1 is 2^128 (the carry out of an end at the top), then each
  // binding's start (2 + 2i) and end (3 + 2i).
  const count = 2 + 2 * bindings.length;
  const words = new Uint32Array(4 * count);
  const carry = new Uint8Array(count);
  carry[1] = 1;
  for (const [i, b] of bindings.entries()) {
    const s = 4 * (2 + 2 * i);
    for (let j = 0; j < 4; j++) words[s + j] = words[s + 4 + j] = b.word(j);
    // Adds 2^(128 - length) to the end's words, carrying upwards.
    let add = 2 ** ((128 - b.length) % 32);
    for (let j = 3 - Math.floor((128 - b.length) / 32); j >= 0 && add > 0; j--) {
      const sum = words[s + 4 + j]! + add;
      words[s + 4 + j] = sum >>> 0;
      add = sum > 0xffffffff ? 1 : 0;
    }
    carry[3 + 2 * i] = add;
  }
  const compare = (a: number, b: number): number => {
    if (carry[a] !== carry[b]) return carry[a]! - carry[b]!;
    for (let j = 0; j < 4; j++) {
      const d = words[4 * a + j]! - words[4 * b + j]!;
      if (d !== 0) return d;
    }
    return 0;
  };
  const order = Array.from({ length: count }, (_, k) => k).sort(compare);
  const rank = new Float64Array(count);
  const bounds: number[][] = [];
  for (const [i, k] of order.entries()) {
    if (i === 0 || compare(order[i - 1]!, k) !== 0) bounds.push(Array.from(words.subarray(4 * k, 4 * k + 4)));
    rank[k] = bounds.length - 1;
  }
  const lasts: number[][] = [];
  return {
    starts: Float64Array.from(bindings, (_, i) => rank[2 + 2 * i]!),
    ends: Float64Array.from(bindings, (_, i) => rank[3 + 2 * i]!),
    top: rank[1]!,
    first: (x) => bounds[x]!,
    last: (end) => (lasts[end] ??= minusOne(bounds[end]!)),
  };
}

/** The words less one, borrowing; 0 - 1 wraps to all ones, which is the last address before 2^128. */
function minusOne(words: readonly number[]): number[] {
  const out = [...words];
  for (let j = 3; j >= 0; j--) {
    out[j] = (out[j]! - 1) >>> 0;
    if (out[j] !== 0xffffffff) break;
  }
  return out;
}
