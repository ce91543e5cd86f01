import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { type Protocol } from '../bindings/binding.js';
import { type SteeringCounters } from '../metrics/metrics.js';
import { STEER_TABLE } from './ruleset.js';

// The shape is the metrics' (metrics/metrics.ts): TCP counts connections (SYNs), since established flows
// skip the maps; both families are summed.
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
