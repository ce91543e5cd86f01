import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { type Protocol } from '../bindings/binding.js';

const counter = <L extends string>(registry: Registry, name: string, help: string, labelNames: L[]): Counter<L> =>
  new Counter({ name, help, labelNames, registers: [registry] });
const gauge = <L extends string>(registry: Registry, name: string, help: string, labelNames: L[]): Gauge<L> =>
  new Gauge({ name, help, labelNames, registers: [registry] });
const histogram = <L extends string>(registry: Registry, name: string, help: string, labelNames: L[], buckets: number[]): Histogram<L> =>
  new Histogram({ name, help, labelNames, buckets, registers: [registry] });

interface Children {
  labels: { protocol: string; label: string };
  counts: LabelCounts;
  /** dispatcher_handoffs_total's tally (counts.handoffs also counts datagrams and relays, for status). */
  handoffs: number;
  latency: { observe(value: number): void };
}

export interface LabelCounts {
  lookups: number;
  handoffs: number;
  resets: number;
}

/** A label and protocol's packets steered to its socket, and those its socket was missing for. */
export interface SteeredCounts {
  steered: number;
  missed: number;
}

/**
 * What the kernel counted in kernel mode (read by steering/counters.ts): per label and protocol, packets
 * steered to its socket and those its socket was missing for; and UDP a steered socket tried to spoof.
 */
export interface SteeringCounters {
  /** label -> protocol -> counts. */
  labels: Record<string, Partial<Record<Protocol, SteeredCounts>>>;
  /** UDP datagrams a steered socket tried to send from an address or port its label is not bound to, dropped. */
  spoofed: number;
}

/** What the metrics read of a daemon that follows a fleet's store (fleet/member.ts's status has these). */
export interface StoreGauges {
  connected: boolean;
  /** When `connected` last changed (ISO 8601). */
  since: string;
  revision: number;
  store_revision: number;
  lag_seconds: number;
}

export type RefusalReason = 'not_allowed' | 'too_many' | 'protocol' | 'version';

export type ResetReason = 'no_worker' | 'queue_full' | 'queue_timeout' | 'proxy_full';
export type UpstreamFailure = 'connect' | 'timeout' | 'relay';

/**
 * The daemon's counters, exported as Prometheus text (`--metrics HOST:PORT`) and summed up in `status`.
 * prom-client looks a labelled child up by hashing its label values on every call (0.3 µs an increment):
 * the per-connection counters are plain tallies in a map the accept path keeps, handed to prom-client
 * when /metrics is read.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly #children = new Map<string, Children>();
  readonly #resets = counter(
    this.registry,
    'dispatcher_resets_total',
    'Connections reset for want of a worker (no_worker: none registered and the queue is off; queue_full; queue_timeout; proxy_full: proxy mode at its relay limit)',
    ['protocol', 'label', 'reason'],
  );
  readonly #misses = counter(this.registry, 'dispatcher_misses_total', 'Connections no binding received (reset)', ['protocol']);
  readonly #queued = gauge(this.registry, 'dispatcher_queue_depth', 'Connections waiting for a worker', ['label']);
  readonly #latency = histogram(
    this.registry,
    'dispatcher_handoff_latency_seconds',
    'From accept to the hand-off',
    ['label'],
    [0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5],
  );
  // By reason only: a label is whatever the refused peer asked for, and one series per label asked would
  // let any local user grow /metrics (and the daemon's memory) without bound.
  readonly #refused = counter(
    this.registry,
    'dispatcher_registrations_refused_total',
    'Services connections refused (not_allowed; too_many: unregistered connections over the limit; protocol; version)',
    ['reason'],
  );
  readonly #datagrams = counter(this.registry, 'dispatcher_datagrams_total', 'UDP datagrams handed to a worker', ['label']);
  readonly #dropped = counter(
    this.registry,
    'dispatcher_datagrams_dropped_total',
    'UDP datagrams dropped (no_worker; full: the worker socket buffer was full; truncated)',
    ['label', 'reason'],
  );
  readonly #replies = counter(
    this.registry,
    'dispatcher_replies_total',
    'UDP replies from workers (result: sent; not_bound: from an address the label is not bound to; failed)',
    ['label', 'result'],
  );
  readonly #proxied = counter(this.registry, 'dispatcher_proxied_total', 'Connections relayed to an upstream (proxy mode)', ['label']);
  readonly #proxyActive = gauge(this.registry, 'dispatcher_proxy_active', 'Relayed connections open now', ['label']);
  readonly #upstreamFailures = counter(
    this.registry,
    'dispatcher_upstream_failures_total',
    'Connections reset because the upstream refused (connect), did not accept in time (timeout), or no relay could be made (relay: out of descriptors)',
    ['label', 'reason'],
  );
  readonly #workers = gauge(this.registry, 'dispatcher_workers', 'Registered workers', ['label']);
  readonly totals = {
    lookups: 0,
    handoffs: 0,
    misses: 0,
    resets: 0,
    refused: 0,
    datagrams: 0,
    dropped: 0,
    replies: 0,
    replies_refused: 0,
    proxied: 0,
    proxy_active: 0,
    upstream_failures: 0,
  };

  constructor() {
    this.#tallied('dispatcher_lookups_total', 'Connections looked up that a binding received', (c) => c.counts.lookups);
    this.#tallied('dispatcher_handoffs_total', 'Connections handed to a worker', (c) => c.handoffs);
  }

  #child(protocol: string, label: string): Children {
    const key = `${protocol} ${label}`;
    let c = this.#children.get(key);
    if (c === undefined) {
      c = {
        labels: { protocol, label },
        counts: { lookups: 0, handoffs: 0, resets: 0 },
        handoffs: 0,
        latency: this.#latency.labels(label),
      };
      this.#children.set(key, c);
    }
    return c;
  }

  lookup(protocol: string, label: string): void {
    this.totals.lookups++;
    const c = this.#child(protocol, label);
    c.counts.lookups++;
  }

  handoff(protocol: string, label: string, seconds: number): void {
    this.totals.handoffs++;
    const c = this.#child(protocol, label);
    c.counts.handoffs++;
    c.handoffs++;
    c.latency.observe(seconds);
  }

  /** A per-protocol-and-label counter whose values are the children's tallies, read at each scrape. */
  #tallied(name: string, help: string, tally: (c: Children) => number): void {
    const children = this.#children;
    new Counter({
      name,
      help,
      labelNames: ['protocol', 'label'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const c of children.values()) if (tally(c) > 0) this.inc(c.labels, tally(c));
      },
    });
  }

  miss(protocol: string): void {
    this.totals.misses++;
    this.#misses.labels(protocol).inc();
  }

  reset(protocol: string, label: string, reason: ResetReason): void {
    this.totals.resets++;
    this.#child(protocol, label).counts.resets++;
    this.#resets.labels(protocol, label, reason).inc();
  }

  /** Per "protocol label": what `status` shows at a glance. */
  byLabel(): Record<string, LabelCounts> {
    return Object.fromEntries([...this.#children].map(([key, c]) => [key, { ...c.counts }]));
  }

  datagram(label: string): void {
    this.totals.datagrams++;
    this.#child('udp', label).counts.handoffs++;
    this.#datagrams.labels(label).inc();
  }

  dropped(label: string, reason: 'no_worker' | 'full' | 'truncated'): void {
    this.totals.dropped++;
    this.#dropped.labels(label, reason).inc();
  }

  reply(label: string, result: 'sent' | 'not_bound' | 'failed'): void {
    if (result === 'sent') this.totals.replies++;
    else if (result === 'not_bound') this.totals.replies_refused++;
    this.#replies.labels(label, result).inc();
  }

  proxyOpened(label: string): void {
    this.totals.proxied++;
    this.totals.proxy_active++;
    this.#child('tcp', label).counts.handoffs++;
    this.#proxied.labels(label).inc();
    this.#proxyActive.labels(label).inc();
  }

  proxyClosed(label: string): void {
    this.totals.proxy_active--;
    this.#proxyActive.labels(label).dec();
  }

  upstreamFailed(label: string, reason: UpstreamFailure): void {
    this.totals.upstream_failures++;
    this.#child('tcp', label).counts.resets++;
    this.#upstreamFailures.labels(label, reason).inc();
  }

  queueDepth(label: string, depth: number): void {
    this.#queued.labels(label).set(depth);
  }

  workers(label: string, count: number): void {
    this.#workers.labels(label).set(count);
  }

  refused(reason: RefusalReason): void {
    this.totals.refused++;
    this.#refused.labels(reason).inc();
  }

  /**
   * Kernel steering's counters, read from the kernel at each scrape (one `nft` run serves all three
   * series): TCP connections and UDP datagrams steered per label, those whose socket was missing, and UDP
   * a steered socket tried to send from an address its label is not bound to.
   */
  steeringFrom(read: () => Promise<SteeringCounters>): void {
    let scrape: Promise<SteeringCounters | undefined> | undefined;
    const once = (): Promise<SteeringCounters | undefined> =>
      (scrape ??= read()
        .catch(() => undefined)
        .finally(() => setImmediate(() => (scrape = undefined))));
    const perLabel = (name: string, help: string, field: 'steered' | 'missed'): void => {
      new Counter({
        name,
        help,
        labelNames: ['label', 'protocol'],
        registers: [this.registry],
        async collect() {
          const counters = await once();
          this.reset();
          for (const [label, protocols] of Object.entries(counters?.labels ?? {}))
            for (const [protocol, counts] of Object.entries(protocols)) this.inc({ label, protocol }, counts[field]);
        },
      });
    };
    perLabel('dispatcher_steered_total', 'Kernel mode: TCP connections (SYNs) and UDP datagrams steered to a label socket', 'steered');
    perLabel(
      'dispatcher_steer_missed_total',
      'Kernel mode: packets a binding covered whose label socket was missing (left untouched)',
      'missed',
    );
    new Counter({
      name: 'dispatcher_steer_spoofed_total',
      help: 'Kernel mode: UDP datagrams a steered socket tried to send from an address or port its label is not bound to (dropped)',
      registers: [this.registry],
      async collect() {
        const counters = await once();
        this.reset();
        this.inc(counters?.spoofed ?? 0);
      },
    });
  }

  /** A store's follower: read at each scrape. */
  storeFrom(read: () => StoreGauges): void {
    const gauges: [string, string, (g: StoreGauges) => number][] = [
      [
        'dispatcher_store_connected',
        "1 while the daemon is connected to the fleet's store (etcd), 0 while it serves its last revision without it",
        (g) => Number(g.connected),
      ],
      [
        'dispatcher_store_connected_change_seconds',
        'When dispatcher_store_connected last changed (Unix time)',
        (g) => Date.parse(g.since) / 1000,
      ],
      ['dispatcher_store_revision', "The store's revision this daemon serves", (g) => g.revision],
      ['dispatcher_store_latest_revision', 'The newest revision of the store this daemon has heard of', (g) => g.store_revision],
      [
        'dispatcher_store_lag_seconds',
        'Seconds since the store has had a revision this daemon does not serve yet (0: current)',
        (g) => g.lag_seconds,
      ],
    ];
    for (const [name, help, value] of gauges)
      new Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.set(value(read()));
        },
      });
  }
}
