import { type Logger } from 'pino';
import { DispatcherError } from '../errors.js';
import { type Connection } from '../handoff/connection.js';
import { type Metrics } from '../metrics/metrics.js';
import { type Protocol } from '../bindings/binding.js';
import { BURST_BUFFER, EAGAIN, EMSGSIZE, MAX_FDS, native, READABLE, type WatchHandle, WRITABLE } from '../native/index.js';
import { ACCEPT } from '../native/records.js';
import { type Policy } from '../registry/policy.js';
import { type OutgoingDatagram, type Registry, type Worker } from '../registry/registry.js';
import { type LogThrottle } from './log-throttle.js';
import {
  decodeWorkerMessage,
  encode,
  BINARY_VERSION,
  type BinaryReply,
  connectionPrefix,
  MAX_DATAGRAM_MESSAGE,
  MAX_WINDOW,
  type DaemonMessage,
  type Endpoint,
  type ReplyHeader,
} from './protocol.js';

/** Kernel steering's side of the services protocol (version 2): a label's sockets, and sockets to reply from. */
export interface SteeredSockets {
  of(label: string): readonly SteeredSocket[];
  /** A UDP socket bound to `local` for a worker of `label` (the caller's to close), or why not. */
  replySocket(label: string, local: Endpoint): number | string;
}

export interface SteeredSocket {
  readonly label: string;
  readonly protocol: 'tcp' | 'udp';
  readonly family: 4 | 6;
  readonly reader: { readonly fd: number } | undefined;
  /** A server's own socket that `adopt` took: not given to workers. */
  readonly adoptedFrom?: number;
}

export interface ServicesOptions {
  path: string;
  /** Kernel steering's sockets; none in the modes where the daemon accepts everything. */
  steered?: SteeredSockets | undefined;
  /** A worker's UDP reply, to send from `local` to `client`. */
  onReply: (worker: Worker, reply: ReplyHeader, payload: Uint8Array) => void;
  /** The same under the binary header (version 3). */
  onBinaryReply: (worker: Worker, reply: BinaryReply) => void;
  registry: Registry;
  policy: Policy;
  metrics: Metrics;
  log: Logger;
}

// A peer must register this soon after connecting: a silent connection holds a descriptor of the daemon.
const REGISTER_TIMEOUT_MS = 5_000;
// Accepts, and messages of one peer, handled per readiness callback: the socket stays readable (uv_poll
// is level-triggered), so the rest waits a loop turn and a flooding peer cannot starve the others,
// hand-offs or the control socket. 64 keeps the per-wake-up cost amortized for an honest busy worker.
export const MAX_PER_CALLBACK = 64;
// A worker that asks without reading the answers holds a descriptor per answer: bounded, as the window is.
const MAX_ANSWERS_WAITING = 1024;

export interface PeerHooks {
  registered(): void;
  closed(registered: boolean): void;
}

// Reads are synchronous, so every peer can read into the same buffers.
const received = new Uint8Array(MAX_DATAGRAM_MESSAGE);
const receivedFds = new Int32Array(MAX_FDS + 1);
// A flush copies its connections' records here: a worker takes at most its window, and flushes run one at a time.
const outgoing = new Int32Array(MAX_WINDOW * ACCEPT.SIZE);

/** One connection on the services socket: unregistered, then a worker of one label. */
export class Peer implements Worker {
  readonly id: number;
  readonly pid: number;
  readonly uid: number;
  label = '';
  /** The protocol version agreed at register. */
  version = 0;
  window = 0;
  inflight = 0;
  handoffs = 0;
  registered = false;
  #blocked = false;
  /** Answers to reply-socket requests that did not fit the worker's socket buffer: sent when it drains. */
  readonly #answers: { message: Uint8Array; fd: number }[] = [];
  /** Connections taken this turn: sent together (one sendmmsg) once the turn's JavaScript has run. */
  #pending: Connection[] = [];
  /** Connection headers up to the client's address, per protocol (connectionPrefix). */
  readonly #prefixes: Partial<Record<Protocol, Uint8Array>> = {};
  #draining = false;
  #closed = false;
  readonly #fd: number;
  readonly #watch: WatchHandle;
  readonly #options: ServicesOptions;
  readonly #warnings: LogThrottle;
  readonly #hooks: PeerHooks;
  readonly #timer: NodeJS.Timeout;

  constructor(id: number, fd: number, pid: number, uid: number, options: ServicesOptions, warnings: LogThrottle, hooks: PeerHooks) {
    this.id = id;
    this.#fd = fd;
    this.pid = pid;
    this.uid = uid;
    this.#options = options;
    this.#warnings = warnings;
    this.#hooks = hooks;
    // Datagrams for the worker wait in this end's send buffer until it reads them: sized for a burst.
    native.setBufferSizes(fd, 0, BURST_BUFFER);
    this.#watch = native.watch(fd, READABLE, (events) => this.#onEvents(events));
    this.#timer = setTimeout(
      () => this.#refuse('ERR_PROTOCOL_MESSAGE', `no register message within ${REGISTER_TIMEOUT_MS / 1000} s`),
      REGISTER_TIMEOUT_MS,
    );
    this.#timer.unref();
  }

  get ready(): boolean {
    return this.registered && !this.#blocked && !this.#draining && this.inflight < this.window;
  }

  get draining(): boolean {
    return this.#draining;
  }

  send(conn: Connection): void {
    this.inflight++;
    // A microtask runs once the callback that took the connection (an accept batch, an ack's drain) returns.
    if (this.#pending.push(conn) === 1) queueMicrotask(this.#flush);
  }

  readonly #flush = (): void => {
    try {
      this.#sendPending();
    } catch (err) {
      // Whatever went wrong, the connections go back to the registry with the worker's close.
      this.#options.log.error({ worker: this.id, error: (err as Error).stack }, 'hand-off failed');
      this.close();
    }
  };

  /**
   * Sends the connections taken, in order: those that went are counted as handed off (the addon closed the
   * daemon's copies); the rest, from a full socket (block until writable) or a failed one, go back to the
   * registry, first in line for another worker or the queue.
   */
  #sendPending(): void {
    const conns = this.#pending;
    while (conns.length > 0) {
      const protocol = conns[0]!.protocol;
      let n = 1;
      while (n < conns.length && conns[n]!.protocol === protocol) n++;
      for (let i = 0; i < n; i++) outgoing.set(conns[i]!.record, i * ACCEPT.SIZE);
      const prefix = (this.#prefixes[protocol] ??= connectionPrefix(this.label, protocol));
      const rc = native.sendConnections(this.#fd, prefix, outgoing, n);
      const sent = Math.max(rc, 0);
      const now = process.hrtime.bigint();
      for (let i = 0; i < sent; i++) {
        const c = conns[i]!;
        this.#options.metrics.handoff(c.protocol, this.label, Number(now - c.acceptedAt) / 1e9);
      }
      this.handoffs += sent;
      if (sent === n) {
        conns.splice(0, n);
        continue;
      }
      this.#pending = [];
      this.inflight -= conns.length - sent;
      // A part-way stop is a full buffer; another error shows on the next send.
      if (rc >= 0 || rc === -EAGAIN) this.block();
      else this.fail(`hand-off failed with errno ${-rc}`);
      this.#options.registry.returned(this.label, conns.slice(sent));
      return;
    }
  }

  sendDatagram(datagram: OutgoingDatagram): number {
    return native.sendFd(this.#fd, datagram.encoded(this.version), -1);
  }

  /** Gives a version-2 worker one of its label's steered sockets (a duplicate; the daemon keeps its own). */
  sendSocket(socket: SteeredSocket): void {
    if (this.#closed || this.version < 2 || socket.reader === undefined) return;
    const header = encode({ type: 'socket', label: socket.label, protocol: socket.protocol, family: socket.family });
    const rc = native.sendFd(this.#fd, header, socket.reader.fd);
    // A message of a few bytes that does not fit means a worker that reads nothing: it cannot serve the label.
    if (rc < 0) this.fail(`sending a steered socket failed with errno ${-rc}`);
  }

  block(): void {
    if (this.#blocked || this.#closed) return;
    this.#blocked = true;
    native.setEvents(this.#watch, READABLE | WRITABLE);
  }

  fail(reason: string): void {
    this.#options.log.warn({ worker: this.id, label: this.label, worker_pid: this.pid, reason }, 'worker failed');
    this.close();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    native.unwatch(this.#watch);
    // Descriptors still in flight to this worker are released by the kernel with the socket.
    native.close(this.#fd);
    for (const a of this.#answers.splice(0)) if (a.fd >= 0) native.close(a.fd);
    this.#hooks.closed(this.registered);
    if (this.registered) {
      this.#options.registry.remove(this);
      const unsent = this.#pending;
      this.#pending = [];
      this.inflight -= unsent.length;
      if (unsent.length > 0) this.#options.registry.returned(this.label, unsent);
      this.#options.log.info({ worker: this.id, label: this.label, worker_pid: this.pid, handoffs: this.handoffs }, 'worker left');
    }
  }

  #onEvents(events: number): void {
    try {
      this.#handleEvents(events);
    } catch (err) {
      // Whatever a worker sends, the daemon lives on: the worker is dropped instead.
      this.#options.log.error({ worker: this.id, error: (err as Error).stack }, 'worker handling failed');
      this.close();
    }
  }

  #handleEvents(events: number): void {
    if (events < 0) return this.close();
    if (events & WRITABLE && this.#blocked) {
      if (!this.#flushAnswers()) return;
      this.#blocked = false;
      native.setEvents(this.#watch, READABLE);
      this.#options.registry.drain(this.label);
    }
    if (events & READABLE) this.#read();
  }

  #read(): void {
    const data = received;
    const fds = receivedFds;
    let acked = 0;
    for (let i = 0; i < MAX_PER_CALLBACK && !this.#closed; i++) {
      const n = native.recvMsg(this.#fd, data, fds);
      if (n === -EAGAIN) break;
      // Before the end-of-file check: an empty message can carry descriptors too.
      if (n >= 0 && fds[0]! > 0) {
        // reset, not close: a TCP socket a peer sent with SO_LINGER {1, N} and unsent data would block a
        // plain close (and the whole loop) for N seconds; {1, 0} makes it return at once.
        for (let f = 1; f <= fds[0]!; f++) native.reset(fds[f]!);
        return this.#refuse('ERR_PROTOCOL_MESSAGE', 'workers never send descriptors');
      }
      if (n === 0) return this.close();
      if (n === -EMSGSIZE) return this.#refuse('ERR_PROTOCOL_MESSAGE', `a message is longer than ${MAX_DATAGRAM_MESSAGE} bytes`);
      if (n < 0) return this.close();
      try {
        acked += this.#handle(data.subarray(0, n));
      } catch (err) {
        const e = err as DispatcherError;
        return this.#refuse(e.code ?? 'ERR_PROTOCOL_MESSAGE', e.message);
      }
    }
    if (acked > 0 && !this.#closed) this.#options.registry.drain(this.label);
  }

  /** Handles one message; returns how many hand-offs it acknowledged. */
  #handle(bytes: Uint8Array): number {
    const m = decodeWorkerMessage(bytes);
    if (!this.registered) {
      if (m.type !== 'register')
        throw new DispatcherError('ERR_PROTOCOL_MESSAGE', `the first message must be "register", not ${JSON.stringify(m.type)}`);
      if (!this.#options.policy.allows(m.label, this.uid)) {
        throw new DispatcherError(
          'ERR_NOT_ALLOWED',
          `uid ${this.uid} may not register label "${m.label}" (the daemon's --allow ${m.label}=UID permits it)`,
        );
      }
      clearTimeout(this.#timer);
      this.label = m.label;
      this.version = m.version;
      this.window = m.window;
      this.registered = true;
      this.#hooks.registered();
      this.#send({ type: 'registered', version: m.version, label: m.label, worker: this.id, window: m.window });
      for (const socket of this.#options.steered?.of(m.label) ?? []) this.sendSocket(socket);
      this.#options.log.info(
        { worker: this.id, label: m.label, worker_pid: this.pid, uid: this.uid, window: m.window },
        'worker registered',
      );
      this.#options.registry.add(this);
      return 0;
    }
    switch (m.type) {
      case 'ack':
        if (m.count > this.inflight)
          throw new DispatcherError('ERR_PROTOCOL_MESSAGE', `ack of ${m.count} with ${this.inflight} hand-offs unacknowledged`);
        this.inflight -= m.count;
        return m.count;
      case 'reply':
        this.#options.onReply(this, m, m.payload);
        return 0;
      case 'binary-reply':
        if (this.version < BINARY_VERSION)
          throw new DispatcherError('ERR_PROTOCOL_MESSAGE', `a binary reply needs protocol version ${BINARY_VERSION}`);
        this.#options.onBinaryReply(this, m);
        return 0;
      case 'reply-socket':
        this.#replySocket(m.local);
        return 0;
      case 'drain':
        // Nothing more is sent; everything sent arrives before "drained", so the worker loses nothing.
        this.#draining = true;
        this.#send({ type: 'drained' });
        return 0;
      default:
        throw new DispatcherError('ERR_PROTOCOL_MESSAGE', `"${m.type}" is only valid as the first message`);
    }
  }

  #replySocket(local: Endpoint): void {
    if (this.version < 2) throw new DispatcherError('ERR_PROTOCOL_MESSAGE', '"reply-socket" needs protocol version 2');
    if (this.#answers.length >= MAX_ANSWERS_WAITING) {
      throw new DispatcherError('ERR_PROTOCOL_MESSAGE', `over ${MAX_ANSWERS_WAITING} reply-socket requests with their answers unread`);
    }
    const socket =
      this.#options.steered?.replySocket(this.label, local) ?? 'the daemon does not steer in the kernel (use "reply" messages)';
    if (typeof socket === 'string') this.#answer(encode({ type: 'reply-socket', local, error: socket }), -1);
    else this.#answer(encode({ type: 'reply-socket', local }), socket);
  }

  /**
   * Sends an answer now, or once the worker's socket has room (a worker re-registering asks for all its
   * endpoints at once): an answer lost would leave its endpoint's replies waiting for good. Takes `fd`.
   */
  #answer(message: Uint8Array, fd: number): void {
    this.#answers.push({ message, fd });
    if (this.#answers.length === 1 && !this.#flushAnswers()) this.block();
  }

  /** Sends the waiting answers in order; false if the socket is full again (the rest wait for writable). */
  #flushAnswers(): boolean {
    while (this.#answers.length > 0) {
      const { message, fd } = this.#answers[0]!;
      const rc = native.sendFd(this.#fd, message, fd);
      if (rc === -EAGAIN) return false;
      this.#answers.shift();
      if (fd >= 0) native.close(fd);
      if (rc < 0) {
        this.fail(`a reply-socket answer failed with errno ${-rc}`);
        return false;
      }
    }
    return true;
  }

  #send(message: DaemonMessage): void {
    // After the connections taken: "drained" promises that every hand-off came before it. A failed flush
    // closes the peer, and its descriptor number may be another socket's by now.
    this.#flush();
    if (this.#closed) return;
    native.sendFd(this.#fd, encode(message), -1);
  }

  /** Tells the peer why (best effort), logs it, and closes. */
  #refuse(code: string, message: string): void {
    if (this.#closed) return;
    this.#warnings.warn({ worker: this.id, worker_pid: this.pid, uid: this.uid, label: this.label || undefined, code }, message);
    if (!this.registered)
      this.#options.metrics.refused(code === 'ERR_NOT_ALLOWED' ? 'not_allowed' : code === 'ERR_VERSION' ? 'version' : 'protocol');
    this.#send({ type: 'error', code, message });
    this.close();
  }
}
