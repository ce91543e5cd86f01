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
 *   daemon -> worker   {"type":"registered","version":2,"label":"web","worker":7,"window":64}
 *                      {"type":"connection",...} + the descriptor (SCM_RIGHTS)
 *                      {"type":"datagram",...} \n payload                            (UDP)
 *                      {"type":"socket","label":"web","protocol":"tcp","family":4} + the descriptor (v2)
 *                      {"type":"reply-socket","local":{...}} + the descriptor, or with "error" (v2)
 *                      {"type":"drained"}
 *                      {"type":"error","code":"ERR_NOT_ALLOWED","message":"..."}  (then the daemon closes)
 *
 * A datagram or reply is the JSON header, a newline, and the payload's bytes, in one message. Version 2 is
 * version 1 and kernel steering: the daemon gives a worker its label's own steered sockets to accept and
 * receive on, and UDP sockets to reply from. The daemon answers a register with the lower of the worker's
 * version and its own, and speaks that version to it.
 */
export const PROTOCOL_VERSION = 2;
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

export type WorkerMessage =
  | { type: 'register'; version: number; label: string; window: number }
  | { type: 'ack'; count: number }
  | { type: 'drain' }
  | (ReplyHeader & { payload: Uint8Array })
  | { type: 'reply-socket'; local: Endpoint };

export type DaemonMessage =
  | { type: 'registered'; version: number; label: string; worker: number; window: number }
  | ConnectionHeader
  | (DatagramHeader & { payload: Uint8Array })
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

/** What the daemon accepts from a worker. */
export function decodeWorkerMessage(bytes: Uint8Array): WorkerMessage {
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
  return `{"type":"${type}","label":"${label}","protocol":"${protocol}","client":{"address":"${client}","port":${clientPort}},"local":{"address":"${local}","port":${localPort}}}`;
}

/** `header` alone (a connection's), in `out`'s memory. */
export function encodeHeader(out: Uint8Array, header: string): Uint8Array {
  return out.subarray(0, encoder.encodeInto(header, out).written);
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
