import { isIPv4, isIPv6 } from 'node:net';
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
  const words = ipv6ToWords(text);
  if (isIPv4Mapped(words)) {
    if (mapped === 'refuse') {
      const v4 = formatAddress(4, [words[3]!]);
      throw new DispatcherError('ERR_ADDRESS', `"${text}" is an IPv4-mapped IPv6 address; write it as IPv4 (${v4})`);
    }
    return { family: 4, words: Uint32Array.of(words[3]!) };
  }
  return { family: 6, words };
}

/** IPv6 words of the form ::ffff:a.b.c.d, the form a dual-stack socket gives an IPv4 peer in. */
export function isIPv4Mapped(words: ArrayLike<number>): boolean {
  return words[0] === 0 && words[1] === 0 && words[2] === 0xffff;
}

// Reused by ipv6ToWords: it runs synchronously, once per call.
const PARSED = new Uint16Array(8);

/**
 * The four words of IPv6 text that isIPv6 accepted (no zone): hex groups, one `::` at most, a dotted quad
 * as the last 32 bits. ipaddr.js did this at ~2.5 us an address, most of a large load's IPv6 cost; a
 * property test checks both give the same words.
 */
function ipv6ToWords(text: string): Uint32Array {
  const groups = PARSED;
  let n = 0;
  let gap = -1;
  let value = 0;
  let digits = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x3a) {
      if (digits > 0) groups[n++] = value;
      value = digits = 0;
      if (text.charCodeAt(i + 1) === 0x3a) {
        gap = n;
        i++;
      }
    } else if (c === 0x2e) {
      const quad = ipv4ToWord(text.slice(text.lastIndexOf(':') + 1));
      groups[n++] = quad >>> 16;
      groups[n++] = quad & 0xffff;
      digits = 0;
      break;
    } else {
      value = value * 16 + (c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x57);
      digits++;
    }
  }
  if (digits > 0) groups[n++] = value;
  const words = new Uint32Array(4);
  // Groups after the `::` go to the end; the ones it stands for stay zero.
  const shift = gap < 0 ? 0 : 8 - n;
  for (let g = 0; g < n; g++) {
    const at = gap >= 0 && g >= gap ? g + shift : g;
    words[at >> 1]! |= at & 1 ? groups[g]! : groups[g]! << 16;
  }
  return words;
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

// Reused by formatAddress: it runs synchronously, once per call.
const GROUPS = new Uint16Array(8);

export function formatAddress(family: Family, words: ArrayLike<number>): string {
  if (family === 4) {
    const w = words[0]!;
    return `${w >>> 24}.${(w >>> 16) & 255}.${(w >>> 8) & 255}.${w & 255}`;
  }
  // RFC 5952's canonical form by hand (lower case, no leading zeros, the first longest run of two or more
  // zero groups as "::"): ipaddr.js gives the same text (a property test checks) at twice the cost (about
  // 1,100 against 500 ns here), and this runs per hand-off and per steering element.
  const groups = GROUPS;
  for (let i = 0; i < 4; i++) {
    groups[2 * i] = words[i]! >>> 16;
    groups[2 * i + 1] = words[i]! & 0xffff;
  }
  let runAt = -1;
  let runLength = 1;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > runLength) [runAt, runLength] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  let text = '';
  for (let i = 0; i < 8; i++) {
    if (i === runAt) {
      text += '::';
      i += runLength - 1;
      continue;
    }
    if (text !== '' && !text.endsWith(':')) text += ':';
    text += groups[i]!.toString(16);
  }
  return text;
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
