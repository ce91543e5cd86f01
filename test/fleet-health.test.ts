import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import { etcdForFile } from './helpers/etcd.js';
import { gauge, servedBy, startMember, startTwo, storeCli, storeClient, until, workerOf } from './helpers/fleet.js';
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

  t.test('a daemon that cannot apply a revision shows failing, keeps serving the last one, and applies it once it can', async (t) => {
    const url = etcd.storeUrl('/failing');
    const store = await storeClient(t, url);
    const [a, b] = await startTwo(t, url);
    const [, web, api] = await Promise.all([workerOf(t, a, 'web'), workerOf(t, b, 'web'), workerOf(t, b, 'api')]);
    const port = randomPort();
    await a.api.addBinding({ label: 'web', protocol: 'tcp', prefix: '127.0.0.0/8', port });
    await until('b serves web', async () => (await servedBy(b, port)).label === 'web');

    // b's state file cannot be written: each revision it applies is saved first, so it cannot apply one.
    t.teardown(() => run('chattr', ['-i', b.stateDir]));
    await run('chattr', ['+i', b.stateDir]);
    const revision = (await a.api.addBinding({ label: 'api', protocol: 'tcp', prefix: '127.0.0.0/8', port })).revision!;
    const failing = await until('b failing', async () => (await store.fleet()).hosts.find((h) => h.host === 'b' && h.state === 'failing'));
    t.match(failing.record!.health, new RegExp(`^revision ${revision} not applied: .*(EPERM|not permitted)`), failing.record!.health);
    const status = await b.store();
    t.match(status, { connected: true, store_revision: revision, error: new RegExp(`revision ${revision} not applied`) });
    t.ok(status.revision < revision, `b still serves revision ${status.revision}`);
    t.same(await servedBy(b, port), { label: 'web', pid: web.pid }, 'and its table: a connection still goes to web');
    await until('b is counted as lagging', async () => ((await gauge(b, 'dispatcher_store_lag_seconds')) ?? 0) > 0);
    const wait = await storeCli(url, 'fleet', 'wait', String(revision), '--timeout', '1');
    t.equal(wait.code, 2);
    t.match(wait.stderr, new RegExp(`b \\(at ${status.revision}: revision ${revision} not applied: `), 'fleet wait names b and why');

    await run('chattr', ['-i', b.stateDir]);
    const fixed = performance.now();
    await until('b current', async () => (await store.fleet()).hosts.every((h) => h.state === 'current'), 20_000);
    t.comment(`b applied it ${(performance.now() - fixed).toFixed(0)} ms after its state dir was writable again`);
    t.match(await b.store(), { revision, error: null, lag_seconds: 0 });
    t.same(await servedBy(b, port), { label: 'api', pid: api.pid }, 'b serves the new revision');
  });
}
