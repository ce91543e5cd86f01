import { spawn, type SpawnOptions } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { type TapTest } from './tap.js';

export const STEER_SERVER = fileURLToPath(new URL('../fixtures/steer-server.mjs', import.meta.url));

/** setpriv's arguments that run a command as nobody, with no supplementary groups. */
export const AS_NOBODY = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];

/** A socket the steer-server fixture opened: its descriptor number in that process. */
export interface ServedSocket {
  protocol: 'tcp' | 'udp';
  fd: number;
  port: number;
}

/** A running child and the JSON line it printed. */
export interface Reporting<T> {
  pid: number;
  report: T;
  /** Kills it; resolves once it is reaped (its pid is gone). */
  kill(): Promise<void>;
}

/**
 * Runs `command`, which prints one JSON line and then runs until its stdin ends. The child is killed at
 * the end of `t`.
 */
export async function spawnReporting<T>(t: TapTest, command: string[], options: SpawnOptions = {}): Promise<Reporting<T>> {
  const [file = '', ...args] = command;
  const child = spawn(file, args, { ...options, stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const kill = (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    return exited;
  };
  t.teardown(kill);
  const first = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', resolve);
    void exited.then(() => reject(new Error(`${command.join(' ')} exited before reporting`)));
  });
  return { pid: child.pid!, report: JSON.parse(first) as T, kill };
}

/** Runs the steer-server fixture with `specs` (tcp:ADDRESS, udp:ADDRESS), under `prefix` (e.g. AS_NOBODY). */
export function serveSockets(t: TapTest, specs: string[], prefix: string[] = []): Promise<Reporting<ServedSocket[]>> {
  return spawnReporting<ServedSocket[]>(t, [...prefix, process.execPath, STEER_SERVER, ...specs]);
}
