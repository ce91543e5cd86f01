import { type Family, formatAddress } from '../bindings/address.js';
import { type Entry } from './compile.js';

/**
 * The entries as nftables interval map elements, one a line, comma-separated:
 * `198.51.100.0-198.51.100.127 . 443 : jump to_a`. A single address or port is written alone.
 * `verdict` names what a label's traffic does (`jump <chain>`); the caller owns the chain names.
 */
export function renderElements(entries: readonly Entry[], family: Family, verdict: (label: string) => string): string {
  return writeElements(entries, family, verdict, '');
}

/** An element's key alone, `198.51.100.0-198.51.100.127 . 443`: what `delete element` names. */
export function renderKey(e: Entry, family: Family): string {
  const text = new Text(KEY_BYTES[family]);
  text.key(e, family);
  return text.toString();
}

/** A whole map declaration (for inside a `table inet ... { }`); an empty map has no elements clause. */
export function renderMap(name: string, family: Family, entries: readonly Entry[], verdict: (label: string) => string): string {
  const head = [`map ${name} {`, `  type ${family === 4 ? 'ipv4_addr' : 'ipv6_addr'} . inet_service : verdict`, '  flags interval'];
  if (entries.length === 0) return [...head, '}'].join('\n');
  return [...head, '  elements = {', writeElements(entries, family, verdict, '    '), '  }', '}'].join('\n');
}

/** The longest key: two addresses, a dash, ` . ` and a port range (`65535-65535`). */
const KEY_BYTES: Record<Family, number> = { 4: 2 * 15 + 1 + 3 + 11, 6: 2 * 39 + 1 + 3 + 11 };

/**
 * The elements, each line starting with `indent`. Written as bytes into one buffer and read back as one
 * string: at 100,000 bindings (about 217,000 elements) joining template strings, a few per element, cost
 * 0.55-0.8 s of CPU, mostly allocating and collecting them; the bytes take 0.25-0.3 s (same runs).
 */
function writeElements(entries: readonly Entry[], family: Family, verdict: (label: string) => string, indent: string): string {
  if (entries.length === 0) return '';
  // Each label's ` : <verdict>,\n<indent>` once, as bytes: a table has far fewer labels than elements.
  const tails = new Map<string, Buffer>();
  let longest = 0;
  for (const e of entries) {
    if (tails.has(e.label)) continue;
    const tail = Buffer.from(` : ${verdict(e.label)},\n${indent}`);
    tails.set(e.label, tail);
    longest = Math.max(longest, tail.length);
  }
  const text = new Text(indent.length + entries.length * (KEY_BYTES[family] + longest));
  text.ascii(indent);
  for (const e of entries) {
    text.key(e, family);
    text.bytes(tails.get(e.label)!);
  }
  // The last element has no comma, and no line after it.
  return text.toString(2 + indent.length);
}

/** Text written as bytes, into a buffer its writer sized for all of it. */
class Text {
  private readonly buffer: Buffer;
  private at = 0;

  constructor(capacity: number) {
    this.buffer = Buffer.allocUnsafe(capacity);
  }

  /** All of it, but the last `trim` bytes. */
  toString(trim = 0): string {
    return this.buffer.toString('utf8', 0, this.at - trim);
  }

  bytes(b: Uint8Array): void {
    this.buffer.set(b, this.at);
    this.at += b.length;
  }

  /** Short ASCII text (an address, an indent): a byte at a time costs less than Buffer.write's call. */
  ascii(s: string): void {
    for (let i = 0; i < s.length; i++) this.buffer[this.at++] = s.charCodeAt(i);
  }

  /** A port (0-65535) in decimal, digit by digit: String(n) would make a string per port. */
  decimal(n: number): void {
    const digits = n < 10 ? 1 : n < 100 ? 2 : n < 1000 ? 3 : n < 10000 ? 4 : 5;
    this.at += digits;
    for (let i = this.at - 1; i >= this.at - digits; i--) {
      this.buffer[i] = 0x30 + (n % 10);
      n = (n / 10) | 0;
    }
  }

  /** `198.51.100.0-198.51.100.127 . 443`: a single address or port alone. */
  key(e: Entry, family: Family): void {
    this.ascii(formatAddress(family, e.addrLo));
    if (!sameWords(e.addrLo, e.addrHi)) {
      this.buffer[this.at++] = 0x2d;
      this.ascii(formatAddress(family, e.addrHi));
    }
    this.ascii(' . ');
    this.decimal(e.portLo);
    if (e.portHi !== e.portLo) {
      this.buffer[this.at++] = 0x2d;
      this.decimal(e.portHi);
    }
  }
}

function sameWords(a: readonly number[], b: readonly number[]): boolean {
  return a.every((w, i) => w === b[i]);
}
