import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { errnoName, native, WRITABLE } from '../native/index.js';
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
 * Gbit/s here, a sixth of direct). The connect is native too: no Node socket is made per connection.
 * Half-close is passed on; an error on either side ends both. The client is not read until the upstream
 * has accepted, and is reset (RST) if it never does.
 */
export function relay(conn: Connection, label: string, upstream: Upstream, options: RelayOptions): void {
  options.metrics.proxyOpened(label);
  const fail = (reason: 'connect' | 'timeout', detail: string): void => {
    options.metrics.upstreamFailed(label, reason);
    options.metrics.proxyClosed(label);
    options.log.warn({ label, upstream: upstream.address, reason }, `upstream failed: ${detail}`);
    conn.reset();
  };
  const to = target(upstream.address);
  if ('path' in to || isIP(to.host) !== 0) return start(conn, label, upstream, 'path' in to ? to.path : to.host, 'path' in to ? 0 : to.port, options, fail);
  // A host name: resolved per connection (the resolver caches, not this daemon).
  lookup(to.host).then(
    ({ address }) => start(conn, label, upstream, address, to.port, options, fail),
    (err: Error) => fail('connect', err.message),
  );
}

function start(conn: Connection, label: string, upstream: Upstream, address: string, port: number, options: RelayOptions, fail: (reason: 'connect' | 'timeout', detail: string) => void): void {
  let fd: number;
  try {
    fd = native.connectStream(address, port);
  } catch (err) {
    return fail('connect', (err as Error).message);
  }
  const r = conn.record;
  const timer = setTimeout(() => {
    native.unwatch(watch);
    native.close(fd);
    fail('timeout', `no connection within ${options.connectTimeoutMs} ms`);
  }, options.connectTimeoutMs);
  const watch = native.watch(fd, WRITABLE, () => {
    clearTimeout(timer);
    native.unwatch(watch);
    const error = native.socketError(fd);
    const header = proxyHeader(
      upstream.proxy_protocol,
      'tcp',
      { family: r[7] === 6 ? 6 : 4, words: r.subarray(8, 12), port: r[12]! },
      recordAddress(r, 7),
      { family: r[1] === 6 ? 6 : 4, words: r.subarray(2, 6), port: r[6]! },
      recordAddress(r, 1),
    );
    // A header is at most 52 bytes: a fresh connection's socket buffer takes it whole, or the upstream is gone.
    const sent = error !== 0 || header === undefined ? 0 : native.sendFd(fd, header, -1);
    if (error !== 0 || (header !== undefined && sent !== header.length)) {
      native.close(fd);
      return fail('connect', error !== 0 ? errnoName(-error) : 'the PROXY header could not be sent');
    }
    native.relay(conn.fd, fd, () => options.metrics.proxyClosed(label));
  });
}
