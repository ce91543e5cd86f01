import t from 'tap';
import { randomBytes } from 'node:crypto';
import { openSync, closeSync } from 'node:fs';
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { constants } from 'node:os';
import { join } from 'node:path';
import { EAGAIN, MAX_FDS, native } from '../src/native/index.js';
import { daemonIn, type ServicesJSON, startDaemon, type StatusJSON, tempDir } from './helpers/daemon.js';
import { openFds, passRights, readable, settledFds } from './helpers/native.js';
import { PYTHON_SERVICE, randomPort, request, sleep, startWorker } from './helpers/services.js';

/** Sends `payload` on a fresh services connection; returns the daemon's answer and whether it then closed. */
async function exchange(
  services: string,
  payloads: (Buffer | string)[],
  fd = -1,
  settleMs = 0,
): Promise<{ answers: Record<string, unknown>[]; closed: boolean }> {
  const sock = native.connectSeqpacket(services);
  // A send may fail once the daemon has refused and closed; what it answered is what is checked.
  for (const p of payloads) native.sendFd(sock, Buffer.from(p), fd);
  const answers: Record<string, unknown>[] = [];
  const data = new Uint8Array(65536);
  const fds = new Int32Array(MAX_FDS + 1);
  if (settleMs > 0) {
    // For exchanges that must not end: give the daemon time, then take what it said.
    await sleep(settleMs);
    let n: number;
    while ((n = native.recvMsg(sock, data, fds)) > 0)
      answers.push(JSON.parse(Buffer.from(data.subarray(0, n)).toString()) as Record<string, unknown>);
    native.close(sock);
    return { answers, closed: n === 0 };
  }
  for (;;) {
    await readable(sock);
    let n: number;
    while ((n = native.recvMsg(sock, data, fds)) > 0)
      answers.push(JSON.parse(Buffer.from(data.subarray(0, n)).toString()) as Record<string, unknown>);
    if (n === 0 || n !== -EAGAIN) {
      native.close(sock);
      return { answers, closed: n === 0 };
    }
  }
}

const register = (label = 'web'): string => JSON.stringify({ type: 'register', version: 1, label });

t.test('garbage on the services socket gets an error and a close, never a crash or a leak', async (t) => {
  const dir = await tempDir(t);
  const d = await startDaemon(dir);
  t.teardown(() => d.stop());
  const baseline = await settledFds(d.process.pid!);
  const cases: [string, (Buffer | string)[], RegExp][] = [
    // One in 128 starts as a binary header would (byte 1 or 2): refused as such.
    ['random bytes', [randomBytes(300)], /not UTF-8 JSON|not a JSON object|binary|must be "register"/],
    ['a truncated message', ['{"type":"regis'], /not UTF-8 JSON/],
    ['JSON that is not an object', ['[1,2,3]'], /not a JSON object/],
    ['a first message that is not register', ['{"type":"ack","count":1}'], /the first message must be "register"/],
    ['an unknown type', ['{"type":"steal"}'], /unknown message type "steal"/],
    ['a version it does not speak', ['{"type":"register","version":0,"label":"web"}'], /protocol version 0 is not supported/],
    ['a bad label', ['{"type":"register","version":1,"label":"no spaces"}'], /label "no spaces" is not/],
    ['a bad window', ['{"type":"register","version":1,"label":"web","window":0}'], /"window" must be a whole number/],
    ['a huge message', [Buffer.alloc(100_000, 'x')], /a message is longer than 69632 bytes/],
    ['a huge header', [Buffer.alloc(10_000, 'x')], /a message header is longer than 4096 bytes/],
    ['a payload on a message that takes none', [`${register()}\npayload`], /a "register" message has no payload/],
    [
      'a reply without payload',
      [register(), '{"type":"reply","client":{"address":"192.0.2.1","port":1},"local":{"address":"192.0.2.2","port":2}}'],
      /a reply needs a newline/,
    ],
    ['an ack of more than was sent', [register(), '{"type":"ack","count":5}'], /ack of 5 with 0 hand-offs unacknowledged/],
    ['a register twice', [register(), register()], /"register" is only valid as the first message/],
  ];
  for (const [name, payloads, message] of cases) {
    const { answers, closed } = await exchange(d.services, payloads);
    const error = answers.find((a) => a['type'] === 'error');
    t.match(error?.['message'], message, name);
    t.ok(closed, `${name}: the daemon closes`);
  }
  const file = openFileForTest(dir);
  if (passRights) {
    const sock = native.connectSeqpacket(d.services);
    t.equal(
      native.sendFd(sock, Buffer.from(register()), file),
      -constants.errno.EPERM,
      'the kernel refuses a descriptor sent to the daemon',
    );
    native.close(sock);
  } else {
    const withFd = await exchange(d.services, [register()], file);
    t.match(withFd.answers.find((a) => a['type'] === 'error')?.['message'], /workers never send descriptors/);
  }
  closeSync(file);

  // Connect and say nothing: closed after the registration timeout.
  const silent = native.connectSeqpacket(d.services);
  await readable(silent);
  t.equal(native.recvMsg(silent, new Uint8Array(4096), new Int32Array(MAX_FDS + 1)) > 0, true, 'an error message first');
  native.close(silent);

  t.equal((await d.cli('status')).code, 0, 'the daemon still answers');
  let now = 0;
  for (let i = 0; i < 30 && (now = openFds(d.process.pid)) !== baseline; i++) await sleep(100);
  t.equal(now, baseline, 'no descriptor leaked');
});

function openFileForTest(dir: string): number {
  return openSync(join(dir, 'stray'), 'w');
}

t.test('a worker may only reply from addresses its label is bound to', async (t) => {
  const d = await daemonIn(t);
  const port = randomPort();
  await d.cli('bind', 'add', 'dns', 'udp', '127.0.0.53', String(port));
  await d.cli('bind', 'add', 'other', 'udp', '127.0.0.54', String(port));
  const reply = (local: string): string =>
    `${JSON.stringify({ type: 'reply', client: { address: '127.0.0.1', port: 9 }, local: { address: local, port } })}\nspoof`;
  const { answers, closed } = await exchange(
    d.services,
    [register('dns'), reply('127.0.0.54'), reply('127.0.0.99'), reply('not an address')],
    -1,
    300,
  );
  t.same(
    answers.map((a) => a['type']),
    ['registered'],
    'no error: a reply racing a rebinding must not kill the worker',
  );
  t.notOk(closed);
  const status = JSON.parse((await d.cli('status', '--json')).stdout) as StatusJSON;
  t.equal(status.connections.replies_refused, 3, 'each refused reply is counted');
  t.equal(status.connections.replies, 0, 'and none was sent');
});

t.test('the version is negotiated: the lower of what the worker and the daemon speak', async (t) => {
  const d = await daemonIn(t);
  for (const [asked, agreed] of [
    [1, 1],
    [2, 2],
    [3, 3],
    [7, 3],
  ] as const) {
    const { answers, closed } = await exchange(d.services, [JSON.stringify({ type: 'register', version: asked, label: 'web' })], -1, 200);
    t.match(answers, [{ type: 'registered', version: agreed }], `version ${asked} is answered with ${agreed}`);
    t.notOk(closed);
  }
  // Outside kernel mode there are no steered sockets: a version-2 worker asking for a reply socket is told
  // so and stays registered; a version-1 worker asking breaks the protocol.
  const ask = JSON.stringify({ type: 'reply-socket', local: { address: '127.0.0.1', port: 53 } });
  const v2 = await exchange(d.services, [JSON.stringify({ type: 'register', version: 2, label: 'web' }), ask], -1, 200);
  t.match(v2.answers, [{ type: 'registered' }, { type: 'reply-socket', error: /does not steer in the kernel/ }]);
  t.notOk(v2.closed);
  const v1 = await exchange(d.services, [register(), ask]);
  t.match(v1.answers, [{ type: 'registered' }, { type: 'error', code: 'ERR_PROTOCOL_MESSAGE', message: /needs protocol version 2/ }]);
  t.ok(v1.closed);
});

t.test('garbage on the control socket gets an HTTP error or a close', async (t) => {
  const d = await daemonIn(t);
  const send = (bytes: Buffer | string): Promise<string> =>
    new Promise((resolve) => {
      const s = connect(d.control);
      let out = '';
      s.on('data', (c: Buffer) => (out += c.toString()));
      s.on('close', () => resolve(out));
      s.on('error', () => resolve(out));
      s.end(bytes);
    });
  t.match(await send(randomBytes(2000)), /^HTTP\/1\.1 400/, 'random bytes');
  t.match(await send(`GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(100_000)}\r\n\r\n`), /^HTTP\/1\.1 431/, 'huge headers');
  t.match(await send('PUT /v1/bindings HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{"bind'), /^HTTP\/1\.1 400/, 'a truncated body');
  t.match(
    await send('POST /v1/bindings HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n[1,2]'),
    /HTTP\/1\.1 400[\s\S]*ERR_REQUEST/,
    'JSON of the wrong shape',
  );
  t.equal((await d.cli('status')).code, 0, 'the daemon still answers');
});

t.test('the Python example speaks the protocol', async (t) => {
  const d = await daemonIn(t);
  const port = randomPort();
  await d.cli('bind', 'add', 'py', 'tcp', '127.0.0.0/8', String(port));
  const py = await startWorker('py', d.services, { command: ['python3', PYTHON_SERVICE, 'py', d.services] });
  t.teardown(() => py.stop());
  for (let i = 0; i < 3; i++) {
    const served = await request('127.0.0.5', port);
    t.equal(served.label, 'py');
    t.equal(served.pid, py.pid);
    t.same(served.local, { address: '127.0.0.5', port });
    t.same(served.client, served.self);
  }
  const services = JSON.parse((await d.cli('services', '--json')).stdout) as ServicesJSON;
  t.equal(services.workers[0]?.inflight, 0, 'it acknowledged every hand-off');

  await d.cli('bind', 'add', 'py', 'udp', '127.0.0.0/8', String(port));
  const sock = createSocket('udp4');
  t.teardown(() => sock.close());
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  const reply = new Promise<{ text: string; from: string }>((resolve) =>
    sock.once('message', (m, rinfo) => resolve({ text: m.toString(), from: `${rinfo.address}:${rinfo.port}` })),
  );
  sock.send('ping', port, '127.0.0.6');
  const got = await reply;
  t.match(
    got.text,
    new RegExp(`^py ${py.pid} 127\\.0\\.0\\.1 ${sock.address().port} 127\\.0\\.0\\.6 ${port} udp -\nping$`),
    'a datagram, answered',
  );
  t.equal(got.from, `127.0.0.6:${port}`, 'from the address and port the client sent to');
});
