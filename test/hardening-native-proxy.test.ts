import t from 'tap';
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { pino } from 'pino';
import { Connection } from '../src/handoff/connection.js';
import { Metrics } from '../src/metrics/metrics.js';
import { ACCEPT_RECORD, native } from '../src/native/index.js';
import { relay } from '../src/proxy/relay.js';
import { UdpRelay } from '../src/proxy/udp-relay.js';
import { startDaemon, tempDir } from './helpers/daemon.js';
import { readable } from './helpers/native.js';
import { flood, randomPort, sleep } from './helpers/services.js';

/** CPU time (user + system, seconds) a process has used, from /proc/PID/stat (in clock ticks of 1/100 s). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function listening(server: Server): Promise<number> {
  const port = randomPort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return port;
}

t.test('a client that does not read while the upstream sends small chunks: the relay waits, it does not spin', async (t) => {
  const dir = await tempDir(t);
  const d = await startDaemon(dir, ['--upstream-dir', dir]);
  t.teardown(() => d.stop());
  // The upstream writes 10-byte chunks on a Unix socket, where each write stays a buffer of its own (TCP
  // would merge them): 16 fill the relay's pipe, which then takes nothing while holding 160 bytes.
  const sockets: Socket[] = [];
  const upstream = createServer((s) => {
    sockets.push(s);
    s.on('error', () => undefined);
    const timer = setInterval(() => {
      for (let i = 0; i < 2000 && s.writableLength < 65536; i++) s.write('0123456789');
    }, 1);
    s.on('close', () => clearInterval(timer));
  });
  const path = join(dir, 'upstream.sock');
  await new Promise<void>((r) => upstream.listen(path, r));
  t.teardown(() => {
    sockets.forEach((s) => s.destroy());
    upstream.close();
  });
  const port = randomPort();
  await d.cli('bind', 'add', 'web', 'tcp', '127.0.0.1', String(port));
  t.equal((await d.cli('upstream', 'add', 'web', `unix:${path}`)).code, 0);
  const client = connect(port, '127.0.0.1');
  t.teardown(() => client.destroy());
  client.pause(); // never read: the client's buffer, the daemon's send buffer (4 MiB), then the pipe fill
  await new Promise((r) => client.once('connect', r));
  await sleep(2500);
  const pid = d.process.pid!;
  const before = cpuSeconds(pid);
  await sleep(2000);
  const used = (cpuSeconds(pid) - before) / 2;
  t.ok(used < 0.3, `the daemon used ${Math.round(used * 100)}% of a core while the client did not read`);
});

t.test('out of descriptors for the relay pipes (EMFILE): clients reset, the daemon survives and serves', async (t) => {
  const dir = await tempDir(t);
  // 64 descriptors: a burst of proxied connections uses them up between the connect and the pipes.
  const d = await startDaemon(dir, [], { prefix: ['prlimit', '--nofile=64', '--'] });
  t.teardown(() => d.stop());
  const held: Socket[] = [];
  const upstream = createServer((s) => {
    held.push(s);
    s.on('error', () => undefined);
    s.write('up\n'); // and holds the connection open: each relay keeps its descriptors
  });
  const upstreamPort = await listening(upstream);
  t.teardown(() => upstream.close());
  const port = randomPort();
  await d.cli('bind', 'add', 'web', 'tcp', '127.0.0.1', String(port));
  t.equal((await d.cli('upstream', 'add', 'web', `tcp:127.0.0.1:${upstreamPort}`)).code, 0);
  const outcomes = await flood(port, 120, 3000, 'held');
  held.forEach((s) => s.destroy());
  t.ok(outcomes.includes('ECONNRESET'), `some clients were reset (${[...new Set(outcomes)].join(', ')})`);
  await sleep(300);
  t.equal(d.process.exitCode, null, 'the daemon is alive');
  t.match(d.stderr(), /"reason":"relay".*EMFILE/, 'a relay failed for want of descriptors, and said so');
  const line = await new Promise<string>((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    s.once('data', (c) => resolve(c.toString()));
    s.once('error', reject);
  });
  t.equal(line, 'up\n', 'a new connection is relayed again');
});

/** An accepted connection as the daemon holds one, and the client's end. */
async function accepted(listener: number, port: number): Promise<{ conn: Connection; client: Socket }> {
  const client = connect(port, '127.0.0.1');
  client.on('error', () => undefined);
  await readable(listener);
  const out = new Int32Array(ACCEPT_RECORD);
  if (native.acceptBatch(listener, out, 1) !== 1) throw new Error('no connection accepted');
  return { conn: new Connection(out, 'tcp', process.hrtime.bigint()), client };
}

t.test('past the relay cap a proxied connection is reset and counted', async (t) => {
  const upstream = createServer((s) => s.end('up\n'));
  const upstreamPort = await listening(upstream);
  t.teardown(() => upstream.close());
  const port = randomPort();
  const listener = native.listenInet('127.0.0.1', port, 16, 0);
  t.teardown(() => native.close(listener));
  const metrics = new Metrics();
  const options = { connectTimeoutMs: 1000, metrics, log: pino({ level: 'silent' }), maxRelays: 1 };
  const to = { label: 'web', address: `tcp:127.0.0.1:${upstreamPort}`, proxy_protocol: 'none' as const };
  const first = await accepted(listener, port);
  const second = await accepted(listener, port);
  const firstLine = new Promise<string>((resolve) => first.client.once('data', (c) => resolve(c.toString())));
  const secondEnd = new Promise<string>((resolve) => {
    second.client.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    second.client.once('data', () => resolve('relayed'));
  });
  relay(first.conn, 'web', to, options);
  relay(second.conn, 'web', to, options);
  t.equal(await secondEnd, 'ECONNRESET', 'the second, past the cap of 1, is reset');
  t.equal(await firstLine, 'up\n', 'the first is relayed');
  t.equal(metrics.totals.resets, 1, 'and the reset is counted');
  t.match(await metrics.registry.metrics(), /dispatcher_resets_total\{protocol="tcp",label="web",reason="proxy_full"\} 1/, 'as proxy_full');
  first.client.destroy();
  for (let i = 0; i < 50 && metrics.totals.proxy_active > 0; i++) await sleep(20);
  const third = await accepted(listener, port);
  const thirdLine = new Promise<string>((resolve) => third.client.once('data', (c) => resolve(c.toString())));
  relay(third.conn, 'web', to, options);
  t.equal(await thirdLine, 'up\n', 'once the first has ended, a new one is relayed');
  third.client.destroy();
});

t.test('UDP relay flows are capped and close when idle', async (t) => {
  const upstream = createSocket('udp4');
  const upstreamPort = randomPort();
  await new Promise<void>((r) => upstream.bind(upstreamPort, '127.0.0.1', r));
  t.teardown(() => upstream.close());
  let received = 0;
  upstream.on('message', () => received++);
  const relayed = new UdpRelay(() => undefined, { idleMs: 200, maxFlows: 2 });
  t.teardown(() => relayed.close());
  const to = { label: 'dns', address: `udp:127.0.0.1:${upstreamPort}`, proxy_protocol: 'none' as const };
  const endpoint = (port: number): { address: string; port: number; family: 4; words: number[] } => ({
    address: '127.0.0.1',
    port,
    family: 4,
    words: [0x7f000001],
  });
  const local = endpoint(53);
  const client = endpoint;
  t.ok(relayed.send(to, client(1001), local, Buffer.from('a')));
  t.ok(relayed.send(to, client(1002), local, Buffer.from('b')));
  t.ok(relayed.send(to, client(1001), local, Buffer.from('c')), 'an open flow takes more');
  t.notOk(relayed.send(to, client(1003), local, Buffer.from('d')), 'a third flow is refused');
  t.equal(relayed.flows, 2);
  for (let i = 0; i < 100 && received < 3; i++) await sleep(20);
  t.equal(received, 3, 'what the open flows took reached the upstream');
  for (let i = 0; i < 150 && relayed.flows > 0; i++) await sleep(20);
  t.equal(relayed.flows, 0, 'idle flows closed');
  t.ok(relayed.send(to, client(1003), local, Buffer.from('e')), 'and new flows are taken again');
});
