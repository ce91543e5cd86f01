// npm run bench:scaling [-- --quick]
//
// New connections per second (wrk, Connection: close) through the dispatcher as the registry grows:
// 1, 2 and 4 worker processes sharing one label, and one label's traffic while 10 or 1,000 labels are
// bound and registered. Interleaved rounds, medians.
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { capture, interleaved, si, writeResult } from './common.js';
import { bind, daemon, requireTool, start, stopAll } from './harness.js';

/** @typedef {import('../dist/index.js').BindingJSON} BindingJSON */

const QUICK = process.argv.includes('--quick');
const ROUNDS = 3;
const SECONDS = QUICK ? 1 : 5;
const SERVICE = fileURLToPath(new URL('./services/http-service.mjs', import.meta.url));

requireTool('wrk', 'wrk');

/**
 * New connections (requests with Connection: close) per second to `address`:`port`.
 * @param {string} address
 * @param {number} port
 */
function wrk(address, port) {
  const out = execFileSync('wrk', ['-t1', '-c32', `-d${SECONDS}s`, '-H', 'Connection: close', `http://${address}:${port}/`], {
    encoding: 'utf8',
  });
  return Number(capture(/Requests\/sec:\s+([\d.]+)/, out));
}

const dir = await mkdtemp(join(tmpdir(), 'dispatcher-bench-'));
try {
  const d = await daemon(dir);
  const port = 27080;
  // Workers: labels w1, w2, w4 with 1, 2 and 4 processes, on 127.0.1.1-3.
  /** @type {Record<string, import('./common.js').Case>} */
  const cases = {};
  for (const [i, n] of [1, 2, 4].entries()) {
    await bind(d.client, `w${n}`, 'tcp', `127.0.1.${i + 1}`, port);
    for (let k = 0; k < n; k++) await start([process.execPath, SERVICE, 'attach', `w${n}`, d.services]);
    cases[`${n} worker${n > 1 ? 's' : ''} per label`] = () => wrk(`127.0.1.${i + 1}`, port);
  }
  // Labels: 10 and 1,000 labels bound (a /32 each) and registered by one process; traffic to one of them.
  for (const [i, n] of [10, 1000].entries()) {
    const labels = Array.from({ length: n }, (_, k) => `l${n}-${k}`);
    await d.client.call('PUT', '/bindings', {
      body: JSON.stringify({
        bindings: [
          .../** @type {{ bindings: BindingJSON[] }} */ (await d.client.call('GET', '/bindings')).bindings,
          ...labels.map((label, k) => ({ label, protocol: 'tcp', prefix: `127.${2 + i}.${k >> 8}.${k & 255}`, port })),
        ],
      }),
    });
    await start([process.execPath, SERVICE, 'attach', labels.join(','), d.services]);
    cases[`${n} labels`] = () => wrk(`127.${2 + i}.0.7`, port);
  }
  const summary = await interleaved(cases, ROUNDS);
  console.log(`\nNew connections/s through the dispatcher, medians of ${ROUNDS} interleaved rounds, ${SECONDS} s each\n`);
  for (const [name, s] of Object.entries(summary))
    console.log(`  ${name.padEnd(24)} ${si(s.median).padStart(7)}/s  (${si(s.min)}-${si(s.max)})`);
  console.log(`\n${await writeResult('scaling', { quick: QUICK, rounds: ROUNDS, seconds: SECONDS, summary })}`);
} finally {
  stopAll();
  await rm(dir, { recursive: true, force: true });
}
