import t from 'tap';
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { daemonIn, type ServicesJSON, startDaemon, type StatusJSON, tempDir } from './helpers/daemon.js';
import { openFds, settledFds } from './helpers/native.js';
import { randomPort, request, sleep, startWorker } from './helpers/services.js';

t.test('connections land where the bindings say, and the service sees the real client', async (t) => {
  const d = await daemonIn(t);
  const port = randomPort();
  const other = port + 1;
  await d.cli('bind', 'add', 'web', 'tcp', '127.0.0.0/8', String(port));
  await d.cli('bind', 'add', 'api', 'tcp', '127.0.0.2', '0');
  await d.cli('bind', 'add', 'api', 'tcp', '127.0.0.3', String(other));
  await d.cli('bind', 'add', 'web', 'tcp', '::1', String(port));
  const web = await startWorker('web', d.services);
  const api = await startWorker('api', d.services);
  t.teardown(() => Promise.all([web.stop(), api.stop()]));

  const a = await request('127.0.0.1', port, { localAddress: '127.0.0.9' });
  t.equal(a.label, 'web', '127.0.0.1 is only in the /8');
  t.equal(a.pid, web.pid);
  t.same(a.client, a.self, 'the header names the real client address and port');
  t.same(a.local, { address: '127.0.0.1', port }, 'and the address the client dialled');
  t.equal(a.remote.port, a.self.port, "the service's socket is the client's connection itself");

  t.equal((await request('127.0.0.2', port)).label, 'api', 'the port-0 /32 beats the /8 on its port');
  t.equal((await request('127.0.0.3', port)).label, 'web');
  t.equal((await request('127.0.0.3', other)).label, 'api', 'a second port gets its own listener');
  t.equal((await request('127.0.0.2', other)).label, 'api', 'port 0 covers every port that has a listener');
  const v6 = await request('::1', port);
  t.equal(v6.label, 'web');
  t.equal(v6.local.address, '::1');

  await t.rejects(request('127.0.0.1', other), { code: 'ECONNRESET' }, 'no binding: reset at once');
  const status = JSON.parse((await d.cli('status', '--json')).stdout) as StatusJSON;
  t.equal(status.connections.misses, 1);
  t.equal(status.connections.handoffs, 6);
  t.same(
    status.connections.by_label,
    { 'tcp web': { lookups: 3, handoffs: 3, resets: 0 }, 'tcp api': { lookups: 3, handoffs: 3, resets: 0 } },
    'per label at a glance',
  );
  t.same(
    status.listeners.map((l) => [l.port, l.state]),
    [
      [port, 'listening'],
      [other, 'listening'],
    ],
  );
  const services = JSON.parse((await d.cli('services', '--json')).stdout) as ServicesJSON;
  t.same(services.workers.map((w) => [w.label, w.pid]).sort(), [
    ['api', api.pid],
    ['web', web.pid],
  ]);

  // Removing the last binding of a port closes its listener, and nothing else.
  await d.cli('bind', 'rm', 'api', 'tcp', '127.0.0.3', String(other));
  await t.rejects(request('127.0.0.3', other), { code: 'ECONNREFUSED' });
  t.equal((await request('127.0.0.3', port)).label, 'web');
});

t.test('several workers of a label share its connections', async (t) => {
  const d = await daemonIn(t);
  const port = randomPort();
  await d.cli('bind', 'add', 'web', 'tcp', '127.0.0.1', String(port));
  const workers = await Promise.all([startWorker('web', d.services), startWorker('web', d.services)]);
  t.teardown(() => Promise.all(workers.map((w) => w.stop())));
  const pids = new Set<number>();
  for (let i = 0; i < 10; i++) pids.add((await request('127.0.0.1', port)).pid);
  t.same([...pids].sort(), workers.map((w) => w.pid).sort(), 'round robin reaches both');
});

t.test('live rebinding under load: nothing lost, every connection served by a bound label', async (t) => {
  const d = await daemonIn(t);
  const port = randomPort();
  await d.cli('bind', 'add', 'a', 'tcp', '127.0.0.0/8', String(port));
  const a = await startWorker('a', d.services);
  const b = await startWorker('b', d.services);
  t.teardown(() => Promise.all([a.stop(), b.stop()]));

  let running = true;
  const seen = { a: 0, b: 0 } as Record<string, number>;
  const failures: string[] = [];
  const client = async (): Promise<void> => {
    while (running) {
      try {
        seen[(await request('127.0.0.2', port)).label]!++;
      } catch (err) {
        failures.push((err as NodeJS.ErrnoException).code ?? String(err));
      }
    }
  };
  const clients = Promise.all([client(), client(), client(), client()]);
  for (let i = 0; i < 6; i++) {
    t.equal((await d.cli('bind', 'add', 'b', 'tcp', '127.0.0.2', String(port))).code, 0);
    await sleep(150);
    t.equal((await d.cli('bind', 'rm', 'b', 'tcp', '127.0.0.2', String(port))).code, 0);
    await sleep(150);
  }
  running = false;
  await clients;
  t.same(failures, [], 'no connection failed');
  t.ok(seen['a']! > 0 && seen['b']! > 0, `both labels served (a ${seen['a']}, b ${seen['b']})`);
  t.same(Object.keys(seen).sort(), ['a', 'b'], 'and nobody else');
});

t.test('a connection made while the only worker restarts is served once it is back', async (t) => {
  const d = await daemonIn(t, ['--queue-timeout', '5000']);
  const port = randomPort();
  await d.cli('bind', 'add', 'web', 'tcp', '127.0.0.1', String(port));
  const first = await startWorker('web', d.services);
  t.equal((await request('127.0.0.1', port)).pid, first.pid);
  await first.stop();
  const pending = request('127.0.0.1', port);
  await sleep(300);
  const services = JSON.parse((await d.cli('services', '--json')).stdout) as ServicesJSON;
  t.same(services.queued, { web: 1 }, 'the connection waits in the label queue');
  const second = await startWorker('web', d.services);
  t.teardown(() => second.stop());
  t.equal((await pending).pid, second.pid, 'and the restarted worker serves it');
});

t.test('the queue is bounded in time and size', async (t) => {
  const d = await daemonIn(t, ['--queue-timeout', '300', '--queue-size', '2']);
  const port = randomPort();
  await d.cli('bind', 'add', 'nobody-home', 'tcp', '127.0.0.1', String(port));
  const results = await Promise.allSettled([0, 1, 2].map(() => request('127.0.0.1', port)));
  t.same(
    results.map((r) => (r.status === 'rejected' ? (r.reason as NodeJS.ErrnoException).code : 'served')),
    ['ECONNRESET', 'ECONNRESET', 'ECONNRESET'],
    'two time out, one finds the queue full',
  );
  const status = JSON.parse((await d.cli('status', '--json')).stdout) as StatusJSON;
  t.equal(status.connections.resets, 3);
});

t.test('a worker killed with hand-offs in flight: descriptors return to baseline, others keep serving', async (t) => {
  const d = await daemonIn(t, ['--queue-timeout', '200']);
  const port = randomPort();
  await d.cli('bind', 'add', 'stuck', 'tcp', '127.0.0.1', String(port));
  await d.cli('bind', 'add', 'fine', 'tcp', '127.0.0.2', String(port));
  const fine = await startWorker('fine', d.services);
  t.teardown(() => fine.stop());
  t.equal((await request('127.0.0.2', port)).label, 'fine');
  const baseline = await settledFds(d.process.pid!);
  const stuck = await startWorker('stuck', d.services, { window: 8 });
  stuck.process.kill('SIGSTOP'); // it takes nothing from its socket now
  // The in-flight ones wait for the kill below, after a CLI call that takes seconds on a loaded machine.
  const attempts = Array.from({ length: 20 }, () =>
    request('127.0.0.1', port, { timeoutMs: 30_000 }).then(
      (served) => `served by ${served.label}`,
      (err: NodeJS.ErrnoException) => err.code,
    ),
  );
  await sleep(500);
  const services = JSON.parse((await d.cli('services', '--json')).stdout) as ServicesJSON;
  const worker = services.workers.find((w) => w.label === 'stuck');
  t.equal(worker?.inflight, 8, 'the stalled worker holds exactly its window');
  stuck.process.kill('SIGKILL');
  await stuck.stop();
  const outcomes = await Promise.all(attempts);
  t.same(
    outcomes.filter((o) => o !== 'ECONNRESET' && o !== 'EOF'),
    [],
    'connections to the dead worker end (in flight: closed with it; queued: reset)',
  );
  t.equal((await request('127.0.0.2', port)).label, 'fine', 'the other worker still serves');
  let now = 0;
  for (let i = 0; i < 50 && (now = openFds(d.process.pid)) !== baseline; i++) await sleep(100);
  t.equal(now, baseline, "the daemon's open descriptors are back at their baseline");
});

t.test('who may register: root and the daemon uid by default; --allow (here from --config) for others', async (t) => {
  const dir = await tempDir(t);
  await chmod(dir, 0o755); // nobody must reach the services socket to be refused by policy
  // The rule comes from a config file: the same options as the flags.
  await writeFile(join(dir, 'config.json'), JSON.stringify({ allow: ['public=65534'] }));
  const d = await startDaemon(dir, ['--config', join(dir, 'config.json')]);
  t.teardown(() => d.stop());
  const asNobody = { uid: 65534, gid: 65534 };
  const refused = await startWorker('web', d.services, { spawn: asNobody, expectExit: true });
  t.equal(await refused.stop(), 3, 'the worker is told and exits');
  t.match(refused.output(), /ERR_NOT_ALLOWED .*uid 65534 may not register label "web"/);
  t.match(d.stderr(), /uid 65534 may not register label/, 'and the daemon logs it');
  const allowed = await startWorker('public', d.services, { spawn: asNobody });
  t.teardown(() => allowed.stop());
  t.match(allowed.output(), /registered public/);
  const status = JSON.parse((await d.cli('status', '--json')).stdout) as StatusJSON;
  t.equal(status.connections.refused, 1);
});

t.test('a port that cannot be bound is reported and retried', async (t) => {
  const d = await daemonIn(t);
  const port = randomPort();
  const squatter = createServer();
  await new Promise<void>((r) => squatter.listen(port, '::', r));
  const add = await d.cli('bind', 'add', 'web', 'tcp', '127.0.0.1', String(port));
  t.equal(add.code, 0, 'the binding is made');
  t.match(add.stderr, new RegExp(`warning: cannot listen on tcp :: port ${port}: EADDRINUSE`));
  let status = JSON.parse((await d.cli('status', '--json')).stdout) as StatusJSON;
  t.equal(status.listeners[0]?.state, 'failed');
  await new Promise<void>((r) => squatter.close(() => r()));
  for (let i = 0; i < 50 && status.listeners[0]?.state !== 'listening'; i++) {
    await sleep(100);
    status = JSON.parse((await d.cli('status', '--json')).stdout) as StatusJSON;
  }
  t.equal(status.listeners[0]?.state, 'listening', 'the daemon takes the port once it is free');
});

t.test('metrics in Prometheus text', async (t) => {
  const dir = await tempDir(t);
  const metricsPort = randomPort();
  const d = await startDaemon(dir, ['--metrics', `127.0.0.1:${metricsPort}`]);
  t.teardown(() => d.stop());
  const port = randomPort();
  await d.cli('bind', 'add', 'web', 'tcp', '127.0.0.1', String(port));
  const w = await startWorker('web', d.services);
  t.teardown(() => w.stop());
  await request('127.0.0.1', port);
  await request('127.0.0.1', port);
  await t.rejects(request('127.0.0.2', port));
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  t.match(text, /dispatcher_handoffs_total\{protocol="tcp",label="web"\} 2/);
  t.match(text, /dispatcher_misses_total\{protocol="tcp"\} 1/);
  t.match(text, /dispatcher_handoff_latency_seconds_count\{label="web"\} 2/);
  t.match(text, /dispatcher_workers\{label="web"\} 1/);
});
