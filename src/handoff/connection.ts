import { type Protocol } from '../bindings/binding.js';
import { ACCEPT_RECORD, native } from '../native/index.js';
import { acceptFd, recordIn } from '../native/records.js';

/**
 * An accepted connection on its way to a worker: the addon's accept record (descriptor, local and peer
 * address blocks; records.ts) and when it was accepted. The daemon owns the descriptor until a hand-off
 * succeeds (the addon closes its copy then: sendConnections) or it resets the connection.
 */
export class Connection {
  readonly record: Int32Array;
  readonly protocol: Protocol;
  /** process.hrtime.bigint() at accept, for the hand-off latency. */
  readonly acceptedAt: bigint;
  /** When a queued connection gives up (ms, monotonic). */
  deadline = 0;

  constructor(record: Int32Array, protocol: Protocol, acceptedAt: bigint) {
    this.record = record;
    this.protocol = protocol;
    this.acceptedAt = acceptedAt;
  }

  /** Copies record `i` out of an accept batch. */
  static fromBatch(batch: Int32Array, i: number, protocol: Protocol, now: bigint): Connection {
    return new Connection(recordIn(batch, i, ACCEPT_RECORD).slice(), protocol, now);
  }

  get fd(): number {
    return acceptFd(this.record);
  }

  /** Resets the client (RST) and lets go of the descriptor. */
  reset(): void {
    native.reset(this.fd);
  }
}
