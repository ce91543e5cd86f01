import t from 'tap';
import { native } from '../src/native/index.js';
import { findServerSocket, mayTrace, type AdoptedSocket } from '../src/steering/adopt.js';
import { openFds } from './helpers/native.js';
import { type TapTest } from './helpers/tap.js';
import { AS_NOBODY, serveSockets, spawnReporting } from './helpers/steer.js';

/** findServerSocket's result without its descriptor, which is closed; and no other duplicate is left open. */
function adopt(t: TapTest, ...args: Parameters<typeof findServerSocket>): Omit<AdoptedSocket, 'fd'> {
  const before = openFds();
  const { fd, ...socket } = findServerSocket(...args);
  t.equal(openFds(), before + 1, 'one duplicate kept');
  native.close(fd);
  return socket;
}

/** The ERR_ADOPT message findServerSocket throws; and no duplicate is left open. */
function refusal(t: TapTest, ...args: Parameters<typeof findServerSocket>): string {
  const before = openFds();
  try {
    findServerSocket(...args);
  } catch (err) {
    t.equal((err as { code?: string }).code, 'ERR_ADOPT');
    t.equal(openFds(), before, 'every duplicate closed');
    return (err as Error).message;
  }
  throw new Error('findServerSocket found a socket');
}

t.test('the listening TCP socket of a Node server, with and without its address', async (t) => {
  const { pid, report } = await serveSockets(t, ['tcp:127.0.0.1']);
  const port = report[0]!.port;
  const expected = { family: 4, protocol: 'tcp', address: '127.0.0.1', port };
  t.same(adopt(t, pid, 'tcp'), expected, 'the only one');
  t.same(adopt(t, pid, 'tcp', { address: '127.0.0.1', port }), expected, 'at its address');
  t.same(adopt(t, pid, 'tcp', { address: '::ffff:127.0.0.1', port }), expected, 'at its address, IPv4-mapped');
  t.match(
    refusal(t, pid, 'tcp', { address: '127.0.0.1', port: port + 1 }),
    `no listening TCP socket at 127.0.0.1:${port + 1} (it has 127.0.0.1:${port})`,
  );
  // Its stdio pipes are Unix sockets: not counted.
  t.match(refusal(t, pid, 'udp'), new RegExp(`^process ${pid} has no bound UDP socket$`));
});

t.test('the bound UDP socket of a Node server', async (t) => {
  const { pid, report } = await serveSockets(t, ['udp:127.0.0.1']);
  const port = report[0]!.port;
  t.same(adopt(t, pid, 'udp'), { family: 4, protocol: 'udp', address: '127.0.0.1', port });
  t.same(adopt(t, pid, 'udp', { address: '127.0.0.1', port }), { family: 4, protocol: 'udp', address: '127.0.0.1', port });
  t.match(refusal(t, pid, 'tcp'), 'has no listening TCP socket');
});

t.test('several sockets: refused without an address, chosen by one', async (t) => {
  const { pid, report } = await serveSockets(t, ['tcp:127.0.0.1', 'tcp:::1', 'tcp:0.0.0.0', 'tcp:::']);
  const [v4, v6, any4, any6] = report.map((s) => s.port);
  const message = refusal(t, pid, 'tcp');
  t.match(message, 'has several listening TCP sockets');
  t.match(message, 'name one as address:port');
  for (const endpoint of [`127.0.0.1:${v4}`, `[::1]:${v6}`, `0.0.0.0:${any4}`, `[::]:${any6}`]) t.match(message, endpoint);
  t.same(adopt(t, pid, 'tcp', { address: '::1', port: v6! }), { family: 6, protocol: 'tcp', address: '::1', port: v6 });
  t.same(adopt(t, pid, 'tcp', { address: '127.0.0.1', port: v4! }), { family: 4, protocol: 'tcp', address: '127.0.0.1', port: v4 });
  t.same(
    adopt(t, pid, 'tcp', { address: '192.0.2.1', port: any4! }),
    { family: 4, protocol: 'tcp', address: '0.0.0.0', port: any4 },
    'a wildcard',
  );
  t.same(
    adopt(t, pid, 'tcp', { address: '192.0.2.1', port: any6! }),
    { family: 6, protocol: 'tcp', address: '::', port: any6 },
    ':: is dual-stack',
  );
  t.match(
    refusal(t, pid, 'tcp', { address: '2001:db8::1', port: any4! }),
    `no listening TCP socket at [2001:db8::1]:${any4}`,
    'not 0.0.0.0 for IPv6',
  );
});

t.test('duplicates of one socket count as one: the first is kept', async (t) => {
  const script = `import json, os, socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
fds = [s.fileno(), os.dup(s.fileno()), os.dup(s.fileno())]
print(json.dumps({"port": s.getsockname()[1], "fds": fds}), flush=True)
sys.stdin.read()`;
  const { pid, report } = await spawnReporting<{ port: number; fds: number[] }>(t, ['python3', '-c', script]);
  t.equal(report.fds.length, 3);
  const before = openFds();
  const socket = findServerSocket(pid, 'tcp');
  t.equal(openFds(), before + 1, 'the other two duplicates closed');
  t.same({ ...socket, fd: 0 }, { fd: 0, family: 4, protocol: 'tcp', address: '127.0.0.1', port: report.port });
  native.close(socket.fd);
});

t.test('a process that is gone', async (t) => {
  const server = await serveSockets(t, ['tcp:127.0.0.1']);
  await server.kill();
  t.match(refusal(t, server.pid, 'tcp'), `process ${server.pid}: no such process`);
  t.equal(mayTrace({ uid: 1000, gid: 1000 }, server.pid), 'no such process');
});

t.test('mayTrace: root may; anyone else only with the target uids and gids', async (t) => {
  const root = await serveSockets(t, []);
  const nobody = await serveSockets(t, [], AS_NOBODY);
  t.equal(mayTrace({ uid: 0, gid: 0 }, nobody.pid), undefined, 'root');
  t.equal(mayTrace({ uid: 65534, gid: 65534 }, nobody.pid), undefined, 'the same uid and gid');
  t.equal(
    mayTrace({ uid: 1000, gid: 65534 }, nobody.pid),
    `uid 1000 is not process ${nobody.pid}'s real, effective and saved uids (65534, 65534, 65534)`,
  );
  t.equal(
    mayTrace({ uid: 65534, gid: 1000 }, nobody.pid),
    `gid 1000 is not process ${nobody.pid}'s real, effective and saved gids (65534, 65534, 65534)`,
  );
  t.match(mayTrace({ uid: 65534, gid: 65534 }, root.pid), /^uid 65534 is not .* uids \(0, 0, 0\)$/, "nobody on root's process");
});
