import { execFile } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import t from 'tap';
import { formatAddress, maskWords } from '../src/bindings/address.js';
import { Binding } from '../src/bindings/binding.js';
import { Table } from '../src/table/table.js';
import { rng } from './helpers/bindings.js';
import { CLI } from './helpers/daemon.js';
import {
  answeredBy,
  eventually,
  kernelDaemon,
  parseEcho,
  skipKernel,
  startLoad,
  startProber,
  type Target,
  type TcpLoad,
  type UdpLoad,
} from './helpers/kernel.js';
import { sleep } from './helpers/services.js';

// Kernel mode while things change: bindings changed under load, and the daemon killed under load and
// restarted. The workers hold the label sockets and the kernel holds the rules, so neither may cost a
// connection or a datagram. Clients run in a client namespace; every packet passes the ruleset.

const NET = 0xcb007100; // 203.0.113.0/24, AnyIP in the host namespace
const CHURN = ['a', 'b', 'c'];
const STABLE = new Binding('stable', 'tcp', 4, [NET + 10], 32, 443);

const bindingArgs = (b: Binding): string[] => [b.label, b.protocol, b.prefix, String(b.port)];

t.test('live changes under load: the next SYN follows each change, an unchanged binding never fails', { skip: skipKernel }, async (t) => {
  const k = await kernelDaemon(t);
  t.equal((await k.d.cli('bind', 'add', ...bindingArgs(STABLE))).code, 0, 'the stable binding');
  await Promise.all(['stable', ...CHURN].map((label) => k.worker(label)));
  const load = startLoad<TcpLoad>(k, 'tcp', 2, [{ protocol: 'tcp', address: '203.0.113.10', port: 443 }]);
  const probe = startProber(k);

  // The test's own model of the table: what each probe must reach.
  const model = new Map<string, Binding>([[STABLE.key(), STABLE]]);
  const rand = rng(5150);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  /** A probe target inside `b` that `table` gives to `b` itself (not to a longer prefix in it), if one is found. */
  const inside = (table: Table, b: Binding): Target | undefined => {
    for (let i = 0; i < 20; i++) {
      const address = formatAddress(4, [(b.word(0) + Math.floor(rand() * 2 ** (32 - b.length))) >>> 0]);
      const port = b.port === 0 ? pick([80, 443, 8080]) : b.port;
      if (table.lookup('tcp', address, port)?.sameKey(b)) return { protocol: 'tcp', address, port };
    }
    return undefined;
  };
  const tally: Record<string, number> = {};
  const wrong: string[] = [];
  for (let round = 0; round < 40; round++) {
    const churn = [...model.values()].filter((b) => !b.sameKey(STABLE));
    const r = rand();
    let change: { kind: 'add' | 'relabel' | 'rm'; binding: Binding };
    if (churn.length > 3 && r < 0.35) {
      change = { kind: 'rm', binding: pick(churn) };
    } else if (churn.length > 0 && r < 0.55) {
      const b = pick(churn);
      change = { kind: 'relabel', binding: b.withLabel(pick(CHURN.filter((l) => l !== b.label))) };
    } else {
      // Anywhere in the /24: the stable address's enclosing prefixes and its other ports included.
      const length = pick([25, 26, 27, 28, 29, 30, 31, 32, 32, 32]);
      const words = maskWords(Uint32Array.of(NET + Math.floor(rand() * 256)), length);
      const b = new Binding(pick(CHURN), 'tcp', 4, words, length, pick([0, 80, 443]));
      if (model.has(b.key())) continue;
      change = { kind: 'add', binding: b };
    }
    const before = Table.from([...model.values()]);
    if (change.kind === 'rm') model.delete(change.binding.key());
    else model.set(change.binding.key(), change.binding);
    const after = Table.from([...model.values()]);
    // Where the change shows: inside the binding, where it wins (after an add) or won (before a removal).
    const target = inside(change.kind === 'rm' ? before : after, change.binding);
    const request = change.binding.toJSON();
    await (change.kind === 'rm' ? k.control.removeBinding(request) : k.control.addBinding(request));
    if (target === undefined) continue;
    // As soon as the change is made: the next SYN.
    const result = await probe(target);
    const want = after.lookup('tcp', target.address, target.port)?.label ?? 'ECONNREFUSED';
    const kind = change.kind !== 'rm' ? change.kind : want === 'ECONNREFUSED' ? 'rm, now a miss' : 'rm, now a shorter prefix';
    tally[kind] = (tally[kind] ?? 0) + 1;
    if (answeredBy(result) !== want)
      wrong.push(
        `${change.kind} ${String(change.binding)}, then ${target.address} ${target.port}: ${JSON.stringify(result)}, want ${want}`,
      );
  }
  const report = await load.finish();
  t.same(wrong, [], `every change seen by the next connection (${JSON.stringify(tally)})`);
  t.ok(
    ['add', 'relabel', 'rm, now a miss'].every((kind) => (tally[kind] ?? 0) >= 3),
    'adds, relabels and removals that leave a miss among them',
  );
  t.same(report.failed, {}, `no connection to the unchanged binding failed (${report.firstFailure ?? 'none'})`);
  t.ok(report.served >= 100, `${report.served} connections served meanwhile`);
  t.same(report.labels, { stable: report.served }, 'all by its own label');
  t.equal(report.misaddressed, 0, 'with the dialled address');
});

// Both families; UDP to many endpoints, each of which gets a reply socket of its own.
const TCP_TARGETS: Target[] = [
  { protocol: 'tcp', address: '198.51.100.7', port: 443 },
  { protocol: 'tcp', address: '198.51.100.200', port: 80 },
  { protocol: 'tcp', address: '2001:db8:1::7', port: 443 },
  { protocol: 'tcp', address: '2001:db8:1::99', port: 22 },
];
const udpTargets = (v4: number[], v6: number[]): Target[] => [
  ...v4.map((i): Target => ({ protocol: 'udp', address: `198.51.100.${i}`, port: 53 })),
  ...v6.map((i): Target => ({ protocol: 'udp', address: `2001:db8:1::${i.toString(16)}`, port: 53 })),
];
const range = (from: number, count: number): number[] => Array.from({ length: count }, (_, i) => from + i);
// Answered before the crash: the worker has their reply sockets. And endpoints first sent to while no
// daemon runs: their replies wait for reply sockets from the next daemon.
const KNOWN = udpTargets(range(1, 80), range(1, 40));
const FRESH = udpTargets(range(150, 40), range(0x100, 20));

const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms).unref())]);

t.test(
  'SIGKILL under load: nothing fails, the restart reuses the ports, and SIGTERM removes the rules',
  { skip: skipKernel },
  async (t) => {
    const k = await kernelDaemon(t);
    for (const args of [
      ['web', 'tcp', '198.51.100.0/24', '0'],
      ['web', 'tcp', '2001:db8:1::/64', '0'],
      ['dns', 'udp', '198.51.100.0/24', '53'],
      ['dns', 'udp', '2001:db8:1::/64', '53'],
    ]) {
      t.equal((await k.d.cli('bind', 'add', ...args)).code, 0, `bind add ${args.join(' ')}`);
    }
    const workers = await Promise.all(['web', 'dns'].map((label) => k.worker(label)));
    const pids = workers.map((w) => w.pid).sort();
    const tcp = startLoad<TcpLoad>(k, 'tcp', 2, TCP_TARGETS);
    const udp = startLoad<UdpLoad>(k, 'udp', 10, KNOWN);
    await within(Promise.all([tcp.ready, udp.ready]), 30_000, 'every target answered');
    const sockets = async (): Promise<string[]> =>
      (await k.status()).listeners.map((l) => `${l.label} ${l.protocol} ${l.address} ${l.port} ${l.served_by}`).sort();
    const before = await sockets();
    t.equal(before.length, 4, `a socket per label, protocol and family: ${before.join(', ')}`);

    await k.d.stop('SIGKILL');
    t.equal((await k.ns.nft('list', 'table', 'inet', 'dispatcher_steer')).code, 0, 'the killed daemon left its rules');
    const fresh = startLoad<UdpLoad>(k, 'udp', 20, FRESH);
    await within(fresh.sent, 30_000, 'the fresh endpoints sent to');
    const meanwhile = await k.ns.probe(
      'tcp',
      '198.51.100.9',
      8443,
      'tcp',
      '2001:db8:1::9',
      80,
      'udp',
      '198.51.100.1',
      53,
      'udp',
      '2001:db8:1::1',
      53,
    );
    t.same(
      meanwhile.map((r) => `${answeredBy(r)} ${r.line === undefined ? '' : parseEcho(r.line).pid}`),
      ['web', 'web', 'dns', 'dns'].map((label, i) => `${label} ${workers[i < 2 ? 0 : 1]!.pid}`),
      'with no daemon, the workers serve from the sockets they hold',
    );

    await k.restart();
    const reRegistered = await eventually(async () => {
      const { workers: now } = await k.control.services();
      return JSON.stringify(now.map((w) => w.pid).sort()) === JSON.stringify(pids);
    });
    t.ok(reRegistered, 'the workers registered with the new daemon by themselves');
    t.same(await sockets(), before, 'the new daemon bound the same ports');
    await within(fresh.ready, 20_000, 'the fresh endpoints answered').catch((err: Error) => t.fail(err.message));
    await sleep(500);
    const [tcpReport, udpReport, freshReport] = await Promise.all([tcp.finish(), udp.finish(), fresh.finish()]);
    t.same(tcpReport.failed, {}, `no connection failed across the crash (${tcpReport.firstFailure ?? 'none'})`);
    t.ok(tcpReport.served >= 200, `${tcpReport.served} connections served`);
    t.same([Object.keys(tcpReport.labels), tcpReport.misaddressed], [['web'], 0], 'all by web, each seeing the address dialled');
    for (const [name, r] of [
      ['known', udpReport],
      ['fresh', freshReport],
    ] as const) {
      t.equal(
        r.lost,
        0,
        `${name} endpoints: no datagram lost, ${r.answered} of ${r.sent} answered (lost: ${r.firstLost ?? 'none'} ... ${r.lastLost ?? ''})`,
      );
      t.same(
        [r.duplicates, r.misaddressed, Object.keys(r.labels)],
        [0, 0, ['dns']],
        `${name} endpoints: each answered once, by dns, from the address dialled`,
      );
    }
    const after = await k.ns.probe('tcp', '198.51.100.9', 443, 'udp', '2001:db8:1::77', 53);
    t.same(after.map(answeredBy), ['web', 'dns'], 'and serves after');
    t.equal((await k.status()).connections.handoffs, 0, 'the new daemon hands nothing off either');

    t.equal(await k.d.stop('SIGTERM'), 0, 'SIGTERM: a clean exit');
    const tables = await k.ns.nft('list', 'tables');
    t.equal(tables.code, 0, 'nft list tables');
    t.notMatch(tables.stdout, /dispatcher_steer/, `and its table is gone (${tables.stdout.trim() || 'no tables'})`);
    t.same((await k.ns.probe('tcp', '198.51.100.9', 443)).map(answeredBy), ['ECONNREFUSED'], 'nothing is steered any more');
  },
);

t.test("a second daemon refused on the same paths leaves the first one's saved ports alone", { skip: skipKernel }, async (t) => {
  const k = await kernelDaemon(t);
  await k.d.cli('bind', 'add', 'web', 'tcp', '198.51.100.0/24', '0');
  const worker = await k.worker('web');
  const ports = async (): Promise<number[]> => (await k.status()).listeners.map((l) => l.port);
  const before = await ports();
  // Started twice by mistake: the second finds the control socket taken and exits.
  const { control, stateDir, services } = k.d;
  const args = [CLI, 'daemon', '--control', control, '--state-dir', stateDir, '--services', services, ...k.flags];
  const second = await new Promise<string>((resolve) =>
    execFile(k.ns.inHost()[0]!, [...k.ns.inHost().slice(1), process.execPath, ...args], { timeout: 30_000 }, (err, _out, stderr) =>
      resolve(`${err === null ? 0 : String(err.code)} ${stderr}`),
    ),
  );
  t.match(second, /^2 [^]*another daemon is listening/, 'the second daemon is refused');
  await k.d.stop('SIGKILL');
  await k.restart();
  t.ok(await eventually(async () => (await k.control.services()).workers.length === 1), 'the worker re-registered');
  t.same(await ports(), before, 'the first daemon, restarted after a crash, binds the same ports: its steering.json is still there');
  const [probe] = await k.ns.probe('tcp', '198.51.100.9', 80);
  t.same([answeredBy(probe!), parseEcho(probe!.line ?? '').pid], ['web', worker.pid], 'and serves');
});

t.test('a change the state file refuses is not steered either: the rules go back with it', { skip: skipKernel }, async (t) => {
  const k = await kernelDaemon(t);
  await k.d.cli('bind', 'add', 'web', 'tcp', '198.51.100.0/24', '0');
  await k.worker('web');
  await k.worker('api');
  // The state directory becomes a file: the next save fails (root ignores permissions, not this).
  await rm(k.d.stateDir, { recursive: true, force: true });
  await writeFile(k.d.stateDir, 'not a directory');
  t.teardown(() => rm(k.d.stateDir, { force: true }));
  const refused = await k.d.cli('bind', 'add', 'api', 'tcp', '198.51.100.9/32', '0');
  t.equal(refused.code, 2, `the change is refused: ${refused.stderr.trim()}`);
  const [probe] = await k.ns.probe('tcp', '198.51.100.9', 80);
  t.equal(answeredBy(probe!), 'web', 'the address is still steered to the label the table has');
  t.same(
    (await k.control.listBindings()).bindings.map((b) => b.label),
    ['web'],
    'and the table is unchanged',
  );
});
