// node bench/soak.js [--minutes 10]      (not part of npm test)
//
// Churn for a long while against one daemon: clients connecting continuously, bindings moving between
// labels, workers registering and leaving. Reports connections served and refused, and the daemon's
// descriptors and resident memory at the start and the end (they should not grow).
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { capture } from './common.js';
import { bind, daemon, start, stopAll } from './harness.js';

const at = process.argv.indexOf('--minutes');
const MINUTES = at > 0 ? Number(process.argv[at + 1]) : 10;
const ECHO = fileURLToPath(new URL('../test/fixtures/echo-service.mjs', import.meta.url));
const PORT = 26080;

/**
 * The descriptors and resident memory of a process.
 * @param {number | undefined} pid
 */
async function sample(pid) {
  const fds = (await readdir(`/proc/${pid}/fd`)).length;
  const rss = Number(capture(/VmRSS:\s+(\d+)/, await readFile(`/proc/${pid}/status`, 'utf8'))) / 1024;
  return { fds, rss_mib: Math.round(rss) };
}

/**
 * One connection to `host`: 'served', 'closed' (without data), 'timeout', or the error's code (its message
 * when it has none).
 * @param {string} host
 * @returns {Promise<string>}
 */
function once(host) {
  return new Promise((resolve) => {
    const s = connect(PORT, host);
    const timer = setTimeout(() => done('timeout'), 5000);
    /** @param {string} result */
    const done = (result) => {
      clearTimeout(timer);
      s.destroy();
      resolve(result);
    };
    s.on('data', () => done('served'));
    s.on('error', (/** @type {NodeJS.ErrnoException} */ err) => done(err.code ?? err.message));
    s.on('end', () => done('closed'));
  });
}

const dir = await mkdtemp(join(tmpdir(), 'dispatcher-soak-'));
try {
  const d = await daemon(dir);
  await bind(d.client, 'a', 'tcp', '127.0.0.0/8', PORT);
  const workers = {
    a: await start([process.execPath, ECHO, 'a', d.services], /registered/),
    b: await start([process.execPath, ECHO, 'b', d.services], /registered/),
  };
  const first = await sample(d.pid);
  /** @type {Record<string, number>} results of the clients' connections, by kind */
  const counts = {};
  const end = Date.now() + MINUTES * 60_000;
  const clients = Array.from({ length: 4 }, async (_, i) => {
    while (Date.now() < end) {
      const r = await once(`127.0.0.${2 + i}`);
      counts[r] = (counts[r] ?? 0) + 1;
    }
  });
  let moves = 0;
  while (Date.now() < end) {
    // Move 127.0.0.2-3 to b and back; restart one worker now and then.
    await bind(d.client, 'b', 'tcp', '127.0.0.2/31', PORT);
    await new Promise((r) => setTimeout(r, 200));
    await d.client.call('DELETE', '/bindings', {
      body: JSON.stringify({ label: 'b', protocol: 'tcp', prefix: '127.0.0.2/31', port: PORT }),
    });
    if (++moves % 10 === 0) {
      const label = moves % 20 === 0 ? 'a' : 'b';
      workers[label].kill('SIGTERM');
      workers[label] = await start([process.execPath, ECHO, label, d.services], /registered/);
    }
    process.stderr.write(`\rsoak: ${Math.ceil((end - Date.now()) / 1000)} s left, ${JSON.stringify(counts)}   `);
  }
  await Promise.all(clients);
  const last = await sample(d.pid);
  console.log(`\nsoak of ${MINUTES} min: ${JSON.stringify(counts)}; ${moves} rebinding rounds`);
  console.log(`daemon at start: ${JSON.stringify(first)}; at the end: ${JSON.stringify(last)}`);
} finally {
  stopAll();
  await rm(dir, { recursive: true, force: true });
}
