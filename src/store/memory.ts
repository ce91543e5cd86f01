import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * A full garbage collection, run after a large table replace. The replace leaves garbage several times the
 * size of the table (request text, parsed JSON, the answer), and an idle daemon gave none of it back: 854 MiB
 * resident at 1M bindings, which stayed there, against about 400 MiB after one collection (`npm run bench:table`).
 * Node has no API for it: V8's --expose-gc, set at run time, makes gc() appear in a new context.
 */
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

let pending: NodeJS.Timeout | undefined;

/**
 * Collects once, shortly after the last call: each call puts it off, so one made when the garbage is
 * complete (a large request's reply sent) is not run early by an earlier one (its replace done). Run while
 * a 1M load's reply was still being sent, the collection left 512 MiB resident; after it, 320 MiB.
 */
export function collectSoon(): void {
  clearTimeout(pending);
  pending = setTimeout(() => {
    pending = undefined;
    gc();
  }, 500).unref();
}
