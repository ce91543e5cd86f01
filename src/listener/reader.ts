import { closeSync, openSync } from 'node:fs';
import { type Protocol } from '../bindings/binding.js';
import {
  ACCEPT_RECORD,
  BURST_BUFFER,
  DATAGRAM_BATCH,
  DATAGRAM_RECORD,
  DATAGRAM_SLOT,
  EMFILE,
  ENFILE,
  errnoName,
  native,
  READABLE,
  type WatchHandle,
} from '../native/index.js';
import { ACCEPT, ADDRESS } from '../native/records.js';

/** Called with a batch of accepted connections: `count` records of ACCEPT_RECORD int32s in `batch`. */
export type OnAccepted = (batch: Int32Array, count: number, protocol: Protocol) => void;
/** Called with a batch of datagrams received on `fd` (see DATAGRAM_RECORD for the layout). */
export type OnDatagrams = (fd: number, data: Uint8Array, meta: Int32Array, count: number) => void;

/** Where a reader reports: the daemon's logger, or a worker's error event (pino's Logger is one). */
export interface ReaderLog {
  warn(context: object, message: string): void;
  error(context: object, message: string): void;
}

export interface ReaderCallbacks {
  onAccepted?: OnAccepted | undefined;
  onDatagrams?: OnDatagrams | undefined;
}

// Accepting in batches: one JS call per batch instead of one per connection.
const BATCH = 64;
// Batches taken per readiness callback: a flood keeps them full, and looping until one is not would never
// give the event loop back (control requests, workers, timers). uv_poll is level-triggered, so a socket
// left readable is called again on the next loop turn, after everything else had its turn.
const BATCHES_PER_CALL = 8;
/** The accept queue of every listening socket the daemon opens. */
export const BACKLOG = 4096;
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

/**
 * The local address of every connection a TCP listening socket accepts, when there is only one: bound to
 * one address and not transparent (tproxy steers any address to a transparent socket, and a wildcard
 * socket takes every local one). Undefined otherwise, or when the socket's address cannot be read.
 */
export function fixedLocal(fd: number, transparent: boolean): Int32Array | undefined {
  const block = new Int32Array(ADDRESS.SIZE);
  if (transparent || native.sockName(fd, block) !== 0) return undefined;
  return block.subarray(ADDRESS.WORDS, ADDRESS.PORT).some((w) => w !== 0) ? block : undefined;
}

// Reads are synchronous and the callbacks consume a batch before returning, so every reader shares these.
const accepted = new Int32Array(BATCH * ACCEPT_RECORD);
let datagrams: { data: Uint8Array; meta: Int32Array } | undefined;

/**
 * Reads one listening socket while watched: accepts TCP connections or receives UDP datagrams in batches
 * and passes them on unread (the daemon never reads a byte of a connection). Ports and tproxy mode watch
 * every socket they open; kernel steering watches a label's socket only while the daemon must serve it; a
 * worker reads the steered sockets it was given (services/steered.ts).
 */
export class SocketReader {
  readonly fd: number;
  readonly protocol: Protocol;
  readonly #callbacks: ReaderCallbacks;
  readonly #log: ReaderLog;
  /** What the logs name the socket by: its port, or its label. */
  readonly #context: Record<string, unknown>;
  /** Every connection's local address, when the socket has only one (see fixedLocal): no getsockname each. */
  readonly #local: Int32Array | undefined;
  #watch: WatchHandle | undefined;
  #paused: NodeJS.Timeout | undefined;

  constructor(
    fd: number,
    protocol: Protocol,
    callbacks: ReaderCallbacks,
    log: ReaderLog,
    context: Record<string, unknown>,
    local?: Int32Array,
  ) {
    this.fd = fd;
    this.protocol = protocol;
    this.#callbacks = callbacks;
    this.#log = log;
    this.#context = context;
    this.#local = local;
    // A burst must wait in the kernel while the loop is busy, not be dropped: the default receive buffer
    // (212 KB) holds about 200 small datagrams. Best effort: a socket keeps its buffers if this fails.
    if (protocol === 'udp' && fd >= 0) native.setBufferSizes(fd, BURST_BUFFER, BURST_BUFFER);
  }

  get watching(): boolean {
    return this.#watch !== undefined;
  }

  watch(): void {
    this.#watch ??= native.watch(this.fd, READABLE, () => this.#readable(BATCHES_PER_CALL));
  }

  unwatch(): void {
    clearTimeout(this.#paused);
    if (this.#watch !== undefined) native.unwatch(this.#watch);
    this.#watch = undefined;
  }

  /** Everything queued now, as many batches as the accept queue can hold: before the socket closes. */
  readQueued(): void {
    this.#readable(Math.ceil(BACKLOG / BATCH) + 1);
  }

  close(): void {
    this.unwatch();
    native.close(this.fd);
  }

  #readable(batches: number): void {
    // A bug in dispatch must cost a batch, not the daemon: an exception here would end the process.
    try {
      if (this.protocol === 'udp') this.#receive(batches);
      else this.#accept(batches);
    } catch (err) {
      this.#log.error({ ...this.#context, error: (err as Error).stack }, 'dispatch failed');
    }
  }

  #accept(batches: number): void {
    for (let i = 0; i < batches; i++) {
      const local = this.#local;
      const n = native.acceptBatch(this.fd, accepted, BATCH, local !== undefined);
      if (local !== undefined) for (let j = 0; j < n; j++) accepted.set(local, j * ACCEPT.SIZE + ACCEPT.LOCAL);
      if (n > 0) this.#callbacks.onAccepted?.(accepted, n, this.protocol);
      if (n === BATCH) continue;
      if (n < 0) this.#acceptFailed(n);
      return;
    }
  }

  #receive(batches: number): void {
    datagrams ??= { data: new Uint8Array(DATAGRAM_BATCH * DATAGRAM_SLOT), meta: new Int32Array(DATAGRAM_BATCH * DATAGRAM_RECORD) };
    const { data, meta } = datagrams;
    for (let i = 0; i < batches; i++) {
      const n = native.recvDatagrams(this.fd, data, meta, DATAGRAM_BATCH);
      if (n > 0) this.#callbacks.onDatagrams?.(this.fd, data, meta, n);
      if (n === DATAGRAM_BATCH) continue;
      if (n < 0) this.#log.warn({ ...this.#context, error: errnoName(n) }, 'receive failed');
      return;
    }
  }

  #acceptFailed(rc: number): void {
    const watch = this.#watch;
    if ((rc === -EMFILE || rc === -ENFILE) && watch !== undefined) {
      // Out of descriptors: spend the reserve one to take waiting connections off the queue and reset them,
      // so their clients hear at once instead of hanging, then pause accepting a moment.
      const reset = shed(this.fd, accepted);
      this.#log.warn({ ...this.#context, reset }, `accept: ${errnoName(rc)}, out of descriptors; pausing ${BACKOFF_MS} ms`);
      native.setEvents(watch, 0);
      this.#paused = setTimeout(() => {
        if (this.#watch === watch) native.setEvents(watch, READABLE);
      }, BACKOFF_MS);
      this.#paused.unref();
    } else {
      this.#log.warn({ ...this.#context, error: errnoName(rc) }, 'accept failed');
    }
  }
}
