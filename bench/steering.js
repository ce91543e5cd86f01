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
import { Table } from '../dist/index.js';
import { compileSpace, compileTable } from '../dist/steering/compile.js';
import { renderElements } from '../dist/steering/render.js';
import { applySteering, planSteering, removeSteering, steeringRuleset, updateSteering } from '../dist/steering/ruleset.js';
import { interleaved, summary, writeResult } from './common.js';
import { randomBindings, randomLabelSocket } from './steering-tables.js';

/** @typedef {import('../dist/index.js').Binding} Binding */
/** @typedef {import('../dist/steering/compile.js').CompiledTable} CompiledTable */
/** @typedef {import('./common.js').Summary} Summary */

const QUICK = process.argv.includes('--quick');
const SIZES = [10, 10_000, 100_000];
const ROUNDS = QUICK ? 1 : 5;

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
    // Every space of a fresh table: compileTable caches a space's entries on the table that holds it.
    const started = performance.now();
    for (const protocol of /** @type {const} */ (['tcp', 'udp']))
      for (const family of /** @type {const} */ ([4, 6])) compileSpace(table, protocol, family);
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
  const ns = `apl-steer-${process.pid}`;
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
      const plan = planSteering(c, randomLabelSocket);
      rulesets[size] = () => {
        const started = performance.now();
        steeringRuleset(planSteering(c, randomLabelSocket));
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
      const plan = planSteering(c, randomLabelSocket);
      // One binding moved to a label of its own (a new chain): the diff and nft -f of an update, toggled
      // back and forth from the applied table. Recompiling the changed table is the compile column's.
      const first = /** @type {Binding} */ (table.bindings()[0]);
      const moved = planSteering(compileTable(table.with(first.withLabel('label-1000')).table), randomLabelSocket);
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
