import { maskWords } from '../../src/bindings/address.js';
import { Binding, parseBinding } from '../../src/bindings/binding.js';

export const bind = (label: string, protocol: string, prefix: string, port = 0): Binding => parseBinding({ label, protocol, prefix, port });

// The PRNG the benchmarks use too, so a failing randomized case can be replayed from its seed.
export { rng } from './rng.js';

/**
 * A random table for property tests: both families and protocols, port 0 and a few others, prefixes that
 * nest and overlap (few distinct high bits), and IPv4/IPv6 pairs with equal words and length (`10.0.0.0/8`
 * and `a00::/8`), which only the family tells apart. Distinct by key; labels are arbitrary.
 */
export function randomBindings(rand: () => number, count: number, ports: readonly number[] = [0, 0, 80, 443]): Binding[] {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const v4 = (): number => ((pick([10, 198, 0]) << 24) | (pick([0, 51, 255]) << 16) | Math.floor(rand() * 65536)) >>> 0;
  const byKey = new Map<string, Binding>();
  const add = (label: string, protocol: 'tcp' | 'udp', family: 4 | 6, words: number[], length: number, port: number): void => {
    const b = new Binding(label, protocol, family, maskWords(Uint32Array.from(words), length), length, port);
    byKey.set(b.key(), b);
  };
  while (byKey.size < count) {
    const protocol = pick(['tcp', 'udp'] as const);
    const port = pick(ports);
    const label = `l${Math.floor(rand() * 50)}`;
    const word = v4();
    const length = pick([0, 1, 8, 16, 23, 24, 25, 32]);
    if (rand() < 0.5) add(label, protocol, 4, [word], length, port);
    // The same words and length as IPv6: `word` as the first IPv6 word, the rest zero.
    if (rand() < 0.5) add(`${label}v6`, protocol, 6, [word, 0, 0, 0], length, port);
    if (rand() < 0.3) {
      const six = [0x20010db8, pick([0, 1]), pick([0, 0x80000000]), Math.floor(rand() * 8)];
      add(label, protocol, 6, six, pick([32, 33, 64, 96, 127, 128]), port);
    }
  }
  return [...byKey.values()].slice(0, count);
}
