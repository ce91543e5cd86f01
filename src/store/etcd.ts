import { randomBytes } from 'node:crypto';
import { type Etcd3 } from 'etcd3';
import { type Binding } from '../bindings/binding.js';
import { DispatcherError } from '../errors.js';
import { type Upstream } from '../proxy/upstream.js';
import { etcdClient, type EtcdOptions, storeUnreachable } from './etcd-client.js';
import {
  chunks,
  liveDir,
  parseChunk,
  parseOverlay,
  parsePointer,
  parseUpstreams,
  type Pointer,
  type Scope,
  scopeBindings,
  type ScopeKeys,
  scopeKeys,
  upstreamsKey,
} from './etcd-layout.js';
import { type ScopeState, type Snapshot, snapshotOf, type State, type WatchEvents, watchState } from './etcd-watch.js';

export { type Scope } from './etcd-layout.js';
export { layered, type Snapshot, type WatchEvents } from './etcd-watch.js';
export { type EtcdOptions } from './etcd-client.js';

// Chunk writes in flight at once during a load: a few keep etcd busy without queueing 8 MB on the socket.
const WRITES = 4;
// Overlays a generation may gather before they are folded into a new one: every full read lists them all,
// and a range answer must stay under gRPC's 4 MiB.
const FOLD_AT = 1_000;
// A generation no pointer names, this old, was left by a writer that died before its flip.
const ABANDONED_MS = 10 * 60_000;

/** What a fold compares: the pointer and the overlay stamp, as read with the scope. */
interface Base {
  mod: number;
  pointer: Pointer | undefined;
  stampMod?: number;
}

/**
 * Bindings and upstreams in etcd, for a fleet: each scope's set is a generation of chunks that readers reach
 * only through one pointer key, flipped in one compare-and-swap transaction, so no reader sees half a load.
 */
export class EtcdBindings {
  /** The client, for the fleet's presence keys beside the bindings. */
  readonly client: Etcd3;
  readonly prefix: string;
  /** This daemon's host: its scope is layered over the global one. */
  readonly host: string;
  readonly #options: EtcdOptions;

  private constructor(options: EtcdOptions, host: string) {
    this.client = etcdClient(options);
    this.prefix = options.prefix.replace(/\/+$/, '');
    this.host = host;
    this.#options = options;
  }

  /** A client for `options.endpoints`, checked with a read unless `lazy` (a daemon starts without etcd). */
  static async connect(options: EtcdOptions & { host: string; lazy?: boolean }): Promise<EtcdBindings> {
    scopeKeys(options.prefix, { host: options.host });
    const store = new EtcdBindings(options, options.host);
    if (options.lazy !== true) {
      try {
        await store.headRevision();
      } catch (err) {
        store.close();
        throw err;
      }
    }
    return store;
  }

  /** etcd's errors as ERR_STORE naming the store; the dispatcher's own (a conflict, bad data) as they are. */
  #named<T>(call: Promise<T>): Promise<T> {
    return call.catch((err: unknown) => {
      throw storeUnreachable(this.#options, err);
    });
  }

  close(): void {
    this.client.close();
  }

  /** The global and this host's bindings, layered, and the upstreams, all at one revision (the latest if none is given). */
  read(atRevision?: number): Promise<Snapshot> {
    return this.#named(this.#readState(atRevision).then(snapshotOf));
  }

  /** One scope's own bindings (not layered), and the revision they were read at. */
  scope(scope: Scope): Promise<{ revision: number; bindings: Binding[] }> {
    return this.#named(
      (async () => {
        const revision = await this.headRevision();
        const { bindings } = await this.#readScope(scope, revision);
        return { revision, bindings: [...bindings.values()] };
      })(),
    );
  }

  /** The store's revision: etcd's, as of this read. */
  headRevision(): Promise<number> {
    return this.#named(this.client.get(upstreamsKey(this.prefix)).exec()).then((got) => Number(got.header.revision));
  }

  /**
   * The revision of the last change under `live/` (what daemons follow): a daemon serving it or later is
   * current. etcd's own revision is not it: presence records and a load's chunks move that one too.
   */
  async liveRevision(): Promise<number> {
    const got = await this.#named(this.client.getAll().prefix(liveDir(this.prefix)).sort('Mod', 'Descend').limit(1).exec());
    return Number(got.kvs[0]?.mod_revision ?? 0);
  }

  async #readState(atRevision?: number): Promise<State> {
    const first = await this.client
      .get(upstreamsKey(this.prefix))
      .revision(atRevision ?? 0)
      .exec();
    const revision = atRevision ?? Number(first.header.revision);
    const up = first.kvs[0];
    const upstreams = up === undefined ? [] : parseUpstreams(up.key.toString(), up.value.toString());
    const scopes = await Promise.all([this.#readScope('global', revision), this.#readScope({ host: this.host }, revision)]);
    return { revision, scopes, upstreams };
  }

  /**
   * Loads `bindings` as the whole of `scope`: a new generation, then the pointer flipped if nobody changed
   * it since `expectedRevision` (or since this call read it). Returns the revision of the flip.
   */
  replace(scope: Scope, bindings: readonly Binding[], expectedRevision?: number): Promise<number> {
    return this.#named(this.#pointer(scopeKeys(this.prefix, scope)).then((base) => this.#replace(scope, bindings, base, expectedRevision)));
  }

  async #replace(scope: Scope, bindings: readonly Binding[], base: Base, expectedRevision?: number): Promise<number> {
    const keys = scopeKeys(this.prefix, scope);
    const { mod, pointer } = base;
    checkExpected(keys.pointer, mod, expectedRevision);
    const gen = newGen();
    const texts = chunks(bindings);
    let revision: number;
    try {
      for (let i = 0; i < texts.length; i += WRITES) {
        await Promise.all(
          texts.slice(i, i + WRITES).map((text, j) =>
            this.client
              .put(keys.chunk(gen, i + j))
              .value(text)
              .exec(),
          ),
        );
      }
      const next: Pointer = { gen, chunks: texts.length };
      let flip = this.client.if(keys.pointer, 'Mod', '==', mod);
      // A fold loses nothing: it flips only if no overlay was written since it read them.
      if (base.stampMod !== undefined) flip = flip.and(keys.stamp, 'Mod', '==', base.stampMod);
      const txn = await flip
        .then(this.client.put(keys.pointer).value(JSON.stringify(next)))
        .else(this.client.get(keys.pointer), this.client.get(keys.stamp))
        .commit();
      if (!txn.succeeded) throw conflict(keys.pointer, lostTo(txn), expectedRevision ?? mod);
      revision = Number(txn.header.revision);
    } catch (err) {
      await this.#dropGen(keys, gen);
      throw err;
    }
    // Nobody follows the old generation any more; a failure here leaves garbage, never a wrong read.
    if (pointer !== undefined) await this.#dropGen(keys, pointer.gen);
    await this.#dropAbandoned(keys, gen);
    return revision;
  }

  /** Generations of writers that died between their chunks and their flip: old, and named by no pointer. */
  async #dropAbandoned(keys: ScopeKeys, current: string): Promise<void> {
    const names = await this.client
      .getAll()
      .prefix(keys.dataRoot)
      .keys()
      .catch(() => []);
    const gens = new Set(names.map((k) => k.slice(keys.dataRoot.length).split('/')[0]!).filter((g) => g.includes('-')));
    for (const gen of gens) {
      const born = parseInt(gen.split('-')[0]!, 36);
      if (gen !== current && Date.now() - born > ABANDONED_MS) await this.#dropGen(keys, gen);
    }
  }

  /**
   * The scope's chunks and overlays written as one new generation, if no write came between: the next
   * overlay write triggers it again otherwise.
   */
  async #fold(scope: Scope): Promise<void> {
    const keys = scopeKeys(this.prefix, scope);
    const base = await this.#pointer(keys);
    const stamp = await this.client.get(keys.stamp).revision(base.revision).exec();
    const { bindings } = await this.#readScope(scope, base.revision);
    await this.#replace(scope, [...bindings.values()], { ...base, stampMod: Number(stamp.kvs[0]?.mod_revision ?? 0) });
  }

  async #dropGen(keys: ScopeKeys, gen: string): Promise<void> {
    await Promise.all(
      [keys.chunks(gen), keys.overlays(gen)].map((p) =>
        this.client
          .delete()
          .prefix(p)
          .exec()
          .catch(() => undefined),
      ),
    );
  }

  /** Adds (or relabels) one binding in `scope`: one small key, compared and written in one transaction. */
  add(scope: Scope, binding: Binding, expectedRevision?: number): Promise<number> {
    return this.#named(this.#overlay(scope, binding, JSON.stringify(binding.toJSON()), expectedRevision));
  }

  /** Removes the binding with `binding`'s (protocol, prefix, port) from `scope`, whatever its label. */
  remove(scope: Scope, binding: Binding, expectedRevision?: number): Promise<number> {
    return this.#named(this.#overlay(scope, binding, 'null', expectedRevision));
  }

  /** The upstreams, and the revision they were read at. */
  async upstreams(): Promise<{ revision: number; upstreams: Upstream[] }> {
    const { upstreams, revision } = await this.#named(this.#upstreams());
    return { revision, upstreams };
  }

  /**
   * Changes the upstreams (one key: at most one per label, they are few): `edit` gets the current list and
   * returns the next, written if nobody changed the key since it was read (or since `expectedRevision`).
   */
  editUpstreams(edit: (current: Upstream[]) => Upstream[], expectedRevision?: number): Promise<number> {
    return this.#named(
      (async () => {
        const key = upstreamsKey(this.prefix);
        const { mod, upstreams } = await this.#upstreams();
        checkExpected(key, mod, expectedRevision);
        const txn = await this.client
          .if(key, 'Mod', '==', mod)
          .then(this.client.put(key).value(JSON.stringify(edit(upstreams))))
          .else(this.client.get(key))
          .commit();
        if (!txn.succeeded) throw conflict(key, lostTo(txn), expectedRevision ?? mod);
        return Number(txn.header.revision);
      })(),
    );
  }

  async #upstreams(): Promise<{ mod: number; revision: number; upstreams: Upstream[] }> {
    const key = upstreamsKey(this.prefix);
    const got = await this.client.get(key).exec();
    const kv = got.kvs[0];
    return {
      mod: Number(kv?.mod_revision ?? 0),
      revision: Number(got.header.revision),
      upstreams: kv === undefined ? [] : parseUpstreams(key, kv.value.toString()),
    };
  }

  /**
   * Calls `onChange` with a whole snapshot after every change past `fromRevision`: a pointer flip, a single
   * binding, the upstreams; never for a generation's chunks, which nobody follows until the flip. Changes
   * that arrive while a snapshot is read are delivered together, in one later snapshot. After a
   * disconnection the client resumes at the last revision it saw; if etcd compacted that away, the watch
   * starts over from a full read.
   */
  watch(fromRevision: number, onChange: (snapshot: Snapshot) => void, events: WatchEvents = {}): { close(): Promise<void> } {
    const context = {
      client: this.client,
      prefix: this.prefix,
      scopes: [scopeKeys(this.prefix, 'global'), scopeKeys(this.prefix, { host: this.host })],
      readState: (revision?: number) => this.#readState(revision),
    };
    return watchState(context, fromRevision, onChange, events);
  }

  async #overlay(scope: Scope, binding: Binding, value: string, expectedRevision?: number): Promise<number> {
    const keys = scopeKeys(this.prefix, scope);
    const { mod, pointer, revision } = await this.#pointer(keys);
    // An empty scope gets an empty generation to hang the overlay on, created in the same transaction.
    const gen = pointer?.gen ?? newGen();
    const key = keys.overlay(gen, binding);
    const got = await this.client.get(key).revision(revision).exec();
    const keyMod = Number(got.kvs[0]?.mod_revision ?? 0);
    // The conflict names the key that moved: the binding's own, else the scope's pointer (a load).
    checkExpected(key, keyMod, expectedRevision);
    checkExpected(keys.pointer, mod, expectedRevision);
    const writes = [this.client.put(key).value(value), this.client.put(keys.stamp).value(gen)];
    if (pointer === undefined) writes.push(this.client.put(keys.pointer).value(JSON.stringify({ gen, chunks: 0 })));
    const txn = await this.client
      .if(keys.pointer, 'Mod', '==', mod)
      .and(key, 'Mod', '==', keyMod)
      .then(...writes)
      .else(this.client.get(keys.pointer), this.client.get(key))
      .commit();
    if (!txn.succeeded) throw conflict(key, lostTo(txn), expectedRevision ?? Math.max(mod, keyMod));
    const overlays = await this.client.getAll().prefix(keys.overlays(gen)).count();
    // Lost to another writer, a fold is left to the next write: the change itself is made either way.
    if (overlays > FOLD_AT) await this.#fold(scope).catch(() => undefined);
    return Number(txn.header.revision);
  }

  /** A scope's pointer, its mod revision (0: none) and the revision it was read at. */
  async #pointer(keys: ScopeKeys): Promise<{ mod: number; pointer: Pointer | undefined; revision: number }> {
    const got = await this.client.get(keys.pointer).exec();
    const revision = Number(got.header.revision);
    const kv = got.kvs[0];
    if (kv === undefined) return { mod: 0, pointer: undefined, revision };
    return { mod: Number(kv.mod_revision), pointer: parsePointer(keys.pointer, kv.value.toString()), revision };
  }

  async #readScope(scope: Scope, revision: number): Promise<ScopeState> {
    const keys = scopeKeys(this.prefix, scope);
    const got = await this.client.get(keys.pointer).revision(revision).exec();
    const kv = got.kvs[0];
    if (kv === undefined) return { gen: undefined, bindings: new Map() };
    const pointer = parsePointer(keys.pointer, kv.value.toString());
    const chunkKeys = Array.from({ length: pointer.chunks }, (_, n) => keys.chunk(pointer.gen, n));
    const [base, overlays] = await Promise.all([
      // One get per chunk: a range over them all would pass gRPC's 4 MiB message limit at 100k bindings.
      // Fetched together, checked in order: the error names the first bad chunk, whichever answer came first.
      Promise.all(chunkKeys.map((key) => this.client.get(key).revision(revision).string())).then((texts) =>
        texts.map((text, n) => {
          const key = chunkKeys[n]!;
          if (text === null) throw new DispatcherError('ERR_STORE', `etcd key ${key}: missing, yet ${keys.pointer} counts it`);
          return parseChunk(key, text);
        }),
      ),
      this.client.getAll().prefix(keys.overlays(pointer.gen)).revision(revision).strings(),
    ]);
    const bindings = scopeBindings(
      base,
      chunkKeys,
      Object.entries(overlays).map(([key, text]) => parseOverlay(key, text)),
    );
    return { gen: pointer.gen, bindings };
  }
}

function newGen(): string {
  return `${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
}

function checkExpected(key: string, mod: number, expectedRevision: number | undefined): void {
  if (expectedRevision !== undefined && mod > expectedRevision) throw conflict(key, mod, expectedRevision);
}

/** The mod revision of the first key a failed transaction read back. */
function lostTo(txn: { responses: { response_range?: { kvs: { mod_revision: string }[] } | null }[] }): number {
  return Math.max(0, ...txn.responses.flatMap((r) => r.response_range?.kvs.map((kv) => Number(kv.mod_revision)) ?? []));
}

function conflict(key: string, theirs: number, ours: number): DispatcherError {
  return new DispatcherError(
    'ERR_CONFLICT',
    `${key} was changed at revision ${theirs} by another writer, after revision ${ours} this change was based on: read again and retry`,
  );
}
