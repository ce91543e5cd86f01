import { type Family } from '../bindings/address.js';
import { PROTOCOLS, type Protocol } from '../bindings/binding.js';
import { applyRuleset } from '../listener/nftables.js';
import { type CompiledTable, type Entry } from './compile.js';
import { renderElements, renderKey, renderMap } from './render.js';
import { compare, type Shard, SHARD_SIZE, shardEntries } from './shards.js';

/**
 * Kernel steering's ruleset: the compiled table (compile.ts) as interval maps, per protocol and family an
 * address map to shards (shards.ts) and a small (address . port) map per shard, whose verdicts jump to a
 * chain per label that hands the packet to that label's own transparent socket. One table of its own,
 * `inet dispatcher_steer`, apart from tproxy mode's `inet dispatcher`:
 *
 *   table inet dispatcher_steer {
 *     map tcp4.c6336400.24 { type ipv4_addr . inet_service : verdict; flags interval;
 *       elements = { 198.51.100.0-198.51.100.127 . 443 : jump tcp4_a, ... } }
 *     chain tcp4.c6336400.24 { ip daddr . tcp dport vmap @tcp4.c6336400.24 }
 *     map tcp4 { type ipv4_addr : verdict; flags interval; elements = { 198.51.100.0/24 : jump tcp4.c6336400.24 } }
 *     ... tcp6, udp4, udp6 alike
 *     chain tcp4_a { meta l4proto tcp tproxy ip to 127.0.0.1:40001 counter name "steered_tcp4_a" accept
 *                    counter name "missed_tcp4_a" }
 *     set udp4_own { type mark . ipv4_addr . inet_service; flags interval; elements = { 0xd1... . ... } }
 *     chain prerouting {
 *       type filter hook prerouting priority mangle; policy accept;
 *       meta l4proto tcp socket transparent 1 accept
 *       meta l4proto tcp ip daddr vmap @tcp4
 *       ...
 *     }
 *     chain output { ... meta mark . ip saddr . udp sport != @udp4_own counter name "spoofed" drop }
 *   }
 *
 * The rule list is fixed: only the maps grow with the bindings, so a packet costs one map lookup at any
 * table size (a lookup that itself grows with the map, slowly: docs/ARCHITECTURE.md). Established TCP
 * flows skip even that: their accepted socket is transparent (inherited from the listener), which `socket transparent 1` finds. No mark, unlike the TPROXY document's recipe: the mark
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
 * The output chain keeps workers from spoofing: see labelMark.
 *
 * The table is written whole in one `nft -f` transaction (create-if-missing, delete, define), as tproxy
 * mode does, and changed by one transaction of the elements and chains that differ: either way each packet
 * sees the old maps or the new ones, never a mix.
 */
export const STEER_TABLE = 'dispatcher_steer';

/** Where the kernel hands a label's packets: a transparent socket's address (127.0.0.1 or ::1 for the daemon's own) and port. */
export interface SocketAddress {
  address: string;
  port: number;
}

/** A label's transparent socket for a protocol and family, if it has one. */
export type SocketTargets = (label: string, protocol: Protocol, family: Family) => SocketAddress | undefined;

/**
 * A steered socket's SO_MARK, which what it sends carries: 0xd1 in the top byte, a 24-bit hash of the label
 * below. The output chain lets a marked UDP datagram leave only from an address and port bound to the mark's
 * label: a transparent socket may send from any address, and a worker must not gain that power. Labels
 * whose hashes collide may send from each other's addresses (one in 16.7 million per pair); nothing else.
 */
export function labelMark(label: string): number {
  // FNV-1a, 32 bits, folded to 24.
  let h = 0x811c9dc5;
  for (let i = 0; i < label.length; i++) h = Math.imul(h ^ label.charCodeAt(i), 0x01000193);
  return (MARK_TAG | ((h >>> 24) ^ (h & 0xffffff))) >>> 0;
}

const MARK_TAG = 0xd1000000;
const MARK_MASK = 0xff000000;

const FAMILIES: readonly Family[] = [4, 6];

/**
 * What the table holds, before it is text: per protocol and family the map's elements (those of labels
 * with a socket there), and each label chain's one rule. A full ruleset and an update are both drawn from it.
 */
export interface Steering {
  readonly spaces: readonly Space[];
  /** Chain name (`tcp4_web`) -> its rules. Each chain has two counters: `steered_tcp4_web`, `missed_tcp4_web`. */
  readonly chains: ReadonlyMap<string, string>;
}

interface Space {
  /** The map's name, `tcp4`; its chains are `tcp4_<label>`. */
  readonly name: string;
  readonly protocol: Protocol;
  readonly family: Family;
  /** The map's elements: those of labels with a socket. */
  readonly entries: readonly Entry[];
  /** The same, cut into shards by address (shards.ts). */
  readonly shards: readonly Shard[];
  /** Every entry: UDP's become the output set `udp4_own`, whatever has a socket now. */
  readonly all: readonly Entry[];
}

const owned = (space: Space): boolean => space.protocol === 'udp';
const ownSet = (space: Space): string => `${space.name}_own`;
const ownKey = (e: Entry, family: Family): string => `0x${labelMark(e.label).toString(16)} . ${renderKey(e, family)}`;

/** `shardSize`: entries per shard map (shards.ts; tests make it small to have many). */
export function planSteering(compiled: CompiledTable, sockets: SocketTargets, shardSize = SHARD_SIZE): Steering {
  const spaces: Space[] = [];
  const chains = new Map<string, string>();
  for (const protocol of PROTOCOLS) {
    for (const family of FAMILIES) {
      const name = `${protocol}${family}`;
      const targets = new Map<string, SocketAddress | undefined>();
      const targetOf = (label: string): SocketAddress | undefined => {
        if (!targets.has(label)) targets.set(label, sockets(label, protocol, family));
        return targets.get(label);
      };
      const all = compiled[protocol][family];
      const filtered = all.filter((e) => targetOf(e.label) !== undefined);
      // The compiled array itself when every label has a socket: an update skips a space it is the same in.
      const entries = filtered.length === all.length ? all : filtered;
      spaces.push({ name, protocol, family, entries, shards: shardEntries(name, family, entries, shardSize), all });
      for (const [label, target] of targets) {
        if (target === undefined) continue;
        const chain = `${name}_${label}`;
        const to = family === 4 ? `ip to ${target.address}:${target.port}` : `ip6 to [${target.address}]:${target.port}`;
        // When no transparent socket is there (an adopted server gone), tproxy ends the rule: the miss counts.
        chains.set(chain, `meta l4proto ${protocol} tproxy ${to} counter name "steered_${chain}" accept\n  counter name "missed_${chain}"`);
      }
    }
  }
  return { spaces, chains };
}

const jump = (space: Space) => (label: string) => `jump ${space.name}_${label}`;

/** The whole table, replacing whatever is there: for start-up, and when an update cannot apply. */
export function steeringRuleset(steering: Steering): string {
  const ip = (s: Space): string => (s.family === 4 ? 'ip' : 'ip6');
  const prerouting = [
    'chain prerouting {',
    '  type filter hook prerouting priority mangle; policy accept;',
    '  meta l4proto tcp socket transparent 1 accept',
    ...steering.spaces.map((s) => `  meta l4proto ${s.protocol} ${ip(s)} daddr vmap @${s.name}`),
    '}',
  ];
  const ownedSpaces = steering.spaces.filter(owned);
  const output = [
    'chain output {',
    '  type filter hook output priority filter; policy accept;',
    ...ownedSpaces.map(
      (s) =>
        `  meta mark & 0x${MARK_MASK.toString(16)} == 0x${MARK_TAG.toString(16)} meta l4proto ${s.protocol} meta mark . ${ip(s)} saddr . ${s.protocol} sport != @${ownSet(s)} counter name "spoofed" drop`,
    ),
    '}',
  ];
  // Counters and chains first: nft resolves a map element's `jump` against the chains declared before it.
  const body = [
    'counter spoofed {\n}',
    ...[...steering.chains.keys()].flatMap((name) => [`counter steered_${name} {\n}`, `counter missed_${name} {\n}`]),
    ...[...steering.chains].map(([name, rule]) => `chain ${name} {\n  ${rule}\n}`),
    // Each shard's map, then its chain (a rule names a map declared before it), then the address map.
    ...steering.spaces.flatMap((s) =>
      s.shards.flatMap((shard) => [
        renderMap(shard.name, s.family, shard.entries, jump(s)),
        `chain ${shard.name} {\n  ${shardRule(s, shard)}\n}`,
      ]),
    ),
    ...steering.spaces.map((s) => renderShardMap(s)),
    ...ownedSpaces.map((s) => renderOwnSet(s)),
    prerouting.join('\n'),
    output.join('\n'),
  ]
    .join('\n')
    .replace(/^/gm, '  ');
  return [`table inet ${STEER_TABLE}`, `delete table inet ${STEER_TABLE}`, `table inet ${STEER_TABLE} {`, body, '}', ''].join('\n');
}

const shardRule = (space: Space, shard: Shard): string =>
  `${space.family === 4 ? 'ip' : 'ip6'} daddr . ${space.protocol} dport vmap @${shard.name}`;

/** A space's address map: each shard's prefix to its chain. */
function renderShardMap(space: Space): string {
  const head = [`map ${space.name} {`, `  type ${space.family === 4 ? 'ipv4_addr' : 'ipv6_addr'} : verdict`, '  flags interval'];
  if (space.shards.length === 0) return [...head, '}'].join('\n');
  const elements = space.shards.map((shard) => `    ${shard.prefix} : jump ${shard.name}`).join(',\n');
  return [...head, '  elements = {', elements, '  }', '}'].join('\n');
}

/** The output set of a UDP space: (mark . address interval . port interval) of every entry. */
function renderOwnSet(space: Space): string {
  const head = [
    `set ${ownSet(space)} {`,
    `  type mark . ${space.family === 4 ? 'ipv4_addr' : 'ipv6_addr'} . inet_service`,
    '  flags interval',
  ];
  if (space.all.length === 0) return [...head, '}'].join('\n');
  const elements = space.all.map((e) => `    ${ownKey(e, space.family)}`).join(',\n');
  return [...head, '  elements = {', elements, '  }', '}'].join('\n');
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
    if (!from.chains.has(name)) lines.push(`add counter ${t} steered_${name}`, `add counter ${t} missed_${name}`, `add chain ${t} ${name}`);
    lines.push(`flush chain ${t} ${name}`, ...rule.split('\n').map((r) => `add rule ${t} ${name} ${r.trim()}`));
  }
  const goneShards: string[] = [];
  for (const [i, space] of to.spaces.entries()) {
    const before = from.spaces[i];
    if (before?.entries === space.entries && before.all === space.all) continue;
    const verdict = jump(space);
    const type = `${space.family === 4 ? 'ipv4_addr' : 'ipv6_addr'} . inet_service : verdict`;
    const old = new Map((before?.shards ?? []).map((shard) => [shard.name, shard]));
    const gonePrefixes: string[] = [];
    const newElements: string[] = [];
    for (const shard of space.shards) {
      const was = old.get(shard.name);
      old.delete(shard.name);
      if (was === undefined) {
        // A new shard: its map, its chain, then its place in the address map.
        lines.push(`add map ${t} ${shard.name} { type ${type}; flags interval; }`, `add chain ${t} ${shard.name}`);
        lines.push(`add rule ${t} ${shard.name} ${shardRule(space, shard)}`);
        newElements.push(`${shard.prefix} : jump ${shard.name}`);
      }
      const { gone, added } = changedEntries(was?.entries ?? [], shard.entries);
      const keys = gone.map((e) => renderKey(e, space.family));
      if (keys.length > 0) lines.push(`delete element ${t} ${shard.name} { ${keys.join(', ')} }`);
      if (added.length > 0)
        lines.push(`add element ${t} ${shard.name} { ${renderElements(added, space.family, verdict).replace(/\n/g, ' ')} }`);
    }
    for (const shard of old.values()) {
      gonePrefixes.push(shard.prefix);
      goneShards.push(shard.name);
    }
    if (gonePrefixes.length > 0) lines.push(`delete element ${t} ${space.name} { ${gonePrefixes.join(', ')} }`);
    if (newElements.length > 0) lines.push(`add element ${t} ${space.name} { ${newElements.join(', ')} }`);
    if (!owned(space)) continue;
    const own = changedEntries(from.spaces[i]?.all ?? [], space.all);
    if (own.gone.length > 0)
      lines.push(`delete element ${t} ${ownSet(space)} { ${own.gone.map((e) => ownKey(e, space.family)).join(', ')} }`);
    if (own.added.length > 0)
      lines.push(`add element ${t} ${ownSet(space)} { ${own.added.map((e) => ownKey(e, space.family)).join(', ')} }`);
  }
  // Out of the address map already: a shard's chain goes before its map (the chain's rule names the map).
  for (const name of goneShards) lines.push(`delete chain ${t} ${name}`, `delete map ${t} ${name}`);
  for (const name of from.chains.keys())
    if (!to.chains.has(name))
      lines.push(`delete chain ${t} ${name}`, `delete counter ${t} steered_${name}`, `delete counter ${t} missed_${name}`);
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
    const order = a === undefined ? 1 : b === undefined ? -1 : compare(a.addrLo, b.addrLo) || a.portLo - b.portLo;
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

function sameEntry(a: Entry, b: Entry): boolean {
  return a.label === b.label && a.portHi === b.portHi && compare(a.addrHi, b.addrHi) === 0;
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
