import t from 'tap';
import { type ServicesJSON, startDaemon, tempDir } from './helpers/daemon.js';
import { openFds, settledFds } from './helpers/native.js';
import { flood, randomPort, request, sleep, startWorker } from './helpers/services.js';

t.test('SIGKILL under load: a restart has the same bindings, and the workers come back by themselves', async (t) => {
  const dir = await tempDir(t);
  const d = await startDaemon(dir);
  const port = randomPort();
  await d.cli('bind', 'add', 'web', 'tcp', '127.0.0.0/8', String(port));
  await d.cli('bind', 'add', 'dns', 'udp', '127.0.0.53', '5353');
  const before = (await d.cli('bind', 'export')).stdout;
  const worker = await startWorker('web', d.services);
  t.teardown(() => worker.stop());

  let running = true;
  let served = 0;
  let failed = 0;
  const client = async (): Promise<void> => {
    while (running) {
      await request('127.0.0.9', port, { timeoutMs: 3000 }).then(
        () => served++,
        () => failed++,
      );
    }
  };
  const clients = Promise.all([client(), client()]);
  await sleep(300);
  await d.stop('SIGKILL');
  const d2 = await startDaemon(dir);
  t.teardown(() => d2.stop());
  await sleep(1000);
  running = false;
  await clients;
  t.equal((await d2.cli('bind', 'export')).stdout, before, 'the bindings are exactly the ones before the crash');
  const services = JSON.parse((await d2.cli('services', '--json')).stdout) as ServicesJSON;
  t.same(
    services.workers.map((w) => w.pid),
    [worker.pid],
    'the worker re-registered without a restart',
  );
  t.equal((await request('127.0.0.9', port)).pid, worker.pid, 'and serves');
  t.ok(served > 0, `${served} connections served`);
  t.comment(`connections that failed while no daemon ran: ${failed}`);
});

t.test('a flood of more connections than the descriptor limit: the daemon survives, recovers and leaks nothing', async (t) => {
  const dir = await tempDir(t);
  const port = randomPort();
  // The daemon gets 96 descriptors; the flood brings 400 connections at once.
  const d = await startDaemon(dir, ['--queue-timeout', '1000'], { prefix: ['prlimit', '--nofile=96', '--'] });
  t.teardown(() => d.stop());
  await d.cli('bind', 'add', 'web', 'tcp', '127.0.0.1', String(port));
  const baseline = await settledFds(d.process.pid!);
  const outcomes = await flood(port, 400, 5000, 'timeout');
  t.ok(
    outcomes.every((o) => o === 'ECONNRESET' || o === 'closed'),
    `every flooded connection ended cleanly (${[...new Set(outcomes)].join(', ')})`,
  );
  t.equal(d.process.exitCode, null, 'the daemon is alive');
  t.match(d.stderr(), /out of descriptors/, 'and said it ran out');
  const w = await startWorker('web', d.services);
  t.teardown(() => w.stop());
  t.equal((await request('127.0.0.1', port)).pid, w.pid, 'it serves again after the flood');
  let now = 0;
  for (let i = 0; i < 50 && (now = openFds(d.process.pid)) > baseline + 2; i++) await sleep(100);
  t.ok(now <= baseline + 2, `descriptors back to baseline (${baseline} before, ${now} after, the worker's connection included)`);
});
