import { closeSync, openSync } from 'node:fs';
import { type Logger } from 'pino';
import { type Protocol } from '../bindings/binding.js';
import {
  ACCEPT_RECORD,
  DATAGRAM_BATCH,
  DATAGRAM_RECORD,
  DATAGRAM_SLOT,
  EMFILE,
  ENFILE,
  errnoName,
  LISTEN_TRANSPARENT,
  LISTEN_UDP,
  native,
  READABLE,
  type WatchHandle,
} from '../native/index.js';

/** Called with a batch of accepted connections: `count` records of ACCEPT_RECORD int32s in `batch`. */
export type OnAccepted = (batch: Int32Array, count: number, protocol: Protocol) => void;
/** Called with a batch of datagrams received on `fd` (see DATAGRAM_RECORD for the layout). */
export type OnDatagrams = (fd: number, data: Uint8Array, meta: Int32Array, count: number) => void;

export interface ListenerOptions {
  protocol: Protocol;
  address: string;
  /** tproxy mode: IP_TRANSPARENT, so nftables can steer any address and port to the socket. */
  transparent: boolean;
  log: Logger;
  onAccepted?: OnAccepted;
  onDatagrams?: OnDatagrams;
}

export interface ListenerStatus {
  protocol: Protocol;
  address: string;
  port: number;
  state: 'listening' | 'failed';
  error?: string;
}

// Accepting in batches: one JS call per batch instead of one per connection.
const BATCH = 64;
// Batches taken per readiness callback: a flood keeps them full, and looping until one is not would never
// give the event loop back (control requests, workers, timers). uv_poll is level-triggered, so a socket
// left readable is called again on the next loop turn, after everything else had its turn.
const BATCHES_PER_CALL = 8;
const BACKLOG = 4096;
// A port that cannot be bound (in use, privileged) is tried again this often.
const RETRY_MS = 2_000;
// Out of descriptors: stop accepting a moment rather than spin on a readable listener.
const BACKOFF_MS = 50;

// One descriptor kept spare for shedding load when the process is out of them (see #acceptFailed).
let reserve = openReserve();

function openReserve(): number {
  try {
    return openSync('/dev/null', 'r');
  } catch {
    return -1;
  }
}

// Connections shed per time the process runs out of descriptors: a burst over the limit is answered
// (reset) within a few pauses instead of waiting in the kernel's queue until clients give up.
const SHED = 64;

/** Frees the reserve descriptor, accepts and resets up to SHED waiting connections, takes the reserve back. */
function shed(fd: number, scratch: Int32Array): number {
  if (reserve < 0) return 0;
  closeSync(reserve);
  let count = 0;
  while (count < SHED && native.acceptBatch(fd, scratch, 1) === 1) {
    native.reset(scratch[0]!);
    count++;
  }
  reserve = openReserve();
  return count;
}

interface Listener {
  /** The port asked for; 0 for tproxy mode's one socket, which takes any free port. */
  port: number;
  /** The port it is bound to. */
  bound: number;
  fd: number;
  watch: WatchHandle | undefined;
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
  readonly #batch = new Int32Array(BATCH * ACCEPT_RECORD);
  #datagrams: { data: Uint8Array; meta: Int32Array } | undefined;
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
        state: l.fd >= 0 ? 'listening' : 'failed',
        ...(l.error ? { error: l.error } : {}),
      }));
  }

  /** The socket for `port` (ports mode), or the transparent one (tproxy mode, port 0). */
  fd(port: number): number {
    return this.#listeners.get(port)?.fd ?? -1;
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
    return [...this.#listeners.values()].filter((l) => l.fd >= 0).map((l) => ({ port: l.port, fd: l.fd }));
  }

  /**
   * Takes over a socket a previous daemon opened for `port` (its accept queue comes with it), not watched
   * until `watchAdopted`: until then the previous daemon alone accepts from it.
   */
  adopt(port: number, fd: number): void {
    const l: Listener = { port, bound: port, fd, watch: undefined };
    if (native.sockName(fd, this.#self) === 0) l.bound = this.#self[5]!;
    this.#listeners.set(port, l);
  }

  /** Starts accepting on the adopted sockets. */
  watchAdopted(): void {
    for (const l of this.#listeners.values())
      if (l.fd >= 0 && l.watch === undefined) l.watch = native.watch(l.fd, READABLE, () => this.#readable(l));
  }

  /** After a hand-over, or a takeover that failed: stop accepting and close this daemon's copies, accepting nothing more. */
  detach(): void {
    clearTimeout(this.#retry);
    for (const l of this.#listeners.values()) {
      if (l.watch !== undefined) native.unwatch(l.watch);
      if (l.fd >= 0) native.close(l.fd);
    }
    this.#listeners.clear();
  }

  #open(port: number): void {
    const l: Listener = { port, bound: port, fd: -1, watch: undefined };
    this.#listeners.set(port, l);
    this.#bind(l);
  }

  #bind(l: Listener): void {
    try {
      const flags = (this.#options.transparent ? LISTEN_TRANSPARENT : 0) | (this.protocol === 'udp' ? LISTEN_UDP : 0);
      l.fd = native.listenInet(this.#address, l.port, BACKLOG, flags);
      if (native.sockName(l.fd, this.#self) === 0) l.bound = this.#self[5]!;
      delete l.error;
      l.watch = native.watch(l.fd, READABLE, () => this.#readable(l));
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

  #close(l: Listener): void {
    this.#listeners.delete(l.port);
    if (l.fd < 0) return;
    // Connections already in the kernel's accept queue are dispatched, not dropped with the socket: as
    // many batches as the queue can hold.
    this.#readable(l, Math.ceil(BACKLOG / BATCH) + 1);
    if (l.watch !== undefined) native.unwatch(l.watch);
    native.close(l.fd);
    this.#log.info({ protocol: this.protocol, port: l.port }, 'stopped listening');
  }

  #readable(l: Listener, batches = BATCHES_PER_CALL): void {
    // A bug in dispatch must cost a batch, not the daemon: an exception here would end the process.
    try {
      if (this.protocol === 'udp') this.#receive(l, batches);
      else this.#accept(l, batches);
    } catch (err) {
      this.#log.error({ port: l.port, error: (err as Error).stack }, 'dispatch failed');
    }
  }

  #accept(l: Listener, batches: number): void {
    for (let i = 0; i < batches; i++) {
      const n = native.acceptBatch(l.fd, this.#batch, BATCH);
      if (n > 0) this.#options.onAccepted?.(this.#batch, n, this.protocol);
      if (n === BATCH) continue;
      if (n < 0) this.#acceptFailed(l, n);
      return;
    }
  }

  #receive(l: Listener, batches: number): void {
    this.#datagrams ??= { data: new Uint8Array(DATAGRAM_BATCH * DATAGRAM_SLOT), meta: new Int32Array(DATAGRAM_BATCH * DATAGRAM_RECORD) };
    const { data, meta } = this.#datagrams;
    for (let i = 0; i < batches; i++) {
      const n = native.recvDatagrams(l.fd, data, meta, DATAGRAM_BATCH);
      if (n > 0) this.#options.onDatagrams?.(l.fd, data, meta, n);
      if (n === DATAGRAM_BATCH) continue;
      if (n < 0) this.#log.warn({ port: l.port, error: errnoName(n) }, 'receive failed');
      return;
    }
  }

  #acceptFailed(l: Listener, rc: number): void {
    if ((rc === -EMFILE || rc === -ENFILE) && l.watch !== undefined) {
      // Out of descriptors: spend the reserve one to take waiting connections off the queue and reset them,
      // so their clients hear at once instead of hanging, then pause accepting a moment.
      const reset = shed(l.fd, this.#batch);
      this.#log.warn({ port: l.port, reset }, `accept: ${errnoName(rc)}, out of descriptors; pausing ${BACKOFF_MS} ms`);
      native.setEvents(l.watch, 0);
      setTimeout(() => {
        if (this.#listeners.get(l.port) === l && l.watch !== undefined) native.setEvents(l.watch, READABLE);
      }, BACKOFF_MS).unref();
    } else {
      this.#log.warn({ port: l.port, error: errnoName(rc) }, 'accept failed');
    }
  }

  #scheduleRetry(): void {
    const failed = [...this.#listeners.values()].some((l) => l.fd < 0);
    if (!failed || this.#retry !== undefined) return;
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      for (const l of this.#listeners.values()) if (l.fd < 0) this.#bind(l);
      this.#scheduleRetry();
    }, RETRY_MS);
    this.#retry.unref();
  }
}
