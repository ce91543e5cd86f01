import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { stripVTControlCharacters } from 'node:util';
import { formatStatus, type StatusSample } from '../src/cli/summary.js';
import { ControlClient } from '../src/control/client.js';
import { type StatusResponse } from '../src/control/protocol.js';
import { CLI, daemonIn, dispatcher, type RunningDaemon, startDaemon, type StatusJSON, tempDir } from './helpers/daemon.js';
import { randomPort, request, sleep, startWorker } from './helpers/services.js';

// tap gives its tests FORCE_COLOR=0 and NO_COLOR=1; unset, the CLI decides for itself, as in anyone's pipe.
const PIPE = { FORCE_COLOR: undefined, NO_COLOR: undefined };
const FORCED = { FORCE_COLOR: '1', NO_COLOR: undefined };
const ESC = '\u001b[';

const status = (d: RunningDaemon, args: string[] = [], env: Record<string, string | undefined> = PIPE) =>
  dispatcher(['--control', d.control, 'status', ...args], env);

/** The lines of a section: after its title, up to the blank line that ends it. */
function section(text: string, title: string): string[] {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.startsWith(title));
  const end = lines.indexOf('', start);
  return lines.slice(start + 1, end < 0 ? undefined : end);
}

t.test('status: the figures, the listeners, the labels and what needs attention; colour only when asked', async (t) => {
  const d = await daemonIn(t, ['--queue-timeout', '30000']);
  const api = new ControlClient(d.control);
  const port = randomPort();
  const taken = port + 3;
  const squatter = createServer();
  await new Promise<void>((r) => squatter.listen(taken, '::', r));
  t.teardown(() => new Promise((r) => squatter.close(r)));
  await api.addBinding({ label: 'web', protocol: 'tcp', prefix: '127.0.0.0/8', port });
  await api.addBinding({ label: 'api', protocol: 'tcp', prefix: '127.0.0.2', port: port + 1 });
  await api.addBinding({ label: 'dns', protocol: 'udp', prefix: '127.0.0.1', port: port + 2 });
  await api.addBinding({ label: 'blocked', protocol: 'tcp', prefix: '127.0.0.1', port: taken });
  const web = await startWorker('web', d.services);
  t.teardown(() => web.stop());
  for (let i = 0; i < 3; i++) await request('127.0.0.1', port);
  await t.rejects(request('127.0.0.1', port + 1), { code: 'ECONNRESET' }, 'no binding for 127.0.0.1 on that port');
  // api has no worker: its connection waits in the queue.
  const waiting = connect(port + 1, '127.0.0.2');
  waiting.on('error', () => undefined);
  t.teardown(() => waiting.destroy());
  for (let i = 0; i < 100 && (await api.services()).queued['api'] !== 1; i++) await sleep(50);

  const r = await status(d);
  t.equal(r.code, 0, r.stderr);
  t.notOk(r.stdout.includes(ESC), 'no colour into a pipe');
  t.match(r.stdout.split('\n')[0], /^dispatcher \d+\.\d+\.\d+, pid \d+, ports mode, up \d+(s|m \d+s)$/);
  t.match(r.stdout, /^bindings {3}4 \(3 tcp, 1 udp\) on 4 labels$/m);
  t.match(r.stdout, /^workers {4}1 on 1 label$/m);
  t.match(r.stdout, /^upstreams {2}0$/m);

  const listeners = section(r.stdout, 'listeners');
  t.equal(listeners[0], `  PROTOCOL  ADDRESS   PORT  STATE      ERROR`);
  t.ok(listeners.includes(`  tcp       ::       ${port}  listening`));
  t.ok(
    listeners.some((l) => l.startsWith(`  tcp       ::       ${taken}  failed     cannot listen on tcp :: port ${taken}: EADDRINUSE`)),
    'a failed listener shows with its error',
  );

  t.match(r.stdout, /^labels \(rates: per second, averaged over the .* since the daemon started\)$/m);
  const labels = section(r.stdout, 'labels');
  t.match(labels[0], /^ {2}LABEL +PROTOCOL +WORKERS +QUEUED +LOOKUPS +HANDOFFS +HANDOFFS\/S +RESETS$/);
  t.equal(labels.length, 5);
  t.match(
    labels.slice(1).map((l) => l.trim().split(/ +/)),
    [
      ['api', 'tcp', '0', '1', '1', '0', '0', '0'],
      ['blocked', '-', '0', '0', '0', '0', '0', '0'],
      ['dns', '-', '0', '0', '0', '0', '0', '0'],
      ['web', 'tcp', '1', '0', '3', '3', /^(<0\.1|\d\.\d)$/, '0'],
    ],
    'a row per label and protocol: workers, queued, lookups, hand-offs, their rate, resets',
  );
  t.equal(new Set(labels.map((l) => l.length)).size, 1, 'numbers are right-aligned: every row as long as the titles');

  t.strictSame(section(r.stdout, 'attention (counts since the daemon started)'), [
    `  tcp port ${taken} is not listening (see listeners): free the port, or remove the bindings that name it`,
    '  labels with bindings but no worker or upstream (connections reset, datagrams dropped; start a worker or add an upstream): api, blocked, dns',
    '  waiting for a worker: api 1',
    '  matched no binding (reset or dropped; `dispatcher lookup` shows what an address matches): 1',
  ]);

  const coloured = await status(d, [], FORCED);
  t.ok(coloured.stdout.includes(`${ESC}32mlistening${ESC}39m`), 'FORCE_COLOR: listening in green');
  t.ok(coloured.stdout.includes(`${ESC}31mfailed${ESC}39m`), 'failed in red');
  t.ok(coloured.stdout.includes(`${ESC}31mtcp port ${taken} is not listening`), 'a broken listener in red');
  t.ok(coloured.stdout.includes(`${ESC}33mwaiting for a worker: api 1${ESC}39m`), 'a queue in yellow');
  t.strictSame(section(stripVTControlCharacters(coloured.stdout), 'listeners'), listeners, 'colour does not move the columns');

  // --json: the control API's answer as it is (only the uptime may have moved on meanwhile), never coloured.
  const answer = await api.status();
  const printed = await status(d, ['--json'], FORCED);
  t.notOk(printed.stdout.includes(ESC), 'no colour in JSON');
  const parsed = JSON.parse(printed.stdout) as StatusJSON;
  t.ok(parsed.uptime_seconds >= answer.uptime_seconds);
  t.strictSame({ ...parsed, uptime_seconds: 0 }, { ...answer, uptime_seconds: 0 });
  const both = await status(d, ['--json', '--rate', '1']);
  t.equal(both.code, 2);
  t.match(both.stderr, /json and rate are mutually exclusive/);

  const rated = await status(d, ['--rate', '0.5']);
  t.equal(rated.code, 0, rated.stderr);
  const over = /^labels \(rates: per second over the last (\d+\.\d)s\)$/m.exec(rated.stdout);
  t.ok(over !== null && Number(over[1]) >= 0.5, 'says what the rates are over');
  const bad = await status(d, ['--rate', 'soon']);
  t.equal(bad.code, 2);
  t.equal(bad.stderr, 'dispatcher: --rate "soon" is not a number of seconds from 0.5 to 3600\n');

  // Into a pipe, the summaries follow one another until the command is stopped.
  const watch = spawn(process.execPath, [CLI, '--control', d.control, 'status', '--watch', '0.5'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let watched = '';
  await new Promise<void>((resolve) => {
    watch.stdout.on('data', (c: Buffer) => {
      watched += c.toString();
      if ((watched.match(/^dispatcher \d/gm) ?? []).length >= 2) resolve();
    });
    watch.once('exit', () => resolve());
  });
  watch.kill();
  t.equal(
    (watched.match(/^labels \(rates: per second over the last \d+\.\ds\)$/gm) ?? []).length,
    2,
    'two summaries, rates over the last interval',
  );
});

t.test("lists and the formatter: aligned tables, and kernel mode's fields", async (t) => {
  const d = await daemonIn(t);
  t.equal((await d.cli('bind', 'list')).stdout, 'no bindings\n');
  t.equal((await d.cli('services')).stdout, 'no workers registered\n');
  t.equal((await d.cli('upstream', 'list')).stdout, 'no upstreams\n');

  const api = new ControlClient(d.control);
  await api.addBinding({ label: 'web', protocol: 'tcp', prefix: '127.0.0.1', port: randomPort() });
  await api.addBinding({ label: 'dns', protocol: 'udp', prefix: '127.0.0.1', port: 53 });
  await api.setUpstream({ label: 'mail', address: 'tcp:127.0.0.1:25' });
  const web = await startWorker('web', d.services);
  t.teardown(() => web.stop());
  const services = (await d.cli('services')).stdout.split('\n').slice(0, -1);
  t.match(services, [/^LABEL +WORKER +PID +UID +HANDOFFS +UNACKED +QUEUED$/, new RegExp(`^web +\\d+ +${web.pid} +\\d+ +0 +0/\\d+ +0$`)]);
  t.equal(new Set(services.map((l) => l.length)).size, 1, 'the numbers end where their titles do');
  t.equal((await d.cli('upstream', 'list')).stdout, 'LABEL  ADDRESS           PROXY-PROTOCOL\nmail   tcp:127.0.0.1:25  none\n');

  // The formatter is pure: a real daemon's answers, with what a kernel-mode daemon adds (its label
  // sockets, one adopted from a server, and the kernel's counters).
  const real = await api.status();
  const kernel: StatusResponse = {
    ...real,
    mode: 'kernel',
    uptime_seconds: 7_260,
    listeners: [
      { protocol: 'tcp', address: '127.0.0.1', port: 40001, state: 'listening', label: 'web', served_by: 'workers' },
      { protocol: 'udp', address: '127.0.0.1', port: 40002, state: 'listening', label: 'dns', adopted_from: 4242, served_by: 'daemon' },
    ],
    steering: { labels: { web: { tcp: { steered: 120, missed: 2 } }, dns: { udp: { steered: 30, missed: 0 } } }, spoofed: 3 },
  };
  const now: StatusSample = {
    status: kernel,
    services: await api.services(),
    upstreams: (await api.upstreams()).upstreams,
    boundLabels: ['web', 'dns'],
    at: 10_000,
  };
  const before: StatusSample = {
    ...now,
    status: { ...kernel, steering: { labels: { web: { tcp: { steered: 20, missed: 2 } } }, spoofed: 3 } },
    at: 8_000,
  };
  const text = formatStatus(now, { before });
  t.match(text, /^dispatcher .*, kernel mode, up 2h 1m\n/);
  t.strictSame(section(text, 'listeners'), [
    '  PROTOCOL  ADDRESS     PORT  STATE      LABEL  SERVED BY',
    '  tcp       127.0.0.1  40001  listening  web    workers',
    '  udp       127.0.0.1  40002  listening  dns    pid 4242 (adopted)',
  ]);
  t.match(text, /^labels \(rates: per second over the last 2\.0s\)$/m);
  t.strictSame(section(text, 'labels'), [
    '  LABEL  PROTOCOL  WORKERS  QUEUED  UPSTREAM  LOOKUPS  HANDOFFS  HANDOFFS/S  RESETS  STEERED  STEERED/S  MISSED',
    '  dns    udp             0       0  -               0         0           0       0       30         15       0',
    '  mail   -               0       0  yes             0         0           0       0        0          0       0',
    '  web    tcp             1       0  -               0         0           0       0      120         50       2',
  ]);
  t.strictSame(section(text, 'attention'), [
    '  datagrams dropped as spoofed (a steered socket sent from an address or port its label is not bound to): 3',
    '  steering missed (no socket for the label): web tcp 2',
  ]);

  const unserved = formatStatus({ ...now, status: { ...kernel, listeners: [] }, services: { workers: [], queued: {} } });
  t.match(
    unserved,
    /^ {2}labels with bindings but no worker or upstream \(.*\): dns, web$/m,
    'without its adopting server, dns is unserved too',
  );
  const unreadable = formatStatus({ ...now, status: { ...kernel, steering: { error: 'nft: command not found' } } });
  t.match(unreadable, /^ {2}the kernel's steering counters cannot be read: nft: command not found$/m);
  t.notMatch(unreadable, /STEERED/, 'no kernel columns without its counters');
  const restarted = formatStatus(now, { before: { ...before, status: { ...before.status, pid: kernel.pid + 1 } } });
  t.match(restarted, /rates: per second, averaged over the 2h 1m since the daemon started; the daemon restarted in between/);
  const short = formatStatus(now, { limit: 1 });
  t.strictSame(section(short, 'labels').slice(1), [
    '  dns    udp             0       0  -               0         0           0       0       30       <0.1       0',
    '  ... and 2 more (--all shows them)',
  ]);
});

t.test('errors say what to do next; the exit code stays 2', async (t) => {
  const dir = await tempDir(t);
  const d = await startDaemon(dir);
  t.teardown(() => d.stop());
  await new ControlClient(d.control).addBinding({ label: 'web', protocol: 'tcp', prefix: '127.0.0.0/8', port: 80 });
  const cases: [string[], string][] = [
    [
      ['bind', 'rm', 'api', 'tcp', '127.0.0.0/8', '80'],
      'tcp 127.0.0.0/8 port 80 is bound to "web", not "api": remove it under the label it is bound to',
    ],
    [
      ['bind', 'rm', 'web', 'tcp', '127.0.0.0/8', '81'],
      'no binding for tcp 127.0.0.0/8 port 81: `dispatcher bind list` shows the bindings',
    ],
    [['upstream', 'rm', 'web'], 'label "web" has no upstream: `dispatcher upstream list` shows the upstreams'],
    [
      ['bind', 'add', 'web', 'tcp'],
      'Not enough non-option arguments: got 2, need at least 3\n' +
        'Run "dispatcher COMMAND --help" for a command\'s arguments, "dispatcher --help" for the commands.',
    ],
  ];
  for (const [args, message] of cases) {
    const r = await d.cli(...args);
    t.equal(r.code, 2, args.join(' '));
    t.equal(r.stderr, `dispatcher: ${message}\n`, args.join(' '));
  }

  const second = await dispatcher(['daemon', '--control', d.control, '--state-dir', `${dir}/other`, '--services', `${dir}/other.sock`]);
  t.equal(second.code, 2);
  t.match(
    second.stderr,
    /another daemon is listening on .*: `dispatcher upgrade` replaces it without a gap; a second daemon needs its own --control/,
  );

  if (process.getuid?.() === 0) {
    const stderr = await new Promise<string>((resolve) => {
      execFile(process.execPath, [CLI, '--control', d.control, 'status'], { uid: 65534, gid: 65534 }, (_err, _out, e) => resolve(e));
    });
    // Only the first line: tap's process hook, which tap puts into every child, then fails to write its record as nobody.
    t.equal(
      stderr.split('\n')[0],
      `dispatcher: no permission to use ${d.control}: run as root or as a member of the socket's group (\`ls -l ${d.control}\` shows it)`,
    );
  }

  await d.stop('SIGKILL');
  const gone = await d.cli('status');
  t.equal(gone.code, 2);
  t.equal(
    gone.stderr,
    `dispatcher: the daemon is not running (nothing answers on ${d.control}): start it with \`dispatcher daemon\`, ` +
      "or point --control (or DISPATCHER_CONTROL) at the daemon's control socket\n",
    'the socket file a killed daemon left is no daemon',
  );
});
