import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { type Family, formatAddress, maskWords, parseAddress } from '../src/bindings/address.js';
import { Binding, PROTOCOLS } from '../src/bindings/binding.js';
import { formatBindingsFile } from '../src/bindings/file.js';
import { DispatcherError } from '../src/errors.js';
import { Table } from '../src/table/table.js';
import { rng } from './helpers/bindings.js';
import { answeredBy, kernelDaemon, parseEcho, probeAll, skipKernel, type Target } from './helpers/kernel.js';
import { type ProbeResult } from './helpers/netns.js';

// Kernel mode's steering is the table's lookup, as the kernel does it: a random table of 10,000 nested
// bindings loaded into a real daemon (--mode kernel) in a host namespace, a version-2 echo worker per label,
// and 2,000 random probes from a client namespace. Each probe must be answered by exactly the label the
// table's lookup names (longest prefix, then a specific port over port 0), by that label's worker, which
// sees the dialled address as local; a miss must be untouched. The daemon hands nothing off.

const LABELS = ['web', 'api.v2-x', 'db', 'dns_1', 'mail', 'edge'];
const PORTS = [22, 53, 80, 443, 5353, 8080];
const BINDINGS = 10_000;
const PROBES = 2_000;
// A UDP miss costs probe.mjs's 3 s timeout: a few prove the point.
const UDP_MISSES = 16;

// Bound regions, inside the host namespace's AnyIP ranges so probes are delivered. Port 0 only in region A:
// region B's bindings are port-specific (a probe at another port is a miss), region C has none.
//   IPv4  A 198.51.100.0/24 (prefixes /24-/32)   B 203.0.113.0/25 (/25-/32)   C 203.0.113.128/25
//   IPv6  A 2001:db8:1::/119 (/119-/128)          B 2001:db8:1::200/119        C 2001:db8:1::400-7ff
const V4 = { a: 0xc6336400, b: 0xcb007100 };
const V6 = [0x20010db8, 0x00010000, 0, 0];

function randomTable(rand: () => number): Binding[] {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const byKey = new Map<string, Binding>();
  while (byKey.size < BINDINGS) {
    const family: Family = rand() < 0.5 ? 4 : 6;
    const regionA = rand() < 0.6;
    let words: number[];
    let length: number;
    if (family === 4) {
      words = regionA ? [V4.a + Math.floor(rand() * 256)] : [V4.b + Math.floor(rand() * 128)];
      // Long prefixes more often than short ones: there are more of them to draw.
      length = pick(regionA ? [24, 25, 26, 27, 28, 29, 30, 31, 32, 32, 32] : [25, 26, 27, 28, 29, 30, 31, 32, 32, 32]);
    } else {
      words = [...V6.slice(0, 3), (regionA ? 0 : 0x200) + Math.floor(rand() * 0x200)];
      length = pick([119, 120, 121, 122, 124, 126, 127, 128, 128, 128]);
    }
    const port = regionA && rand() < 0.25 ? 0 : pick(PORTS);
    const b = new Binding(pick(LABELS), pick(PROTOCOLS), family, maskWords(Uint32Array.from(words), length), length, port);
    byKey.set(b.key(), b);
  }
  return [...byKey.values()];
}

interface Probe extends Target {
  family: Family;
  /** The label the table's lookup gives; undefined for a miss. */
  label: string | undefined;
}

function randomProbes(rand: () => number, table: Table): Probe[] {
  const probes: Probe[] = [];
  let udpMisses = 0;
  while (probes.length < PROBES) {
    const protocol = rand() < 0.5 ? 'tcp' : 'udp';
    const family: Family = rand() < 0.5 ? 4 : 6;
    // Uniform over regions A, B and C.
    const offset = Math.floor(rand() * 512);
    const words =
      family === 4 ? [offset < 256 ? V4.a + offset : V4.b + offset - 256] : [...V6.slice(0, 3), offset * 4 + Math.floor(rand() * 4)];
    const port = rand() < 0.8 ? PORTS[Math.floor(rand() * PORTS.length)]! : 1024 + Math.floor(rand() * 30000);
    const label = table.lookupLabel(protocol, family, Uint32Array.from(words), port);
    if (label === undefined && protocol === 'udp' && udpMisses++ >= UDP_MISSES) continue;
    probes.push({ protocol, family, address: formatAddress(family, words), port, label });
  }
  return probes;
}

/** The labels of every binding that covers the probe, by brute force over the prefix lengths. */
function covering(keys: Map<string, string>, x: Probe): string[] {
  const words = parseAddress(x.address).words;
  const labels: string[] = [];
  for (let length = 0; length <= (x.family === 4 ? 32 : 128); length++) {
    for (const port of [0, x.port]) {
      const label = keys.get(new Binding('-', x.protocol, x.family, maskWords(words.slice(), length), length, port).key());
      if (label !== undefined) labels.push(label);
    }
  }
  return labels;
}

t.test('10,000 random bindings: every probe reaches the label the lookup gives, on its own socket', { skip: skipKernel }, async (t) => {
  const k = await kernelDaemon(t);
  const rand = rng(2024);
  const bindings = randomTable(rand);
  const table = Table.from(bindings);
  const file = join(k.dir, 'bindings.json');
  await writeFile(file, JSON.stringify(formatBindingsFile(bindings)));
  const loaded = await k.d.cli('bind', 'load', file);
  t.equal(loaded.code, 0, `bind load: ${loaded.stderr}`);
  t.equal((await k.status()).bindings.total, BINDINGS, `the daemon holds all ${BINDINGS} bindings`);

  const workers = new Map(await Promise.all(LABELS.map(async (label) => [label, (await k.worker(label)).pid] as const)));
  const probes = randomProbes(rand, table);

  // The daemon's own lookup agrees with the table's, on a sample.
  const sample = probes.filter((_x, i) => i % 10 === 0);
  const looked = await Promise.all(
    sample.map((x) =>
      k.control.lookup(x.protocol, x.address, x.port).then(
        (r) => r.label,
        (err: DispatcherError) => (err.code === 'ERR_NO_MATCH' ? undefined : Promise.reject(err)),
      ),
    ),
  );
  const disagree = sample.filter((x, i) => looked[i] !== x.label).map((x, i) => `${x.protocol} ${x.address} ${x.port}: ${looked[i]}`);
  t.same(disagree, [], `dispatcher lookup agrees with Table.lookupLabel on ${sample.length} probes`);

  // The probes are worth something: both kinds in every protocol and family, every label, and many decided
  // by precedence between bindings of different labels.
  const keys = new Map(bindings.map((b) => [b.key(), b.label]));
  const contested = probes.filter((x) => new Set(covering(keys, x)).size >= 2).length;
  t.ok(contested >= 300, `${contested} probes covered by bindings of several labels`);
  const thin: string[] = [];
  for (const protocol of PROTOCOLS) {
    for (const family of [4, 6]) {
      const mine = probes.filter((x) => x.protocol === protocol && x.family === family);
      const hits = mine.filter((x) => x.label !== undefined).length;
      if (hits < 100 || hits === mine.length) thin.push(`${protocol}${family}: ${hits} hits of ${mine.length}`);
      t.comment(`${protocol} IPv${family}: ${hits} steered, ${mine.length - hits} misses`);
    }
    for (const label of LABELS)
      if (!probes.some((x) => x.protocol === protocol && x.label === label)) thin.push(`${protocol} ${label}: no probe`);
  }
  t.same(thin, [], 'hits and misses in every protocol and family, every label probed');

  const started = Date.now();
  const results = await probeAll(k.ns, probes);
  t.comment(`${PROBES} probes in ${Date.now() - started} ms`);
  const wrong = probes
    .map((x, i) => ({ x, r: results[i]!, problem: problem(x, results[i]!, workers) }))
    .filter((p) => p.problem !== undefined)
    .map(({ x, r, problem }) => `${x.protocol} ${x.address} ${x.port} (want ${x.label ?? 'a miss'}): ${problem}; got ${JSON.stringify(r)}`);
  t.same(wrong.slice(0, 10), [], `${PROBES - wrong.length} of ${PROBES} probes exactly as the table says`);
  t.same(
    [...new Set(results.map(answeredBy))].sort(),
    [...LABELS, 'ECONNREFUSED', 'ETIMEDOUT'].sort(),
    'answers came from every label, and the misses',
  );

  // Nothing went through the daemon; the kernel counted each steered datagram once, and each connection's
  // SYN: once, or again if the client sent it again (a SYN-ACK late on a loaded machine).
  const status = await k.status();
  t.equal(status.connections.handoffs, 0, 'no hand-offs');
  t.equal(status.connections.datagrams, 0, 'no datagram read by the daemon');
  t.same(
    status.listeners.filter((l) => l.served_by !== 'workers'),
    [],
    `all ${status.listeners.length} label sockets served by the workers`,
  );
  const counters = await k.steering();
  t.equal(counters.spoofed, 0, 'nothing spoofed');
  const off: string[] = [];
  for (const label of LABELS) {
    for (const protocol of PROTOCOLS) {
      const want = probes.filter((x) => x.label === label && x.protocol === protocol).length;
      const got = counters.labels[label]?.[protocol];
      const most = protocol === 'udp' ? want : want + Math.max(3, want / 100);
      if (got === undefined || got.missed !== 0 || got.steered < want || got.steered > most)
        off.push(`${label} ${protocol}: ${JSON.stringify(got)} for ${want} probes`);
    }
  }
  t.same(off, [], 'steering counters: every steered probe counted, UDP exactly, none missed');
});

/** Why a probe's result is not what the table says, or undefined if it is. */
function problem(x: Probe, r: ProbeResult, workers: Map<string, number>): string | undefined {
  if (x.label === undefined) {
    const miss = x.protocol === 'tcp' ? 'ECONNREFUSED' : 'ETIMEDOUT';
    return r.error === miss && r.line === undefined ? undefined : `not a miss`;
  }
  if (r.line === undefined || r.error !== undefined) return 'no answer';
  const e = parseEcho(r.line);
  if (e.label !== x.label) return `answered by ${e.label}`;
  if (e.pid !== workers.get(x.label)) return `answered by pid ${e.pid}, not the label's worker`;
  if (e.local !== x.address || e.localPort !== x.port) return `the worker saw ${e.local} ${e.localPort} as local`;
  if (e.client !== (x.family === 4 ? '192.0.2.2' : '2001:db8::2')) return `the worker saw client ${e.client}`;
  if (x.protocol === 'udp' && r.from !== `${x.address} ${x.port}`) return `the reply came from ${r.from}`;
  return undefined;
}
