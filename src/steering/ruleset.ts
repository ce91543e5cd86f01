import { type Family } from '../bindings/address.js';
import { PROTOCOLS, type Protocol } from '../bindings/binding.js';
import { applyRuleset } from '../listener/nftables.js';
import { type CompiledTable } from './compile.js';
import { renderMap } from './render.js';

/**
 * Kernel steering's ruleset: the compiled table (compile.ts) as four interval maps, one per protocol and
 * family, whose verdicts jump to a chain per label that hands the packet to that label's own transparent
 * socket. One table of its own, `inet dispatcher_steer`, apart from tproxy mode's `inet dispatcher`:
 *
 *   table inet dispatcher_steer {
 *     map tcp4 { type ipv4_addr . inet_service : verdict; flags interval;
 *       elements = { 198.51.100.0-198.51.100.127 . 443 : jump tcp4_a, ... } }
 *     map tcp6 { ... }  map udp4 { ... }  map udp6 { ... }
 *     chain tcp4_a { meta l4proto tcp tproxy ip to 127.0.0.1:40001 accept }
 *     chain tcp6_a { meta l4proto tcp tproxy ip6 to [::1]:40002 accept }
 *     chain prerouting {
 *       type filter hook prerouting priority mangle; policy accept;
 *       meta l4proto tcp socket transparent 1 accept
 *       ip daddr . tcp dport vmap @tcp4
 *       ...
 *     }
 *   }
 *
 * The rule list is fixed: only the maps grow with the bindings, so a packet's cost is one map lookup at any
 * table size. Established TCP flows skip even that: their accepted socket is transparent (inherited from
 * the listener), which `socket transparent 1` finds. No mark, unlike the TPROXY document's recipe: the mark
 * only feeds the policy route that makes non-local destinations local, and bound prefixes are local already
 * (AnyIP routes). UDP has no established socket to find, and a lookup there would let a transparent reply
 * socket bound to a dialled address (tproxy mode opens those) take datagrams meant for the label's socket.
 *
 * A label's sockets are bound to loopback (127.0.0.1, ::1), one per protocol and family: `tproxy to` names
 * that exact address, and nothing from outside can reach a loopback socket without the rules. A wildcard
 * socket would also take plain connections to its port on every local address, covered by a binding or not.
 * A label with no socket for a protocol and family gets no chain, and its elements are left out: its
 * traffic is a miss, untouched, as is traffic no element covers.
 *
 * Every change replaces the whole table in one `nft -f` transaction (create-if-missing, delete, define), as
 * tproxy mode does, so each packet sees the old maps or the new ones, never a mix.
 */
export const STEER_TABLE = 'dispatcher_steer';

/** The port of a label's transparent socket for a protocol and family (bound to 127.0.0.1 or ::1), if it has one. */
export type SocketPorts = (label: string, protocol: Protocol, family: Family) => number | undefined;

const FAMILIES: readonly Family[] = [4, 6];

export function steeringRuleset(compiled: CompiledTable, sockets: SocketPorts): string {
  const maps: string[] = [];
  const chains: string[] = [];
  const lookups: string[] = [];
  for (const protocol of PROTOCOLS) {
    for (const family of FAMILIES) {
      const space = `${protocol}${family}`;
      const entries = compiled[protocol][family];
      const ports = new Map<string, number | undefined>();
      const portOf = (label: string): number | undefined => {
        if (!ports.has(label)) ports.set(label, sockets(label, protocol, family));
        return ports.get(label);
      };
      const steered = entries.filter((e) => portOf(e.label) !== undefined);
      maps.push(renderMap(space, family, steered, (label) => `jump ${space}_${label}`));
      for (const [label, port] of ports) {
        if (port === undefined) continue;
        const to = family === 4 ? `ip to 127.0.0.1:${port}` : `ip6 to [::1]:${port}`;
        chains.push(`chain ${space}_${label} {\n  meta l4proto ${protocol} tproxy ${to} accept\n}`);
      }
      lookups.push(`${family === 4 ? 'ip' : 'ip6'} daddr . ${protocol} dport vmap @${space}`);
    }
  }
  const prerouting = [
    'chain prerouting {',
    '  type filter hook prerouting priority mangle; policy accept;',
    '  meta l4proto tcp socket transparent 1 accept',
    ...lookups.map((l) => `  ${l}`),
    '}',
  ];
  // Chains first: nft resolves a map element's `jump` against the chains declared before it.
  const body = [...chains, ...maps, prerouting.join('\n')].join('\n').replace(/^/gm, '  ');
  return [`table inet ${STEER_TABLE}`, `delete table inet ${STEER_TABLE}`, `table inet ${STEER_TABLE} {`, body, '}', ''].join('\n');
}

/** Removes the table, whether it exists or not: a clean stop. */
export function steeringRemoval(): string {
  return `table inet ${STEER_TABLE}\ndelete table inet ${STEER_TABLE}\n`;
}

/** Replaces the steering table in one transaction. `nft`: the command (tests run it in a namespace). */
export function applySteering(compiled: CompiledTable, sockets: SocketPorts, nft?: string): Promise<void> {
  return applyRuleset(steeringRuleset(compiled, sockets), nft);
}

export function removeSteering(nft?: string): Promise<void> {
  return applyRuleset(steeringRemoval(), nft);
}
