import { execFile } from 'node:child_process';
import { type Binding } from '../bindings/binding.js';
import { DispatcherError } from '../errors.js';

/**
 * tproxy mode's steering: an nftables table of the daemon's own, `inet dispatcher`, with one rule per
 * binding that sends matching traffic to the transparent listener of its protocol. Port 0 matches every
 * port, which is what makes port-0 bindings real in this mode.
 *
 *   table inet dispatcher {
 *     chain prerouting {
 *       type filter hook prerouting priority mangle; policy accept;
 *       ip daddr 198.51.100.0/24 tcp dport 443 tproxy ip to :41234 accept
 *       ip daddr 198.51.100.0/24 meta l4proto tcp tproxy ip to :41234 accept     # port 0
 *       ip6 daddr 2001:db8:1::/64 meta l4proto udp tproxy ip6 to :41235 accept
 *     }
 *   }
 *
 * Every change rewrites the whole table in one `nft -f` transaction (create-if-missing, delete, define),
 * so no packet sees half a rule set, and whatever a crashed daemon left is replaced. Rule order does not
 * matter: every rule leads to the same listener, and the daemon's table picks the label. Traffic no rule
 * matches is not touched. The bound prefixes must be local addresses (e.g. `ip route add local
 * 198.51.100.0/24 dev lo`), as with Tubular's sk_lookup.
 */
export const NFT_TABLE = 'dispatcher';

export interface TproxyPorts {
  tcp: number;
  udp: number;
}

export function renderRuleset(bindings: readonly Binding[], ports: TproxyPorts): string {
  const rules = bindings.map((b) => {
    const family = b.family === 4 ? 'ip' : 'ip6';
    const match = b.port === 0 ? `meta l4proto ${b.protocol}` : `${b.protocol} dport ${b.port}`;
    return `    ${family} daddr ${b.prefix} ${match} tproxy ${family} to :${ports[b.protocol]} accept`;
  });
  return [
    `table inet ${NFT_TABLE}`,
    `delete table inet ${NFT_TABLE}`,
    `table inet ${NFT_TABLE} {`,
    '  chain prerouting {',
    '    type filter hook prerouting priority mangle; policy accept;',
    ...rules,
    '  }',
    '}',
    '',
  ].join('\n');
}

export function removalRuleset(): string {
  return `table inet ${NFT_TABLE}\ndelete table inet ${NFT_TABLE}\n`;
}

/** Runs `nft -f -` with `ruleset`; a failure says what nft said, and what is likely missing. */
export function applyRuleset(ruleset: string, nft = 'nft'): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile(nft, ['-f', '-'], { timeout: 30_000 }, (err, _stdout, stderr) => {
      if (err === null) return resolve();
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ENOENT') {
        return reject(
          new DispatcherError('ERR_TPROXY', `tproxy mode needs the nft command, which is not installed (Debian: apt-get install nftables)`),
        );
      }
      const said = stderr.trim().split('\n').slice(0, 4).join(' / ');
      const hint = /Operation not permitted/i.test(said)
        ? ' (tproxy mode needs CAP_NET_ADMIN: run the daemon as root)'
        : /tproxy|No such file or directory|not supported/i.test(said)
          ? ' (the kernel may lack TPROXY for nftables: nft_tproxy, nf_tproxy_ipv4/ipv6)'
          : '';
      reject(new DispatcherError('ERR_TPROXY', `nft refused the rules: ${said || e.message}${hint}`));
    });
    child.stdin?.end(ruleset);
  });
}
