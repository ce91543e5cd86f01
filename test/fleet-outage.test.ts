import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { type BindingJSON } from '../src/bindings/binding.js';
import { noEtcd, TestEtcd } from './helpers/etcd.js';
import { allServe, gauge, lines, servedBy, servedLines, startMember, storeClient, until, workerOf } from './helpers/fleet.js';
import { randomPort } from './helpers/services.js';

const tcp = (label: string, port: number): BindingJSON => ({ label, protocol: 'tcp', prefix: '127.0.0.0/8', port });

if (noEtcd !== undefined) {
  t.plan(0, noEtcd);
} else {
  t.test(
    'etcd away: daemons serve what they have, writes fail and change nothing; back, every daemon converges, past a compaction too',
    async (t) => {
      const etcd = await TestEtcd.start();
      t.teardown(() => etcd.stop());
      const url = etcd.storeUrl('/outage');
      const store = await storeClient(t, url);
      const a = await startMember(t, url, 'a', '127.0.0.1');
      let b = await startMember(t, url, 'b', '127.0.0.2');
      const web = randomPort();
      const api = web + 1;
      const spare = web + 2;
      // The workers re-register by themselves when their daemon comes back.
      const workers = {
        a: { web: await workerOf(t, a, 'web'), api: await workerOf(t, a, 'api') },
        b: { web: await workerOf(t, b, 'web'), api: await workerOf(t, b, 'api') },
      };

      const first = await a.api.addBinding(tcp('web', web));
      await allServe([a, b], first.revision!);
      t.same(await servedBy(b, web), { label: 'web', pid: workers.b.web.pid }, 'b serves the first revision');

      // b stops with the first revision in its state file; the store moves on without it, and is compacted.
      await b.stop();
      const cached = JSON.parse(await readFile(join(b.stateDir, 'state.json'), 'utf8')) as { origin: { store: string; revision: number } };
      t.same(cached.origin, { store: url, revision: first.revision }, "b's state file caches the store's revision it served");
      await a.api.addBinding(tcp('api', api));
      await a.api.addBinding(tcp('api', spare));
      await a.api.removeBinding(tcp('api', spare));
      const hostB = await a.api.addBinding(tcp('api', web), { host: 'b' });
      const latest = await etcd.compact();
      t.ok(latest >= hostB.revision!, `compacted up to ${latest}, past b's ${first.revision}`);
      const expectedA = lines([tcp('web', web), tcp('api', api)]);
      const expectedB = lines([tcp('api', web), tcp('api', api)]);
      t.same(await servedLines(a), expectedA);

      await etcd.kill();
      const lost = performance.now();
      await until('a says it lost etcd', async () => !(await a.store()).connected);
      t.comment(`a said it lost etcd ${(performance.now() - lost).toFixed(0)} ms after etcd died`);
      t.equal(await gauge(a, 'dispatcher_store_connected'), 0, 'dispatcher_store_connected 0');
      t.equal((await a.store()).revision, hostB.revision, 'a still serves the last revision');
      t.same(await servedBy(a, web), { label: 'web', pid: workers.a.web.pid }, 'a connection through a still reaches its worker');
      t.same(await servedBy(a, api), { label: 'api', pid: workers.a.api.pid });

      // The state file is the store's cache, written a second after a change: settled, then compared.
      const served = (await a.store()).revision;
      const cachedRevision = async (): Promise<number> =>
        (JSON.parse(await readFile(join(a.stateDir, 'state.json'), 'utf8')) as { origin: { revision: number } }).origin.revision;
      await until('a has cached what it serves', async () => (await cachedRevision()) === served);
      const stateBefore = await readFile(join(a.stateDir, 'state.json'), 'utf8');
      const refused = await a.cli('bind', 'add', 'lost', 'tcp', '198.51.100.0/24', '80');
      t.equal(refused.code, 2, 'a write through the daemon fails');
      t.match(refused.stderr, new RegExp(`^dispatcher: etcd at ${etcd.endpoint} does not answer \\(.+\\)\\n$`), refused.stderr);
      t.notMatch(refused.stderr, /Execution prevented because the circuit breaker is open/, "why, in etcd's terms");
      await t.rejects(a.api.addBinding({ label: 'lost', protocol: 'tcp', prefix: '198.51.100.0/24', port: 80 }), { code: 'ERR_STORE' });
      await t.rejects(a.api.removeBinding(tcp('web', web)), { code: 'ERR_STORE' });
      t.same(await servedLines(a), expectedA, "the daemon's table is unchanged");
      t.equal(await readFile(join(a.stateDir, 'state.json'), 'utf8'), stateBefore, 'its state file too');

      // b starts while etcd is away: from its cache, after waiting 5 s for etcd.
      const restart = performance.now();
      b = await startMember(t, url, 'b', '127.0.0.2', b.dir);
      t.comment(`b started from its cache in ${(performance.now() - restart).toFixed(0)} ms`);
      t.match(await b.store(), { connected: false, revision: first.revision }, 'b serves the cached revision');
      t.same(await servedLines(b), lines([tcp('web', web)]));
      t.same(
        await until('b serves a connection', () => servedBy(b, web)),
        { label: 'web', pid: workers.b.web.pid },
        'a connection through b reaches its worker (re-registered by itself)',
      );

      await etcd.run();
      const back = performance.now();
      const final = await until('the store answers', () => store.listBindings());
      await until('a and b converge', async () => {
        const [sa, sb] = await Promise.all([a.store(), b.store()]);
        return sa.connected && sb.connected && sa.revision >= hostB.revision! && sb.revision >= hostB.revision!;
      });
      t.comment(`both converged ${(performance.now() - back).toFixed(0)} ms after etcd came back`);
      t.same(lines(final.bindings), lines([tcp('web', web), tcp('api', api)]), 'the refused write is not in the store');
      t.same(await servedLines(a), expectedA, "a's table is the store's");
      t.same(await servedLines(b), expectedB, "b resynced the whole set past the compaction, its host's binding over the global one");
      for (const m of [a, b]) {
        const s = await m.store();
        t.match(s, { connected: true, store_revision: s.revision, lag_seconds: 0, error: null }, `${m.host}: current, no error`);
        t.equal(await gauge(m, 'dispatcher_store_connected'), 1, `${m.host}: dispatcher_store_connected 1`);
        t.equal(await gauge(m, 'dispatcher_store_revision'), s.revision, `${m.host}: dispatcher_store_revision is the status's`);
      }
      t.same(await servedBy(b, web), { label: 'api', pid: workers.b.api.pid }, "b serves its host's binding");
      t.same(await servedBy(b, api), { label: 'api', pid: workers.b.api.pid });
      const fleet = await until('both current in the fleet', async () => {
        const f = await store.fleet();
        return f.hosts.every((h) => h.state === 'current') && f;
      });
      t.same(
        fleet.hosts.map((h) => h.host),
        ['a', 'b'],
      );
    },
  );

  t.test('a daemon started from the store caches what it serves at once: restarted while etcd is away, it serves that', async (t) => {
    const etcd = await TestEtcd.start();
    t.teardown(() => etcd.stop());
    const url = etcd.storeUrl('/cache');
    const store = await storeClient(t, url);
    const port = randomPort();
    await store.addBinding(tcp('old', port), {});
    // b's state file caches the first revision; b stops, and the store moves on while it is away.
    let b = await startMember(t, url, 'b', '127.0.0.2');
    const workers = { old: await workerOf(t, b, 'old'), new: await workerOf(t, b, 'new') };
    t.same(await servedBy(b, port), { label: 'old', pid: workers.old.pid });
    await b.stop();
    const { revision } = await store.addBinding(tcp('new', port), {});
    // Started with etcd there, b serves the store's revision, nothing changes, and etcd goes away.
    b = await startMember(t, url, 'b', '127.0.0.2', b.dir);
    t.match(await b.store(), { revision, connected: true }, 'b starts from the store');
    t.same(await until('b serves', () => servedBy(b, port)), { label: 'new', pid: workers.new.pid });
    await until(
      'b caches the revision it serves',
      async () => {
        const state = JSON.parse(await readFile(join(b.stateDir, 'state.json'), 'utf8')) as { origin?: { revision: number } };
        return state.origin?.revision === revision;
      },
      5_000,
    );
    await etcd.kill();
    await b.stop();
    b = await startMember(t, url, 'b', '127.0.0.2', b.dir);
    t.match(await b.store(), { revision, connected: false }, 'restarted without etcd, b serves the revision it served before');
    t.same(await until('b serves', () => servedBy(b, port)), { label: 'new', pid: workers.new.pid }, 'the same table');
  });
}
