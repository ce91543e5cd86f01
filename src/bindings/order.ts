import { type Binding, parsePrefix, type Prefix } from './binding.js';

/**
 * The order `bind list` prints: tcp before udp, IPv4 before IPv6, a longer prefix before a shorter one that
 * contains it, then by address, then port ascending with 0 last, then label.
 *
 * "Longer before the shorter that contains it, then by address" is the order of the prefixes' last
 * addresses, longest first among equals: a contained prefix never ends after its container, and
 * disjoint prefixes end in the order they start. So one key gives a total order.
 */
export function compareForList(a: Binding, b: Binding): number {
  if (a.protocol !== b.protocol) return a.protocol === 'tcp' ? -1 : 1;
  if (a.family !== b.family) return a.family - b.family;
  const words = a.family === 4 ? 1 : 4;
  for (let i = 0; i < words; i++) {
    const x = lastWord(a, i);
    const y = lastWord(b, i);
    if (x !== y) return x < y ? -1 : 1;
  }
  if (a.length !== b.length) return b.length - a.length;
  if (a.port !== b.port) return a.port === 0 ? 1 : b.port === 0 ? -1 : a.port - b.port;
  return a.label < b.label ? -1 : a.label > b.label ? 1 : 0;
}

function lastWord(b: Binding, i: number): number {
  const hostBits = Math.min(Math.max(32 * (i + 1) - b.length, 0), 32);
  return (b.word(i) | (hostBits === 32 ? 0xffffffff : (1 << hostBits) - 1)) >>> 0;
}

export interface Filter {
  label?: string | undefined;
  protocol?: string | undefined;
  /** Keeps bindings whose prefix lies within this one. */
  prefix?: string | undefined;
  port?: number | undefined;
}

/** A predicate for `bind list`'s filters, which combine; the prefix filter is parsed (and checked) once. */
export function bindingFilter(filter: Filter): (b: Binding) => boolean {
  const within: Prefix | undefined = filter.prefix === undefined ? undefined : parsePrefix(filter.prefix);
  return (b) =>
    (filter.label === undefined || b.label === filter.label) &&
    (filter.protocol === undefined || b.protocol === filter.protocol) &&
    (filter.port === undefined || b.port === filter.port) &&
    (within === undefined || contains(within, b));
}

function contains(outer: Prefix, b: Binding): boolean {
  if (outer.family !== b.family || b.length < outer.length) return false;
  for (let i = 0; i < outer.words.length; i++) {
    const bits = Math.min(Math.max(outer.length - 32 * i, 0), 32);
    if (bits === 0) break;
    const mask = bits === 32 ? 0xffffffff : ~(0xffffffff >>> bits);
    if ((b.word(i) & mask) >>> 0 !== (outer.words[i]! & mask) >>> 0) return false;
  }
  return true;
}
