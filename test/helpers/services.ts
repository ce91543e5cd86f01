import { type ChildProcess, spawn, type SpawnOptions } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';

export const ECHO_SERVICE = fileURLToPath(new URL('../fixtures/echo-service.mjs', import.meta.url));
export const PYTHON_SERVICE = fileURLToPath(new URL('../../examples/python/echo_service.py', import.meta.url));

export interface RunningWorker {
  process: ChildProcess;
  pid: number;
  output(): string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts a worker and waits for its "registered" line (or its exit, for refusals). */
export async function startWorker(
  label: string,
  services: string,
  options: { window?: number; command?: string[]; spawn?: SpawnOptions; expectExit?: boolean } = {},
): Promise<RunningWorker> {
  const command = options.command ?? [process.execPath, ECHO_SERVICE, label, services, ...(options.window ? [String(options.window)] : [])];
  const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], ...options.spawn });
  let output = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`worker ${label} did not register within 10 s: ${output}`)), 10_000);
    const onData = (c: Buffer): void => {
      output += c.toString();
      if (/^registered /m.test(output)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', () => {
      clearTimeout(timer);
      if (options.expectExit) resolve();
      else reject(new Error(`worker ${label} exited: ${output}`));
    });
  });
  return {
    process: child,
    pid: child.pid!,
    output: () => output,
    stop: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

export interface Served {
  label: string;
  pid: number;
  client: { address: string; port: number };
  local: { address: string; port: number };
  /** What the service's net.Socket says of the client. */
  remote: { address: string; port: number };
  /** The client's own view of its end. */
  self: { address: string; port: number };
}

/** Connects and reads the service's first line; rejects with the socket error (ECONNRESET for a reset). */
export function request(host: string, port: number, options: { localAddress?: string; timeoutMs?: number } = {}): Promise<Served> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, localAddress: options.localAddress });
    let text = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(Object.assign(new Error(`no answer from ${host}:${port}`), { code: 'ETIMEDOUT' }));
    }, options.timeoutMs ?? 10_000);
    s.on('data', (c: Buffer) => {
      text += c.toString();
      const nl = text.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      const [label, pid, ca, cp, la, lp, ra, rp] = text.slice(0, nl).split(' ') as [
        string,
        string,
        string,
        string,
        string,
        string,
        string,
        string,
      ];
      resolve({
        label,
        pid: Number(pid),
        client: { address: ca, port: Number(cp) },
        local: { address: la, port: Number(lp) },
        remote: { address: ra, port: Number(rp) },
        self: { address: s.localAddress!, port: s.localPort! },
      });
      s.destroy();
    });
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    s.on('end', () => {
      clearTimeout(timer);
      reject(Object.assign(new Error(`closed without an answer: ${host}:${port}`), { code: 'EOF' }));
    });
  });
}

/** A port below the ephemeral range (32768 up), where clients' own ports cannot collide with it. */
export function randomPort(): number {
  return 20000 + Math.floor(Math.random() * 12000);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export const PEER = fileURLToPath(new URL('../fixtures/services-peer.py', import.meta.url));

export interface RunningPeer {
  process: ChildProcess;
  output(): string;
  /** Resolves with the first output line matching `pattern`; rejects if the peer exits first. */
  line(pattern: RegExp): Promise<string>;
  /** Its exit code, once it exits on its own. */
  exit: Promise<number | null>;
  /** Kills it. */
  stop(): Promise<number | null>;
}

/** Runs test/fixtures/services-peer.py (a hostile or misbehaving peer) in `mode`. */
export function startPeer(mode: string, args: string[], spawnOptions: SpawnOptions = {}): RunningPeer {
  const child = spawn('python3', [PEER, mode, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...spawnOptions });
  let output = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  return {
    process: child,
    output: () => output,
    exit: exited,
    line: (pattern) =>
      new Promise((resolve, reject) => {
        const check = (): boolean => {
          const found = output.split('\n').find((l) => pattern.test(l));
          if (found !== undefined) resolve(found);
          return found !== undefined;
        };
        if (check()) return;
        const onData = (): void => {
          if (check()) child.stdout!.off('data', onData);
        };
        child.stdout!.on('data', onData);
        void exited.then(() => check() || reject(new Error(`peer ${mode} exited without ${pattern}: ${output}`)));
      }),
    stop: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      return exited;
    },
  };
}

/**
 * Opens `count` connections to 127.0.0.1:`port` at once and waits for each to end: its error code
 * (ECONNRESET), 'closed', or `timeout` (the name given) if it is still open after `ms`. All are destroyed then.
 */
export async function flood(port: number, count: number, ms: number, timeout: string): Promise<string[]> {
  const sockets: Socket[] = [];
  const outcomes = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<string>((resolve) => {
          const s = connect(port, '127.0.0.1');
          sockets.push(s);
          s.setTimeout(ms, () => resolve(timeout));
          s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
          s.on('close', () => resolve('closed'));
        }),
    ),
  );
  sockets.forEach((s) => s.destroy());
  return outcomes;
}
