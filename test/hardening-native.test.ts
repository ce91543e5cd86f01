import t from 'tap';
import { spawn } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { openSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { constants } from 'node:os';
import { MAX_FDS, native } from '../src/native/index.js';
import { daemonIn, type StatusJSON, tempDir } from './helpers/daemon.js';
import { openFds, passRights } from './helpers/native.js';
import { randomPort, sleep } from './helpers/services.js';

t.test(
  'a Unix socket of the daemon refuses descriptors (SO_PASSRIGHTS), accepted or not yet: none arrives, none leaks',
  { skip: !passRights && 'needs Linux 6.16 or later' },
  async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'l.sock');
    const listener = native.listenSeqpacket(path, 4);
    const peer = native.connectSeqpacket(path);
    // Before the accept too: the connection inherits the refusal from the listener.
    const early = openSync(join(dir, 'x'), 'w');
    t.equal(native.sendFd(peer, Buffer.from('early'), early), -constants.errno.EPERM, 'refused while the connection waits to be accepted');
    closeSync(early);
    const cred = new Int32Array(4);
    t.equal(native.acceptUnix(listener, cred), 1);
    const accepted = cred[0]!;
    const baseline = openFds();
    const file = openSync(join(dir, 'x'), 'w');
    // The kernel refuses the send itself.
    const sent = native.sendFd(peer, Buffer.from('hello'), file);
    t.equal(sent, -constants.errno.EPERM, 'the send of a descriptor is refused');
    t.equal(native.sendFd(peer, Buffer.from('hello'), -1), 5, 'a message without one still goes');
    const fds = new Int32Array(MAX_FDS + 1);
    t.equal(native.recvMsg(accepted, new Uint8Array(64), fds), 5);
    t.equal(fds[0], 0, 'no descriptor arrived');
    closeSync(file);
    t.equal(openFds(), baseline, 'the process holds no more descriptors than before');
    // The connecting end (a worker's, the new daemon's in a hand-over) still takes them.
    const again = openSync(join(dir, 'x'), 'r');
    t.equal(native.sendFd(accepted, Buffer.from('fd'), again), 2, 'the accepted end can send one');
    t.equal(native.recvMsg(peer, new Uint8Array(64), fds), 2);
    t.equal(fds[0], 1, 'and the connecting end receives it');
    closeSync(fds[1]!);
    closeSync(again);
    for (const fd of [peer, accepted, listener]) native.close(fd);
  },
);

t.test('reset closes a descriptor that is not a socket, without blocking', async (t) => {
  const dir = await tempDir(t);
  const baseline = openFds();
  const file = openSync(join(dir, 'f'), 'w');
  t.equal(native.reset(file), 0);
  for (let i = 0; i < 50 && openFds() > baseline; i++) await sleep(20);
  t.equal(openFds(), baseline, 'closed (on a thread of its own)');
});

/** As nobody: binds 127.0.0.1:`port` with SO_REUSEADDR; says "bound" or the error code, then holds it 3 s. */
function squatAsNobody(port: number): Promise<string> {
  const script = `const s = require('node:dgram').createSocket({ type: 'udp4', reuseAddr: true });
s.on('error', (e) => { console.log(e.code); process.exit(0); });
s.on('message', () => console.log('stolen'));
s.bind(${port}, '127.0.0.1', () => { console.log('bound'); setTimeout(() => process.exit(0), 3000); });`;
  const child = spawn(process.execPath, ['-e', script], { uid: 65534, gid: 65534, cwd: '/', stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve) => child.stdout.once('data', (c: Buffer) => resolve(c.toString().trim())));
}

function bound(socket: Socket, port: number): Promise<void> {
  return new Promise((resolve) => socket.bind(port, '127.0.0.1', resolve));
}

t.test(
  'a local user cannot bind the daemon UDP port with SO_REUSEADDR and take its datagrams',
  { skip: process.getuid?.() !== 0 && 'needs root' },
  async (t) => {
    const d = await daemonIn(t);
    const port = randomPort();
    const upstream = createSocket('udp4');
    const upstreamPort = randomPort();
    await bound(upstream, upstreamPort);
    t.teardown(() => upstream.close());
    await d.cli('bind', 'add', 'dns', 'udp', '127.0.0.1', String(port));
    t.equal((await d.cli('upstream', 'add', 'dns', `udp:127.0.0.1:${upstreamPort}`)).code, 0);
    t.equal(await squatAsNobody(port), 'EADDRINUSE', 'nobody cannot bind the port');
    const client = createSocket('udp4');
    t.teardown(() => client.close());
    const got = new Promise<string>((resolve) => {
      upstream.once('message', (m) => resolve(m.toString()));
      setTimeout(() => resolve('nothing within 3 s'), 3000).unref();
    });
    client.send('query', port, '127.0.0.1');
    t.equal(await got, 'query', 'the daemon still receives the datagrams');
  },
);

t.test('a second daemon on the same UDP port reports EADDRINUSE, as for TCP', async (t) => {
  const first = await daemonIn(t);
  const second = await daemonIn(t);
  const port = randomPort();
  t.equal((await first.cli('bind', 'add', 'dns', 'udp', '127.0.0.1', String(port))).code, 0);
  const add = await second.cli('bind', 'add', 'dns', 'udp', '127.0.0.1', String(port));
  t.equal(add.code, 0, 'the binding is made');
  t.match(add.stderr, new RegExp(`warning: cannot listen on udp :: port ${port}: EADDRINUSE`));
  const status = JSON.parse((await second.cli('status', '--json')).stdout) as StatusJSON;
  t.equal(status.listeners[0]?.state, 'failed');
});
