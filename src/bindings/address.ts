import { isIPv4, isIPv6 } from 'node:net';
import ipaddr from 'ipaddr.js';
import { DispatcherError } from '../errors.js';

/**
 * An address as the table keys it: IPv4 as one 32-bit word, IPv6 as four, most significant first.
 * Keeping the families apart (rather than IPv4-mapped inside IPv6, as the design brief first said) means an
 * IPv6 binding such as `::/0` can never swallow IPv4 traffic, and IPv4 keys compare in one word.
 */
export type Family = 4 | 6;

export interface Address {
  readonly family: Family;
  readonly words: Uint32Array;
}

/**
 * Parses a textual address strictly (dotted quad for IPv4; no zone index). An IPv4-mapped IPv6 address, the
 * form a dual-stack socket reports IPv4 peers in, is returned as IPv4 unless `mapped` is 'refuse'.
 */
export function parseAddress(text: string, mapped: 'as-ipv4' | 'refuse' = 'as-ipv4'): Address {
  if (isIPv4(text)) return { family: 4, words: Uint32Array.of(ipv4ToWord(text)) };
  if (!isIPv6(text) || text.includes('%')) {
    throw new DispatcherError('ERR_ADDRESS', `"${text}" is not an IPv4 or IPv6 address`);
  }
  const v6 = ipaddr.IPv6.parse(text);
  if (v6.isIPv4MappedAddress()) {
    if (mapped === 'refuse') {
      throw new DispatcherError(
        'ERR_ADDRESS',
        `"${text}" is an IPv4-mapped IPv6 address; write it as IPv4 (${v6.toIPv4Address().toString()})`,
      );
    }
    const b = v6.toIPv4Address().octets;
    return { family: 4, words: Uint32Array.of(((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0) };
  }
  const p = v6.parts;
  const words = new Uint32Array(4);
  for (let i = 0; i < 4; i++) words[i] = ((p[2 * i]! << 16) | p[2 * i + 1]!) >>> 0;
  return { family: 6, words };
}

/** Fast path for the common case of a dotted quad already known to be valid. */
export function ipv4ToWord(text: string): number {
  let word = 0;
  let octet = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 46) {
      word = (word << 8) | octet;
      octet = 0;
    } else {
      octet = octet * 10 + (c - 48);
    }
  }
  return ((word << 8) | octet) >>> 0;
}

export function formatAddress(family: Family, words: ArrayLike<number>): string {
  if (family === 4) {
    const w = words[0]!;
    return `${w >>> 24}.${(w >>> 16) & 255}.${(w >>> 8) & 255}.${w & 255}`;
  }
  const parts: number[] = [];
  for (let i = 0; i < 4; i++) parts.push(words[i]! >>> 16, words[i]! & 0xffff);
  // ipaddr.js prints RFC 5952's canonical form (lower case, longest zero run compressed).
  return new ipaddr.IPv6(parts).toString();
}

export function familyBits(family: Family): number {
  return family === 4 ? 32 : 128;
}

/** Clears every bit after the first `length` bits, in place. */
export function maskWords(words: Uint32Array, length: number): Uint32Array {
  for (let i = 0; i < words.length; i++) {
    const keep = Math.min(Math.max(length - 32 * i, 0), 32);
    words[i] = keep === 0 ? 0 : (words[i]! & (0xffffffff << (32 - keep))) >>> 0;
  }
  return words;
}
