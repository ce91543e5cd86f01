import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BindingJSON } from '../../src/index.js';
import type { ListenerStatus } from '../../src/listener/listeners.js';
import type { LabelCounts, Metrics } from '../../src/metrics/metrics.js';
import type { Upstream } from '../../src/proxy/upstream.js';
import type { Worker } from '../../src/registry/registry.js';

export const CLI = fileURLToPath(new URL('../../bin/dispatcher', import.meta.url));

/** `dispatcher status --json`: what the daemon's status handler returns (src/daemon/daemon.ts), as JSON. */
export interface StatusJSON {
  version: string;
  pid: number;
  uptime_seconds: number;
  mode: string;
  control: string;
  services: string;
  state_file: string;
  bindings: { total: number; tcp: number; udp: number; labels: number };
  listeners: ListenerStatus[];
  upstreams: number;
  workers: { total: number; labels: number };
  /** Waiting connections per label. */
  queued: Record<string, number>;
  connections: Metrics['totals'] & { by_label: Record<string, LabelCounts> };
  queue: { timeout_ms: number; size: number };
  allow: Record<string, number[]>;
  flags: Record<string, string>;
}

/** `dispatcher services --json`. */
export interface ServicesJSON {
  workers: Pick<Worker, 'id' | 'label' | 'pid' | 'uid' | 'handoffs' | 'inflight' | 'window'>[];
  queued: Record<string, number>;
}

/** `dispatcher upstream list --json`. */
export interface UpstreamsJSON {
  upstreams: Upstream[];
}

/** `dispatcher bind list --json` and `dispatcher bind export`. */
export interface BindingsJSON {
  bindings: BindingJSON[];
}

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real `dispatcher` binary. */
export function dispatcher(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

export async function tempDir(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'dispatcher-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export interface RunningDaemon {
  process: ChildProcess;
  control: string;
  services: string;
  stateDir: string;
  stderr(): string;
  /** Resolves with its exit code. */
  exited: Promise<number | null>;
  /** Runs the CLI against this daemon. */
  cli(...args: string[]): Promise<Run>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts `dispatcher daemon` and waits until its control socket answers. */
export async function startDaemon(dir: string, extra: string[] = [], options: { prefix?: string[] } = {}): Promise<RunningDaemon> {
  const control = join(dir, 'control.sock');
  const stateDir = join(dir, 'state');
  const services = join(dir, 'services.sock');
  // `prefix` runs it inside something, e.g. ['ip', 'netns', 'exec', NAME].
  const command = [
    ...(options.prefix ?? []),
    process.execPath,
    CLI,
    'daemon',
    '--control',
    control,
    '--state-dir',
    stateDir,
    '--services',
    services,
    ...extra,
  ];
  const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const cli = (...args: string[]): Promise<Run> => dispatcher(['--control', control, ...args]);
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`daemon exited with ${child.exitCode}: ${stderr}`);
    if ((await cli('status')).code === 0) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`daemon did not answer within 15 s: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    process: child,
    control,
    services,
    stateDir,
    stderr: () => stderr,
    exited,
    cli,
    stop: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** A daemon in a fresh temporary directory, stopped when the test ends. */
export async function daemonIn(
  t: { teardown(fn: () => unknown): void },
  extra: string[] = [],
  options: { prefix?: string[] } = {},
): Promise<RunningDaemon> {
  const d = await startDaemon(await tempDir(t), extra, options);
  t.teardown(() => d.stop());
  return d;
}

export interface Takeover {
  process: ChildProcess;
  stderr(): string;
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts `dispatcher daemon --takeover` against `d` (same paths), without waiting for anything. */
export function startTakeover(d: RunningDaemon, extra: string[] = []): Takeover {
  const child = spawn(
    process.execPath,
    [CLI, 'daemon', '--takeover', '--control', d.control, '--state-dir', d.stateDir, '--services', d.services, ...extra],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    process: child,
    stderr: () => stderr,
    exited,
    stop: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** `exited`, or 'hung' after `ms`. */
export function exitWithin(exited: Promise<number | null>, ms: number): Promise<number | null | 'hung'> {
  return Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), ms).unref())]);
}
