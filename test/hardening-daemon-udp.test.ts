import t from 'tap';
import { createSocket, type Socket } from 'node:dgram';
import { FLOW_IDLE_MS, MAX_FLOWS, UdpFlows } from '../src/dispatch/udp-flows.js';
import { MAX_FDS, native } from '../src/native/index.js';
import { daemonIn, type StatusJSON } from './helpers/daemon.js';
import { readable } from './helpers/native.js';
import { randomPort, sleep } from './helpers/services.js';

/** A bare worker on the services socket: registers `label`, and sends whatever reply it is told to. */
async function rawWorker(
  services: string,
  label: string,
): Promise<{ reply(client: object, local: object, payload: string): void; datagram(): Promise<Record<string, unknown>>; close(): void }> {
  const sock = native.connectSeqpacket(services);
  const data = new Uint8Array(70_000);
  const fds = new Int32Array(MAX_FDS + 1);
  const next = async (): Promise<Record<string, unknown>> => {
    for (;;) {
      const n = native.recvMsg(sock, data, fds);
      if (n > 0) return JSON.parse(Buffer.from(data.subarray(0, n)).toString().split('\n')[0]!) as Record<string, unknown>;
      if (n === 0) throw new Error('the daemon closed');
      await readable(sock);
    }
  };
  native.sendFd(sock, Buffer.from(JSON.stringify({ type: 'register', version: 1, label })), -1);
  const registered = await next();
  if (registered['type'] !== 'registered') throw new Error(JSON.stringify(registered));
  return {
    reply: (client, local, payload) =>
      void native.sendFd(sock, Buffer.from(`${JSON.stringify({ type: 'reply', client, local })}\n${payload}`), -1),
    datagram: next,
    close: () => native.close(sock),
  };
}

function udpClient(): Promise<{ socket: Socket; port: number; received: string[] }> {
  const socket = createSocket('udp4');
  const received: string[] = [];
  socket.on('message', (m) => received.push(m.toString()));
  return new Promise((resolve) => socket.bind(0, '127.0.0.1', () => resolve({ socket, port: socket.address().port, received })));
}

t.test('a worker may reply only on a flow its label received, never from elsewhere', async (t) => {
  const d = await daemonIn(t);
  const port = randomPort();
  t.equal((await d.cli('bind', 'add', 'dns', 'udp', '127.0.0.0/8', String(port))).code, 0);
  t.equal((await d.cli('bind', 'add', 'dns', 'udp', '2001:db8::/32', String(port))).code, 0);
  const worker = await rawWorker(d.services, 'dns');
  t.teardown(() => worker.close());
  const client = await udpClient();
  t.teardown(() => client.socket.close());
  const me = { address: '127.0.0.1', port: client.port };

  // Forged: no datagram came from this client, from a local address it never sent to, from a non-local source.
  worker.reply(me, { address: '127.0.0.53', port }, 'forged 1');
  worker.reply(me, { address: '127.0.0.54', port }, 'forged 2');
  worker.reply(me, { address: '2001:db8::66', port }, 'forged 3');
  const refused = async (): Promise<number> =>
    (JSON.parse((await d.cli('status', '--json')).stdout) as StatusJSON).connections.replies_refused;
  for (let i = 0; i < 100 && (await refused()) < 3; i++) await sleep(50);
  t.equal(await refused(), 3, 'three replies refused');

  // A real query, and its reply; then a reply to it from another local address is still refused.
  client.socket.send('query', port, '127.0.0.53');
  const got = await worker.datagram();
  t.same(got['client'], me, 'the worker got the query');
  worker.reply(got['client'] as object, got['local'] as object, 'answer');
  worker.reply(got['client'] as object, { address: '127.0.0.54', port }, 'forged 4');
  for (let i = 0; i < 100 && (client.received.length === 0 || (await refused()) < 4); i++) await sleep(50);
  const status = JSON.parse((await d.cli('status', '--json')).stdout) as StatusJSON;
  t.equal(status.connections.replies, 1, 'one reply sent');
  t.equal(status.connections.replies_refused, 4, 'the forged one on a real client is refused too');
  await sleep(200);
  t.same(client.received, ['answer'], 'only the real answer reached the client');
});

t.test('the flow table: idle flows expire, and it stays under its cap', async (t) => {
  const flows = new UdpFlows();
  const record = (client: number, port: number): Int32Array => Int32Array.of(0, 4, client, 0, 0, 0, port, 4, 0x7f000035, 0, 0, 0, 53);
  const ask = (client: number, port: number, now: number, label = 'dns'): boolean =>
    flows.allows(label, { family: 4, words: Uint32Array.of(client) }, port, { family: 4, words: Uint32Array.of(0x7f000035) }, 53, now);
  flows.received('dns', record(0xc0000201, 1000), 1, 7, 0);
  t.ok(ask(0xc0000201, 1000, FLOW_IDLE_MS), 'answerable while recent');
  t.notOk(ask(0xc0000201, 1000, 0, 'web'), 'by its label only');
  t.notOk(ask(0xc0000201, 1001, 0), 'on its exact ports only');
  t.notOk(ask(0xc0000201, 1000, FLOW_IDLE_MS + 1), 'not once idle');
  for (let i = 0; i < 3 * MAX_FLOWS; i++) flows.received('dns', record(i, 2000), 1, 7, 1);
  t.ok(flows.size <= MAX_FLOWS, `${flows.size} flows after ${3 * MAX_FLOWS} sources`);
  t.ok(ask(3 * MAX_FLOWS - 1, 2000, 2), 'the newest stays answerable');
});
