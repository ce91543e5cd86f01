import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import t from 'tap';
import { CLI, daemonCommand, dispatcher, type StatusJSON, tempDir } from './helpers/daemon.js';
import { randomPort, request, sleep, startWorker } from './helpers/services.js';
import { type TapTest } from './helpers/tap.js';

// The daemon as systemd sees it, with systemd's side played by test/fixtures/mini-systemd.py (systemd is
// not PID 1 here): the notifications it sends (READY, STATUS, RELOADING, STOPPING, MAINPID on an upgrade),
// the sockets it puts in the descriptor store, and a restart that gets them back in LISTEN_FDS and serves
// what queued while no daemon ran. And socket activation with systemd's own systemd-socket-activate.
const MINI_SYSTEMD = fileURLToPath(new URL('./fixtures/mini-systemd.py', import.meta.url));
const UNITS = fileURLToPath(new URL('../contrib/', import.meta.url));
const run = promisify(execFile);

interface Notification {
  fields?: Record<string, string>;
  fds?: string[];
  pid?: number;
  started?: number;
  killed?: number;
  store?: string[];
}

interface MiniSystemd {
  control: string;
  services: string;
  /** Every line it printed so far. */
  seen: Notification[];
  /** The first line matching `match` after the last one `next` returned: already printed, or to come. */
  next(match: (n: Notification) => boolean, ms?: number): Promise<Notification>;
  send(command: 'start' | 'kill' | 'store'): void;
  process: ChildProcess;
}

async function miniSystemd(t: TapTest, extra: string[] = [], env: Record<string, string> = {}): Promise<MiniSystemd> {
  const dir = await tempDir(t);
  const { command: daemon, control, services } = daemonCommand(dir, extra);
  const child = spawn('python3', [MINI_SYSTEMD, join(dir, 'notify.sock'), '--', ...daemon], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, ...env },
  });
  t.teardown(() => {
    child.stdin.end();
    return new Promise((resolve) => (child.exitCode === null ? child.once('exit', resolve) : resolve(undefined)));
  });
  const seen: Notification[] = [];
  let cursor = 0;
  const waiting: { match: (n: Notification) => boolean; resolve: (n: Notification) => void }[] = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    const n = JSON.parse(line) as Notification;
    seen.push(n);
    const w = waiting[0];
    if (w?.match(n)) {
      waiting.shift();
      cursor = seen.length;
      w.resolve(n);
    }
  });
  return {
    control,
    services,
    seen,
    process: child,
    send: (command) => void child.stdin.write(`${command}\n`),
    next: (match, ms = 15_000) =>
      new Promise((resolve, reject) => {
        const at = seen.findIndex((n, i) => i >= cursor && match(n));
        if (at >= 0) {
          cursor = at + 1;
          return resolve(seen[at]!);
        }
        const timer = setTimeout(() => reject(new Error(`no such notification within ${ms} ms; seen ${JSON.stringify(seen)}`)), ms);
        waiting.push({
          match,
          resolve: (n) => {
            clearTimeout(timer);
            resolve(n);
          },
        });
      }),
  };
}

const ready = (n: Notification): boolean => n.fields?.['READY'] === '1';

t.test('notifications: READY with a STATUS line, the watchdog, RELOADING around a bulk load, STOPPING', async (t) => {
  // WatchdogSec=0.4 s, as systemd passes it: a ping every 0.2 s.
  const s = await miniSystemd(t, [], { WATCHDOG_USEC: '400000' });
  s.send('start');
  const first = await s.next(ready);
  t.match(first.fields?.['STATUS'], /^ports mode: 0 bindings, 0 workers of 0 labels$/, 'a one-line summary');
  await s.next((n) => n.fields?.['WATCHDOG'] === '1');
  await s.next((n) => n.fields?.['WATCHDOG'] === '1');
  t.pass('the watchdog is pinged, again and again');
  const cli = (...args: string[]) => dispatcher(['--control', s.control, ...args]);
  const port = randomPort();
  const file = join(fileURLToPath(new URL('.', import.meta.url)), '..', 'examples', 'bindings.json');
  const loaded = cli('bind', 'load', file);
  const reloading = await s.next((n) => n.fields?.['RELOADING'] === '1');
  t.match(reloading.fields?.['MONOTONIC_USEC'], /^\d+$/, 'RELOADING carries the monotonic clock, as systemd wants');
  t.equal((await loaded).code, 0);
  const after = await s.next(ready);
  t.match(after.fields?.['STATUS'], /ports mode: [1-9]\d* bindings/, 'READY again after the load, with the new count');
  await cli('bind', 'add', 'web', 'tcp', '127.0.0.1', String(port));
  const worker = await startWorker('web', s.services);
  t.teardown(() => worker.stop());
  await s.next((n) => /1 workers of 1 labels/.test(n.fields?.['STATUS'] ?? ''));
  t.pass('STATUS follows the workers');
  s.send('kill');
  await s.next((n) => n.killed !== undefined);
  // STOPPING is for a clean stop: a new daemon from the store, then SIGTERM through stdin's end.
  s.send('start');
  await s.next(ready);
  s.process.stdin?.end();
  await s.next((n) => n.fields?.['STOPPING'] === '1');
  t.pass('STOPPING on SIGTERM');
});

t.test('the descriptor store: a SIGKILLed daemon refuses nothing, the restart serves what queued', async (t) => {
  const s = await miniSystemd(t);
  s.send('start');
  await s.next(ready);
  const port = randomPort();
  const cli = (...args: string[]) => dispatcher(['--control', s.control, ...args]);
  t.equal((await cli('bind', 'add', 'web', 'tcp', '127.0.0.1', String(port))).code, 0);
  t.equal((await cli('bind', 'add', 'dns', 'udp', '127.0.0.1', String(port))).code, 0);
  await s.next((n) => n.fds?.includes(`udp-${port}`) === true);
  s.send('store');
  const { store } = await s.next((n) => n.store !== undefined);
  t.same(
    [...(store ?? [])].sort(),
    ['control', 'handover', 'services', `tcp-${port}`, `udp-${port}`].sort(),
    'every socket that takes traffic is stored',
  );
  const workers = [await startWorker('web', s.services), await startWorker('dns', s.services)];
  t.teardown(() => Promise.all(workers.map((w) => w.stop())));
  t.equal((await request('127.0.0.1', port)).label, 'web');
  const client = createSocket('udp4');
  t.teardown(() => client.close());
  const answers = new Set<string>();
  client.on('message', (m) => answers.add(m.toString().split('\n')[1] ?? ''));
  await new Promise<void>((resolve) => client.bind(0, '127.0.0.1', resolve));
  const ask = (i: number): void => client.send(`q${i}`, port, '127.0.0.1');

  s.send('kill');
  await s.next((n) => n.killed !== undefined);
  // No daemon runs: the stored socket still listens, so these connect and wait in its queue.
  const during = Array.from({ length: 20 }, () => request('127.0.0.1', port, { timeoutMs: 20_000 }));
  for (let i = 0; i < 50; i++) ask(i);
  const status = cli('status', '--json'); // the stored control socket queues this request too
  await sleep(300);
  s.send('start');
  const served = await Promise.allSettled(during);
  t.same(
    served.filter((r) => r.status === 'rejected').map((r) => String(r.reason)),
    [],
    'no connection made while no daemon ran was refused or lost',
  );
  t.ok(
    served.every((r) => r.status === 'fulfilled' && r.value.label === 'web'),
    'each was served by web',
  );
  for (let i = 0; i < 100 && answers.size < 50; i++) await sleep(100);
  t.equal(answers.size, 50, 'every datagram sent while no daemon ran was answered after the restart');
  const answered = await status;
  t.equal(answered.code, 0, 'a control request sent while no daemon ran is answered by the restart');
  t.equal((JSON.parse(answered.stdout) as StatusJSON).bindings.total, 2);
  t.equal((await cli('bind', 'rm', 'web', 'tcp', '127.0.0.1', String(port))).code, 0);
  await s.next((n) => n.fields?.['FDSTOREREMOVE'] === '1' && n.fields['FDNAME'] === `tcp-${port}`);
  t.pass('a closed listener leaves the store: a restart would not reopen a port no binding names');
});

t.test('an upgrade tells systemd the new main pid before the old daemon exits', async (t) => {
  const s = await miniSystemd(t);
  s.send('start');
  const { pid: oldPid } = await s.next(ready);
  const upgraded = await run(process.execPath, [CLI, '--control', s.control, 'upgrade'], {
    env: { ...process.env, NOTIFY_SOCKET: join(s.control, '..', 'notify.sock') },
  });
  t.match(upgraded.stdout, /upgraded: pid \d+ -> \d+/);
  const newPid = Number(/-> (\d+)/.exec(upgraded.stdout)?.[1]);
  const main = s.seen.find((n) => n.fields?.['MAINPID'] !== undefined);
  t.equal(Number(main?.fields?.['MAINPID']), newPid, 'MAINPID names the new daemon');
  t.equal(main?.pid, newPid, 'sent by the new daemon itself (NotifyAccess=all)');
  t.not(newPid, oldPid);
  t.teardown(() => void run('kill', [String(newPid)]).catch(() => undefined));
});

t.test('socket activation: systemd-socket-activate hands the control socket; the rest is opened', async (t) => {
  const dir = await tempDir(t);
  const { command, control } = daemonCommand(dir);
  const activate = spawn('systemd-socket-activate', ['-l', control, '--fdname=control', ...command], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });

  t.teardown(() => activate.kill());
  for (
    let i = 0;
    i < 100 &&
    (await run('test', ['-S', control]).then(
      () => false,
      () => true,
    ));
    i++
  )
    await sleep(50);
  // The first connection starts the daemon, which serves it on the socket it was given.
  const status = await dispatcher(['--control', control, 'status', '--json']);
  t.equal(status.code, 0, status.stderr);
  t.equal((JSON.parse(status.stdout) as StatusJSON).control, control);
  const again = await dispatcher(['--control', control, 'bind', 'add', 'web', 'tcp', '127.0.0.1', String(randomPort())]);
  t.equal(again.code, 0, 'and goes on serving it');
});

t.test('systemd-analyze verify accepts the units', async (t) => {
  const units = ['dispatcher.service', 'dispatcher-control.socket', 'dispatcher-services.socket'].map((u) => join(UNITS, u));
  const verified = await run('systemd-analyze', ['verify', ...units]).then(
    (r) => ({ code: 0, output: r.stderr }),
    (err: { code: number; stderr: string }) => ({ code: err.code, output: err.stderr }),
  );
  // It may warn about a missing /usr/bin/dispatcher on a machine where the package is not installed.
  const problems = verified.output
    .split('\n')
    .filter((l) => l.trim() !== '' && !/Command \/usr\/bin\/dispatcher is not executable|No such file/.test(l));
  t.same(problems, [], 'no problem with the units themselves');
});
