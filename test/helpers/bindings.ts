import { type Binding, parseBinding } from '../../src/bindings/binding.js';

export const bind = (label: string, protocol: string, prefix: string, port = 0): Binding => parseBinding({ label, protocol, prefix, port });

/** A small deterministic PRNG (mulberry32), so a failing randomized case can be replayed from its seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}
