import { type Logger } from 'pino';
import { type Protocol } from '../bindings/binding.js';
import { LISTEN_TRANSPARENT, LISTEN_UDP, native } from '../native/index.js';
import { BACKLOG, fixedLocal, type OnAccepted, type OnDatagrams, SocketReader } from './reader.js';

export type { OnAccepted, OnDatagrams } from './reader.js';

export interface ListenerOptions {
  protocol: Protocol;
  address: string;
  /** tproxy mode: IP_TRANSPARENT, so nftables can steer any address and port to the socket. */
  transparent: boolean;
  log: Logger;
  onAccepted?: OnAccepted;
  onDatagrams?: OnDatagrams;
  onListener?: ((event: 'open' | 'close', socket: { kind: Protocol; port: number; fd: number }) => void) | undefined;
}

export interface ListenerStatus {
  protocol: Protocol;
  address: string;
  port: number;
  state: 'listening' | 'failed';
  error?: string;
  /** Kernel steering: the label the socket is steered for, the server it was adopted from, and who reads it. */
  label?: string;
  adopted_from?: number;
  served_by?: 'daemon' | 'workers';
}

// A port that cannot be bound (in use, privileged) is tried again this often.
const RETRY_MS = 2_000;

interface Listener {
  /** The port asked for; 0 for tproxy mode's one socket, which takes any free port. */
  port: number;
  /** The port it is bound to. */
  bound: number;
  /** Until the socket is open (and while a port cannot be bound), none. */
  reader: SocketReader | undefined;
  error?: string;
}

/**
 * The sockets of one protocol. Ports mode: one dual-stack socket per port that a binding names; `sync`
 * opens and closes them as the bindings change, leaving the others alone. tproxy mode: one transparent
 * socket (`sync([0])`), to which nftables steers every bound prefix and port. Accepted connections go to
 * `onAccepted` unread (the daemon never reads a byte of them); datagrams to `onDatagrams` with their
 * destinations.
 */
export class Listeners {
  readonly protocol: Protocol;
  readonly #options: ListenerOptions;
  readonly #address: string;
  readonly #log: Logger;
  readonly #listeners = new Map<number, Listener>();
  readonly #self = new Int32Array(6);
  #retry: NodeJS.Timeout | undefined;

  constructor(options: ListenerOptions) {
    this.protocol = options.protocol;
    this.#options = options;
    this.#address = options.address;
    this.#log = options.log;
  }

  /** Makes the set of listening ports `ports`. */
  sync(ports: readonly number[]): void {
    const want = new Set(ports);
    for (const [port, l] of this.#listeners) if (!want.has(port)) this.#close(l);
    for (const port of want) if (!this.#listeners.has(port)) this.#open(port);
    this.#scheduleRetry();
  }

  status(): ListenerStatus[] {
    return [...this.#listeners.values()]
      .sort((a, b) => a.port - b.port)
      .map((l) => ({
        protocol: this.protocol,
        address: this.#address,
        port: l.bound,
        state: l.reader !== undefined ? 'listening' : 'failed',
        ...(l.error ? { error: l.error } : {}),
      }));
  }

  /** The socket for `port` (ports mode), or the transparent one (tproxy mode, port 0). */
  fd(port: number): number {
    return this.#listeners.get(port)?.reader?.fd ?? -1;
  }

  /** The port the socket for `port` is bound to: tproxy mode's socket takes a free one. */
  bound(port: number): number {
    return this.#listeners.get(port)?.bound ?? -1;
  }

  /** The error of a port that could not be bound, if it could not. */
  failure(port: number): string | undefined {
    return this.#listeners.get(port)?.error;
  }

  close(): void {
    clearTimeout(this.#retry);
    for (const l of [...this.#listeners.values()]) this.#close(l);
  }

  /** The open sockets by port, for a hand-over to a new daemon. */
  sockets(): { port: number; fd: number }[] {
    return [...this.#listeners.values()].flatMap((l) => (l.reader === undefined ? [] : [{ port: l.port, fd: l.reader.fd }]));
  }

  /**
   * Takes over a socket a previous daemon opened for `port` (its accept queue comes with it), not watched
   * until `watchAdopted`: until then the previous daemon alone accepts from it.
   */
  adopt(port: number, fd: number): void {
    const l: Listener = { port, bound: port, reader: this.#reader(port, fd) };
    if (native.sockName(fd, this.#self) === 0) l.bound = this.#self[5]!;
    this.#listeners.set(port, l);
  }

  /** Starts accepting on the adopted sockets. */
  watchAdopted(): void {
    for (const l of this.#listeners.values()) l.reader?.watch();
  }

  /** After a hand-over, or a takeover that failed: stop accepting and close this daemon's copies, accepting nothing more. */
  detach(): void {
    clearTimeout(this.#retry);
    for (const l of this.#listeners.values()) l.reader?.close();
    this.#listeners.clear();
  }

  #open(port: number): void {
    const l: Listener = { port, bound: port, reader: undefined };
    this.#listeners.set(port, l);
    this.#bind(l);
  }

  #bind(l: Listener): void {
    try {
      const flags = (this.#options.transparent ? LISTEN_TRANSPARENT : 0) | (this.protocol === 'udp' ? LISTEN_UDP : 0);
      const fd = native.listenInet(this.#address, l.port, BACKLOG, flags);
      if (native.sockName(fd, this.#self) === 0) l.bound = this.#self[5]!;
      delete l.error;
      l.reader = this.#reader(l.port, fd);
      l.reader.watch();
      this.#options.onListener?.('open', { kind: this.protocol, port: l.port, fd });
      this.#log.info(
        { protocol: this.protocol, address: this.#address, port: l.bound, transparent: this.#options.transparent },
        'listening',
      );
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const error = `cannot listen on ${this.protocol} ${this.#address} port ${l.port}: ${e.code ?? ''} ${e.message}; retrying every ${RETRY_MS / 1000} s`;
      if (l.error !== error) this.#log.error({ protocol: this.protocol, port: l.port, code: e.code }, error);
      l.error = error;
    }
  }

  #reader(port: number, fd: number): SocketReader {
    const local = this.protocol === 'tcp' ? fixedLocal(fd, this.#options.transparent) : undefined;
    return new SocketReader(fd, this.protocol, this.#options, this.#log, { port }, local);
  }

  #close(l: Listener): void {
    this.#listeners.delete(l.port);
    if (l.reader === undefined) return;
    // Connections already in the kernel's accept queue are dispatched, not dropped with the socket.
    l.reader.readQueued();
    this.#options.onListener?.('close', { kind: this.protocol, port: l.port, fd: l.reader.fd });
    l.reader.close();
    this.#log.info({ protocol: this.protocol, port: l.port }, 'stopped listening');
  }

  #scheduleRetry(): void {
    const failed = [...this.#listeners.values()].some((l) => l.reader === undefined);
    if (!failed || this.#retry !== undefined) return;
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      for (const l of this.#listeners.values()) if (l.reader === undefined) this.#bind(l);
      this.#scheduleRetry();
    }, RETRY_MS);
    this.#retry.unref();
  }
}
