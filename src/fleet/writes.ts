import { type Binding, removalOf } from '../bindings/binding.js';
import { noUpstream, type Upstream } from '../proxy/upstream.js';
import { type EtcdBindings, type Scope } from '../store/etcd.js';
import { type Diff } from '../table/table.js';

/** One scope's own bindings by key, and the revision they are of. */
export interface ScopeView {
  revision: number;
  bindings: ReadonlyMap<string, Binding>;
}

/**
 * Changes to the fleet's store, checked like a daemon checks its own (a removal names an existing binding
 * and its label) against a view of the scope, then written with compare-and-swap. Used by a daemon with a
 * store (its view: what it follows) and by the CLI with `--store` (its view: a read).
 */
export class FleetWriter {
  readonly #store: EtcdBindings;
  readonly #view: (scope: Scope) => Promise<ScopeView>;

  constructor(store: EtcdBindings, view: (scope: Scope) => Promise<ScopeView>) {
    this.#store = store;
    this.#view = view;
  }

  /** `expected`: refuse (ERR_CONFLICT) if the binding's key or the scope's load changed after that revision. */
  async add(scope: Scope, binding: Binding, expected?: number): Promise<{ replaced: Binding | undefined; revision: number }> {
    const view = await this.#view(scope);
    const revision = await this.#store.add(scope, binding, expected);
    return { replaced: view.bindings.get(binding.key()), revision };
  }

  /** Checked against the view, and written only if nothing changed the binding since the view's revision. */
  async remove(scope: Scope, binding: Binding, expected?: number): Promise<{ removed: Binding; revision: number }> {
    const view = await this.#view(scope);
    const removed = removalOf(view.bindings.get(binding.key()), binding);
    const revision = await this.#store.remove(scope, binding, Math.min(expected ?? view.revision, view.revision));
    return { removed, revision };
  }

  /** The whole scope replaced in one swap; `dryRun` only says what would change. */
  async replace(scope: Scope, bindings: readonly Binding[], dryRun: boolean, expected?: number): Promise<Diff & { revision: number }> {
    const view = await this.#view(scope);
    const next = new Map(bindings.map((b) => [b.key(), b]));
    const diff = {
      added: bindings.filter((b) => view.bindings.get(b.key())?.label !== b.label),
      removed: [...view.bindings.values()].filter((b) => next.get(b.key())?.label !== b.label),
    };
    if (dryRun || (diff.added.length === 0 && diff.removed.length === 0)) return { ...diff, revision: view.revision };
    return { ...diff, revision: await this.#store.replace(scope, bindings, expected) };
  }

  async setUpstream(upstream: Upstream, expected?: number): Promise<{ replaced: Upstream | undefined; revision: number }> {
    let replaced: Upstream | undefined;
    const revision = await this.#store.editUpstreams((current) => {
      replaced = current.find((u) => u.label === upstream.label);
      return [...current.filter((u) => u.label !== upstream.label), upstream];
    }, expected);
    return { replaced, revision };
  }

  async removeUpstream(label: string, expected?: number): Promise<{ removed: Upstream; revision: number }> {
    let removed: Upstream | undefined;
    const revision = await this.#store.editUpstreams((current) => {
      removed = current.find((u) => u.label === label);
      if (removed === undefined) throw noUpstream(label);
      return current.filter((u) => u !== removed);
    }, expected);
    return { removed: removed!, revision };
  }
}

/** A view by reading the scope from the store: for writers that follow nothing (the CLI). */
export function readView(store: EtcdBindings): (scope: Scope) => Promise<ScopeView> {
  return async (scope) => {
    const { revision, bindings } = await store.scope(scope);
    return { revision, bindings: new Map(bindings.map((b) => [b.key(), b])) };
  };
}
