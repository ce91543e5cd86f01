import t from 'tap';
import ipaddr from 'ipaddr.js';
import { formatAddress, parseAddress } from '../src/bindings/address.js';
import { rng } from './helpers/rng.js';

t.test('IPv6 text is RFC 5952 canonical: the same as ipaddr.js prints, for random addresses rich in zero runs', async (t) => {
  const r = rng(5952);
  // Words that are often zero, or zero in one half, so that zero runs of every length and position occur.
  const word = (): number =>
    [0, Math.floor(r() * 0x10000), (Math.floor(r() * 0x10000) << 16) >>> 0, Math.floor(r() * 2 ** 32)][Math.floor(r() * 4)]!;
  let mismatches = 0;
  for (let n = 0; n < 50_000; n++) {
    const words = [word(), word(), word(), word()];
    const parts = words.flatMap((w) => [w >>> 16, w & 0xffff]);
    const text = formatAddress(6, words);
    if (text !== new ipaddr.IPv6(parts).toString()) mismatches++;
    else if (Array.from(parseAddress(text).words).join() !== words.join()) mismatches++;
  }
  t.equal(mismatches, 0, '50,000 addresses: canonical, and parsed back to the same words');
  t.equal(formatAddress(6, [0, 0, 0, 0]), '::');
  t.equal(formatAddress(6, [0, 0, 0, 1]), '::1');
  t.equal(formatAddress(6, [0x20010db8, 0, 1, 0]), '2001:db8::1:0:0', 'the longest zero run is compressed');
  t.equal(formatAddress(6, [0x20010000, 1, 0, 0x00010001]), '2001::1:0:0:1:1', 'the first of two equal runs');
  t.equal(formatAddress(6, [0x20010db8, 0x00010000, 0x00010001, 0x00010001]), '2001:db8:1:0:1:1:1:1', 'a single zero group is not');
});

t.test('IPv6 text in every form parses to the words ipaddr.js gives, and mapped addresses as IPv4', async (t) => {
  const r = rng(4291);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  // Groups often zero so that `::` lands at the start, the middle and the end, at every length.
  const group = (): number => pick([0, 0, 1, 0xffff, Math.floor(r() * 0x10000)]);
  const hex = (g: number): string => {
    const text = g.toString(16).padStart(pick([1, 4]), '0');
    return r() < 0.3 ? text.toUpperCase() : text;
  };
  let checked = 0;
  const wrong: string[] = [];
  for (let n = 0; n < 50_000; n++) {
    const groups = Array.from({ length: 8 }, group);
    if (r() < 0.1) groups.splice(0, 6, 0, 0, 0, 0, 0, 0xffff); // IPv4-mapped
    const quad = r() < 0.3; // the last 32 bits written as a dotted quad
    const fields = groups.map(hex);
    if (quad) fields.splice(6, 2, `${groups[6]! >> 8}.${groups[6]! & 255}.${groups[7]! >> 8}.${groups[7]! & 255}`);
    // `::` for a random run of zero groups (of any length, even one), or none.
    const zeroRuns: [number, number][] = [];
    for (let i = 0; i < fields.length; i++) {
      for (let j = i; j < fields.length && groups[j] === 0 && !(quad && j >= 6); j++) zeroRuns.push([i, j + 1]);
    }
    let text = fields.join(':');
    if (zeroRuns.length > 0 && r() < 0.8) {
      const [from, to] = pick(zeroRuns);
      text = `${fields.slice(0, from).join(':')}::${fields.slice(to).join(':')}`;
    }
    // ipaddr.js reads `::a.b.c.d` as IPv4-mapped (RFC 4291 has it IPv4-compatible: zeros, then the quad),
    // so it is asked about the same text with the quad written as two hex groups.
    const parts = ipaddr.IPv6.parse(quad ? text.replace(/[0-9.]+$/, `${hex(groups[6]!)}:${hex(groups[7]!)}`) : text).parts;
    const expected = parts.slice(0, 6).every((p, i) => p === (i === 5 ? 0xffff : 0))
      ? `4 ${((parts[6]! << 16) | parts[7]!) >>> 0}`
      : `6 ${[0, 1, 2, 3].map((i) => ((parts[2 * i]! << 16) | parts[2 * i + 1]!) >>> 0).join()}`;
    const a = parseAddress(text);
    const got = `${a.family} ${Array.from(a.words).join()}`;
    if (got !== expected && wrong.length < 5) wrong.push(`${text}: ${got}, ipaddr.js ${expected}`);
    checked++;
  }
  t.same(wrong, [], `${checked} texts: the same words as ipaddr.js`);
  t.same(Array.from(parseAddress('::').words), [0, 0, 0, 0]);
  t.same(Array.from(parseAddress('1::').words), [0x10000, 0, 0, 0]);
  t.same(Array.from(parseAddress('::ffff:1.2.3.4').words), [0x01020304], 'mapped, as IPv4');
  t.same(Array.from(parseAddress('::1.2.3.4').words), [0, 0, 0, 0x01020304], 'IPv4-compatible stays IPv6 (inet_pton agrees)');
  t.throws(() => parseAddress('::ffff:1.2.3.4', 'refuse'), /IPv4-mapped IPv6 address; write it as IPv4 \(1\.2\.3\.4\)/);
  for (const bad of ['1:2:3:4:5:6:7', '1::2::3', ':1::', 'g::', '1:2:3:4:5:6:7:8:9', '::1.2.3', 'fe80::1%eth0', '12345::']) {
    t.throws(() => parseAddress(bad), { code: 'ERR_ADDRESS' }, `${bad} is refused`);
  }
});
