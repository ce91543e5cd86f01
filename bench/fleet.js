// npm run bench:fleet [-- --quick] [-- --daemons N --writes N --loads N --size N --cpu-prof DIR]
//
// A fleet on one machine (issue 15): 50 daemons in ports mode, each on its own loopback address
// 127.0.0.(10+i) with real listeners, following one etcd. Each round writes to the store, then connects to
// every daemon over and over until each answers through the new binding; the figure is the time from just
// before the write to the last daemon served. Cases:
// - a single binding (`bind add`, a new label on a new port: each daemon opens a listener for it), over a
//   table of a few bindings, and over a 100k-binding table;
// - a load of 100k bindings (`bind load`: the global set replaced, every bulk binding relabelled, plus the
//   probe's binding on a new port);
// then the daemons' and etcd's CPU while nothing is written, and their memory at 100k bindings.
// No workers: every probe label has an upstream (proxy mode), a server that answers with its label.
// Each round also reads, from the daemons' logs ("bindings changed"), when each applied the revision, so
// the time splits into the etcd write, the daemons' read and apply, and the listener serving; and counts
// the CPU of each process meanwhile: 50 daemons on 2 cores take about all their CPU over the cores.
// The full form: 20 single bindings, then up to 20 loads as a 8-minute budget allows (at least 5): about
// 11 minutes on 2 cores. --quick: 5 writes and 3 loads of 10k bindings, about 2 minutes. The options
// change the counts (--loads N: N loads, whatever the time) and the size; --cpu-prof DIR profiles the
// daemons (each writes its profile as it stops).
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Binding, parseBinding } from '../dist/bindings/binding.js';
import { readFleet } from '../dist/fleet/view.js';
import { EtcdBindings } from '../dist/store/etcd.js';
import { interleavedRounds, median, progress, summary, writeResult } from './common.js';
import { CLI, cpuSeconds, requireTool, start, startQuiet } from './harness.js';

/** @typedef {import('./common.js').Summary} Summary */
/** @typedef {import('node:child_process').ChildProcess} ChildProcess */
/** @typedef {import('node:net').Server} Server */

const QUICK = process.argv.includes('--quick');
const flag = (/** @type {string} */ name) => {
  const i = process.argv.indexOf(name);
  return i === -1 ? undefined : Number(process.argv[i + 1]);
};
const DAEMONS = flag('--daemons') ?? 50;
// Rounds of each case, and the size of a load (the quick form: fewer rounds of a smaller load).
const SINGLE = flag('--writes') ?? (QUICK ? 5 : 20);
const LOADS = flag('--loads') ?? (QUICK ? 3 : 20);
const LOAD_SIZE = flag('--size') ?? (QUICK ? 10_000 : 100_000);
// Loads (each with a single binding over the large table) stop at LOADS, or once past MIN_LOADS rounds the
// phase has run BUDGET_S: at about a minute a round on 2 cores, 20 would take half an hour.
const MIN_LOADS = Math.min(LOADS, 5);
const BUDGET_S = QUICK || flag('--loads') !== undefined ? Infinity : 480;
// Single bindings before the rounds, not counted.
const WARMUP = 2;
const IDLE_S = QUICK ? 3 : 10;
// --cpu-prof DIR: each daemon writes a CPU profile there as it stops (where a round's time goes).
const CPU_PROF = process.argv.includes('--cpu-prof') ? process.argv[process.argv.indexOf('--cpu-prof') + 1] : undefined;
// A daemon not served this long after a write fails the run.
const ROUND_TIMEOUT_MS = 120_000;
// Each daemon is dialled again this long after a refused (or unanswered) connection.
const PROBE_MS = 10;
// The probes' ports, one new for each write; the bulk bindings' ports (each daemon listens on them all).
const PROBE_PORT = 32000;
const BULK_PORT = 31000;
const BULK_PORTS = 10;
const ETCD = '/usr/bin/etcd';
const PREFIX = '/bench';
const TARGETS = { single_ms: 2000, load_ms: 10_000 };

/** Daemon i's address: each listens on its own. @param {number} i */
const address = (i) => `127.0.0.${10 + i}`;
/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A port nobody listens on now (for etcd's). */
async function freePort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const a = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (a === null || typeof a === 'string') throw new Error('no port');
  return a.port;
}

/**
 * What a process uses now: resident and peak resident memory, in MiB.
 * @param {number | undefined} pid
 */
async function memory(pid) {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  /** @param {string} field */
  const kib = (field) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss_mib: kib('VmRSS') / 1024, peak_mib: kib('VmHWM') / 1024 };
}

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());

/** CPU seconds the machine's cores have been busy (all processes, the kernel's too), from /proc/stat. */
async function machineBusy() {
  const [, ...ticks] = (await readFile('/proc/stat', 'utf8')).split('\n')[0]?.trim().split(/\s+/) ?? [];
  // user nice system idle iowait irq softirq steal ...: all but idle and iowait.
  const t = ticks.slice(0, 8).map(Number);
  return (t.reduce((a, b) => a + b, 0) - (t[3] ?? 0) - (t[4] ?? 0)) / CLK_TCK;
}

/** @param {readonly number[]} xs */
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;

/**
 * One daemon of the fleet, and when (Date.now()) it logged applying each revision.
 * @typedef {{ i: number, address: string, child: ChildProcess, applied: Map<number, number>, lastLines: string[] }} Member
 */

/**
 * Starts daemon i, following the store, and resolves once it has said "daemon started".
 * @param {string} dir
 * @param {string} store the --store URL
 * @param {number} i
 * @returns {Promise<Member>}
 */
async function member(dir, store, i) {
  const own = join(dir, `d${i}`);
  const child = await start(
    [
      process.execPath,
      ...(CPU_PROF === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${CPU_PROF}`]),
      CLI,
      'daemon',
      '--store',
      store,
      '--host-name',
      `h${i}`,
      '--listen-address',
      address(i),
      '--control',
      join(own, 'control.sock'),
      '--services',
      join(own, 'services.sock'),
      '--state-dir',
      join(own, 'state'),
    ],
    /"daemon started"/,
  );
  /** @type {Member} */
  const m = { i, address: address(i), child, applied: new Map(), lastLines: /** @type {string[]} */ ([]) };
  // pino's JSON lines on stderr: each "bindings changed" names the revision applied, and when.
  let rest = '';
  child.stderr?.on('data', (/** @type {Buffer} */ chunk) => {
    const lines = (rest + chunk.toString()).split('\n');
    rest = lines.pop() ?? '';
    for (const line of lines) {
      // The last few lines, to say why if the daemon stops answering.
      m.lastLines = [...m.lastLines, line].slice(-5);
      if (!line.includes('"bindings changed"')) continue;
      /** @type {unknown} */
      const parsed = JSON.parse(line);
      const entry = /** @type {{ revision?: number, time: number }} */ (parsed);
      if (entry.revision !== undefined) m.applied.set(entry.revision, entry.time);
    }
  });
  return m;
}

/**
 * Resolves with the time (performance.now()) `address`:`port` first answers `label`, dialling it every
 * PROBE_MS until then (refused: not listening yet; closed without the label: not served yet).
 * @param {string} addr
 * @param {number} port
 * @param {string} label
 * @param {number} deadline performance.now() past which it gives up
 * @returns {Promise<number>}
 */
async function served(addr, port, label, deadline) {
  for (;;) {
    const answer = await new Promise(
      /** @param {(text: string) => void} resolve */ (resolve) => {
        let text = '';
        const s = connect(port, addr);
        s.setEncoding('utf8');
        s.on('data', (/** @type {string} */ d) => (text += d));
        s.on('error', () => undefined);
        s.on('close', () => resolve(text));
        s.setTimeout(1000, () => s.destroy());
      },
    );
    const now = performance.now();
    if (answer === `${label}\n`) return now;
    if (now > deadline)
      throw new Error(`${addr}:${port} did not answer ${label} in ${ROUND_TIMEOUT_MS} ms (last: ${JSON.stringify(answer)})`);
    await sleep(PROBE_MS);
  }
}

/**
 * A round's result: the time to the last daemon served (the figure) and across the daemons, the write's
 * own time, and when the daemons logged applying it.
 * @typedef {{
 *   figure: number, p50_ms: number, first_ms: number, write_ms: number, revision: number,
 *   applied_p50_ms: number, applied_max_ms: number, applied_logged: number,
 *   daemons_cpu_s: number, etcd_cpu_s: number, bench_cpu_s: number, others_cpu_s: number, settle_ms: number,
 * }} Round
 */

/**
 * Writes (`write` returns the store's revision), then dials every daemon until each answers `label` on
 * `port`.
 * @param {Member[]} fleet
 * @param {string} label
 * @param {number} port
 * @param {() => Promise<number>} write
 * @returns {Promise<Round>}
 */
async function round(fleet, label, port, write) {
  const settleMs = await settle(fleet);
  const daemons0 = await Promise.all(fleet.map((m) => cpuSeconds(m.child.pid)));
  const etcd0 = await cpuSeconds(etcdPid);
  const busy0 = await machineBusy();
  const cpu0 = process.cpuUsage();
  const wall0 = Date.now();
  const t0 = performance.now();
  let writeMs = NaN;
  const deadline = t0 + ROUND_TIMEOUT_MS;
  // The probes start with the write: a load's flip lands before its call returns (old chunks are deleted after).
  const [revision, times] = await Promise.all([
    write().then((r) => ((writeMs = performance.now() - t0), r)),
    Promise.all(
      fleet.map((m) =>
        served(m.address, port, label, deadline).catch((/** @type {Error} */ err) => {
          const state =
            m.child.exitCode === null && m.child.signalCode === null ? 'running' : `exited (${m.child.exitCode ?? m.child.signalCode})`;
          throw new Error(`${err.message}; daemon ${m.i} ${state}, its last lines:\n${m.lastLines.join('\n')}`);
        }),
      ),
    ),
  ]);
  const ms = times.map((t) => t - t0);
  const cpu = process.cpuUsage(cpu0);
  const daemons1 = await Promise.all(fleet.map((m) => cpuSeconds(m.child.pid)));
  const etcd1 = await cpuSeconds(etcdPid);
  const busy1 = await machineBusy();
  // The logs come through pipes: a moment for the last lines.
  await sleep(100);
  const applied = fleet.flatMap((m) => {
    const at = [...m.applied].find(([r]) => r >= revision)?.[1];
    return at === undefined ? [] : [at - wall0];
  });
  return {
    figure: Math.max(...ms),
    p50_ms: median(ms),
    first_ms: Math.min(...ms),
    write_ms: writeMs,
    revision,
    applied_p50_ms: median(applied),
    applied_max_ms: Math.max(...applied),
    applied_logged: applied.length,
    daemons_cpu_s: daemons1.reduce((a, c, i) => a + c - (daemons0[i] ?? NaN), 0),
    etcd_cpu_s: etcd1 - etcd0,
    bench_cpu_s: (cpu.user + cpu.system) / 1e6,
    // Whatever else ran on the machine meanwhile (a neighbour's tests): the round's time is not all ours.
    others_cpu_s: Math.max(
      0,
      busy1 - busy0 - (cpu.user + cpu.system) / 1e6 - (etcd1 - etcd0) - daemons1.reduce((a, c, i) => a + c - (daemons0[i] ?? NaN), 0),
    ),
    settle_ms: settleMs,
  };
}

/**
 * Waits until the fleet is quiet (the daemons together under 5% of a core over half a second, 30 s at
 * most), so that a round does not start into the last one's tail (a load's garbage collection); returns
 * the time waited.
 * @param {Member[]} fleet
 */
async function settle(fleet) {
  const t0 = performance.now();
  const total = () => Promise.all(fleet.map((m) => cpuSeconds(m.child.pid))).then((cs) => cs.reduce((a, b) => a + b, 0));
  let before = await total();
  while (performance.now() - t0 < 30_000) {
    await sleep(500);
    const now = await total();
    if (now - before < 0.025) break;
    before = now;
  }
  return performance.now() - t0;
}

/**
 * `n` /32s of 198.18.0.0/15 on BULK_PORTS ports, labelled by `seed` (each load relabels them all), never
 * dialled; and the probe's binding.
 * @param {number} n
 * @param {number} seed
 * @param {Binding} probe
 */
function bulk(n, seed, probe) {
  const out = [probe];
  for (let i = 0; i < n; i++)
    out.push(new Binding(`b${(i + seed) % 100}`, 'tcp', 4, [(0xc6120000 + i) >>> 0], 32, BULK_PORT + (i % BULK_PORTS)));
  return out;
}

/** The round's figures, in a line. @param {string} name @param {Summary} s @param {Round[]} raw */
function line(name, s, raw) {
  const r = (/** @type {(r: Round) => number} */ f) => median(raw.map(f)).toFixed(0);
  return (
    `  ${name.padEnd(34)} p50 ${s.median.toFixed(0)} ms, max ${s.max.toFixed(0)} ms` +
    ` (medians: write ${r((x) => x.write_ms)} ms, applied p50/last ${r((x) => x.applied_p50_ms)}/${r((x) => x.applied_max_ms)} ms,` +
    ` served p50 ${r((x) => x.p50_ms)} ms;\n${' '.repeat(37)}CPU: a daemon ${r((x) => (x.daemons_cpu_s * 1000) / DAEMONS)} ms,` +
    ` all ${r((x) => x.daemons_cpu_s * 1000)} ms, etcd ${r((x) => x.etcd_cpu_s * 1000)} ms, the bench ${r((x) => x.bench_cpu_s * 1000)} ms,` +
    ` other processes ${r((x) => x.others_cpu_s * 1000)} ms)`
  );
}

requireTool(ETCD, 'etcd-server');
const dir = await mkdtemp(join(tmpdir(), 'dispatcher-fleet-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
for (const signal of /** @type {const} */ (['SIGINT', 'SIGTERM'])) process.once(signal, () => process.exit(130));
// 50 daemons' listeners, pipes and probes: more descriptors than a shell's default 1024.
try {
  execFileSync('prlimit', ['--pid', String(process.pid), '--nofile=65536:65536'], { stdio: 'ignore' });
} catch {
  // Not raised: the default may do.
}

/** @type {Server[]} */
const upstreams = [];
/** @type {Member[]} */
const fleet = [];
/** @type {ChildProcess | undefined} */
let etcd;
/** etcd's pid, for its CPU. @type {number | undefined} */
let etcdPid;
/** @type {EtcdBindings | undefined} */
let writer;
const begun = performance.now();
try {
  // One etcd: a quota for repeated loads, and compaction so that they do not fill it.
  const [clientPort, peerPort] = [await freePort(), await freePort()];
  const endpoint = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  etcd = await startQuiet(
    [
      ETCD,
      '--name=bench',
      `--data-dir=${join(dir, 'etcd')}`,
      `--listen-client-urls=${endpoint}`,
      `--advertise-client-urls=${endpoint}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=bench=${peer}`,
      `--quota-backend-bytes=${8 * 2 ** 30}`,
      '--auto-compaction-mode=revision',
      '--auto-compaction-retention=1000',
      '--log-level=error',
    ],
    () =>
      fetch(`${endpoint}/health`)
        .then((r) => r.ok)
        .catch(() => false),
  );
  etcdPid = etcd.pid;
  const store = `etcd://127.0.0.1:${clientPort}${PREFIX}`;
  const w = await EtcdBindings.connect({ endpoints: [endpoint], prefix: PREFIX, host: 'bench' });
  writer = w;

  // A label per write, each with its upstream: a server that answers with the label.
  const labels = Array.from({ length: WARMUP + SINGLE + 1 + 2 * LOADS }, (_, k) => `p${k}`);
  /** @type {{ label: string, address: string, proxy_protocol: 'none' }[]} */
  const list = [];
  for (const label of labels) {
    // A relay the daemon resets (a probe it gave up on) is no error of the bench.
    const server = createServer((s) => s.on('error', () => undefined).end(`${label}\n`));
    await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
    upstreams.push(server);
    const a = /** @type {import('node:net').AddressInfo} */ (server.address());
    list.push({ label, address: `tcp:127.0.0.1:${a.port}`, proxy_protocol: 'none' });
  }
  await w.editUpstreams(() => list);

  // The daemons, started a batch at a time; then until `fleet` shows each current.
  const BATCH = 10;
  for (let i = 0; i < DAEMONS; i += BATCH) {
    progress(`starting daemons ${i + 1}-${Math.min(DAEMONS, i + BATCH)} of ${DAEMONS}`);
    fleet.push(...(await Promise.all(Array.from({ length: Math.min(BATCH, DAEMONS - i) }, (_, j) => member(dir, store, i + j)))));
  }
  for (;;) {
    const f = await readFleet(w);
    if (f.hosts.length === DAEMONS && f.hosts.every((h) => h.state === 'current')) break;
    await sleep(100);
  }
  const startupS = (performance.now() - begun) / 1000;
  progress(`${DAEMONS} daemons current after ${startupS.toFixed(1)} s\n`);

  let k = 0;
  /** A single binding: a new label on a new port, for every address. */
  const single = () => {
    const label = `p${k}`;
    const port = PROBE_PORT + k++;
    const b = parseBinding({ label, protocol: 'tcp', prefix: '127.0.0.0/8', port });
    return round(fleet, label, port, () => w.add('global', b));
  };
  let seed = 0;
  const load = () => {
    const label = `p${k}`;
    const port = PROBE_PORT + k++;
    const bindings = bulk(LOAD_SIZE, seed++, parseBinding({ label, protocol: 'tcp', prefix: '127.0.0.0/8', port }));
    return round(fleet, label, port, () => w.replace('global', bindings));
  };

  // The first writes after start-up run code no daemon has run yet (a write's first is several times the
  // later ones' CPU): kept apart from the rounds, like the first load, which opens the bulk ports' listeners.
  /** @type {Round[]} */
  const warmup = [];
  for (let i = 0; i < WARMUP; i++) warmup.push(await single());
  const small = await interleavedRounds({ 'single binding, small table': single }, SINGLE, 'fleet: ');
  // The first load before the rounds, so that every single binding after it lands on a large table.
  const first = await load();
  progress(`first load of ${LOAD_SIZE} bindings: ${first.figure.toFixed(0)} ms to the last daemon\n`);
  // Loads and single bindings over the large table, a round of each at a time (in turn first), until LOADS
  // rounds or, past MIN_LOADS, the phase's time budget.
  const LOAD = `load of ${LOAD_SIZE}`;
  const LARGE = `single binding, ${LOAD_SIZE} table`;
  /** @type {Record<string, Round[]>} */
  const large = { [LOAD]: [], [LARGE]: [] };
  const phase = performance.now();
  let loads = 0;
  for (; loads < LOADS; loads++) {
    if (loads >= MIN_LOADS && performance.now() - phase > BUDGET_S * 1000) break;
    const cases = loads % 2 === 0 ? { [LOAD]: load, [LARGE]: single } : { [LARGE]: single, [LOAD]: load };
    const { raw } = await interleavedRounds(cases, 1, `fleet (large table, ${loads + 1}/${LOADS}) `);
    for (const [name, rounds] of Object.entries(raw)) large[name]?.push(...rounds);
  }

  // Idle: no writes; the daemons only keep their leases alive.
  await sleep(2000);
  const pids = fleet.map((m) => m.child.pid);
  const cpu0 = await Promise.all(pids.map(cpuSeconds));
  const etcd0 = await cpuSeconds(etcd.pid);
  const t0 = performance.now();
  await sleep(IDLE_S * 1000);
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = await Promise.all(pids.map(cpuSeconds));
  const etcd1 = await cpuSeconds(etcd.pid);
  const percent = cpu1.map((c, i) => ((c - (cpu0[i] ?? NaN)) / seconds) * 100);
  const mem = await Promise.all(pids.map(memory));
  const etcdMem = await memory(etcd.pid);

  /** @param {Round[]} raw */
  const stages = (raw) => ({
    write_ms: summary(raw.map((r) => r.write_ms)),
    applied_p50_ms: summary(raw.map((r) => r.applied_p50_ms)),
    applied_last_ms: summary(raw.map((r) => r.applied_max_ms)),
    served_p50_ms: summary(raw.map((r) => r.p50_ms)),
    daemons_cpu_s: summary(raw.map((r) => r.daemons_cpu_s)),
    // What a daemon spent, on average: on a fleet of its own machines, about its time to serve the write.
    daemon_cpu_ms_each: summary(raw.map((r) => (r.daemons_cpu_s * 1000) / DAEMONS)),
    etcd_cpu_s: summary(raw.map((r) => r.etcd_cpu_s)),
    bench_cpu_s: summary(raw.map((r) => r.bench_cpu_s)),
    others_cpu_s: summary(raw.map((r) => r.others_cpu_s)),
  });
  const smallRaw = small.raw['single binding, small table'];
  const loadRaw = large[LOAD] ?? [];
  const largeRaw = large[LARGE] ?? [];
  const result = {
    quick: QUICK,
    daemons: DAEMONS,
    load_size: LOAD_SIZE,
    probe_interval_ms: PROBE_MS,
    startup_s: startupS,
    targets: TARGETS,
    // Each: the time from just before the write to the last daemon served, over the rounds.
    single: { last_daemon_ms: summary(smallRaw.map((r) => r.figure)), ...stages(smallRaw), rounds: smallRaw, warmup },
    single_large_table: { last_daemon_ms: summary(largeRaw.map((r) => r.figure)), ...stages(largeRaw), rounds: largeRaw },
    load: { size: LOAD_SIZE, last_daemon_ms: summary(loadRaw.map((r) => r.figure)), ...stages(loadRaw), first: first, rounds: loadRaw },
    idle: {
      seconds,
      daemon_cpu_percent: { mean: mean(percent), max: Math.max(...percent) },
      daemons_total_cpu_percent: percent.reduce((a, b) => a + b, 0),
      etcd_cpu_percent: ((etcd1 - etcd0) / seconds) * 100,
    },
    memory: {
      daemon_rss_mib: { mean: mean(mem.map((m) => m.rss_mib)), max: Math.max(...mem.map((m) => m.rss_mib)) },
      daemon_peak_rss_mib: { mean: mean(mem.map((m) => m.peak_mib)), max: Math.max(...mem.map((m) => m.peak_mib)) },
      daemons_total_rss_mib: mem.reduce((a, m) => a + m.rss_mib, 0),
      etcd_rss_mib: etcdMem.rss_mib,
      etcd_peak_rss_mib: etcdMem.peak_mib,
    },
  };
  const met = (/** @type {number} */ ms, /** @type {number} */ target) => (ms < target ? 'met' : 'NOT met');
  console.log(
    `\n${DAEMONS} daemons following one etcd; time from the write to the last daemon served (${SINGLE} writes on a small table; ${loadRaw.length} loads, each with a write over the large table):`,
  );
  console.log(line('single binding, small table', result.single.last_daemon_ms, smallRaw));
  console.log(line(`single binding, ${LOAD_SIZE} table`, result.single_large_table.last_daemon_ms, largeRaw));
  console.log(line(`load of ${LOAD_SIZE}`, result.load.last_daemon_ms, loadRaw));
  console.log(
    `Targets: a single binding < ${TARGETS.single_ms} ms at max: ${met(result.single.last_daemon_ms.max, TARGETS.single_ms)} (small table), ` +
      `${met(result.single_large_table.last_daemon_ms.max, TARGETS.single_ms)} (${LOAD_SIZE} table); ` +
      `a load of 100k < ${TARGETS.load_ms} ms at max: ${LOAD_SIZE >= 100_000 ? met(result.load.last_daemon_ms.max, TARGETS.load_ms) : `not judged (loads of ${LOAD_SIZE})`}`,
  );
  console.log(
    `Idle over ${seconds.toFixed(0)} s: a daemon ${result.idle.daemon_cpu_percent.mean.toFixed(2)}% CPU (max ${result.idle.daemon_cpu_percent.max.toFixed(2)}%), ` +
      `all ${result.idle.daemons_total_cpu_percent.toFixed(1)}%, etcd ${result.idle.etcd_cpu_percent.toFixed(1)}%`,
  );
  console.log(
    `Memory at ${LOAD_SIZE} bindings: a daemon ${result.memory.daemon_rss_mib.mean.toFixed(0)} MiB resident (peak ${result.memory.daemon_peak_rss_mib.mean.toFixed(0)}), ` +
      `all ${(result.memory.daemons_total_rss_mib / 1024).toFixed(1)} GiB; etcd ${result.memory.etcd_rss_mib.toFixed(0)} MiB (peak ${result.memory.etcd_peak_rss_mib.toFixed(0)})`,
  );
  console.log(`Start-up: ${startupS.toFixed(1)} s; whole run ${((performance.now() - begun) / 1000).toFixed(0)} s`);
  console.log(`\n${await writeResult('fleet', result)}`);
} finally {
  writer?.close();
  // The daemons first (each revokes its lease), then etcd.
  await Promise.all(
    fleet.map(
      ({ child }) =>
        new Promise((resolve) => {
          if (child.exitCode !== null) return resolve(undefined);
          const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
          child.once('exit', () => (clearTimeout(kill), resolve(undefined)));
          child.kill('SIGTERM');
        }),
    ),
  );
  etcd?.kill('SIGKILL');
  for (const s of upstreams) s.close();
  await rm(dir, { recursive: true, force: true });
}
