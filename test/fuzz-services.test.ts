import t from 'tap';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import {
  encode,
  addressedHeader,
  encodeWithPayload,
  encodeReply,
  encodeBinary,
  BINARY_DATAGRAM,
  BINARY_REPLY,
  MAX_DATAGRAM_MESSAGE,
  type WorkerMessage,
} from '../src/services/protocol.js';
import { MAX_FDS, native } from '../src/native/index.js';
import { rng } from './helpers/bindings.js';
import { daemonIn } from './helpers/daemon.js';
import { openFds, settledFds } from './helpers/native.js';
import { randomPort, request, sleep, startWorker } from './helpers/services.js';

// Bounded so it runs in `npm test` (a few seconds) and the same every time; FUZZ_SEED tries other inputs (or
// replays a failure), FUZZ_ITERATIONS goes longer.
const SEED = Number(process.env['FUZZ_SEED'] ?? 0x5eed);
const ITERATIONS = Number(process.env['FUZZ_ITERATIONS'] ?? 600);
// Connections the fuzzer keeps open at once: many peers, registered or not, interleaved.
const OPEN = 24;
// What the daemon may keep of the run: its heap settles, but nothing may grow per message.
const RSS_GROWTH_LIMIT = 50 * 1024 * 1024;

const rssOf = (pid: number): number => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

t.test(`fuzzing the services socket leaves the daemon serving, with no leak (seed ${SEED})`, async (t) => {
  const d = await daemonIn(t);
  const pid = d.process.pid!;
  const port = randomPort();
  await d.cli('bind', 'add', 'web', 'tcp', '127.0.0.1', String(port));
  await d.cli('bind', 'add', 'dns', 'udp', '127.0.0.1', String(port));
  const web = await startWorker('web', d.services);
  t.teardown(() => web.stop());
  t.equal((await request('127.0.0.1', port)).label, 'web');

  // Something to attach: a file, a TCP socket to a server that holds it, and the connection itself.
  const server = createServer();
  const held: Socket[] = [];
  // The daemon resets those it is sent: that is expected here.
  server.on('connection', (s) => held.push(s.pause().on('error', () => s.destroy())));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of held) s.destroy();
    server.close();
  });

  const baselineFds = await settledFds(pid);
  const baselineRss = rssOf(pid);
  const random = rng(SEED);
  const int = (n: number): number => Math.floor(random() * n);
  const pick = <T>(items: readonly T[]): T => items[int(items.length)]!;
  const bytes = (n: number): Uint8Array => Uint8Array.from({ length: n }, () => int(256));
  const out = new Uint8Array(MAX_DATAGRAM_MESSAGE);
  const endpoint = { address: '127.0.0.1', port };

  /** A valid message of either direction: the daemon must refuse the ones that are not a worker's. */
  const valid = (): Uint8Array => {
    const worker: WorkerMessage[] = [
      { type: 'register', version: 1 + int(3), label: pick(['web', 'dns', 'fuzz', 'x'.repeat(64)]), window: 1 + int(1024) },
      { type: 'ack', count: 1 + int(4) },
      { type: 'drain' },
    ];
    switch (int(7)) {
      case 0:
      case 1:
        return encode(pick(worker));
      case 5:
      case 6: {
        // Version 3's binary header: address blocks (family, 4 words, port) of either family.
        const block = (): number[] => {
          const v6 = random() < 0.5;
          return [
            v6 ? 6 : 4,
            int(2 ** 32) | 0,
            v6 ? int(2 ** 32) | 0 : 0,
            v6 ? int(2 ** 32) | 0 : 0,
            v6 ? int(2 ** 32) | 0 : 0,
            int(65536),
          ];
        };
        const r = [...block(), ...block()];
        return Uint8Array.from(encodeBinary(out, random() < 0.8 ? BINARY_REPLY : BINARY_DATAGRAM, r, 0, 6, bytes(int(200))));
      }
      case 2:
        return Uint8Array.from(encodeReply(out, endpoint, { address: '127.0.0.1', port: int(65536) }, bytes(int(600))));
      case 3:
        return Uint8Array.from(Buffer.from(addressedHeader('connection', 'web', 'tcp', '192.0.2.1', int(65536), '127.0.0.1', port)));
      default:
        return Uint8Array.from(
          encodeWithPayload(out, addressedHeader('datagram', 'dns', 'udp', '192.0.2.1', 53, '127.0.0.1', port), bytes(int(100))),
        );
    }
  };

  /** A valid message, mutated: bytes flipped, cut, extended; or something else entirely. */
  const message = (): Uint8Array => {
    const m = valid();
    switch (int(8)) {
      case 0:
        return m;
      case 1: {
        for (let i = 0, n = 1 + int(4); i < n; i++) {
          const at = int(m.length);
          m[at] = m[at]! ^ (1 << int(8));
        }
        return m;
      }
      case 2:
        return m.subarray(0, int(m.length));
      case 3:
        return Uint8Array.from([...m, ...bytes(1 + int(200))]);
      case 4:
        return new Uint8Array(0);
      case 5:
        // Over the limits: a header over 4096 bytes, or a message the daemon's buffer cannot hold.
        return random() < 0.5 ? new Uint8Array(4097 + int(10_000)).fill(0x20) : bytes(MAX_DATAGRAM_MESSAGE + 1 + int(30_000));
      case 6:
        return bytes(1 + int(300));
      default:
        return Uint8Array.from([...m, 0x0a, ...bytes(int(100))]);
    }
  };

  const serverPort = (server.address() as { port: number }).port;
  /** A descriptor to attach, and how to let go of the fuzzer's copy once it is sent. */
  const attachment = (sock: number): { fd: number; close: () => void } => {
    switch (int(3)) {
      case 0: {
        const fd = openSync('/dev/null', 'r');
        return { fd, close: () => closeSync(fd) };
      }
      case 1: {
        const fd = native.connectStream('127.0.0.1', serverPort);
        return { fd, close: () => native.close(fd) };
      }
      default:
        return { fd: sock, close: () => undefined };
    }
  };

  const open: number[] = [];
  const received = new Uint8Array(MAX_DATAGRAM_MESSAGE);
  const receivedFds = new Int32Array(MAX_FDS + 1);
  const drain = (sock: number): void => {
    while (native.recvMsg(sock, received, receivedFds) > 0) {
      for (let i = 1; i <= receivedFds[0]!; i++) native.close(receivedFds[i]!);
    }
  };
  const started = Date.now();
  for (let i = 0; i < ITERATIONS; i++) {
    if (open.length >= OPEN || (open.length > 0 && random() < 0.3)) {
      const sock = open.splice(int(open.length), 1)[0]!;
      drain(sock);
      native.close(sock);
    }
    const sock = native.connectSeqpacket(d.services);
    open.push(sock);
    if (random() < 0.5)
      native.sendFd(sock, encode({ type: 'register', version: 1, label: pick(['web', 'fuzz']), window: 1 + int(64) }), -1);
    for (let m = 0, n = 1 + int(5); m < n; m++) {
      if (random() < 0.15) {
        const a = attachment(sock);
        native.sendFd(sock, message(), a.fd);
        a.close();
      } else native.sendFd(sock, message(), -1);
    }
    if (i % 8 === 0) await sleep(1); // let the daemon read, and our connections' hand-offs arrive
    drain(sock);
  }
  for (const sock of open.splice(0)) {
    drain(sock);
    native.close(sock);
  }
  t.comment(`${ITERATIONS} connections in ${Date.now() - started} ms`);

  t.equal(d.process.exitCode, null, 'the daemon is alive');
  t.equal((await d.cli('status')).code, 0, 'it answers on the control socket');
  t.equal((await request('127.0.0.1', port)).label, 'web', 'and hands a connection to a real worker');
  let fds = 0;
  for (let i = 0; i < 100 && (fds = openFds(pid)) !== baselineFds; i++) await sleep(100);
  t.equal(fds, baselineFds, 'its descriptors are back at the baseline');
  const growth = rssOf(pid) - baselineRss;
  t.ok(growth < RSS_GROWTH_LIMIT, `its memory grew by ${Math.round(growth / 1024 / 1024)} MB, under ${RSS_GROWTH_LIMIT / 1024 / 1024} MB`);
});
