import { parseLabel } from '../bindings/binding.js';
import { DispatcherError } from '../errors.js';

/**
 * Who may register a label. Root and the daemon's own uid may register any label; other users only the
 * labels an `--allow LABEL=UID[,UID...]` names for them. A label is traffic: whoever registers it receives
 * its connections, so nothing else may.
 */
export class Policy {
  readonly #allow = new Map<string, Set<number>>();
  readonly #daemonUid: number;

  constructor(rules: readonly string[] = [], daemonUid = process.getuid?.() ?? 0) {
    this.#daemonUid = daemonUid;
    for (const rule of rules) {
      const { label, uids } = parseAllow(rule);
      const set = this.#allow.get(label) ?? new Set<number>();
      for (const uid of uids) set.add(uid);
      this.#allow.set(label, set);
    }
  }

  allows(label: string, uid: number): boolean {
    return this.trusted(uid) || this.#allow.get(label)?.has(uid) === true;
  }

  /** Root and the daemon's uid: any label. */
  trusted(uid: number): boolean {
    return uid === 0 || uid === this.#daemonUid;
  }

  /** Whether some label is allowed to `uid`: a peer for whom none is can be refused as it connects. */
  allowsAny(uid: number): boolean {
    if (this.trusted(uid)) return true;
    for (const uids of this.#allow.values()) if (uids.has(uid)) return true;
    return false;
  }

  /** The rules as `label -> uids`, for status. */
  toJSON(): Record<string, number[]> {
    return Object.fromEntries([...this.#allow].map(([label, uids]) => [label, [...uids].sort((a, b) => a - b)]));
  }
}

/** `web=1000,1001` -> { label: 'web', uids: [1000, 1001] } */
export function parseAllow(rule: string): { label: string; uids: number[] } {
  const eq = rule.indexOf('=');
  if (eq < 0) throw new DispatcherError('ERR_CONFIG', `--allow ${JSON.stringify(rule)} is not LABEL=UID[,UID...]`);
  let label: string;
  try {
    label = parseLabel(rule.slice(0, eq));
  } catch (err) {
    throw new DispatcherError('ERR_CONFIG', `--allow ${JSON.stringify(rule)}: ${(err as Error).message}`);
  }
  const uids = rule
    .slice(eq + 1)
    .split(',')
    .map((text) => {
      if (!/^[0-9]{1,10}$/.test(text) || Number(text) > 0xfffffffe) {
        throw new DispatcherError('ERR_CONFIG', `--allow ${JSON.stringify(rule)}: ${JSON.stringify(text)} is not a numeric uid`);
      }
      return Number(text);
    });
  return { label, uids };
}
