import { Socket } from 'node:net';
import { DispatcherError } from '../errors.js';
import { type ReaderLog, SocketReader } from '../listener/reader.js';
import { DATAGRAM_SLOT, native } from '../native/index.js';
import {
  ACCEPT,
  acceptFd,
  ADDRESS,
  addressAt,
  addressText,
  DATAGRAM,
  datagramLength,
  portAt,
  putAddress,
  putSendData,
  recordIn,
  SEND,
} from '../native/records.js';
import { type ConnectionInfo, type Endpoint, type ReplySocketHeader, type SocketHeader } from './protocol.js';

/** A steered socket a worker serves, as `Service.steered` lists it. */
export interface SteeredSocket {
  readonly protocol: 'tcp' | 'udp';
  readonly family: 4 | 6;
  /** The loopback port it is bound to. */
  readonly port: number;
}

/** What the steered sockets need of their Service. */
export interface SteeredHost {
  connection(socket: Socket, info: ConnectionInfo): void;
  /** `send` sends reply bytes to the datagram's client, from the address and port it sent to. */
  datagram(payload: Buffer, info: ConnectionInfo, send: (bytes: Uint8Array) => void): void;
  /** Asks the daemon for a socket to reply from `local`; false if the request could not be sent. */
  askReplySocket(local: Endpoint): boolean;
  error(err: Error): void;
}

interface Served extends SteeredSocket {
  label: string;
  /** Accepts or receives in batches, as the daemon's listeners do. */
  reader: SocketReader;
}

const endpointAt = (record: Int32Array, at: number): Endpoint => ({ address: addressText(record, at), port: portAt(record, at) });

/**
 * The label's own sockets that the daemon gave this worker (version 2, kernel steering): TCP listeners it
 * accepts from, UDP sockets it receives from, each datagram with the address and port its client sent to.
 * They are the worker's copies: they outlive the connection to the daemon (the kernel steers to them still)
 * and are closed on drain, when the daemon's own copies keep whatever is queued for the other workers.
 */
export class SteeredSockets {
  readonly #host: SteeredHost;
  readonly #sockets = new Set<Served>();
  readonly #replies: ReplySocketCache;
  readonly #log: ReaderLog;
  #stopped = false;

  constructor(host: SteeredHost) {
    this.#host = host;
    this.#replies = new ReplySocketCache(host);
    // What the reader would log goes to the Service's 'error' event (a throwing handler, a failed accept).
    const report = (context: object, message: string): void =>
      host.error(new Error(`steered socket: ${message} ${JSON.stringify(context)}`));
    this.#log = { warn: report, error: report };
  }

  get list(): SteeredSocket[] {
    return [...this.#sockets].map(({ protocol, family, port }) => ({ protocol, family, port }));
  }

  /** Replies dropped: held past the limit, refused a reply socket, or failed to send. */
  get repliesDropped(): number {
    return this.#replies.dropped;
  }

  /** Serves the descriptor of a `socket` message, now this worker's to close. */
  add(header: SocketHeader, fd: number): void {
    if (this.#stopped) {
      native.close(fd);
      return;
    }
    const self = new Int32Array(ADDRESS.SIZE);
    const port = native.sockName(fd, self) === 0 ? portAt(self, 0) : 0;
    const { label, protocol, family } = header;
    const s: Served = {
      label,
      protocol,
      family,
      port,
      reader: new SocketReader(
        fd,
        protocol,
        {
          onAccepted: (batch, count) => this.#accepted(s, batch, count),
          onDatagrams: (_fd, data, meta, count) => this.#received(s, data, meta, count),
        },
        this.#log,
        { label, protocol, port },
      ),
    };
    this.#sockets.add(s);
    s.reader.watch();
  }

  /** The daemon's answer to a `reply-socket` request: its descriptor, or undefined with `error`. */
  replySocket(header: ReplySocketHeader, fd: number | undefined): void {
    this.#replies.answer(header, fd);
  }

  /** After each registration: the daemon may be a new one. */
  registered(): void {
    this.#replies.registered();
  }

  /** Stops accepting and receiving, and closes the steered sockets; replies can still be sent. */
  stop(): void {
    this.#stopped = true;
    for (const s of this.#sockets) this.#remove(s);
  }

  /** Closes the reply sockets too. */
  close(): void {
    this.stop();
    this.#replies.close();
  }

  #remove(s: Served): void {
    this.#sockets.delete(s);
    s.reader.close();
  }

  #accepted(s: Served, batch: Int32Array, count: number): void {
    for (let i = 0; i < count; i++) {
      const r = recordIn(batch, i, ACCEPT.SIZE);
      const socket = new Socket({ fd: acceptFd(batch, i), readable: true, writable: true });
      this.#host.connection(socket, {
        label: s.label,
        protocol: 'tcp',
        client: endpointAt(r, ACCEPT.PEER),
        local: endpointAt(r, ACCEPT.LOCAL),
      });
    }
  }

  #received(s: Served, data: Uint8Array, meta: Int32Array, count: number): void {
    for (let i = 0; i < count; i++) {
      const r = recordIn(meta, i, DATAGRAM.SIZE);
      const length = datagramLength(r);
      // The daemon sets IP_RECVORIGDSTADDR: a datagram without its destination could not be answered from it.
      if (length < 0 || addressAt(r, DATAGRAM.DESTINATION).family === 0) continue;
      const local = endpointAt(r, DATAGRAM.DESTINATION);
      // A copy: the batch's records are overwritten by the next read, and a reply can come any time later.
      const client = r.slice(DATAGRAM.SOURCE, DATAGRAM.SOURCE + ADDRESS.SIZE);
      const payload = Buffer.from(data.subarray(i * DATAGRAM_SLOT, i * DATAGRAM_SLOT + length));
      const info: ConnectionInfo = { label: s.label, protocol: 'udp', client: endpointAt(r, DATAGRAM.SOURCE), local };
      this.#host.datagram(payload, info, (bytes) => this.#replies.send(local, client, bytes));
    }
  }
}

// Reply sockets kept: each is a descriptor. Past this the least recently used endpoint is forgotten.
const MAX_REPLY_SOCKETS = 256;
// Replies held per endpoint while its socket is asked for; more are dropped.
const MAX_HELD = 64;

type Waiting = { local: Endpoint; state: 'waiting'; asked: boolean; held: { client: Int32Array; payload: Uint8Array }[] };
type Entry = { local: Endpoint; state: 'open'; fd: number } | Waiting | { local: Endpoint; state: 'refused' };

const keyOf = (local: Endpoint): string => `${local.address} ${local.port}`;

/**
 * The sockets a worker replies from, one per endpoint its clients sent to, each bound to exactly it: asked
 * of the daemon once, replies held until it answers. In recency order, least recently used first.
 */
class ReplySocketCache {
  dropped = 0;
  readonly #host: SteeredHost;
  readonly #entries = new Map<string, Entry>();
  // One send record, reused; its source stays family 0 (the socket's own address, which is the endpoint).
  readonly #record = new Int32Array(SEND.SIZE);
  #closed = false;

  constructor(host: SteeredHost) {
    this.#host = host;
  }

  /** Sends `payload` to `client` (an address block) from `local`, or holds it until the socket for `local` comes. */
  send(local: Endpoint, client: Int32Array, payload: Uint8Array): void {
    const entry = this.#closed ? undefined : this.#use(local);
    if (entry?.state === 'open') {
      this.#sendFrom(entry, client, payload);
    } else if (entry?.state !== 'waiting' || entry.held.length >= MAX_HELD) {
      this.dropped++;
    } else {
      entry.held.push({ client, payload: new Uint8Array(payload) });
      if (!entry.asked) entry.asked = this.#host.askReplySocket(local);
    }
  }

  answer(header: ReplySocketHeader, fd: number | undefined): void {
    const key = keyOf(header.local);
    const entry = this.#entries.get(key);
    if (entry?.state !== 'waiting') {
      // Forgotten meanwhile, or answered twice (asked again after a reconnect).
      if (fd !== undefined) native.close(fd);
      return;
    }
    if (fd === undefined) {
      this.dropped += entry.held.length;
      this.#entries.set(key, { local: entry.local, state: 'refused' });
      const { address, port } = entry.local;
      this.#host.error(
        new DispatcherError(
          'ERR_REPLY_SOCKET',
          `no socket to reply from ${address} port ${port}: ${header.error ?? 'refused'}; its replies are dropped`,
        ),
      );
      return;
    }
    const open: Entry = { local: entry.local, state: 'open', fd };
    this.#entries.set(key, open);
    for (const h of entry.held) this.#sendFrom(open, h.client, h.payload);
  }

  registered(): void {
    for (const [key, entry] of this.#entries) {
      // The daemon asked before may be gone, and a new one may bind the label differently.
      if (entry.state === 'refused') this.#entries.delete(key);
      else if (entry.state === 'waiting') entry.asked = this.#host.askReplySocket(entry.local);
    }
  }

  close(): void {
    this.#closed = true;
    for (const [key, entry] of this.#entries) this.#forget(key, entry);
  }

  /** The entry for `local`, made the most recently used; a new one waits for its socket. */
  #use(local: Endpoint): Entry {
    const key = keyOf(local);
    let entry = this.#entries.get(key);
    if (entry !== undefined) {
      this.#entries.delete(key);
    } else {
      for (const [oldest, e] of this.#entries) {
        if (this.#entries.size < MAX_REPLY_SOCKETS) break;
        this.#forget(oldest, e);
      }
      entry = { local, state: 'waiting', asked: false, held: [] };
    }
    this.#entries.set(key, entry);
    return entry;
  }

  #forget(key: string, entry: Entry): void {
    this.#entries.delete(key);
    if (entry.state === 'open') native.close(entry.fd);
    else if (entry.state === 'waiting') this.dropped += entry.held.length;
  }

  #sendFrom(entry: { local: Endpoint; fd: number }, client: Int32Array, payload: Uint8Array): void {
    const r = this.#record;
    const to = addressAt(client, 0);
    putSendData(r, 0, payload.length);
    putAddress(r, SEND.DESTINATION, to.family, to.words, to.port);
    // The reply socket is of its address's family (an AF_INET socket for IPv4).
    if (native.sendDatagrams(entry.fd, payload, r, 1, entry.local.address.includes(':')) !== 1) this.dropped++;
  }
}
