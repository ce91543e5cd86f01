import { type Etcd3, type Lease } from 'etcd3';
import { type Logger } from 'pino';
import { checkHost, knownDir, presenceDir } from '../store/etcd-layout.js';

/** What a daemon tells the fleet about itself: `PREFIX/fleet/live/<host>`, under its lease. */
export interface PresenceRecord {
  host: string;
  /** The store's revision it serves. */
  revision: number;
  /** `ok`, or what is wrong (e.g. a revision it could not apply). */
  health: string;
  mode: string;
  bindings: number;
  workers: number;
  version: string;
  pid: number;
  /** When this daemon last connected to the store (ISO 8601). */
  connected_since: string;
}

/** A record's key, and the key that remembers the host once its lease is gone. */
export const presenceKey = (prefix: string, host: string): string => presenceDir(prefix) + checkHost(host);
export const knownKey = (prefix: string, host: string): string => knownDir(prefix) + checkHost(host);

// Seconds without a keep-alive before etcd drops the record: a dead or cut-off daemon shows as missing so soon.
const TTL_S = 10;

/**
 * Keeps this daemon's record in the store: written when it changes (the latest wins; one write at a time),
 * kept alive by the lease's keep-alives (every TTL/3), written again under a new lease when etcd lost the
 * old one (after an outage longer than the TTL).
 */
export class Presence {
  readonly #client: Etcd3;
  readonly #key: string;
  readonly #known: string;
  readonly #log: Logger;
  #lease: Lease | undefined;
  #record: PresenceRecord | undefined;
  #writing = false;
  #dirty = false;
  #retry: NodeJS.Timeout | undefined;
  #closed = false;
  #remembered = false;

  constructor(client: Etcd3, prefix: string, host: string, log: Logger) {
    this.#client = client;
    this.#key = presenceKey(prefix, host);
    this.#known = knownKey(prefix, host);
    this.#log = log;
  }

  publish(record: PresenceRecord): void {
    this.#record = record;
    this.#dirty = true;
    void this.#write();
  }

  async #write(): Promise<void> {
    if (this.#writing || this.#closed || this.#record === undefined) return;
    this.#writing = true;
    this.#dirty = false;
    const record = this.#record;
    let failed = false;
    try {
      const lease = (this.#lease ??= this.#newLease());
      await lease.put(this.#key).value(JSON.stringify(record)).exec();
      // Once: the host is remembered, so that its absence shows.
      if (!this.#remembered) {
        await this.#client
          .put(this.#known)
          .value(JSON.stringify({ host: record.host, joined: new Date().toISOString() }))
          .exec();
        this.#remembered = true;
      }
    } catch (err) {
      failed = true;
      this.#dirty = true;
      // Its keep-alives stop with it; etcd drops it (and the record) when it runs out.
      this.#lease?.release();
      this.#lease = undefined;
      this.#log.debug({ err }, 'presence not written; retrying');
    } finally {
      this.#writing = false;
    }
    if (!this.#dirty || this.#closed) return;
    if (failed) this.#retry ??= setTimeout(() => ((this.#retry = undefined), void this.#write()), 1000);
    else void this.#write();
  }

  #newLease(): Lease {
    const lease = this.#client.lease(TTL_S);
    lease.on('lost', () => {
      if (this.#lease !== lease) return;
      this.#lease = undefined;
      this.#dirty = true;
      void this.#write();
    });
    return lease;
  }

  /**
   * A clean stop: the record goes at once (the host shows as missing, not as serving). After a hand-over
   * (`handedOver`) it stays: the new daemon writes over it under its own lease, and until then the host is
   * still served; the old lease then runs out with no record left on it.
   */
  async close(handedOver = false): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retry);
    if (handedOver) return this.#lease?.release();
    // Not for long: with etcd away the lease expires by itself.
    await this.#lease?.revoke({ deadline: Date.now() + 1000 }).catch(() => undefined);
  }
}
