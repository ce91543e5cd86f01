// The random tables of the kernel steering benchmarks (bench/steering.js, bench/steering-packets.js).
import { Binding } from '../dist/index.js';
import { rng } from '../test/helpers/rng.js';

const PORTS = [80, 443, 53, 8080, 22, 8443, 25, 3306];

/**
 * Dense enough to nest: IPv4 in 198.18.0.0/15 (lengths /16-/32), IPv6 in 2001:db8::/32 with few distinct
 * bits (lengths /48-/128); 40% port 0, 60% tcp, 1,000 labels (`label-0` to `label-999`). Nesting is what
 * makes the compiler carve, and bench/table.js's spread-out prefixes rarely nest.
 * @param {number} n
 * @param {number} seed
 */
export function randomBindings(n, seed) {
  const r = rng(seed);
  /** @param {number} bits */
  const low = (bits) => Math.floor(r() * 2 ** bits);
  /** @type {Map<string, Binding>} */
  const byKey = new Map();
  while (byKey.size < n) {
    const v4 = r() < 0.75;
    const length = v4 ? 32 - Math.floor(r() ** 2 * 17) : 128 - Math.floor(r() ** 2 * 81);
    const words = v4 ? [(0xc6120000 | low(17)) >>> 0] : [0x20010db8, low(16) << 16, low(8), low(16)];
    const masked = words.map((word, i) => {
      const keep = Math.max(0, Math.min(32, length - 32 * i));
      // A shift by 32 is a shift by 0 in JavaScript: a whole word is kept as it is.
      return keep === 0 ? 0 : keep === 32 ? word : (word & ~(0xffffffff >>> keep)) >>> 0;
    });
    const port = r() < 0.4 ? 0 : /** @type {number} */ (PORTS[Math.floor(r() * PORTS.length)]);
    const b = new Binding(`label-${Math.floor(r() * 1000)}`, r() < 0.6 ? 'tcp' : 'udp', v4 ? 4 : 6, masked, length, port);
    byKey.set(b.key(), b);
  }
  return [...byKey.values()];
}

/**
 * A socket for each random label, in every protocol and family, so that planSteering keeps every element
 * and makes every chain (the largest table). Nothing listens there: the benchmarks only time the ruleset,
 * or send their traffic elsewhere.
 * @param {string} label `label-N`
 * @param {string} _protocol
 * @param {4 | 6} family
 */
export const randomLabelSocket = (label, _protocol, family) => ({
  address: family === 4 ? '127.0.0.1' : '::1',
  port: 20000 + Number(label.slice('label-'.length)),
});
