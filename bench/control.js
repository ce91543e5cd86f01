// npm run bench:control [-- --quick]
//
// The control plane under traffic:
// - from `bind add` returning to the first connection served under the new binding (a new address on a
//   port already listened on, and a new port, whose listener opens with the change);
// - replacing 100k bindings while clients keep connecting to an address whose binding stays: how long a
//   replace takes, and how many of those connections fail (the table swaps whole, so none should).
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Binding, formatBindingsFile } from '../dist/index.js';
import { summary, writeResult } from './common.js';
import { bind, daemon, start, stopAll } from './harness.js';

const QUICK = process.argv.includes('--quick');
const SAMPLES = QUICK ? 10 : 50;
const REPLACES = QUICK ? 2 : 6;
const SERVICE = fileURLToPath(new URL('./services/http-service.mjs', import.meta.url));
const PORT = 28080;

/**
 * ms until `address`:`port` answers an HTTP request.
 * @param {string} address
 * @param {number} port
 * @returns {Promise<number>}
 */
function served(address, port) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const s = connect(port, address, () => s.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
    s.once('data', () => {
      s.destroy();
      resolve(performance.now() - t0);
    });
    s.on('error', reject);
  });
}

/**
 * A bindings file's JSON, for PUT /bindings.
 * @param {number} n
 * @param {number} seed
 */
function bindings(n, seed) {
  // n /32s of the benchmark range 198.18.0.0/15, relabelled by `seed` (never dialled: only the replace
  // matters), plus the binding that stays.
  const out = [new Binding('stay', 'tcp', 4, [0x7f000001], 32, PORT)];
  for (let i = 0; i < n; i++) out.push(new Binding(`l${(i + seed) % 100}`, 'tcp', 4, [(0xc6120000 + i) >>> 0], 32, 9000 + (i % 50)));
  return JSON.stringify(formatBindingsFile(out));
}

const dir = await mkdtemp(join(tmpdir(), 'dispatcher-bench-'));
try {
  const d = await daemon(dir);
  await bind(d.client, 'stay', 'tcp', '127.0.0.1', PORT);
  await start([process.execPath, SERVICE, 'attach', 'stay,moved', d.services]);

  /** @type {number[]} */
  const sameport = [];
  /** @type {number[]} */
  const newport = [];
  for (let i = 0; i < SAMPLES; i++) {
    await bind(d.client, 'moved', 'tcp', `127.0.3.${i + 1}`, PORT);
    sameport.push(await served(`127.0.3.${i + 1}`, PORT));
    await bind(d.client, 'moved', 'tcp', '127.0.4.1', PORT + 1 + i);
    newport.push(await served('127.0.4.1', PORT + 1 + i));
  }

  // Replaces of 100k bindings while four clients keep connecting to the binding that stays.
  let running = true;
  let ok = 0;
  let failed = 0;
  const clients = Array.from({ length: 4 }, async () => {
    while (running)
      await served('127.0.0.1', PORT).then(
        () => ok++,
        () => failed++,
      );
  });
  /** @type {number[]} */
  const replaceMs = [];
  for (let i = 0; i < REPLACES; i++) {
    const body = bindings(100_000, i % 2);
    const t0 = performance.now();
    await d.client.call('PUT', '/bindings', { body });
    replaceMs.push(performance.now() - t0);
  }
  running = false;
  await Promise.all(clients);

  const result = {
    quick: QUICK,
    bind_to_served_ms: { same_port: summary(sameport), new_port: summary(newport) },
    replace_100k_ms: summary(replaceMs),
    during_replaces: { served: ok, failed },
  };
  /** @param {import('./common.js').Summary} s */
  const f = (s) => `median ${s.median.toFixed(2)} ms (${s.min.toFixed(2)}-${s.max.toFixed(2)})`;
  console.log(`\nFrom bind add returning to the first connection served under it (${SAMPLES} samples):`);
  console.log(`  a new address, port already listening  ${f(result.bind_to_served_ms.same_port)}`);
  console.log(`  a new port (its listener opens)         ${f(result.bind_to_served_ms.new_port)}`);
  console.log(`Replace 100k bindings (${REPLACES} times): ${f(result.replace_100k_ms)}`);
  console.log(`Meanwhile, connections under the binding that stayed: ${ok} served, ${failed} failed`);
  console.log(`\n${await writeResult('control', result)}`);
} finally {
  stopAll();
  await rm(dir, { recursive: true, force: true });
}
