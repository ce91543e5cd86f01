import t from 'tap';
import { type TapTest } from './helpers/tap.js';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { daemonIn, startDaemon, type StatusJSON, tempDir } from './helpers/daemon.js';
import { createNamespaces, type Namespaces } from './helpers/netns.js';
import { randomPort, sleep, startWorker } from './helpers/services.js';

// Real traffic from another namespace through the host namespace's daemon: ports mode and tproxy mode,
// TCP and UDP, IPv4 and IPv6. Needs root (network namespaces, nftables).
const DNS_SERVICE = fileURLToPath(new URL('./fixtures/dns-service.mjs', import.meta.url));
const isRoot = process.getuid?.() === 0;

async function withNamespaces(t: TapTest): Promise<Namespaces> {
  const ns = await createNamespaces();
  t.teardown(() => ns.remove());
  return ns;
}

const labelOf = (r: { line?: string; error?: string }): string => r.line?.split(' ')[0] ?? r.error ?? 'nothing';

t.test('tproxy mode: every port of a bound prefix, TCP and UDP, IPv4 and IPv6', { skip: !isRoot && 'needs root' }, async (t) => {
  const ns = await withNamespaces(t);
  const d = await daemonIn(t, ['--mode', 'tproxy'], { prefix: ns.inHost() });
  for (const args of [
    ['web', 'tcp', '198.51.100.0/24'],
    ['vip', 'tcp', '198.51.100.7'],
    ['ssh', 'tcp', '198.51.100.0/24', '22'],
    ['web', 'tcp', '2001:db8:1::/64'],
    ['vip', 'tcp', '2001:db8:1::7'],
    ['web', 'udp', '198.51.100.0/24'],
    ['vip', 'udp', '2001:db8:1::7', '5353'],
  ]) {
    t.equal((await d.cli('bind', 'add', ...args)).code, 0, `bind add ${args.join(' ')}`);
  }
  const workers = await Promise.all(['web', 'vip', 'ssh'].map((label) => startWorker(label, d.services)));
  t.teardown(() => Promise.all(workers.map((w) => w.stop())));

  const p1 = randomPort();
  const p2 = randomPort();
  const results = await ns.probe(
    ...['tcp', '198.51.100.1', p1],
    ...['tcp', '198.51.100.200', p2],
    ...['tcp', '198.51.100.7', p1],
    ...['tcp', '198.51.100.9', 22],
    ...['tcp', '198.51.100.7', 22],
    ...['tcp', '2001:db8:1::1', p1],
    ...['tcp', '2001:db8:1::7', p2],
    ...['udp', '198.51.100.3', p1],
    ...['udp', '2001:db8:1::7', 5353],
    ...['udp', '2001:db8:1::7', p2],
  );
  t.same(
    results.map(labelOf),
    ['web', 'web', 'vip', 'ssh', 'vip', 'web', 'vip', 'web', 'vip', 'ETIMEDOUT'],
    'every port of the prefixes, by precedence',
  );
  const first = results[0]!.line!.split(' ');
  t.same(
    [first[2], first[4], first[5]],
    ['192.0.2.2', '198.51.100.1', String(p1)],
    'the service sees the client and the address and port it dialled',
  );
  const v6 = results[6]!.line!.split(' ');
  t.same([v6[2], v6[4], v6[5]], ['2001:db8::2', '2001:db8:1::7', String(p2)]);
  t.equal(results[7]!.from, `198.51.100.3 ${p1}`, 'a UDP reply comes from the address and port the client sent to');
  t.equal(results[8]!.from, '2001:db8:1::7 5353');

  // Rules follow the bindings, in one transaction each time.
  const rules = await ns.nft('list', 'table', 'inet', 'dispatcher');
  t.match(rules.stdout, /ip daddr 198\.51\.100\.0\/24 meta l4proto tcp tproxy ip to :\d+ accept/);
  t.match(rules.stdout, /ip6 daddr 2001:db8:1::7 udp dport 5353 tproxy ip6 to :\d+ accept/);
  await d.cli('bind', 'rm', 'vip', 'tcp', '198.51.100.7');
  t.same((await ns.probe('tcp', '198.51.100.7', p1)).map(labelOf), ['web'], 'a removed binding: the next longest prefix');
});

t.test('tproxy mode leaves unbound traffic to the host, and its table goes with it', { skip: !isRoot && 'needs root' }, async (t) => {
  const ns = await withNamespaces(t);
  const dir = await tempDir(t);
  // An ordinary server of the host on an address no binding covers, and on an unbound port of a bound one.
  const [cmd, ...args] = ns.inHost(process.execPath, '-e', "require('net').createServer((s) => s.end('ordinary\\n')).listen(8080, '::')");
  const ordinary = spawn(cmd!, args, { stdio: 'ignore' });
  t.teardown(() => ordinary.kill());
  await sleep(300);
  const d = await startDaemon(dir, ['--mode', 'tproxy'], { prefix: ns.inHost() });
  await d.cli('bind', 'add', 'web', 'tcp', '198.51.100.0/24', '443');
  const w = await startWorker('web', d.services);
  t.teardown(() => w.stop());
  t.same((await ns.probe('tcp', '198.51.100.1', 443, 'tcp', '198.51.100.1', 8080, 'tcp', '203.0.113.1', 8080)).map(labelOf), [
    'web',
    'ordinary',
    'ordinary',
  ]);

  // A crash leaves the rules; the next daemon replaces them and serves.
  await d.stop('SIGKILL');
  t.equal((await ns.nft('list', 'table', 'inet', 'dispatcher')).code, 0, 'a killed daemon leaves its table');
  const d2 = await startDaemon(dir, ['--mode', 'tproxy'], { prefix: ns.inHost() });
  t.same((await ns.probe('tcp', '198.51.100.1', 443)).map(labelOf), ['web'], 'the restarted daemon serves the same bindings');
  t.equal(await d2.stop(), 0, 'SIGTERM: clean exit');
  t.not((await ns.nft('list', 'table', 'inet', 'dispatcher')).code, 0, 'and the table is gone');
  t.same((await ns.probe('tcp', '198.51.100.1', 443)).map(labelOf), ['ECONNREFUSED'], 'nothing steers to the dead daemon');
});

t.test('tproxy mode without nft says so and exits', { skip: !isRoot && 'needs root' }, async (t) => {
  const ns = await withNamespaces(t);
  const dir = await tempDir(t);
  const err = await startDaemon(dir, ['--mode', 'tproxy'], { prefix: [...ns.inHost('env', 'PATH=/nonexistent')] }).catch((e: Error) => e);
  t.match((err as Error).message, /tproxy mode needs the nft command, which is not installed/);
});

t.test('ports mode: dual-stack listeners serve IPv4 and IPv6 clients, TCP and UDP', { skip: !isRoot && 'needs root' }, async (t) => {
  const ns = await withNamespaces(t);
  const d = await daemonIn(t, [], { prefix: ns.inHost() });
  const port = randomPort();
  await d.cli('bind', 'add', 'web', 'tcp', '198.51.100.0/24', String(port));
  await d.cli('bind', 'add', 'web', 'tcp', '2001:db8:1::/64', String(port));
  await d.cli('bind', 'add', 'vip', 'udp', '2001:db8:1::7', String(port));
  await d.cli('bind', 'add', 'web', 'udp', '198.51.100.0/24', String(port));
  const workers = await Promise.all(['web', 'vip'].map((label) => startWorker(label, d.services)));
  t.teardown(() => Promise.all(workers.map((w) => w.stop())));
  const results = await ns.probe(
    'tcp',
    '198.51.100.4',
    port,
    'tcp',
    '2001:db8:1::4',
    port,
    'udp',
    '198.51.100.4',
    port,
    'udp',
    '2001:db8:1::7',
    port,
    'tcp',
    '198.51.100.4',
    port + 1,
  );
  t.same(results.map(labelOf), ['web', 'web', 'web', 'vip', 'ECONNREFUSED']);
  t.equal(results[3]!.from, `2001:db8:1::7 ${port}`, 'the reply leaves from the dialled IPv6 address');
});

t.test('dig against two DNS services on one prefix', { skip: !isRoot && 'needs root' }, async (t) => {
  const ns = await withNamespaces(t);
  const d = await daemonIn(t, ['--mode', 'tproxy'], { prefix: ns.inHost() });
  await d.cli('bind', 'add', 'dns-a', 'udp', '198.51.100.0/24', '53');
  await d.cli('bind', 'add', 'dns-b', 'udp', '198.51.100.53', '53');
  await d.cli('bind', 'add', 'dns-a', 'udp', '2001:db8:1::/64', '53');
  const services = await Promise.all([
    startWorker('dns-a', d.services, { command: [process.execPath, DNS_SERVICE, 'dns-a', d.services, '203.0.113.1'] }),
    startWorker('dns-b', d.services, { command: [process.execPath, DNS_SERVICE, 'dns-b', d.services, '203.0.113.2'] }),
  ]);
  t.teardown(() => Promise.all(services.map((s) => s.stop())));
  const dig = async (server: string): Promise<string> =>
    (await ns.client_('dig', `@${server}`, '+short', '+tries=1', '+time=3', 'www.example.test', 'A')).stdout.trim();
  t.equal(await dig('198.51.100.1'), '203.0.113.1', 'the /24 answers with dns-a');
  t.equal(await dig('198.51.100.53'), '203.0.113.2', 'the /32 answers with dns-b');
  t.equal(await dig('2001:db8:1::99'), '203.0.113.1', 'over IPv6 too');
  const status = JSON.parse((await d.cli('status', '--json')).stdout) as StatusJSON;
  t.equal(status.connections.replies, 3, 'three replies sent');
});
