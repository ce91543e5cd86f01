// npm run build && node bench/steering.js [--quick]
//
// Kernel steering's compile step: the time to compile a table of 10, 10,000 and 100,000 random bindings into
// disjoint (address interval . port interval) -> label entries (src/steering/compile.ts), the entry count,
// and the time to render them as nftables map elements. The table is built outside the timing. The issue's
// target is 100k compiled and applied in under 2 s; this measures the compile (and render) part alone.
import { Binding, Table } from '../dist/index.js';
import { compileTable } from '../dist/steering/compile.js';
import { renderElements } from '../dist/steering/render.js';
import { interleaved, writeResult } from './common.js';
import { rng } from '../test/helpers/rng.js';

/** @typedef {import('../dist/steering/compile.js').CompiledTable} CompiledTable */

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
      return keep === 0 ? 0 : (word & ~(0xffffffff >>> keep)) >>> 0;
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
for (const size of SIZES) {
  const table = Table.from(randomBindings(size, size));
  const compiled = compileTable(table);
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
const result = SIZES.map((size) => ({ size, entries: entries[size], compile_ms: compileMs[size], render_ms: renderMs[size] }));
console.log(`\n${await writeResult('steering', { quick: QUICK, rounds: ROUNDS, sizes: result })}`);
