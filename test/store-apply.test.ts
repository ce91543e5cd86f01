import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import t from 'tap';
import { type Binding } from '../src/bindings/binding.js';
import { StateFile } from '../src/store/state-file.js';
import { ChangeStore } from '../src/store/store.js';
import { Table } from '../src/table/table.js';
import { randomBindings, rng } from './helpers/bindings.js';

// A store's revisions applied key by key (what a daemon in a fleet does for single changes) must leave the
// very table a whole rebuild gives, and report the same diff.
t.test('applying changed keys equals rebuilding the whole table', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'apply-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const log = pino({ level: 'silent' });
  const sorted = (bs: readonly Binding[]): string[] => bs.map((b) => `${b.key()} ${b.label}`).sort();
  for (const seed of [1, 2, 3]) {
    const rand = rng(seed);
    const universe = randomBindings(rand, 600);
    const start = universe.slice(0, 300);
    const store = new ChangeStore({
      state: new StateFile(join(dir, `s${seed}`)),
      table: Table.from(start),
      upstreams: [],
      upstreamDir: dir,
      log,
    });
    let expected = new Map(start.map((b) => [b.key(), b]));
    for (let revision = 1; revision <= 40; revision++) {
      // A batch of keys, each once (as the daemon gathers them): some added, some relabelled, some removed,
      // some removed that were not there.
      const batch = new Map<string, { key: Binding; binding: Binding | undefined }>();
      const before = new Map(expected);
      for (let i = 0; i < 1 + Math.floor(rand() * 12); i++) {
        const b = universe[Math.floor(rand() * universe.length)]!;
        const r = rand();
        const binding = r < 0.35 ? undefined : r < 0.7 ? b : b.withLabel(`x${Math.floor(rand() * 5)}`);
        batch.set(b.key(), { key: b, binding });
        if (binding === undefined) expected.delete(b.key());
        else expected.set(b.key(), binding);
      }
      const whole = Table.from(before.values()).diff(Table.from(expected.values()));
      const diff = await store.apply({ upstreams: [], changes: [...batch.values()] }, { store: 'etcd://x/p', revision });
      t.same(sorted(store.table.bindings()), sorted([...expected.values()]), `seed ${seed} revision ${revision}: the table`);
      t.same(sorted(diff!.added), sorted(whole.added), `seed ${seed} revision ${revision}: added`);
      t.same(sorted(diff!.removed), sorted(whole.removed), `seed ${seed} revision ${revision}: removed`);
      expected = new Map(store.table.bindings().map((b) => [b.key(), b]));
    }
    t.equal(store.origin?.revision, 40, 'the revision served is the last applied');
  }
});
