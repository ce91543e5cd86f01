import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import t from 'tap';
import { type Family, formatAddress, maskWords, parseAddress } from '../src/bindings/address.js';
import { Binding, PROTOCOLS, type Protocol } from '../src/bindings/binding.js';
import { compileTable } from '../src/steering/compile.js';
import {
  applySteering,
  planSteering,
  removeSteering,
  type SocketTargets,
  STEER_TABLE,
  steeringRuleset,
  steeringUpdate,
  updateSteering,
} from '../src/steering/ruleset.js';
import { Table } from '../src/table/table.js';
import { rng } from './helpers/bindings.js';
import { type ProbeResult } from './helpers/netns.js';
import { type TapTest } from './helpers/tap.js';

// Kernel steering through the real kernel: a random table compiled, applied as src/steering/ruleset.ts's
// table in a host namespace, and probed from a client namespace. Every probe must reach exactly the label
// the table's lookup gives, on that label's own socket, with the dialled address; a miss must reach none.
// Needs root (network namespaces, nftables with TPROXY and the socket expression).
const run = promisify(execFile);
const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
const NETNS = fileURLToPath(new URL('../scripts/netns.sh', import.meta.url));
const isRoot = process.getuid?.() === 0;
const has = async (cmd: string, flag: string): Promise<boolean> =>
  run(cmd, [flag]).then(
    () => true,
    () => false,
  );
const skip = !isRoot ? 'needs root' : !((await has('nft', '--version')) && (await has('ip', '-V'))) ? 'needs nft and ip' : false;

// Labels with sockets, and one without: its bindings must be misses.
const LABELS = ['web', 'api.v2-x', 'db', 'dns_1'];
const SOCKETLESS = 'orphan';
// A label with sockets that the random tables never bind.
const LATE = 'late';
const PORTS = [0, 0, 0, 22, 53, 80, 443];
const PROBE_PORTS = [22, 53, 80, 443, 8080];
const V4_BASES = [0xc6336400, 0xcb007100]; // 198.51.100.0, 203.0.113.0: AnyIP in the host namespace
const V6_BASE = [0x20010db8, 0x00010000, 0, 0]; // 2001:db8:1::/64, likewise

/** A random table whose prefixes lie inside the AnyIP ranges (so probes are deliverable) and nest. */
function randomTable(rand: () => number, count: number): Binding[] {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const byKey = new Map<string, Binding>();
  while (byKey.size < count) {
    const family: Family = rand() < 0.6 ? 4 : 6;
    const words = family === 4 ? [pick(V4_BASES) + Math.floor(rand() * 256)] : [...V6_BASE.slice(0, 3), Math.floor(rand() * 256)];
    const length = family === 4 ? pick([25, 26, 28, 30, 32]) : pick([120, 124, 126, 128]);
    const label = rand() < 0.1 ? SOCKETLESS : pick(LABELS);
    const b = new Binding(label, pick(PROTOCOLS), family, maskWords(Uint32Array.from(words), length), length, pick(PORTS));
    byKey.set(b.key(), b);
  }
  return [...byKey.values()];
}

interface Target {
  protocol: Protocol;
  family: Family;
  address: string;
  port: number;
  /** The label that must answer; undefined for a miss. */
  label: string | undefined;
}

function randomTargets(rand: () => number, table: Table, sockets: SocketTargets, count: number, maxUdpMisses: number): Target[] {
  const targets: Target[] = [];
  let udpMisses = 0;
  while (targets.length < count) {
    const protocol = rand() < 0.5 ? 'tcp' : 'udp';
    const family: Family = rand() < 0.6 ? 4 : 6;
    const base = family === 4 ? [V4_BASES[Math.floor(rand() * 2)]!] : V6_BASE;
    // IPv6 bindings lie in 2001:db8:1::/120: the probes beyond it are misses.
    const words = [...base.slice(0, -1), base[base.length - 1]! + Math.floor(rand() * (family === 4 ? 256 : 512))];
    const port = rand() < 0.8 ? PROBE_PORTS[Math.floor(rand() * PROBE_PORTS.length)]! : 1024 + Math.floor(rand() * 60000);
    const found = table.lookupLabel(protocol, family, Uint32Array.from(words), port);
    const label = found !== undefined && sockets(found, protocol, family) !== undefined ? found : undefined;
    // A UDP miss costs the probe's 3 s timeout: a few prove the point.
    if (label === undefined && protocol === 'udp' && udpMisses++ >= maxUdpMisses) continue;
    targets.push({ protocol, family, address: formatAddress(family, words), port, label });
  }
  return targets;
}

/** The lines a child prints, one at a time. */
function lines(child: ChildProcess): () => Promise<string> {
  const queue: string[] = [];
  const waiting: ((line: string) => void)[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => (waiting.length > 0 ? waiting.shift()!(line) : queue.push(line)));
  return () => (queue.length > 0 ? Promise.resolve(queue.shift()!) : new Promise((resolve) => waiting.push(resolve)));
}

interface Setup {
  host: string;
  client: string;
  /** An `nft` for applyRuleset that runs in the host namespace. */
  nft: string;
  sockets: SocketTargets;
  probe(targets: readonly Target[]): Promise<ProbeResult[]>;
  /** A process in the client namespace, stopped at teardown. */
  inClient(...args: string[]): ChildProcess;
}

async function setUp(t: TapTest): Promise<Setup> {
  const id = `sta${(process.pid % 1296).toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
  const [host, client] = [`disp-h-${id}`, `disp-c-${id}`];
  t.teardown(() => run(NETNS, ['down', id]));
  await run(NETNS, ['up', id]);

  const dir = mkdtempSync(join(tmpdir(), 'steer-apply-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const nft = join(dir, 'nft');
  writeFileSync(nft, `#!/bin/sh\nexec ip netns exec ${host} nft "$@"\n`);
  chmodSync(nft, 0o755);
  // The table goes before the namespace does, as a clean stop would remove it.
  t.teardown(() => removeSteering(nft));

  const children: ChildProcess[] = [];
  t.teardown(() => children.forEach((c) => c.kill()));
  const spawnIn = (ns: string, args: string[]): ChildProcess => {
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
    children.push(child);
    return child;
  };
  const labelSockets = spawnIn(host, [fixture('steer-sockets.mjs'), ...LABELS, LATE]);
  const ports = JSON.parse(await lines(labelSockets)()) as Record<string, Record<string, number>>;
  const sockets: SocketTargets = (label, protocol, family) => {
    const port = ports[label]?.[`${protocol}${family}`];
    return port === undefined ? undefined : { address: family === 4 ? '127.0.0.1' : '::1', port };
  };

  const probeChunk = async (chunk: readonly Target[]): Promise<ProbeResult[]> => {
    const args = chunk.flatMap((x) => [x.protocol, x.address, String(x.port)]);
    const { stdout } = await run('ip', ['netns', 'exec', client, process.execPath, fixture('probe.mjs'), ...args], { timeout: 60_000 });
    return JSON.parse(stdout) as ProbeResult[];
  };
  // Several probe processes at once, dealt round-robin so the slow UDP misses spread out.
  const probe = async (targets: readonly Target[]): Promise<ProbeResult[]> => {
    const n = Math.min(8, targets.length);
    const chunks = Array.from({ length: n }, (_, c) => targets.filter((_x, i) => i % n === c));
    const results = await Promise.all(chunks.map(probeChunk));
    return targets.map((_x, i) => results[i % n]![Math.floor(i / n)]!);
  };
  return { host, client, nft, sockets, probe, inClient: (...args) => spawnIn(client, args) };
}

/** What a target's probe must print: the label's line, from the dialled address for UDP; or the miss. */
function expected(x: Target): ProbeResult {
  const target = `${x.protocol} ${x.address} ${x.port}`;
  if (x.label === undefined) return { target, error: x.protocol === 'tcp' ? 'ECONNREFUSED' : 'ETIMEDOUT' };
  const line = `${x.label} ${x.address} ${x.port}`;
  return x.protocol === 'tcp' ? { target, line } : { target, line, from: `${x.address} ${x.port}` };
}

/** Probes random targets of `table` and checks each against the table's own lookup. */
async function probeTable(t: TapTest, s: Setup, table: Table, rand: () => number, count: number): Promise<void> {
  const targets = randomTargets(rand, table, s.sockets, count, Math.ceil(count / 25));
  const results = await s.probe(targets);
  const wrong = results.filter((r, i) => JSON.stringify(r) !== JSON.stringify(expected(targets[i]!)));
  t.same(wrong.slice(0, 10), [], `${results.length - wrong.length} of ${results.length} probes as the table says`);
  const tally = (f: (x: Target) => boolean): number => targets.filter(f).length;
  const spaces: string[] = [];
  for (const protocol of PROTOCOLS) {
    for (const family of [4, 6]) {
      const mine = (x: Target): boolean => x.protocol === protocol && x.family === family;
      const [steered, missed] = [tally((x) => mine(x) && x.label !== undefined), tally((x) => mine(x) && x.label === undefined)];
      if (steered < 5 || missed < 1) spaces.push(`${protocol}${family}: ${steered} steered, ${missed} misses`);
      else t.comment(`${protocol} IPv${family}: ${steered} steered, ${missed} misses`);
    }
  }
  t.same(spaces, [], 'steered probes and misses in every protocol and family');
  const socketless = tally((x) => table.lookupLabel(x.protocol, x.family, parseAddress(x.address).words, x.port) === SOCKETLESS);
  t.ok(socketless >= 1, `${socketless} probes of the label with no socket, all misses`);
}

t.test('every probe reaches the socket of the label the table gives, and misses are untouched', { skip }, async (t) => {
  const s = await setUp(t);
  const rand = rng(13);
  const table = Table.from(randomTable(rand, 150));
  // Shards of at most 16 entries: dozens of them, their edges cutting through entries.
  const plan = planSteering(compileTable(table), s.sockets, 16);
  t.ok(
    plan.spaces.every((space) => space.shards.length > 1 || space.entries.length <= 16),
    'the spaces are sharded',
  );
  const hook = steeringRuleset(plan).split('chain prerouting {\n')[1]!.split('\n  }')[0]!.split('\n');
  t.equal(hook.length, 6, 'the hook chain: its type and five fixed rules, whatever the table');
  await applySteering(plan, s.nft);
  await probeTable(t, s, table, rand, 400);

  // Another random table, reached by an update of what differs: as exact.
  const next = Table.from(randomTable(rand, 150));
  const nextPlan = planSteering(compileTable(next), s.sockets, 16);
  t.notOk(steeringUpdate(plan, nextPlan).includes('table'), 'the update names elements and chains, not the table');
  t.equal(await updateSteering(plan, nextPlan, s.nft), 'updated', 'updated in place');
  await probeTable(t, s, next, rand, 200);
  t.equal(steeringUpdate(nextPlan, nextPlan), '', 'no change, no transaction');
});

t.test('a live change: the next connection follows the binding, an established one stays', { skip }, async (t) => {
  const s = await setUp(t);
  const moving = new Binding('web', 'tcp', 4, [0xcb00714d], 32, 9999); // 203.0.113.77/32 port 9999
  const others = randomTable(rng(7), 60).filter((b) => !b.sameKey(moving));
  const before = planSteering(compileTable(Table.from([...others, moving])), s.sockets);
  await applySteering(before, s.nft);

  const held = s.inClient(fixture('steer-hold.mjs'), '203.0.113.77', '9999');
  const heldLine = lines(held);
  t.equal(await heldLine(), 'web 203.0.113.77 9999', 'the held connection reached web');

  // To a label that had no binding, hence no chain yet: the update adds it.
  const after = planSteering(compileTable(Table.from([...others, moving.withLabel(LATE)])), s.sockets);
  t.equal(await updateSteering(before, after, s.nft), 'updated', 'updated in place');
  const target: Target = { protocol: 'tcp', family: 4, address: '203.0.113.77', port: 9999, label: LATE };
  t.same(await s.probe([target]), [expected(target)], `the next connection reaches ${LATE}`);
  held.stdin!.write('still here\n');
  t.equal(await heldLine(), 'still here', 'the connection opened before the change still works');
  held.stdin!.end();

  // And back, which deletes the chain, onto a table that is gone: the update fails and the whole replaces it.
  await removeSteering(s.nft);
  t.same(await s.probe([{ ...target, label: undefined }]), [expected({ ...target, label: undefined })], 'removed: untouched');
  t.equal(await updateSteering(after, before, s.nft), 'replaced', 'an update onto another state: replaced whole');
  t.same(await s.probe([{ ...target, label: 'web' }]), [expected({ ...target, label: 'web' })], 'steered again');
  t.equal(await updateSteering(before, after, s.nft), 'updated', `to ${LATE} again`);
  t.equal(await updateSteering(after, before, s.nft), 'updated', `${LATE}'s chain deleted with its last element`);
  t.same(await s.probe([{ ...target, label: 'web' }]), [expected({ ...target, label: 'web' })], 'back to web');

  await removeSteering(s.nft);
  await t.rejects(run('ip', ['netns', 'exec', s.host, 'nft', 'list', 'table', 'inet', STEER_TABLE]), 'and the table is gone');
});
