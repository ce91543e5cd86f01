import { type Argv } from 'yargs';
import { ControlClient } from '../control/client.js';
import { type WriteQuery } from '../control/protocol.js';
import { storeYargsOptions } from '../daemon/options.js';
import { DispatcherError } from '../errors.js';
import { type StoreClient } from './store-client.js';
import { etcdOptions } from '../store/etcd-client.js';
import { checkHost, parseRevision } from '../store/etcd-layout.js';
import { type GlobalArgs } from './command.js';

/**
 * Where bindings and upstreams are changed: the daemon on --control (which, if it follows a store, writes
 * there), or with --store (or DISPATCHER_STORE) the fleet's store itself, with no daemon.
 */
export type Target = Pick<
  StoreClient,
  'listBindings' | 'addBinding' | 'removeBinding' | 'replaceBindings' | 'upstreams' | 'setUpstream' | 'removeUpstream' | 'fleet'
>;

export interface StoreArgs extends GlobalArgs {
  store?: string | undefined;
  'store-ca'?: string | undefined;
  'store-cert'?: string | undefined;
  'store-key'?: string | undefined;
  'store-user'?: string | undefined;
  'store-password-file'?: string | undefined;
}

/** The store's flags, for the commands that may go straight to it. */
export const storeArgs = <T>(y: Argv<T>) => y.options(storeYargsOptions()) as unknown as Argv<T & Omit<StoreArgs, 'control'>>;

/** The `--host` and `--if-revision` of a change. */
export const writeArgs = <T>(y: Argv<T>) =>
  storeArgs(y)
    .option('host', { type: 'string', describe: "change this host's own set in the store, layered over the global one" })
    .option('if-revision', {
      type: 'string',
      describe: 'refuse the change if what it changes was changed in the store after this revision (compare-and-swap)',
    });

export function writeQuery(argv: { host?: string | undefined; 'if-revision'?: string | undefined }): WriteQuery {
  const rev = argv['if-revision'];
  return {
    host: argv.host === undefined ? undefined : checkHost(argv.host),
    if_revision: rev === undefined ? undefined : parseRevision(rev, '--if-revision'),
  };
}

/** Runs `work` against the store (--store) or the daemon, and lets go of the store's connection after. */
export async function withTarget<T>(argv: StoreArgs, work: (target: Target) => Promise<T>): Promise<T> {
  const url = argv.store ?? process.env['DISPATCHER_STORE'];
  if (url === undefined) {
    const c = new ControlClient(argv.control);
    return work({
      listBindings: async (filter, host) => {
        if (host !== undefined) throw new DispatcherError('ERR_USAGE', "a host's own set is read from the store: give --store");
        return c.listBindings(filter);
      },
      addBinding: (b, w) => c.addBinding(b, w),
      removeBinding: (b, w) => c.removeBinding(b, w),
      replaceBindings: (text, o) => c.replaceBindings(text, o),
      upstreams: () => c.upstreams(),
      setUpstream: (u, w) => c.setUpstream(u, w),
      removeUpstream: (label, w) => c.removeUpstream(label, w),
      fleet: () => c.fleet(),
    });
  }
  const { StoreClient } = await import('./store-client.js');
  const store = await StoreClient.connect(
    etcdOptions({
      store: url,
      storeCa: argv['store-ca'],
      storeCert: argv['store-cert'],
      storeKey: argv['store-key'],
      storeUser: argv['store-user'],
      storePasswordFile: argv['store-password-file'],
    }),
  );
  try {
    return await work(store);
  } finally {
    store.close();
  }
}

/** ` (revision N)` after a change's line, when a store has it. */
export const atRevision = (revision: number | undefined): string => (revision === undefined ? '' : ` (revision ${revision})`);
