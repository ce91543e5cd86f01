import { type Metrics } from '../metrics/metrics.js';
import { addressText, DATAGRAM, datagramLength, portAt, recordIn } from '../native/records.js';
import { DATAGRAM_SLOT } from '../native/index.js';
import { addressedHeader, encodeWithPayload, MAX_MESSAGE } from '../services/protocol.js';
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
  // One message at a time: header and payload, encoded and sent synchronously.
  readonly #out = new Uint8Array(DATAGRAM_SLOT + MAX_MESSAGE);

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
      const client = addressText(r, DATAGRAM.SOURCE);
      const local = addressText(r, DATAGRAM.DESTINATION);
      const header = addressedHeader('datagram', label, 'udp', client, portAt(r, DATAGRAM.SOURCE), local, portAt(r, DATAGRAM.DESTINATION));
      const message = encodeWithPayload(this.#out, header, payload);
      const result = this.#route.datagram(label, message, r, payload);
      if (result === 'sent') this.#flows.received(label, r, DATAGRAM.SOURCE, DATAGRAM.DESTINATION, now);
      if (result === 'sent' || result === 'relayed') this.#metrics.datagram(label);
      else this.#metrics.dropped(label, result);
    }
  };
}
