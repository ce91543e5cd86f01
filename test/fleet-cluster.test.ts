import t from 'tap';
import { type BindingJSON } from '../src/bindings/binding.js';
import { noEtcd, TestEtcdCluster } from './helpers/etcd.js';
import { allServe, printedRevision, startTwo, storeCli, storeClient, until } from './helpers/fleet.js';

const WRITES = 30;
const binding = (i: number): BindingJSON => ({ label: `w${i}`, protocol: 'tcp', prefix: `192.0.2.${i}/32`, port: 80 });
const keys = (bs: readonly BindingJSON[]): string[] => bs.map((b) => `${b.prefix} ${b.label}`).sort();

if (noEtcd !== undefined) {
  t.plan(0, noEtcd);
} else {
  t.test(
    'three etcd members, the leader killed while writes go on: each write succeeds or says why, the daemons keep following',
    async (t) => {
      const etcd = await TestEtcdCluster.start(3);
      t.teardown(() => etcd.stop());
      const url = etcd.storeUrl('/cluster');
      const store = await storeClient(t, url);
      const [a, b] = await startTwo(t, url);

      // Two writers at once: the CLI straight to the store (every member listed) and daemon a. The leader is
      // killed while both are under way.
      const write = async (i: number): Promise<{ ok: boolean; error?: string }> => {
        if (i % 3 === 0) {
          const r = await storeCli(url, 'bind', 'add', `w${i}`, 'tcp', `192.0.2.${i}/32`, '80');
          return r.code === 0 ? { ok: true } : { ok: false, error: `exit ${r.code}: ${r.stderr.trim()}` };
        }
        return a.api.addBinding(binding(i)).then(
          () => ({ ok: true }),
          (err: { code: string; message: string }) => ({ ok: false, error: `${err.code}: ${err.message}` }),
        );
      };
      const ok: number[] = [];
      const failed: { i: number; error: string }[] = [];
      let killed = -1;
      let slowest = 0;
      const started = performance.now();
      const stream = async (indexes: number[]): Promise<void> => {
        for (const i of indexes) {
          if (i === 10) {
            killed = await etcd.leader();
            await etcd.kill(killed);
            t.comment(`killed the leader, member ${killed}, before write ${i}, ${(performance.now() - started).toFixed(0)} ms in`);
          }
          const w0 = performance.now();
          const r = await write(i);
          const ms = performance.now() - w0;
          slowest = Math.max(slowest, ms);
          if (i === 10) t.comment(`write 10, the first after the kill: ${ms.toFixed(0)} ms`);
          if (r.ok) ok.push(i);
          else failed.push({ i, error: r.error! });
        }
      };
      const all = Array.from({ length: WRITES }, (_, i) => i + 1);
      await Promise.all([stream(all.filter((i) => i % 3 === 0)), stream(all.filter((i) => i % 3 !== 0))]);
      t.comment(
        `${WRITES} writes in ${(performance.now() - started).toFixed(0)} ms: ${ok.length} succeeded, ${failed.length} failed; the slowest took ${slowest.toFixed(0)} ms`,
      );
      for (const f of failed) t.comment(`write ${f.i} failed: ${f.error}`);
      t.ok(ok.length >= WRITES - 3, 'a lost member costs a few writes at most (two of three keep a quorum)');
      for (const f of failed)
        t.match(f.error, /^(exit 2: dispatcher: |ERR_STORE: )etcd at .* does not answer \(.+\)/, `write ${f.i} failed with a clear error`);

      // Every write that succeeded is in the store; a failed one may have landed too (a timeout after the commit).
      const inStore = (await store.listBindings()).bindings;
      const got = new Set(keys(inStore));
      t.same(
        ok.filter((i) => !got.has(keys([binding(i)])[0]!)),
        [],
        'every successful write is in the store',
      );
      t.ok(
        inStore.every((b) => /^w[0-9]+$/.test(b.label)),
        'and nothing else',
      );
      const landed = failed.filter((f) => got.has(keys([binding(f.i)])[0]!)).map((f) => f.i);
      if (landed.length > 0) t.comment(`failed writes that landed anyway: ${landed.join(', ')}`);
      const { revision } = await store.fleet();
      await allServe([a, b], revision);
      t.same(keys((await a.api.listBindings()).bindings), keys(inStore), 'a serves the store');
      t.same(keys((await b.api.listBindings()).bindings), keys(inStore), 'b serves the store');
      for (const m of [a, b]) t.match(await m.store(), { connected: true, error: null }, `${m.host} connected`);

      // The member comes back and catches up: with another one killed, the quorum needs it.
      await etcd.run(killed);
      const other = (killed + 1) % 3;
      await etcd.kill(other);
      const after = await until('a write with the member back and another one away', async () => {
        const r = await storeCli(url, 'bind', 'add', 'back', 'tcp', '198.51.100.0/24', '80');
        return r.code === 0 && r;
      });
      await allServe([a, b], printedRevision(after));
      t.match((await b.api.lookup('tcp', '198.51.100.1', 80)).label, 'back', 'the write reached the daemons');
      await etcd.run(other);
    },
  );
}
