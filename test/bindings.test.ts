import t from 'tap';
import { parseAddress } from '../src/bindings/address.js';
import { parseBinding, parseLabel, parsePort, parsePortText, parsePrefix, parseProtocol } from '../src/bindings/binding.js';

const prefixText = (s: string): string => parseBinding({ label: 'x', protocol: 'tcp', prefix: s, port: 0 }).prefix;

t.test('prefixes are normalized: host bits masked, bare address is a host route', async (t) => {
  t.equal(prefixText('127.0.0.1/24'), '127.0.0.0/24');
  t.equal(prefixText('127.0.0.1'), '127.0.0.1/32');
  t.equal(prefixText('0.0.0.0/0'), '0.0.0.0/0');
  t.equal(prefixText('192.0.2.255/25'), '192.0.2.128/25');
  t.equal(prefixText('2001:DB8:0:0::1/32'), '2001:db8::/32');
  t.equal(prefixText('2001:db8::1'), '2001:db8::1/128');
  t.equal(prefixText('::/0'), '::/0');
  t.equal(prefixText('2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/127'), '2001:db8:ffff:ffff:ffff:ffff:ffff:fffe/127');
  t.equal(prefixText('2001:db8::ffff:1.2.3.4/128'), '2001:db8::ffff:102:304/128');
});

t.test('bad prefixes are refused with the reason', async (t) => {
  const bad: [unknown, RegExp][] = [
    ['1.2.3.4/33', /mask "\/33" is not a length from 0 to 32/],
    ['2001:db8::/129', /from 0 to 128/],
    ['1.2.3.4/', /mask "\/"/],
    ['1.2.3.4/-1', /mask/],
    ['1.2.3.4/+8', /mask/],
    ['1.2.3/24', /not an IPv4 or IPv6 address/],
    ['01.2.3.4', /not an IPv4 or IPv6 address/],
    ['256.1.1.1', /not an IPv4 or IPv6 address/],
    ['fe80::1%eth0', /not an IPv4 or IPv6 address/],
    ['::ffff:127.0.0.1', /IPv4-mapped.*write it as IPv4 \(127\.0\.0\.1\)/],
    ['::ffff:127.0.0.0/104', /IPv4-mapped/],
    ['', /not an IPv4 or IPv6 address/],
    [42, /is not a string/],
    [undefined, /\(missing\)/],
  ];
  for (const [input, re] of bad) t.throws(() => parsePrefix(input), { code: 'ERR_PREFIX', message: re }, String(input));
});

t.test('ports, protocols and labels', async (t) => {
  t.equal(parsePort(0), 0);
  t.equal(parsePort(65535), 65535);
  t.throws(() => parsePort('80'), { code: 'ERR_PORT' }, 'JSON ports are numbers');
  t.equal(parsePortText('65535'), 65535);
  t.equal(parsePortText('080'), 80);
  for (const bad of [-1, 65536, 1.5, '1e3', ' 80', '0x50', '', null, true, '123456', '-1']) {
    t.throws(() => parsePortText(bad), { code: 'ERR_PORT' }, `port ${String(bad)}`);
  }
  t.equal(parseProtocol('udp'), 'udp');
  for (const bad of ['TCP', 'sctp', '', 6]) t.throws(() => parseProtocol(bad), { code: 'ERR_PROTOCOL' });
  t.equal(parseLabel('web.v2_A-1'), 'web.v2_A-1');
  t.equal(parseLabel('a'.repeat(64)), 'a'.repeat(64));
  for (const bad of ['', 'a'.repeat(65), 'web tier', 'wéb', 'a/b', 'a\n', 7]) {
    t.throws(() => parseLabel(bad), { code: 'ERR_LABEL' }, JSON.stringify(bad));
  }
});

t.test('parseBinding names the first bad field', async (t) => {
  t.throws(() => parseBinding({ label: 'ok', protocol: 'tcp', prefix: '1.2.3.4', port: 70000 }), { code: 'ERR_PORT', message: /70000/ });
  t.throws(() => parseBinding({ label: 'no way', protocol: 'tcp', prefix: '1.2.3.4', port: 1 }), { code: 'ERR_LABEL' });
  const b = parseBinding({ label: 'web', protocol: 'udp', prefix: '198.51.100.7/24', port: 53 });
  t.same(b.toJSON(), { label: 'web', protocol: 'udp', prefix: '198.51.100.0/24', port: 53 });
});

t.test('addresses: IPv4-mapped IPv6 is looked up as IPv4', async (t) => {
  t.same(parseAddress('::ffff:127.0.0.2'), { family: 4, words: Uint32Array.of(0x7f000002) });
  t.same(parseAddress('127.0.0.2'), { family: 4, words: Uint32Array.of(0x7f000002) });
  t.equal(parseAddress('::1').family, 6);
  t.throws(() => parseAddress('::ffff:127.0.0.2', 'refuse'), { code: 'ERR_ADDRESS' });
});
