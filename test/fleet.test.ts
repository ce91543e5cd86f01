import t from 'tap';
import { type FleetResponse } from '../src/control/protocol.js';
import { type BindingsJSON } from './helpers/daemon.js';
import { etcdForFile } from './helpers/etcd.js';
import {
  allServe,
  lines,
  printedRevision,
  servedBy,
  servedLines,
  startTwo,
  storeCli,
  storeClient,
  until,
  workerOf,
} from './helpers/fleet.js';
import { randomPort } from './helpers/services.js';

const etcd = await etcdForFile(t);
if (etcd !== undefined) {
  // Each test has a prefix of its own: a fleet of its own.
  t.test('two daemons on one store: a change through one reaches the other; a host set wins on its keys', async (t) => {
    const url = etcd.storeUrl('/two');
    const store = await storeClient(t, url);
    const [a, b] = await startTwo(t, url);
    const port = randomPort();
    const [webA, webB, canaryB] = await Promise.all([workerOf(t, a, 'web'), workerOf(t, b, 'web'), workerOf(t, b, 'canary')]);

    const started = performance.now();
    const add = await a.cli('bind', 'add', 'web', 'tcp', '127.0.0.0/8', String(port));
    t.equal(add.code, 0, add.stderr);
    const revision = printedRevision(add);
    const answered = performance.now() - started;
    t.equal((await a.api.lookup('tcp', '127.0.0.1', port)).label, 'web', 'a serves the change once it answers');
    t.ok((await a.store()).revision >= revision);
    const bServes = await allServe([b], revision);
    t.comment(`bind add through a: answered (a serving it) in ${answered.toFixed(0)} ms; b served it ${bServes.toFixed(0)} ms later`);
    t.same(await servedBy(b, port), { label: 'web', pid: webB.pid }, "a connection to b's listener goes to b's web worker");
    t.same(await servedBy(a, port), { label: 'web', pid: webA.pid }, "and one to a's, to a's");

    const host = await a.cli('bind', 'add', 'canary', 'tcp', '127.0.0.0/8', String(port), '--host', 'b');
    t.equal(host.code, 0, host.stderr);
    await allServe([a, b], printedRevision(host));
    t.same(await servedBy(b, port), { label: 'canary', pid: canaryB.pid }, "b's own binding wins over the global one on the same key");
    t.same(await servedBy(a, port), { label: 'web', pid: webA.pid }, 'a still serves the global one');

    // A daemon tells the store what it serves just after it serves it.
    await until('both current in the store', async () => (await store.fleet()).hosts.every((h) => h.state === 'current'));
    // Read-only: at once.
    const [own, global, list, fleetRun, table] = await Promise.all([
      storeCli(url, 'bind', 'list', '--host', 'b', '--json'),
      storeCli(url, 'bind', 'list', '--json'),
      a.cli('bind', 'list', '--host', 'b'),
      a.cli('fleet', '--json'),
      storeCli(url, 'fleet'),
    ]);
    t.same(
      (JSON.parse(own.stdout) as BindingsJSON).bindings,
      [{ label: 'canary', protocol: 'tcp', prefix: '127.0.0.0/8', port }],
      "b's own set",
    );
    t.same(
      (JSON.parse(global.stdout) as BindingsJSON).bindings,
      [{ label: 'web', protocol: 'tcp', prefix: '127.0.0.0/8', port }],
      'the global set',
    );
    t.equal(list.code, 2, "a host's own set needs --store");
    t.match(list.stderr, /give --store/);
    const fleet = JSON.parse(fleetRun.stdout) as FleetResponse;
    t.same(
      fleet.hosts.map((h) => [h.host, h.state, h.lag, h.record?.bindings]),
      [
        ['a', 'current', 0, 1],
        ['b', 'current', 0, 1],
      ],
      'fleet: both current',
    );
    t.match(table.stdout, new RegExp(`^store revision ${fleet.revision}: 2 current, 0 stale, 0 failing, 0 missing\\n`));
    const [wait, late] = await Promise.all([
      storeCli(url, 'fleet', 'wait', '--timeout', '10'),
      storeCli(url, 'fleet', 'wait', '999999', '--timeout', '1'),
    ]);
    t.equal(wait.code, 0, wait.stderr);
    t.match(wait.stdout, new RegExp(`^every live host serves revision ${fleet.revision} \\(`));
    t.equal(late.code, 2, 'fleet wait for a revision nobody serves exits 2');
    t.match(late.stderr, /after [0-9.]+ s, 2 live host\(s\) do not serve revision 999999: a \(at [0-9]+\), b \(at [0-9]+\)/);

    await b.stop();
    const missing = await until('b shows as missing', async () => {
      const f = await store.fleet();
      return f.hosts.find((h) => h.host === 'b')?.state === 'missing' && f;
    });
    t.same(
      missing.hosts.map((h) => [h.host, h.state]),
      [
        ['a', 'current'],
        ['b', 'missing'],
      ],
      'a stopped daemon shows as missing',
    );
    const waitLive = await storeCli(url, 'fleet', 'wait', '--timeout', '5');
    t.equal(waitLive.code, 0, 'a missing host is not waited for');
  });

  t.test('writers racing from one revision: one wins a key, the other gets ERR_CONFLICT; different keys both go through', async (t) => {
    const url = etcd.storeUrl('/race');
    const [a, b] = await startTwo(t, url);
    const base = printedRevision(await storeCli(url, 'bind', 'add', 'base', 'tcp', '192.0.2.0/24'));
    const key = ['tcp', '198.51.100.0/24', '80'];

    // Through the CLI straight to the store, at once.
    const race = await Promise.all(
      ['one', 'two'].map((label) => storeCli(url, 'bind', 'add', label, ...key, '--if-revision', String(base))),
    );
    t.same(race.map((r) => r.code).sort(), [0, 2], 'one wins, the other exits 2');
    const winner = race[0]!.code === 0 ? 'one' : 'two';
    const loser = race.find((r) => r.code === 2)!;
    t.comment(`the loser said: ${loser.stderr.trim()}`);
    t.match(loser.stderr, new RegExp(`was changed at revision [0-9]+ by another writer, after revision ${base} this change was based on`));
    t.match(
      loser.stderr,
      new RegExp(`/race/live/global/o/[^/]+/tcp,198\\.51\\.100\\.0/24,80 was changed`),
      // A loser that read the winner's key before its transaction named the scope's pointer instead (fixed).
      'names the key it lost on',
    );

    // Through the two daemons, at once, on another key.
    const other = ['tcp', '203.0.113.0/24', '443'];
    const viaDaemons = await Promise.all([
      a.cli('bind', 'add', 'from-a', ...other, '--if-revision', String(base)),
      b.cli('bind', 'add', 'from-b', ...other, '--if-revision', String(base)),
    ]);
    t.same(viaDaemons.map((r) => r.code).sort(), [0, 2], 'through the daemons: one wins, the other exits 2');
    const daemonWinner = viaDaemons[0].code === 0 ? 'from-a' : 'from-b';
    t.match(viaDaemons.find((r) => r.code === 2)!.stderr, new RegExp(`after revision ${base} this change was based on`));

    // Different keys from the same base revision: nothing lost.
    const apart = await Promise.all([
      storeCli(url, 'bind', 'add', 'left', 'udp', '192.0.2.53', '53', '--if-revision', String(base)),
      b.cli('bind', 'add', 'right', 'udp', '198.51.100.53', '53', '--if-revision', String(base)),
    ]);
    t.same(
      apart.map((r) => r.code),
      [0, 0],
      `two writers of different keys from one revision both succeed ${apart.map((r) => r.stderr).join('')}`,
    );
    await allServe([a, b], Math.max(...apart.map(printedRevision)));
    const expected = lines([
      { label: 'base', protocol: 'tcp', prefix: '192.0.2.0/24', port: 0 },
      { label: winner, protocol: 'tcp', prefix: '198.51.100.0/24', port: 80 },
      { label: daemonWinner, protocol: 'tcp', prefix: '203.0.113.0/24', port: 443 },
      { label: 'left', protocol: 'udp', prefix: '192.0.2.53/32', port: 53 },
      { label: 'right', protocol: 'udp', prefix: '198.51.100.53/32', port: 53 },
    ]);
    for (const m of [a, b]) t.same(await servedLines(m), expected, `${m.host} serves the winners' changes and both different keys`);

    // A stale revision is refused for a removal too, and changes nothing.
    const stale = await a.cli('bind', 'rm', winner, ...key, '--if-revision', String(base));
    t.equal(stale.code, 2);
    t.match(stale.stderr, /changed at revision [0-9]+ by another writer/);
    t.same(await servedLines(a), expected, 'still bound');
  });
}
