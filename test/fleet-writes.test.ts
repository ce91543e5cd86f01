import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { type BindingJSON } from '../src/bindings/binding.js';
import { ControlClient } from '../src/control/client.js';
import { rng } from './helpers/bindings.js';
import { daemonCommand, daemonIn, dispatcher, exitWithin, tempDir } from './helpers/daemon.js';
import { etcdForFile } from './helpers/etcd.js';
import { allServe, lines, printedRevision, servedLines, startTwo, storeCli, storeClient } from './helpers/fleet.js';

const etcd = await etcdForFile(t);
if (etcd !== undefined) {
  // Each test has a prefix of its own: a fleet of its own.
  t.test('bad input is refused with a reason and exit 2, and changes nothing', async (t) => {
    const url = etcd.storeUrl('/input');
    const store = await storeClient(t, url);
    await store.addBinding({ label: 'web', protocol: 'tcp', prefix: '192.0.2.0/24', port: 80 }, {});
    const before = { fleet: await store.fleet(), list: await store.listBindings() };
    const port = new URL(etcd.endpoint).port;
    const add = ['bind', 'add', 'api', 'tcp', '198.51.100.0/24', '80'];

    const stores: [string, RegExp][] = [
      ['etcd://', /--store "etcd:\/\/" is not etcd:\/\/HOST:PORT\[,HOST:PORT\.\.\.\]\/PREFIX/],
      ['http://x:1/p', /--store "http:\/\/x:1\/p" is not etcd:\/\//],
      ['etcd://h:99999/p', /"h:99999" is not HOST:PORT/],
      [`etcd://127.0.0.1:${port}`, /is not etcd:\/\/HOST:PORT\[,HOST:PORT\.\.\.\]\/PREFIX/],
      [`etcd://127.0.0.1:${port}/`, /the prefix must be \/NAME/],
      [`etcd://127.0.0.1:${port}/bad prefix!`, /the prefix must be \/NAME/],
      [`etcd://127.0.0.1:${port},/p`, /"" is not HOST:PORT/],
    ];
    const cases: [string[], RegExp][] = [
      ...stores.map(([bad, re]): [string[], RegExp] => [[...add, '--store', bad], re]),
      [[...add, '--store', url, '--host', 'bad host!'], /host "bad host!" is not 1-253 characters of A-Z a-z 0-9 \. _ -/],
      [[...add, '--store', url, '--if-revision', 'abc'], /--if-revision "abc" is not a revision/],
      [[...add, '--store', url, '--if-revision', '0'], /--if-revision "0" is not a revision/],
      [[...add, '--store', url, '--store-cert', '/dev/null'], /--store-cert and --store-key need --store-ca/],
      [[...add, '--store', url, '--store-ca', '/nonexistent/ca.pem'], /--store-ca \/nonexistent\/ca\.pem: ENOENT/],
      [['bind', 'list', '--store', url, '--host', '../b'], /host "\.\.\/b" is not/],
      [['fleet', 'wait', 'abc', '--store', url], /revision "abc" is not a revision/],
      [['fleet', 'wait', '--timeout', '0', '--store', url], /--timeout "0" is not a number of seconds/],
    ];
    // Four at a time: each is a CLI run of its own.
    for (let i = 0; i < cases.length; i += 4) {
      const batch = cases.slice(i, i + 4);
      const runs = await Promise.all(batch.map(([args]) => dispatcher(args)));
      runs.forEach((r, j) => {
        const [args, re] = batch[j]!;
        t.equal(r.code, 2, `${args.join(' ')}: exit 2`);
        t.match(r.stderr, re, args.join(' '));
        t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
      });
    }
    t.same(await store.fleet(), before.fleet, 'the store did not move');
    t.same(await store.listBindings(), before.list, 'its bindings are the same');

    // A daemon with a bad --store refuses to start and says why.
    const dir = await tempDir(t);
    const cmd = daemonCommand(dir, ['--store', 'http://x:1/p']);
    const child = spawn(cmd.command[0]!, cmd.command.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    t.equal(await exitWithin(new Promise((r) => child.once('exit', r)), 10_000), 2, 'dispatcher daemon --store http://x:1/p exits 2');
    t.match(stderr, /--store "http:\/\/x:1\/p" is not etcd:\/\//);

    // A daemon with no store takes neither a host nor a revision.
    const plain = await daemonIn(t);
    await plain.cli('bind', 'add', 'web', 'tcp', '192.0.2.0/24', '80');
    const state = await readFile(join(plain.stateDir, 'state.json'), 'utf8');
    for (const extra of [
      ['--host', 'b'],
      ['--if-revision', '3'],
    ]) {
      const r = await plain.cli(...add, ...extra);
      t.equal(r.code, 2);
      t.match(r.stderr, /need a daemon that follows a store .*: or give the CLI --store/, `${extra.join(' ')} to a daemon without a store`);
    }
    const fleet = await plain.cli('fleet');
    t.equal(fleet.code, 2);
    t.match(fleet.stderr, /this daemon follows no store/);
    await t.rejects(
      new ControlClient(plain.control).addBinding({ label: 'api', protocol: 'tcp', prefix: '198.51.100.0/24', port: 80 }, { host: 'b' }),
      { code: 'ERR_NO_STORE' },
    );
    t.equal(await readFile(join(plain.stateDir, 'state.json'), 'utf8'), state, "that daemon's bindings are unchanged");
  });

  t.test('random adds and removes in the global and host sets: each daemon serves the global set with its own over it', async (t) => {
    const url = etcd.storeUrl('/random');
    const store = await storeClient(t, url);
    const [a, b] = await startTwo(t, url);
    const seed = Number(process.env['FLEET_SEED'] ?? 15);
    t.comment(`seed ${seed} (FLEET_SEED replays another)`);
    const rand = rng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    // Few keys, so that sets overlap and labels change; nested prefixes, both families and protocols.
    const keys: Omit<BindingJSON, 'label'>[] = [
      { protocol: 'tcp', prefix: '192.0.2.0/24', port: 0 },
      { protocol: 'tcp', prefix: '192.0.2.0/25', port: 80 },
      { protocol: 'tcp', prefix: '192.0.2.7/32', port: 80 },
      { protocol: 'udp', prefix: '192.0.2.0/24', port: 53 },
      { protocol: 'tcp', prefix: '2001:db8::/32', port: 0 },
      { protocol: 'tcp', prefix: '2001:db8::/48', port: 443 },
      { protocol: 'udp', prefix: '2001:db8::1/128', port: 53 },
      { protocol: 'tcp', prefix: '198.51.100.0/24', port: 80 },
      { protocol: 'udp', prefix: '203.0.113.0/24', port: 0 },
    ];
    const id = (k: Omit<BindingJSON, 'label'>): string => `${k.protocol} ${k.prefix} ${k.port}`;
    type Scope = 'global' | 'a' | 'b';
    const expected: Record<Scope, Map<string, BindingJSON>> = { global: new Map(), a: new Map(), b: new Map() };
    const layered = (host: 'a' | 'b'): string[] => lines([...new Map([...expected.global, ...expected[host]]).values()]);
    const counts = { add: 0, remove: 0, refused: 0, cli: 0, daemon: 0 };
    let last = (await store.fleet()).revision;

    for (let step = 0; step < 40; step++) {
      const scope = pick<Scope>(['global', 'global', 'a', 'b']);
      const set = expected[scope];
      const existing = [...set.values()];
      const removing = existing.length > 0 && rand() < 0.4;
      const wrong = rand() < 0.1;
      // A wrong removal names another label, or a key the set does not have.
      const absent = keys.filter((k) => !set.has(id(k)));
      let binding: BindingJSON;
      if (removing && !wrong) binding = pick(existing);
      else if (removing)
        binding = absent.length > 0 && rand() < 0.5 ? { ...pick(absent), label: 'x' } : { ...pick(existing), label: 'nobody' };
      else binding = { ...pick(keys), label: pick(['x', 'y', 'z']) };
      const host = scope === 'global' ? [] : ['--host', scope];
      const via = pick(['a', 'b', 'a', 'b', 'a', 'b', 'cli']);
      const what = `step ${step}: ${removing ? 'rm' : 'add'} ${lines([binding])[0]} in ${scope} via ${via}`;
      let revision: number | undefined;
      let error: string | undefined;
      if (via === 'cli') {
        counts.cli++;
        const args = [removing ? 'rm' : 'add', binding.label, binding.protocol, binding.prefix, String(binding.port), ...host];
        const r = await storeCli(url, 'bind', ...args);
        if (r.code === 0) revision = printedRevision(r);
        else error = r.stderr;
      } else {
        counts.daemon++;
        const m = via === 'a' ? a : b;
        const w = scope === 'global' ? {} : { host: scope };
        const call = removing ? m.api.removeBinding(binding, w) : m.api.addBinding(binding, w);
        await call.then(
          (r) => (revision = r.revision),
          (err: Error) => (error = err.message),
        );
      }
      if (removing && wrong) {
        counts.refused++;
        t.match(error, binding.label === 'nobody' ? /is bound to "[xyz]", not "nobody"/ : /no binding for /, `${what}: refused`);
        t.equal(revision, undefined);
        t.equal((await store.fleet()).revision, last, 'the store did not move');
        continue;
      }
      t.equal(error, undefined, what);
      if (removing) set.delete(id(binding));
      else set.set(id(binding), binding);
      counts[removing ? 'remove' : 'add']++;
      last = revision!;
      await allServe([a, b], last);
      const [sa, sb] = await Promise.all([servedLines(a), servedLines(b)]);
      if (JSON.stringify(sa) !== JSON.stringify(layered('a')) || JSON.stringify(sb) !== JSON.stringify(layered('b'))) {
        t.same({ a: sa, b: sb }, { a: layered('a'), b: layered('b') }, `${what}: the daemons serve the layered sets`);
        break;
      }
    }
    t.comment(`${JSON.stringify(counts)}; final: ${expected.global.size} global, ${expected.a.size} on a, ${expected.b.size} on b`);
    t.same(await servedLines(a), layered('a'), 'a serves the global set with its own over it');
    t.same(await servedLines(b), layered('b'), 'b serves the global set with its own over it');
    for (const scope of ['global', 'a', 'b'] as const) {
      const list = await store.listBindings({}, scope === 'global' ? undefined : scope);
      t.same(lines(list.bindings), lines([...expected[scope].values()]), `the store's ${scope} set`);
    }
  });
}
