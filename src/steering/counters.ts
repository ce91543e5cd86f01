import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { type Protocol } from '../bindings/binding.js';
import { STEER_TABLE } from './ruleset.js';

/** What the kernel counted for a label and protocol: packets steered to its socket, and those its socket was missing for. */
export interface SteeredCounts {
  steered: number;
  missed: number;
}

export interface SteeringCounters {
  /** label -> protocol -> counts (both families summed). TCP counts connections (SYNs): established flows skip the maps. */
  labels: Record<string, Partial<Record<Protocol, SteeredCounts>>>;
  /** UDP datagrams a steered socket tried to send from an address or port its label is not bound to, dropped. */
  spoofed: number;
}

interface NftCounter {
  counter?: { name: string; packets: number };
}

const CHAIN_COUNTER = /^(steered|missed)_(tcp|udp)[46]_(.+)$/;

const execNft = promisify(execFile);

/** Reads the steering table's named counters (`nft -j list counters`): one process, no map elements listed. */
export async function readCounters(nft = 'nft'): Promise<SteeringCounters> {
  const { stdout } = await execNft(nft, ['-j', 'list', 'counters', 'table', 'inet', STEER_TABLE], { timeout: 10_000 });
  const out: SteeringCounters = { labels: {}, spoofed: 0 };
  for (const { counter } of (JSON.parse(stdout) as { nftables?: NftCounter[] }).nftables ?? []) {
    if (counter === undefined) continue;
    if (counter.name === 'spoofed') {
      out.spoofed = counter.packets;
      continue;
    }
    const m = CHAIN_COUNTER.exec(counter.name);
    if (m === null) continue;
    const counts = ((out.labels[m[3]!] ??= {})[m[2] as Protocol] ??= { steered: 0, missed: 0 });
    counts[m[1] as 'steered' | 'missed'] += counter.packets;
  }
  return out;
}
