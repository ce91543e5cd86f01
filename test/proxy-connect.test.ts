import t from 'tap';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { pino } from 'pino';
import { Connection } from '../src/handoff/connection.js';
import { Metrics } from '../src/metrics/metrics.js';
import { ACCEPT_RECORD, native } from '../src/native/index.js';
import { relay, type RelayOptions } from '../src/proxy/relay.js';
import { type Upstream } from '../src/proxy/upstream.js';
import { tempDir } from './helpers/daemon.js';
import { readable, settledFds } from './helpers/native.js';
import { randomPort } from './helpers/services.js';

// The relay's own wait for the upstream's connect (native/relay.c): failures reset the client and are counted
// by reason, bytes the client sent meanwhile follow the PROXY header, half-close passes both ways, and once
// idle the process holds no descriptor more than before.

async function listening(server: Server): Promise<number> {
  const port = randomPort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return port;
}

/** An accepted connection as the daemon holds one, and the client's end (which may send before the relay starts). */
async function accepted(listener: number, port: number, send?: string): Promise<{ conn: Connection; client: Socket }> {
  const client = connect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => send !== undefined && client.end(send));
  client.on('error', () => undefined);
  await readable(listener);
  const out = new Int32Array(ACCEPT_RECORD);
  if (native.acceptBatch(listener, out, 1) !== 1) throw new Error('no connection accepted');
  return { conn: new Connection(out, 'tcp', process.hrtime.bigint()), client };
}

/** Everything the client receives until its connection ends, and how it ended. */
function received(client: Socket): Promise<{ data: string; end: string }> {
  return new Promise((resolve) => {
    let data = '';
    client.on('data', (c: Buffer) => (data += c.toString()));
    client.once('error', (err: NodeJS.ErrnoException) => resolve({ data, end: err.code ?? 'error' }));
    client.once('end', () => resolve({ data, end: 'end' }));
  });
}

/** What an upstream connection received until the far side's end. */
function readAll(s: Socket): Promise<string> {
  return new Promise((resolve) => {
    let data = '';
    s.on('data', (c: Buffer) => (data += c.toString()));
    s.once('end', () => resolve(data));
  });
}

const upstreamAt = (port: number, proxy: Upstream['proxy_protocol'] = 'none'): Upstream => ({
  label: 'web',
  address: `tcp:127.0.0.1:${port}`,
  proxy_protocol: proxy,
});

t.test('connect failures, early bytes, half-close, and no descriptor left', async (t) => {
  const baseline = await settledFds(process.pid);
  const port = randomPort();
  const listener = native.listenInet('127.0.0.1', port, 16, 0);
  const metrics = new Metrics();
  const options: RelayOptions = { connectTimeoutMs: 300, metrics, log: pino({ level: 'silent' }) };
  const failures = async (): Promise<string> => await metrics.registry.metrics();

  await t.test('refused: the client is reset and it counts as connect', async (t) => {
    const { conn, client } = await accepted(listener, port);
    const end = received(client);
    relay(conn, 'web', upstreamAt(randomPort()), options);
    t.equal((await end).end, 'ECONNRESET');
    t.match(await failures(), /dispatcher_upstream_failures_total\{label="web",reason="connect"\} 1/);
  });

  await t.test('no accept in time: the client is reset and it counts as timeout', async (t) => {
    // A listener whose accept queue is full: the kernel drops further SYNs, so a connect hangs.
    const full = randomPort();
    const fullListener = native.listenInet('127.0.0.1', full, 0, 0);
    const fillers = [connect(full, '127.0.0.1'), connect(full, '127.0.0.1')];
    fillers.forEach((f) => f.on('error', () => undefined));
    await new Promise((r) => setTimeout(r, 200));
    const { conn, client } = await accepted(listener, port);
    const end = received(client);
    relay(conn, 'web', upstreamAt(full), options);
    t.equal((await end).end, 'ECONNRESET');
    t.match(await failures(), /dispatcher_upstream_failures_total\{label="web",reason="timeout"\} 1/);
    fillers.forEach((f) => f.destroy());
    native.close(fullListener);
  });

  await t.test('a Unix upstream whose accept queue is full: the client is reset and it counts as connect', async (t) => {
    // A Unix socket's connect does not wait for room: it fails at once (EAGAIN), and the socket is never connected.
    const path = join(await tempDir(t), 'full.sock');
    const fullListener = native.listenSeqpacket(path, 0, true);
    const fillers = [connect(path), connect(path)];
    fillers.forEach((f) => f.on('error', () => undefined));
    await new Promise((r) => setTimeout(r, 100));
    const { conn, client } = await accepted(listener, port);
    const end = received(client);
    relay(conn, 'web', { label: 'web', address: `unix:${path}`, proxy_protocol: 'none' }, options);
    t.equal((await end).end, 'ECONNRESET');
    t.match(await failures(), /dispatcher_upstream_failures_total\{label="web",reason="connect"\} 2/);
    fillers.forEach((f) => f.destroy());
    native.close(fullListener);
  });

  await t.test('bytes sent before the connect is made follow the header; the client half-closes first', async (t) => {
    let upstreamGot: Promise<string> = Promise.resolve('');
    const server = createServer({ allowHalfOpen: true }, (s) => {
      upstreamGot = readAll(s);
      void upstreamGot.then((data) => s.end(`got ${data.length} bytes`));
    });
    const upstreamPort = await listening(server);
    const { conn, client } = await accepted(listener, port, 'early');
    const end = received(client);
    relay(conn, 'web', upstreamAt(upstreamPort, 'v1'), options);
    const reply = await end;
    const got = await upstreamGot;
    t.match(got, /^PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 \d+ \d+\r\nearly$/, 'the header, then what the client sent');
    t.same(reply, { data: `got ${got.length} bytes`, end: 'end' }, 'the answer to it came back after the client ended');
    server.close();
  });

  await t.test('the upstream ends first: its bytes arrive, and the client can still send', async (t) => {
    let upstreamGot: Promise<string> = Promise.resolve('');
    const server = createServer({ allowHalfOpen: true }, (s) => {
      upstreamGot = readAll(s);
      s.end('early close');
    });
    const upstreamPort = await listening(server);
    const { conn, client } = await accepted(listener, port);
    const end = received(client);
    relay(conn, 'web', upstreamAt(upstreamPort), options);
    t.same(await end, { data: 'early close', end: 'end' }, 'the upstream sent, then ended');
    client.end('late');
    t.equal(await upstreamGot, 'late', 'what the client sent after that reached the upstream');
    server.close();
  });

  for (let i = 0; i < 50 && metrics.totals.proxy_active > 0; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(metrics.totals.proxy_active, 0, 'no relay left open');
  native.close(listener);
  // The relay's pool and epoll set go after an idle second.
  let now = 0;
  for (let i = 0; i < 50 && (now = await settledFds(process.pid)) !== baseline; i++);
  t.equal(now, baseline, 'the descriptors are back at their baseline');
});
