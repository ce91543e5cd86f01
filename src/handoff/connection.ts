import { formatAddress } from '../bindings/address.js';
import { type Protocol } from '../bindings/binding.js';
import { ACCEPT_RECORD, native } from '../native/index.js';
import { encodeConnection, MAX_MESSAGE } from '../services/protocol.js';

/**
 * An accepted connection on its way to a worker: the addon's accept record (descriptor, local and peer
 * address as words) and when it was accepted. The daemon owns the descriptor until a hand-off succeeds
 * or it resets the connection.
 *
 *   record: [fd, local family, local w0..w3, local port, peer family, peer w0..w3, peer port]
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
    return new Connection(batch.slice(i * ACCEPT_RECORD, (i + 1) * ACCEPT_RECORD), protocol, now);
  }

  get fd(): number {
    return this.record[0]!;
  }

  get localPort(): number {
    return this.record[6]!;
  }

  /** The header a worker receives with the descriptor, in `out`'s memory. */
  header(out: Uint8Array, label: string): Uint8Array {
    const r = this.record;
    return encodeConnection(out, label, this.protocol, recordAddress(r, 7), r[12]!, recordAddress(r, 1), r[6]!);
  }

  /** Closes the daemon's copy after a hand-off: the worker's copy keeps the connection. */
  release(): void {
    native.close(this.fd);
  }

  /** Resets the client (RST) and lets go of the descriptor. */
  reset(): void {
    native.reset(this.fd);
  }
}

/** The text of an address in an accept or datagram record: [family, w0..w3] at `at`. */
export function recordAddress(r: Int32Array, at: number): string {
  const family = r[at] === 6 ? 6 : 4;
  return formatAddress(family, [r[at + 1]! >>> 0, r[at + 2]! >>> 0, r[at + 3]! >>> 0, r[at + 4]! >>> 0]);
}

/** A buffer for one header at a time: headers are encoded and sent synchronously. */
export const headerBuffer = new Uint8Array(MAX_MESSAGE);
