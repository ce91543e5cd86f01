import t from 'tap';
import { execFile, execFileSync } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { LISTEN_REUSEPORT, LISTEN_UDP, native } from '../src/native/index.js';
import { portAt } from '../src/native/records.js';
import { AS_NOBODY, serveSockets } from './helpers/steer.js';

const ADDON = fileURLToPath(new URL('../native/build/Release/dispatcher.node', import.meta.url));
const SOL_SOCKET = 1;
const SO_MARK = 36;
const SOL_IP = 0;
const IP_TRANSPARENT = 19;
const SOL_IPV6 = 41;
const IPV6_TRANSPARENT = 75;
const O_CLOEXEC = 0o2000000;

/** getsockopt of `fd` as python3 reads it through an inherited copy: the kernel's answer, not the addon's. */
function sockopt(fd: number, level: number, name: number): number {
  const script = 'import socket, sys; print(socket.socket(fileno=3).getsockopt(int(sys.argv[1]), int(sys.argv[2])))';
  return Number(execFileSync('python3', ['-c', script, String(level), String(name)], { stdio: ['ignore', 'pipe', 'inherit', fd] }));
}

function boundPort(fd: number): number {
  const name = new Int32Array(6);
  if (native.sockName(fd, name) !== 0) throw new Error(`sockName(${fd}) failed`);
  return portAt(name, 0);
}

t.test('SO_REUSEPORT lets a second socket bind the same port; without it the bind fails EADDRINUSE', async (t) => {
  for (const [protocol, udp] of [
    ['tcp', 0],
    ['udp', LISTEN_UDP],
  ] as const) {
    const first = native.listenInet('127.0.0.1', 0, 16, udp | LISTEN_REUSEPORT);
    const port = boundPort(first);
    const second = native.listenInet('127.0.0.1', port, 16, udp | LISTEN_REUSEPORT);
    t.equal(boundPort(second), port, `${protocol}: both bound to ${port}`);
    t.throws(() => native.listenInet('127.0.0.1', port, 16, udp), { code: 'EADDRINUSE' }, `${protocol}: not without the flag`);
    native.close(first);
    native.close(second);
  }
});

t.test('a mark given to listenInet is the socket SO_MARK', async (t) => {
  const marked = native.listenInet('127.0.0.1', 0, 16, 0, 0x1234);
  const unmarked = native.listenInet('127.0.0.1', 0, 16, 0);
  t.equal(sockopt(marked, SOL_SOCKET, SO_MARK), 0x1234);
  t.equal(sockopt(unmarked, SOL_SOCKET, SO_MARK), 0, 'no mark given: none set');
  t.throws(() => native.listenInet('127.0.0.1', 0, 16, 0, 'x' as unknown as number), { code: 'ERR_INVALID_ARG' });
  native.close(marked);
  native.close(unmarked);
});

t.test('pidfdGetfd takes a duplicate of another process socket', async (t) => {
  const { pid, report } = await serveSockets(t, ['tcp:127.0.0.1', 'udp:::1']);
  const [tcp, udp] = report;
  const dup = native.pidfdGetfd(pid, tcp!.fd);
  t.equal(boundPort(dup), tcp!.port, 'the same port as the server reported');
  t.same(native.socketInfo(dup), [4, 1, 1], 'IPv4, stream, listening');
  const flags = Number.parseInt(/^flags:\s+(\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${dup}`, 'utf8'))![1]!, 8);
  t.ok(flags & O_CLOEXEC, 'close-on-exec');
  const dgram = native.pidfdGetfd(pid, udp!.fd);
  t.same(native.socketInfo(dgram), [6, 2, 0], 'IPv6, datagram, not listening');
  t.equal(boundPort(dgram), udp!.port);
  t.throws(() => native.pidfdGetfd(pid, 4000), { code: 'EBADF' }, 'a descriptor the process does not have');
  native.close(dup);
  native.close(dgram);
});

t.test('pidfdGetfd of a process that has exited fails ESRCH', async (t) => {
  const server = await serveSockets(t, []);
  await server.kill();
  t.throws(() => native.pidfdGetfd(server.pid, 0), { code: 'ESRCH' });
});

t.test('pidfdGetfd is refused with EPERM to a caller that may not ptrace the target', async (t) => {
  const root = await serveSockets(t, ['tcp:127.0.0.1']);
  const nobody = await serveSockets(t, ['tcp:127.0.0.1'], AS_NOBODY);
  // The caller runs as nobody too: it requires the addon by path and prints the error's code, or the socket's info.
  const script = `const a = require(${JSON.stringify(ADDON)}); const [pid, fd] = process.argv.slice(1).map(Number);
    try { console.log(JSON.stringify(a.socketInfo(a.pidfdGetfd(pid, fd)))); } catch (e) { console.log(e.code); }`;
  const tryAsNobody = async (pid: number, fd: number): Promise<string> =>
    (
      await promisify(execFile)(AS_NOBODY[0]!, [...AS_NOBODY.slice(1), process.execPath, '-e', script, String(pid), String(fd)])
    ).stdout.trim();
  t.equal(await tryAsNobody(root.pid, root.report[0]!.fd), 'EPERM', "nobody may not take a root process's socket");
  t.equal(await tryAsNobody(nobody.pid, nobody.report[0]!.fd), '[4,1,1]', 'but may take one of its own processes');
});

t.test('setTransparent makes a socket transparent and marks it', async (t) => {
  const v4 = native.listenInet('127.0.0.1', 0, 16, 0);
  t.equal(sockopt(v4, SOL_IP, IP_TRANSPARENT), 0, 'not transparent before');
  native.setTransparent(v4, 7);
  t.equal(sockopt(v4, SOL_IP, IP_TRANSPARENT), 1, 'IPv4: transparent');
  t.equal(sockopt(v4, SOL_SOCKET, SO_MARK), 7, 'marked');
  native.setTransparent(v4, 0);
  t.equal(sockopt(v4, SOL_SOCKET, SO_MARK), 7, 'mark 0 leaves the mark');

  const v6 = native.listenInet('::1', 0, 16, LISTEN_UDP);
  native.setTransparent(v6, 0);
  t.equal(sockopt(v6, SOL_IPV6, IPV6_TRANSPARENT), 1, 'IPv6: transparent');
  t.equal(sockopt(v6, SOL_IP, IP_TRANSPARENT), 1, 'and to IPv4 too: the two options set the one flag');
  t.equal(sockopt(v6, SOL_SOCKET, SO_MARK), 0, 'no mark');
  native.close(v4);
  native.close(v6);
});

t.test('socketInfo and setTransparent refuse a descriptor that is not a socket (ENOTSOCK)', async (t) => {
  const file = openSync('/dev/null', 'r');
  t.throws(() => native.socketInfo(file), { code: 'ENOTSOCK' });
  t.throws(() => native.setTransparent(file, 0), { code: 'ENOTSOCK' });
  closeSync(file);
});
