import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';
import { type TapTest } from './tap.js';

export const ETCD = '/usr/bin/etcd';

/** Why the etcd tests are skipped, or undefined when etcd is there. */
export const noEtcd = existsSync(ETCD) ? undefined : `${ETCD} is absent: apt-get install etcd-server (scripts/setup.sh does)`;

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** One member: its name, ports and data dir (kept across kill and run). */
interface Member {
  name: string;
  clientPort: number;
  peerUrl: string;
  proc: ChildProcess | undefined;
  log: string;
}

/**
 * An etcd cluster on loopback of `size` members (one by default): a temporary data dir and random ports
 * each; a member killed (SIGKILL) and run again comes back on the same data and ports.
 */
export class TestEtcdCluster {
  readonly #dir: string;
  readonly #members: Member[];
  readonly #cluster: string;
  #client: Etcd3 | undefined;

  /** Use start(). */
  constructor(dir: string, members: Member[]) {
    this.#dir = dir;
    this.#members = members;
    this.#cluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
  }

  /** Starts every member and waits until each answers /health (the cluster has a leader). */
  static async start<T extends TestEtcdCluster>(this: new (dir: string, members: Member[]) => T, size = 1): Promise<T> {
    const dir = await mkdtemp(join(tmpdir(), 'etcd-test-'));
    const members: Member[] = [];
    for (let i = 0; i < size; i++)
      members.push({
        name: `m${i}`,
        clientPort: await freePort(),
        peerUrl: `http://127.0.0.1:${await freePort()}`,
        proc: undefined,
        log: '',
      });
    const cluster = new this(dir, members);
    // Together: a member of a new cluster answers /health only once a quorum runs.
    await Promise.all(members.map((_, i) => cluster.run(i)));
    return cluster;
  }

  /** Each member's client URL (http://127.0.0.1:PORT), in member order. */
  get endpoints(): string[] {
    return this.#members.map((m) => `http://127.0.0.1:${m.clientPort}`);
  }

  /** The first member's client URL. */
  get endpoint(): string {
    return this.endpoints[0]!;
  }

  /** The dispatcher's --store for `prefix` (e.g. `/fleet`), listing every member. */
  storeUrl(prefix: string): string {
    return `etcd://${this.#members.map((m) => `127.0.0.1:${m.clientPort}`).join(',')}${prefix}`;
  }

  /** Starts member `i` (again: on its data dir as it was) and waits until it answers /health. */
  async run(i = 0): Promise<void> {
    const m = this.#members[i]!;
    const endpoint = this.endpoints[i]!;
    const proc = spawn(
      ETCD,
      [
        `--name=${m.name}`,
        `--data-dir=${join(this.#dir, m.name)}`,
        `--listen-client-urls=${endpoint}`,
        `--advertise-client-urls=${endpoint}`,
        `--listen-peer-urls=${m.peerUrl}`,
        `--initial-advertise-peer-urls=${m.peerUrl}`,
        `--initial-cluster=${this.#cluster}`,
        `--initial-cluster-token=${this.#dir}`,
        '--log-level=error',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    proc.stderr.on('data', (d: Buffer) => (m.log = (m.log + d.toString()).slice(-4000)));
    m.proc = proc;
    for (let tries = 0; tries < 400; tries++) {
      if (proc.exitCode !== null) throw new Error(`etcd ${m.name} exited ${proc.exitCode}: ${m.log}`);
      const ok = await fetch(`${endpoint}/health`)
        .then(async (r) => r.ok && ((await r.json()) as { health?: string }).health === 'true')
        .catch(() => false);
      if (ok) return;
      await sleep(50);
    }
    throw new Error(`etcd ${m.name} did not answer /health within 20 s: ${m.log}`);
  }

  /** SIGKILLs member `i`, if it runs. */
  async kill(i = 0): Promise<void> {
    const proc = this.#members[i]!.proc;
    if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGKILL');
    await exited;
  }

  /** The index of the member that leads now, as a running member says. */
  async leader(): Promise<number> {
    for (const [i, endpoint] of this.endpoints.entries()) {
      const status = await fetch(`${endpoint}/v3/maintenance/status`, { method: 'POST', body: '{}' })
        .then((r) => r.json() as Promise<{ leader: string; header: { member_id: string } }>)
        .catch(() => undefined);
      // The member answering is the leader when its own id is the leader's.
      if (status !== undefined && status.leader === status.header.member_id) return i;
    }
    throw new Error('no member says it leads');
  }

  /** A plain etcd client of the whole cluster, closed by stop(). */
  get client(): Etcd3 {
    return (this.#client ??= new Etcd3({ hosts: this.endpoints }));
  }

  /** Compacts the keyspace (physically) up to `revision`, by default the latest: older revisions are gone. */
  async compact(revision?: number): Promise<number> {
    const at = revision ?? Number((await this.client.get('compact').exec()).header.revision);
    await this.client.kv.compact({ revision: String(at), physical: true });
    return at;
  }

  /** Kills every member and removes their data. */
  async stop(): Promise<void> {
    this.#client?.close();
    await Promise.all(this.#members.map((_, i) => this.kill(i)));
    await rm(this.#dir, { recursive: true, force: true });
  }
}

/** One member: `TestEtcd.start()`, `kill()`, `run()`, `endpoint`. */
export class TestEtcd extends TestEtcdCluster {}

/** One member for the whole test file, stopped when it ends; undefined, the file planned as skipped, where etcd is absent. */
export async function etcdForFile(t: TapTest): Promise<TestEtcd | undefined> {
  if (noEtcd !== undefined) return void t.plan(0, noEtcd);
  const etcd = await TestEtcd.start();
  t.teardown(() => etcd.stop());
  return etcd;
}
