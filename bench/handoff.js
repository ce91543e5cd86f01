// npm run bench:handoff [-- --quick] [-- --only proxy]
//
// A Node http service, direct versus behind the dispatcher, in the same run and interleaved rounds:
// - new connections per second and p50/p99 latency (wrk, Connection: close);
// - the daemon's CPU time per hand-off (/proc/<pid>/stat over the run, divided by its hand-offs);
// - a dispatch-only run against a service that closes what it receives: the daemon's ceiling;
// - keep-alive requests per second and a 1 GiB transfer on one connection (the daemon is out of the path),
//   with the serving process's CPU per request: on a shared machine requests/s moves with whatever else
//   runs, the CPU a request costs the server does not;
// - proxy mode (the daemon relays to the direct service) and HAProxy's own `mode tcp` proxy beside them.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { interleavedRounds, si, writeResult } from './common.js';
import { bind, cpuSeconds, daemon, requireTool, start, startServer, status, stopAll, wrk as runWrk } from './harness.js';

/** @typedef {import('./harness.js').Daemon} Daemon */
/** @typedef {import('./common.js').Summary} Summary */
/** @typedef {import('../dist/index.js').ControlClient} ControlClient */
/**
 * One round of a case: its figure (what interleaved() summarizes) and whatever else the case measured.
 * @typedef {{ figure: number, p50?: number, p99?: number, daemon_us_per_handoff?: number, proxy_us_per_connection?: number, server_us_per_request?: number, handoffs_per_second?: number }} Round
 */
/** @typedef {Round & { rps: number, p50: number, p99: number, errors: string }} WrkRound */

const QUICK = process.argv.includes('--quick');
// `--only proxy`: proxy mode, HAProxy and direct only (the ratios proxy mode is judged by).
const ONLY_PROXY = process.argv.join(' ').includes('--only proxy');
const ROUNDS = 3;
const SECONDS = QUICK ? 1 : 6;
const CONNECTIONS = 32;
const BULK_BYTES = QUICK ? 256 * 2 ** 20 : 2 ** 30;
const SERVICE = fileURLToPath(new URL('./services/http-service.mjs', import.meta.url));

/**
 * @param {number} port
 * @param {boolean} close with Connection: close, a new connection per request
 * @returns {WrkRound}
 */
function wrk(port, close) {
  const r = runWrk(`http://127.0.0.1:${port}/`, { seconds: SECONDS, connections: CONNECTIONS, close });
  return { figure: r.rps, rps: r.rps, p50: r.p50, p99: r.p99, errors: r.errors };
}

/** @param {ControlClient} client */
async function handoffs(client) {
  return (await status(client)).connections.handoffs;
}

/**
 * Runs a wrk case and measures the CPU `pid` spent per request, as `field` (proxy mode's daemon, HAProxy,
 * a keep-alive case's server).
 * @param {number | undefined} pid
 * @param {'proxy_us_per_connection' | 'server_us_per_request'} field
 * @param {() => WrkRound} fn
 */
async function withCpu(pid, field, fn) {
  const c0 = await cpuSeconds(pid);
  const r = fn();
  const c1 = await cpuSeconds(pid);
  return { ...r, [field]: ((c1 - c0) / (r.rps * SECONDS)) * 1e6 };
}

/**
 * Runs `fn` and measures the daemon's CPU per hand-off over it.
 * @template {Round} R
 * @param {Daemon} d
 * @param {() => R | Promise<R>} fn
 */
async function withDaemonCpu(d, fn) {
  const [cpu0, h0] = [await cpuSeconds(d.pid), await handoffs(d.client)];
  const t0 = performance.now();
  const result = await fn();
  const seconds = (performance.now() - t0) / 1000;
  const [cpu1, h1] = [await cpuSeconds(d.pid), await handoffs(d.client)];
  const n = h1 - h0;
  return { ...result, handoffs: n, handoffs_per_second: n / seconds, daemon_us_per_handoff: ((cpu1 - cpu0) / n) * 1e6 };
}

/**
 * Gbit/s of one BULK_BYTES download from `port`.
 * @param {number} port
 * @returns {Promise<Round & { gbps: number }>}
 */
function download(port) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let bytes = 0;
    const s = connect(port, '127.0.0.1');
    s.on('data', (c) => (bytes += c.length));
    s.on('error', reject);
    s.on('end', () => {
      if (bytes !== BULK_BYTES) return reject(new Error(`received ${bytes} of ${BULK_BYTES} bytes`));
      const gbps = (bytes * 8) / ((performance.now() - t0) / 1000) / 1e9;
      resolve({ figure: gbps, gbps });
    });
  });
}

requireTool('wrk', 'wrk');
requireTool('haproxy', 'haproxy');
const dir = await mkdtemp(join(tmpdir(), 'dispatcher-bench-'));
try {
  const d = await daemon(dir);
  const ports = {
    direct: 24080,
    http: 24081,
    sink: 24082,
    bulkDirect: 24083,
    bulk: 24084,
    proxy: 24087,
    bulkProxy: 24088,
    haproxy: 24085,
    bulkHaproxy: 24086,
  };
  await bind(d.client, 'http', 'tcp', '127.0.0.1', ports.http);
  await bind(d.client, 'sink', 'tcp', '127.0.0.1', ports.sink);
  await bind(d.client, 'bulk', 'tcp', '127.0.0.1', ports.bulk);
  // Proxy mode: labels with an upstream and no worker, relayed by the daemon to the direct services.
  await bind(d.client, 'proxied', 'tcp', '127.0.0.1', ports.proxy);
  await bind(d.client, 'bulk-proxied', 'tcp', '127.0.0.1', ports.bulkProxy);
  await d.client.call('POST', '/upstreams', { body: JSON.stringify({ label: 'proxied', address: `tcp:127.0.0.1:${ports.direct}` }) });
  await d.client.call('POST', '/upstreams', {
    body: JSON.stringify({ label: 'bulk-proxied', address: `tcp:127.0.0.1:${ports.bulkDirect}` }),
  });
  await writeFile(
    join(dir, 'haproxy.cfg'),
    [
      'global',
      '  maxconn 8000',
      'defaults',
      '  mode tcp',
      '  timeout connect 5s',
      '  timeout client 60s',
      '  timeout server 60s',
      `listen http`,
      `  bind 127.0.0.1:${ports.haproxy}`,
      `  server s 127.0.0.1:${ports.direct}`,
      `listen bulk`,
      `  bind 127.0.0.1:${ports.bulkHaproxy}`,
      `  server s 127.0.0.1:${ports.bulkDirect}`,
      '',
    ].join('\n'),
  );
  const haproxy = await startServer(['haproxy', '-db', '-f', join(dir, 'haproxy.cfg')], ports.haproxy);
  const [direct, attached] = await Promise.all([
    start([process.execPath, SERVICE, 'direct', ports.direct]),
    start([process.execPath, SERVICE, 'attach', 'http', d.services]),
    start([process.execPath, SERVICE, 'sink', 'sink', d.services]),
    start([process.execPath, SERVICE, 'bulk-direct', ports.bulkDirect, BULK_BYTES]),
    start([process.execPath, SERVICE, 'bulk-attach', 'bulk', d.services, BULK_BYTES]),
  ]);
  const cases = {
    'new connections, direct': () => wrk(ports.direct, true),
    'new connections, dispatcher': () => withDaemonCpu(d, () => wrk(ports.http, true)),
    'new connections, proxy mode': () => withCpu(d.pid, 'proxy_us_per_connection', () => wrk(ports.proxy, true)),
    'new connections, HAProxy': () => withCpu(haproxy.pid, 'proxy_us_per_connection', () => wrk(ports.haproxy, true)),
    // The sink closes what it gets, so wrk sees no responses: the figure is the daemon's hand-offs/s.
    'dispatch only (sink service)': async () => {
      const r = await withDaemonCpu(d, () => wrk(ports.sink, true));
      return { ...r, figure: r.handoffs_per_second };
    },
    'keep-alive, direct': () => withCpu(direct.pid, 'server_us_per_request', () => wrk(ports.direct, false)),
    'keep-alive, dispatcher': () => withCpu(attached.pid, 'server_us_per_request', () => wrk(ports.http, false)),
    'bulk, direct': () => download(ports.bulkDirect),
    'bulk, dispatcher': () => download(ports.bulk),
    'bulk, proxy mode': () => download(ports.bulkProxy),
    'bulk, HAProxy': () => download(ports.bulkHaproxy),
  };
  /** @typedef {keyof typeof cases} CaseName */
  const names = /** @type {CaseName[]} */ (Object.keys(cases)).filter(
    (n) => !ONLY_PROXY || /proxy|HAProxy|^(new connections|bulk), direct/.test(n),
  );
  // Every field of every round, not only the figure the rounds are summarized by.
  const { summary, raw } = await interleavedRounds(
    /** @type {Record<CaseName, () => Round | Promise<Round>>} */ (
      /** @type {unknown} */ (Object.fromEntries(names.map((n) => [n, cases[n]])))
    ),
    ROUNDS,
  );
  /**
   * The middle round's `field` (undefined when the case does not measure it).
   * @param {CaseName} name
   * @param {Exclude<keyof Round, 'figure'>} field
   */
  const med = (name, field) => {
    const xs = raw[name]
      .map((r) => r[field])
      .filter((x) => x !== undefined)
      .sort((a, b) => a - b);
    return xs[xs.length >> 1];
  };
  const figures =
    /** @type {Record<CaseName, Summary & { p50_ms?: number, p99_ms?: number, daemon_us_per_handoff?: number, proxy_us_per_connection?: number, server_us_per_request?: number, handoffs_per_second?: number, rounds_raw: Round[] }>} */ (
      Object.fromEntries(
        names.map((name) => [
          name,
          {
            ...summary[name],
            p50_ms: med(name, 'p50'),
            p99_ms: med(name, 'p99'),
            daemon_us_per_handoff: med(name, 'daemon_us_per_handoff'),
            proxy_us_per_connection: med(name, 'proxy_us_per_connection'),
            server_us_per_request: med(name, 'server_us_per_request'),
            handoffs_per_second: med(name, 'handoffs_per_second'),
            rounds_raw: raw[name],
          },
        ]),
      )
    );

  /** @param {CaseName} a @param {CaseName} b */
  const ratio = (a, b) => (figures[a].median / figures[b].median).toFixed(2);
  console.log(
    `\nMedians of ${ROUNDS} interleaved rounds, ${SECONDS} s each, wrk -t1 -c${CONNECTIONS}; ratio to direct from the same rounds\n`,
  );
  for (const [name, f] of Object.entries(figures)) {
    const unit = name.startsWith('bulk')
      ? `${f.median.toFixed(1)} Gbit/s`
      : name.startsWith('dispatch only')
        ? `${si(f.median)} hand-offs/s`
        : `${si(f.median)} req/s`;
    const {
      p50_ms: p50,
      p99_ms: p99,
      daemon_us_per_handoff: perHandoff,
      handoffs_per_second: handoffsPerSecond,
      proxy_us_per_connection: perConnection,
      server_us_per_request: perRequest,
    } = f;
    const lat =
      name.startsWith('bulk') || name.startsWith('dispatch only') || p50 === undefined || p99 === undefined
        ? ''
        : `  p50 ${p50.toFixed(2)} ms  p99 ${p99.toFixed(2)} ms`;
    const cpu =
      perHandoff !== undefined && handoffsPerSecond !== undefined && Number.isFinite(perHandoff)
        ? `  daemon ${perHandoff.toFixed(1)} µs CPU/hand-off, ${si(handoffsPerSecond)} hand-offs/s`
        : perConnection !== undefined && Number.isFinite(perConnection)
          ? `  proxy ${perConnection.toFixed(1)} µs CPU/connection`
          : perRequest !== undefined && Number.isFinite(perRequest)
            ? `  server ${perRequest.toFixed(1)} µs CPU/request`
            : '';
    console.log(`  ${name.padEnd(30)} ${unit.padStart(14)} (${si(f.min)}-${si(f.max)})${lat}${cpu}`);
  }
  if (!ONLY_PROXY) {
    console.log(`\n  new connections: dispatcher / direct = ${ratio('new connections, dispatcher', 'new connections, direct')}`);
    const perRequest = /** @param {CaseName} name */ (name) => figures[name].server_us_per_request ?? NaN;
    console.log(
      `  keep-alive:      dispatcher / direct = ${ratio('keep-alive, dispatcher', 'keep-alive, direct')}, server CPU/request = ${(perRequest('keep-alive, dispatcher') / perRequest('keep-alive, direct')).toFixed(2)}`,
    );
    console.log(`  bulk:            dispatcher / direct = ${ratio('bulk, dispatcher', 'bulk, direct')}`);
  }
  console.log(
    `  proxy mode:      connections / HAProxy = ${ratio('new connections, proxy mode', 'new connections, HAProxy')}, bulk / direct = ${ratio('bulk, proxy mode', 'bulk, direct')}`,
  );
  console.log(`\n${await writeResult('handoff', { quick: QUICK, rounds: ROUNDS, seconds: SECONDS, connections: CONNECTIONS, figures })}`);
} finally {
  stopAll();
  await rm(dir, { recursive: true, force: true });
}
