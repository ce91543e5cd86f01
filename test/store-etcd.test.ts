import { Etcd3 } from 'etcd3';
import t from 'tap';
import { type Binding } from '../src/bindings/binding.js';
import { EtcdBindings, type Snapshot } from '../src/store/etcd.js';
import { bind, randomBindings, rng } from './helpers/bindings.js';
import { etcdForFile } from './helpers/etcd.js';

const sorted = (bs: readonly Binding[]): string[] => bs.map((b) => `${b.key()} ${b.label}`).sort();

/** Resolves with the first snapshot `ok` accepts, collecting every one the watch delivered. */
function until(seen: Snapshot[], ok: (s: Snapshot) => boolean, ms = 20_000): Promise<Snapshot> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = (): void => {
      const hit = seen.find(ok);
      if (hit !== undefined) return resolve(hit);
      if (Date.now() - started > ms) return reject(new Error(`no such snapshot in ${ms} ms (${seen.length} seen)`));
      setTimeout(poll, 20);
    };
    poll();
  });
}

const etcd = await etcdForFile(t);
if (etcd !== undefined) {
  let n = 0;
  // Each test has its own prefix, so tests do not see each other's keys.
  const connect = (host = 'h1'): Promise<EtcdBindings> =>
    EtcdBindings.connect({ endpoints: [etcd.endpoint], prefix: `/t${++n}`, host }).then((s) => (t.teardown(() => s.close()), s));
  const peer = (prefix: string, host: string): Promise<EtcdBindings> =>
    EtcdBindings.connect({ endpoints: [etcd.endpoint], prefix, host }).then((p) => (t.teardown(() => p.close()), p));

  t.test('100,000 random bindings round-trip through replace and read; a single add at 100,000', async (t) => {
    const store = await connect();
    const table = randomBindings(rng(7), 100_000);
    let start = performance.now();
    const revision = await store.replace('global', table);
    const replaceMs = performance.now() - start;
    start = performance.now();
    const got = await store.read();
    const readMs = performance.now() - start;
    t.ok(got.revision >= revision);
    t.same(sorted(got.bindings), sorted(table), 'the same bindings, labels included');
    start = performance.now();
    await store.add('global', bind('added', 'tcp', '203.0.113.0/24', 443));
    const addMs = performance.now() - start;
    const after = await store.read();
    t.equal(after.bindings.length, 100_001);
    t.comment(`100k: replace ${replaceMs.toFixed(0)} ms, read ${readMs.toFixed(0)} ms, single add ${addMs.toFixed(1)} ms`);
  });

  t.test("a host's scope is layered over the global one: on the same key the host's label wins", async (t) => {
    const store = await connect('h1');
    await store.replace('global', [bind('g', 'tcp', '192.0.2.0/24', 0), bind('g', 'tcp', '198.51.100.0/24', 443)]);
    await store.replace({ host: 'h1' }, [bind('h', 'tcp', '192.0.2.0/24', 0), bind('h', 'udp', '2001:db8::/32', 53)]);
    await store.replace({ host: 'h2' }, [bind('other', 'tcp', '198.51.100.0/24', 443)]);
    const got = await store.read();
    t.same(
      sorted(got.bindings),
      sorted([bind('h', 'tcp', '192.0.2.0/24', 0), bind('g', 'tcp', '198.51.100.0/24', 443), bind('h', 'udp', '2001:db8::/32', 53)]),
    );
    await store.remove({ host: 'h1' }, bind('h', 'tcp', '192.0.2.0/24', 0));
    const again = await store.read();
    t.equal(again.bindings.find((b) => b.prefix === '192.0.2.0/24')?.label, 'g', 'removed from the host scope: the global binding shows');
  });

  t.test('two writers racing on one key: one wins, the other gets ERR_CONFLICT, nothing lost', async (t) => {
    const a = await connect();
    const b = await peer(`/t${n}`, 'h1');
    await a.replace('global', [bind('base', 'tcp', '192.0.2.0/24', 0)]);
    const { revision } = await a.read();
    const results = await Promise.allSettled([
      a.add('global', bind('from-a', 'tcp', '198.51.100.0/24', 80), revision),
      b.add('global', bind('from-b', 'tcp', '198.51.100.0/24', 80), revision),
    ]);
    t.equal(results.filter((r) => r.status === 'fulfilled').length, 1, 'one wins');
    const lost = results.find((r) => r.status === 'rejected');
    t.match(lost?.reason, { code: 'ERR_CONFLICT', message: new RegExp(`after revision ${revision}`) });
    const other = await b.add('global', bind('from-b', 'tcp', '203.0.113.0/24', 80), revision);
    t.ok(other > revision, 'a change to another key from the same revision goes through');
    const winner = results[0].status === 'fulfilled' ? 'from-a' : 'from-b';
    t.same(
      sorted((await a.read()).bindings),
      sorted([
        bind('base', 'tcp', '192.0.2.0/24', 0),
        bind(winner, 'tcp', '198.51.100.0/24', 80),
        bind('from-b', 'tcp', '203.0.113.0/24', 80),
      ]),
      "nothing lost: the base, the winner's binding, the other key",
    );
    const both = await Promise.allSettled([
      a.replace('global', [], other),
      b.replace('global', [bind('x', 'udp', '10.0.0.0/8', 0)], other),
    ]);
    t.equal(
      both.filter((r) => r.status === 'rejected' && (r.reason as { code: string }).code === 'ERR_CONFLICT').length,
      1,
      'racing loads: one conflicts',
    );
    const final = await a.read();
    t.same(
      sorted(final.bindings),
      both[0].status === 'fulfilled' ? [] : sorted([bind('x', 'udp', '10.0.0.0/8', 0)]),
      "the winner's load whole, the other's not at all",
    );
  });

  t.test('a watcher sees a 100,000-binding load as one snapshot with all of it', async (t) => {
    const store = await connect();
    const { revision } = await store.read();
    const seen: Snapshot[] = [];
    const watch = store.watch(revision, (s) => seen.push(s));
    t.teardown(() => watch.close());
    const table = randomBindings(rng(11), 100_000);
    const flipped = await store.replace('global', table);
    await until(seen, (s) => s.revision >= flipped);
    t.equal(seen.length, 1, 'one snapshot');
    t.equal(seen[0]!.bindings.length, 100_000, 'all of it');
    const added = performance.now();
    await store.add('global', bind('one', 'tcp', '203.0.113.1/32', 22));
    await until(seen, (s) => s.bindings.length === 100_001);
    t.comment(`a single add at 100k reached the watcher in ${(performance.now() - added).toFixed(0)} ms`);
    await store.remove('global', table[0]!);
    await store.editUpstreams(() => [{ label: 'one', address: 'tcp:127.0.0.1:9', proxy_protocol: 'v2' }]);
    const last = await until(seen, (s) => s.upstreams.length === 1);
    t.equal(last.bindings.length, 100_000, 'the removal followed');
    t.notOk(
      last.bindings.some((b) => b.sameKey(table[0]!)),
      'the removed binding is gone',
    );
    t.ok(
      seen.every((s) => s.bindings.length >= 100_000),
      'never a partial one',
    );
  });

  t.test('malformed data under the prefix gives ERR_STORE naming the key', async (t) => {
    const store = await connect();
    const raw = new Etcd3({ hosts: [etcd.endpoint] });
    t.teardown(() => raw.close());
    const prefix = `/t${n}`;
    await raw.put(`${prefix}/live/global/current`).value('{"gen":"g1","chunks":1}');
    await raw.put(`${prefix}/data/global/g1/0`).value('{"bindings":[{"label":"a","protocol":"tcp","prefix":"300.0.0.0/8","port":0}]}');
    await t.rejects(store.read(), { code: 'ERR_STORE', message: /etcd key \/t\d+\/data\/global\/g1\/0: .*300\.0\.0\.0/ });
    await raw.put(`${prefix}/data/global/g1/0`).value('{"bindings":[');
    await t.rejects(store.read(), { code: 'ERR_STORE', message: /g1\/0: not JSON/ });
    await raw.put(`${prefix}/live/global/current`).value('{"gen":"g2","chunks":2}');
    await t.rejects(store.read(), { code: 'ERR_STORE', message: /g2\/0: missing/ });
    await raw.put(`${prefix}/live/global/current`).value('"g1"');
    await t.rejects(store.read(), { code: 'ERR_STORE', message: /global\/current: not a generation pointer/ });
    await raw.put(`${prefix}/live/global/current`).value('{"gen":"g1","chunks":0}');
    await raw.put(`${prefix}/live/global/o/g1/tcp,10.0.0.0/8,0`).value('{"label":"a","protocol":"tcp","prefix":"11.0.0.0/8","port":0}');
    await t.rejects(store.read(), { code: 'ERR_STORE', message: /not the binding the key names/ });
    await raw.delete().prefix(`${prefix}/live/global/`);
    await raw.put(`${prefix}/live/upstreams`).value('[{"label":"a","address":"ftp:x"}]');
    await t.rejects(store.read(), { code: 'ERR_STORE', message: /upstreams: \[0\]/ });
  });

  t.test('a watcher resumes after etcd restarts, and resyncs after a compaction past its revision', async (t) => {
    const store = await connect();
    const { revision } = await store.read();
    const seen: Snapshot[] = [];
    const errors: Error[] = [];
    const watch = store.watch(revision, (s) => seen.push(s), { onError: (e) => errors.push(e) });
    t.teardown(() => watch.close());
    await store.replace('global', [bind('before', 'tcp', '192.0.2.0/24', 0)]);
    await until(seen, (s) => s.bindings.length === 1);

    await etcd.kill();
    await etcd.run();
    const writer = await peer(`/t${n}`, 'h2');
    await writer.add('global', bind('during', 'tcp', '198.51.100.0/24', 0));
    await until(seen, (s) => s.bindings.some((b) => b.label === 'during'));
    t.pass('resumed after the restart');

    // A watch from a revision compacted away stands in for one that was away during the compaction.
    const raw = new Etcd3({ hosts: [etcd.endpoint] });
    t.teardown(() => raw.close());
    const old = (await store.read()).revision;
    await writer.add('global', bind('later', 'udp', '203.0.113.0/24', 53));
    const latest = (await store.read()).revision;
    await raw.kv.compact({ revision: String(latest), physical: true });
    const late: Snapshot[] = [];
    const resync = store.watch(old, (s) => late.push(s));
    t.teardown(() => resync.close());
    const got = await until(late, (s) => s.bindings.some((b) => b.label === 'later'));
    t.ok(got.revision >= latest, 'a full read at or past the compaction');
    t.same(errors, []);
  });
}
