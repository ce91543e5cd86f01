// Shared by the benchmarks: statistics over rounds, the machine's description, result files, reading tools' output.
import { cpus, release, totalmem } from 'node:os';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url));

/**
 * Median, min and max of a case's rounds.
 * @typedef {{ median: number, min: number, max: number, rounds: number }} Summary
 */

/** A case: one round's figure. @typedef {() => number | Promise<number>} Case */

/** NaN for no figures. @param {readonly number[]} xs */
export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const hi = s[mid] ?? NaN;
  return s.length % 2 ? hi : ((s[mid - 1] ?? NaN) + hi) / 2;
}

/**
 * Median, min and max of a case's rounds.
 * @param {readonly number[]} xs
 * @returns {Summary}
 */
export function summary(xs) {
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs), rounds: xs.length };
}

export function machine() {
  const c = cpus();
  return {
    cpus: c.length,
    cpu: c[0]?.model ?? 'unknown',
    kernel: release(),
    node: process.version,
    memory_gib: Math.round(totalmem() / 2 ** 30),
  };
}

/**
 * 12345678 -> "12.3M"
 * @param {number} n
 */
export function si(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return n.toFixed(n < 10 ? 2 : 0);
}

/**
 * The first group of `re` in `text` (a tool's output), or an error quoting the text.
 * @param {RegExp} re
 * @param {string} text
 */
export function capture(re, text) {
  const m = re.exec(text)?.[1];
  if (m === undefined) throw new Error(`no ${re} in:\n${text}`);
  return m;
}

/** @param {string} text */
export function progress(text) {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${text}`);
  else process.stderr.write(`${text}\n`);
}

/**
 * bench/results/<name>-<date>.json; a --quick run writes <name>-<date>-quick.json and keeps the full one.
 * @param {string} name
 * @param {boolean} quick
 */
export function resultFile(name, quick) {
  return join(RESULTS_DIR, `${name}-${new Date().toISOString().slice(0, 10)}${quick ? '-quick' : ''}.json`);
}

/**
 * Writes a benchmark's result, with the machine and the date, to its result file; returns the file's path.
 * @param {string} name
 * @param {{ quick: boolean } & Record<string, unknown>} result
 */
export async function writeResult(name, result) {
  await mkdir(RESULTS_DIR, { recursive: true });
  const file = resultFile(name, result.quick);
  await writeFile(file, `${JSON.stringify({ machine: machine(), date: new Date().toISOString(), ...result }, null, 2)}\n`);
  return file;
}

/**
 * Runs `cases` (name -> function returning a figure) in interleaved rounds, so a noisy neighbour hits every
 * case alike; every other round runs in reverse order (A B C, C B A, A B C), so that no case always runs
 * right after the same other one. Returns name -> summary.
 * @template {string} K
 * @param {Record<K, Case>} cases
 * @param {number} rounds
 * @returns {Promise<Record<K, Summary>>}
 */
export async function interleaved(cases, rounds, label = '') {
  /** @type {{ name: string, run: Case, figures: number[] }[]} */
  const all = Object.entries(/** @type {Record<string, Case>} */ (cases)).map(([name, run]) => ({ name, run, figures: [] }));
  const total = rounds * all.length;
  const started = performance.now();
  let done = 0;
  for (let r = 0; r < rounds; r++) {
    const order = [...all];
    if (r % 2 === 1) order.reverse();
    for (const { name, run, figures } of order) {
      // Time left, from the cases run so far (after the first).
      const left = done === 0 ? '' : `, about ${Math.ceil((((performance.now() - started) / done) * (total - done)) / 1000)} s left`;
      progress(`${label}round ${r + 1}/${rounds}: ${name}${left}`);
      done++;
      figures.push(await run());
    }
  }
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  return /** @type {Record<K, Summary>} */ (Object.fromEntries(all.map(({ name, figures }) => [name, summary(figures)])));
}

/**
 * Runs `cases` in interleaved rounds, keeping every round's whole result; the figure the rounds are
 * summarized by is `figure` of each result.
 * @template {string} K
 * @template {{ figure: number }} R
 * @param {Record<K, () => R | Promise<R>>} cases
 * @param {number} rounds
 * @param {string} [label]
 * @returns {Promise<{ summary: Record<K, Summary>, raw: Record<K, R[]> }>}
 */
export async function interleavedRounds(cases, rounds, label = '') {
  const names = /** @type {K[]} */ (Object.keys(cases));
  const raw = /** @type {Record<K, R[]>} */ (Object.fromEntries(names.map((k) => [k, /** @type {R[]} */ ([])])));
  const summary = await interleaved(
    /** @type {Record<K, Case>} */ (
      Object.fromEntries(
        names.map((name) => [
          name,
          async () => {
            const r = await cases[name]();
            raw[name].push(r);
            return r.figure;
          },
        ]),
      )
    ),
    rounds,
    label,
  );
  return { summary, raw };
}
