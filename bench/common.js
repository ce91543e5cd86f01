// Shared by the benchmarks: statistics over rounds, the machine's description, and result files.
import { cpus, release, totalmem } from 'node:os';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url));

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Median, min and max of a case's rounds. */
export function summary(xs) {
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs), rounds: xs.length };
}

export function machine() {
  const c = cpus();
  return { cpus: c.length, cpu: c[0]?.model ?? 'unknown', kernel: release(), node: process.version, memory_gib: Math.round(totalmem() / 2 ** 30) };
}

/** 12345678 -> "12.3M" */
export function si(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return n.toFixed(n < 10 ? 2 : 0);
}

export function progress(text) {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${text}`);
  else process.stderr.write(`${text}\n`);
}

/** bench/results/<name>-<date>.json; a --quick run writes <name>-<date>-quick.json and keeps the full one. */
export function resultFile(name, quick) {
  return join(RESULTS_DIR, `${name}-${new Date().toISOString().slice(0, 10)}${quick ? '-quick' : ''}.json`);
}

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
 */
export async function interleaved(cases, rounds, label = '') {
  const figures = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
  const total = rounds * Object.keys(cases).length;
  const started = performance.now();
  let done = 0;
  for (let r = 0; r < rounds; r++) {
    const order = Object.entries(cases);
    if (r % 2 === 1) order.reverse();
    for (const [name, run] of order) {
      // Time left, from the cases run so far (after the first).
      const left = done === 0 ? '' : `, about ${Math.ceil((((performance.now() - started) / done) * (total - done)) / 1000)} s left`;
      progress(`${label}round ${r + 1}/${rounds}: ${name}${left}`);
      done++;
      figures[name].push(await run());
    }
  }
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  return Object.fromEntries(Object.entries(figures).map(([k, xs]) => [k, summary(xs)]));
}
