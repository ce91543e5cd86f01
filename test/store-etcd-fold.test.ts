import { Etcd3 } from 'etcd3';
import t from 'tap';
import { type Binding } from '../src/bindings/binding.js';
import { EtcdBindings } from '../src/store/etcd.js';
import { bind } from './helpers/bindings.js';
import { etcdForFile } from './helpers/etcd.js';

const etcd = await etcdForFile(t);
if (etcd !== undefined) {
  const raw = new Etcd3({ hosts: [etcd.endpoint] });
  t.teardown(() => raw.close());
  const open = (prefix: string): Promise<EtcdBindings> =>
    EtcdBindings.connect({ endpoints: [etcd.endpoint], prefix, host: 'h1' }).then((s) => (t.teardown(() => s.close()), s));
  const pointer = async (prefix: string): Promise<{ gen: string; chunks: number }> =>
    JSON.parse((await raw.get(`${prefix}/live/global/current`).string())!) as { gen: string; chunks: number };
  const sorted = (bs: readonly Binding[]): string[] => bs.map((b) => `${b.key()} ${b.label}`).sort();
  // The i-th /32 of 198.18.0.0/15.
  const nth = (label: string, i: number): Binding => bind(label, 'tcp', `198.${18 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`, 80);

  t.test('past 1,000 overlays a write folds them into a new generation; two writers at once lose nothing', async (t) => {
    const prefix = '/fold';
    const [a, b] = [await open(prefix), await open(prefix)];
    await a.replace('global', [nth('base', 0), nth('base', 1)]);
    const first = await pointer(prefix);
    // Two writers, four writes in flight each, 1,100 single adds in all: the fold happens while they write.
    const writes: Promise<number>[] = [];
    const expected = [nth('base', 0), nth('base', 1)];
    for (let w = 0; w < 2; w++) {
      const store = w === 0 ? a : b;
      writes.push(
        (async () => {
          let done = 0;
          for (let i = w; i < 1100; i += 8) {
            await Promise.all([0, 2, 4, 6].map((j) => (i + j < 1100 ? store.add('global', nth(`w${w}`, 2 + i + j)) : Promise.resolve(0))));
            done++;
          }
          return done;
        })(),
      );
      for (let i = w; i < 1100; i += 2) expected.push(nth(`w${w}`, 2 + i));
    }
    await Promise.all(writes);
    const after = await pointer(prefix);
    t.not(after.gen, first.gen, 'the overlays were folded into a new generation');
    t.ok(after.chunks >= 1, `${after.chunks} chunk(s)`);
    const overlays = await raw.getAll().prefix(`${prefix}/live/global/o/`).keys();
    t.ok(overlays.length < 1000, `${overlays.length} overlays left (all of the current generation)`);
    t.ok(
      overlays.every((k) => k.includes(`/o/${after.gen}/`)),
      'no overlay of an old generation is left',
    );
    t.same(sorted((await a.read()).bindings), sorted(expected), 'every write is there, none lost to the fold');
    const oldChunks = await raw.getAll().prefix(`${prefix}/data/global/${first.gen}/`).keys();
    t.same(oldChunks, [], "the old generation's chunks are gone");
  });

  t.test('a generation no pointer names, ten minutes old, goes at the next load; a younger one stays', async (t) => {
    const prefix = '/abandoned';
    const store = await open(prefix);
    await store.replace('global', [nth('x', 0)]);
    const old = `${(Date.now() - 11 * 60_000).toString(36)}-deadbeef`;
    const young = `${(Date.now() - 60_000).toString(36)}-0badf00d`;
    await raw.put(`${prefix}/data/global/${old}/0`).value('{"bindings":[]}');
    await raw.put(`${prefix}/data/global/${young}/0`).value('{"bindings":[]}');
    await store.replace('global', [nth('y', 0)]);
    t.same(await raw.getAll().prefix(`${prefix}/data/global/${old}/`).keys(), [], 'the abandoned one is swept');
    t.same(
      await raw.getAll().prefix(`${prefix}/data/global/${young}/`).keys(),
      [`${prefix}/data/global/${young}/0`],
      'a writer of ten minutes ago may still flip it',
    );
    t.same(sorted((await store.read()).bindings), sorted([nth('y', 0)]));
  });
}
