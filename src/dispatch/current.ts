import { type Table } from '../table/table.js';
import { type Upstream } from '../proxy/upstream.js';

/** What the data path reads of the daemon's state: the table snapshot and the upstreams, as of now. */
export interface Current {
  readonly table: Table;
  upstream(label: string): Upstream | undefined;
}
