import { type Logger } from 'pino';
import { type Protocol } from '../bindings/binding.js';
import { ACCEPT_RECORD, EMFILE, ENFILE, errnoName, native, READABLE, type WatchHandle } from '../native/index.js';

/** Called with a batch of accepted connections: `count` records of ACCEPT_RECORD int32s in `batch`. */
export type OnAccepted = (batch: Int32Array, count: number, protocol: Protocol) => void;

export interface ListenerStatus {
  protocol: Protocol;
  address: string;
  port: number;
  state: 'listening' | 'failed';
  error?: string;
}

// Accepting in batches: one JS call per batch instead of one per connection.
const BATCH = 64;
const BACKLOG = 4096;
// A port that cannot be bound (in use, privileged) is tried again this often.
const RETRY_MS = 2_000;
// Out of descriptors: stop accepting a moment rather than spin on a readable listener.
const BACKOFF_MS = 50;

interface Listener {
  port: number;
  fd: number;
  watch: WatchHandle | undefined;
  error?: string;
}

/**
 * Ports mode: one dual-stack listener per port that a binding names. `sync` opens and closes listeners as
 * the bindings change, leaving the others alone. Accepted connections go to `onAccepted` unread; the
 * daemon never reads a byte of them.
 */
export class Listeners {
  readonly protocol: Protocol = 'tcp';
  readonly #address: string;
  readonly #onAccepted: OnAccepted;
  readonly #log: Logger;
  readonly #listeners = new Map<number, Listener>();
  readonly #batch = new Int32Array(BATCH * ACCEPT_RECORD);
  #retry: NodeJS.Timeout | undefined;

  constructor(address: string, onAccepted: OnAccepted, log: Logger) {
    this.#address = address;
    this.#onAccepted = onAccepted;
    this.#log = log;
  }

  /** Makes the set of listening ports `ports` (0, every port, has no listener of its own in ports mode). */
  sync(ports: readonly number[]): void {
    const want = new Set(ports.filter((p) => p !== 0));
    for (const [port, l] of this.#listeners) if (!want.has(port)) this.#close(l);
    for (const port of want) if (!this.#listeners.has(port)) this.#open(port);
    this.#scheduleRetry();
  }

  status(): ListenerStatus[] {
    return [...this.#listeners.values()]
      .sort((a, b) => a.port - b.port)
      .map((l) => ({ protocol: this.protocol, address: this.#address, port: l.port, state: l.fd >= 0 ? 'listening' : 'failed', ...(l.error ? { error: l.error } : {}) }));
  }

  /** The error of a port that could not be bound, if it could not. */
  failure(port: number): string | undefined {
    return this.#listeners.get(port)?.error;
  }

  close(): void {
    clearTimeout(this.#retry);
    for (const l of [...this.#listeners.values()]) this.#close(l);
  }

  #open(port: number): void {
    const l: Listener = { port, fd: -1, watch: undefined };
    this.#listeners.set(port, l);
    this.#bind(l);
  }

  #bind(l: Listener): void {
    try {
      l.fd = native.listenInet(this.#address, l.port, BACKLOG, 0);
      delete l.error;
      l.watch = native.watch(l.fd, READABLE, () => this.#accept(l));
      this.#log.info({ protocol: this.protocol, address: this.#address, port: l.port }, 'listening');
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const error = `cannot listen on ${this.#address} port ${l.port}: ${e.code ?? ''} ${e.message}; retrying every ${RETRY_MS / 1000} s`;
      if (l.error !== error) this.#log.error({ protocol: this.protocol, port: l.port, code: e.code }, error);
      l.error = error;
    }
  }

  #close(l: Listener): void {
    this.#listeners.delete(l.port);
    if (l.fd < 0) return;
    // Connections already in the kernel's accept queue are dispatched, not dropped with the socket.
    this.#accept(l);
    if (l.watch !== undefined) native.unwatch(l.watch);
    native.close(l.fd);
    this.#log.info({ protocol: this.protocol, port: l.port }, 'stopped listening');
  }

  #accept(l: Listener): void {
    for (;;) {
      const n = native.acceptBatch(l.fd, this.#batch, BATCH);
      if (n > 0) this.#onAccepted(this.#batch, n, this.protocol);
      if (n === BATCH) continue;
      if (n < 0) this.#acceptFailed(l, n);
      return;
    }
  }

  #acceptFailed(l: Listener, rc: number): void {
    if ((rc === -EMFILE || rc === -ENFILE) && l.watch !== undefined) {
      this.#log.warn({ port: l.port }, `accept: ${errnoName(rc)}, out of descriptors; pausing ${BACKOFF_MS} ms`);
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
