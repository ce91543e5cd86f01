import { DispatcherError } from '../errors.js';
import { type Family, familyBits, formatAddress, maskWords, parseAddress } from './address.js';

export type Protocol = 'tcp' | 'udp';
export const PROTOCOLS: readonly Protocol[] = ['tcp', 'udp'];

/** The JSON shape of a binding, as the control API and `--json` output give it. */
export interface BindingJSON {
  label: string;
  protocol: Protocol;
  prefix: string;
  port: number;
}

const LABEL = /^[A-Za-z0-9._-]{1,64}$/;

/**
 * `(protocol, prefix, port) -> label`. A daemon may hold a million of these, so each is six fields: the
 * label, the protocol, family, length and port packed in one small integer (four fields of their own cost
 * 24 bytes more per binding), and the prefix as four int32 fields rather than an array (a typed array per
 * binding would cost more than the binding itself).
 */
export class Binding {
  readonly label: string;
  // bit 0: udp; bit 1: IPv6; bits 2-9: length; bits 10-25: port.
  readonly #meta: number;
  readonly #w0: number;
  readonly #w1: number;
  readonly #w2: number;
  readonly #w3: number;

  constructor(label: string, protocol: Protocol, family: Family, words: ArrayLike<number>, length: number, port: number) {
    this.label = label;
    this.#meta = (protocol === 'tcp' ? 0 : 1) | (family === 4 ? 0 : 2) | (length << 2) | (port << 10);
    this.#w0 = words[0]! | 0;
    this.#w1 = family === 6 ? words[1]! | 0 : 0;
    this.#w2 = family === 6 ? words[2]! | 0 : 0;
    this.#w3 = family === 6 ? words[3]! | 0 : 0;
  }

  get protocol(): Protocol {
    return (this.#meta & 1) === 0 ? 'tcp' : 'udp';
  }

  get family(): Family {
    return (this.#meta & 2) === 0 ? 4 : 6;
  }

  /** Prefix length in bits. */
  get length(): number {
    return (this.#meta >>> 2) & 255;
  }

  /** 0 means every port. */
  get port(): number {
    return this.#meta >>> 10;
  }

  /** Word `i` of the (masked) prefix address, unsigned. */
  word(i: number): number {
    return (i === 0 ? this.#w0 : i === 1 ? this.#w1 : i === 2 ? this.#w2 : this.#w3) >>> 0;
  }

  get prefix(): string {
    return `${formatAddress(this.family, [this.word(0), this.word(1), this.word(2), this.word(3)])}/${this.length}`;
  }

  /**
   * The binding's identity, (protocol, family, prefix words, length, port), whatever its label: the one
   * definition every duplicate check compares. The family is part of it because an IPv4 and an IPv6 prefix
   * can have equal words and length (`0.0.0.0/0` and `::/0`, `10.0.0.0/8` and `a00::/8`).
   */
  key(): string {
    return `${this.protocol} ${this.family} ${this.#w0} ${this.#w1} ${this.#w2} ${this.#w3} ${this.length} ${this.port}`;
  }

  /** True when both name the same (protocol, prefix, port), whatever their labels. */
  sameKey(other: Binding): boolean {
    return this.key() === other.key();
  }

  withLabel(label: string): Binding {
    return new Binding(label, this.protocol, this.family, [this.word(0), this.word(1), this.word(2), this.word(3)], this.length, this.port);
  }

  toJSON(): BindingJSON {
    return { label: this.label, protocol: this.protocol, prefix: this.prefix, port: this.port };
  }

  toString(): string {
    return `${this.protocol} ${this.prefix} port ${this.port === 0 ? '0 (every port)' : this.port} -> ${this.label}`;
  }
}

export function parseLabel(value: unknown): string {
  if (typeof value !== 'string' || !LABEL.test(value)) {
    throw new DispatcherError('ERR_LABEL', `label ${show(value)} is not 1-64 characters of A-Z a-z 0-9 . _ -`);
  }
  return value;
}

export function parseProtocol(value: unknown): Protocol {
  if (value !== 'tcp' && value !== 'udp') {
    throw new DispatcherError('ERR_PROTOCOL', `protocol ${show(value)} is not "tcp" or "udp"`);
  }
  return value;
}

/** A port in JSON: an integer 0-65535. */
export function parsePort(value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 65535) throw portError(value);
  return value;
}

/** A port from a command line or query string: decimal digits only. */
export function parsePortText(value: unknown): number {
  const n = typeof value === 'string' && /^[0-9]{1,5}$/.test(value) ? Number(value) : NaN;
  if (!(n <= 65535)) throw portError(value);
  return n;
}

function portError(value: unknown): DispatcherError {
  return new DispatcherError('ERR_PORT', `port ${show(value)} is not a whole number from 0 to 65535 (0 means every port)`);
}

export interface Prefix {
  readonly family: Family;
  readonly words: Uint32Array;
  readonly length: number;
}

/** `addr` or `addr/len`; host bits are cleared, so `127.0.0.1/24` becomes `127.0.0.0/24`. */
export function parsePrefix(value: unknown): Prefix {
  if (typeof value !== 'string') {
    throw new DispatcherError('ERR_PREFIX', `prefix ${show(value)} is not a string such as 192.0.2.0/24 or 2001:db8::/32`);
  }
  const slash = value.indexOf('/');
  const addressText = slash === -1 ? value : value.slice(0, slash);
  let address;
  try {
    address = parseAddress(addressText, 'refuse');
  } catch (err) {
    throw new DispatcherError('ERR_PREFIX', `prefix ${show(value)}: ${(err as Error).message}`);
  }
  const max = familyBits(address.family);
  let length = max;
  if (slash !== -1) {
    const lengthText = value.slice(slash + 1);
    length = /^[0-9]{1,3}$/.test(lengthText) ? Number(lengthText) : NaN;
    if (!(length >= 0 && length <= max)) {
      throw new DispatcherError('ERR_PREFIX', `prefix ${show(value)}: mask "/${lengthText}" is not a length from 0 to ${max}`);
    }
  }
  return { family: address.family, words: maskWords(address.words, length), length };
}

export interface BindingInput {
  label: unknown;
  protocol: unknown;
  prefix: unknown;
  port: unknown;
}

/** Validates every field; the first that is wrong is named in the error. */
export function parseBinding(input: BindingInput): Binding {
  const label = parseLabel(input.label);
  const protocol = parseProtocol(input.protocol);
  const prefix = parsePrefix(input.prefix);
  const port = parsePort(input.port);
  return new Binding(label, protocol, prefix.family, prefix.words, prefix.length, port);
}

export function show(value: unknown): string {
  if (value === undefined) return '(missing)';
  let text: string;
  try {
    // undefined for a function or symbol: their type says enough.
    text = JSON.stringify(value) ?? typeof value;
  } catch {
    // Nested deeper than JSON.stringify's stack (a hostile request): say what it is, not what it holds.
    text = Array.isArray(value) ? '[...] (nested too deeply to show)' : '{...} (nested too deeply to show)';
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/** What removing `binding` removes: `existing`, the binding of its key, which must carry its label. */
export function removalOf(existing: Binding | undefined, binding: Binding): Binding {
  if (existing === undefined)
    throw new DispatcherError('ERR_NO_BINDING', `no binding for ${binding.protocol} ${binding.prefix} port ${binding.port}`);
  if (existing.label !== binding.label) {
    throw new DispatcherError(
      'ERR_LABEL_MISMATCH',
      `${binding.protocol} ${binding.prefix} port ${binding.port} is bound to "${existing.label}", not "${binding.label}"`,
    );
  }
  return existing;
}
