import { type Logger } from 'pino';
import { type Connection } from '../handoff/connection.js';
import { type Metrics } from '../metrics/metrics.js';
import { relay } from '../proxy/relay.js';
import { type UdpRelay } from '../proxy/udp-relay.js';
import { upstreamProtocol } from '../proxy/upstream.js';
import { type Endpoint } from '../services/protocol.js';
import { addressAt, addressText, DATAGRAM, type RecordAddress } from '../native/records.js';
import { type OutgoingDatagram, type Registry } from '../registry/registry.js';
import { type Current } from './current.js';

export interface RouteOptions {
  current: Current;
  registry: Registry;
  udpRelay: UdpRelay;
  metrics: Metrics;
  log: Logger;
  /** How long an upstream may take to accept a proxied connection (ms). */
  upstreamTimeoutMs: number;
}

/**
 * Where a label's traffic goes once looked up: its workers, or its upstream (proxy mode) while it has no
 * worker registered. The one proxy-mode decision, for TCP and UDP alike; busy workers mean the queue,
 * never the upstream.
 */
export class Route {
  readonly #o: RouteOptions;

  constructor(options: RouteOptions) {
    this.#o = options;
  }

  connection(label: string, conn: Connection): void {
    const o = this.#o;
    const upstream = o.registry.has(label) ? undefined : o.current.upstream(label);
    if (upstream === undefined || conn.protocol !== 'tcp' || upstreamProtocol(upstream) !== 'tcp') return o.registry.dispatch(label, conn);
    relay(conn, label, upstream, { connectTimeoutMs: o.upstreamTimeoutMs, metrics: o.metrics, log: o.log });
  }

  /** A datagram (its `record`): `message` for a worker, `payload` alone for an upstream. Where it went. */
  datagram(label: string, message: OutgoingDatagram, record: Int32Array, payload: Uint8Array): 'sent' | 'relayed' | 'no_worker' | 'full' {
    const o = this.#o;
    const result = o.registry.datagram(label, message);
    const upstream = result === 'no_worker' ? o.current.upstream(label) : undefined;
    if (upstream === undefined || upstreamProtocol(upstream) !== 'udp') return result;
    // Refused past the relay's flow cap: dropped like a datagram for a full worker.
    return o.udpRelay.send(upstream, endpoint(record, DATAGRAM.SOURCE), endpoint(record, DATAGRAM.DESTINATION), payload)
      ? 'relayed'
      : 'full';
  }
}

/** The address block at `at` as an endpoint, with its words for the PROXY header. */
function endpoint(record: Int32Array, at: number): Endpoint & RecordAddress {
  return { ...addressAt(record, at), address: addressText(record, at) };
}
