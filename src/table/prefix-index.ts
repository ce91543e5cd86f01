/**
 * Longest-prefix match over one family's prefixes, as sorted disjoint intervals.
 *
 * Nested prefixes are flattened once, at build time, into the address ranges where the answer is constant:
 *
 *   prefixes               10.0.0.0/8 -> A   10.1.0.0/16 -> B   10.1.2.3/32 -> C
 *
 *   address line   ...|---A---|-------B-------|C|------B------|-------A-------|...
 *   boundaries        10.0.0.0 10.1.0.0        10.1.2.3 10.1.2.4 10.2.0.0  11.0.0.0
 *   values               A        B              C        B        A        none
 *
 * A lookup finds the last boundary <= the key. A bucket table indexes the boundaries by the `bits` key bits
 * that follow the bits every boundary shares (`skip`). A bucket that no boundary crosses holds its answer
 * directly, so the lookup is one read; otherwise it holds the range of boundaries to search, which with
 * random prefixes is one or two. Bucket entries are pairs in one Int32Array, so a lookup touches one cache
 * line of it:
 *
 *   buckets[2b] >= 0:  search boundaries buckets[2b] .. buckets[2b+1]
 *   buckets[2b] <  0:  the whole bucket answers -buckets[2b] - 2   (-1: no match)
 *
 * 2^ceil(log2 m) buckets (one or two boundaries each) measured fastest at 100k random bindings, against
 * twice and four times as many and half as many (`npm run bench:table`); the cap of 2^21 keeps the table at 16 MiB.
 *
 * Keys are `W` 32-bit words, most significant first: W = 1 for IPv4, 4 for IPv6.
 */
export interface IndexedPrefix {
  readonly length: number;
  word(i: number): number;
}

const MAX_BUCKET_BITS = 21;

export class PrefixIndex {
  readonly #w: number;
  readonly #m: number;
  readonly #starts: Uint32Array;
  readonly #values: Int32Array;
  readonly #buckets: Int32Array;
  readonly #skipWord: number;
  readonly #skipBits: number;
  readonly #shift: number;

  /**
   * `prefixes` must be sorted by address, then by length ascending (a prefix before those it contains), with
   * no two equal. A lookup returns the payload of the longest match, or -1; payloads are 0 to 2^30.
   */
  constructor(words: 1 | 4, prefixes: readonly IndexedPrefix[], payloads: Int32Array) {
    this.#w = words;
    const { starts, values } = flatten(words, prefixes, payloads);
    const m = values.length;
    this.#m = m;
    this.#starts = starts;
    this.#values = values;
    const skip = m > 1 ? commonPrefixBits(starts, words, m - 1) : 0;
    const bits = m > 1 ? Math.max(1, Math.min(Math.ceil(Math.log2(m)), MAX_BUCKET_BITS, 32 * words - skip)) : 1;
    this.#skipWord = skip >>> 5;
    this.#skipBits = skip & 31;
    this.#shift = 32 - bits;
    const count = 1 << bits;
    const buckets = new Int32Array(2 * count);
    // first: the first boundary whose bucket is >= b. The boundary in force at the bucket's start is the one
    // before it, unless a boundary starts exactly there; boundaries inside the bucket follow.
    let first = 0;
    for (let b = 0; b < count; b++) {
      while (first < m && this.#bucketAt(starts, first * words) < b) first++;
      let next = first;
      while (next < m && this.#bucketAt(starts, next * words) === b) next++;
      if (next === first) {
        // No boundary inside: the one before the bucket answers for all of it.
        buckets[2 * b] = first === 0 ? -1 : -(values[first - 1]! + 2);
      } else {
        buckets[2 * b] = first === 0 ? 0 : first - 1;
        buckets[2 * b + 1] = next - 1;
      }
    }
    this.#buckets = buckets;
  }

  /** `key` holds at least `words` words; only the first `words` are read. */
  lookup(key: Uint32Array): number {
    const m = this.#m;
    if (m === 0 || this.#compare(key, 0) < 0) return -1;
    const last = m - 1;
    if (this.#compare(key, last) >= 0) return this.#values[last]!;
    // starts[0] <= key < starts[last], so key shares the bits all starts share and has a bucket.
    const b = this.#bucketAt(key, 0) << 1;
    let lo = this.#buckets[b]!;
    if (lo < 0) return -lo - 2; // not -(lo + 2): that is -0 for value 0, a double that deoptimizes
    let hi = this.#buckets[b + 1]!;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.#compare(key, mid) >= 0) lo = mid;
      else hi = mid - 1;
    }
    return this.#values[lo]!;
  }

  #compare(key: Uint32Array, i: number): number {
    const w = this.#w;
    const s = this.#starts;
    if (w === 1) {
      const a = key[0]!;
      const b = s[i]!;
      return a < b ? -1 : a > b ? 1 : 0;
    }
    const base = i * w;
    for (let j = 0; j < w; j++) {
      const a = key[j]!;
      const b = s[base + j]!;
      if (a !== b) return a < b ? -1 : 1;
    }
    return 0;
  }

  #bucketAt(words: Uint32Array, base: number): number {
    const wi = this.#skipWord;
    const off = this.#skipBits;
    let x = words[base + wi]! << off;
    if (off !== 0 && wi + 1 < this.#w) x |= words[base + wi + 1]! >>> (32 - off);
    return (x >>> 0) >>> this.#shift;
  }
}

/** Emits the boundaries with a stack of the prefixes that enclose the current position. */
function flatten(w: number, prefixes: readonly IndexedPrefix[], payloads: Int32Array): { starts: Uint32Array; values: Int32Array } {
  const starts: number[] = [];
  const values: number[] = [];
  const at = new Uint32Array(w);

  const emit = (value: number): void => {
    const m = values.length;
    if (m > 0) {
      let same = true;
      for (let j = 0; j < w && same; j++) same = starts[(m - 1) * w + j] === at[j];
      if (same) {
        values[m - 1] = value;
        return;
      }
    }
    for (let j = 0; j < w; j++) starts.push(at[j]!);
    values.push(value);
  };

  const stack: number[] = [];
  // Pops the top prefix and marks where its range ends; false when it ends at the top of the address space.
  const close = (): void => {
    const top = prefixes[stack.pop()!]!;
    if (endPlusOne(top, w, at)) emit(stack.length > 0 ? payloads[stack[stack.length - 1]!]! : -1);
  };
  const end = new Uint32Array(w);
  for (let i = 0; i < prefixes.length; i++) {
    const p = prefixes[i]!;
    while (stack.length > 0) {
      const top = prefixes[stack[stack.length - 1]!]!;
      if (!endPlusOne(top, w, end) || compareWords(end, p, w) > 0) break;
      close();
    }
    for (let j = 0; j < w; j++) at[j] = p.word(j);
    emit(payloads[i]!);
    stack.push(i);
  }
  while (stack.length > 0) close();

  // Neighbours with the same value are one range.
  const outStarts: number[] = [];
  const outValues: number[] = [];
  for (let i = 0; i < values.length; i++) {
    if (outValues.length > 0 && outValues[outValues.length - 1] === values[i]) continue;
    for (let j = 0; j < w; j++) outStarts.push(starts[i * w + j]!);
    outValues.push(values[i]!);
  }
  return { starts: Uint32Array.from(outStarts), values: Int32Array.from(outValues) };
}

/** Writes the first address after prefix `p` into `out`; false if `p` reaches the end of the space. */
function endPlusOne(p: IndexedPrefix, w: number, out: Uint32Array): boolean {
  let carry = 1;
  for (let j = w - 1; j >= 0; j--) {
    const hostBits = Math.min(Math.max(32 * (j + 1) - p.length, 0), 32);
    const host = hostBits === 32 ? 0xffffffff : (1 << hostBits) - 1;
    const v = (p.word(j) | host) >>> 0;
    const sum = v + carry;
    out[j] = sum >>> 0;
    carry = sum > 0xffffffff ? 1 : 0;
  }
  return carry === 0;
}

/** Compares `a` with the start of prefix `p`, word by word. */
function compareWords(a: Uint32Array, p: IndexedPrefix, w: number): number {
  for (let j = 0; j < w; j++) {
    const x = a[j]!;
    const y = p.word(j);
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

/** Bits shared by boundary 0 and boundary `last`, and so (the boundaries being sorted) by all between. */
function commonPrefixBits(starts: Uint32Array, w: number, last: number): number {
  for (let j = 0; j < w; j++) {
    const diff = (starts[j]! ^ starts[last * w + j]!) >>> 0;
    if (diff !== 0) return 32 * j + Math.clz32(diff);
  }
  return 32 * w;
}
