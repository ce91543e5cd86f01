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
