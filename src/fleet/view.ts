import { type EtcdBindings } from '../store/etcd.js';
import { knownDir, presenceDir } from '../store/etcd-layout.js';
import { type PresenceRecord } from './presence.js';

/**
 * A host as `dispatcher fleet` shows it. current: serves the store's latest revision; stale: an older one
 * (catching up, or stuck: see health); failing: reports a problem; missing: joined once, and has no
 * presence now (stopped, dead, or cut off from etcd for longer than its lease).
 */
export interface FleetHost {
  host: string;
  state: 'current' | 'stale' | 'failing' | 'missing';
  /** Revisions behind the store; null when missing. */
  lag: number | null;
  record: PresenceRecord | null;
}

export interface FleetResponse {
  /** The revision of the store's last change to bindings or upstreams: what a current host serves. */
  revision: number;
  hosts: FleetHost[];
}

/** Every host that ever joined, with its presence (if any). */
export async function readFleet(store: EtcdBindings): Promise<FleetResponse> {
  const [revision, live, known] = await Promise.all([
    store.liveRevision(),
    store.client.getAll().prefix(presenceDir(store.prefix)).strings(),
    store.client.getAll().prefix(knownDir(store.prefix)).keys(),
  ]);
  const records = new Map<string, PresenceRecord>();
  for (const [key, text] of Object.entries(live)) {
    try {
      const record = JSON.parse(text) as PresenceRecord;
      if (typeof record.revision === 'number') records.set(key.slice(presenceDir(store.prefix).length), record);
    } catch {
      // Not a record this version writes: the host shows as missing rather than the listing failing.
    }
  }
  const names = new Set([...known.map((k) => k.slice(knownDir(store.prefix).length)), ...records.keys()]);
  const hosts = [...names].sort().map((host): FleetHost => {
    const record = records.get(host) ?? null;
    if (record === null) return { host, state: 'missing', lag: null, record };
    const lag = Math.max(0, revision - record.revision);
    return { host, state: record.health !== 'ok' ? 'failing' : lag > 0 ? 'stale' : 'current', lag, record };
  });
  return { revision, hosts };
}

/** The live hosts that do not serve `revision` yet (a missing host is not waited for: it serves nothing). */
export function notServing(fleet: FleetResponse, revision: number): FleetHost[] {
  return fleet.hosts.filter((h) => h.record !== null && h.record.revision < revision);
}
