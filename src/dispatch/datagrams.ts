import { type Metrics } from '../metrics/metrics.js';
import { addressText, DATAGRAM, datagramLength, portAt, recordIn } from '../native/records.js';
import { DATAGRAM_SLOT } from '../native/index.js';
import { type OutgoingDatagram } from '../registry/registry.js';
import {
  addressedHeader,
  BINARY_DATAGRAM,
  BINARY_HEADER,
  BINARY_VERSION,
  encodeBinary,
  encodeWithPayload,
  MAX_MESSAGE,
} from '../services/protocol.js';
import { type Current } from './current.js';
import { RecordLookup } from './lookup.js';
import { type Route } from './route.js';
import { type UdpFlows } from './udp-flows.js';

/**
 * UDP, once per batch: each datagram by its destination (the address and port the client sent to) to the
 * next worker of its label, or its upstream, or dropped and counted. A datagram a worker received opens a
 * flow it may reply on (see udp-flows.ts).
 */
export class DatagramPath {
  readonly #current: Current;
  readonly #route: Route;
  readonly #flows: UdpFlows;
  readonly #metrics: Metrics;
  readonly #lookup = new RecordLookup();
  // One datagram at a time, encoded (as each worker's version needs, once per form) and sent synchronously.
  readonly #message = new DatagramMessage();

  constructor(current: Current, route: Route, flows: UdpFlows, metrics: Metrics) {
    this.#current = current;
    this.#route = route;
    this.#flows = flows;
    this.#metrics = metrics;
  }

  readonly onDatagrams = (_fd: number, data: Uint8Array, meta: Int32Array, count: number): void => {
    const table = this.#current.table;
    const now = Date.now();
    for (let i = 0; i < count; i++) {
      const r = recordIn(meta, i, DATAGRAM.SIZE);
      const label = this.#lookup.label(table, 'udp', r, DATAGRAM.DESTINATION);
      if (label === undefined) {
        this.#metrics.miss('udp');
        continue;
      }
      const length = datagramLength(r);
      if (length < 0) {
        this.#metrics.dropped(label, 'truncated');
        continue;
      }
      const payload = data.subarray(i * DATAGRAM_SLOT, i * DATAGRAM_SLOT + length);
      const result = this.#route.datagram(label, this.#message.of(label, r, payload), r, payload);
      if (result === 'sent') this.#flows.received(label, r, DATAGRAM.SOURCE, DATAGRAM.DESTINATION, now);
      if (result === 'sent' || result === 'relayed') this.#metrics.datagram(label);
      else this.#metrics.dropped(label, result);
    }
  };
}

/** The datagram being dispatched, as a version-3 worker takes it (binary header) or an older one (JSON). */
class DatagramMessage implements OutgoingDatagram {
  readonly #json = new Uint8Array(DATAGRAM_SLOT + MAX_MESSAGE);
  readonly #binary = new Uint8Array(DATAGRAM_SLOT + BINARY_HEADER);
  #label = '';
  #record: Int32Array = new Int32Array(DATAGRAM.SIZE);
  #payload: Uint8Array = new Uint8Array(0);
  #jsonLength = -1;
  #binaryLength = -1;

  of(label: string, record: Int32Array, payload: Uint8Array): this {
    this.#label = label;
    this.#record = record;
    this.#payload = payload;
    this.#jsonLength = this.#binaryLength = -1;
    return this;
  }

  encoded(version: number): Uint8Array {
    if (version >= BINARY_VERSION) {
      if (this.#binaryLength < 0)
        this.#binaryLength = encodeBinary(
          this.#binary,
          BINARY_DATAGRAM,
          this.#record,
          DATAGRAM.SOURCE,
          DATAGRAM.DESTINATION,
          this.#payload,
        ).length;
      return this.#binary.subarray(0, this.#binaryLength);
    }
    if (this.#jsonLength < 0) {
      const r = this.#record;
      const client = addressText(r, DATAGRAM.SOURCE);
      const local = addressText(r, DATAGRAM.DESTINATION);
      const header = addressedHeader(
        'datagram',
        this.#label,
        'udp',
        client,
        portAt(r, DATAGRAM.SOURCE),
        local,
        portAt(r, DATAGRAM.DESTINATION),
      );
      this.#jsonLength = encodeWithPayload(this.#json, header, this.#payload).length;
    }
    return this.#json.subarray(0, this.#jsonLength);
  }
}
