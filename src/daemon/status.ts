import { type ServicesResponse, type StatusResponse } from '../control/protocol.js';
import { type ListeningMode } from '../listener/mode.js';
import { type Metrics } from '../metrics/metrics.js';
import { type Policy } from '../registry/policy.js';
import { type Registry } from '../registry/registry.js';
import { type ChangeStore } from '../store/store.js';
import { VERSION } from '../version.js';

export interface StatusParts {
  store: ChangeStore;
  mode: ListeningMode;
  registry: Registry;
  policy: Policy;
  metrics: Metrics;
  startedAt: number;
  controlPath: string;
  servicesPath: string;
  queue: { timeout_ms: number; size: number };
  /** The daemon's options as its flags: `dispatcher upgrade` starts the new daemon with them. */
  flags: Record<string, string | string[]>;
}

/** GET /status: the daemon at a glance. */
export function status(p: StatusParts): StatusResponse {
  const all = p.store.table.bindings();
  const workers = p.registry.workers();
  return {
    version: VERSION,
    pid: process.pid,
    uptime_seconds: Math.round((Date.now() - p.startedAt) / 1000),
    mode: p.mode.name,
    control: p.controlPath,
    services: p.servicesPath,
    state_file: p.store.statePath,
    bindings: {
      total: all.length,
      tcp: all.filter((b) => b.protocol === 'tcp').length,
      udp: all.filter((b) => b.protocol === 'udp').length,
      labels: new Set(all.map((b) => b.label)).size,
    },
    listeners: p.mode.status(),
    upstreams: p.store.upstreams().length,
    workers: { total: workers.length, labels: new Set(workers.map((w) => w.label)).size },
    queued: p.registry.queued(),
    connections: { ...p.metrics.totals, by_label: p.metrics.byLabel() },
    queue: p.queue,
    allow: p.policy.toJSON(),
    flags: p.flags,
  };
}

/** GET /services: the registered workers and the connections waiting per label. */
export function services(registry: Registry): ServicesResponse {
  return {
    workers: registry
      .workers()
      .map((w) => ({ id: w.id, label: w.label, pid: w.pid, uid: w.uid, handoffs: w.handoffs, inflight: w.inflight, window: w.window })),
    queued: registry.queued(),
  };
}
