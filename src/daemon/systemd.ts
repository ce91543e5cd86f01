import { type Logger } from 'pino';
import { native } from '../native/index.js';
import { type InheritedSocket, type SocketKind } from './handover.js';

/**
 * The daemon's side of systemd, as systemd speaks it (sd_notify(3), sd_listen_fds(3)), with no libsystemd:
 *
 *   $NOTIFY_SOCKET   READY=1, STATUS=..., RELOADING=1, STOPPING=1, MAINPID=N (an upgrade), WATCHDOG=1;
 *                    FDSTORE=1 + FDNAME=tcp-443 with the socket: systemd keeps a copy of every socket that
 *                    takes traffic, so a crashed daemon's queues live on and its restart gets them back.
 *   $LISTEN_FDS      descriptors from 3 on, named by $LISTEN_FDNAMES: a socket unit's (control, services,
 *                    tcp-443, ...) or the store's. The daemon uses what it is given and opens the rest.
 *
 * Without $NOTIFY_SOCKET every notification is a no-op; without $LISTEN_FDS (or for another pid) nothing is
 * inherited.
 */
export class Systemd {
  readonly #path: string | undefined;
  readonly #log: Logger;
  readonly #encoder = new TextEncoder();
  #watchdog: NodeJS.Timeout | undefined;

  constructor(log: Logger, env: NodeJS.ProcessEnv = process.env) {
    this.#path = env['NOTIFY_SOCKET'] || undefined;
    this.#log = log;
    const usec = Number(env['WATCHDOG_USEC']);
    const forPid = env['WATCHDOG_PID'] === undefined || Number(env['WATCHDOG_PID']) === process.pid;
    if (this.#path !== undefined && usec > 0 && forPid) {
      // Twice per period, as sd_watchdog_enabled(3) advises: a blocked event loop misses both.
      this.#watchdog = setInterval(() => this.notify({ WATCHDOG: 1 }), usec / 2000);
      this.#watchdog.unref();
    }
  }

  get enabled(): boolean {
    return this.#path !== undefined;
  }

  /** Sends `fields` (KEY=value lines) with `fds`; false if there is no systemd or it could not be reached. */
  notify(fields: Record<string, string | number>, fds: readonly number[] = []): boolean {
    if (this.#path === undefined) return false;
    // A value is one line: a newline would start a field of the caller's choosing.
    const text = Object.entries(fields)
      .map(([k, v]) => `${k}=${String(v).replace(/\n/g, ' ')}`)
      .join('\n');
    const rc = native.notify(this.#path, this.#encoder.encode(text), Int32Array.from(fds), fds.length);
    if (rc < 0) this.#log.warn({ notify_socket: this.#path, errno: -rc, fields: Object.keys(fields) }, 'systemd notification failed');
    return rc >= 0;
  }

  ready(status: string): void {
    this.notify({ READY: 1, STATUS: status });
  }

  /** A change that takes a while (a bulk load): systemd shows the unit reloading until `ready`. */
  reloading(): void {
    this.notify({ RELOADING: 1, MONOTONIC_USEC: monotonicUsec() });
  }

  stopping(): void {
    clearInterval(this.#watchdog);
    this.notify({ STOPPING: 1 });
  }

  /** An upgrade: this process is the service's main process from now on. */
  mainPid(): void {
    this.notify({ MAINPID: process.pid, READY: 1 });
  }

  /** Keeps a copy of `socket` in systemd's descriptor store (FileDescriptorStoreMax= must allow it). */
  store(socket: InheritedSocket): void {
    this.notify({ FDSTORE: 1, FDNAME: fdName(socket) }, [socket.fd]);
  }

  /** Drops the store's copies of a socket the daemon closed (a port no binding names any more). */
  forget(socket: Omit<InheritedSocket, 'fd'>): void {
    this.notify({ FDSTOREREMOVE: 1, FDNAME: fdName(socket) });
  }
}

function monotonicUsec(): string {
  return String(process.hrtime.bigint() / 1000n);
}

const KINDS = new Set<string>(['tcp', 'udp', 'control', 'services', 'handover', 'metrics']);

/** A socket's name in the store and in LISTEN_FDNAMES: its kind, and a listener's port (`tcp-443`). ':' may not appear. */
export function fdName(socket: Pick<InheritedSocket, 'kind' | 'port'>): string {
  return socket.kind === 'tcp' || socket.kind === 'udp' ? `${socket.kind}-${socket.port}` : socket.kind;
}

/**
 * The descriptors systemd passed (sd_listen_fds(3)): each with the kind its name gives; unnamed or unknown
 * ones are left out (and closed by the caller's unused set). The variables are removed, so a child process
 * does not take them for its own.
 */
export function listenFds(env: NodeJS.ProcessEnv = process.env): { sockets: InheritedSocket[]; unknown: number[] } {
  const count = Number(env['LISTEN_FDS']);
  const forUs = Number(env['LISTEN_PID']) === process.pid;
  const names = (env['LISTEN_FDNAMES'] ?? '').split(':');
  for (const k of ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES']) delete env[k];
  const sockets: InheritedSocket[] = [];
  const unknown: number[] = [];
  if (!forUs || !Number.isInteger(count) || count <= 0) return { sockets, unknown };
  for (let i = 0; i < count; i++) {
    const fd = 3 + i;
    const m = /^(tcp|udp)-(\d{1,5})$|^([a-z]+)$/.exec(names[i] ?? '');
    const kind = (m?.[1] ?? m?.[3]) as SocketKind | undefined;
    if (kind === undefined || !KINDS.has(kind) || native.inherited(fd) < 0) unknown.push(fd);
    else sockets.push({ kind, port: Number(m?.[2] ?? 0), fd });
  }
  return { sockets, unknown };
}
