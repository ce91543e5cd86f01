import t from 'tap';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { createServer, get } from 'node:http';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { ACCEPT_RECORD, EAGAIN, LISTEN_UDP, MAX_FDS, native } from '../src/native/index.js';
import { ADDRESS, CREDENTIAL, credentialAt, portAt } from '../src/native/records.js';
import { attach, type ConnectionInfo, type Reply, serve, type Service } from '../src/service/index.js';
import { type DaemonMessage, decodeWorkerMessage, encode, MAX_DATAGRAM_MESSAGE, type WorkerMessage } from '../src/services/protocol.js';
import { tempDir } from './helpers/daemon.js';
import { readable } from './helpers/native.js';
import { PYTHON_SERVICE, sleep, startWorker } from './helpers/services.js';
import { type TapTest } from './helpers/tap.js';

/** The daemon's end of the services protocol, played by the test: the real codec, real descriptors. */
class TestDaemon {
  readonly path: string;
  #listener: number;
  #conn = -1;
  readonly #data = new Uint8Array(MAX_DATAGRAM_MESSAGE);
  readonly #fds = new Int32Array(MAX_FDS + 1);

  constructor(dir: string) {
    this.path = join(dir, 'services.sock');
    this.#listener = native.listenSeqpacket(this.path, 4);
  }

  /** Waits for a worker to connect; returns its first message. */
  async accept(): Promise<WorkerMessage> {
    const out = new Int32Array(CREDENTIAL.SIZE);
    while (native.acceptUnix(this.#listener, out) !== 1) await readable(this.#listener);
    this.#conn = credentialAt(out).fd;
    return this.receive();
  }

  /** Accepts a worker and answers its register with the lower of its version and 2. */
  async register(): Promise<WorkerMessage> {
    const m = await this.accept();
    if (m.type !== 'register') throw new Error(`a worker began with ${m.type}`);
    this.send({ type: 'registered', version: Math.min(m.version, 2), label: m.label, worker: 1, window: m.window });
    return m;
  }

  async receive(): Promise<WorkerMessage> {
    for (;;) {
      const m = this.pending();
      if (m !== undefined) return m;
      await readable(this.#conn);
    }
  }

  /** The worker's next message, if one is waiting. */
  pending(): WorkerMessage | undefined {
    const n = native.recvMsg(this.#conn, this.#data, this.#fds);
    if (n === -EAGAIN) return undefined;
    if (n <= 0) throw new Error(`the worker closed the connection (${n})`);
    return decodeWorkerMessage(this.#data.subarray(0, n));
  }

  /** Sends `message`, with a copy of `fd` (the test keeps its own, as the daemon does). */
  send(message: DaemonMessage, fd = -1): void {
    const rc = native.sendFd(this.#conn, encode(message), fd);
    if (rc <= 0) throw new Error(`send: ${rc}`);
  }

  /** Ends the connection, as a daemon that restarts or crashes. */
  hangUp(): void {
    if (this.#conn >= 0) native.close(this.#conn);
    this.#conn = -1;
  }

  close(): void {
    this.hangUp();
    if (this.#listener >= 0) native.close(this.#listener);
    this.#listener = -1;
  }
}

function boundPort(fd: number): number {
  const block = new Int32Array(ADDRESS.SIZE);
  native.sockName(fd, block);
  return portAt(block, 0);
}

/** A label socket as the daemon would give it, on loopback; the test's copy is closed at the end. */
function labelSocket(t: TapTest, protocol: 'tcp' | 'udp', address = '127.0.0.1'): { fd: number; port: number } {
  const fd = native.listenInet(address, 0, 64, protocol === 'udp' ? LISTEN_UDP : 0);
  t.teardown(() => void native.close(fd));
  return { fd, port: boundPort(fd) };
}

/** A daemon and a registered service of label "web", closed at the end. */
async function setUp(t: TapTest, start: (path: string) => Service): Promise<{ daemon: TestDaemon; service: Service }> {
  const daemon = new TestDaemon(await tempDir(t));
  const service = start(daemon.path);
  t.teardown(async () => {
    daemon.close();
    await service.close();
  });
  const registered = once(service, 'registered');
  t.match(await daemon.register(), { type: 'register', version: 3, label: 'web' }, 'the worker registers as version 3');
  t.match((await registered)[0], { version: 2 }, 'and a version-2 daemon answers 2, which the worker then speaks');
  return { daemon, service };
}

const nextConnection = (service: Service): Promise<[Socket, ConnectionInfo]> =>
  once(service, 'connection') as Promise<[Socket, ConnectionInfo]>;

function client(t: TapTest, port: number, host = '127.0.0.1'): Socket {
  const c = connect(port, host);
  t.teardown(() => void c.destroy());
  return c;
}

async function firstData(c: Socket): Promise<string> {
  const [chunk] = (await once(c, 'data')) as [Buffer];
  return chunk.toString();
}

function udpClient(t: TapTest, address = '127.0.0.1'): UdpSocket {
  const c = createSocket(address.includes(':') ? 'udp6' : 'udp4');
  c.bind(0, address);
  t.teardown(() => c.close());
  return c;
}

/** The next `count` datagrams `c` receives, or those that came within `ms`. */
function received(c: UdpSocket, count = 1, ms = 5_000): Promise<{ text: string; address: string; port: number }[]> {
  return new Promise((resolve) => {
    const got: { text: string; address: string; port: number }[] = [];
    const done = (): void => {
      clearTimeout(timer);
      c.off('message', onMessage);
      resolve(got);
    };
    const timer = setTimeout(done, ms);
    const onMessage = (msg: Buffer, from: { address: string; port: number }): void => {
      got.push({ text: msg.toString(), address: from.address, port: from.port });
      if (got.length === count) done();
    };
    c.on('message', onMessage);
  });
}

t.test('a steered TCP socket: its connections reach serve() with their addresses, then drain leaves them to the daemon', async (t) => {
  const { daemon, service } = await setUp(t, (socket) => serve({ label: 'web', socket }, () => undefined));
  const tcp = labelSocket(t, 'tcp');
  daemon.send({ type: 'socket', label: 'web', protocol: 'tcp', family: 4 }, tcp.fd);

  const c = client(t, tcp.port);
  const [[socket, info]] = await Promise.all([nextConnection(service), once(c, 'connect')]);
  t.same(info, {
    label: 'web',
    protocol: 'tcp',
    client: { address: '127.0.0.1', port: c.localPort },
    local: { address: '127.0.0.1', port: tcp.port },
  });
  t.same(service.steered, [{ protocol: 'tcp', family: 4, port: tcp.port }]);
  socket.end('served\n');
  t.equal(await firstData(c), 'served\n', 'the handler answers the client');

  // A dual-stack socket: an IPv4 client is reported as IPv4, as a hand-off reports it.
  const dual = labelSocket(t, 'tcp', '::');
  daemon.send({ type: 'socket', label: 'web', protocol: 'tcp', family: 6 }, dual.fd);
  const c4 = client(t, dual.port, '127.0.0.1');
  const [s4, info4] = await nextConnection(service);
  t.match(info4, { client: { address: '127.0.0.1' }, local: { address: '127.0.0.1', port: dual.port } });
  s4.destroy();
  c4.destroy();

  const closed = service.close();
  t.match(await daemon.receive(), { type: 'drain' });
  t.same(service.steered, [], 'the steered sockets are closed at once');
  daemon.send({ type: 'drained' });
  await closed;
  let served = false;
  service.on('connection', () => (served = true));
  client(t, tcp.port);
  await readable(tcp.fd);
  t.equal(native.acceptBatch(tcp.fd, new Int32Array(ACCEPT_RECORD), 1), 1, "a connection after the drain waits in the daemon's copy");
  t.notOk(served);
});

t.test('attach(): steered connections reach an http.Server', async (t) => {
  const server = createServer((req, res) => res.end(`${req.socket.remoteAddress} ${req.socket.localPort}`));
  const { daemon } = await setUp(t, (socket) => attach(server, { label: 'web', socket }));
  const tcp = labelSocket(t, 'tcp');
  daemon.send({ type: 'socket', label: 'web', protocol: 'tcp', family: 4 }, tcp.fd);
  const body = await new Promise<string>((resolve, reject) => {
    get({ host: '127.0.0.1', port: tcp.port, path: '/', agent: false }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve(text));
    }).on('error', reject);
  });
  t.equal(body, `127.0.0.1 ${tcp.port}`);
});

t.test(
  'a steered UDP socket: datagrams with their addresses, replies from a reply socket asked once and held until it comes',
  async (t) => {
    const { daemon, service } = await setUp(t, (socket) =>
      serve({ label: 'web', socket }, { datagram: (payload, _info, reply) => reply(payload.toString().toUpperCase()) }),
    );
    const udp = labelSocket(t, 'udp');
    daemon.send({ type: 'socket', label: 'web', protocol: 'udp', family: 4 }, udp.fd);
    const c = udpClient(t);
    await once(c, 'listening');

    const datagrams: [string, ConnectionInfo][] = [];
    service.on('datagram', (payload, info) => datagrams.push([payload.toString(), info]));
    c.send('a', udp.port, '127.0.0.1');
    c.send('b', udp.port, '127.0.0.1');
    const request = await daemon.receive();
    const local = { address: '127.0.0.1', port: udp.port };
    t.same(request, { type: 'reply-socket', local });
    while (datagrams.length < 2) await sleep(10);
    const from = { address: '127.0.0.1', port: c.address().port };
    t.same(datagrams, [
      ['a', { label: 'web', protocol: 'udp', client: from, local }],
      ['b', { label: 'web', protocol: 'udp', client: from, local }],
    ]);
    t.equal(daemon.pending(), undefined, 'one request for the endpoint');
    t.same(await received(c, 1, 100), [], 'the replies are held until the socket comes');

    // A socket bound to exactly the endpoint: on one host without tproxy no second socket can bind the
    // label socket's address and port, so the answer is (a copy of) the label socket itself.
    const replies = received(c, 2);
    daemon.send({ type: 'reply-socket', local }, udp.fd);
    t.same(await replies, [
      { text: 'A', ...local },
      { text: 'B', ...local },
    ]);
    const later = received(c);
    c.send('c', udp.port, '127.0.0.1');
    t.same(await later, [{ text: 'C', ...local }], 'later replies leave at once');
    t.equal(daemon.pending(), undefined, 'without asking again');
    t.equal(service.repliesDropped, 0);
  },
);

t.test('a refused reply socket drops the replies and says so once, with a code', async (t) => {
  const replies: Reply[] = [];
  const { daemon, service } = await setUp(t, (socket) =>
    serve({ label: 'web', socket }, { datagram: (_p, _i, reply) => replies.push(reply) }),
  );
  const errors: Error[] = [];
  service.on('error', (err) => errors.push(err));
  const udp = labelSocket(t, 'udp');
  daemon.send({ type: 'socket', label: 'web', protocol: 'udp', family: 4 }, udp.fd);
  const c = udpClient(t);
  c.send('a', udp.port, '127.0.0.1');
  while (replies.length < 1) await sleep(10);
  replies[0]!('answer');
  const local = { address: '127.0.0.1', port: udp.port };
  t.same(await daemon.receive(), { type: 'reply-socket', local });
  daemon.send({ type: 'reply-socket', local, error: 'not an address of label "web"' });
  const [err] = (await once(service, 'error')) as [Error & { code?: string }];
  t.equal(err.code, 'ERR_REPLY_SOCKET');
  t.match(err.message, /127\.0\.0\.1 port \d+: not an address of label "web"/);
  t.equal(service.repliesDropped, 1);

  c.send('b', udp.port, '127.0.0.1');
  while (replies.length < 2) await sleep(10);
  replies[1]!('answer');
  t.same(await received(c, 1, 100), [], 'the client gets nothing');
  t.equal(service.repliesDropped, 2);
  t.equal(errors.length, 1, 'one error per endpoint');
  t.equal(daemon.pending(), undefined, 'and no second request');
});

t.test('a daemon that refuses version 3 is spoken to in version 1, for good', async (t) => {
  const daemon = new TestDaemon(await tempDir(t));
  const service = serve({ label: 'web', socket: daemon.path }, () => undefined);
  t.teardown(async () => {
    daemon.close();
    await service.close();
  });
  const errors: Error[] = [];
  service.on('error', (err) => errors.push(err));
  t.match(await daemon.accept(), { type: 'register', version: 3 });
  daemon.send({ type: 'error', code: 'ERR_VERSION', message: 'protocol version 3 is not supported (this daemon speaks 1)' });
  daemon.hangUp();
  const registered = once(service, 'registered');
  t.match(await daemon.register(), { type: 'register', version: 1, label: 'web' });
  t.match((await registered)[0], { version: 1 });
  t.equal(service.version, 1);
  daemon.hangUp();
  t.match(await daemon.register(), { type: 'register', version: 1 }, 'and again after a reconnect');
  t.same(errors, [], 'no error: the fallback is silent');
});

t.test('a daemon restart leaves the steered sockets served; the new daemon adds its own', async (t) => {
  const { daemon, service } = await setUp(t, (socket) => serve({ label: 'web', socket }, (s) => s.end('served\n')));
  const first = labelSocket(t, 'tcp');
  daemon.send({ type: 'socket', label: 'web', protocol: 'tcp', family: 4 }, first.fd);
  const c1 = client(t, first.port);
  await nextConnection(service);
  await once(c1, 'data');

  const disconnected = once(service, 'disconnected');
  daemon.hangUp();
  await disconnected;
  const c2 = client(t, first.port);
  const [, info] = await nextConnection(service);
  t.equal(info.local.port, first.port, 'served while the daemon is away');
  t.equal(await firstData(c2), 'served\n');

  const registered = once(service, 'registered');
  t.match(await daemon.register(), { type: 'register', version: 3 });
  await registered;
  const second = labelSocket(t, 'tcp');
  daemon.send({ type: 'socket', label: 'web', protocol: 'tcp', family: 4 }, second.fd);
  for (const port of [second.port, first.port]) {
    const c = client(t, port);
    t.equal((await nextConnection(service))[1].local.port, port);
    await once(c, 'data');
  }
  t.same(service.steered.map((s) => s.port).sort(), [first.port, second.port].sort(), 'both served');
});

t.test('the Python example serves steered sockets too', async (t) => {
  const daemon = new TestDaemon(await tempDir(t));
  t.teardown(() => daemon.close());
  const starting = startWorker('web', daemon.path, { command: ['python3', PYTHON_SERVICE, 'web', daemon.path] });
  t.match(await daemon.register(), { type: 'register', version: 2, label: 'web' });
  const worker = await starting;
  t.teardown(() => worker.stop());
  const tcp = labelSocket(t, 'tcp');
  daemon.send({ type: 'socket', label: 'web', protocol: 'tcp', family: 4 }, tcp.fd);
  const c = client(t, tcp.port);
  await once(c, 'connect');
  const line = await firstData(c);
  t.equal(line, `web ${worker.pid} 127.0.0.1 ${c.localPort} 127.0.0.1 ${tcp.port} python -\n`);

  // Both families: the destination arrives as a sockaddr_in or a sockaddr_in6.
  for (const [family, address] of [
    [4, '127.0.0.1'],
    [6, '::1'],
  ] as const) {
    const udp = labelSocket(t, 'udp', address);
    daemon.send({ type: 'socket', label: 'web', protocol: 'udp', family }, udp.fd);
    const u = udpClient(t, address);
    await once(u, 'listening');
    u.send('hello', udp.port, address);
    const local = { address, port: udp.port };
    t.same(await daemon.receive(), { type: 'reply-socket', local });
    const reply = received(u);
    daemon.send({ type: 'reply-socket', local }, udp.fd);
    t.same(await reply, [{ text: `web ${worker.pid} ${address} ${u.address().port} ${address} ${udp.port} udp -\nhello`, ...local }]);
  }
});

t.test('the Python example falls back to version 1 too', async (t) => {
  const daemon = new TestDaemon(await tempDir(t));
  t.teardown(() => daemon.close());
  const starting = startWorker('web', daemon.path, { command: ['python3', PYTHON_SERVICE, 'web', daemon.path] });
  t.match(await daemon.accept(), { type: 'register', version: 2 });
  daemon.send({ type: 'error', code: 'ERR_VERSION', message: 'protocol version 2 is not supported (this daemon speaks 1)' });
  daemon.hangUp();
  t.match(await daemon.register(), { type: 'register', version: 1, label: 'web' });
  const worker = await starting;
  t.teardown(() => worker.stop());
  t.match(worker.output(), /^registered web 1 version 1$/m);
});
