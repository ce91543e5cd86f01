import { isIPv4Mapped } from '../bindings/address.js';
import { parseLabel } from '../bindings/binding.js';
import { DispatcherError } from '../errors.js';

/**
 * The services protocol (docs/services-protocol.md): one JSON object per SOCK_SEQPACKET message, so a
 * message is never split or merged and a hand-off's descriptor always arrives with its own header.
 *
 *   worker -> daemon   {"type":"register","version":2,"label":"web","window":64}
 *                      {"type":"ack","count":3}
 *                      {"type":"drain"}
 *                      {"type":"reply","client":{...},"local":{...}} \n payload     (UDP)
 *                      {"type":"reply-socket","local":{...}}                          (v2, UDP)
 *                      binary header (type 2) + payload: a reply                     (v3, UDP)
 *   daemon -> worker   {"type":"registered","version":2,"label":"web","worker":7,"window":64}
 *                      {"type":"connection",...} + the descriptor (SCM_RIGHTS)
 *                      {"type":"datagram",...} \n payload                            (UDP)
 *                      binary header (type 1) + payload: a datagram                  (v3, UDP)
 *                      {"type":"socket","label":"web","protocol":"tcp","family":4} + the descriptor (v2)
 *                      {"type":"reply-socket","local":{...}} + the descriptor, or with "error" (v2)
 *                      {"type":"drained"}
 *                      {"type":"error","code":"ERR_NOT_ALLOWED","message":"..."}  (then the daemon closes)
 *
 * A datagram or reply is the JSON header, a newline, and the payload's bytes, in one message. Version 2 is
 * version 1 and kernel steering: the daemon gives a worker its label's own steered sockets to accept and
 * receive on, and UDP sockets to reply from. Version 3 is version 2 with datagrams and replies under a
 * fixed binary header instead of JSON (BINARY_HEADER bytes, see encodeBinary): nothing to write or parse
 * as text per packet. The daemon answers a register with the lower of the worker's version and its own,
 * and speaks that version to it.
 */
export const PROTOCOL_VERSION = 3;
/** From this version on, datagrams and replies travel under the binary header. */
export const BINARY_VERSION = 3;
/** The versions a daemon takes in a register; a worker of an older one keeps the hand-off path. */
export const MIN_PROTOCOL_VERSION = 1;
/** No message is longer; a longer one is a protocol error. */
export const MAX_MESSAGE = 4096;
/** A datagram or reply message: a header and up to a full UDP payload. */
export const MAX_DATAGRAM_MESSAGE = MAX_MESSAGE + 65536;
/** Where the daemon listens for workers unless told otherwise (`--services`, DISPATCHER_SERVICES). */
export const DEFAULT_SERVICES_PATH = '/run/dispatcher/services.sock';
export const DEFAULT_WINDOW = 64;
export const MAX_WINDOW = 1024;

export interface Endpoint {
  address: string;
  port: number;
}

export interface ConnectionHeader {
  type: 'connection';
  label: string;
  protocol: 'tcp' | 'udp';
  client: Endpoint;
  local: Endpoint;
}

/** What a worker learns of each connection or datagram: its header, as the protocol defines it. */
export type ConnectionInfo = Omit<ConnectionHeader, 'type'>;

export interface DatagramHeader {
  type: 'datagram';
  label: string;
  protocol: 'udp';
  client: Endpoint;
  local: Endpoint;
}

/** A reply's header; the payload travels after it. */
export interface ReplyHeader {
  type: 'reply';
  client: Endpoint;
  local: Endpoint;
}

/**
 * A label's own steered socket (version 2, kernel steering), with its descriptor: TCP, a transparent
 * listening socket to accept on; UDP, a transparent socket to receive on, each datagram with its destination
 * (IP_RECVORIGDSTADDR is set). Bound to loopback: the kernel steers the label's traffic to it.
 */
export interface SocketHeader {
  type: 'socket';
  label: string;
  protocol: 'tcp' | 'udp';
  family: 4 | 6;
}

/**
 * A UDP socket to reply from `local` (version 2): bound to exactly that address and port, which must be one
 * the worker's label is bound to. Sent with its descriptor, or with `error` and none.
 */
export interface ReplySocketHeader {
  type: 'reply-socket';
  local: Endpoint;
  error?: string;
}

/**
 * A binary datagram or reply's address (version 3): family 4 or 6, the address as four big-endian 32-bit
 * words (IPv4 in the first, the others 0: as datagram records hold them), and the port.
 */
export interface BinaryEndpoint {
  family: 4 | 6;
  words: Uint32Array;
  port: number;
}

/** A reply under the binary header (version 3): the datagram's endpoints as it carried them. */
export interface BinaryReply {
  type: 'binary-reply';
  client: BinaryEndpoint;
  local: BinaryEndpoint;
  payload: Uint8Array;
}

/** A datagram under the binary header (version 3); the label is the worker's own. */
export interface BinaryDatagram {
  type: 'binary-datagram';
  client: BinaryEndpoint;
  local: BinaryEndpoint;
  payload: Uint8Array;
}

export type WorkerMessage =
  | { type: 'register'; version: number; label: string; window: number }
  | BinaryReply
  | { type: 'ack'; count: number }
  | { type: 'drain' }
  | (ReplyHeader & { payload: Uint8Array })
  | { type: 'reply-socket'; local: Endpoint };

export type DaemonMessage =
  | { type: 'registered'; version: number; label: string; worker: number; window: number }
  | ConnectionHeader
  | (DatagramHeader & { payload: Uint8Array })
  | BinaryDatagram
  | SocketHeader
  | ReplySocketHeader
  | { type: 'drained' }
  | { type: 'error'; code: string; message: string };

const decoder = new TextDecoder('utf-8', { fatal: true });

/** Splits a message at its first newline: the JSON header, and the payload of a datagram or reply. */
function split(bytes: Uint8Array): { header: Uint8Array; payload: Uint8Array | undefined } {
  const nl = bytes.indexOf(0x0a);
  if (nl < 0) return { header: bytes, payload: undefined };
  return { header: bytes.subarray(0, nl), payload: bytes.subarray(nl + 1) };
}

/** A message's JSON object, or ERR_PROTOCOL_MESSAGE naming what is wrong with it. */
function decodeObject(bytes: Uint8Array): Record<string, unknown> {
  if (bytes.length > MAX_MESSAGE) throw protocolError(`a message header is longer than ${MAX_MESSAGE} bytes`);
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(bytes));
  } catch {
    throw protocolError('a message is not UTF-8 JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw protocolError('a message is not a JSON object');
  return value as Record<string, unknown>;
}

function protocolError(message: string): DispatcherError {
  return new DispatcherError('ERR_PROTOCOL_MESSAGE', message);
}

const isCount = (v: unknown, max: number): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= max;

function endpoint(value: unknown, name: string): Endpoint {
  const e = value as Endpoint | undefined;
  if (typeof e !== 'object' || e === null || typeof e.address !== 'string' || !Number.isInteger(e.port) || e.port < 0 || e.port > 65535) {
    throw protocolError(`"${name}" must be {"address": string, "port": 0-65535}`);
  }
  return { address: e.address, port: e.port };
}

/**
 * The binary header of version 3, BINARY_HEADER bytes before the payload, integers big-endian:
 *
 *   0      type: 1 datagram (daemon -> worker), 2 reply (worker -> daemon)
 *   1      the client's family, 4 or 6
 *   2      the local family, 4 or 6
 *   3      0
 *   4..5   the client's port
 *   6..7   the local port
 *   8..23  the client's address: 16 bytes, an IPv4 one in the first 4 (the rest 0)
 *   24..39 the local address, likewise
 *
 * A JSON message starts with "{" (or JSON white space), never with 1 or 2, so the two kinds never mix up.
 */
export const BINARY_HEADER = 40;
export const BINARY_DATAGRAM = 1;
export const BINARY_REPLY = 2;

/**
 * A binary datagram or reply in `out`'s memory: `type`, the endpoints as (family, 4 words, port) each, from
 * `r[c..c+5]` and `r[l..l+5]` (address blocks: records.ts), and `payload`.
 */
export function encodeBinary(
  out: Uint8Array,
  type: typeof BINARY_DATAGRAM | typeof BINARY_REPLY,
  r: ArrayLike<number>,
  c: number,
  l: number,
  payload: Uint8Array,
): Uint8Array {
  const view = new DataView(out.buffer, out.byteOffset, BINARY_HEADER);
  out[0] = type;
  out[1] = r[c] === 6 ? 6 : 4;
  out[2] = r[l] === 6 ? 6 : 4;
  out[3] = 0;
  view.setUint16(4, r[c + 5]!);
  view.setUint16(6, r[l + 5]!);
  for (let i = 0; i < 4; i++) {
    view.setUint32(8 + 4 * i, r[c + 1 + i]! >>> 0);
    view.setUint32(24 + 4 * i, r[l + 1 + i]! >>> 0);
  }
  out.set(payload, BINARY_HEADER);
  return out.subarray(0, BINARY_HEADER + payload.length);
}

function binaryEndpoint(view: DataView, family: number, at: number, port: number, name: string): BinaryEndpoint {
  if (family !== 4 && family !== 6) throw protocolError(`the binary header's ${name} family is ${family}, not 4 or 6`);
  const words = new Uint32Array(4);
  for (let i = 0; i < 4; i++) words[i] = view.getUint32(at + 4 * i);
  if (family === 4 && (words[1] !== 0 || words[2] !== 0 || words[3] !== 0))
    throw protocolError(`the binary header's ${name} address is IPv4 with bytes after its first 4`);
  // An IPv4-mapped IPv6 address is the IPv4 one, as parseAddress reads it in a JSON header.
  if (family === 6 && isIPv4Mapped(words)) return { family: 4, words: Uint32Array.of(words[3]!, 0, 0, 0), port };
  return { family, words, port };
}

/** A binary datagram or reply's header and payload, or ERR_PROTOCOL_MESSAGE naming what is wrong. */
export function decodeBinary(bytes: Uint8Array): BinaryDatagram | BinaryReply {
  if (bytes.length < BINARY_HEADER) throw protocolError(`a binary message is shorter than its ${BINARY_HEADER}-byte header`);
  const type = bytes[0];
  if (type !== BINARY_DATAGRAM && type !== BINARY_REPLY) throw protocolError(`unknown binary message type ${type}`);
  if (bytes[3] !== 0) throw protocolError("the binary header's byte 3 must be 0");
  const view = new DataView(bytes.buffer, bytes.byteOffset, BINARY_HEADER);
  const client = binaryEndpoint(view, bytes[1]!, 8, view.getUint16(4), 'client');
  const local = binaryEndpoint(view, bytes[2]!, 24, view.getUint16(6), 'local');
  return { type: type === BINARY_DATAGRAM ? 'binary-datagram' : 'binary-reply', client, local, payload: bytes.subarray(BINARY_HEADER) };
}

/** A binary reply to the binary datagram whose header is `datagram` (its endpoints, as they came), in `out`. */
export function encodeBinaryReply(out: Uint8Array, datagram: Uint8Array, payload: Uint8Array): Uint8Array {
  out.set(datagram.subarray(0, BINARY_HEADER));
  out[0] = BINARY_REPLY;
  out.set(payload, BINARY_HEADER);
  return out.subarray(0, BINARY_HEADER + payload.length);
}

/** Whether a message is binary: its first byte is a binary type, which no JSON text starts with. */
export const isBinary = (bytes: Uint8Array): boolean => bytes[0] === BINARY_DATAGRAM || bytes[0] === BINARY_REPLY;

/** What the daemon accepts from a worker. */
export function decodeWorkerMessage(bytes: Uint8Array): WorkerMessage {
  if (isBinary(bytes)) {
    const m = decodeBinary(bytes);
    if (m.type !== 'binary-reply') throw protocolError('a worker sends no binary datagram, only binary replies');
    return m;
  }
  const { header, payload } = split(bytes);
  const m = decodeObject(header);
  if (payload !== undefined && m['type'] !== 'reply') throw protocolError(`a "${String(m['type'])}" message has no payload`);
  switch (m['type']) {
    case 'reply':
      if (payload === undefined) throw protocolError('a reply needs a newline and its payload after the header');
      return { type: 'reply', client: endpoint(m['client'], 'client'), local: endpoint(m['local'], 'local'), payload };
    case 'register': {
      const version = m['version'];
      if (typeof version !== 'number' || !Number.isInteger(version) || version < MIN_PROTOCOL_VERSION) {
        throw new DispatcherError(
          'ERR_VERSION',
          `protocol version ${JSON.stringify(version)} is not supported (this daemon speaks ${MIN_PROTOCOL_VERSION}-${PROTOCOL_VERSION})`,
        );
      }
      const label = parseLabel(m['label']);
      const window = m['window'] ?? DEFAULT_WINDOW;
      if (!isCount(window, MAX_WINDOW)) throw protocolError(`"window" must be a whole number from 1 to ${MAX_WINDOW}`);
      return { type: 'register', version: Math.min(version, PROTOCOL_VERSION), label, window };
    }
    case 'ack':
      if (!isCount(m['count'], MAX_WINDOW)) throw protocolError(`"count" must be a whole number from 1 to ${MAX_WINDOW}`);
      return { type: 'ack', count: m['count'] };
    case 'drain':
      return { type: 'drain' };
    case 'reply-socket':
      return { type: 'reply-socket', local: endpoint(m['local'], 'local') };
    default:
      throw protocolError(`unknown message type ${JSON.stringify(m['type'])}`);
  }
}

/** What a worker accepts from the daemon. */
export function decodeDaemonMessage(bytes: Uint8Array): DaemonMessage {
  if (isBinary(bytes)) {
    const m = decodeBinary(bytes);
    if (m.type !== 'binary-datagram') throw protocolError('the daemon sends no binary reply, only binary datagrams');
    return m;
  }
  const { header, payload } = split(bytes);
  const m = decodeObject(header);
  switch (m['type']) {
    case 'datagram':
      return { ...(m as unknown as DatagramHeader), payload: payload ?? new Uint8Array(0) };
    case 'registered':
    case 'connection':
    case 'socket':
    case 'reply-socket':
    case 'drained':
    case 'error':
      return m as unknown as DaemonMessage;
    default:
      throw protocolError(`unknown message type ${JSON.stringify(m['type'])}`);
  }
}

const encoder = new TextEncoder();

/** A message without payload. */
export function encode(message: WorkerMessage | DaemonMessage): Uint8Array {
  return encoder.encode(JSON.stringify(message));
}

/** An addressed header up to its client's address. */
const addressedPrefix = (type: string, label: string, protocol: string): string =>
  `{"type":"${type}","label":"${label}","protocol":"${protocol}","client":{"address":"`;

/**
 * The header of a connection or datagram message. The hot-path messages are written by hand: a hand-off or
 * datagram runs once per connection or packet, and JSON.stringify of a nested object costs more than the
 * send. Labels and addresses need no escaping (their characters are restricted), so the result is the same
 * JSON.
 */
export function addressedHeader(
  type: 'connection' | 'datagram',
  label: string,
  protocol: string,
  client: string,
  clientPort: number,
  local: string,
  localPort: number,
): string {
  return `${addressedPrefix(type, label, protocol)}${client}","port":${clientPort}},"local":{"address":"${local}","port":${localPort}}}`;
}

/**
 * A connection header up to its client's address, which the addon completes per connection from the accept
 * record (sendConnections writes the addresses as formatAddress does): the same JSON as addressedHeader's,
 * with no text built per hand-off.
 */
export function connectionPrefix(label: string, protocol: string): Uint8Array {
  return encoder.encode(addressedPrefix('connection', label, protocol));
}

/** `header`, a newline and `payload` (a datagram or reply), in `out`'s memory. */
export function encodeWithPayload(out: Uint8Array, header: string, payload: Uint8Array): Uint8Array {
  const { written } = encoder.encodeInto(`${header}\n`, out);
  out.set(payload, written);
  return out.subarray(0, written + payload.length);
}

/** A reply: header, newline, payload, in `out`'s memory. The endpoints are the datagram's, as it came. */
export function encodeReply(out: Uint8Array, client: Endpoint, local: Endpoint, payload: Uint8Array): Uint8Array {
  const header = `{"type":"reply","client":{"address":"${client.address}","port":${client.port}},"local":{"address":"${local.address}","port":${local.port}}}`;
  return encodeWithPayload(out, header, payload);
}
