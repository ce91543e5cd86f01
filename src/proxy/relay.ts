import { connect } from 'node:net';
import { native } from '../native/index.js';
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
 * both ways in the native layer with splice(2), so they never enter JavaScript (Node streams managed 6
 * Gbit/s here, a sixth of direct). Half-close is passed on; an error on either side ends both. The client
 * is not read until the upstream has accepted, and is reset (RST) if it never does.
 */
export function relay(conn: Connection, label: string, upstream: Upstream, options: RelayOptions): void {
  const r = conn.record;
  const up = connect({ ...target(upstream.address) });
  // Node must not read from the upstream: what it sends belongs to the splice relay.
  up.pause();
  options.metrics.proxyOpened(label);
  let settled = false;
  const fail = (reason: 'connect' | 'timeout', detail: string): void => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    options.metrics.upstreamFailed(label, reason);
    options.metrics.proxyClosed(label);
    options.log.warn({ label, upstream: upstream.address, reason }, `upstream failed: ${detail}`);
    up.destroy();
    conn.reset();
  };
  const timer = setTimeout(() => fail('timeout', `no connection within ${options.connectTimeoutMs} ms`), options.connectTimeoutMs);
  up.once('error', (err) => fail('connect', err.message));
  up.once('connect', () => {
    const header =
      proxyHeader(
        upstream.proxy_protocol,
        'tcp',
        { family: r[7] === 6 ? 6 : 4, words: r.subarray(8, 12), port: r[12]! },
        recordAddress(r, 7),
        { family: r[1] === 6 ? 6 : 4, words: r.subarray(2, 6), port: r[6]! },
        recordAddress(r, 1),
      ) ?? Buffer.alloc(0);
    up.write(header, (err) => {
      if (err) return fail('connect', err.message);
      // Take the upstream's descriptor from Node (a duplicate; Node closes its own) for the relay.
      const fd = (up as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1;
      const mine = fd < 0 ? -1 : native.dup(fd);
      if (mine < 0) return fail('connect', 'no descriptor for the upstream socket');
      settled = true;
      clearTimeout(timer);
      up.removeAllListeners('error');
      up.on('error', () => undefined);
      up.destroy();
      native.relay(conn.fd, mine, () => options.metrics.proxyClosed(label));
    });
  });
}
