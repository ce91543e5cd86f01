import { type Logger } from 'pino';
import { type Binding } from '../bindings/binding.js';
import { DispatcherError } from '../errors.js';
import { type Upstream } from '../proxy/upstream.js';
import { EtcdBindings, type EtcdOptions, layered, type Scope, type Snapshot } from '../store/etcd.js';
import { type LoadedState } from '../store/state-file.js';
import { type ChangeStore, type StoreUpdate } from '../store/store.js';
import { type Diff } from '../table/table.js';
import { VERSION } from '../version.js';
import { Presence, type PresenceRecord } from './presence.js';
import { type FleetResponse, readFleet } from './view.js';
import { FleetWriter, readView, type ScopeView } from './writes.js';

/** `status.store`: how this daemon follows the fleet's store. */
export interface StoreStatus {
  url: string;
  host: string;
  connected: boolean;
  /** When `connected` last changed (ISO 8601). */
  since: string;
  /** The store's revision this daemon serves, and the newest it has heard of. */
  revision: number;
  store_revision: number;
  /** Seconds since the store first had a revision this daemon does not serve yet; 0 when current. */
  lag_seconds: number;
  /** What went wrong last (a read or an apply), while it is still wrong. */
  error: string | null;
}

/** How a write through the daemon names its target: another host's set, and the revision it was based on. */
export interface WriteOptions {
  host?: string | undefined;
  ifRevision?: number | undefined;
}

export interface MemberOptions {
  etcd: EtcdOptions;
  /** The --store URL as given. */
  url: string;
  host: string;
  log: Logger;
}

export interface FollowOptions {
  store: ChangeStore;
  /** The record's description of this daemon, asked at each publish. */
  describe: () => Pick<PresenceRecord, 'mode' | 'bindings' | 'workers'>;
  /** After each revision applied (it may have changed nothing here: another host's set). */
  onApplied: () => void;
}

// A daemon starting waits this long for the store before it serves its cache.
const FIRST_READ_MS = 5_000;
// A write through the daemon answers once the daemon serves it, or after this long with a warning.
const APPLY_WAIT_MS = 10_000;
// An apply that failed (rules refused, the disk) is tried again so long after, if nothing newer came.
const REAPPLY_MS = 5_000;
// Changed keys applied one by one up to this many; more, and the table is built whole.
const INCREMENTAL_MAX = 256;

/**
 * A daemon in a fleet: its table follows the store (global set, this host's set layered over it), each
 * revision applied whole and in order; it says in `status` and in the store (presence) what it serves; and
 * it writes control requests to the store, answering once it serves them.
 */
export class FleetMember {
  readonly url: string;
  readonly host: string;
  readonly #bindings: EtcdBindings;
  readonly #writer: FleetWriter;
  readonly #presence: Presence;
  readonly #log: Logger;
  #follow: FollowOptions | undefined;
  #watch: { close(): Promise<void> } | undefined;
  #connected = false;
  #since = Date.now();
  #connectedSince = new Date();
  #served = 0;
  #heard = 0;
  #behindSince: number | undefined;
  #error: string | null = null;
  #latest: Snapshot | undefined;
  #first: Snapshot | undefined;
  #uncached = false;
  // Keys changed since the revision served (undefined: unknown, the whole set is applied next).
  #pending: Map<string, Binding> | undefined;
  #applying = false;
  #reapply: NodeJS.Timeout | undefined;
  #waiters: { revision: number; done: () => void }[] = [];

  private constructor(options: MemberOptions, bindings: EtcdBindings) {
    this.url = options.url;
    this.host = options.host;
    this.#log = options.log.child({ store: options.url });
    this.#bindings = bindings;
    this.#writer = new FleetWriter(bindings, (scope) => this.#view(scope));
    this.#presence = new Presence(bindings.client, bindings.prefix, options.host, this.#log);
  }

  /** The member, with the store's current set if etcd answers within FIRST_READ_MS (see `startFrom`). */
  static async open(options: MemberOptions): Promise<FleetMember> {
    const bindings = await EtcdBindings.connect({ ...options.etcd, host: options.host, lazy: true });
    const member = new FleetMember(options, bindings);
    const first = await Promise.race([
      bindings.read().catch((err: Error) => err),
      new Promise<Error>((resolve) => setTimeout(() => resolve(new Error(`no answer in ${FIRST_READ_MS} ms`)), FIRST_READ_MS).unref()),
    ]);
    if (first instanceof Error) member.#error = first.message;
    else {
      member.#markConnected(true);
      member.#first = first;
    }
    return member;
  }

  /**
   * What the daemon starts from: the store's set as read by `open`, or else the state file (`cached`),
   * which is the cache of the last revision served.
   */
  startFrom(cached: LoadedState): LoadedState {
    const first = this.#first;
    this.#first = undefined;
    if (first !== undefined) {
      this.#served = this.#heard = first.revision;
      this.#uncached = true;
      return { bindings: first.bindings, upstreams: first.upstreams, refused: [], origin: this.#origin(first.revision) };
    }
    const fromHere = cached.origin?.store === this.url;
    this.#log.warn(
      { err: this.#error, cached: cached.origin },
      fromHere
        ? `etcd did not answer: serving the cached revision ${cached.origin!.revision} until it does`
        : 'etcd did not answer and the state file is not a cache of this store: serving it until etcd answers',
    );
    if (fromHere) this.#served = this.#heard = cached.origin!.revision;
    return cached;
  }

  /** From now on the daemon's table follows the store. */
  follow(options: FollowOptions): void {
    this.#follow = options;
    // Started from the store: its cache is written now, or a restart while etcd is away would serve an older
    // one (or none) until the first change came.
    if (this.#uncached) options.store.cacheNow();
    this.#uncached = false;
    options.store.onCacheProblem = () => this.#publish();
    // A watch from the revision served: etcd replays what came after it (compacted, or none served: a full read).
    this.#watch = this.#bindings.watch(this.#served, (s) => this.#offer(s), {
      onError: (err) => this.#failed(err.message),
      onConnection: (up) => this.#markConnected(up),
    });
    this.#publish();
  }

  status(): StoreStatus {
    return {
      url: this.url,
      host: this.host,
      connected: this.#connected,
      since: new Date(this.#since).toISOString(),
      revision: this.#served,
      store_revision: Math.max(this.#heard, this.#served),
      lag_seconds: this.#behindSince === undefined ? 0 : (Date.now() - this.#behindSince) / 1000,
      error: this.#problem(),
    };
  }

  /** The fleet as the store shows it. */
  fleet(): Promise<FleetResponse> {
    return readFleet(this.#bindings);
  }

  /** Stops following; with etcd away this takes at most a second or two, never a stop's whole timeout. */
  async close(handedOver = false): Promise<void> {
    clearTimeout(this.#reapply);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all([this.#watch?.close().catch(() => undefined), this.#presence.close(handedOver)]),
      new Promise((resolve) => (timer = setTimeout(resolve, 2_000))),
    ]);
    clearTimeout(timer);
    for (const w of this.#waiters.splice(0)) w.done();
    this.#bindings.close();
  }

  // Writes: to the store, answered once this daemon serves them (if they are in its sets).

  async add(
    binding: Binding,
    w: WriteOptions,
  ): Promise<{ binding: Binding; replaced: Binding | undefined; warnings: string[]; revision: number }> {
    const scope = this.#scope(w.host);
    const { replaced, revision } = await this.#writer.add(scope, binding, w.ifRevision);
    return { binding, replaced, warnings: await this.#untilServed(scope, revision), revision };
  }

  async remove(binding: Binding, w: WriteOptions): Promise<{ removed: Binding; revision: number }> {
    const scope = this.#scope(w.host);
    const { removed, revision } = await this.#writer.remove(scope, binding, w.ifRevision);
    await this.#untilServed(scope, revision);
    return { removed, revision };
  }

  async replace(bindings: Binding[], dryRun: boolean, w: WriteOptions): Promise<Diff & { warnings: string[]; revision: number }> {
    const scope = this.#scope(w.host);
    const diff = await this.#writer.replace(scope, bindings, dryRun, w.ifRevision);
    const warnings = dryRun ? [] : await this.#untilServed(scope, diff.revision);
    return { ...diff, warnings };
  }

  async setUpstream(
    upstream: Upstream,
    w: WriteOptions,
  ): Promise<{ upstream: Upstream; replaced: Upstream | undefined; revision: number }> {
    const { replaced, revision } = await this.#writer.setUpstream(upstream, this.#global(w).ifRevision);
    await this.#untilServed('global', revision);
    return { upstream, replaced, revision };
  }

  async removeUpstream(label: string, w: WriteOptions): Promise<{ removed: Upstream; revision: number }> {
    const { removed, revision } = await this.#writer.removeUpstream(label, this.#global(w).ifRevision);
    await this.#untilServed('global', revision);
    return { removed, revision };
  }

  #global(w: WriteOptions): WriteOptions {
    if (w.host !== undefined) throw new DispatcherError('ERR_USAGE', 'upstreams are global: --host does not apply to them');
    return w;
  }

  #scope(host: string | undefined): Scope {
    return host === undefined ? 'global' : { host };
  }

  /** This daemon's own sets are checked against what it follows; another host's are read. */
  async #view(scope: Scope): Promise<ScopeView> {
    const own = scope === 'global' ? 0 : scope.host === this.host ? 1 : -1;
    const latest = this.#latest;
    if (own === -1 || latest === undefined) return readView(this.#bindings)(scope);
    return { revision: latest.revision, bindings: latest.scopes[own]! };
  }

  /** Waits until this daemon serves `revision` if the change is in its sets; warnings if it does not in time. */
  async #untilServed(scope: Scope, revision: number): Promise<string[]> {
    if (scope !== 'global' && scope.host !== this.host) return [];
    if (this.#served >= revision) return [];
    let timer: NodeJS.Timeout | undefined;
    const served = await Promise.race([
      new Promise<boolean>((resolve) => this.#waiters.push({ revision, done: () => resolve(true) })),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), APPLY_WAIT_MS))),
    ]);
    clearTimeout(timer);
    if (served) return this.#error === null ? [] : [`this daemon: ${this.#error}`];
    return [`the store has it at revision ${revision}; this daemon does not serve it yet (${this.#error ?? 'still applying'})`];
  }

  #origin(revision: number): { store: string; revision: number } {
    return { store: this.url, revision };
  }

  /** A snapshot from the watch: the latest wins, one apply at a time; what the skipped ones changed adds up. */
  #offer(snapshot: Snapshot): void {
    this.#latest = snapshot;
    if (snapshot.changed === undefined) this.#pending = undefined;
    else if (this.#pending !== undefined) for (const [id, key] of snapshot.changed) this.#pending.set(id, key);
    this.#heard = Math.max(this.#heard, snapshot.revision);
    if (this.#served < snapshot.revision) this.#behindSince ??= Date.now();
    void this.#apply();
  }

  async #apply(): Promise<void> {
    const follow = this.#follow;
    if (this.#applying || follow === undefined) return;
    const snapshot = this.#latest;
    if (snapshot === undefined || snapshot.revision <= this.#served) return;
    this.#applying = true;
    clearTimeout(this.#reapply);
    // Past a few hundred keys, one build of the whole table costs less than that many copies of a group.
    const pending = this.#pending !== undefined && this.#pending.size <= INCREMENTAL_MAX ? this.#pending : undefined;
    this.#pending = new Map();
    const update: StoreUpdate =
      pending === undefined
        ? snapshot
        : { upstreams: snapshot.upstreams, changes: [...pending].map(([id, key]) => ({ key, binding: layered(snapshot, id) })) };
    try {
      await follow.store.apply(update, this.#origin(snapshot.revision));
      this.#served = snapshot.revision;
      this.#error = null;
      if (this.#heard <= this.#served) this.#behindSince = undefined;
      for (const w of this.#waiters.filter((w) => w.revision <= this.#served)) w.done();
      this.#waiters = this.#waiters.filter((w) => w.revision > this.#served);
      follow.onApplied();
    } catch (err) {
      // Not applied: the next try rebuilds the whole table (what changed since is no longer known).
      this.#pending = undefined;
      this.#failed(`revision ${snapshot.revision} not applied: ${(err as Error).message}`);
      this.#reapply = setTimeout(() => void this.#apply(), REAPPLY_MS);
    } finally {
      this.#applying = false;
    }
    this.#publish();
    if (this.#latest !== snapshot) void this.#apply();
  }

  /** What is wrong now: a read or an apply that failed, else a cache the daemon cannot write. */
  #problem(): string | null {
    return this.#error ?? this.#follow?.store.cacheProblem ?? null;
  }

  #failed(message: string): void {
    if (this.#error !== message) this.#log.warn(message);
    this.#error = message;
    this.#publish();
  }

  #markConnected(up: boolean): void {
    if (up === this.#connected) return;
    this.#connected = up;
    this.#since = Date.now();
    if (up) {
      this.#connectedSince = new Date();
      this.#error = null;
      this.#log.info('connected to etcd');
    } else {
      this.#log.warn('lost etcd: serving the last revision applied until it is back');
    }
    this.#publish();
  }

  #publish(): void {
    if (this.#follow === undefined) return;
    this.#presence.publish({
      host: this.host,
      revision: this.#served,
      health: this.#problem() ?? 'ok',
      ...this.#follow.describe(),
      version: VERSION,
      pid: process.pid,
      connected_since: this.#connectedSince.toISOString(),
    });
  }
}
