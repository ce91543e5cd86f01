import { connect, Socket } from 'node:net';
import { type Logger } from 'pino';
import { type Connection, recordAddress } from '../handoff/connection.js';
import { type Metrics } from '../metrics/metrics.js';
import { proxyHeader } from './proxy-protocol.js';
import { target, type Upstream } from './upstream.js';

export interface RelayOptions {
  /** How long the upstream may take to accept (ms) before the client is reset. */
  connectTimeoutMs: number;
  metrics: Metrics;
  log: Logger;
}

/**
 * Proxy mode for one connection: connect to the label's upstream, send the PROXY header, then copy bytes
 * both ways. Node's pipe gives backpressure (a slow side pauses the other) and half-close (one side's FIN is
 * passed on, the other direction keeps flowing); an error on either side destroys both. The client is not
 * read until the upstream has accepted, and is reset (RST) if it never does.
 */
export function relay(conn: Connection, label: string, upstream: Upstream, options: RelayOptions): void {
  const r = conn.record;
  const client = new Socket({ fd: conn.fd, allowHalfOpen: true, readable: true, writable: true });
  client.pause();
  const up = connect({ ...target(upstream.address), allowHalfOpen: true });
  let connected = false;
  options.metrics.proxyOpened(label);
  const fail = (reason: 'connect' | 'timeout', detail: string): void => {
    options.metrics.upstreamFailed(label, reason);
    options.log.warn({ label, upstream: upstream.address, reason }, `upstream failed: ${detail}`);
    up.destroy();
    client.resetAndDestroy();
  };
  const timer = setTimeout(() => fail('timeout', `no connection within ${options.connectTimeoutMs} ms`), options.connectTimeoutMs);
  up.once('connect', () => {
    connected = true;
    clearTimeout(timer);
    up.setNoDelay(true);
    const header = proxyHeader(
      upstream.proxy_protocol,
      'tcp',
      { family: r[7] === 6 ? 6 : 4, words: r.subarray(8, 12), port: r[12]! },
      recordAddress(r, 7),
      { family: r[1] === 6 ? 6 : 4, words: r.subarray(2, 6), port: r[6]! },
      recordAddress(r, 1),
    );
    if (header !== undefined) up.write(header);
    client.pipe(up);
    up.pipe(client);
    client.resume();
  });
  up.on('error', (err) => {
    if (!connected) {
      clearTimeout(timer);
      return fail('connect', err.message);
    }
    client.destroy();
  });
  client.on('error', () => up.destroy());
  // A side that is fully closed (both directions, or by error) takes the other with it.
  client.once('close', () => {
    up.destroy();
    options.metrics.proxyClosed(label);
  });
  up.once('close', () => {
    if (connected) client.destroy();
  });
}
