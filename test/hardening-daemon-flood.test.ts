import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { Listeners } from '../src/listener/listeners.js';
import { LISTEN_UDP, native, SEND_RECORD } from '../src/native/index.js';
import { daemonIn, type StatusJSON, tempDir } from './helpers/daemon.js';
import { randomPort, request, startWorker } from './helpers/services.js';

// Sends datagrams as fast as it can (sendmmsg, 64 a call: faster than the daemon can take them), for at
// most FLOOD_S seconds: the bound on how long a starved daemon could keep the checks below waiting.
const FLOOD_S = 20;
const FLOOD_C = `
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
int main(int argc, char **argv) {
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1])), .sin_addr.s_addr = htonl(0x7f000001)};
  char payload[32] = "flood";
  struct iovec iov = {payload, sizeof payload};
  struct mmsghdr m[64];
  memset(m, 0, sizeof m);
  for (int i = 0; i < 64; i++) m[i].msg_hdr = (struct msghdr){.msg_name = &to, .msg_namelen = sizeof to, .msg_iov = &iov, .msg_iovlen = 1};
  time_t end = time(NULL) + atoi(argv[2]);
  while (time(NULL) < end) for (int i = 0; i < 1000; i++) sendmmsg(s, m, 64, 0);
  return 0;
}
`;

t.test('under a UDP flood the daemon still answers control requests and hands TCP connections off', async (t) => {
  const d = await daemonIn(t);
  const udp = randomPort();
  const tcp = udp + 1;
  t.equal((await d.cli('bind', 'add', 'dns', 'udp', '127.0.0.0/8', String(udp))).code, 0);
  t.equal((await d.cli('bind', 'add', 'web', 'tcp', '127.0.0.0/8', String(tcp))).code, 0);
  const web = await startWorker('web', d.services);
  t.teardown(() => web.stop());
  // A dns worker that never reads: every datagram costs the daemon a send that fails, so it falls behind.
  const dns = native.connectSeqpacket(d.services);
  t.teardown(() => native.close(dns));
  native.sendFd(dns, Buffer.from(JSON.stringify({ type: 'register', version: 1, label: 'dns' })), -1);
  const flood = join(await tempDir(t), 'flood');
  await writeFile(`${flood}.c`, FLOOD_C);
  const cc = spawnSync('cc', ['-O2', '-o', flood, `${flood}.c`], { encoding: 'utf8' });
  t.equal(cc.status, 0, cc.stderr);
  const floods = [0, 1].map(() => spawn(flood, [String(udp), String(FLOOD_S)], { stdio: 'ignore' }));
  const flooding = (): boolean => floods.some((f) => f.exitCode === null && f.signalCode === null);
  t.teardown(() => floods.forEach((f) => f.kill('SIGKILL')));
  // Wait until the daemon is seen taking datagrams, so the checks run under the flood.
  let dropped = 0;
  for (let i = 0; i < 100 && dropped === 0 && flooding(); i++) {
    const s = await d.cli('status', '--json');
    if (s.code === 0) dropped = (JSON.parse(s.stdout) as StatusJSON).connections.dropped;
  }
  const status = await d.cli('status', '--json');
  const answeredInFlood = flooding();
  t.equal(status.code, 0, 'status answers');
  const served = await request('127.0.0.1', tcp, { timeoutMs: FLOOD_S * 1000 });
  const servedInFlood = flooding();
  t.equal(served.pid, web.pid, 'a TCP connection is handed off');
  t.ok(answeredInFlood && servedInFlood, `both while the flood still runs (status: ${answeredInFlood}, hand-off: ${servedInFlood})`);
  t.ok((JSON.parse(status.stdout) as StatusJSON).connections.dropped > 0, 'and datagrams were being taken meanwhile');
});

t.test('a listener kept readable by a flood gives the event loop back after a bounded number of batches', async (t) => {
  let calls = 0;
  let stop = false;
  const sender = native.listenInet('127.0.0.1', 0, 0, LISTEN_UDP);
  t.teardown(() => native.close(sender));
  const payload = new Uint8Array(32 * 8);
  const records = new Int32Array(32 * SEND_RECORD);
  const refill = (port: number): void => {
    for (let i = 0; i < 32; i++) records.set([i * 8, 8, 4, 0x7f000001, 0, 0, 0, port, 0, 0, 0, 0, 0, 0], i * SEND_RECORD);
    native.sendDatagrams(sender, payload, records, 32, false);
  };
  const listeners = new Listeners({
    protocol: 'udp',
    address: '127.0.0.1',
    transparent: false,
    log: pino({ level: 'silent' }),
    // Every batch taken is replaced at once, as a flood would: the socket never runs dry. A bound on the
    // refills keeps a listener that never yields from hanging the test.
    onDatagrams: () => {
      calls++;
      if (!stop && calls < 10_000) refill(listeners.bound(port));
    },
  });
  const port = randomPort();
  listeners.sync([port]);
  t.teardown(() => listeners.close());
  refill(listeners.bound(port));
  // Each turn of the loop runs the immediates: the first one after the listener's callback counts its batches.
  for (let i = 0; i < 100_000 && calls === 0; i++) await new Promise((r) => setImmediate(r));
  const atFirstYield = calls;
  stop = true;
  t.ok(atFirstYield > 0 && atFirstYield < 100, `${atFirstYield} batches before the loop had its turn`);
});
