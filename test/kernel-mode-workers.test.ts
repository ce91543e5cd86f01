import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { CLI, type StatusJSON, tempDir } from './helpers/daemon.js';
import { answeredBy, eventually, fixture, kernelDaemon, type KernelDaemon, parseEcho, skipKernel } from './helpers/kernel.js';
import { type ProbeResult } from './helpers/netns.js';
import { PYTHON_SERVICE, randomPort, type RunningWorker } from './helpers/services.js';
import { AS_NOBODY, spawnReporting, type ServedSocket } from './helpers/steer.js';
import { type TapTest } from './helpers/tap.js';

// Kernel mode with the workers it meets: version-1 workers (hand-offs), unprivileged workers (what their
// sockets may and may not do), and unmodified servers taken over with `dispatcher adopt`. The daemon runs
// in a host namespace and clients in a client namespace.

const STEERED_PEER = fixture('steered-peer.py');
// nobody cannot run root's python3 (pyenv's shim under /root); the system one.
const SYSTEM_PYTHON = '/usr/bin/python3';

const servedBy = (s: StatusJSON, label: string, protocol: string): (string | undefined)[] =>
  s.listeners.filter((l) => l.label === label && l.protocol === protocol).map((l) => l.served_by);

/** Resolves once `pattern` is in the worker's output (or rejects after 10 s). */
async function said(w: RunningWorker, pattern: RegExp): Promise<string> {
  if (!(await eventually(() => pattern.test(w.output()), 10_000))) throw new Error(`no ${pattern} in: ${w.output()}`);
  return pattern.exec(w.output())![0];
}

t.test(
  'a version-1 worker is handed each connection and datagram; a version-2 worker takes the socket',
  { skip: skipKernel },
  async (t) => {
    const k = await kernelDaemon(t);
    await k.d.cli('bind', 'add', 'web', 'tcp', '198.51.100.0/24', '80');
    await k.d.cli('bind', 'add', 'dns', 'udp', '198.51.100.0/24', '53');
    // examples/python/echo_service.py, told to speak version 1.
    const v1 = await Promise.all(
      ['web', 'dns'].map((label) =>
        k.worker(label, {
          command: ['python3', PYTHON_SERVICE, label, k.d.services],
          spawn: { env: { ...process.env, DISPATCHER_PROTOCOL: '1' } },
        }),
      ),
    );
    let status = await k.status();
    t.same(
      [servedBy(status, 'web', 'tcp'), servedBy(status, 'dns', 'udp')],
      [['daemon'], ['daemon']],
      'the daemon reads the label sockets',
    );

    const targets = [
      'tcp',
      '198.51.100.5',
      80,
      'tcp',
      '198.51.100.6',
      80,
      'tcp',
      '198.51.100.7',
      80,
      'udp',
      '198.51.100.8',
      53,
      'udp',
      '198.51.100.9',
      53,
    ];
    const served = (await k.ns.probe(...targets)).map((r) => {
      const e = parseEcho(r.line ?? '');
      return `${e.label} ${e.pid} ${e.local} ${e.localPort} ${r.from ?? '-'}`;
    });
    const [webPid, dnsPid] = v1.map((w) => w.pid);
    t.same(
      served,
      [
        `web ${webPid} 198.51.100.5 80 -`,
        `web ${webPid} 198.51.100.6 80 -`,
        `web ${webPid} 198.51.100.7 80 -`,
        `dns ${dnsPid} 198.51.100.8 53 198.51.100.8 53`,
        `dns ${dnsPid} 198.51.100.9 53 198.51.100.9 53`,
      ],
      'the version-1 workers served each, seeing the dialled address; replies from it',
    );
    status = await k.status();
    const { handoffs, datagrams, replies } = status.connections;
    t.same(
      { handoffs, datagrams, replies },
      { handoffs: 3, datagrams: 2, replies: 2 },
      'through the daemon: 3 hand-offs, 2 datagrams and replies',
    );

    await Promise.all(v1.map((w) => w.stop('SIGKILL')));
    const v2 = await Promise.all(['web', 'dns'].map((label) => k.worker(label)));
    t.ok(
      await eventually(async () => {
        const s = await k.status();
        return servedBy(s, 'web', 'tcp')[0] === 'workers' && servedBy(s, 'dns', 'udp')[0] === 'workers';
      }),
      'with version-2 workers instead, the workers serve the label sockets',
    );
    const [tcp, udp, udpNew] = await k.ns.probe('tcp', '198.51.100.5', 80, 'udp', '198.51.100.8', 53, 'udp', '198.51.100.10', 53);
    const by = (r: ProbeResult | undefined): string => `${answeredBy(r!)} ${parseEcho(r?.line ?? '').pid} ${r?.from ?? '-'}`;
    t.equal(by(tcp), `web ${v2[0]!.pid} -`, 'and answer: TCP');
    t.equal(by(udpNew), `dns ${v2[1]!.pid} 198.51.100.10 53`, 'UDP, from an address the daemon never replied from');
    t.equal(by(udp), `dns ${v2[1]!.pid} 198.51.100.8 53`, 'UDP, from an address the daemon replied from for the version-1 worker');
    const after = (await k.status()).connections;
    t.same([after.handoffs, after.datagrams], [3, 2], 'without the daemon');
  },
);

t.test('an unprivileged worker replies from its own addresses only', { skip: skipKernel }, async (t) => {
  const k = await kernelDaemon(t, ['--allow', 'dns=65534'], { reachable: true });
  await k.d.cli('bind', 'add', 'dns', 'udp', '198.51.100.0/24', '53');
  await k.d.cli('bind', 'add', 'other', 'udp', '203.0.113.0/24', '53');
  const peer = await k.worker('dns', {
    command: [...AS_NOBODY, SYSTEM_PYTHON, STEERED_PEER, k.d.services, 'dns', '198.51.100.5:53', '203.0.113.5:53', '198.51.100.5:54'],
  });
  await said(peer, /^reply-socket 198\.51\.100\.5 54 .*$/m);
  t.match(peer.output(), /^socket udp 4 \d+$/m, 'it got the label socket');
  t.match(peer.output(), /^mark EPERM$/m, 'and cannot clear its mark');
  t.match(peer.output(), /^reply-socket 198\.51\.100\.5 53 ok$/m, 'a reply socket at an address and port of its label');
  t.match(peer.output(), /^reply-socket 203\.0\.113\.5 53 error .*not bound to label "dns"/m, "none at another label's address");
  t.match(peer.output(), /^reply-socket 198\.51\.100\.5 54 error .*not bound to label "dns"/m, 'none at a port its label is not bound to');

  const [answer] = await k.ns.probe('udp', '198.51.100.5', 53);
  t.same(
    [answeredBy(answer!), parseEcho(answer!.line ?? '').pid, answer!.from],
    ['dns', peer.pid, '198.51.100.5 53'],
    'it answers from the bound address',
  );

  // It answers "spoof ..." with a datagram from each source, sent on the label socket with IP_PKTINFO, then
  // with its real reply: the client must get only that.
  const spoofedBefore = (await k.steering()).spoofed;
  const sources = ['203.0.113.5', '198.51.100.5', '192.0.2.1'];
  const collected = await k.ns.client_(
    process.execPath,
    fixture('udp-collect.mjs'),
    '198.51.100.5',
    '53',
    `spoof ${sources.join(' ')}`,
    '1500',
  );
  const received = JSON.parse(collected.stdout) as { from: string; line: string }[];
  t.same(
    received.map((r) => `${r.from} ${r.line.split(' ')[0]}`),
    ['198.51.100.5 53 dns'],
    "the client got the real reply only: not another label's address, not its own address from another port, not the host's",
  );
  await said(peer, /^spoof 192\.0\.2\.1 .*$/m);
  t.comment(
    peer
      .output()
      .match(/^spoof .*$/gm)
      ?.join('; '),
  );
  t.equal((await k.steering()).spoofed - spoofedBefore, sources.length, 'each attempt counted as spoofed');

  const refused = await k.worker('other', {
    command: [...AS_NOBODY, SYSTEM_PYTHON, STEERED_PEER, k.d.services, 'other'],
    expectExit: true,
  });
  t.match(
    refused.output(),
    /^error ERR_NOT_ALLOWED .*uid 65534 may not register label "other"/m,
    'nor can it register a label it is not allowed',
  );
});

t.test('every reply-socket request is answered, however many come at once', { skip: skipKernel }, async (t) => {
  const k = await kernelDaemon(t);
  await k.d.cli('bind', 'add', 'dns', 'udp', '198.51.100.0/24', '53');
  await k.d.cli('bind', 'add', 'dns', 'udp', '203.0.113.0/24', '53');
  // A worker that comes back to a new daemon asks again for every endpoint it has replies waiting for.
  const peer = await k.worker('dns', { command: ['python3', STEERED_PEER, k.d.services, 'dns', 'burst:100', 'burst:400'] });
  t.equal(await said(peer, /^burst 100 answered \d+$/m), 'burst 100 answered 100', '100 at once: all answered');
  t.equal(await said(peer, /^burst 400 answered \d+$/m), 'burst 400 answered 400', '400 at once: all answered');
});

/** Runs a command to its end: its exit code and output. */
function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(cmd, args, { timeout: 20_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

const hasNginx = (await run('sh', ['-c', 'command -v nginx'])).code === 0;

/** nginx in the host namespace, answering each request with what it sees of the connection. */
async function startNginx(t: TapTest, k: KernelDaemon): Promise<{ pid: number; port: number; stop(): Promise<void> }> {
  const dir = await tempDir(t);
  const port = randomPort();
  await mkdir(join(dir, 'logs'));
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((kind) => `${kind}_temp_path ${join(dir, kind)};`).join(' ');
  // A wildcard listen: nginx reports the address a connection came to only for those (for a specific one,
  // its configured address).
  const conf = `events {} http { access_log off; ${temp} server { listen ${port}; return 200 "$server_addr $server_port $remote_addr\\n"; } }`;
  await writeFile(join(dir, 'nginx.conf'), conf);
  const [cmd, ...args] = k.ns.inHost(
    'nginx',
    '-p',
    dir,
    '-c',
    join(dir, 'nginx.conf'),
    '-g',
    `daemon off; pid ${join(dir, 'nginx.pid')}; error_log stderr;`,
  );
  const nginx: ChildProcess = spawn(cmd!, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  nginx.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((resolve) => nginx.once('exit', () => resolve()));
  const stop = (): Promise<void> => {
    if (nginx.exitCode === null && nginx.signalCode === null) nginx.kill('SIGTERM');
    return exited;
  };
  t.teardown(stop);
  const up = await eventually(
    async () => (await run('ip', ['netns', 'exec', k.ns.host, 'curl', '-s', '-m', '1', `http://127.0.0.1:${port}/`])).code === 0,
  );
  if (!up) throw new Error(`nginx did not answer: ${stderr}`);
  return { pid: nginx.pid!, port, stop };
}

const get = async (k: KernelDaemon, url: string): Promise<string> => (await k.ns.client_('curl', '-s', '-m', '5', url)).stdout;

t.test(
  'adopt: an unmodified nginx serves a bound prefix, sees the dialled address and the client',
  { skip: skipKernel || (!hasNginx && 'needs nginx (scripts/setup.sh installs it)') },
  async (t) => {
    const k = await kernelDaemon(t, [], { reachable: true });
    await chmod(k.d.control, 0o666); // nobody reaches the control socket: its refusal is the daemon's
    await k.d.cli('bind', 'add', 'web', 'tcp', '198.51.100.0/24', '80');
    const nginx = await startNginx(t, k);
    const at = `127.0.0.1:${nginx.port}`;

    const cli = await run(AS_NOBODY[0]!, [
      ...AS_NOBODY.slice(1),
      process.execPath,
      CLI,
      '--control',
      k.d.control,
      'adopt',
      'web',
      String(nginx.pid),
      'tcp',
      at,
    ]);
    t.equal(cli.code, 2, 'adopt as nobody fails');
    t.match(cli.stderr, `uid 65534 may not take sockets of pid ${nginx.pid}`, 'because nobody may not trace the root-owned nginx');
    const client = new URL('../dist/control/client.js', import.meta.url).href;
    const script = `import('${client}').then(({ ControlClient }) => new ControlClient(process.argv[1]).adopt({ label: 'web', pid: ${nginx.pid} })).then(() => console.log('adopted'), (e) => console.log(e.code))`;
    const api = await run(AS_NOBODY[0]!, [...AS_NOBODY.slice(1), process.execPath, '-e', script, k.d.control]);
    t.equal(api.stdout.trim(), 'ERR_NOT_ALLOWED', 'the control API says ERR_NOT_ALLOWED');
    t.same(
      (await k.status()).listeners.map((l) => l.adopted_from),
      [undefined],
      'nothing adopted',
    );

    const adopted = await k.d.cli('adopt', 'web', String(nginx.pid), 'tcp', at);
    t.equal(adopted.code, 0, `adopt as root: ${adopted.stderr}`);
    t.match(adopted.stdout, `web tcp4 -> pid ${nginx.pid}'s socket ${at}`);
    t.same(
      (await k.status()).listeners.map((l) => [l.label, l.protocol, l.port, l.adopted_from]),
      [['web', 'tcp', nginx.port, nginx.pid]],
      "the label's traffic goes to nginx's socket",
    );
    // A worker of the label meanwhile gets no socket: nginx serves.
    const worker = await k.worker('web');
    for (const address of ['198.51.100.9', '198.51.100.201']) {
      t.equal(
        await get(k, `http://${address}/`),
        `${address} 80 192.0.2.2\n`,
        `GET http://${address}/: nginx saw the dialled address and the client`,
      );
    }

    const released = await k.d.cli('release', 'web', 'tcp', '4');
    t.equal(released.stdout.trim(), 'released web tcp4', 'release');
    const [probe] = await k.ns.probe('tcp', '198.51.100.9', 80);
    t.same(
      [answeredBy(probe!), parseEcho(probe!.line ?? '').pid],
      ['web', worker.pid],
      "the label's own socket serves again, with its worker",
    );
    const direct = await run('ip', ['netns', 'exec', k.ns.host, 'curl', '-s', '-m', '5', `http://${at}/`]);
    t.equal(direct.stdout, `127.0.0.1 ${nginx.port} 127.0.0.1\n`, 'and nginx has its socket as before');
  },
);

t.test('an adopted server that exits leaves its traffic a miss, not a black hole', { skip: skipKernel }, async (t) => {
  const k = await kernelDaemon(t);
  await k.d.cli('bind', 'add', 'web', 'tcp', '198.51.100.0/24', '80');
  const server = await spawnReporting<ServedSocket[]>(t, [
    ...k.ns.inHost(),
    process.execPath,
    fixture('steer-server.mjs'),
    'tcp:127.0.0.1',
  ]);
  const adopted = await k.d.cli('adopt', 'web', String(server.pid));
  t.equal(adopted.code, 0, `adopted: ${adopted.stdout.trim()}${adopted.stderr}`);
  await server.kill();
  const missedBefore = (await k.steering()).labels['web']?.tcp?.missed ?? 0;
  const [probe] = await k.ns.probe('tcp', '198.51.100.9', 80);
  t.equal(
    answeredBy(probe!),
    'ECONNREFUSED',
    'a connection to the label is refused at once, as a miss (ruleset.ts: "an adopted server gone")',
  );
  t.ok(((await k.steering()).labels['web']?.tcp?.missed ?? 0) > missedBefore, 'and counted as missed');
  const status = JSON.parse((await k.d.cli('status', '--json')).stdout) as StatusJSON;
  t.match(
    status.listeners.find((l) => l.label === 'web'),
    { state: 'failed', adopted_from: server.pid, error: /has exited.*adopt again, or release/ },
    'status says the adopted server is gone, and what to do',
  );
});
