import t from 'tap';
import { startDaemon, type StatusJSON, tempDir } from './helpers/daemon.js';
import { randomPort, request, sleep, startWorker } from './helpers/services.js';

t.test('dispatcher upgrade three times under load: no connection refused or lost', async (t) => {
  const dir = await tempDir(t);
  const d = await startDaemon(dir);
  const port = randomPort();
  await d.cli('bind', 'add', 'web', 'tcp', '127.0.0.0/8', String(port));
  await d.cli('upstream', 'add', 'web-fallback', 'tcp:127.0.0.1:9'); // an upstream, to check it carries over
  const worker = await startWorker('web', d.services);
  t.teardown(() => worker.stop());
  const pids = [d.process.pid!];
  t.teardown(async () => {
    // The last daemon was started by `upgrade`, not by the test: stop it by its pid.
    const status = await d.cli('status', '--json');
    if (status.code === 0) process.kill((JSON.parse(status.stdout) as StatusJSON).pid, 'SIGTERM');
    await sleep(300);
  });

  let running = true;
  let served = 0;
  const failures: string[] = [];
  const client = async (): Promise<void> => {
    while (running) {
      try {
        const r = await request('127.0.0.7', port);
        if (r.label === 'web') served++;
        else failures.push(`served by ${r.label}`);
      } catch (err) {
        failures.push((err as NodeJS.ErrnoException).code ?? String(err));
      }
    }
  };
  const clients = Promise.all([client(), client(), client(), client()]);
  await sleep(300);
  for (let i = 0; i < 3; i++) {
    const up = await d.cli('upgrade');
    t.equal(up.code, 0, `upgrade ${i + 1}: ${up.stderr}`);
    const m = /upgraded: pid (\d+) -> (\d+)/.exec(up.stdout);
    t.ok(m, up.stdout);
    pids.push(Number(m?.[2]));
    await sleep(400);
  }
  running = false;
  await clients;
  t.same(failures, [], 'no connection failed during three upgrades');
  t.ok(served > 100, `${served} connections served throughout`);
  t.equal(new Set(pids).size, 4, 'four daemons, one after another');
  t.equal(await d.stop(), 0, 'the first daemon exited cleanly after handing over');
  const status = JSON.parse((await d.cli('status', '--json')).stdout) as StatusJSON;
  t.equal(status.pid, pids[3]);
  t.equal(status.bindings.total, 1, 'the bindings carried over');
  t.equal(status.upstreams, 1, 'the upstreams too');
  t.equal(status.workers.total, 1, 'the worker re-registered by itself');
  t.equal((await request('127.0.0.7', port)).pid, worker.pid, 'and still serves');
});
