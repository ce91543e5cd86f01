import t from 'tap';
import { pino } from 'pino';
import { Connection } from '../src/handoff/connection.js';
import { Metrics } from '../src/metrics/metrics.js';
import { ACCEPT_RECORD, LISTEN_UDP, MAX_FDS, native } from '../src/native/index.js';
import { ACCEPT, putAddress } from '../src/native/records.js';
import { Policy } from '../src/registry/policy.js';
import { Registry } from '../src/registry/registry.js';
import { LogThrottle } from '../src/services/log-throttle.js';
import { Peer } from '../src/services/peer.js';
import { encode } from '../src/services/protocol.js';
import { tempDir } from './helpers/daemon.js';
import { openFds, readable, seqpacketPair } from './helpers/native.js';

/**
 * A connection whose descriptor is a UDP socket (a socket: a reset closes it at once, where a file's is closed
 * on a thread) and whose client port is `i`, to tell them apart.
 */
function connection(i: number): Connection {
  const record = new Int32Array(ACCEPT_RECORD);
  record[ACCEPT.FD] = native.listenInet('127.0.0.1', 0, 0, LISTEN_UDP);
  putAddress(record, ACCEPT.PEER, 4, [0xc0000201], i);
  putAddress(record, ACCEPT.LOCAL, 4, [0x7f000001], 80);
  return new Connection(record, 'tcp', process.hrtime.bigint());
}

/** Every message waiting on `sock`: the client ports of the connections, after closing their descriptors. */
function received(sock: number): { ports: number[]; other: string[] } {
  const data = new Uint8Array(4096);
  const fds = new Int32Array(MAX_FDS + 1);
  const out: { ports: number[]; other: string[] } = { ports: [], other: [] };
  for (let n = native.recvMsg(sock, data, fds); n > 0; n = native.recvMsg(sock, data, fds)) {
    for (let f = 1; f <= fds[0]!; f++) native.close(fds[f]!);
    const m = JSON.parse(Buffer.from(data.subarray(0, n)).toString()) as { type: string; client?: { port: number } };
    if (m.type === 'connection' && fds[0] === 1) out.ports.push(m.client!.port);
    else out.other.push(m.type);
  }
  return out;
}

/** A Peer on the daemon's end of a socket pair, with its registry (queue of `queueSize`), registered for "web" with `window`. */
async function registeredPeer(dir: string, queueSize: number, window: number) {
  const [daemonEnd, workerEnd] = seqpacketPair(dir);
  const log = pino({ level: 'silent' });
  const metrics = new Metrics();
  const registry = new Registry({ timeoutMs: 60_000, size: queueSize }, metrics);
  const options = { path: '', registry, policy: new Policy(), metrics, log, onReply: () => {}, onBinaryReply: () => {} };
  const peer = new Peer(1, daemonEnd, process.pid, 0, options, new LogThrottle(log, 1), { registered: () => {}, closed: () => {} });
  native.sendFd(workerEnd, encode({ type: 'register', version: 3, label: 'web', window }), -1);
  await readable(workerEnd);
  const answer = received(workerEnd).other;
  return { daemonEnd, workerEnd, metrics, registry, peer, answer };
}

t.test('hand-offs taken in one turn go in one send; a full socket returns the rest to the queue, in order', async (t) => {
  const dir = await tempDir(t);
  const baseline = openFds();
  const { daemonEnd, workerEnd, metrics, registry, peer, answer } = await registeredPeer(dir, 10_000, 1024);
  t.same(answer, ['registered']);
  t.teardown(() => peer.close());
  // A small buffer, so that the window's worth does not fit.
  native.setBufferSizes(daemonEnd, 0, 16384);

  const count = 1000;
  for (let i = 0; i < count; i++) registry.dispatch('web', connection(i));
  t.equal(peer.inflight, count, 'the worker took them all in this turn');
  await Promise.resolve();
  const sent = peer.handoffs;
  t.ok(sent > 0 && sent < count, `${sent} went before the socket filled`);
  t.equal(peer.inflight, sent, 'what did not go is no longer in flight');
  t.equal(registry.queued()['web'], count - sent, 'the rest wait in the queue');
  t.notOk(peer.ready, 'the worker waits for its socket to drain');
  t.equal(metrics.totals.handoffs, sent, 'hand-offs counted as they went');

  // The worker reads and acknowledges; writable, the queue drains into it, in order, until all have gone.
  const ports: number[] = [];
  for (let got = received(workerEnd); ; got = received(workerEnd)) {
    ports.push(...got.ports);
    if (got.ports.length > 0) native.sendFd(workerEnd, encode({ type: 'ack', count: got.ports.length }), -1);
    if (ports.length >= count) break;
    await readable(workerEnd);
  }
  t.same(
    ports,
    Array.from({ length: count }, (_, i) => i),
    'every connection once, in the order dispatched',
  );
  t.equal(registry.queued()['web'], undefined, 'the queue is empty');
  peer.close();
  native.close(workerEnd);
  t.equal(openFds(), baseline, 'every descriptor is closed');
});

t.test('a worker that closes with connections taken gives them back', async (t) => {
  const dir = await tempDir(t);
  const baseline = openFds();
  const { workerEnd, metrics, registry, peer } = await registeredPeer(dir, 10, 64);
  for (let i = 0; i < 12; i++) registry.dispatch('web', connection(i));
  peer.close();
  t.equal(registry.queued()['web'], 10, 'back in the queue, up to its size');
  t.equal(metrics.totals.resets, 2, 'the rest reset, as the queue is full');
  registry.close();
  native.close(workerEnd);
  t.equal(openFds(), baseline, 'every descriptor is closed');
});
