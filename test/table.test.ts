import t from 'tap';
import { formatAddress, parseAddress } from '../src/bindings/address.js';
import { type Binding } from '../src/bindings/binding.js';
import { compareForList } from '../src/bindings/order.js';
import { Table } from '../src/table/table.js';
import { bind, randomBindings, rng } from './helpers/bindings.js';

const label = (table: Table, protocol: 'tcp' | 'udp', ip: string, port: number): string | undefined =>
  table.lookup(protocol, ip, port)?.label;

t.test("Tubular's precedence: longest prefix, then specific port over port 0", async (t) => {
  const table = Table.from([bind('a', 'tcp', '127.0.0.0/8', 80), bind('b', 'tcp', '127.0.0.1/32', 0)]);
  t.equal(label(table, 'tcp', '127.0.0.1', 80), 'b', 'a longer port-0 prefix beats a shorter specific port');
  t.equal(label(table, 'tcp', '127.0.0.2', 80), 'a');
  t.equal(label(table, 'tcp', '127.0.0.2', 81), undefined, 'a specific port matches only that port');
  t.equal(label(table, 'tcp', '127.0.0.1', 12345), 'b', 'port 0 matches every port');

  const tie = Table.from([bind('every', 'tcp', '192.0.2.0/24', 0), bind('https', 'tcp', '192.0.2.0/24', 443)]);
  t.equal(label(tie, 'tcp', '192.0.2.9', 443), 'https', 'equal length: the specific port wins');
  t.equal(label(tie, 'tcp', '192.0.2.9', 80), 'every');
});

t.test('the service-bindings example from the README', async (t) => {
  const table = Table.from([
    bind('spectrum', 'tcp', '192.0.2.0/24', 0),
    bind('cdn', 'tcp', '192.0.2.0/25', 443),
    bind('cdn', 'tcp', '192.0.2.200/32', 443),
  ]);
  t.equal(label(table, 'tcp', '192.0.2.1', 443), 'cdn');
  t.equal(label(table, 'tcp', '192.0.2.1', 80), 'spectrum');
  t.equal(label(table, 'tcp', '192.0.2.200', 443), 'cdn');
  t.equal(label(table, 'tcp', '192.0.2.201', 443), 'spectrum');
  t.equal(label(table, 'tcp', '192.0.2.200', 22), 'spectrum');
  t.equal(label(table, 'tcp', '192.0.3.1', 443), undefined);
});

t.test('protocols and families never match each other', async (t) => {
  const table = Table.from([bind('v6all', 'tcp', '::/0', 0), bind('dns', 'udp', '0.0.0.0/0', 53)]);
  t.equal(label(table, 'tcp', '198.51.100.1', 80), undefined, '::/0 does not swallow IPv4');
  t.equal(label(table, 'tcp', '::ffff:198.51.100.1', 80), undefined, 'nor IPv4-mapped IPv6');
  t.equal(label(table, 'tcp', '2001:db8::1', 80), 'v6all');
  t.equal(label(table, 'udp', '198.51.100.1', 53), 'dns');
  t.equal(label(table, 'tcp', '198.51.100.1', 53), undefined, 'a udp binding does not match tcp');
  t.equal(label(table, 'udp', '::ffff:198.51.100.1', 53), 'dns', 'IPv4-mapped traffic matches IPv4 bindings');
});

t.test('IPv6 precedence across word boundaries, and the ends of the address space', async (t) => {
  const table = Table.from([
    bind('net32', 'tcp', '2001:db8::/32', 0),
    bind('net33', 'tcp', '2001:db8:8000::/33', 443),
    bind('net64', 'tcp', '2001:db8:1:2::/64', 0),
    bind('net65', 'tcp', '2001:db8:1:2:8000::/65', 0),
    bind('host', 'tcp', '2001:db8:1:2::5', 443),
    bind('top', 'tcp', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 0),
    bind('low', 'tcp', '::/1', 0),
    bind('v4top', 'tcp', '255.255.255.255', 0),
  ]);
  t.equal(label(table, 'tcp', '2001:db8::1', 443), 'net32');
  t.equal(label(table, 'tcp', '2001:db8:8000::1', 443), 'net33');
  t.equal(label(table, 'tcp', '2001:db8:8000::1', 80), 'net32');
  t.equal(label(table, 'tcp', '2001:db8:1:2::4', 443), 'net64');
  t.equal(label(table, 'tcp', '2001:db8:1:2::5', 443), 'host');
  t.equal(label(table, 'tcp', '2001:db8:1:2::5', 80), 'net64');
  t.equal(label(table, 'tcp', '2001:db8:1:2:8000::5', 80), 'net65');
  t.equal(label(table, 'tcp', '2001:db8:1:3::', 80), 'net32');
  t.equal(label(table, 'tcp', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 1), 'top');
  t.equal(label(table, 'tcp', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe', 1), undefined);
  t.equal(label(table, 'tcp', '::', 1), 'low');
  t.equal(label(table, 'tcp', '255.255.255.255', 1), 'v4top');
  t.equal(label(table, 'tcp', '255.255.255.254', 1), undefined);
});

t.test('with/without: replace the label, remove only with the right label, old snapshots unchanged', async (t) => {
  const t0 = Table.empty();
  const { table: t1, replaced: r1 } = t0.with(bind('a', 'tcp', '198.51.100.0/24', 80));
  t.equal(r1, undefined);
  const { table: t2, replaced: r2 } = t1.with(bind('b', 'tcp', '198.51.100.9/24', 80));
  t.equal(r2?.label, 'a', 'same (protocol, prefix, port) replaces');
  t.equal(t2.size, 1);
  t.equal(label(t1, 'tcp', '198.51.100.1', 80), 'a', 'the older snapshot still answers as before');
  t.equal(label(t2, 'tcp', '198.51.100.1', 80), 'b');
  t.throws(() => t2.without(bind('a', 'tcp', '198.51.100.0/24', 80)), { code: 'ERR_LABEL_MISMATCH', message: /bound to "b", not "a"/ });
  t.throws(() => t2.without(bind('b', 'tcp', '198.51.100.0/24', 81)), { code: 'ERR_NO_BINDING' });
  t.throws(() => t2.without(bind('b', 'udp', '198.51.100.0/24', 80)), { code: 'ERR_NO_BINDING' });
  const t3 = t2.without(bind('b', 'tcp', '198.51.100.0/24', 80));
  t.equal(t3.size, 0);
  t.equal(label(t3, 'tcp', '198.51.100.1', 80), undefined);
  t.equal(label(t2, 'tcp', '198.51.100.1', 80), 'b');
});

t.test('from refuses the same (protocol, prefix, port) twice', async (t) => {
  t.throws(() => Table.from([bind('a', 'tcp', '192.0.2.0/24', 1), bind('b', 'tcp', '192.0.2.7/24', 1)]), /bound twice/);
});

t.test('diff reports added, removed and relabelled bindings', async (t) => {
  const before = Table.from([
    bind('a', 'tcp', '192.0.2.0/24', 0),
    bind('b', 'udp', '192.0.2.0/24', 53),
    bind('c', 'tcp', '2001:db8::/32', 0),
  ]);
  const after = Table.from([
    bind('a', 'tcp', '192.0.2.0/24', 0),
    bind('B', 'udp', '192.0.2.0/24', 53),
    bind('d', 'tcp', '2001:db8::/48', 0),
  ]);
  const d = before.diff(after);
  t.same(d.added.map(String).sort(), ['tcp 2001:db8::/48 port 0 (every port) -> d', 'udp 192.0.2.0/24 port 53 -> B']);
  t.same(d.removed.map(String).sort(), ['tcp 2001:db8::/32 port 0 (every port) -> c', 'udp 192.0.2.0/24 port 53 -> b']);
  t.same(before.diff(before), { added: [], removed: [] });
});

t.test('randomized: diff is what a key-by-key comparison says, in list order, between rebuilt and derived snapshots', async (t) => {
  const rand = rng(156);
  const describe = (bs: readonly Binding[]): string[] => bs.map(String);
  for (let round = 0; round < 60; round++) {
    const universe = randomBindings(rand, 300);
    const before = universe.filter(() => rand() < 0.6);
    // The next set: some kept, some gone, some relabelled, some new.
    const after = universe.flatMap((b) => {
      const r = rand();
      if (r < 0.4) return [b];
      if (r < 0.5) return [b.withLabel(`${b.label}x`)];
      return r < 0.7 ? [] : [b];
    });
    const old = new Map(before.map((b) => [b.key(), b]));
    const now = new Map(after.map((b) => [b.key(), b]));
    const expectAdded = after.filter((b) => old.get(b.key())?.label !== b.label).sort(compareForList);
    const expectRemoved = before.filter((b) => now.get(b.key())?.label !== b.label).sort(compareForList);
    const d = Table.from(before).diff(Table.from(after));
    t.same(describe(d.added), describe(expectAdded), `round ${round}: added`);
    t.same(describe(d.removed), describe(expectRemoved), `round ${round}: removed`);
    // A snapshot derived by with/without shares the groups it did not touch: those are skipped, not missed.
    const base = Table.from(before);
    let derived = base;
    for (const b of universe.filter(() => rand() < 0.03)) {
      const had = derived.find(b);
      derived = had !== undefined && rand() < 0.5 ? derived.without(had) : derived.with(b.withLabel(`${b.label}y`)).table;
    }
    const rebuilt = Table.from(before).diff(Table.from(derived.bindings()));
    const shared = base.diff(derived);
    t.same(describe(shared.added), describe(rebuilt.added), `round ${round}: derived, added`);
    t.same(describe(shared.removed), describe(rebuilt.removed), `round ${round}: derived, removed`);
  }
});

t.test('ports lists the ports bindings name', async (t) => {
  const table = Table.from([
    bind('a', 'tcp', '192.0.2.0/24', 443),
    bind('b', 'tcp', '2001:db8::/32', 80),
    bind('c', 'udp', '192.0.2.0/24', 53),
    bind('d', 'tcp', '198.51.100.0/24', 0),
  ]);
  t.same(table.ports('tcp'), [0, 80, 443]);
  t.same(table.ports('udp'), [53]);
});

/** The rule written the slow, obvious way. */
function reference(bindings: Binding[], protocol: string, ip: string, port: number): Binding | undefined {
  const a = parseAddress(ip);
  let best: Binding | undefined;
  for (const b of bindings) {
    if (b.protocol !== protocol || b.family !== a.family || (b.port !== 0 && b.port !== port)) continue;
    let inside = true;
    for (let i = 0; i < a.words.length; i++) {
      const bits = Math.min(Math.max(b.length - 32 * i, 0), 32);
      const mask = bits === 0 ? 0 : bits === 32 ? 0xffffffff : ~(0xffffffff >>> bits) >>> 0;
      if ((a.words[i]! & mask) >>> 0 !== (b.word(i) & mask) >>> 0) inside = false;
    }
    if (!inside) continue;
    if (best === undefined || b.length > best.length || (b.length === best.length && b.port !== 0)) best = b;
  }
  return best;
}

t.test('randomized: the table agrees with the reference on nested IPv4 and IPv6 prefixes', async (t) => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const rand = rng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    // Few distinct high bits, so prefixes nest and collide often.
    const v4 = (): string => `198.51.${pick([100, 101])}.${Math.floor(rand() * 256)}`;
    const v6 = (): string => formatAddress(6, [0x20010db8, pick([0, 1]), pick([0, 0x80000000, 5]), Math.floor(rand() * 8)]);
    const byKey = new Map<string, Binding>();
    for (let i = 0; i < 400; i++) {
      const six = rand() < 0.4;
      const b = bind(
        `l${i}`,
        pick(['tcp', 'udp']),
        `${six ? v6() : v4()}/${six ? pick([0, 31, 32, 33, 63, 64, 65, 96, 126, 128]) : pick([0, 8, 16, 22, 23, 24, 25, 30, 31, 32])}`,
        pick([0, 0, 80, 443]),
      );
      byKey.set(`${b.protocol} ${b.prefix} ${b.port}`, b);
    }
    const bindings = [...byKey.values()];
    const table = Table.from(bindings);
    let mismatches = 0;
    for (let i = 0; i < 4000; i++) {
      const protocol = pick(['tcp', 'udp'] as const);
      const ip = rand() < 0.4 ? v6() : v4();
      const port = pick([80, 443, 8080]);
      const want = reference(bindings, protocol, ip, port);
      const got = table.lookup(protocol, ip, port);
      if (got !== want) {
        mismatches++;
        if (mismatches < 5) t.fail(`seed ${seed}: ${protocol} ${ip} ${port}: got ${String(got)}, want ${String(want)}`);
      }
      const words = parseAddress(ip);
      t.equal(table.lookupLabel(protocol, words.family, words.words, port), want?.label, 'lookupLabel agrees', {
        diagnostic: false,
        silent: true,
      });
    }
    t.equal(mismatches, 0, `seed ${seed}: ${bindings.length} bindings, 4000 lookups`);

    // Deriving the same table one change at a time gives the same answers.
    let derived = Table.empty();
    for (const b of bindings) derived = derived.with(b).table;
    for (const b of bindings.slice(0, 100)) derived = derived.without(b);
    const rest = bindings.slice(100);
    for (let i = 0; i < 1000; i++) {
      const ip = rand() < 0.4 ? v6() : v4();
      const protocol = pick(['tcp', 'udp'] as const);
      t.equal(derived.lookup(protocol, ip, 443), reference(rest, protocol, ip, 443));
    }
  }
});
