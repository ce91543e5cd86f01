import t from 'tap';
import { execFileSync } from 'node:child_process';
import { closeSync, fstatSync, openSync, readSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ACCEPT_RECORD, EAGAIN, EMSGSIZE, MAX_FDS, native } from '../src/native/index.js';
import { formatAddress, parseAddress } from '../src/bindings/address.js';
import { ACCEPT, addressText, portAt, putAddress } from '../src/native/records.js';
import { addressedHeader, connectionPrefix } from '../src/services/protocol.js';
import { tempDir } from './helpers/daemon.js';
import { connected, listenAnywhere, openFds, readable, seqpacketPair } from './helpers/native.js';

const NO_FD = -1;

t.test('a descriptor sent is the same open file on the other side, and the sender keeps its copy', async (t) => {
  const dir = await tempDir(t);
  const [a, b] = seqpacketPair(dir);
  const file = join(dir, 'data');
  writeFileSync(file, 'hello');
  const fd = openSync(file, 'r');
  t.equal(native.sendFd(a, Buffer.from('header'), fd), 6, 'the whole message went');
  const data = new Uint8Array(64);
  const fds = new Int32Array(MAX_FDS + 1);
  t.equal(native.recvMsg(b, data, fds), 6);
  t.equal(Buffer.from(data.subarray(0, 6)).toString(), 'header');
  t.equal(fds[0], 1, 'one descriptor arrived');
  const got = fds[1]!;
  t.not(got, fd);
  t.equal(fstatSync(got).ino, fstatSync(fd).ino, 'the same file');
  const buf = Buffer.alloc(5);
  readSync(got, buf, 0, 5, 0);
  t.equal(buf.toString(), 'hello');
  closeSync(fd);
  closeSync(got);
  native.close(a);
  native.close(b);
});

t.test('a full receiver gives -EAGAIN, the sender still owns the descriptor, and nothing leaks', async (t) => {
  const dir = await tempDir(t);
  const baseline = openFds();
  const [a, b] = seqpacketPair(dir);
  const fd = openSync(join(dir, 'x'), 'w');
  let sent = 0;
  let rc: number;
  while ((rc = native.sendFd(a, Buffer.alloc(512), fd)) > 0) sent++;
  t.equal(rc, -EAGAIN, 'the full buffer says EAGAIN');
  t.ok(sent > 0, `${sent} messages fit before the buffer filled`);
  t.doesNotThrow(() => fstatSync(fd), 'the descriptor is still open and ours');
  // Drain half, and the send goes through again.
  const data = new Uint8Array(1024);
  const fds = new Int32Array(MAX_FDS + 1);
  for (let i = 0; i < sent; i++) {
    t.equal(native.recvMsg(b, data, fds), 512);
    t.equal(fds[0], 1);
    closeSync(fds[1]!);
  }
  t.equal(native.recvMsg(b, data, fds), -EAGAIN, 'nothing more waiting');
  t.equal(native.sendFd(a, Buffer.alloc(512), fd), 512, 'sending works again once drained');
  closeSync(fd);
  native.close(a);
  native.close(b);
  t.equal(openFds(), baseline, 'every descriptor is closed, including the one still in flight');
});

t.test('a receiver that dies with descriptors in flight releases them', async (t) => {
  const dir = await tempDir(t);
  const baseline = openFds();
  const [a, b] = seqpacketPair(dir);
  // An accepted TCP connection is sent and our copy closed: only the in-flight copy keeps it open. When
  // the receiver dies without reading, the kernel must drop it, and the client sees the connection end.
  const { fd: listener, port } = listenAnywhere('127.0.0.1');
  const client = await connected('127.0.0.1', port);
  await readable(listener);
  const out = new Int32Array(ACCEPT_RECORD);
  t.equal(native.acceptBatch(listener, out, 1), 1);
  const ended = new Promise<void>((resolve) => {
    client.on('error', () => resolve());
    client.on('end', () => resolve());
    client.resume();
  });
  t.equal(native.sendFd(a, Buffer.from('x'), out[0]!), 1);
  native.close(out[0]!);
  native.close(b); // the receiver vanishes with the descriptor in flight
  await ended;
  t.pass('the client saw its connection end');
  const spare = openSync(join(dir, 'spare'), 'w');
  t.ok(native.sendFd(a, Buffer.from('x'), spare) < 0, 'sending to a dead peer fails, without SIGPIPE');
  t.doesNotThrow(() => fstatSync(spare), 'a failed send left our descriptor open');
  closeSync(spare);
  native.close(a);
  native.close(listener);
  client.destroy();
  t.equal(openFds(), baseline, 'nothing leaked');
});

t.test('a message too big for the buffer closes what arrived with it and says EMSGSIZE', async (t) => {
  const dir = await tempDir(t);
  const [a, b] = seqpacketPair(dir);
  const fd = openSync(join(dir, 'y'), 'w');
  const before = openFds();
  t.equal(native.sendFd(a, Buffer.alloc(100), fd), 100);
  const fds = new Int32Array(MAX_FDS + 1);
  t.equal(native.recvMsg(b, new Uint8Array(10), fds), -EMSGSIZE);
  t.equal(fds[0], 0, 'no descriptor is handed over');
  t.equal(openFds(), before, 'the descriptor that arrived was closed');
  closeSync(fd);
  native.close(a);
  native.close(b);
});

t.test('a message with no descriptor, and the end of the peer', async (t) => {
  const dir = await tempDir(t);
  const [a, b] = seqpacketPair(dir);
  t.equal(native.sendFd(a, Buffer.from('ack'), NO_FD), 3);
  const fds = new Int32Array(MAX_FDS + 1);
  const data = new Uint8Array(16);
  t.equal(native.recvMsg(b, data, fds), 3);
  t.equal(fds[0], 0);
  native.close(a);
  t.equal(native.recvMsg(b, data, fds), 0, 'zero bytes: the peer closed');
  native.close(b);
});

t.test('peer credentials are the connecting process', async (t) => {
  const dir = await tempDir(t);
  const [a, b] = seqpacketPair(dir);
  const cred = native.peerCred(b);
  t.same(cred, [process.pid, process.getuid!(), process.getgid!()]);
  native.close(a);
  native.close(b);
});

t.test('acceptBatch reports each connection with the address the client dialled', async (t) => {
  const { fd, port } = listenAnywhere('::');
  const clients = await Promise.all([connected('127.0.0.7', port), connected('127.0.0.8', port), connected('::1', port)]);
  await readable(fd);
  const out = new Int32Array(ACCEPT_RECORD * 8);
  let n = 0;
  for (let tries = 0; n < 3 && tries < 100; tries++) {
    const got = native.acceptBatch(fd, out.subarray(n * ACCEPT_RECORD), 8);
    t.ok(got >= 0);
    n += got;
    if (n < 3) await new Promise((r) => setTimeout(r, 10));
  }
  t.equal(n, 3, 'one batch call can take several connections');
  const records = Array.from({ length: n }, (_, i) => out.subarray(i * ACCEPT_RECORD, (i + 1) * ACCEPT_RECORD));
  const locals = records
    .map((r) =>
      r[1] === 4 ? `4:${(r[2]! >>> 0).toString(16)}` : `6:${Array.from(r.subarray(2, 6), (w) => (w >>> 0).toString(16)).join(',')}`,
    )
    .sort();
  t.same(locals, ['4:7f000007', '4:7f000008', '6:0,0,0,1'], 'IPv4 on a dual-stack socket comes back as IPv4');
  for (const r of records) {
    t.equal(r[6], port, 'the local port');
    t.ok(r[12]! > 0, 'the client port');
    native.close(r[0]!);
  }
  t.equal(native.acceptBatch(fd, out, 8), 0, 'nothing more: 0, not an error');
  for (const c of clients) c.destroy();
  native.close(fd);
});

t.test('reset sends a RST, not a FIN', async (t) => {
  const { fd, port } = listenAnywhere('127.0.0.1');
  const client = await connected('127.0.0.1', port);
  await readable(fd);
  const out = new Int32Array(ACCEPT_RECORD);
  t.equal(native.acceptBatch(fd, out, 1), 1);
  const err = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    client.once('error', resolve);
    client.once('close', () => resolve(undefined));
    native.reset(out[0]!);
  });
  t.equal(err?.code, 'ECONNRESET');
  native.close(fd);
});

t.test('set-up calls throw errors with codes; bad arguments are type errors', async (t) => {
  const { fd, port } = listenAnywhere('127.0.0.1');
  t.throws(() => native.listenInet('127.0.0.1', port, 16, 0), { code: 'EADDRINUSE' });
  t.throws(() => native.listenInet('not an address', 80, 16, 0), { code: 'EINVAL' });
  t.throws(() => native.connectSeqpacket('/nonexistent/dispatcher.sock'), { code: 'ENOENT' });
  t.throws(() => native.sendFd('x' as unknown as number, Buffer.alloc(1), -1), TypeError);
  t.throws(() => native.recvMsg(fd, new Uint8Array(4), new Int32Array(2)), TypeError, 'an fds array too short for MAX_FDS');
  native.close(fd);
});

t.test('datagrams: each with its real destination, and replies from the address the client sent to', async (t) => {
  const { DATAGRAM_RECORD, DATAGRAM_SLOT, LISTEN_UDP } = await import('../src/native/index.js');
  t.throws(
    () => native.sendDatagrams(-1, new Uint8Array(4), Int32Array.from([2, 4, 4, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]), 1, true),
    RangeError,
    'a record outside the data',
  );
  const { createSocket } = await import('node:dgram');
  let fd = -1;
  let port: number;
  for (port = 20000 + Math.floor(Math.random() * 12000); fd < 0; port++) {
    try {
      fd = native.listenInet('::', port, 0, LISTEN_UDP);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
  }
  port--;
  const self = new Int32Array(6);
  t.equal(native.sockName(fd, self), 0);
  t.equal(self[5], port, 'sockName gives the bound port');

  const v4 = createSocket('udp4');
  const v6 = createSocket('udp6');
  await Promise.all([new Promise<void>((r) => v4.bind(0, '127.0.0.1', r)), new Promise<void>((r) => v6.bind(0, '::1', r))]);
  v4.send('to .7', port, '127.0.0.7');
  v6.send('to ::1', port, '::1');
  const data = new Uint8Array(DATAGRAM_SLOT * 4);
  const meta = new Int32Array(DATAGRAM_RECORD * 4);
  let got: { text: string; src: number[]; dst: number[] }[] = [];
  for (let i = 0; i < 50 && got.length < 2; i++) {
    await readable(fd);
    const n = native.recvDatagrams(fd, data, meta, 4);
    for (let k = 0; k < n; k++) {
      const r = meta.subarray(k * DATAGRAM_RECORD, (k + 1) * DATAGRAM_RECORD);
      got.push({
        text: Buffer.from(data.subarray(k * DATAGRAM_SLOT, k * DATAGRAM_SLOT + r[0]!)).toString(),
        src: Array.from(r.subarray(1, 7)),
        dst: Array.from(r.subarray(7, 13)),
      });
    }
  }
  got = got.sort((a, b) => a.text.localeCompare(b.text));
  t.same(
    got.map((g) => g.text),
    ['to ::1', 'to .7'],
  );
  t.same(got[1]!.dst, [4, 0x7f000007, 0, 0, 0, port], 'an IPv4 datagram on a dual-stack socket: its IPv4 destination');
  t.same(got[0]!.dst, [6, 0, 0, 0, 1, port], 'an IPv6 datagram: its IPv6 destination');
  t.equal(got[1]!.src[5], v4.address().port, 'the source port');

  // The reply leaves from 127.0.0.7, the address the client sent to, not from the wildcard's choice.
  const reply = new Promise<{ msg: string; from: string; port: number }>((resolve) =>
    v4.once('message', (m, rinfo) => resolve({ msg: m.toString(), from: rinfo.address, port: rinfo.port })),
  );
  const records = Int32Array.from([0, 4, ...got[1]!.src, ...got[1]!.dst]);
  t.equal(native.sendDatagrams(fd, Buffer.from('pong'), records, 1, true), 1, 'one datagram sent (sendmmsg)');
  t.same(await reply, { msg: 'pong', from: '127.0.0.7', port });
  v4.close();
  v6.close();
  native.close(fd);
});

// Hostile arguments run in a child: a stack overflow or an assertion there must fail this test, not end tap.
// Each line is `name result`: a thrown error's type (and code), or the number returned.
const HOSTILE = String.raw`
const addon = require(process.argv[1]);
const udp = addon.listenInet('127.0.0.1', 0, 0, 2);
const tcp = addon.listenInet('127.0.0.1', 0, 16, 0);
const big = new Uint8Array(64 * 65536), meta = new Int32Array(64 * 13);
const cases = {
  recvNegative: () => addon.recvDatagrams(udp, big, meta, -1),
  recvMinInt: () => addon.recvDatagrams(udp, big, meta, -2147483648),
  recvHuge: () => addon.recvDatagrams(udp, new Uint8Array(16), new Int32Array(2), 2147483647),
  recvWrongTypes: () => addon.recvDatagrams(udp, meta, big, 1),
  sendNegative: () => addon.sendDatagrams(udp, big, meta, -1, false),
  sendHuge: () => addon.sendDatagrams(udp, big, meta, 1000, false),
  sendShortRecords: () => addon.sendDatagrams(udp, big, new Int32Array(13), 1, false),
  sendRecordOutside: () => addon.sendDatagrams(udp, new Uint8Array(4), new Int32Array(14).fill(2147483647), 1, false),
  acceptNegative: () => addon.acceptBatch(tcp, new Int32Array(13 * 100), -5),
  acceptShort: () => addon.acceptBatch(tcp, new Int32Array(3), 10),
  listenPortTooBig: () => addon.listenInet('127.0.0.1', 70000, 16, 0),
  connectPortNegative: () => addon.connectStream('127.0.0.1', -1),
  relayNegative: () => addon.relay(-1, -1, () => {}, 1000, new Uint8Array(0)),
  relaySame: () => addon.relay(tcp, tcp, () => {}, 1000, new Uint8Array(0)),
  relayNotFunction: () => addon.relay(tcp, udp, 1, 1000, new Uint8Array(0)),
  relayString: () => addon.relay('1', 2, () => {}, 1000, new Uint8Array(0)),
  relayNoHeader: () => addon.relay(tcp, udp, () => {}),
  relayNegativeTimeout: () => addon.relay(tcp, udp, () => {}, -1, new Uint8Array(0)),
  relayHeaderTooLong: () => addon.relay(tcp, udp, () => {}, 1000, new Uint8Array(109)),
  watchBadFd: () => addon.watch(-1, 1, () => {}),
  setEventsNotHandle: () => addon.setEvents({}, 1),
  unwatchNumber: () => addon.unwatch(1),
  recvMsgString: () => addon.recvMsg(tcp, 'x', new Int32Array(9)),
  sockNameShort: () => addon.sockName(tcp, new Int32Array(2)),
  resetNegative: () => addon.reset(-1),
  resetClosed: () => addon.reset(1000000),
};
for (const [name, run] of Object.entries(cases)) {
  let result;
  try { result = String(run()); } catch (err) { result = err.constructor.name + (err.code ? ':' + err.code : ''); }
  require('node:fs').writeSync(1, name + ' ' + result + '\n');
}
`;

t.test('hostile arguments give a TypeError, a RangeError or -errno, never a crash', async (t) => {
  const addon = fileURLToPath(new URL('../native/build/Release/dispatcher.node', import.meta.url));
  let out = '';
  t.doesNotThrow(
    () => (out = execFileSync(process.execPath, ['-e', HOSTILE, addon], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })),
    'the child survives every call',
  );
  const got = Object.fromEntries(
    out
      .trim()
      .split('\n')
      .map((line) => line.split(' ') as [string, string]),
  );
  const { errno } = constants;
  t.same(got, {
    recvNegative: '0',
    recvMinInt: '0',
    recvHuge: '0',
    recvWrongTypes: 'TypeError:ERR_INVALID_ARG',
    sendNegative: 'TypeError:ERR_INVALID_ARG',
    sendHuge: 'TypeError:ERR_INVALID_ARG',
    sendShortRecords: 'TypeError:ERR_INVALID_ARG',
    sendRecordOutside: 'RangeError:ERR_INVALID_ARG',
    acceptNegative: '0',
    acceptShort: '0',
    listenPortTooBig: 'TypeError:ERR_INVALID_ARG',
    connectPortNegative: 'TypeError:ERR_INVALID_ARG',
    relayNegative: String(-errno.EBADF),
    relaySame: String(-errno.EINVAL),
    relayNotFunction: 'TypeError:ERR_INVALID_ARG',
    relayString: 'TypeError:ERR_INVALID_ARG',
    relayNoHeader: 'TypeError:ERR_INVALID_ARG',
    relayNegativeTimeout: 'TypeError:ERR_INVALID_ARG',
    relayHeaderTooLong: 'TypeError:ERR_INVALID_ARG',
    watchBadFd: 'Error:EBADF',
    setEventsNotHandle: 'TypeError:ERR_INVALID_ARG',
    unwatchNumber: 'TypeError:ERR_INVALID_ARG',
    recvMsgString: 'TypeError:ERR_INVALID_ARG',
    sockNameShort: 'TypeError:ERR_INVALID_ARG',
    resetNegative: 'TypeError:ERR_INVALID_ARG',
    resetClosed: String(-errno.EBADF),
  });
});

t.test('records.ts reads what the addon writes and writes what it reads', async (t) => {
  const {
    ACCEPT,
    DATAGRAM,
    SEND,
    acceptFd,
    addressAt,
    addressText,
    checkRecordSizes,
    datagramLength,
    portAt,
    putAddress,
    putSendData,
    recordIn,
  } = await import('../src/native/records.js');
  const { DATAGRAM_RECORD, DATAGRAM_SLOT, LISTEN_UDP, SEND_RECORD } = await import('../src/native/index.js');
  t.throws(
    () => checkRecordSizes({ ACCEPT_RECORD, DATAGRAM_RECORD, SEND_RECORD: SEND_RECORD + 1 }),
    /SEND_RECORD/,
    'a size that disagrees stops the start',
  );

  const { fd, port } = listenAnywhere('127.0.0.1');
  const client = await connected('127.0.0.1', port);
  await readable(fd);
  const batch = new Int32Array(ACCEPT_RECORD * 2);
  t.equal(native.acceptBatch(fd, batch, 2), 1);
  const accepted = recordIn(batch, 0, ACCEPT_RECORD);
  t.same([addressText(accepted, ACCEPT.LOCAL), portAt(accepted, ACCEPT.LOCAL)], ['127.0.0.1', port], 'the local address');
  t.same(
    addressAt(accepted, ACCEPT.PEER),
    { family: 4, words: Int32Array.from([0x7f000001, 0, 0, 0]), port: client.localPort },
    'the peer address',
  );
  native.close(acceptFd(batch, 0));
  client.destroy();
  native.close(fd);

  // A datagram to itself: the send record written here, the datagram record read back.
  const udp = native.listenInet('127.0.0.1', 0, 0, LISTEN_UDP);
  const self = new Int32Array(6);
  t.equal(native.sockName(udp, self), 0);
  const send = new Int32Array(SEND_RECORD);
  putSendData(send, 1, 4);
  putAddress(send, SEND.DESTINATION, 4, [0x7f000001], portAt(self, 0));
  t.equal(native.sendDatagrams(udp, Buffer.from('xpingx'), send, 1, false), 1);
  await readable(udp);
  const data = new Uint8Array(DATAGRAM_SLOT);
  const meta = new Int32Array(DATAGRAM_RECORD);
  t.equal(native.recvDatagrams(udp, data, meta, 1), 1);
  t.equal(Buffer.from(data.subarray(0, datagramLength(meta))).toString(), 'ping');
  t.same([addressText(meta, DATAGRAM.DESTINATION), portAt(meta, DATAGRAM.DESTINATION)], ['127.0.0.1', portAt(self, 0)], 'the destination');
  t.equal(addressAt(meta, DATAGRAM.SOURCE).family, 4);
  native.close(udp);
});

t.test('sendConnections: accepted sockets go whole and in order, with the header formatAddress would write', async (t) => {
  const dir = await tempDir(t);
  const [a, b] = seqpacketPair(dir);
  const { fd: listener, port } = listenAnywhere('::');
  const clients = await Promise.all([connected('127.0.0.7', port), connected('::1', port)]);
  await readable(listener);
  const records = new Int32Array(ACCEPT_RECORD * 2);
  let n = 0;
  for (let tries = 0; n < 2 && tries < 100; tries++) {
    n += Math.max(0, native.acceptBatch(listener, records.subarray(n * ACCEPT_RECORD), 2 - n));
    if (n < 2) await new Promise((r) => setTimeout(r, 10));
  }
  t.equal(n, 2);
  const before = openFds();
  const prefix = connectionPrefix('web', 'tcp');
  t.equal(native.sendConnections(a, prefix, records, 2), 2, 'both went');
  t.equal(openFds(), before - 2, "the daemon's copies are closed");
  const data = new Uint8Array(512);
  const fds = new Int32Array(MAX_FDS + 1);
  const seen = new Set<string>();
  for (let i = 0; i < 2; i++) {
    const len = native.recvMsg(b, data, fds);
    const r = records.subarray(i * ACCEPT_RECORD, (i + 1) * ACCEPT_RECORD);
    const header = Buffer.from(data.subarray(0, len)).toString();
    const expected = addressedHeader(
      'connection',
      'web',
      'tcp',
      addressText(r, ACCEPT.PEER),
      portAt(r, ACCEPT.PEER),
      addressText(r, ACCEPT.LOCAL),
      portAt(r, ACCEPT.LOCAL),
    );
    t.equal(header, expected, 'the same JSON as a header built in JavaScript');
    t.equal(fds[0], 1, 'with its descriptor');
    seen.add((JSON.parse(header) as { local: { address: string } }).local.address);
    native.close(fds[1]!);
  }
  t.same([...seen].sort(), ['127.0.0.7', '::1'], 'both connections');
  clients.forEach((c) => c.destroy());
  native.close(listener);
  native.close(a);
  native.close(b);
});

t.test('sendConnections writes IPv6 as formatAddress does', async (t) => {
  const dir = await tempDir(t);
  const [a, b] = seqpacketPair(dir);
  const addresses = [
    '::',
    '::1',
    '2001:db8::1',
    '1:0:0:1:0:0:0:1',
    '1:0:1:0:0:1:0:1',
    '1:2:3:4:5:6:7:8',
    '::fffe:0:1',
    'fe80::',
    '0:0:1::',
  ];
  const fds = new Int32Array(MAX_FDS + 1);
  const data = new Uint8Array(512);
  for (const text of addresses) {
    const { words } = parseAddress(text);
    const record = new Int32Array(ACCEPT_RECORD);
    record[ACCEPT.FD] = openSync('/dev/null', 'r');
    putAddress(record, ACCEPT.PEER, 6, words, 65535);
    putAddress(record, ACCEPT.LOCAL, 6, words, 0);
    t.equal(native.sendConnections(a, connectionPrefix('x', 'tcp'), record, 1), 1);
    const len = native.recvMsg(b, data, fds);
    native.close(fds[1]!);
    const header = JSON.parse(Buffer.from(data.subarray(0, len)).toString()) as { client: { address: string; port: number } };
    t.same(header.client, { address: formatAddress(6, words), port: 65535 }, text);
  }
  native.close(a);
  native.close(b);
});

t.test('sendConnections stops part-way at a full socket: the rest stay the caller’s, nothing leaks', async (t) => {
  const dir = await tempDir(t);
  const baseline = openFds();
  const [a, b] = seqpacketPair(dir);
  // More than one sendmmsg chunk, and more than the socket buffer holds.
  const count = 2000;
  const records = new Int32Array(ACCEPT_RECORD * count);
  for (let i = 0; i < count; i++) {
    records[i * ACCEPT_RECORD + ACCEPT.FD] = openSync('/dev/null', 'r');
    putAddress(records, i * ACCEPT_RECORD + ACCEPT.PEER, 4, [0xc0000201], i);
    putAddress(records, i * ACCEPT_RECORD + ACCEPT.LOCAL, 4, [0x7f000001], 80);
  }
  const prefix = connectionPrefix('web', 'tcp');
  const sent = native.sendConnections(a, prefix, records, count);
  t.ok(sent > 64 && sent < count, `${sent} of ${count} went before the buffer filled`);
  t.equal(openFds(), baseline + 2 + count - sent, 'those that went are closed, the rest are open');
  const rest = records.subarray(sent * ACCEPT_RECORD);
  t.equal(native.sendConnections(a, prefix, rest, count - sent), -EAGAIN, 'a full socket sends none');
  // Read them all: in order, each with its descriptor.
  const data = new Uint8Array(512);
  const fds = new Int32Array(MAX_FDS + 1);
  let ports = 0;
  for (let i = 0; i < sent; i++) {
    const len = native.recvMsg(b, data, fds);
    const header = JSON.parse(Buffer.from(data.subarray(0, len)).toString()) as { client: { port: number } };
    if (header.client.port === i && fds[0] === 1) ports++;
    native.close(fds[1]!);
  }
  t.equal(ports, sent, 'every message in order, each with one descriptor');
  t.equal(native.recvMsg(b, data, fds), -EAGAIN, 'nothing more waiting');
  for (let i = 0; i < count - sent; i++) native.close(rest[i * ACCEPT_RECORD + ACCEPT.FD]!);
  native.close(a);
  native.close(b);
  t.equal(openFds(), baseline, 'every descriptor is closed');
});
