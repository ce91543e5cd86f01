import { type Protocol } from '../bindings/binding.js';
import { Connection } from '../handoff/connection.js';
import { type Metrics } from '../metrics/metrics.js';
import { native } from '../native/index.js';
import { ACCEPT, acceptFd } from '../native/records.js';
import { type Current } from './current.js';
import { RecordLookup } from './lookup.js';
import { type Route } from './route.js';

/**
 * The accept path, once per batch of accepted connections:
 *
 *   listener batch ─> table.lookupLabel(local address, port) ─ miss ─> reset, count
 *                        └─> route: worker (SCM_RIGHTS) | queue | upstream (proxy mode) | reset
 *
 * One table snapshot serves the batch, so every connection goes where the table said when it was accepted.
 */
export class AcceptPath {
  readonly #current: Current;
  readonly #route: Route;
  readonly #metrics: Metrics;
  readonly #lookup = new RecordLookup();

  constructor(current: Current, route: Route, metrics: Metrics) {
    this.#current = current;
    this.#route = route;
    this.#metrics = metrics;
  }

  readonly onAccepted = (batch: Int32Array, count: number, protocol: Protocol): void => {
    const table = this.#current.table;
    const now = process.hrtime.bigint();
    for (let i = 0; i < count; i++) {
      // The local address: the one the client dialled.
      const label = this.#lookup.label(table, protocol, batch, i * ACCEPT.SIZE + ACCEPT.LOCAL);
      if (label === undefined) {
        native.reset(acceptFd(batch, i));
        this.#metrics.miss(protocol);
        continue;
      }
      this.#metrics.lookup(protocol, label);
      this.#route.connection(label, Connection.fromBatch(batch, i, protocol, now));
    }
  };
}
