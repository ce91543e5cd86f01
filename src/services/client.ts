import { EventEmitter } from 'node:events';
import { type Server, Socket } from 'node:net';
import { asError, DispatcherError, type ErrorCode } from '../errors.js';
import {
  type ConnectionInfo,
  decodeDaemonMessage,
  DEFAULT_SERVICES_PATH,
  DEFAULT_WINDOW,
  encode,
  BINARY_HEADER,
  BINARY_VERSION,
  encodeBinaryReply,
  encodeReply,
  MAX_DATAGRAM_MESSAGE,
  MIN_PROTOCOL_VERSION,
  PROTOCOL_VERSION,
  type WorkerMessage,
} from './protocol.js';
import { BURST_BUFFER, EAGAIN, MAX_FDS, native, READABLE, type WatchHandle } from '../native/index.js';
import { type SteeredSocket, SteeredSockets } from './steered.js';
import { formatAddress } from '../bindings/address.js';

/**
 * The library a service imports to receive connections from the dispatcher (`l4-dispatcher/service`):
 *
 *   import { attach, serve } from 'l4-dispatcher/service';
 *   attach(httpServer, { label: 'web' });                     // connections arrive as 'connection'
 *   serve({ label: 'echo' }, (socket, info) => socket.pipe(socket));
 *
 * It speaks the services protocol (docs/services-protocol.md), acknowledges hand-offs in batches, and
 * reconnects with backoff when the daemon restarts. In kernel steering mode (version 2) the daemon gives it
 * the label's own sockets instead, served here alike (steered.ts). `close()` drains: the daemon stops
 * sending, and every connection it already sent is still delivered.
 */
export interface ServiceOptions {
  label: string;
  /** The daemon's services socket (default /run/dispatcher/services.sock, or DISPATCHER_SERVICES). */
  socket?: string;
  /** Hand-offs the daemon may send before this worker acknowledges them. */
  window?: number;
}

export type { ConnectionInfo } from './protocol.js';

export type ConnectionHandler = (socket: Socket, info: ConnectionInfo) => void;

/** Sends a reply to the datagram's client, from the address and port it sent to. */
export type Reply = (payload: Uint8Array | string) => void;
export type DatagramHandler = (payload: Buffer, info: ConnectionInfo, reply: Reply) => void;

/** What `serve` calls: a function for TCP connections, or handlers for either protocol. */
export type Handlers = ConnectionHandler | { connection?: ConnectionHandler; datagram?: DatagramHandler };

// Errors after which registering again cannot help: the service is misconfigured.
const FATAL = new Set(['ERR_NOT_ALLOWED', 'ERR_VERSION', 'ERR_LABEL']);
const BACKOFF_MIN_MS = 50;
const BACKOFF_MAX_MS = 2_000;
const DRAIN_TIMEOUT_MS = 5_000;
const ACK_DELAY_MS = 2;
const MAX_UDP_PAYLOAD = 65507;

export interface ServiceEvents {
  registered: [info: { label: string; worker: number; window: number; version: number }];
  connection: [socket: Socket, info: ConnectionInfo];
  datagram: [payload: Buffer, info: ConnectionInfo, reply: Reply];
  disconnected: [];
  error: [err: Error];
}

export class Service extends EventEmitter<ServiceEvents> {
  readonly label: string;
  readonly socketPath: string;
  readonly window: number | undefined;
  #fd = -1;
  #watch: WatchHandle | undefined;
  #backoff = BACKOFF_MIN_MS;
  #retry: NodeJS.Timeout | undefined;
  #closing = false;
  #unacked = 0;
  #ackTimer: NodeJS.Timeout | undefined;
  #drained: (() => void) | undefined;
  // The version a register names: this library's, or 1 for good once a daemon refused it.
  #asking = PROTOCOL_VERSION;
  #version: number | undefined;
  readonly #steered = new SteeredSockets({
    connection: (socket, info) => this.#deliver(() => this.emit('connection', socket, info)),
    datagram: (payload, info, send) => this.#deliver(() => this.#datagram(payload, info, send)),
    // A version-1 daemon would refuse the message and end the connection.
    askReplySocket: (local) => (this.#version ?? 0) >= 2 && this.#send({ type: 'reply-socket', local }),
    error: (err) => this.#report(err),
  });
  readonly #data = new Uint8Array(MAX_DATAGRAM_MESSAGE);
  readonly #out = new Uint8Array(MAX_DATAGRAM_MESSAGE);
  readonly #fds = new Int32Array(MAX_FDS + 1);
  /** The connection whose send buffer was sized for a burst of replies (the first datagram on it does). */
  #sizedForReplies = -1;

  constructor(options: ServiceOptions) {
    super();
    this.label = options.label;
    this.socketPath = options.socket ?? process.env['DISPATCHER_SERVICES'] ?? DEFAULT_SERVICES_PATH;
    this.window = options.window;
    // Connect on the next tick, so the caller can add listeners first.
    setImmediate(() => this.#connect());
  }

  get connected(): boolean {
    return this.#fd >= 0;
  }

  /** The protocol version of the current registration; undefined while not registered. */
  get version(): number | undefined {
    return this.#version;
  }

  /** The steered sockets served (version 2), the daemon's current ones and those kept from before a restart. */
  get steered(): SteeredSocket[] {
    return this.#steered.list;
  }

  /** Replies to steered datagrams dropped: held past the limit, refused a reply socket, or failed to send. */
  get repliesDropped(): number {
    return this.#steered.repliesDropped;
  }

  /** Stops taking connections: those the daemon already sent are delivered first. */
  close(): Promise<void> {
    if (this.#closing) return Promise.resolve();
    this.#closing = true;
    clearTimeout(this.#retry);
    // The steered sockets at once: the daemon keeps its copies, so what is queued there waits for the next worker.
    this.#steered.stop();
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.#drained?.(), DRAIN_TIMEOUT_MS);
      this.#drained = () => {
        clearTimeout(timer);
        this.#drained = undefined;
        this.#disconnect();
        this.#steered.close();
        resolve();
      };
      // Not connected: done at once.
      if (!this.#send({ type: 'drain' })) this.#drained();
    });
  }

  #connect(): void {
    if (this.#closing) return;
    try {
      this.#fd = native.connectSeqpacket(this.socketPath);
    } catch {
      // The daemon is not there (yet): try again, less and less often.
      this.#retry = setTimeout(() => this.#connect(), this.#backoff);
      this.#backoff = Math.min(this.#backoff * 2, BACKOFF_MAX_MS);
      return;
    }
    this.#watch = native.watch(this.#fd, READABLE, () => this.#read());
    const register: WorkerMessage = {
      type: 'register',
      version: this.#asking,
      label: this.label,
      window: this.window ?? DEFAULT_WINDOW,
    };
    if (this.#send(register)) return;
    // The daemon may have refused as it accepted (a uid allowed no label): its error is waiting to be read,
    // and says whether connecting again can help.
    this.#read();
    if (this.#fd >= 0) this.#lost();
  }

  #send(message: WorkerMessage): boolean {
    return this.#fd >= 0 && native.sendFd(this.#fd, encode(message), -1) > 0;
  }

  #read(): void {
    while (this.#fd >= 0) {
      const n = native.recvMsg(this.#fd, this.#data, this.#fds);
      if (n === -EAGAIN) break;
      const fds = n >= 0 ? Array.from(this.#fds.subarray(1, 1 + this.#fds[0]!)) : [];
      if (n === 0 && fds.length === 0) return this.#lost();
      if (n < 0) return this.#lost();
      try {
        this.#handle(this.#data.subarray(0, n), fds);
      } catch (err) {
        for (const fd of fds) native.close(fd);
        this.emit('error', err as Error);
        return this.#lost();
      }
    }
    this.#ack();
  }

  #handle(bytes: Uint8Array, fds: number[]): void {
    const m = decodeDaemonMessage(bytes);
    const carries = m.type === 'connection' || m.type === 'socket' || (m.type === 'reply-socket' && m.error === undefined) ? 1 : 0;
    if (fds.length !== carries)
      throw new DispatcherError('ERR_PROTOCOL_MESSAGE', `a "${m.type}" message arrived with ${fds.length} descriptors, not ${carries}`);
    switch (m.type) {
      case 'registered':
        if (!(m.version >= MIN_PROTOCOL_VERSION && m.version <= this.#asking))
          throw new DispatcherError('ERR_PROTOCOL_MESSAGE', `registered with version ${m.version}, asked for ${this.#asking}`);
        this.#backoff = BACKOFF_MIN_MS;
        this.#version = m.version;
        this.#steered.registered();
        this.emit('registered', { label: m.label, worker: m.worker, window: m.window, version: m.version });
        return;
      case 'connection': {
        this.#unacked++;
        const socket = new Socket({ fd: fds[0]!, readable: true, writable: true });
        this.emit('connection', socket, { label: m.label, protocol: m.protocol, client: m.client, local: m.local });
        return;
      }
      case 'datagram': {
        this.#sizeForReplies();
        const info: ConnectionInfo = { label: m.label, protocol: 'udp', client: m.client, local: m.local };
        this.#datagram(Buffer.from(m.payload), info, (bytes) => {
          if (this.#fd >= 0) native.sendFd(this.#fd, encodeReply(this.#out, info.client, info.local, bytes), -1);
        });
        return;
      }
      case 'binary-datagram': {
        // Version 3: the endpoints under the binary header, which a reply sends back as they came.
        this.#sizeForReplies();
        const { client, local } = m;
        const info: ConnectionInfo = {
          label: this.label,
          protocol: 'udp',
          client: { address: formatAddress(client.family, client.words), port: client.port },
          local: { address: formatAddress(local.family, local.words), port: local.port },
        };
        const header = bytes.slice(0, BINARY_HEADER);
        this.#datagram(Buffer.from(m.payload), info, (payload) => {
          if (this.#fd < 0) return;
          // Registered again meanwhile, with a daemon of an older version: the reply in JSON.
          const binary = (this.#version ?? 0) >= BINARY_VERSION;
          const message = binary ? encodeBinaryReply(this.#out, header, payload) : encodeReply(this.#out, info.client, info.local, payload);
          native.sendFd(this.#fd, message, -1);
        });
        return;
      }
      case 'socket':
        if ((m.protocol !== 'tcp' && m.protocol !== 'udp') || (m.family !== 4 && m.family !== 6))
          throw new DispatcherError('ERR_PROTOCOL_MESSAGE', `a socket of protocol ${m.protocol} and family ${m.family}`);
        this.#steered.add(m, fds[0]!);
        return;
      case 'reply-socket':
        this.#steered.replySocket(m, fds[0]);
        return;
      case 'drained':
        this.#drained?.();
        return;
      case 'error': {
        if (m.code === 'ERR_VERSION' && this.#asking > MIN_PROTOCOL_VERSION) {
          // A daemon older than this library: register again (the daemon closes; #lost reconnects) in its version.
          this.#asking = MIN_PROTOCOL_VERSION;
          return;
        }
        const err = new DispatcherError(m.code as ErrorCode, `the dispatcher refused: ${m.message}`);
        if (FATAL.has(m.code)) this.#closing = true;
        this.emit('error', err);
        return;
      }
    }
  }

  /**
   * Acknowledges in batches: at a quarter of the window, or ACK_DELAY_MS after the first unacknowledged
   * hand-off, so a busy worker does not cost the daemon a wake-up to read an ack per connection. The
   * window (64 by default) stays far from full: at 20k hand-offs/s, 2 ms is 40 connections.
   */
  #ack(): void {
    if (this.#unacked === 0) return;
    if (this.#unacked >= Math.max(1, (this.window ?? DEFAULT_WINDOW) >> 2)) return this.#ackNow();
    this.#ackTimer ??= setTimeout(() => this.#ackNow(), ACK_DELAY_MS);
  }

  #ackNow(): void {
    clearTimeout(this.#ackTimer);
    this.#ackTimer = undefined;
    if (this.#unacked > 0 && this.#send({ type: 'ack', count: this.#unacked })) this.#unacked = 0;
  }

  /** Replies wait in this end's send buffer until the daemon reads them: room for a burst's, once a connection. */
  #sizeForReplies(): void {
    if (this.#sizedForReplies === this.#fd) return;
    this.#sizedForReplies = this.#fd;
    native.setBufferSizes(this.#fd, 0, BURST_BUFFER);
  }

  /** Emits a datagram with its `reply`, which sends through `send`. */
  #datagram(payload: Buffer, info: ConnectionInfo, send: (bytes: Uint8Array) => void): void {
    const reply: Reply = (data) => {
      const bytes = typeof data === 'string' ? Buffer.from(data) : data;
      if (bytes.length > MAX_UDP_PAYLOAD) throw new RangeError(`a UDP reply holds at most ${MAX_UDP_PAYLOAD} bytes, not ${bytes.length}`);
      send(bytes);
    };
    this.emit('datagram', payload, info, reply);
  }

  /** Runs a handler of a steered socket's connection or datagram: what it throws is reported, the next one still served. */
  #deliver(emit: () => void): void {
    try {
      emit();
    } catch (err) {
      this.#report(asError(err));
    }
  }

  /** 'error', outside the native callback that found it: an 'error' nobody listens for throws. */
  #report(err: Error): void {
    process.nextTick(() => this.emit('error', err));
  }

  #disconnect(): void {
    clearTimeout(this.#ackTimer);
    this.#ackTimer = undefined;
    if (this.#watch !== undefined) native.unwatch(this.#watch);
    this.#watch = undefined;
    if (this.#fd >= 0) native.close(this.#fd);
    this.#fd = -1;
    this.#unacked = 0;
    this.#version = undefined;
  }

  /** The daemon went away (restart, crash): reconnect unless closing. The steered sockets are served meanwhile. */
  #lost(): void {
    this.#disconnect();
    this.emit('disconnected');
    this.#drained?.();
    // Closing (drained, or refused for good): the steered sockets go too.
    if (this.#closing) this.#steered.close();
    else this.#retry = setTimeout(() => this.#connect(), this.#backoff);
  }
}

/**
 * Calls `handlers` with every connection the dispatcher hands to `label`, and, for UDP bindings, every
 * datagram with a `reply` that answers from the address and port the client sent to:
 *
 *   serve({ label: 'dns' }, { datagram: (query, info, reply) => reply(answer(query)) });
 */
export function serve(options: ServiceOptions, handlers: Handlers): Service {
  const service = new Service(options);
  const { connection, datagram } = typeof handlers === 'function' ? { connection: handlers, datagram: undefined } : handlers;
  if (connection !== undefined) service.on('connection', connection);
  if (datagram !== undefined) service.on('datagram', datagram);
  return service;
}

/**
 * Emits every connection, handed off or steered, as 'connection' on `server` (a net.Server or http.Server),
 * set up as the server would set up a socket it accepted itself: its noDelay (http.Server's default) and
 * keepAlive. Without it, http.Server would leave Nagle on for these connections only.
 */
export function attach(server: Server, options: ServiceOptions): Service {
  const settings = server as Server & { noDelay?: boolean; keepAlive?: boolean; keepAliveInitialDelay?: number };
  return serve(options, (socket) => {
    if (settings.noDelay) socket.setNoDelay(true);
    if (settings.keepAlive) socket.setKeepAlive(true, settings.keepAliveInitialDelay);
    server.emit('connection', socket);
  });
}
