import { type ControlHandlers } from '../control/server.js';
import { DispatcherError } from '../errors.js';
import { type FleetMember, type WriteOptions } from '../fleet/member.js';
import { type ChangeStore } from '../store/store.js';

/** The control API's changes of bindings and upstreams, and the fleet view. */
export type ChangeHandlers = Pick<ControlHandlers, 'add' | 'remove' | 'replace' | 'setUpstream' | 'removeUpstream' | 'fleet'>;

export interface ChangeParts {
  store: ChangeStore;
  /** With a store: every change goes to it (never around it) and comes back as a revision the daemon follows. */
  member: FleetMember | undefined;
  /** After an upstream change kept locally (kernel mode may serve a label's socket itself, or stop). */
  upstreamsChanged: () => void;
  /** Around a bulk change kept locally (kernel mode applies it to nftables: systemd shows it reloading). */
  bulk: { start: () => void; end: () => void };
}

const NO_STORE = 'dispatcher daemon --store etcd://HOST:PORT/PREFIX';

/** Where each change goes: to the fleet's store if the daemon follows one, else to its own store. */
export function changeHandlers({ store, member, upstreamsChanged, bulk }: ChangeParts): ChangeHandlers {
  if (member !== undefined) {
    return {
      add: (binding, w) => member.add(binding, w),
      remove: (binding, w) => member.remove(binding, w),
      replace: (bindings, dryRun, w) => member.replace(bindings, dryRun, w),
      setUpstream: (upstream, w) => member.setUpstream(upstream, w),
      removeUpstream: (label, w) => member.removeUpstream(label, w),
      fleet: () => member.fleet(),
    };
  }
  return {
    add: async (binding, w) => (local(w), store.add(binding)),
    remove: async (binding, w) => (local(w), { removed: await store.remove(binding) }),
    replace: async (bindings, dryRun, w) => {
      local(w);
      if (!dryRun) bulk.start();
      try {
        return await store.replace(bindings, dryRun);
      } finally {
        if (!dryRun) bulk.end();
      }
    },
    setUpstream: async (upstream, w) => (local(w), store.setUpstream(upstream).finally(upstreamsChanged)),
    removeUpstream: async (label, w) => (local(w), { removed: await store.removeUpstream(label).finally(upstreamsChanged) }),
    fleet: () => Promise.reject(new DispatcherError('ERR_NO_STORE', `this daemon follows no store (${NO_STORE})`)),
  };
}

/** A daemon without a store keeps its bindings itself: a change for a host's set or at a revision is not for it. */
function local(w: WriteOptions): void {
  if (w.host !== undefined || w.ifRevision !== undefined) {
    throw new DispatcherError(
      'ERR_NO_STORE',
      `a host set and if_revision need a daemon that follows a store (${NO_STORE}); this one keeps its bindings itself`,
    );
  }
}
