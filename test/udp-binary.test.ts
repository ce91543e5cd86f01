import t from 'tap';
import { createSocket } from 'node:dgram';
import { DispatcherError } from '../src/errors.js';
import { EAGAIN, MAX_FDS, native } from '../src/native/index.js';
import {
  BINARY_DATAGRAM,
  BINARY_HEADER,
  BINARY_REPLY,
  type BinaryEndpoint,
  decodeDaemonMessage,
  decodeWorkerMessage,
  encodeBinary,
  encodeBinaryReply,
  MAX_DATAGRAM_MESSAGE,
} from '../src/services/protocol.js';
import { rng } from './helpers/bindings.js';
import { daemonIn, type StatusJSON } from './helpers/daemon.js';
import { readable } from './helpers/native.js';
import { randomPort, sleep, startWorker } from './helpers/services.js';

const SEED = Number(process.env['FUZZ_SEED'] ?? 0xb1a7);
const random = rng(SEED);
const int = (n: number): number => Math.floor(random() * n);
const bytes = (n: number): Uint8Array => Uint8Array.from({ length: n }, () => int(256));

/** An address block (records.ts): family, four words, port. IPv6 never IPv4-mapped (that reads as IPv4). */
function block(): number[] {
  const v6 = random() < 0.5;
  const w = (): number => int(2 ** 32) | 0;
  return v6 ? [6, w(), w(), int(0xffff), w(), int(65536)] : [4, w(), 0, 0, 0, int(65536)];
}

const asBlock = (e: BinaryEndpoint): number[] => [e.family, ...Array.from(e.words, (w) => w | 0), e.port];

t.test(`a binary header round-trips: datagram to the worker, its reply to the daemon (seed ${SEED})`, (t) => {
  const out = new Uint8Array(MAX_DATAGRAM_MESSAGE);
  const replyOut = new Uint8Array(MAX_DATAGRAM_MESSAGE);
  for (let i = 0; i < 500; i++) {
    const r = [...block(), ...block()];
    const payload = bytes(int(300));
    const message = encodeBinary(out, BINARY_DATAGRAM, r, 0, 6, payload);
    if (message.length !== BINARY_HEADER + payload.length) t.fail(`datagram ${i}: ${message.length} bytes`);
    const m = decodeDaemonMessage(message);
    if (m.type !== 'binary-datagram') throw new Error(`decoded as ${m.type}`);
    if (JSON.stringify([asBlock(m.client), asBlock(m.local)]) !== JSON.stringify([r.slice(0, 6), r.slice(6)]))
      t.fail(`datagram ${i}: ${JSON.stringify(r)} came back as ${JSON.stringify([asBlock(m.client), asBlock(m.local)])}`);
    if (Buffer.compare(m.payload, payload) !== 0) t.fail(`datagram ${i}: its payload changed`);
    const answer = bytes(int(300));
    const reply = decodeWorkerMessage(encodeBinaryReply(replyOut, message, answer));
    if (reply.type !== 'binary-reply') throw new Error(`decoded as ${reply.type}`);
    if (JSON.stringify([asBlock(reply.client), asBlock(reply.local)]) !== JSON.stringify([r.slice(0, 6), r.slice(6)]))
      t.fail(`reply ${i}: the endpoints changed`);
    if (Buffer.compare(reply.payload, answer) !== 0) t.fail(`reply ${i}: its payload changed`);
  }
  t.pass('500 datagrams and replies');
  // An IPv4-mapped IPv6 address is the IPv4 one, as in a JSON header.
  const mapped = decodeWorkerMessage(
    encodeBinary(out, BINARY_REPLY, [6, 0, 0, 0xffff, 0x7f000001, 53, 4, 0x7f000035, 0, 0, 0, 5353], 0, 6, bytes(1)),
  );
  t.match(mapped, { type: 'binary-reply', client: { family: 4, port: 53 } });
  if (mapped.type === 'binary-reply') t.equal(mapped.client.words[0], 0x7f000001);
  t.end();
});

t.test(`malformed binary headers are refused as protocol errors, never anything worse (seed ${SEED})`, (t) => {
  const out = new Uint8Array(MAX_DATAGRAM_MESSAGE);
  const valid = (type: number): Uint8Array =>
    Uint8Array.from(encodeBinary(out, type as typeof BINARY_REPLY, [...block(), ...block()], 0, 6, bytes(int(50))));
  const refused = (bytes: Uint8Array, why: RegExp, name: string): void => {
    t.throws(() => decodeWorkerMessage(bytes), { code: 'ERR_PROTOCOL_MESSAGE', message: why }, name);
  };
  refused(valid(BINARY_REPLY).subarray(0, BINARY_HEADER - 1), /shorter than its 40-byte header/, 'a header cut short');
  refused(Uint8Array.of(BINARY_REPLY), /shorter than/, 'a type byte alone');
  const family = valid(BINARY_REPLY);
  family[1] = 5;
  refused(family, /client family is 5/, 'an unknown family');
  const local = valid(BINARY_REPLY);
  local[2] = 0;
  refused(local, /local family is 0/, 'a local family of 0');
  const reserved = valid(BINARY_REPLY);
  reserved[3] = 1;
  refused(reserved, /byte 3 must be 0/, 'the reserved byte set');
  const v4 = valid(BINARY_REPLY);
  v4[1] = 4;
  v4[20] = 1;
  refused(v4, /IPv4 with bytes after its first 4/, 'an IPv4 address with more bytes');
  refused(valid(BINARY_DATAGRAM), /no binary datagram/, 'a worker sending a datagram');
  t.throws(() => decodeDaemonMessage(valid(BINARY_REPLY)), { code: 'ERR_PROTOCOL_MESSAGE', message: /no binary reply/ });

  // Mutations: each decodes or is refused with ERR_PROTOCOL_MESSAGE; nothing else is thrown.
  let other = 0;
  for (let i = 0; i < 3000; i++) {
    const m = valid(random() < 0.5 ? BINARY_REPLY : BINARY_DATAGRAM);
    for (let j = 0, n = 1 + int(4); j < n; j++) m[int(BINARY_HEADER)] = int(4) === 0 ? int(256) : int(8);
    const cut = random() < 0.2 ? m.subarray(0, int(m.length)) : m;
    for (const decode of [decodeWorkerMessage, decodeDaemonMessage]) {
      try {
        decode(cut);
      } catch (err) {
        if (!(err instanceof DispatcherError) || err.code !== 'ERR_PROTOCOL_MESSAGE') other++;
      }
    }
  }
  t.equal(other, 0, 'every refusal is a protocol error');
  t.end();
});

/** A version-3 worker by hand: registers, then reads raw messages. */
async function rawWorker(services: string, label: string, version: number) {
  const sock = native.connectSeqpacket(services);
  const data = new Uint8Array(MAX_DATAGRAM_MESSAGE);
  const fds = new Int32Array(MAX_FDS + 1);
  const next = async (): Promise<Uint8Array | undefined> => {
    for (;;) {
      const n = native.recvMsg(sock, data, fds);
      if (n > 0) return data.slice(0, n);
      if (n !== -EAGAIN) return undefined;
      await readable(sock);
    }
  };
  native.sendFd(sock, Buffer.from(JSON.stringify({ type: 'register', version, label })), -1);
  const registered = JSON.parse(Buffer.from((await next())!).toString()) as Record<string, unknown>;
  return { sock, next, registered, close: () => native.close(sock) };
}

t.test('a version-3 worker gets binary datagrams and answers with binary replies; a version-2 one may not', async (t) => {
  const d = await daemonIn(t);
  const port = randomPort();
  t.equal((await d.cli('bind', 'add', 'dns', 'udp', '127.0.0.53', String(port))).code, 0);
  const v3 = await rawWorker(d.services, 'dns', 3);
  t.teardown(() => v3.close());
  t.match(v3.registered, { type: 'registered', version: 3 });
  const client = createSocket('udp4');
  t.teardown(() => client.close());
  const answers: string[] = [];
  client.on('message', (m) => answers.push(m.toString()));
  await new Promise<void>((r) => client.bind(0, '127.0.0.1', r));
  client.send('query', port, '127.0.0.53');
  const message = (await v3.next())!;
  t.equal(message[0], BINARY_DATAGRAM, 'the datagram came under the binary header');
  const m = decodeDaemonMessage(message);
  t.match(m, { type: 'binary-datagram', client: { family: 4, port: client.address().port }, local: { family: 4, port } });
  if (m.type === 'binary-datagram') t.equal(Buffer.from(m.payload).toString(), 'query');
  native.sendFd(v3.sock, encodeBinaryReply(new Uint8Array(BINARY_HEADER + 6), message, Buffer.from('answer')), -1);
  for (let i = 0; i < 200 && answers.length === 0; i++) await sleep(25);
  t.same(answers, ['answer'], 'the binary reply reached the client');

  const v2 = await rawWorker(d.services, 'dns', 2);
  t.match(v2.registered, { type: 'registered', version: 2 });
  native.sendFd(v2.sock, encodeBinaryReply(new Uint8Array(BINARY_HEADER + 6), message, Buffer.from('forged')), -1);
  const error = JSON.parse(Buffer.from((await v2.next())!).toString()) as Record<string, unknown>;
  t.match(error, { type: 'error', code: 'ERR_PROTOCOL_MESSAGE', message: /binary reply needs protocol version 3/ });
  t.equal(await v2.next(), undefined, 'and the daemon closed');
  v2.close();
});

t.test('a burst of 2,000 datagrams through the daemon is all delivered and answered', async (t) => {
  const d = await daemonIn(t);
  const port = randomPort();
  t.equal((await d.cli('bind', 'add', 'burst', 'udp', '127.0.0.1', String(port))).code, 0);
  const worker = await startWorker('burst', d.services);
  t.teardown(() => worker.stop());
  const client = createSocket('udp4');
  t.teardown(() => client.close());
  let answered = 0;
  client.on('message', () => answered++);
  await new Promise<void>((r) => client.bind(0, '127.0.0.1', r));
  // The client's own buffers must not be what loses the burst's answers.
  client.setRecvBufferSize(4 << 20);
  const BURST = 2000;
  const payload = Buffer.alloc(64, 'x');
  for (let i = 0; i < BURST; i++) client.send(payload, port, '127.0.0.1');
  // However loaded the machine, the burst waits in buffers: only how long it takes depends on the load.
  for (let i = 0; i < 600 && answered < BURST; i++) await sleep(50);
  t.equal(answered, BURST, 'every datagram was answered');
  const status = JSON.parse((await d.cli('status', '--json')).stdout) as StatusJSON;
  t.equal(status.connections.datagrams, BURST, 'and the daemon delivered each one');
});
