import t from 'tap';
import { createSocket } from 'node:dgram';
import { closeSync, openSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { constants } from 'node:os';
import { ControlClient } from '../src/control/client.js';
import { EAGAIN, MAX_FDS, native } from '../src/native/index.js';
import { daemonIn, startDaemon, tempDir, type RunningDaemon } from './helpers/daemon.js';
import { openFds, passRights, readable, settledFds } from './helpers/native.js';
import { randomPort, request, sleep, startPeer, startWorker } from './helpers/services.js';

// The attacks here are a local user's: they run as nobody, against a daemon whose directory nobody can reach.
const asNobody = { uid: 65534, gid: 65534 };

async function reachableDaemon(t: { teardown(fn: () => unknown): void }, extra: string[] = []): Promise<RunningDaemon> {
  const dir = await tempDir(t);
  await chmod(dir, 0o755);
  const d = await startDaemon(dir, extra);
  t.teardown(() => d.stop());
  return d;
}

const status = (d: RunningDaemon): Promise<{ connections: Record<string, number> }> => new ControlClient(d.control).call('GET', '/status');

/** Reads every message waiting on a raw services connection (waits for the first). */
async function receive(sock: number): Promise<{ messages: Record<string, unknown>[]; fds: number[] }> {
  await readable(sock);
  const data = new Uint8Array(70_000);
  const fds = new Int32Array(MAX_FDS + 1);
  const out: { messages: Record<string, unknown>[]; fds: number[] } = { messages: [], fds: [] };
  let n: number;
  while ((n = native.recvMsg(sock, data, fds)) > 0) {
    const text = Buffer.from(data.subarray(0, n)).toString();
    out.messages.push(JSON.parse(text.split('\n')[0]!) as Record<string, unknown>);
    out.fds.push(...fds.subarray(1, 1 + fds[0]!));
  }
  return out;
}

t.test('a lingering socket sent by a local user does not freeze the daemon', async (t) => {
  // Allowed a label, so the daemon reads what it sends (a uid allowed none is refused before that).
  const d = await reachableDaemon(t, ['--allow', 'public=65534']);
  // A server that never reads: the peer's unsent data stays unsent, so a plain close would linger.
  const held: Socket[] = [];
  const server = createServer({ pauseOnConnect: true }, (s) => held.push(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of held) s.destroy();
    server.close();
  });
  const port = (server.address() as { port: number }).port;
  const peer = startPeer('linger', [d.services, String(port)], asNobody);
  t.teardown(() => peer.stop());
  const outcome = await peer.line(/^(sent|refused)/);
  const started = Date.now();
  await status(d);
  // A hang check: the close would block the loop for the socket's 10 s linger.
  t.ok(Date.now() - started < 5_000, `a control request answers at once (${Date.now() - started} ms), not after the linger`);
  if (passRights) t.match(outcome, /^refused/, 'the kernel refused the descriptor at the send (SO_PASSRIGHTS)');
  else t.match(d.stderr(), /workers never send descriptors/, 'the peer was refused');
});

t.test('unregistered connections of a local user do not lock out root', async (t) => {
  const d = await reachableDaemon(t, ['--allow', 'public=65534']);
  const crowd = startPeer('crowd', [d.services, '300', '30'], asNobody);
  t.teardown(() => crowd.stop());
  await crowd.line(/^crowding/);
  await sleep(200); // the daemon has taken what it will of them
  const raw = native.connectSeqpacket(d.services);
  t.teardown(() => native.close(raw));
  native.sendFd(raw, Buffer.from(JSON.stringify({ type: 'register', version: 1, label: 'web' })), -1);
  t.same(
    (await receive(raw)).messages.map((m) => m['type']),
    ['registered'],
    "root's first connection is taken and registers",
  );
  const web = await startWorker('web', d.services);
  t.teardown(() => web.stop());
  t.match(web.output(), /registered web/, "root's worker registers while nobody holds all it may");
  t.ok((await status(d)).connections['refused']! > 0, "nobody's connections past its share are refused");
});

t.test('a uid the policy allows no label is refused as it connects, and told why', async (t) => {
  const d = await reachableDaemon(t, ['--allow', 'public=65534']);
  const stranger = await startWorker('public', d.services, { spawn: { uid: 65533, gid: 65534 }, expectExit: true });
  t.equal(await stranger.stop(), 3, 'the worker library sees ERR_NOT_ALLOWED and gives up');
  t.match(stranger.output(), /ERR_NOT_ALLOWED .*uid 65533 may not register any label/);
});

t.test('refused registrations make one metrics series and a bounded log', async (t) => {
  const metricsPort = randomPort();
  const d = await reachableDaemon(t, ['--allow', 'public=65534', '--metrics', `127.0.0.1:${metricsPort}`]);
  const started = Date.now();
  const peer = startPeer('refusals', [d.services, '3000'], asNobody);
  t.teardown(() => peer.stop());
  t.equal(await peer.exit, 0);
  t.equal(peer.output().trim(), '3000', 'every registration was refused');
  const seconds = Math.ceil((Date.now() - started) / 1000);
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  t.match(text, /dispatcher_registrations_refused_total\{reason="not_allowed"\} 3000/);
  t.notMatch(text, /label-1/, 'the labels asked for are not series');
  t.ok(text.length < 20_000, `/metrics stays small (${text.length} bytes)`);
  await sleep(1_100); // the last second's summary
  const lines = d.stderr().split('\n');
  const refusals = lines.filter((l) => l.includes('may not register label')).length;
  t.ok(refusals <= 10 * (seconds + 2), `at most 10 refusals logged a second (${refusals} in ${seconds} s)`);
  t.match(d.stderr(), /more warnings like the above suppressed/, 'the rest are summed up');
});

t.test('a worker flooding the daemon does not starve another worker or the control socket', async (t) => {
  const d = await daemonIn(t);
  const port = randomPort();
  await d.cli('bind', 'add', 'web', 'tcp', '127.0.0.1', String(port));
  const web = await startWorker('web', d.services);
  t.teardown(() => web.stop());
  const flood = startPeer('flood', [d.services, 'flood', '30']);
  t.teardown(() => flood.stop());
  await flood.line(/^registered flood/);
  await sleep(300); // let the flood fill the daemon's side of the socket
  for (let i = 0; i < 5; i++)
    t.equal((await request('127.0.0.1', port, { timeoutMs: 15_000 })).label, 'web', `hand-off ${i} during the flood`);
  const during = await status(d);
  t.equal(flood.process.exitCode, null, 'all of that while the flood went on');
  t.ok(during.connections['replies_refused']! > 0, 'and the flood was being read');
});

t.test('no datagram goes to a worker after "drained"', async (t) => {
  const d = await daemonIn(t);
  const port = randomPort();
  await d.cli('bind', 'add', 'dns', 'udp', '127.0.0.1', String(port));
  const raw = native.connectSeqpacket(d.services);
  t.teardown(() => native.close(raw));
  native.sendFd(raw, Buffer.from(JSON.stringify({ type: 'register', version: 1, label: 'dns' })), -1);
  t.equal((await receive(raw)).messages[0]?.['type'], 'registered');
  native.sendFd(raw, Buffer.from('{"type":"drain"}'), -1);
  t.equal((await receive(raw)).messages[0]?.['type'], 'drained');
  const echo = await startWorker('dns', d.services);
  t.teardown(() => echo.stop());

  const client = createSocket('udp4');
  t.teardown(() => client.close());
  await new Promise<void>((r) => client.bind(0, '127.0.0.1', r));
  let answered = 0;
  for (let i = 0; i < 6; i++) {
    const answer = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 2_000);
      client.once('message', () => resolve(true));
      client.once('message', () => clearTimeout(timer));
    });
    client.send(`q${i}`, port, '127.0.0.1');
    if (await answer) answered++;
  }
  t.equal(answered, 6, 'every datagram went to the worker that is not draining');
  t.equal(native.recvMsg(raw, new Uint8Array(70_000), new Int32Array(MAX_FDS + 1)), -EAGAIN, 'the drained worker got none');

  await echo.stop();
  client.send('alone', port, '127.0.0.1');
  for (let i = 0; i < 50 && (await status(d)).connections['dropped'] === 0; i++) await sleep(100);
  t.equal((await status(d)).connections['dropped'], 1, 'with only a drained worker left, a datagram is dropped');
  t.equal(native.recvMsg(raw, new Uint8Array(70_000), new Int32Array(MAX_FDS + 1)), -EAGAIN, 'and not sent to it');
});

t.test('the documented session: O_NONBLOCK descriptors, the window as asked, the worker closes after "drained"', async (t) => {
  const d = await daemonIn(t);
  const port = randomPort();
  await d.cli('bind', 'add', 'web', 'tcp', '127.0.0.1', String(port));
  const peer = startPeer('session', [d.services, 'web', '3']);
  t.teardown(() => peer.stop());
  t.equal(await peer.line(/^registered/), 'registered window 3', 'the window granted is the one asked');
  const client = request('127.0.0.1', port, { timeoutMs: 10_000 }).catch((err: NodeJS.ErrnoException) => err.code);
  t.equal(await peer.line(/^connection/), 'connection nonblocking', 'a handed-off descriptor has O_NONBLOCK set');
  t.equal(await peer.line(/^drained/), 'drained open', 'after "drained" the daemon keeps the connection open');
  t.equal(await peer.exit, 0, 'the worker closes it');
  await client;
  const workers = async (): Promise<unknown[]> =>
    (await new ControlClient(d.control).call<{ workers: unknown[] }>('GET', '/services')).workers;
  for (let i = 0; i < 50 && (await workers()).length > 0; i++) await sleep(100);
  t.same(await workers(), [], 'and the daemon forgets it');
});

t.test('a descriptor sent with an empty message is closed too', async (t) => {
  const d = await daemonIn(t);
  const baseline = await settledFds(d.process.pid!);
  const sock = native.connectSeqpacket(d.services);
  const file = openSync('/dev/null', 'r');
  // recvmsg returns 0 for it, as for the end of the connection: the descriptor still arrived (where the
  // kernel has SO_PASSRIGHTS it refuses the send instead).
  const sent = native.sendFd(sock, new Uint8Array(0), file);
  closeSync(file);
  if (passRights) t.equal(sent, -constants.errno.EPERM, 'the kernel refuses it');
  else t.match((await receive(sock)).messages[0]?.['message'], /workers never send descriptors/);
  native.close(sock);
  let now = 0;
  for (let i = 0; i < 50 && (now = openFds(d.process.pid)) !== baseline; i++) await sleep(100);
  t.equal(now, baseline, 'no descriptor kept');
});
