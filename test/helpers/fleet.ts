import { type BindingJSON } from '../../src/bindings/binding.js';
import { ControlClient } from '../../src/control/client.js';
import { type StoreStatus } from '../../src/fleet/member.js';
import { StoreClient } from '../../src/cli/store-client.js';
import { etcdOptions } from '../../src/store/etcd-client.js';
import { dispatcher, type Run, type RunningDaemon, startDaemon, tempDir } from './daemon.js';
import { freePort } from './etcd.js';
import { request, type RunningWorker, startWorker } from './services.js';

type Teardown = { teardown(fn: () => unknown): void };

/**
 * Polls `probe` until it returns something other than undefined, null or false (a throw counts as not
 * yet) and resolves with that; rejects after `ms` naming `what` and the last answer or error.
 */
export async function until<T>(
  what: string,
  probe: () => T | Promise<T>,
  ms = 20_000,
  everyMs = 25,
): Promise<Exclude<T, undefined | null | false>> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== null && value !== false) return value as Exclude<T, undefined | null | false>;
      last = value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`not within ${ms} ms: ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** A daemon following the store as host `host`, listening on `address` (a loopback address of its own). */
export interface Member extends RunningDaemon {
  host: string;
  address: string;
  /** Its directory: start it again on it to restart it with its state file (the store's cache). */
  dir: string;
  api: ControlClient;
  /** Its /metrics URL. */
  metricsUrl: string;
  store(): Promise<StoreStatus>;
}

/** Starts `dispatcher daemon --store url --host-name host` (stopped when the test ends). */
export async function startMember(t: Teardown, url: string, host: string, address: string, dir?: string): Promise<Member> {
  const home = dir ?? (await tempDir(t));
  const metrics = `127.0.0.1:${await freePort()}`;
  const d = await startDaemon(home, ['--store', url, '--host-name', host, '--listen-address', address, '--metrics', metrics]);
  t.teardown(() => d.stop());
  const api = new ControlClient(d.control);
  return {
    ...d,
    host,
    address,
    dir: home,
    api,
    metricsUrl: `http://${metrics}/metrics`,
    store: async () => (await api.status()).store!,
  };
}

/** Daemons `a` on 127.0.0.1 and `b` on 127.0.0.2, following `url`. */
export const startTwo = (t: Teardown, url: string): Promise<[Member, Member]> =>
  Promise.all([startMember(t, url, 'a', '127.0.0.1'), startMember(t, url, 'b', '127.0.0.2')]);

/** The store as the CLI's --store sees it, in this process (closed when the test ends). */
export async function storeClient(t: Teardown, url: string): Promise<StoreClient> {
  const store = await StoreClient.connect(etcdOptions({ store: url }));
  t.teardown(() => store.close());
  return store;
}

/** Bindings as sorted lines `protocol prefix port label`: sets compare equal whatever their order. */
export const lines = (bs: readonly BindingJSON[]): string[] => bs.map((b) => `${b.protocol} ${b.prefix} ${b.port} ${b.label}`).sort();

/** What `member` serves, as lines. */
export const servedLines = async (member: Member): Promise<string[]> => lines((await member.api.listBindings()).bindings);

/** The CLI straight to the store: `args` and `--store url`. */
export const storeCli = (url: string, ...args: string[]): Promise<Run> => dispatcher([...args, '--store', url]);

/** A worker of `label` registered with `member` (stopped when the test ends); it registers again by itself when the daemon restarts. */
export async function workerOf(t: Teardown, member: Member, label: string): Promise<RunningWorker> {
  const w = await startWorker(label, member.services);
  t.teardown(() => w.stop());
  return w;
}

/** Resolves once every member serves `revision` (or later); the ms it took. */
export async function allServe(members: readonly Member[], revision: number, ms = 20_000): Promise<number> {
  const started = performance.now();
  await until(
    `${members.map((m) => m.host).join(', ')} serve revision ${revision}`,
    async () => (await Promise.all(members.map(async (m) => (await m.store()).revision >= revision))).every(Boolean),
    ms,
  );
  return performance.now() - started;
}

/**
 * The label of the worker a real connection to `member`'s listener on `port` was handed to, and its pid.
 * The wait allows for a daemon applying a 100k load on a loaded machine (seconds of one busy turn).
 */
export async function servedBy(member: Member, port: number): Promise<{ label: string; pid: number }> {
  const { label, pid } = await request(member.address, port, { timeoutMs: 20_000 });
  return { label, pid };
}

/** The revision a change printed (`... (revision N)`). */
export function printedRevision(run: Run): number {
  const m = / \(revision ([0-9]+)\)$/m.exec(run.stdout);
  if (m === null) throw new Error(`no revision in ${JSON.stringify(run)}`);
  return Number(m[1]);
}

/** A gauge's value in a /metrics page. */
export async function gauge(member: Member, name: string): Promise<number | undefined> {
  const text = await (await fetch(member.metricsUrl)).text();
  const m = new RegExp(`^${name} ([0-9.e+-]+)$`, 'm').exec(text);
  return m === null ? undefined : Number(m[1]);
}
