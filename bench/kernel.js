// npm run bench:kernel [-- --quick]     (as root: network namespaces, nftables; nginx and wrk)
//
// Kernel steering (daemon --mode kernel: nftables steers each packet to its label's own socket, which the
// workers accept and receive on) against listening directly and against the hand-off path (--mode ports),
// every client in the client namespace of scripts/netns.sh, every server in the host namespace. Each part's
// cases run in the same interleaved rounds; figures are medians, compared as ratios from the same run: the
// ratio of the medians, and the median of each round's ratio (steadier on a machine whose load drifts).
// 1. New connections/s and p99 latency (wrk, Connection: close) to the same Node http server code:
//    listening directly on the AnyIP range, attached to the ports daemon (hand-off), attached to the kernel
//    daemon (version 2); and each daemon's CPU time per connection (/proc/PID/stat over the round).
// 2. UDP echoes/s (64 datagrams in flight): a plain dgram socket on an AnyIP address, the library's `serve`
//    datagram handler behind each daemon.
// 3. Bulk: one nginx serving 1 MiB and 10 MiB files over keep-alive, on an AnyIP address directly and on
//    127.0.0.1 adopted by the kernel daemon (`adopt`) for a label bound to the range's port 80.
// 4. Bind to steered: from `bind add` (the control API, and the CLI) of a new address for a label whose
//    worker is running to the first connection served there, the client dialling every millisecond, with
//    10 and with 10,000 bindings loaded.
//
// Host namespace layout: 203.0.113.0/24 is served directly and by the ports daemon, 198.51.100.0/24 by the
// kernel daemon (http: tcp port 0, echo: udp port 0, web: tcp port 80 -> the adopted nginx).
import { execFile, spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { interleavedRounds, median, progress, si, summary, writeResult } from './common.js';
import { CLI, cpuSeconds, daemon, netns, requireTool, start, startQuiet, status, stopAll, wrk } from './harness.js';

/** @typedef {import('./common.js').Summary} Summary */
/** @typedef {import('./harness.js').Daemon} Daemon */
/** @typedef {import('./harness.js').WrkResult} WrkResult */
/** @typedef {import('../dist/index.js').BindingJSON} BindingJSON */

const QUICK = process.argv.includes('--quick');
const ROUNDS = QUICK ? 3 : 15;
const SECONDS = QUICK ? 1 : 2;
const CONNECTIONS = 32;
const BULK_CONNECTIONS = 4;
const IN_FLIGHT = 64;
const TRIALS = QUICK ? 5 : 20;
const CLI_TRIALS = QUICK ? 2 : 5;
const TABLE_SIZES = [10, 10_000];
const FILES = /** @type {const} */ ({ '1 MiB': 2 ** 20, '10 MiB': 10 * 2 ** 20 });
const SERVICE = fileURLToPath(new URL('./services/http-service.mjs', import.meta.url));
const ECHO = fileURLToPath(new URL('./services/udp-echo.mjs', import.meta.url));
const CLIENTS = fileURLToPath(new URL('./clients.js', import.meta.url));
const PORT = {
  direct: 24080,
  handoff: 24081,
  kernel: 24082,
  udpDirect: 25353,
  udpHandoff: 25354,
  udpKernel: 25355,
  nginx: 80,
  nginxLoopback: 28090,
  probe: 24090,
};
const UDP_DIRECT_ADDRESS = '203.0.113.53';
const NGINX_DIRECT_ADDRESS = '203.0.113.9';

if (process.getuid?.() !== 0) {
  console.error('bench:kernel needs root (network namespaces, nftables)');
  process.exit(2);
}
requireTool('wrk', 'wrk');
requireTool('nft', 'nftables');
requireTool('nginx', 'nginx');

const execFileAsync = promisify(execFile);

/**
 * The kernel daemon's bindings: the three the parts use, then /32s of 198.18.0.0/15 (never dialled; 100
 * labels, so 100 more label sockets) up to `size`.
 * @param {number} size
 */
function bindingsFile(size) {
  /** @type {BindingJSON[]} */
  const bindings = [
    { label: 'http', protocol: 'tcp', prefix: '198.51.100.0/24', port: 0 },
    { label: 'echo', protocol: 'udp', prefix: '198.51.100.0/24', port: 0 },
    { label: 'web', protocol: 'tcp', prefix: '198.51.100.0/24', port: PORT.nginx },
  ];
  for (let i = 0; bindings.length < size; i++) {
    bindings.push({ label: `l${i % 100}`, protocol: 'tcp', prefix: `198.18.${i >> 8}.${i & 255}/32`, port: 9000 + (i % 50) });
  }
  return JSON.stringify({ bindings });
}

/**
 * Runs `fn`, and the CPU seconds a daemon and a server process spent meanwhile.
 * @template R
 * @param {{ daemon: number | undefined, server: number | undefined }} pids
 * @param {() => R | Promise<R>} fn
 */
async function cpuDuring(pids, fn) {
  const [d0, s0] = [await cpuSeconds(pids.daemon), await cpuSeconds(pids.server)];
  const result = await fn();
  const [d1, s1] = [await cpuSeconds(pids.daemon), await cpuSeconds(pids.server)];
  return { result, daemon: d1 - d0, server: s1 - s0 };
}

/**
 * The middle value of `field` over a case's rounds.
 * @template {string} F
 * @param {Record<F, number>[]} rounds
 * @param {F} field
 */
const medianOf = (rounds, field) => median(rounds.map((r) => r[field]));

/**
 * Case `a` over case `b` by `field`: the ratio of their medians, and the median (min, max) of each round's
 * ratio: the two ran in the same round, so a drift of the machine's load between rounds cancels out of it.
 * @template {string} F
 * @param {Record<F, number>[]} a
 * @param {Record<F, number>[]} b
 * @param {F} field
 */
function ratio(a, b, field) {
  return { of_medians: medianOf(a, field) / medianOf(b, field), per_round: summary(a.map((r, i) => r[field] / (b[i]?.[field] ?? NaN))) };
}

/** @param {ReturnType<typeof ratio>} r */
const showRatio = (r) =>
  `${r.of_medians.toFixed(3)} (per round ${r.per_round.median.toFixed(3)}, ${r.per_round.min.toFixed(2)}-${r.per_round.max.toFixed(2)})`;

/**
 * The probe (clients.js probe) in the client namespace: `arm` sends it an address and port to dial and
 * what the answer must hold, and resolves once it dials; `served` resolves with the time (performance.now())
 * its "served" line arrived.
 * @param {readonly string[]} prefix
 */
function prober(prefix) {
  const child = spawn(prefix[0] ?? '', [...prefix.slice(1), process.execPath, CLIENTS, 'probe'], { stdio: ['pipe', 'pipe', 'inherit'] });
  /** @type {{ line: string, at: number }[]} */
  const lines = [];
  /** @type {(() => void) | undefined} */
  let wake;
  createInterface({ input: child.stdout }).on('line', (line) => {
    lines.push({ line, at: performance.now() });
    wake?.();
  });
  child.on('exit', () => wake?.());
  const next = async () => {
    while (lines.length === 0) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error('the probe exited');
      await new Promise((resolve) => (wake = () => resolve(undefined)));
    }
    return /** @type {{ line: string, at: number }} */ (lines.shift());
  };
  return {
    /** @param {string} address @param {number} port @param {string} expect what the answer must hold */
    async arm(address, port, expect) {
      child.stdin.write(`${address} ${port} ${expect}\n`);
      const { line } = await next();
      if (line !== 'armed') throw new Error(`the probe said ${line}`);
    },
    async served() {
      const { line, at } = await next();
      if (!line.startsWith('served')) throw new Error(`the probe said ${line}`);
      return at;
    },
    close: () => child.stdin.end(),
  };
}

const dir = await mkdtemp(join(tmpdir(), 'dispatcher-bench-'));
const ns = netns(`kb${process.pid.toString(36)}`);
try {
  // --- The daemons, the servers and the workers, all in the host namespace.
  await Promise.all(['ports', 'kernel'].map((d) => mkdir(join(dir, d))));
  const ports = await daemon(join(dir, 'ports'), [], ns.host);
  const kernel = await daemon(join(dir, 'kernel'), ['--mode', 'kernel'], ns.host);
  await ports.client.addBinding({ label: 'http', protocol: 'tcp', prefix: '203.0.113.0/24', port: PORT.handoff });
  await ports.client.addBinding({ label: 'echo', protocol: 'udp', prefix: '203.0.113.0/24', port: PORT.udpHandoff });
  const small = TABLE_SIZES[0] ?? 10;
  await kernel.client.replaceBindings(bindingsFile(small));
  const node = process.execPath;
  const [httpDirect, httpHandoff, httpKernel, echoDirect, echoHandoff, echoKernel] = await Promise.all([
    start([node, SERVICE, 'direct', PORT.direct, '0.0.0.0'], /ready/, ns.host),
    start([node, SERVICE, 'attach', 'http', ports.services], /ready/, ns.host),
    start([node, SERVICE, 'attach', 'http', kernel.services], /ready/, ns.host),
    start([node, ECHO, 'direct', PORT.udpDirect, UDP_DIRECT_ADDRESS], /ready/, ns.host),
    start([node, ECHO, 'attach', 'echo', ports.services], /ready/, ns.host),
    start([node, ECHO, 'attach', 'echo', kernel.services], /ready/, ns.host),
  ]);

  // nginx: one worker, both listening sockets (the AnyIP address, and loopback for `adopt`).
  const www = join(dir, 'www');
  await mkdir(www, { recursive: true });
  for (const [name, bytes] of Object.entries(FILES)) await writeFile(join(www, name.replace(' ', '')), Buffer.alloc(bytes, 'x'));
  await chmod(dir, 0o755); // nginx's worker runs as nobody
  const nginxPid = join(dir, 'nginx.pid');
  await writeFile(
    join(dir, 'nginx.conf'),
    [
      'worker_processes 1;',
      `pid ${nginxPid};`,
      `error_log ${join(dir, 'nginx-error.log')};`,
      'events { worker_connections 1024; }',
      'http {',
      '  access_log off;',
      '  sendfile on;',
      '  keepalive_requests 1000000;',
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${join(dir, 'nginx-temp')};`),
      `  server { listen ${NGINX_DIRECT_ADDRESS}:${PORT.nginx}; listen 127.0.0.1:${PORT.nginxLoopback}; root ${www}; }`,
      '}',
      '',
    ].join('\n'),
  );
  // Its pid file is written once its sockets listen.
  const nginx = await startQuiet(
    ['nginx', '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'],
    () =>
      stat(nginxPid).then(
        () => true,
        () => false,
      ),
    ns.host,
  );
  const adoptStarted = performance.now();
  const adopted = await kernel.client.adopt({
    label: 'web',
    pid: nginx.pid ?? 0,
    protocol: 'tcp',
    address: `127.0.0.1:${PORT.nginxLoopback}`,
  });
  const adoptMs = performance.now() - adoptStarted;

  // --- 1. New connections. Each round dials another address, so that no round meets the last one's
  // connections in TIME_WAIT.
  let round = 0;
  const next = () => 10 + (round++ % 200);
  /**
   * A wrk round of new connections, with the CPU a daemon and the server spent per connection.
   * @param {() => string} url
   * @param {{ daemon: number | undefined, server: number | undefined }} pids
   */
  const newConnections = async (url, pids) => {
    const {
      result: r,
      daemon,
      server,
    } = await cpuDuring(pids, () => wrk(url(), { seconds: SECONDS, connections: CONNECTIONS, close: true, prefix: ns.client }));
    return {
      ...r,
      figure: r.rps,
      daemon_us_per_connection: (daemon / r.requests) * 1e6,
      server_us_per_connection: (server / r.requests) * 1e6,
    };
  };
  const kernelBefore = await status(kernel.client);
  const connections = await interleavedRounds(
    {
      // The kernel daemon beside the direct server: its idle baseline.
      direct: () => newConnections(() => `http://203.0.113.${next()}:${PORT.direct}/`, { daemon: kernel.pid, server: httpDirect.pid }),
      'hand-off': () => newConnections(() => `http://203.0.113.${next()}:${PORT.handoff}/`, { daemon: ports.pid, server: httpHandoff.pid }),
      kernel: () => newConnections(() => `http://198.51.100.${next()}:${PORT.kernel}/`, { daemon: kernel.pid, server: httpKernel.pid }),
    },
    ROUNDS,
    'new connections, ',
  );
  const kernelAfter = await status(kernel.client);

  // --- 2. UDP echoes, the client a process in the client namespace.
  /**
   * A round of echoes, with the CPU a daemon and the server spent per echo.
   * @param {string} address
   * @param {number} port
   * @param {{ daemon: number | undefined, server: number | undefined }} pids
   */
  const echoes = async (address, port, pids) => {
    const client = [...ns.client, node, CLIENTS, 'udp', address, String(port), String(SECONDS), String(IN_FLIGHT)];
    const { result, daemon, server } = await cpuDuring(pids, () => execFileAsync(client[0] ?? '', client.slice(1)));
    const rate = Number(result.stdout.trim());
    const n = rate * SECONDS;
    return { figure: rate, daemon_us_per_echo: (daemon / n) * 1e6, server_us_per_echo: (server / n) * 1e6 };
  };
  const udp = await interleavedRounds(
    {
      direct: () => echoes(UDP_DIRECT_ADDRESS, PORT.udpDirect, { daemon: kernel.pid, server: echoDirect.pid }),
      'hand-off': () => echoes('203.0.113.54', PORT.udpHandoff, { daemon: ports.pid, server: echoHandoff.pid }),
      kernel: () => echoes('198.51.100.54', PORT.udpKernel, { daemon: kernel.pid, server: echoKernel.pid }),
    },
    ROUNDS,
    'UDP, ',
  );

  // --- 3. Bulk, keep-alive, from nginx directly and adopted.
  /**
   * Gbit/s of `bytes`-long files over BULK_CONNECTIONS keep-alive connections.
   * @param {string} url
   * @param {number} bytes
   */
  const bulk = (url, bytes) => {
    const r = wrk(url, { seconds: SECONDS, connections: BULK_CONNECTIONS, close: false, prefix: ns.client });
    if (r.non2xx > 0) throw new Error(`${url}: ${r.non2xx} responses not 2xx or 3xx`);
    return { figure: (r.rps * bytes * 8) / 1e9, rps: r.rps, p99: r.p99, errors: r.errors };
  };
  /** @type {Record<string, () => ReturnType<typeof bulk>>} */
  const bulkCases = {};
  for (const [name, bytes] of Object.entries(FILES)) {
    const file = name.replace(' ', '');
    bulkCases[`direct, ${name}`] = () => bulk(`http://${NGINX_DIRECT_ADDRESS}:${PORT.nginx}/${file}`, bytes);
    bulkCases[`adopted, ${name}`] = () => bulk(`http://198.51.100.9:${PORT.nginx}/${file}`, bytes);
  }
  const nginxBulk = await interleavedRounds(bulkCases, ROUNDS, 'bulk, ');
  const steering = (await kernel.client.status()).steering;

  // --- 4. Bind to steered, at each table size. Variants: a new address (nothing answered there before: the
  // probe's SYNs were reset), by the control API and by the CLI; and an address carved out of web's prefix
  // (nginx answered there before: the probe waits for the http worker's "hello"), whose map element must be
  // deleted and added again in pieces.
  const probe = prober(ns.client);
  let nextAddress = 100;
  /**
   * ms from issuing `bind add` of `address`/32 port `port` for http to the http worker answering there, and
   * to the call's return (the CLI's exit); the binding is removed again afterwards.
   * @param {string} address
   * @param {number} port
   * @param {boolean} cli
   */
  const trial = async (address, port, cli) => {
    /** @type {BindingJSON} */
    const binding = { label: 'http', protocol: 'tcp', prefix: `${address}/32`, port };
    await probe.arm(address, port, 'hello');
    const started = performance.now();
    const returned = cli
      ? execFileAsync(node, [CLI, '--control', kernel.client.socketPath, 'bind', 'add', 'http', 'tcp', binding.prefix, String(port)])
      : kernel.client.addBinding(binding);
    const served = (await probe.served()) - started;
    await returned;
    const result = { served, returned: performance.now() - started, removed: 0 };
    const removing = performance.now();
    await kernel.client.removeBinding(binding);
    result.removed = performance.now() - removing;
    return result;
  };
  /** @typedef {{ served_ms: Summary, returned_ms: Summary, removed_ms: Summary }} Trials */
  /**
   * @param {number} n
   * @param {string} what
   * @param {() => Promise<{ served: number, returned: number, removed: number }>} run
   * @returns {Promise<Trials>}
   */
  const trials = async (n, what, run) => {
    /** @type {{ served: number, returned: number, removed: number }[]} */
    const all = [];
    for (let i = 0; i < n; i++) {
      progress(`bind to steered, ${what}: trial ${i + 1}/${n}`);
      all.push(await run());
    }
    return {
      served_ms: summary(all.map((r) => r.served)),
      returned_ms: summary(all.map((r) => r.returned)),
      // The removal after it, by the control API: rm (and a carve's undoing) deletes map elements.
      removed_ms: summary(all.map((r) => r.removed)),
    };
  };
  /** @type {Record<string, { replace_ms: number, new_address: Trials, carved: Trials, cli: Trials }>} */
  const bindToSteered = {};
  for (const size of TABLE_SIZES) {
    const t0 = performance.now();
    await kernel.client.replaceBindings(bindingsFile(size));
    const replaceMs = performance.now() - t0;
    bindToSteered[size] = {
      replace_ms: replaceMs,
      new_address: await trials(TRIALS, `${size} bindings, new address`, () => trial(`203.0.113.${nextAddress++}`, PORT.probe, false)),
      carved: await trials(TRIALS, `${size} bindings, carved`, () => trial(`198.51.100.${nextAddress++}`, PORT.nginx, false)),
      cli: await trials(CLI_TRIALS, `${size} bindings, CLI`, () => trial(`203.0.113.${nextAddress++}`, PORT.probe, true)),
    };
  }
  probe.close();

  // --- The report.
  const CASES = /** @type {const} */ (['direct', 'hand-off', 'kernel']);
  /**
   * Per case, the middle round's `field`.
   * @template {string} F
   * @param {Record<(typeof CASES)[number], Record<F, number>[]>} raw
   * @param {F} field
   */
  const byCase = (raw, field) => ({
    direct: medianOf(raw.direct, field),
    'hand-off': medianOf(raw['hand-off'], field),
    kernel: medianOf(raw.kernel, field),
  });
  const c = connections.summary;
  const p99 = byCase(connections.raw, 'p99');
  // For direct, the daemon is the kernel daemon beside it: its idle baseline.
  const daemonUs = byCase(connections.raw, 'daemon_us_per_connection');
  const serverUs = byCase(connections.raw, 'server_us_per_connection');
  const u = udp.summary;
  const udpDaemonUs = byCase(udp.raw, 'daemon_us_per_echo');
  const udpServerUs = byCase(udp.raw, 'server_us_per_echo');
  /** @param {Summary} s */
  const range = (s) => `(${si(s.min)}-${si(s.max)})`;
  /** @param {number} us */
  const cpu = (us) => `${us.toFixed(2)} µs`;
  console.log(`\nMedians of ${ROUNDS} interleaved rounds, ${SECONDS} s each, from the client namespace; ratios from the same rounds\n`);
  console.log(`1. New connections/s (wrk -t1 -c${CONNECTIONS}, Connection: close); CPU per connection (direct: the idle kernel daemon)`);
  for (const name of CASES) {
    console.log(
      `  ${name.padEnd(10)} ${si(c[name].median).padStart(7)}/s ${range(c[name]).padEnd(15)} p99 ${p99[name].toFixed(2).padStart(6)} ms  daemon ${cpu(daemonUs[name])}  server ${cpu(serverUs[name])}`,
    );
  }
  const connectionRatios = {
    kernel_direct: ratio(connections.raw.kernel, connections.raw.direct, 'figure'),
    kernel_handoff: ratio(connections.raw.kernel, connections.raw['hand-off'], 'figure'),
    p99_kernel_direct: ratio(connections.raw.kernel, connections.raw.direct, 'p99'),
    p99_kernel_handoff: ratio(connections.raw.kernel, connections.raw['hand-off'], 'p99'),
    server_kernel_direct: ratio(connections.raw.kernel, connections.raw.direct, 'server_us_per_connection'),
  };
  // The daemon's CPU per connection summed over every kernel round: a finer bound than a round's (10 ms ticks).
  const kernelConnections = connections.raw.kernel.reduce((n, r) => n + r.requests, 0);
  const kernelMs = connections.raw.kernel.reduce((ms, r) => ms + (r.daemon_us_per_connection * r.requests) / 1000, 0);
  const kernelCpu = { ms: kernelMs, connections: kernelConnections, us_per_connection: (kernelMs * 1000) / kernelConnections };
  console.log(`  kernel/direct    conns/s ${showRatio(connectionRatios.kernel_direct)}   (target >= 0.97)`);
  console.log(`                   p99     ${showRatio(connectionRatios.p99_kernel_direct)}`);
  console.log(`  kernel/hand-off  conns/s ${showRatio(connectionRatios.kernel_handoff)}`);
  console.log(`                   p99     ${showRatio(connectionRatios.p99_kernel_handoff)}`);
  console.log(`  server CPU kernel/direct ${showRatio(connectionRatios.server_kernel_direct)}`);
  console.log(
    `  the kernel daemon over all kernel rounds: ${kernelCpu.us_per_connection.toFixed(3)} µs CPU/connection (${kernelCpu.ms.toFixed(0)} ms for ${kernelCpu.connections} connections), ${kernelAfter.connections.handoffs - kernelBefore.connections.handoffs} hand-offs`,
  );
  console.log(`\n2. UDP echoes/s (${IN_FLIGHT} in flight); CPU per echo (direct: the idle kernel daemon)`);
  for (const name of CASES) {
    console.log(
      `  ${name.padEnd(10)} ${si(u[name].median).padStart(7)}/s ${range(u[name]).padEnd(15)} daemon ${cpu(udpDaemonUs[name])}  server ${cpu(udpServerUs[name])}`,
    );
  }
  const udpRatios = {
    kernel_direct: ratio(udp.raw.kernel, udp.raw.direct, 'figure'),
    handoff_direct: ratio(udp.raw['hand-off'], udp.raw.direct, 'figure'),
    server_kernel_direct: ratio(udp.raw.kernel, udp.raw.direct, 'server_us_per_echo'),
  };
  console.log(`  kernel/direct   ${showRatio(udpRatios.kernel_direct)}   (target >= 0.90)`);
  console.log(`  hand-off/direct ${showRatio(udpRatios.handoff_direct)}`);
  console.log(`  server CPU kernel/direct ${showRatio(udpRatios.server_kernel_direct)}`);
  console.log(
    `\n3. Bulk from nginx, keep-alive, wrk -c${BULK_CONNECTIONS} (adopt took ${adoptMs.toFixed(0)} ms: ${adopted.adopted.address}:${adopted.adopted.port} of pid ${adopted.adopted.pid})`,
  );
  for (const [name, s] of Object.entries(nginxBulk.summary)) console.log(`  ${name.padEnd(16)} ${s.median.toFixed(2).padStart(6)} Gbit/s`);
  const bulkRatios = Object.fromEntries(
    Object.keys(FILES).map((name) => [
      name,
      ratio(nginxBulk.raw[`adopted, ${name}`] ?? [], nginxBulk.raw[`direct, ${name}`] ?? [], 'figure'),
    ]),
  );
  for (const [name, r] of Object.entries(bulkRatios)) console.log(`  adopted/direct, ${name}: ${showRatio(r)}`);
  console.log(`\n4. From bind add to the first connection the worker served (${TRIALS} trials, CLI ${CLI_TRIALS}; target < 50 ms)`);
  /** @param {Summary} s */
  const ms = (s) => `median ${s.median.toFixed(1)} ms, max ${s.max.toFixed(1)} ms`;
  for (const [size, b] of Object.entries(bindToSteered)) {
    console.log(`  ${size} bindings (replace to this size ${b.replace_ms.toFixed(0)} ms)`);
    for (const [name, t] of /** @type {const} */ ([
      ['new address, API', b.new_address],
      ['carved, API', b.carved],
      ['new address, CLI', b.cli],
    ])) {
      console.log(`    ${name.padEnd(17)} served ${ms(t.served_ms)}; returned ${ms(t.returned_ms)}; bind rm after it ${ms(t.removed_ms)}`);
    }
  }
  const socketErrors = [...Object.entries(connections.raw), ...Object.entries(nginxBulk.raw)].flatMap(([name, rs]) =>
    rs.flatMap((r, i) => (r.errors === '' ? [] : [`${name}, round ${i + 1}: ${r.errors}`])),
  );
  if (socketErrors.length > 0) console.log(`\nwrk's socket errors: ${socketErrors.join('; ')}`);
  console.log(
    `\n${await writeResult('kernel', {
      quick: QUICK,
      rounds: ROUNDS,
      seconds: SECONDS,
      connections: {
        summary: c,
        p99_ms: p99,
        daemon_us_per_connection: daemonUs,
        server_us_per_connection: serverUs,
        kernel_daemon_handoffs: kernelAfter.connections.handoffs - kernelBefore.connections.handoffs,
        kernel_daemon_over_all_rounds: kernelCpu,
        ratios: connectionRatios,
        rounds_raw: connections.raw,
      },
      udp: {
        in_flight: IN_FLIGHT,
        summary: u,
        daemon_us_per_echo: udpDaemonUs,
        server_us_per_echo: udpServerUs,
        ratios: udpRatios,
        rounds_raw: udp.raw,
      },
      bulk: {
        connections: BULK_CONNECTIONS,
        adopt_ms: adoptMs,
        summary: nginxBulk.summary,
        ratios: bulkRatios,
        rounds_raw: nginxBulk.raw,
      },
      steering,
      bind_to_steered: bindToSteered,
    })}`,
  );
} finally {
  stopAll();
  await new Promise((r) => setTimeout(r, 500));
  ns.down();
  await rm(dir, { recursive: true, force: true });
}
