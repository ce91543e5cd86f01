import { type Logger } from 'pino';
import { type Binding, type Protocol } from '../bindings/binding.js';
import { bindingFilter, type Filter } from '../bindings/order.js';
import { DispatcherError } from '../errors.js';
import { checkUpstreamPath, noUpstream, type Upstream } from '../proxy/upstream.js';
import { type Diff, Table } from '../table/table.js';
import { collectSoon } from './memory.js';
import { type Origin, type StateFile } from './state-file.js';

// A replace this large leaves enough garbage to be worth a full collection (see memory.ts).
const LARGE_REPLACE = 100_000;

/** A revision of the fleet's store: its whole set, or the keys changed since the one served; and the upstreams. */
export type StoreUpdate = { upstreams: readonly Upstream[] } & (
  { bindings: readonly Binding[] } | { changes: readonly { key: Binding; binding: Binding | undefined }[] }
);

/** What serves the table (the listening mode): told before and after each change. */
export interface Follower {
  /** Before `table` is served; a rejection undoes the change. */
  prepare(table: Table): Promise<void>;
  /** Once `table` is served. */
  follow(table: Table): void;
  /** Problems with a binding just added. */
  warnings(binding: Binding): string[];
  /** Every current problem, for a bulk change's reply. */
  problems(): string[];
}

export interface StoreOptions {
  state: StateFile;
  table: Table;
  upstreams: readonly Upstream[];
  /** `unix:` upstreams must lie in this directory. */
  upstreamDir: string;
  log: Logger;
  /** The fleet's store and revision the state file was saved from, if it was. */
  origin?: Origin | undefined;
  /**
   * The bindings come from a fleet's store and the state file is only its cache: it is written after a
   * change is served, at most once a second, not before (a write of 100,000 bindings costs about 100 ms).
   */
  cache?: boolean;
}

// How long a cache write waits for more changes, so that a burst of them costs one write; and how long
// after a failed one (a full disk, a read-only directory) it is tried again.
const CACHE_DELAY_MS = 1_000;
const CACHE_RETRY_MS = 5_000;

/**
 * Where the bindings and upstreams live while the daemon runs: the current table snapshot and upstream map,
 * changed one change at a time, each persisted to the state file first and then swapped in, so a refused
 * write (or refused rules) changes nothing and a restart starts from what was last answered.
 */
export class ChangeStore {
  readonly #state: StateFile;
  readonly #upstreamDir: string;
  readonly #log: Logger;
  #follower: Follower | undefined;
  #table: Table;
  // label -> upstream: proxy mode for labels with no worker registered.
  #upstreams = new Map<string, Upstream>();
  // Changes run one after another, so each builds on the last one's snapshot and persists in order.
  #changes: Promise<unknown> = Promise.resolve();
  #frozen = false;
  #origin: Origin | undefined;
  readonly #cache: boolean;
  #cacheTimer: NodeJS.Timeout | undefined;
  #cacheWrite: Promise<void> = Promise.resolve();
  /** Why the last cache write failed, until one succeeds; told to `onCacheProblem`. */
  cacheProblem: string | null = null;
  onCacheProblem: () => void = () => undefined;

  constructor(options: StoreOptions) {
    this.#state = options.state;
    this.#origin = options.origin;
    this.#cache = options.cache === true;
    this.#table = options.table;
    this.#upstreamDir = options.upstreamDir;
    this.#log = options.log;
    // Saved before --upstream-dir existed or moved: left out (and said), never a refusal to start.
    this.#upstreams = this.#allowed(options.upstreams);
  }

  /** The upstreams `unix:` paths allow, by label; the others left out, and said. */
  #allowed(upstreams: readonly Upstream[]): Map<string, Upstream> {
    const allowed = new Map<string, Upstream>();
    for (const u of upstreams) {
      try {
        allowed.set(u.label, checkUpstreamPath(u, this.#upstreamDir));
      } catch (err) {
        this.#log.warn({ upstream: u }, `upstream left out: ${(err as Error).message}`);
      }
    }
    return allowed;
  }

  /** The fleet's store and the revision of it served, if the bindings come from one. */
  get origin(): Origin | undefined {
    return this.#origin;
  }

  /** The current snapshot; hold the reference for a consistent view. */
  get table(): Table {
    return this.#table;
  }

  get statePath(): string {
    return this.#state.path;
  }

  /** Set once the listening mode exists: it follows every change from then on. */
  followedBy(follower: Follower): void {
    this.#follower = follower;
  }

  upstream(label: string): Upstream | undefined {
    return this.#upstreams.get(label);
  }

  upstreams(): Upstream[] {
    return [...this.#upstreams.values()].sort((a, b) => (a.label < b.label ? -1 : 1));
  }

  /** A hand-over: waits for the change under way and refuses the next ones; the state file is final. */
  async freeze(): Promise<void> {
    this.#frozen = true;
    await this.#changes.catch(() => undefined);
    await this.flush();
  }

  /** The cache written now (a daemon that started from the store has none of that revision yet). */
  cacheNow(): void {
    clearTimeout(this.#cacheTimer);
    this.#cacheTimer = undefined;
    this.#writeCache();
  }

  /** The cache written now if a write is due (at a stop, a hand-over; not a retry after a failure). */
  async flush(): Promise<void> {
    if (this.#cacheTimer !== undefined && this.cacheProblem === null) {
      clearTimeout(this.#cacheTimer);
      this.#cacheTimer = undefined;
      this.#writeCache();
    }
    await this.#cacheWrite;
  }

  /** The hand-over failed: changes are taken again. */
  thaw(): void {
    this.#frozen = false;
  }

  /** Resolves once no change is under way. */
  idle(): Promise<void> {
    return this.#changes.then(() => undefined);
  }

  list(filter: Filter): Binding[] {
    return this.#table.bindings().filter(bindingFilter(filter));
  }

  lookup(protocol: Protocol, address: string, port: number): Binding | undefined {
    return this.#table.lookup(protocol, address, port);
  }

  add(binding: Binding): Promise<{ binding: Binding; replaced: Binding | undefined; warnings: string[] }> {
    return this.#change(async () => {
      const { table, replaced } = this.#table.with(binding);
      await this.#commit(table, { added: binding.toJSON(), replaced: replaced?.label });
      return { binding, replaced, warnings: this.#follower?.warnings(binding) ?? [] };
    });
  }

  remove(binding: Binding): Promise<Binding> {
    return this.#change(async () => {
      const table = this.#table.without(binding);
      const removed = this.#table.find(binding)!;
      await this.#commit(table, { removed: removed.toJSON() });
      return removed;
    });
  }

  replace(bindings: Binding[], dryRun: boolean): Promise<Diff & { warnings: string[] }> {
    return this.#change(async () => {
      const next = Table.from(bindings);
      const diff = this.#table.diff(next);
      if (!dryRun && (diff.added.length > 0 || diff.removed.length > 0)) {
        await this.#commit(next, { loaded: bindings.length, added: diff.added.length, removed: diff.removed.length });
      }
      if (bindings.length >= LARGE_REPLACE) collectSoon();
      return { ...diff, warnings: dryRun ? [] : (this.#follower?.problems() ?? []) };
    });
  }

  /**
   * A revision of the fleet's store, applied whole: the bindings in one swap (no lookup sees part of it) and
   * the upstreams with them. `update` is the whole set, or the keys that changed since the revision served
   * (each with its binding now, or undefined: gone), which spares rebuilding a large table for one binding;
   * the diff is returned for those. Changed keys that change nothing here change only the revision served
   * (not saved: a restart reads the store again anyway).
   */
  apply(update: StoreUpdate, origin: Origin): Promise<Diff | undefined> {
    return this.#change(async () => {
      const upstreams = this.#allowed(update.upstreams);
      if ('bindings' in update) {
        // A whole set (a load, a full read) is taken as it is: diffing 100,000 bindings costs more than the
        // swap, and a set that did not change costs one swap, rarely.
        const next = Table.from(update.bindings);
        await this.#commit(next, { revision: origin.revision, loaded: next.size }, upstreams, origin);
        if (next.size >= LARGE_REPLACE) collectSoon();
        return undefined;
      }
      const { table: next, diff } = this.#changed(update.changes);
      const same = (a: Map<string, Upstream>, b: Map<string, Upstream>): boolean =>
        a.size === b.size && [...a].every(([label, u]) => JSON.stringify(b.get(label)) === JSON.stringify(u));
      if (diff.added.length > 0 || diff.removed.length > 0 || !same(upstreams, this.#upstreams)) {
        const what = { revision: origin.revision, added: diff.added.length, removed: diff.removed.length };
        await this.#commit(next, what, upstreams, origin);
      } else {
        this.#origin = origin;
      }
      return diff;
    });
  }

  #changed(changes: readonly { key: Binding; binding: Binding | undefined }[]): { table: Table; diff: Diff } {
    let table = this.#table;
    const diff: Diff = { added: [], removed: [] };
    for (const { key, binding } of changes) {
      const old = table.find(key);
      if (old?.label === binding?.label) continue;
      if (old !== undefined) diff.removed.push(old);
      if (binding === undefined) table = table.without(old!);
      else {
        table = table.with(binding).table;
        diff.added.push(binding);
      }
    }
    return { table, diff };
  }

  setUpstream(upstream: Upstream): Promise<{ upstream: Upstream; replaced: Upstream | undefined }> {
    return this.#change(async () => {
      checkUpstreamPath(upstream, this.#upstreamDir);
      const replaced = this.#upstreams.get(upstream.label);
      await this.#saveUpstreams(new Map(this.#upstreams).set(upstream.label, upstream));
      this.#log.info({ upstream }, 'upstream set');
      return { upstream, replaced };
    });
  }

  removeUpstream(label: string): Promise<Upstream> {
    return this.#change(async () => {
      const removed = this.#upstreams.get(label);
      if (removed === undefined) throw noUpstream(label);
      const next = new Map(this.#upstreams);
      next.delete(label);
      await this.#saveUpstreams(next);
      this.#log.info({ upstream: removed }, 'upstream removed');
      return removed;
    });
  }

  #change<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#changes.then(() => {
      if (this.#frozen) throw new DispatcherError('ERR_STATE', 'this daemon is handing over to a new one: repeat the change in a moment');
      return work();
    });
    this.#changes = run.catch(() => undefined);
    return run;
  }

  /**
   * Persists and prepares together (kernel mode's rules then change while the state file is written, not
   * after it: a binding is steered sooner), then swaps. If the disk or the rules refuse, both go back to
   * the live table, which stays as it was, and the caller gets the error.
   */
  async #commit(next: Table, what: Record<string, unknown>, upstreams = this.#upstreams, origin = this.#origin): Promise<void> {
    const save = this.#cache ? Promise.resolve() : this.#save(next, upstreams, origin);
    const [saved, prepared] = await Promise.allSettled([save, this.#follower?.prepare(next)]);
    if (saved.status === 'rejected' || prepared.status === 'rejected') {
      // What serves the table must not change, so neither may the bindings: undo whichever step went through.
      if (saved.status === 'fulfilled' && !this.#cache) await this.#save(this.#table, this.#upstreams, this.#origin);
      if (prepared.status === 'fulfilled') await this.#follower?.prepare(this.#table).catch(() => undefined);
      throw saved.status === 'rejected' ? saved.reason : (prepared as PromiseRejectedResult).reason;
    }
    this.#table = next;
    this.#upstreams = upstreams;
    this.#origin = origin;
    if (this.#cache) this.#cacheSoon();
    this.#follower?.follow(next);
    this.#log.info({ ...what, bindings: next.size }, 'bindings changed');
  }

  /** A cache write, a second after the last change (so a burst costs one). */
  #cacheSoon(delay = CACHE_DELAY_MS): void {
    clearTimeout(this.#cacheTimer);
    this.#cacheTimer = setTimeout(() => {
      this.#cacheTimer = undefined;
      this.#writeCache();
    }, delay);
  }

  /** A failure is not fatal (the store has it all): it is told, and the write tried again until it works. */
  #writeCache(): void {
    this.#cacheWrite = this.#cacheWrite
      .then(() => this.#save(this.#table, this.#upstreams, this.#origin))
      .then(
        () => this.#cacheProblemIs(null),
        (err: Error) => {
          this.#cacheProblemIs(`state file (the store's cache) not written: ${err.message}`);
          this.#cacheSoon(CACHE_RETRY_MS);
        },
      );
  }

  #cacheProblemIs(problem: string | null): void {
    if (problem === this.cacheProblem) return;
    if (problem !== null) this.#log.warn(problem);
    this.cacheProblem = problem;
    this.onCacheProblem();
  }

  /** Persists first, then swaps: a refused write changes nothing. */
  async #saveUpstreams(next: Map<string, Upstream>): Promise<void> {
    await this.#save(this.#table, next, this.#origin);
    this.#upstreams = next;
  }

  #save(table: Table, upstreams: Map<string, Upstream>, origin: Origin | undefined): Promise<void> {
    return this.#state.save({ bindings: table.bindings(), upstreams: [...upstreams.values()], origin });
  }
}
