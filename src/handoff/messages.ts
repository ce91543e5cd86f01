import { parseLabel } from '../bindings/binding.js';
import { DispatcherError } from '../errors.js';

/**
 * The services protocol (docs/services-protocol.md): one JSON object per SOCK_SEQPACKET message, so a
 * message is never split or merged and a hand-off's descriptor always arrives with its own header.
 *
 *   worker -> daemon   {"type":"register","version":1,"label":"web","window":64}
 *                      {"type":"ack","count":3}
 *                      {"type":"drain"}
 *   daemon -> worker   {"type":"registered","version":1,"label":"web","worker":7,"window":64}
 *                      {"type":"connection",...} + the descriptor (SCM_RIGHTS)
 *                      {"type":"drained"}
 *                      {"type":"error","code":"ERR_NOT_ALLOWED","message":"..."}  (then the daemon closes)
 */
export const PROTOCOL_VERSION = 1;
/** No message is longer; a longer one is a protocol error. */
export const MAX_MESSAGE = 4096;
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

export type WorkerMessage =
  | { type: 'register'; version: number; label: string; window: number }
  | { type: 'ack'; count: number }
  | { type: 'drain' };

export type DaemonMessage =
  | { type: 'registered'; version: number; label: string; worker: number; window: number }
  | ConnectionHeader
  | { type: 'drained' }
  | { type: 'error'; code: string; message: string };

const decoder = new TextDecoder('utf-8', { fatal: true });

/** A message's JSON object, or ERR_PROTOCOL_MESSAGE naming what is wrong with it. */
function decodeObject(bytes: Uint8Array): Record<string, unknown> {
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

/** What the daemon accepts from a worker. */
export function decodeWorkerMessage(bytes: Uint8Array): WorkerMessage {
  const m = decodeObject(bytes);
  switch (m['type']) {
    case 'register': {
      if (m['version'] !== PROTOCOL_VERSION) {
        throw new DispatcherError('ERR_VERSION', `protocol version ${JSON.stringify(m['version'])} is not supported (this daemon speaks ${PROTOCOL_VERSION})`);
      }
      const label = parseLabel(m['label']);
      const window = m['window'] ?? DEFAULT_WINDOW;
      if (!isCount(window, MAX_WINDOW)) throw protocolError(`"window" must be a whole number from 1 to ${MAX_WINDOW}`);
      return { type: 'register', version: PROTOCOL_VERSION, label, window };
    }
    case 'ack':
      if (!isCount(m['count'], MAX_WINDOW)) throw protocolError(`"count" must be a whole number from 1 to ${MAX_WINDOW}`);
      return { type: 'ack', count: m['count'] };
    case 'drain':
      return { type: 'drain' };
    default:
      throw protocolError(`unknown message type ${JSON.stringify(m['type'])}`);
  }
}

/** What a worker accepts from the daemon. */
export function decodeDaemonMessage(bytes: Uint8Array): DaemonMessage {
  const m = decodeObject(bytes);
  switch (m['type']) {
    case 'registered':
    case 'connection':
    case 'drained':
    case 'error':
      return m as unknown as DaemonMessage;
    default:
      throw protocolError(`unknown message type ${JSON.stringify(m['type'])}`);
  }
}

const encoder = new TextEncoder();

export function encode(message: WorkerMessage | DaemonMessage): Uint8Array {
  return encoder.encode(JSON.stringify(message));
}

/**
 * A connection header, written by hand: the hand-off path runs once per connection and JSON.stringify of
 * a nested object costs more than the send. Labels and addresses need no escaping (their characters are
 * restricted), so the result is the same JSON.
 */
export function encodeConnection(out: Uint8Array, label: string, protocol: string, client: string, clientPort: number, local: string, localPort: number): Uint8Array {
  const text = `{"type":"connection","label":"${label}","protocol":"${protocol}","client":{"address":"${client}","port":${clientPort}},"local":{"address":"${local}","port":${localPort}}}`;
  const { written } = encoder.encodeInto(text, out);
  return out.subarray(0, written);
}
