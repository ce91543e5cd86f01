import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { HandoverChannel } from '../src/daemon/handover.js';
import { native } from '../src/native/index.js';
import { passRights, settledFds } from './helpers/native.js';
import { exitWithin, type RunningDaemon, startDaemon, startTakeover, type StatusJSON, tempDir } from './helpers/daemon.js';
import { randomPort, request, sleep, startWorker } from './helpers/services.js';

const QUEUE = ['--queue-size', '2000', '--queue-timeout', '120000'];

/** A daemon whose queue holds a thousand connections for long, with a label `web` bound on `port`. */
async function webDaemon(t: { teardown(fn: () => unknown): void }): Promise<{ d: RunningDaemon; port: number }> {
  const d = await startDaemon(await tempDir(t), QUEUE);
  t.teardown(() => d.stop('SIGKILL'));
  const port = randomPort();
  await d.cli('bind', 'add', 'web', 'tcp', '127.0.0.0/8', String(port));
  return { d, port };
}

t.test('1,000 queued connections, then a takeover: each is served or reset, and the old daemon exits', async (t) => {
  const { d, port } = await webDaemon(t);
  // No worker yet: every connection waits in the old daemon's queue.
  const outcomes = Array.from({ length: 1000 }, () =>
    request('127.0.0.1', port, { timeoutMs: 60_000 }).then(
      () => 'served',
      (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EOF' ? 'reset' : `hung or failed: ${err.code}`),
    ),
  );
  for (let i = 0; i < 200; i++) {
    const status = JSON.parse((await d.cli('status', '--json')).stdout) as StatusJSON;
    if (status.queued.web === 1000) break;
    await sleep(100);
  }
  t.equal((JSON.parse((await d.cli('status', '--json')).stdout) as StatusJSON).queued.web, 1000, 'all 1,000 wait in the old daemon');

  const next = startTakeover(d, QUEUE);
  t.teardown(() => next.stop('SIGKILL'));
  t.equal(await exitWithin(d.exited, 30_000), 0, `the old daemon exits by itself: ${d.stderr().slice(-500)}`);
  const worker = await startWorker('web', d.services);
  t.teardown(() => worker.stop());
  const status = JSON.parse((await d.cli('status', '--json')).stdout) as StatusJSON;
  t.equal(status.pid, next.process.pid, 'the new daemon answers');
  const counts: Record<string, number> = {};
  for (const o of await Promise.all(outcomes)) counts[o] = (counts[o] ?? 0) + 1;
  t.same(
    Object.keys(counts).filter((k) => k !== 'served' && k !== 'reset'),
    [],
    `none hangs: ${JSON.stringify(counts)}`,
  );
  t.ok((counts['served'] ?? 0) > 0, `served: ${JSON.stringify(counts)}`);
});

t.test('a takeover that fails after adopting the sockets leaves the old daemon serving on its paths', async (t) => {
  const { d, port } = await webDaemon(t);
  await d.cli('bind', 'add', 'late', 'tcp', '127.0.0.0/8', String(port + 1));
  const worker = await startWorker('web', d.services);
  t.teardown(() => worker.stop());
  // Waiting in the old daemon's queue through the failed takeover: it must not be reset.
  const waiting = request('127.0.0.1', port + 1, { timeoutMs: 30_000 });
  await sleep(300);

  // Another process holds the metrics address: the new daemon fails after it has the sockets.
  const holder = createServer();
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => holder.close());
  const failed = startTakeover(d, ['--metrics', `127.0.0.1:${(holder.address() as AddressInfo).port}`]);
  t.teardown(() => failed.stop('SIGKILL'));
  const code = await exitWithin(failed.exited, 30_000);
  t.not(code, 0, `the new daemon fails: ${failed.stderr().slice(-300)}`);
  t.not(code, 'hung');

  for (const path of [d.control, d.services, `${d.control}.handover`]) t.ok(existsSync(path), `${path} is still there`);
  const status = JSON.parse((await d.cli('status', '--json')).stdout) as StatusJSON;
  t.equal(status.pid, d.process.pid, 'the old daemon answers on its control socket');
  t.equal((await request('127.0.0.1', port)).pid, worker.pid, 'and serves new connections');
  const late = await startWorker('late', d.services);
  t.teardown(() => late.stop());
  t.equal((await waiting).pid, late.pid, 'the connection that waited through it is served, not reset');
  t.equal((await d.cli('bind', 'add', 'more', 'tcp', '127.0.0.0/8', String(port + 2))).code, 0, 'and takes changes again');

  const next = startTakeover(d);
  t.teardown(() => next.stop('SIGKILL'));
  t.equal(await exitWithin(d.exited, 30_000), 0, 'a later takeover succeeds');
});

t.test('a second takeover while one is in progress is refused, and the first completes', async (t) => {
  const { d } = await webDaemon(t);
  // The first: this test, holding the hand-over between "sockets-done" and "ready".
  const first = new HandoverChannel(native.connectSeqpacket(`${d.control}.handover`));
  first.send({ type: 'takeover' });
  for (let got = await first.receive(10_000, true); got?.message['type'] !== 'sockets-done'; got = await first.receive(10_000, true)) {
    if (got === undefined) throw new Error('the old daemon closed');
    if (got.fd >= 0) native.close(got.fd);
  }
  // A malformed attempt in between must not clear the first's state.
  const garbage = native.connectSeqpacket(`${d.control}.handover`);
  native.sendFd(garbage, new TextEncoder().encode('{not json'), -1);
  await sleep(300);
  native.close(garbage);

  const second = startTakeover(d);
  t.teardown(() => second.stop('SIGKILL'));
  t.equal(await exitWithin(second.exited, 20_000), 2, 'the second fails');
  t.match(second.stderr(), /taking over already/, 'saying why');

  first.send({ type: 'ready' });
  let last: Record<string, unknown> | undefined;
  for (let got = await first.receive(10_000, true); got !== undefined; got = await first.receive(10_000, true)) last = got.message;
  first.close();
  t.same(last, { type: 'done' }, 'the first completes');
  t.equal(await exitWithin(d.exited, 10_000), 0, 'and the old daemon exits');
});

t.test('descriptors beyond the one expected in a hand-over message are closed', async (t) => {
  const dir = await tempDir(t);
  const d = await startDaemon(dir);
  t.teardown(() => d.stop('SIGKILL'));
  const before = await settledFds(d.process.pid!);
  const script = `
import os, socket, sys
for _ in range(5):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(sys.argv[1])
    fds = [os.open('/dev/null', os.O_RDONLY) for _ in range(3)]
    socket.send_fds(s, [sys.argv[2].encode()], fds)
    s.recv(100)
    s.close()
`;
  for (const message of ['{"type":"hello"}', '{not json']) {
    const run = spawnSync('python3', ['-c', script, `${d.control}.handover`, message], { encoding: 'utf8' });
    // Where the kernel has SO_PASSRIGHTS the accepted end refuses them at the send; elsewhere the daemon closes them.
    if (passRights) t.match(run.stderr, /PermissionError/, 'the kernel refuses descriptors sent to the daemon');
    else t.equal(run.status, 0, run.stderr);
  }
  t.equal(await settledFds(d.process.pid!), before, 'the daemon holds no descriptor more than before');
});
