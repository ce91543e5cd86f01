import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { etcdForFile } from './helpers/etcd.js';
import { servedBy, startMember, startTwo, storeCli, storeClient, until, workerOf } from './helpers/fleet.js';
import { randomPort } from './helpers/services.js';

const run = promisify(execFile);

const etcd = await etcdForFile(t);
if (etcd !== undefined) {
  t.test('a frozen daemon shows stale, then missing once its lease expires, then current again; a killed one goes missing', async (t) => {
    const url = etcd.storeUrl('/frozen');
    const store = await storeClient(t, url);
    const [a, b] = await startTwo(t, url);
    const c = await startMember(t, url, 'c', '127.0.0.3');
    const states = async (): Promise<string> => (await store.fleet()).hosts.map((h) => `${h.host} ${h.state}`).join(', ');
    await until('all current', async () => (await states()) === 'a current, b current, c current');

    b.process.kill('SIGSTOP');
    t.teardown(() => b.process.kill('SIGCONT'));
    const frozen = performance.now();
    await c.stop('SIGKILL');
    const revision = (await a.api.addBinding({ label: 'web', protocol: 'tcp', prefix: '192.0.2.0/24', port: randomPort() })).revision!;
    // a serves it once it answers, and tells the store just after.
    await until('a current', async () => (await store.fleet()).hosts.find((h) => h.host === 'a')?.state === 'current');
    const stale = (await store.fleet()).hosts.find((h) => h.host === 'b')!;
    t.match(stale, { state: 'stale', lag: Number }, 'b, frozen, is stale');
    t.ok(stale.lag! >= 1, `${stale.lag} revisions behind`);
    const wait = await storeCli(url, 'fleet', 'wait', String(revision), '--timeout', '1');
    t.equal(wait.code, 2);
    t.match(
      wait.stderr,
      new RegExp(`2 live host\\(s\\) do not serve revision ${revision}: b \\(at ${stale.record!.revision}\\), c \\(at [0-9]+\\)\\n`),
      'names b, and c: killed, it is live until its lease expires',
    );

    await until('b and c missing', async () => (await states()) === 'a current, b missing, c missing', 30_000, 100);
    t.comment(`b and c were missing ${(performance.now() - frozen).toFixed(0)} ms after b froze and c was killed (lease TTL 10 s)`);
    const thawed = performance.now();
    b.process.kill('SIGCONT');
    await until('b current again', async () => (await states()) === 'a current, b current, c missing', 20_000);
    t.comment(`b was current ${(performance.now() - thawed).toFixed(0)} ms after it thawed (a new lease)`);
    t.match(await b.store(), { revision: Number, connected: true, error: null });
    t.ok((await b.store()).revision >= revision, 'b serves the write it missed');
  });

  t.test('a daemon that cannot write its cache shows failing, serves the new revision, and writes it once it can', async (t) => {
    const url = etcd.storeUrl('/failing');
    const store = await storeClient(t, url);
    const [a, b] = await startTwo(t, url);
    const [, , api] = await Promise.all([workerOf(t, a, 'web'), workerOf(t, b, 'web'), workerOf(t, b, 'api')]);
    const port = randomPort();
    await a.api.addBinding({ label: 'web', protocol: 'tcp', prefix: '127.0.0.0/8', port });
    await until('b serves web', async () => (await servedBy(b, port)).label === 'web');

    // b's state file, the store's cache, cannot be written: b serves the revision all the same (the store has
    // it), and says what is wrong, for a restart while etcd is away would serve an older cache.
    t.teardown(() => run('chattr', ['-i', b.stateDir]));
    await run('chattr', ['+i', b.stateDir]);
    const revision = (await a.api.addBinding({ label: 'api', protocol: 'tcp', prefix: '127.0.0.0/8', port })).revision!;
    const failing = await until('b failing', async () => (await store.fleet()).hosts.find((h) => h.host === 'b' && h.state === 'failing'));
    t.match(failing.record!.health, /^state file \(the store's cache\) not written: .*(EPERM|not permitted)/, failing.record!.health);
    t.ok(failing.record!.revision >= revision, `b serves revision ${failing.record!.revision}`);
    t.match(await b.store(), { connected: true, error: /state file/ });
    t.same(await servedBy(b, port), { label: 'api', pid: api.pid }, 'b serves the new revision: a connection goes to api');
    const cached = JSON.parse(await readFile(join(b.stateDir, 'state.json'), 'utf8')) as { origin: { revision: number } };
    t.ok(cached.origin.revision < revision, `the cache still holds revision ${cached.origin.revision}`);

    await run('chattr', ['-i', b.stateDir]);
    const fixed = performance.now();
    await until('b current', async () => (await store.fleet()).hosts.every((h) => h.state === 'current'), 20_000);
    t.comment(`b wrote its cache ${(performance.now() - fixed).toFixed(0)} ms after its state dir was writable again`);
    t.match(await b.store(), { error: null, lag_seconds: 0 });
    const written = JSON.parse(await readFile(join(b.stateDir, 'state.json'), 'utf8')) as { origin: { revision: number } };
    t.ok(written.origin.revision >= revision, `the cache holds revision ${written.origin.revision}`);
  });
}
