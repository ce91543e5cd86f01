import t from 'tap';
import { type TapTest } from './helpers/tap.js';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createSocket } from 'node:dgram';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { native } from '../src/native/index.js';
import { daemonIn, startDaemon, type StatusJSON, tempDir, type UpstreamsJSON } from './helpers/daemon.js';
import { openFds, settledFds } from './helpers/native.js';
import { randomPort, request, sleep, startWorker } from './helpers/services.js';

// Proxy mode against real servers that read the PROXY protocol: nginx and HAProxy (Debian packages).
const has = (cmd: string): boolean => ['/usr/sbin', '/usr/bin'].some((d) => existsSync(join(d, cmd)));

function curl(url: string): Promise<{ code: number; body: string }> {
  return new Promise((resolve) =>
    execFile('curl', ['-sS', '--max-time', '5', url], (err, stdout, stderr) => resolve({ code: err ? 1 : 0, body: stdout || stderr })),
  );
}

async function startServer(t: TapTest, command: string[], socket: string): Promise<void> {
  const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  t.teardown(() => void child.kill('SIGTERM'));
  for (let i = 0; i < 100 && !existsSync(socket); i++) await sleep(50);
  if (!existsSync(socket)) throw new Error(`${command[0]} did not create ${socket}: ${err}`);
}

async function startNginx(t: TapTest, dir: string): Promise<string> {
  const socket = join(dir, 'nginx.sock');
  const conf = join(dir, 'nginx.conf');
  const tmp = (name: string): string => `${name} ${dir};`;
  await writeFile(
    conf,
    `daemon off; master_process off; worker_processes 1; pid ${dir}/nginx.pid; error_log ${dir}/nginx-error.log;
events { worker_connections 256; }
http {
  access_log off; ${tmp('client_body_temp_path')} ${tmp('proxy_temp_path')} ${tmp('fastcgi_temp_path')} ${tmp('uwsgi_temp_path')} ${tmp('scgi_temp_path')}
  server {
    listen unix:${socket} proxy_protocol;
    location / { return 200 "nginx $proxy_protocol_addr $proxy_protocol_port $proxy_protocol_server_addr $proxy_protocol_server_port\\n"; }
  }
}
`,
  );
  await startServer(t, ['nginx', '-p', dir, '-e', `${dir}/nginx-error.log`, '-c', conf], socket);
  return socket;
}

async function startHaproxy(t: TapTest, dir: string): Promise<string> {
  const socket = join(dir, 'haproxy.sock');
  const conf = join(dir, 'haproxy.cfg');
  await writeFile(
    conf,
    `defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend f
  bind unix@${socket} accept-proxy
  http-request return status 200 content-type text/plain lf-string "haproxy %[src] %[src_port] %[dst] %[dst_port]\\n"
`,
  );
  await startServer(t, ['haproxy', '-db', '-f', conf], socket);
  return socket;
}

t.test(
  'nginx and HAProxy see the real client and the dialled address, PROXY v1 and v2, IPv4 and IPv6',
  { skip: !(has('nginx') && has('haproxy')) && 'needs nginx and haproxy (apt-get install nginx haproxy)' },
  async (t) => {
    const dir = await tempDir(t);
    const d = await startDaemon(dir, ['--upstream-dir', dir]);
    t.teardown(() => d.stop());
    const port = randomPort();
    const nginx = await startNginx(t, dir);
    const haproxy = await startHaproxy(t, dir);
    await d.cli('bind', 'add', 'web', 'tcp', '127.0.0.0/8', String(port));
    await d.cli('bind', 'add', 'web', 'tcp', '::1', String(port));
    await d.cli('bind', 'add', 'hap', 'tcp', '127.0.0.6', String(port));
    await d.cli('bind', 'add', 'hap', 'tcp', '::1', String(port + 1));
    t.equal((await d.cli('upstream', 'add', 'hap', `unix:${haproxy}`, '--proxy-protocol', 'v2')).code, 0);
    for (const version of ['v1', 'v2']) {
      const add = await d.cli('upstream', 'add', 'web', `unix:${nginx}`, '--proxy-protocol', version);
      t.match(add.stdout, new RegExp(`upstream web -> unix:${nginx} \\(PROXY protocol ${version}\\)`));
      const v4 = await curl(`http://127.0.0.5:${port}/`);
      t.match(v4.body, new RegExp(`^nginx 127\\.0\\.0\\.1 \\d+ 127\\.0\\.0\\.5 ${port}\\n$`), `nginx, ${version}, IPv4`);
      const v6 = await curl(`http://[::1]:${port}/`);
      t.match(v6.body, new RegExp(`^nginx ::1 \\d+ ::1 ${port}\\n$`), `nginx, ${version}, IPv6`);
    }
    t.match(
      (await curl(`http://127.0.0.6:${port}/`)).body,
      new RegExp(`^haproxy 127\\.0\\.0\\.1 \\d+ 127\\.0\\.0\\.6 ${port}\\n$`),
      'HAProxy, v2, IPv4',
    );
    t.match((await curl(`http://[::1]:${port + 1}/`)).body, new RegExp(`^haproxy ::1 \\d+ ::1 ${port + 1}\\n$`), 'HAProxy, v2, IPv6');

    const list = JSON.parse((await d.cli('upstream', 'list', '--json')).stdout) as UpstreamsJSON;
    t.same(list.upstreams, [
      { label: 'hap', address: `unix:${haproxy}`, proxy_protocol: 'v2' },
      { label: 'web', address: `unix:${nginx}`, proxy_protocol: 'v2' },
    ]);

    // A worker, when registered, comes first; the upstream serves again when it leaves.
    const worker = await startWorker('web', d.services);
    t.equal((await request('127.0.0.5', port)).label, 'web', 'the registered worker serves');
    await worker.stop();
    await sleep(200);
    t.match((await curl(`http://127.0.0.5:${port}/`)).body, /^nginx /, 'the upstream again');

    // Upstreams persist with the bindings.
    await d.stop();
    const d2 = await startDaemon(dir, ['--upstream-dir', dir]);
    t.teardown(() => d2.stop());
    t.same(
      (JSON.parse((await d2.cli('upstream', 'list', '--json')).stdout) as UpstreamsJSON).upstreams,
      list.upstreams,
      'a restarted daemon has its upstreams',
    );
    t.equal((await d2.cli('upstream', 'rm', 'hap')).code, 0);
    t.equal((await d2.cli('upstream', 'rm', 'hap')).code, 2, 'removing it twice fails');

    // Restarted without the directory its unix: upstreams lie in: it starts, leaves them out and says so.
    await d2.stop();
    const d3 = await startDaemon(dir);
    t.teardown(() => d3.stop());
    t.same(
      (JSON.parse((await d3.cli('upstream', 'list', '--json')).stdout) as UpstreamsJSON).upstreams,
      [],
      'an upstream outside --upstream-dir is left out',
    );
    t.match(d3.stderr(), /upstream left out: .*must be a socket in \/run\/dispatcher\/upstreams\//, 'and the log says why');
  },
);

t.test('an upstream that refuses, hangs or closes mid-stream: reset or close, and nothing leaks', async (t) => {
  const d = await daemonIn(t, ['--upstream-timeout', '500']);
  const port = randomPort();
  await d.cli('bind', 'add', 'refuses', 'tcp', '127.0.0.1', String(port));
  await d.cli('bind', 'add', 'hangs', 'tcp', '127.0.0.2', String(port));
  await d.cli('bind', 'add', 'breaks', 'tcp', '127.0.0.3', String(port));
  const baseline = await settledFds(d.process.pid!);

  const closed = randomPort();
  await d.cli('upstream', 'add', 'refuses', `tcp:127.0.0.1:${closed}`);
  // A listener whose accept queue is full: the kernel drops further SYNs, so a connect hangs.
  const full = randomPort();
  const listener = native.listenInet('127.0.0.1', full, 0, 0);
  const fillers = [connect(full, '127.0.0.1'), connect(full, '127.0.0.1')];
  t.teardown(() => {
    fillers.forEach((f) => f.destroy());
    native.close(listener);
  });
  await sleep(200);
  await d.cli('upstream', 'add', 'hangs', `tcp:127.0.0.1:${full}`);
  // An upstream that reads the header, sends a little and then resets.
  const breaks = createServer((s) => {
    s.once('data', () => {
      s.write('partial\n');
      setTimeout(() => s.resetAndDestroy(), 50);
    });
  });
  const breaksPort = randomPort();
  await new Promise<void>((r) => breaks.listen(breaksPort, '127.0.0.1', r));
  t.teardown(() => breaks.close());
  await d.cli('upstream', 'add', 'breaks', `tcp:127.0.0.1:${breaksPort}`, '--proxy-protocol', 'v1');

  await t.rejects(request('127.0.0.1', port), { code: 'ECONNRESET' }, 'refused: the client is reset');
  const started = Date.now();
  await t.rejects(request('127.0.0.2', port), { code: 'ECONNRESET' }, 'no accept in time: reset');
  t.ok(Date.now() - started >= 400, 'after the upstream timeout');
  const got = await request('127.0.0.3', port).then(
    (r) => `line ${r.label}`,
    (err: NodeJS.ErrnoException) => err.code,
  );
  t.equal(got, 'line partial', 'what the upstream sent arrives before its reset');

  const status = JSON.parse((await d.cli('status', '--json')).stdout) as StatusJSON;
  t.equal(status.connections.upstream_failures, 2);
  let now = 0;
  for (let i = 0; i < 50 && (now = openFds(d.process.pid)) !== baseline; i++) await sleep(100);
  t.equal(now, baseline, "the daemon's descriptors are back at their baseline");
  t.equal((JSON.parse((await d.cli('status', '--json')).stdout) as StatusJSON).connections.proxy_active, 0, 'no relay left open');
});

t.test('bad upstreams are refused and change nothing', async (t) => {
  const d = await daemonIn(t);
  for (const [args, message] of [
    [['web', 'http://x'], /is not unix:\/path, tcp:host:port or udp:host:port/],
    [['web', 'unix:relative'], /needs an absolute path/],
    [['web', 'tcp:[::1:80'], /is not unix:\/path, tcp:host:port or udp:host:port/],
    [['web', 'tcp:127.0.0.1:0'], /is not unix:\/path, tcp:host:port or udp:host:port/],
    [['bad label!', 'tcp:127.0.0.1:80'], /label "bad label!" is not/],
    [['dns', 'udp:127.0.0.1:53', '--proxy-protocol', 'v1'], /PROXY protocol v1 is for TCP only; a udp: upstream takes none or v2/],
    [['web', 'unix:/run/docker.sock'], /a unix: upstream must be a socket in \/run\/dispatcher\/upstreams\//],
    [['web', 'unix:/run/dispatcher/upstreams/../../docker.sock'], /named without \.\./],
  ] as const) {
    const r = await d.cli('upstream', 'add', ...args);
    t.equal(r.code, 2);
    t.match(r.stderr, message);
  }
  t.same((JSON.parse((await d.cli('upstream', 'list', '--json')).stdout) as UpstreamsJSON).upstreams, [], 'nothing was added');
});

t.test('UDP through an upstream: per client flow, PROXY v2 on each datagram, answers from the dialled address', async (t) => {
  const d = await daemonIn(t);
  const port = randomPort();
  // The upstream reads the PROXY v2 header (UDP over IPv4: 0x12) and answers with what it says.
  const upstream = createSocket('udp4');
  upstream.on('message', (m, rinfo) => {
    const ok = m.subarray(0, 12).equals(Buffer.from('0d0a0d0a000d0a515549540a', 'hex')) && m[12] === 0x21 && m[13] === 0x12;
    const ip = (o: number): string => [...m.subarray(o, o + 4)].join('.');
    upstream.send(
      `${ok ? 'v2' : 'bad'} ${ip(16)} ${m.readUInt16BE(24)} ${ip(20)} ${m.readUInt16BE(26)} ${m.subarray(28).toString()}`,
      rinfo.port,
      rinfo.address,
    );
  });
  const upstreamPort = randomPort();
  await new Promise<void>((r) => upstream.bind(upstreamPort, '127.0.0.1', r));
  t.teardown(() => upstream.close());
  await d.cli('bind', 'add', 'dns', 'udp', '127.0.0.0/8', String(port));
  t.equal((await d.cli('upstream', 'add', 'dns', `udp:127.0.0.1:${upstreamPort}`, '--proxy-protocol', 'v2')).code, 0);
  const client = createSocket('udp4');
  t.teardown(() => client.close());
  await new Promise<void>((r) => client.bind(0, '127.0.0.1', r));
  const answer = (): Promise<{ text: string; from: string }> =>
    new Promise((resolve) => client.once('message', (m, r) => resolve({ text: m.toString(), from: `${r.address}:${r.port}` })));
  for (const text of ['one', 'two']) {
    const got = answer();
    client.send(text, port, '127.0.0.8');
    t.same(
      await got,
      { text: `v2 127.0.0.1 ${client.address().port} 127.0.0.8 ${port} ${text}`, from: `127.0.0.8:${port}` },
      `datagram "${text}" relayed and answered`,
    );
  }
});
