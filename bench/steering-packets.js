// npm run build && node bench/steering-packets.js [--quick]     (as root: network namespaces and nftables)
//
// Kernel steering's cost per packet as the table grows (the target: 100,000 bindings no slower
// than 10, within 5%). A server namespace and a client namespace joined by a veth pair; in the server,
// 198.51.100.0/24 is local (AnyIP) and one label's transparent TCP listener and UDP socket are bound to
// 127.0.0.1 (bench/services/steer-sink.mjs). Tables of 10, 10,000 and 100,000 bindings, random ones
// (bench/steering-tables.js: 198.18.0.0/15 and 2001:db8::/32) plus the two that steer 198.51.100.0/24,
// every port, TCP and UDP, to that label, are applied in turn with planSteering and applySteering, and
// measured in interleaved rounds: new TCP connections per second (wrk, Connection: close, against an
// empty HTTP response) and UDP datagrams per second (one process sending 64-byte datagrams as fast as it
// can, bench/services/udp-blast.mjs: the rate it puts through the steering, and the rate the server reads).
// A new connection's SYN and every datagram take the map lookup; the rest of a connection is found by
// `socket transparent 1`. The figures are ratios to 10 bindings, from the same run.
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Binding, Table } from '../dist/index.js';
import { compileTable } from '../dist/steering/compile.js';
import { applySteering, planSteering, removeSteering } from '../dist/steering/ruleset.js';
import { capture, interleaved, median, si, summary, writeResult } from './common.js';
import { requireTool } from './harness.js';
import { randomBindings, randomLabelSocket } from './steering-tables.js';

/** @typedef {import('./common.js').Summary} Summary */
/** @typedef {import('../dist/steering/ruleset.js').Steering} Steering */

const QUICK = process.argv.includes('--quick');
const SIZES = /** @type {const} */ ([10, 10_000, 100_000]);
const ROUNDS = QUICK ? 1 : 5;
const SECONDS = QUICK ? 1 : 3;
const LABEL = 'steered';
const SINK = fileURLToPath(new URL('./services/steer-sink.mjs', import.meta.url));
const BLAST = fileURLToPath(new URL('./services/udp-blast.mjs', import.meta.url));

if (process.getuid?.() !== 0) {
  console.error('bench/steering-packets.js needs root (network namespaces, nftables)');
  process.exit(2);
}
requireTool('wrk', 'wrk');
requireTool('nft', 'nftables');

const id = process.pid.toString(36);
const server = `apl-pkt-s-${id}`;
const client = `apl-pkt-c-${id}`;
/** @param {string} ns @param {...string} args */
const inNs = (ns, ...args) => execFileSync('ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8' });

/**
 * The two namespaces, addressed from 198.18.0.0/15 (the random tables' IPv4 range: no packet is sent to
 * these addresses but ARP). rp_filter off: the steered addresses are local only by the AnyIP route.
 */
function namespacesUp() {
  const [vs, vc] = [`aps${id}`.slice(0, 15), `apc${id}`.slice(0, 15)];
  execFileSync('ip', ['netns', 'add', server]);
  execFileSync('ip', ['netns', 'add', client]);
  execFileSync('ip', ['link', 'add', vs, 'netns', server, 'type', 'veth', 'peer', 'name', vc, 'netns', client]);
  for (const [ns, dev, address] of /** @type {const} */ ([
    [server, vs, '198.19.255.1/30'],
    [client, vc, '198.19.255.2/30'],
  ])) {
    inNs(ns, 'ip', 'link', 'set', 'lo', 'up');
    inNs(ns, 'ip', 'addr', 'add', address, 'dev', dev);
    inNs(ns, 'ip', 'link', 'set', dev, 'up');
  }
  inNs(server, 'ip', 'route', 'add', 'local', '198.51.100.0/24', 'dev', 'lo');
  inNs(server, 'sysctl', '-qw', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0', `net.ipv4.conf.${vs}.rp_filter=0`);
  inNs(client, 'ip', 'route', 'add', '198.51.100.0/24', 'via', '198.19.255.1');
  // wrk opens tens of thousands of connections a round: all the ephemeral ports, reused when safe.
  inNs(client, 'sysctl', '-qw', 'net.ipv4.ip_local_port_range=1024 65535', 'net.ipv4.tcp_tw_reuse=1');
}

function namespacesDown() {
  for (const ns of [server, client]) {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    } catch {
      // Never made: setting up failed before it.
    }
  }
}

/**
 * The table of `size` bindings: random ones, and the two that steer 198.51.100.0/24 to the label.
 * @param {number} size
 */
function table(size) {
  const steered = ['tcp', 'udp'].map((p) => new Binding(LABEL, /** @type {'tcp' | 'udp'} */ (p), 4, [0xc6336400], 24, 0));
  return Table.from([...randomBindings(size - steered.length, size), ...steered]);
}

const dir = mkdtempSync(join(tmpdir(), 'steering-packets-'));
const nft = join(dir, 'nft');
writeFileSync(nft, `#!/bin/sh\nexec ip netns exec ${server} nft "$@"\n`);
chmodSync(nft, 0o755);
/** @type {import('node:child_process').ChildProcess | undefined} */
let sink;
process.on('exit', () => sink?.kill('SIGKILL'));
try {
  namespacesUp();
  sink = spawn('ip', ['netns', 'exec', server, process.execPath, SINK], { stdio: ['pipe', 'pipe', 'inherit'] });
  // The sink answers one line per line asked, so one awaited line at a time; the first is unasked.
  /** @type {(line: string) => void} */
  let onLine = () => {};
  const nextLine = () => new Promise(/** @param {(line: string) => void} resolve */ (resolve) => (onLine = resolve));
  const first = nextLine();
  createInterface({ input: /** @type {import('node:stream').Readable} */ (sink.stdout) }).on('line', (line) => onLine(line));
  const [tcpPort = 0, udpPort = 0] = (await first).split(' ').map(Number);
  const ports = { tcp: tcpPort, udp: udpPort };
  /** The sink's datagram count so far. */
  const datagrams = async () => {
    const line = nextLine();
    sink?.stdin?.write('\n');
    return Number(await line);
  };

  /** @type {Map<number, { plan: Steering, entries: number }>} */
  const plans = new Map();
  for (const size of SIZES) {
    const plan = planSteering(compileTable(table(size)), (label, protocol, family) =>
      label === LABEL
        ? family === 4
          ? { address: '127.0.0.1', port: ports[protocol] }
          : undefined
        : randomLabelSocket(label, protocol, family),
    );
    plans.set(size, { plan, entries: plan.spaces.reduce((n, s) => n + s.entries.length, 0) });
  }

  /** @type {Record<number, number[]>} */
  const applyMs = {};
  let applied = 0;
  /**
   * Puts the table of `size` in place, if it is not already (interleaved reverses every other round, so
   * a round may start with the table the last one ended with), then warms up: the replaced table is
   * freed by a kernel worker after the commit, which a measured round should not pay for.
   * @param {number} size
   */
  const use = async (size) => {
    if (applied === size) return;
    const started = performance.now();
    await applySteering(/** @type {{ plan: Steering }} */ (plans.get(size)).plan, nft);
    (applyMs[size] ??= []).push(performance.now() - started);
    applied = size;
    wrk(1);
  };

  // Each measurement dials another address and port, all steered, so none meets the TIME_WAIT
  // connections of the one before.
  let dialled = 0;
  const next = () => ({ address: `198.51.100.${10 + (dialled % 200)}`, port: 30000 + (dialled++ % 30000) });
  let socketErrors = 0;
  /**
   * New connections (requests with Connection: close) per second from the client namespace.
   * @param {number} seconds
   */
  function wrk(seconds) {
    const { address, port } = next();
    const url = `http://${address}:${port}/`;
    const out = inNs(client, 'wrk', '-t1', '-c32', `-d${seconds}s`, '-H', 'Connection: close', url);
    const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
    socketErrors += errors ? errors.slice(1).reduce((n, e) => n + Number(e), 0) : 0;
    return Number(capture(/Requests\/sec:\s+([\d.]+)/, out));
  }
  /** @type {Record<number, number[]>} */
  const reads = {};
  /**
   * Datagrams per second one sender in the client namespace puts through the steering: each is looked up
   * and steered on the sender's CPU (veth hands it to the server's stack in the same system call), the
   * per-packet cost this measures. What the server reads of them is kept too (`reads`): fewer when its
   * socket's queue overflows, as it does when the server process waits for a CPU.
   * @param {number} size
   */
  async function udp(size) {
    const { address, port } = next();
    const before = await datagrams();
    const child = spawn('ip', ['netns', 'exec', client, process.execPath, BLAST, address, String(port), String(SECONDS)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (/** @type {Buffer} */ c) => (out += c.toString()));
    await once(child, 'exit');
    const [sent = NaN, seconds = NaN] = out.split(' ').map(Number);
    // What is still queued is read in a moment.
    await new Promise((r) => setTimeout(r, 100));
    (reads[size] ??= []).push(((await datagrams()) - before) / seconds);
    return sent / seconds;
  }

  /** @type {Record<string, import('./common.js').Case>} */
  const cases = {};
  for (const size of SIZES) {
    cases[`tcp ${size}`] = async () => {
      await use(size);
      return wrk(SECONDS);
    };
    cases[`udp ${size}`] = async () => {
      await use(size);
      return udp(size);
    };
  }
  const measured = await interleaved(cases, ROUNDS);
  /** @param {(size: number) => Summary} of */
  const bySize = (of) => Object.fromEntries(SIZES.map((size) => [size, of(size)]));
  const figures = {
    connections: bySize((size) => /** @type {Summary} */ (measured[`tcp ${size}`])),
    datagrams_steered: bySize((size) => /** @type {Summary} */ (measured[`udp ${size}`])),
    datagrams_read: bySize((size) => summary(reads[size] ?? [])),
  };
  /** Each figure's median at each size over its median at the smallest. */
  const ratios = Object.fromEntries(
    Object.entries(figures).map(([name, bySize]) => {
      const base = /** @type {Summary} */ (bySize[SIZES[0]]).median;
      return [name, Object.fromEntries(SIZES.map((size) => [`${size}/${SIZES[0]}`, /** @type {Summary} */ (bySize[size]).median / base]))];
    }),
  );

  console.log(
    `\nSteered traffic by table size, per second, medians of ${ROUNDS} interleaved rounds of ${SECONDS} s (ratio to ${SIZES[0]})\n`,
  );
  console.log('  bindings    entries   apply ms      connections   datagrams steered   datagrams read');
  for (const size of SIZES) {
    const cells = Object.entries(figures).map(([name, bySize]) => {
      const ratio = ratios[name]?.[`${size}/${SIZES[0]}`] ?? NaN;
      return `${si(/** @type {Summary} */ (bySize[size]).median)} (${ratio.toFixed(3)})`;
    });
    const columns = [
      String(size).padStart(8),
      String(plans.get(size)?.entries).padStart(10),
      median(applyMs[size] ?? [])
        .toFixed(0)
        .padStart(10),
    ];
    console.log(`  ${[...columns, cells[0]?.padStart(16), cells[1]?.padStart(19), cells[2]?.padStart(16)].join(' ')}`);
  }
  console.log(`\n  wrk socket errors: ${socketErrors}`);
  const result = {
    quick: QUICK,
    rounds: ROUNDS,
    seconds: SECONDS,
    sizes: SIZES.map((size) => ({ size, entries: plans.get(size)?.entries, apply_ms: applyMs[size] })),
    ...figures,
    ratios,
    wrk_socket_errors: socketErrors,
  };
  console.log(`\n${await writeResult('steering-packets', result)}`);
} finally {
  sink?.stdin?.end();
  await removeSteering(nft).catch(() => {});
  namespacesDown();
  rmSync(dir, { recursive: true, force: true });
}
