import { type Binding, parseBinding } from '../../src/bindings/binding.js';

export const bind = (label: string, protocol: string, prefix: string, port = 0): Binding => parseBinding({ label, protocol, prefix, port });

// The same PRNG as the benchmarks, so a failing randomized case can be replayed from its seed.
export { rng } from '../../bench/rng.js';
