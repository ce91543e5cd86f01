import t from 'tap';
import { bindingFilter, compareForList } from '../src/bindings/order.js';
import { bind } from './helpers/bindings.js';

t.test('list order: tcp, IPv4, contained before container, address, port with 0 last, label', async (t) => {
  const bindings = [
    bind('z', 'udp', '192.0.2.0/24', 53),
    bind('v6', 'tcp', '2001:db8::/32', 0),
    bind('all', 'tcp', '192.0.2.0/24', 0),
    bind('web', 'tcp', '192.0.2.0/24', 80),
    bind('host', 'tcp', '192.0.2.200', 443),
    bind('low', 'tcp', '192.0.2.0/25', 443),
    bind('other', 'tcp', '10.0.0.0/8', 0),
    bind('deep', 'tcp', '192.0.2.255', 0),
  ];
  t.same(
    bindings.sort(compareForList).map((b) => b.label),
    ['other', 'low', 'host', 'deep', 'web', 'all', 'v6', 'z'],
  );
});

t.test('filters combine; --prefix keeps prefixes within it', async (t) => {
  const bindings = [
    bind('a', 'tcp', '192.0.2.0/24', 80),
    bind('a', 'udp', '192.0.2.0/25', 53),
    bind('b', 'tcp', '192.0.2.128/25', 80),
    bind('b', 'tcp', '198.51.100.0/24', 80),
    bind('c', 'tcp', '2001:db8::/48', 0),
  ];
  const labels = (f: Parameters<typeof bindingFilter>[0]): string[] =>
    bindings.filter(bindingFilter(f)).map((b) => `${b.label} ${b.prefix}`);
  t.same(labels({ prefix: '192.0.2.0/24' }), ['a 192.0.2.0/24', 'a 192.0.2.0/25', 'b 192.0.2.128/25']);
  t.same(labels({ prefix: '192.0.2.128/25', label: 'b' }), ['b 192.0.2.128/25']);
  t.same(labels({ protocol: 'tcp', port: 80, label: 'b' }), ['b 192.0.2.128/25', 'b 198.51.100.0/24']);
  t.same(labels({ prefix: '2001:db8::/32' }), ['c 2001:db8::/48']);
  t.same(labels({ prefix: '0.0.0.0/0', port: 53 }), ['a 192.0.2.0/25']);
  t.throws(() => bindingFilter({ prefix: '192.0.2.0/40' }), { code: 'ERR_PREFIX' });
});
