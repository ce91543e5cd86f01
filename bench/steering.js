// npm run build && node bench/steering.js [--quick]
//
// Kernel steering: the time to compile a table of 10, 10,000 and 100,000 random bindings into disjoint
// (address interval . port interval) -> label entries (src/steering/compile.ts), the entry count, the time
// to render them as nftables map elements, and, as root with nft, the time to render the whole ruleset
// (src/steering/ruleset.ts) and to apply it with `nft -f` in a throwaway network namespace, both onto an
// empty namespace and replacing a table of the same size, and to update it in place for one binding moved
// (updateSteering: only the elements that differ). The table is built outside the timing. The issue's
// targets: 100k compiled and applied in under 2 s, bind add to steered in under 50 ms.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Binding, Table } from '../dist/index.js';
import { compileTable } from '../dist/steering/compile.js';
import { renderElements } from '../dist/steering/render.js';
import { applySteering, planSteering, removeSteering, steeringRuleset, updateSteering } from '../dist/steering/ruleset.js';
import { interleaved, summary, writeResult } from './common.js';
import { rng } from '../test/helpers/rng.js';

/** @typedef {import('../dist/steering/compile.js').CompiledTable} CompiledTable */
/** @typedef {import('./common.js').Summary} Summary */

const QUICK = process.argv.includes('--quick');
const SIZES = [10, 10_000, 100_000];
const ROUNDS = QUICK ? 1 : 5;
const PORTS = [80, 443, 53, 8080, 22, 8443, 25, 3306];

/**
 * Dense enough to nest: IPv4 in 198.18.0.0/15 (lengths /16-/32), IPv6 in 2001:db8::/32 with few distinct
 * bits (lengths /48-/128); 40% port 0, 60% tcp, 1,000 labels. Nesting is what makes the compiler carve, and
 * bench/table.js's spread-out prefixes rarely nest.
 * @param {number} n
 * @param {number} seed
 */
function randomBindings(n, seed) {
  const r = rng(seed);
  /** @param {number} bits */
  const low = (bits) => Math.floor(r() * 2 ** bits);
  /** @type {Map<string, Binding>} */
  const byKey = new Map();
  while (byKey.size < n) {
    const v4 = r() < 0.75;
    const length = v4 ? 32 - Math.floor(r() ** 2 * 17) : 128 - Math.floor(r() ** 2 * 81);
    const words = v4 ? [(0xc6120000 | low(17)) >>> 0] : [0x20010db8, low(16) << 16, low(8), low(16)];
    const masked = words.map((word, i) => {
      const keep = Math.max(0, Math.min(32, length - 32 * i));
      // A shift by 32 is a shift by 0 in JavaScript: a whole word is kept as it is.
      return keep === 0 ? 0 : keep === 32 ? word : (word & ~(0xffffffff >>> keep)) >>> 0;
    });
    const port = r() < 0.4 ? 0 : /** @type {number} */ (PORTS[Math.floor(r() * PORTS.length)]);
    const b = new Binding(`label-${Math.floor(r() * 1000)}`, r() < 0.6 ? 'tcp' : 'udp', v4 ? 4 : 6, masked, length, port);
    byKey.set(b.key(), b);
  }
  return [...byKey.values()];
}

/** @param {CompiledTable} c */
const entryCount = (c) => c.tcp[4].length + c.tcp[6].length + c.udp[4].length + c.udp[6].length;

/** @type {Record<string, import('./common.js').Case>} */
const compiles = {};
/** @type {Record<string, import('./common.js').Case>} */
const renders = {};
/** @type {Record<string, number>} */
const entries = {};
/** @type {Map<number, { table: Table, compiled: CompiledTable }>} */
const bySize = new Map();
for (const size of SIZES) {
  const table = Table.from(randomBindings(size, size));
  const compiled = compileTable(table);
  bySize.set(size, { table, compiled });
  entries[size] = entryCount(compiled);
  compiles[size] = () => {
    const started = performance.now();
    compileTable(table);
    return performance.now() - started;
  };
  renders[size] = () => {
    const started = performance.now();
    for (const protocol of /** @type {const} */ (['tcp', 'udp'])) {
      for (const family of /** @type {const} */ ([4, 6])) renderElements(compiled[protocol][family], family, (label) => `jump to_${label}`);
    }
    return performance.now() - started;
  };
}
const compileMs = await interleaved(compiles, ROUNDS, 'compile ');
const renderMs = await interleaved(renders, ROUNDS, 'render ');

/** Every label has a socket for every protocol and family: the most chains. */
const sockets = (/** @type {string} */ label) => ({ address: '127.0.0.1', port: 20000 + Number(label.slice('label-'.length)) });
/** @type {Record<string, { ruleset_bytes: number, ruleset_ms: Summary, apply_fresh_ms: Summary, apply_replace_ms: Summary, update_one_ms: Summary }> | undefined} */
let applied;
const canApply =
  process.getuid?.() === 0 &&
  (() => {
    try {
      execFileSync('nft', ['--version'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();
if (canApply) {
  // A namespace of its own: an empty nftables state, and nothing else on the machine touched.
  const ns = `sta-bench-${process.pid}`;
  const dir = mkdtempSync(join(tmpdir(), 'steering-bench-'));
  const nft = join(dir, 'nft');
  writeFileSync(nft, `#!/bin/sh\nexec ip netns exec ${ns} nft "$@"\n`);
  chmodSync(nft, 0o755);
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    /** @type {Record<string, import('./common.js').Case>} */
    const rulesets = {};
    /** @type {Record<string, import('./common.js').Case>} */
    const fresh = {};
    /** @type {Record<string, import('./common.js').Case>} */
    const replace = {};
    for (const [size, { compiled: c }] of bySize) {
      const plan = planSteering(c, sockets);
      rulesets[size] = () => {
        const started = performance.now();
        steeringRuleset(planSteering(c, sockets));
        return performance.now() - started;
      };
      const apply = async () => {
        const started = performance.now();
        await applySteering(plan, nft);
        return performance.now() - started;
      };
      fresh[size] = async () => {
        await removeSteering(nft);
        return apply();
      };
      replace[size] = async () => {
        await applySteering(plan, nft);
        return apply();
      };
    }
    const rulesetMs = await interleaved(rulesets, ROUNDS, 'ruleset ');
    const freshMs = await interleaved(fresh, ROUNDS, 'apply ');
    const replaceMs = await interleaved(replace, ROUNDS, 'replace ');
    /** @param {Record<string, Summary>} s @param {number} size */
    const at = (s, size) => /** @type {Summary} */ (s[size]);
    applied = {};
    for (const [size, { table, compiled: c }] of bySize) {
      const plan = planSteering(c, sockets);
      // One binding moved to a label of its own (a new chain): the diff and nft -f of an update, toggled
      // back and forth from the applied table. Recompiling the changed table is the compile column's.
      const first = /** @type {Binding} */ (table.bindings()[0]);
      const moved = planSteering(compileTable(table.with(first.withLabel('label-1000')).table), sockets);
      await applySteering(plan, nft);
      /** @type {number[]} */
      const updates = [];
      for (let r = 0; r < 2 * ROUNDS; r++) {
        const started = performance.now();
        const how = await (r % 2 === 0 ? updateSteering(plan, moved, nft) : updateSteering(moved, plan, nft));
        updates.push(performance.now() - started);
        if (how !== 'updated') throw new Error(`an update at ${size} bindings was ${how}`);
      }
      applied[size] = {
        ruleset_bytes: steeringRuleset(plan).length,
        ruleset_ms: at(rulesetMs, size),
        apply_fresh_ms: at(freshMs, size),
        apply_replace_ms: at(replaceMs, size),
        update_one_ms: summary(updates),
      };
    }
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log(`\nKernel steering: compile (and render) a table, medians of ${ROUNDS} interleaved rounds\n`);
console.log('  bindings    entries   per binding   compile ms   render ms');
for (const size of SIZES) {
  const e = /** @type {number} */ (entries[size]);
  const c = /** @type {import('./common.js').Summary} */ (compileMs[size]);
  const r = /** @type {import('./common.js').Summary} */ (renderMs[size]);
  console.log(
    `  ${String(size).padStart(8)} ${String(e).padStart(10)} ${(e / size).toFixed(2).padStart(13)} ${c.median.toFixed(1).padStart(12)} ${r.median.toFixed(1).padStart(11)}`,
  );
}
if (applied === undefined) console.log('\n  (apply: skipped, needs root and nft)');
else {
  console.log('\n  bindings   ruleset MiB   ruleset ms   nft -f ms (empty)   nft -f ms (replacing)   update one ms');
  for (const size of SIZES) {
    const a = applied[size];
    if (a === undefined) continue;
    console.log(
      `  ${String(size).padStart(8)} ${(a.ruleset_bytes / 2 ** 20).toFixed(2).padStart(13)} ${a.ruleset_ms.median.toFixed(1).padStart(12)} ${a.apply_fresh_ms.median.toFixed(0).padStart(19)} ${a.apply_replace_ms.median.toFixed(0).padStart(23)} ${a.update_one_ms.median.toFixed(1).padStart(15)}`,
    );
  }
}
const result = SIZES.map((size) => ({
  size,
  entries: entries[size],
  compile_ms: compileMs[size],
  render_ms: renderMs[size],
  ...applied?.[size],
}));
console.log(`\n${await writeResult('steering', { quick: QUICK, rounds: ROUNDS, sizes: result })}`);
