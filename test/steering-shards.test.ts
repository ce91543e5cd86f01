import t from 'tap';
import { parsePrefix } from '../src/bindings/binding.js';
import { type Family } from '../src/bindings/address.js';
import { compileTable, type Entry } from '../src/steering/compile.js';
import { compare, shardEntries } from '../src/steering/shards.js';
import { Table } from '../src/table/table.js';
import { randomBindings, rng } from './helpers/bindings.js';

// Shards (src/steering/shards.ts) on random tables: the shards' entries are the space's entries, clipped to
// aligned blocks that do not overlap, with at most `max` entries each, so the two-level lookup answers as
// the one map did. The namespace test (steering-apply) proves it through the kernel.

const words = (family: Family, prefix: string): { lo: number[]; hi: number[] } => {
  const p = parsePrefix(prefix);
  const lo = Array.from(p.words);
  const hi = lo.map((w, i) => {
    const bits = Math.min(32, Math.max(0, p.length - i * 32));
    return bits === 32 ? w : (w | (bits === 0 ? 0xffffffff : 0xffffffff >>> bits)) >>> 0;
  });
  t.equal(p.family, family);
  return { lo, hi };
};

/** Expands entries into (address interval, port interval, label) as text, so clipped parts can be joined back. */
function areas(entries: readonly Entry[]): Map<string, Entry[]> {
  const out = new Map<string, Entry[]>();
  for (const e of entries) {
    const key = `${e.portLo}-${e.portHi} ${e.label}`;
    out.set(key, [...(out.get(key) ?? []), e]);
  }
  return out;
}

for (const family of [4, 6] as const) {
  t.test(`IPv${family}: shards cover exactly the entries, in blocks of at most max`, async (t) => {
    const rand = rng(family * 17);
    for (const max of [4, 32, 1024]) {
      const table = Table.from(randomBindings(rand, 1500));
      const entries = compileTable(table).tcp[family];
      const shards = shardEntries(`tcp${family}`, family, entries, max);
      let previousHi: number[] | undefined;
      // Over `max` only where halving would copy more than it splits (entries as wide as the block).
      let oversize = 0;
      for (const shard of shards) {
        const { lo, hi } = words(family, shard.prefix);
        if (previousHi !== undefined) t.ok(compare(previousHi, lo) < 0, `${shard.prefix} comes after the shard before it`);
        previousHi = hi;
        if (shard.entries.length > max) oversize++;
        for (const e of shard.entries) {
          if (compare(e.addrLo, lo) < 0 || compare(e.addrHi, hi) > 0) t.fail(`${shard.name} holds an entry outside ${shard.prefix}`);
        }
        for (let i = 1; i < shard.entries.length; i++) {
          const [a, b] = [shard.entries[i - 1]!, shard.entries[i]!];
          if ((compare(a.addrLo, b.addrLo) || a.portLo - b.portLo) >= 0) t.fail(`${shard.name} is out of order at ${i}`);
        }
      }
      // A tiny max is for the properties above: runs bound on a few ports are wider than its blocks.
      if (max >= 32) {
        t.ok(oversize <= Math.max(1, shards.length / 10), `max ${max}: ${oversize} of ${shards.length} shards over the size`);
        const pieces = shards.reduce((n, s) => n + s.entries.length, 0);
        t.ok(pieces <= entries.length * 1.6, `max ${max}: ${pieces} pieces of ${entries.length} entries`);
      }
      // Joined back, the clipped parts are the entries: per port range and label, the same address total.
      const size = (list: readonly Entry[]): bigint => list.reduce((n, e) => n + toBig(e.addrHi) - toBig(e.addrLo) + 1n, 0n);
      const before = areas(entries);
      const after = areas(shards.flatMap((s) => s.entries));
      t.same([...after.keys()].sort(), [...before.keys()].sort(), `max ${max}: the same port ranges and labels`);
      const wrong = [...before].filter(([k, list]) => size(list) !== size(after.get(k) ?? []));
      t.same(wrong, [], `max ${max}: every entry's addresses, no more, no fewer (${shards.length} shards)`);
    }
  });
}

function toBig(words: readonly number[]): bigint {
  return words.reduce((n, w) => (n << 32n) | BigInt(w >>> 0), 0n);
}
