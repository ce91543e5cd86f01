import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chmod } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ControlClient } from '../../src/control/client.js';
import { type SteeringCounters } from '../../src/metrics/metrics.js';
import { type RunningDaemon, startDaemon, type StatusJSON, tempDir } from './daemon.js';
import { createNamespaces, type Namespaces, type ProbeResult } from './netns.js';
import { type RunningWorker, sleep, startWorker } from './services.js';
import { type TapTest } from './tap.js';

// Kernel steering mode end to end (test/kernel-mode-*.test.ts): a daemon with --mode kernel in a host
// namespace, its workers, and clients in a client namespace, so every packet passes the ruleset.

export const fixture = (name: string): string => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));

const has = (cmd: string, flag: string): Promise<boolean> =>
  new Promise((resolve) => execFile(cmd, [flag], (err) => resolve(err === null)));

/** Why these tests cannot run here, or false: root (namespaces, nftables, transparent sockets) and nft. */
export const skipKernel: string | false =
  process.getuid?.() !== 0 ? 'needs root' : !((await has('nft', '--version')) && (await has('ip', '-V'))) ? 'needs nft and ip' : false;

export interface KernelDaemon {
  ns: Namespaces;
  /** The daemon's directory: control and services sockets, state. */
  dir: string;
  /** The flags it was started with, for a restart. */
  flags: string[];
  /** The running daemon (the latest, after `restart`). */
  d: RunningDaemon;
  control: ControlClient;
  status(): Promise<StatusJSON>;
  /** What the kernel counted (status's `steering`); throws if the daemon could not read it. */
  steering(): Promise<SteeringCounters>;
  /** Starts the daemon again with the same flags and directory (after it died), stopped at the end of the test. */
  restart(): Promise<RunningDaemon>;
  /** An echo worker (version 2 unless `command` says otherwise), stopped at the end of the test. */
  worker(label: string, options?: Parameters<typeof startWorker>[2]): Promise<RunningWorker>;
  /** A long-running process in the client namespace, killed at the end of the test. */
  inClient(...args: string[]): ChildProcess;
}

/**
 * Namespaces (ids `kt...`) and `dispatcher daemon --mode kernel` in the host one. `reachable`: its directory
 * is opened to other users (their workers and CLI calls are then refused by policy, not by the file system).
 */
export async function kernelDaemon(t: TapTest, extra: string[] = [], options: { reachable?: boolean } = {}): Promise<KernelDaemon> {
  const ns = await createNamespaces('kt');
  t.teardown(() => ns.remove());
  const dir = await tempDir(t);
  if (options.reachable) await chmod(dir, 0o755);
  const flags = ['--mode', 'kernel', ...extra];
  const start = async (): Promise<RunningDaemon> => {
    const d = await startDaemon(dir, flags, { prefix: ns.inHost() });
    t.teardown(() => d.stop());
    return d;
  };
  const d = await start();
  const control = new ControlClient(d.control);
  const status = (): Promise<StatusJSON> => control.status();
  const k: KernelDaemon = {
    ns,
    dir,
    flags,
    d,
    control,
    status,
    steering: async () => {
      const s = (await status()).steering;
      if (s === undefined || 'error' in s) throw new Error(`no steering counters in status: ${JSON.stringify(s)}`);
      return s;
    },
    restart: async () => (k.d = await start()),
    worker: async (label, workerOptions) => {
      const w = await startWorker(label, d.services, workerOptions);
      t.teardown(() => w.stop('SIGKILL'));
      return w;
    },
    inClient: (...args) => {
      const child = spawn('ip', ['netns', 'exec', ns.client, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
      t.teardown(() => child.kill('SIGKILL'));
      return child;
    },
  };
  return k;
}

/** A target of probe.mjs. */
export interface Target {
  protocol: 'tcp' | 'udp';
  address: string;
  port: number;
}

/**
 * Probes `targets` from the client namespace with several probe.mjs processes at once, dealt round-robin
 * so that slow ones (UDP misses wait 3 s) spread out; results in the targets' order.
 */
export async function probeAll(ns: Namespaces, targets: readonly Target[], parallel = 8): Promise<ProbeResult[]> {
  const n = Math.max(1, Math.min(parallel, targets.length));
  const chunks = Array.from({ length: n }, (_, c) => targets.filter((_x, i) => i % n === c));
  const results = await Promise.all(chunks.map((chunk) => ns.probe(...chunk.flatMap((x) => [x.protocol, x.address, x.port]))));
  return targets.map((_x, i) => results[i % n]![Math.floor(i / n)]!);
}

/**
 * One probe.mjs process in the client namespace that probes each target as it is asked (`probe.mjs -`):
 * no process start between a change and the probe that checks it. Stopped at the end of the test.
 */
export function startProber(k: KernelDaemon): (target: Target) => Promise<ProbeResult> {
  const child = k.inClient(process.execPath, fixture('probe.mjs'), '-');
  const waiting: ((r: ProbeResult) => void)[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => waiting.shift()?.(JSON.parse(line) as ProbeResult));
  return (x) =>
    new Promise((resolve) => {
      waiting.push(resolve);
      child.stdin!.write(`${x.protocol} ${x.address} ${x.port}\n`);
    });
}

/** What an echo worker's line says (test/fixtures/echo-service.mjs): who served, and the endpoints it saw. */
export interface EchoLine {
  label: string;
  pid: number;
  client: string;
  local: string;
  localPort: number;
}

export function parseEcho(line: string): EchoLine {
  const [label = '', pid, client = '', , local = '', localPort] = line.split(' ');
  return { label, pid: Number(pid), client, local, localPort: Number(localPort) };
}

/** The label that answered a probe, or its error (ECONNREFUSED, ETIMEDOUT). */
export const answeredBy = (r: ProbeResult): string =>
  r.line === undefined || r.error !== undefined ? (r.error ?? 'nothing') : parseEcho(r.line).label;

/** What test/fixtures/load.mjs prints. */
export interface TcpLoad {
  served: number;
  failed: Record<string, number>;
  labels: Record<string, number>;
  misaddressed: number;
  firstFailure?: string;
}
export interface UdpLoad {
  sent: number;
  answered: number;
  lost: number;
  duplicates: number;
  misaddressed: number;
  labels: Record<string, number>;
  firstLost?: string;
  lastLost?: string;
}

export interface Load<T> {
  /** Resolves once it has sent to every target. */
  sent: Promise<void>;
  /** Resolves once every target has answered. */
  ready: Promise<void>;
  /** Ends its stdin: it stops, waits for the last answers (UDP) and reports. */
  finish(): Promise<T>;
}

/** Runs test/fixtures/load.mjs in the client namespace: `tcp CONCURRENCY` or `udp INTERVAL_MS`, then ADDRESS PORT pairs. */
export function startLoad<T extends TcpLoad | UdpLoad>(
  k: KernelDaemon,
  mode: 'tcp' | 'udp',
  param: number,
  targets: readonly Target[],
): Load<T> {
  const child = k.inClient(
    process.execPath,
    fixture('load.mjs'),
    mode,
    String(param),
    ...targets.flatMap((x) => [x.address, String(x.port)]),
  );
  const seen = new Map<string, () => void>();
  const signal = (word: string): Promise<void> => new Promise((resolve) => seen.set(word, resolve));
  const [sent, ready] = [signal('sent'), signal('ready')];
  const report = new Promise<T>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) =>
      line.startsWith('{') ? resolve(JSON.parse(line) as T) : seen.get(line)?.(),
    );
    child.once('exit', (code) => reject(new Error(`load.mjs ${mode} exited with ${code} without a report`)));
  });
  return {
    sent,
    ready,
    finish: () => {
      child.stdin!.end();
      return report;
    },
  };
}

/** Polls `check` every 50 ms until it holds or `ms` pass; returns whether it held. */
export async function eventually(check: () => boolean | Promise<boolean>, ms = 5000): Promise<boolean> {
  for (const deadline = Date.now() + ms; Date.now() < deadline; await sleep(50)) if (await check()) return true;
  return check();
}
