import { type Family } from '../bindings/address.js';
import { PROTOCOLS, type Protocol } from '../bindings/binding.js';
import { applyRuleset } from '../listener/nftables.js';
import { type CompiledTable, type Entry } from './compile.js';
import { renderElements, renderKey, renderMap } from './render.js';

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
 * The rule list is fixed: only the maps grow with the bindings, so a packet costs one map lookup at any
 * table size (a lookup that itself grows with the map, slowly: docs/ARCHITECTURE.md). Established TCP flows skip even that: their accepted socket is transparent (inherited from
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
 * The table is written whole in one `nft -f` transaction (create-if-missing, delete, define), as tproxy
 * mode does, and changed by one transaction of the elements and chains that differ: either way each packet
 * sees the old maps or the new ones, never a mix.
 */
export const STEER_TABLE = 'dispatcher_steer';

/** The port of a label's transparent socket for a protocol and family (bound to 127.0.0.1 or ::1), if it has one. */
export type SocketPorts = (label: string, protocol: Protocol, family: Family) => number | undefined;

const FAMILIES: readonly Family[] = [4, 6];

/**
 * What the table holds, before it is text: per protocol and family the map's elements (those of labels
 * with a socket there), and each label chain's one rule. A full ruleset and an update are both drawn from it.
 */
export interface Steering {
  readonly spaces: readonly Space[];
  /** Chain name (`tcp4_web`) -> its rule. */
  readonly chains: ReadonlyMap<string, string>;
}

interface Space {
  /** The map's name, `tcp4`; its chains are `tcp4_<label>`. */
  readonly name: string;
  readonly protocol: Protocol;
  readonly family: Family;
  readonly entries: readonly Entry[];
}

export function planSteering(compiled: CompiledTable, sockets: SocketPorts): Steering {
  const spaces: Space[] = [];
  const chains = new Map<string, string>();
  for (const protocol of PROTOCOLS) {
    for (const family of FAMILIES) {
      const name = `${protocol}${family}`;
      const ports = new Map<string, number | undefined>();
      const portOf = (label: string): number | undefined => {
        if (!ports.has(label)) ports.set(label, sockets(label, protocol, family));
        return ports.get(label);
      };
      spaces.push({ name, protocol, family, entries: compiled[protocol][family].filter((e) => portOf(e.label) !== undefined) });
      for (const [label, port] of ports) {
        if (port === undefined) continue;
        const to = family === 4 ? `ip to 127.0.0.1:${port}` : `ip6 to [::1]:${port}`;
        chains.set(`${name}_${label}`, `meta l4proto ${protocol} tproxy ${to} accept`);
      }
    }
  }
  return { spaces, chains };
}

const jump = (space: Space) => (label: string) => `jump ${space.name}_${label}`;

/** The whole table, replacing whatever is there: for start-up, and when an update cannot apply. */
export function steeringRuleset(steering: Steering): string {
  const prerouting = [
    'chain prerouting {',
    '  type filter hook prerouting priority mangle; policy accept;',
    '  meta l4proto tcp socket transparent 1 accept',
    ...steering.spaces.map((s) => `  ${s.family === 4 ? 'ip' : 'ip6'} daddr . ${s.protocol} dport vmap @${s.name}`),
    '}',
  ];
  // Chains first: nft resolves a map element's `jump` against the chains declared before it.
  const body = [
    ...[...steering.chains].map(([name, rule]) => `chain ${name} {\n  ${rule}\n}`),
    ...steering.spaces.map((s) => renderMap(s.name, s.family, s.entries, jump(s))),
    prerouting.join('\n'),
  ]
    .join('\n')
    .replace(/^/gm, '  ');
  return [`table inet ${STEER_TABLE}`, `delete table inet ${STEER_TABLE}`, `table inet ${STEER_TABLE} {`, body, '}', ''].join('\n');
}

/**
 * The one transaction that turns the table `from` describes into `to`: new chains, then the elements that
 * went or changed label deleted and the new ones added, then the chains no longer used deleted. nft
 * rebuilds a concatenated interval map from the whole element list, and the kernel its lookup structure,
 * so a full ruleset costs seconds at 100,000 bindings; an update costs what changed. Empty when nothing did.
 */
export function steeringUpdate(from: Steering, to: Steering): string {
  const t = `inet ${STEER_TABLE}`;
  const lines: string[] = [];
  for (const [name, rule] of to.chains) {
    if (from.chains.get(name) === rule) continue;
    if (!from.chains.has(name)) lines.push(`add chain ${t} ${name}`);
    lines.push(`flush chain ${t} ${name}`, `add rule ${t} ${name} ${rule}`);
  }
  for (const [i, space] of to.spaces.entries()) {
    const verdict = jump(space);
    const { gone, added } = changedEntries(from.spaces[i]?.entries ?? [], space.entries);
    const keys = gone.map((e) => renderKey(e, space.family));
    if (keys.length > 0) lines.push(`delete element ${t} ${space.name} { ${keys.join(', ')} }`);
    if (added.length > 0)
      lines.push(`add element ${t} ${space.name} { ${renderElements(added, space.family, verdict).replace(/\n/g, ' ')} }`);
  }
  for (const name of from.chains.keys()) if (!to.chains.has(name)) lines.push(`delete chain ${t} ${name}`);
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

/**
 * The entries of `before` not in `after` (by key and label) and those of `after` not in `before`. Both are
 * sorted by first address then first port (compile.ts), and disjoint, so one merge walk finds them without
 * rendering the unchanged ones: at 100,000 bindings nearly all of them.
 */
function changedEntries(before: readonly Entry[], after: readonly Entry[]): { gone: Entry[]; added: Entry[] } {
  const gone: Entry[] = [];
  const added: Entry[] = [];
  let i = 0;
  let j = 0;
  while (i < before.length || j < after.length) {
    const a = before[i];
    const b = after[j];
    const order = a === undefined ? 1 : b === undefined ? -1 : compareWords(a.addrLo, b.addrLo) || a.portLo - b.portLo;
    if (order < 0) gone.push(before[i++]!);
    else if (order > 0) added.push(after[j++]!);
    else {
      if (!sameEntry(a!, b!)) {
        gone.push(a!);
        added.push(b!);
      }
      i++;
      j++;
    }
  }
  return { gone, added };
}

function compareWords(a: readonly number[], b: readonly number[]): number {
  // Unsigned, as the entries are ordered.
  for (let k = 0; k < a.length; k++) if (a[k] !== b[k]) return (a[k]! >>> 0) - (b[k]! >>> 0);
  return 0;
}

function sameEntry(a: Entry, b: Entry): boolean {
  return a.label === b.label && a.portHi === b.portHi && compareWords(a.addrHi, b.addrHi) === 0;
}

/** Removes the table, whether it exists or not: a clean stop. */
export function steeringRemoval(): string {
  return `table inet ${STEER_TABLE}\ndelete table inet ${STEER_TABLE}\n`;
}

/** Replaces the steering table in one transaction. `nft`: the command (tests run it in a namespace). */
export function applySteering(steering: Steering, nft?: string): Promise<void> {
  return applyRuleset(steeringRuleset(steering), nft);
}

/**
 * Moves the applied table from `from` to `to` in one transaction of what changed. If the kernel's table is
 * not `from` (someone changed it, a daemon restarted), nft refuses the update as a whole, and the whole
 * table is replaced instead.
 */
export async function updateSteering(from: Steering, to: Steering, nft?: string): Promise<'updated' | 'replaced' | 'unchanged'> {
  const update = steeringUpdate(from, to);
  if (update === '') return 'unchanged';
  try {
    await applyRuleset(update, nft);
    return 'updated';
  } catch {
    await applySteering(to, nft);
    return 'replaced';
  }
}

export function removeSteering(nft?: string): Promise<void> {
  return applyRuleset(steeringRemoval(), nft);
}
