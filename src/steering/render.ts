import { type Family, formatAddress } from '../bindings/address.js';
import { type Entry } from './compile.js';

/**
 * The entries as nftables interval map elements, one a line, comma-separated:
 * `198.51.100.0-198.51.100.127 . 443 : jump to_a`. A single address or port is written alone.
 * `verdict` names what a label's traffic does (`jump <chain>`); the caller owns the chain names.
 */
export function renderElements(entries: readonly Entry[], family: Family, verdict: (label: string) => string): string {
  return entries.map((e) => `${renderKey(e, family)} : ${verdict(e.label)}`).join(',\n');
}

/** An element's key alone, `198.51.100.0-198.51.100.127 . 443`: what `delete element` names. */
export function renderKey(e: Entry, family: Family): string {
  const first = formatAddress(family, e.addrLo);
  const addresses = sameWords(e.addrLo, e.addrHi) ? first : `${first}-${formatAddress(family, e.addrHi)}`;
  return `${addresses} . ${e.portLo === e.portHi ? e.portLo : `${e.portLo}-${e.portHi}`}`;
}

/** A whole map declaration (for inside a `table inet ... { }`); an empty map has no elements clause. */
export function renderMap(name: string, family: Family, entries: readonly Entry[], verdict: (label: string) => string): string {
  const head = [`map ${name} {`, `  type ${family === 4 ? 'ipv4_addr' : 'ipv6_addr'} . inet_service : verdict`, '  flags interval'];
  if (entries.length === 0) return [...head, '}'].join('\n');
  const elements = renderElements(entries, family, verdict).replace(/^/gm, '    ');
  return [...head, '  elements = {', elements, '  }', '}'].join('\n');
}

function sameWords(a: readonly number[], b: readonly number[]): boolean {
  return a.every((w, i) => w === b[i]);
}
