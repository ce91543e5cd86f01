import { type Etcd3, type Watcher } from 'etcd3';
import { type Binding } from '../bindings/binding.js';
import { type Upstream } from '../proxy/upstream.js';
import { liveDir, parseOverlay, parseUpstreams, type ScopeKeys, upstreamsKey } from './etcd-layout.js';

export interface Snapshot {
  /** The etcd revision the snapshot was read at. */
  revision: number;
  /**
   * The global scope with this host's layered over it: on the same (protocol, prefix, port, family), the
   * host's label wins. Built when first asked for (a follower that applies `changed` never asks).
   */
  readonly bindings: Binding[];
  /**
   * The binding keys (by id, each with a binding of that key) that single changes touched since the
   * previous snapshot of this watch; undefined after a full read (anything may have changed).
   */
  changed?: ReadonlyMap<string, Binding> | undefined;
  upstreams: Upstream[];
  /** Each scope's own bindings by key, global then this host's: what a change to one is checked against. */
  scopes: ReadonlyMap<string, Binding>[];
}

/** What a watch tells besides snapshots. */
export interface WatchEvents {
  /** A read failed (etcd away, bad data under the prefix): retried a second later. */
  onError?: (err: Error) => void;
  /** The watch stream went down (false) or came back (true). */
  onConnection?: (connected: boolean) => void;
}

interface Change {
  key: string;
  value: string;
  revision: number;
}

/** One scope as read: its generation and its bindings by key. */
export interface ScopeState {
  gen: string | undefined;
  bindings: Map<string, Binding>;
}

export interface State {
  revision: number;
  scopes: ScopeState[];
  upstreams: Upstream[];
}

/** The global scope with the host's (the second) layered over it. */
export function snapshotOf(state: State, changed?: ReadonlyMap<string, Binding>): Snapshot {
  const [global, host] = state.scopes;
  let bindings: Binding[] | undefined;
  return {
    revision: state.revision,
    get bindings() {
      if (bindings === undefined) {
        const merged = new Map(global!.bindings);
        for (const [k, b] of host!.bindings) merged.set(k, b);
        bindings = [...merged.values()];
      }
      return bindings;
    },
    changed,
    upstreams: state.upstreams,
    scopes: [global!.bindings, host!.bindings],
  };
}

/** The binding a layered snapshot has for key `id`: this host's, else the global one. */
export function layered(snapshot: Snapshot, id: string): Binding | undefined {
  return snapshot.scopes[1]!.get(id) ?? snapshot.scopes[0]!.get(id);
}

export interface WatchContext {
  client: Etcd3;
  prefix: string;
  /** The global scope's keys and this host's. */
  scopes: ScopeKeys[];
  readState: (revision?: number) => Promise<State>;
}

/** EtcdBindings.watch: see there. */
export function watchState(
  { client, prefix, scopes, readState }: WatchContext,
  fromRevision: number,
  onChange: (snapshot: Snapshot) => void,
  { onError = () => undefined, onConnection = () => undefined }: WatchEvents,
): { close(): Promise<void> } {
  const wanted = (key: string): boolean =>
    key === upstreamsKey(prefix) || scopes.some((k) => key === k.pointer || key.startsWith(k.overlayRoot));
  let delivered = fromRevision;
  let pending = fromRevision;
  // The last state read or followed, and the changes since: a single change is applied to it, a flip (or
  // anything not understood) reads the whole state again.
  let state: State | undefined;
  let stale = false;
  let queued: Change[] = [];
  // What single changes touched since the last snapshot delivered.
  let changed = new Map<string, Binding>();
  const follow = (current: State, changes: Change[]): boolean => {
    const apply: (() => void)[] = [];
    // A change the state already holds (read after it) is skipped: applied again it could undo a later one.
    for (const { key, value } of changes.filter((c) => c.revision > current.revision)) {
      if (key === upstreamsKey(prefix)) {
        apply.push(() => (current.upstreams = parseUpstreams(key, value)));
        continue;
      }
      const i = scopes.findIndex((k, j) => current.scopes[j]!.gen !== undefined && key.startsWith(k.overlays(current.scopes[j]!.gen)));
      if (i === -1) return false;
      const scope = current.scopes[i]!.bindings;
      apply.push(() => {
        const { id, named, binding } = parseOverlay(key, value);
        if (binding === undefined) scope.delete(id);
        else scope.set(id, binding);
        changed.set(id, named);
      });
    }
    for (const f of apply) f();
    return true;
  };
  let closed = false;
  let running: Promise<void> | undefined;
  let watcher: Watcher | undefined;

  const deliver = async (): Promise<void> => {
    while (!closed && pending > delivered) {
      const at = pending;
      const changes = queued;
      queued = [];
      let full = false;
      if (state === undefined || stale || !follow(state, changes)) {
        full = true;
        stale = false;
        state = undefined;
        try {
          state = await readState(at);
        } catch (err) {
          if (!compacted(err)) throw err;
          state = await readState();
        }
      } else {
        state.revision = at;
      }
      if (closed) return;
      delivered = state.revision;
      onChange(snapshotOf(state, full ? undefined : changed));
      changed = new Map();
    }
  };
  // A failed read (etcd away, bad data under the prefix) is told and retried a second later; the caller
  // keeps serving the last snapshot meanwhile.
  let retry: NodeJS.Timeout | undefined;
  const kick = (): void => {
    running ??= deliver()
      .then(
        () => false,
        (err: unknown) => ((state = undefined), onError(err as Error), true),
      )
      .then((failed) => {
        running = undefined;
        if (pending > delivered && !closed) {
          if (failed) retry ??= setTimeout(() => ((retry = undefined), kick()), 1000);
          else kick();
        }
      });
  };
  const start = async (from: number): Promise<void> => {
    const w = await client
      .watch()
      .prefix(liveDir(prefix))
      .startRevision(String(from + 1))
      .create();
    if (closed) return void (await w.cancel());
    watcher = w;
    onConnection(true);
    w.on('connected', () => onConnection(true));
    w.on('disconnected', () => onConnection(false));
    w.on('data', (res) => {
      for (const ev of res.events) {
        const key = ev.kv.key.toString();
        if (ev.type !== 'Put') continue;
        // Another host's change moves the revision this daemon serves too (its table is the same at it).
        pending = Math.max(pending, Number(ev.kv.mod_revision));
        if (wanted(key)) queued.push({ key, value: ev.kv.value.toString(), revision: Number(ev.kv.mod_revision) });
      }
      kick();
    });
    // etcd cancels a watch whose revision was compacted: start over from a full read at the latest revision.
    w.on('error', () => {
      void w.cancel().catch(() => undefined);
      restart();
    });
  };
  // Retried each second until etcd answers: a watch never ends while the daemon follows.
  const restart = (): void => {
    if (closed) return;
    void client
      .get(upstreamsKey(prefix))
      .exec()
      .then(async (got) => {
        if (closed) return;
        pending = Math.max(pending, Number(got.header.revision));
        stale = true;
        kick();
        await start(pending);
      })
      .catch((err: unknown) => {
        onError(err as Error);
        retryStart ??= setTimeout(() => ((retryStart = undefined), restart()), 1000);
      });
  };
  let retryStart: NodeJS.Timeout | undefined;
  // Nothing to resume from (0): a full read first, then the watch from there.
  if (fromRevision === 0) restart();
  else
    void start(fromRevision).catch((err: unknown) => {
      onError(err as Error);
      restart();
    });
  return {
    close: async () => {
      closed = true;
      clearTimeout(retry);
      clearTimeout(retryStart);
      await watcher?.cancel();
      await running;
    },
  };
}

function compacted(err: unknown): boolean {
  return /compacted/.test((err as Error).message);
}
