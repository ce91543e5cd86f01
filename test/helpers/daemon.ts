import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ListBindingsResponse, ServicesResponse, StatusResponse, UpstreamsResponse } from '../../src/control/protocol.js';

// What `dispatcher ... --json` prints: the control API's answers, typed where the API is (src/control/protocol.ts).
export type StatusJSON = StatusResponse;
export type ServicesJSON = ServicesResponse;
export type UpstreamsJSON = UpstreamsResponse;
export type BindingsJSON = ListBindingsResponse;

export const CLI = fileURLToPath(new URL('../../bin/dispatcher', import.meta.url));

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real `dispatcher` binary (`cli`: another copy's, e.g. an installed package's); `env` adds to this process's environment (undefined unsets a variable). */
export function dispatcher(args: string[], env: Record<string, string | undefined> = {}, cli = CLI): Promise<Run> {
  return new Promise((resolve) => {
    // A large load prints a line per binding: 100,000 lines are about 5 MB.
    execFile(process.execPath, [cli, ...args], { env: { ...process.env, ...env }, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
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

/** The command line of a daemon whose sockets and state live in `dir`, and those paths. */
export function daemonCommand(
  dir: string,
  extra: string[] = [],
  cli = CLI,
): { command: string[]; control: string; services: string; stateDir: string } {
  const control = join(dir, 'control.sock');
  const stateDir = join(dir, 'state');
  const services = join(dir, 'services.sock');
  const command = [process.execPath, cli, 'daemon', '--control', control, '--state-dir', stateDir, '--services', services, ...extra];
  return { command, control, services, stateDir };
}

/** Starts `dispatcher daemon` and waits until its control socket answers. */
export async function startDaemon(
  dir: string,
  extra: string[] = [],
  options: { prefix?: string[]; cli?: string } = {},
): Promise<RunningDaemon> {
  const daemon = daemonCommand(dir, extra, options.cli);
  const { control, stateDir, services } = daemon;
  // `prefix` runs it inside something, e.g. ['ip', 'netns', 'exec', NAME].
  const command = [...(options.prefix ?? []), ...daemon.command];
  const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const cli = (...args: string[]): Promise<Run> => dispatcher(['--control', control, ...args], {}, options.cli);
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
