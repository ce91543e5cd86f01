// npm run bench:tproxy [-- --quick]     (as root: network namespaces and nftables)
//
// New TCP connections per second from another network namespace: a Node http service listening
// directly, behind the dispatcher in ports mode, and behind it in tproxy mode (nftables TPROXY to one
// transparent socket), interleaved rounds in one run. wrk runs in the client namespace.
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { capture, interleaved, si, writeResult } from './common.js';
import { bind, daemon, requireTool, start, stopAll } from './harness.js';

const QUICK = process.argv.includes('--quick');
const ROUNDS = 3;
const SECONDS = QUICK ? 1 : 5;
const SERVICE = fileURLToPath(new URL('./services/http-service.mjs', import.meta.url));
const NETNS = fileURLToPath(new URL('../scripts/netns.sh', import.meta.url));

if (process.getuid?.() !== 0) {
  console.error('bench:tproxy needs root (network namespaces, nftables)');
  process.exit(2);
}
requireTool('wrk', 'wrk');
requireTool('nft', 'nftables');

const id = `b${process.pid.toString(36)}`;
const inHost = ['ip', 'netns', 'exec', `disp-h-${id}`];
const inClient = /** @type {const} */ (['ip', 'netns', 'exec', `disp-c-${id}`]);

/**
 * New connections (requests with Connection: close) per second to `url`, from the client namespace.
 * @param {string} url
 */
function wrk(url) {
  const out = execFileSync(inClient[0], [...inClient.slice(1), 'wrk', '-t1', '-c32', `-d${SECONDS}s`, '-H', 'Connection: close', url], {
    encoding: 'utf8',
  });
  return Number(capture(/Requests\/sec:\s+([\d.]+)/, out));
}

const dirs = /** @type {const} */ ([
  await mkdtemp(join(tmpdir(), 'dispatcher-bench-')),
  await mkdtemp(join(tmpdir(), 'dispatcher-bench-')),
]);
execFileSync(NETNS, ['up', id]);
try {
  const ports = await daemon(dirs[0], [], inHost);
  const tproxy = await daemon(dirs[1], ['--mode', 'tproxy'], inHost);
  await bind(ports.client, 'http', 'tcp', '203.0.113.0/24', 24081);
  await bind(tproxy.client, 'http', 'tcp', '198.51.100.0/24', 0);
  await Promise.all([
    start([process.execPath, SERVICE, 'direct', 24080, '::'], /ready/, inHost),
    start([process.execPath, SERVICE, 'attach', 'http', ports.services]),
    start([process.execPath, SERVICE, 'attach', 'http', tproxy.services]),
  ]);
  // Each round dials another address (tproxy: and another port, every one being served), so no round
  // meets the last one's connections in TIME_WAIT.
  let round = 0;
  const next = () => 10 + (round++ % 200);
  const summary = await interleaved(
    {
      direct: () => wrk(`http://203.0.113.${next()}:24080/`),
      'ports mode': () => wrk(`http://203.0.113.${next()}:24081/`),
      'tproxy mode': () => wrk(`http://198.51.100.${next()}:${30000 + round}/`),
    },
    ROUNDS,
  );
  console.log(`\nNew connections/s from a client namespace, medians of ${ROUNDS} interleaved rounds, ${SECONDS} s each\n`);
  for (const [name, s] of Object.entries(summary)) {
    console.log(
      `  ${name.padEnd(12)} ${si(s.median).padStart(7)}/s  (${si(s.min)}-${si(s.max)})  ${(s.median / summary.direct.median).toFixed(2)}x direct`,
    );
  }
  console.log(`\n  tproxy / ports = ${(summary['tproxy mode'].median / summary['ports mode'].median).toFixed(2)}`);
  console.log(`\n${await writeResult('tproxy', { quick: QUICK, rounds: ROUNDS, seconds: SECONDS, summary })}`);
} finally {
  stopAll();
  await new Promise((r) => setTimeout(r, 500));
  execFileSync(NETNS, ['down', id]);
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
}
