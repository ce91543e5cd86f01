import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { errnoName, native, RELAY_HEADER_UNSENT, RELAY_TIMED_OUT } from '../native/index.js';
import { type Logger } from 'pino';
import { type Connection } from '../handoff/connection.js';
import { type Metrics, type UpstreamFailure } from '../metrics/metrics.js';
import { ACCEPT, addressAt, addressText } from '../native/records.js';
import { proxyHeader } from './proxy-protocol.js';
import { target, type Upstream } from './upstream.js';

// Relays open at once, connecting ones included; past it a new proxied connection is reset (and counted
// as proxy_full). Each holds six descriptors (client, upstream, two pipes) and up to 128 KiB of pipe
// buffers: 2048 are 12,288 descriptors (and 512 in the relay's pipe pool) and at most 256 MiB, which
// leaves a daemon with the usual 65,536 descriptors room to keep accepting and handing off while proxy
// mode is saturated.
export const MAX_RELAYS = 2048;
let relays = 0;

export interface RelayOptions {
  /** How long the upstream may take to accept (ms) before the client is reset. */
  connectTimeoutMs: number;
  metrics: Metrics;
  log: Logger;
  /** MAX_RELAYS unless given. */
  maxRelays?: number;
}

/**
 * Proxy mode for one connection: connect to the label's upstream, send the PROXY header, then copy bytes
 * both ways in the native layer with splice(2), so they never enter JavaScript (Node streams managed 6
 * Gbit/s here, a sixth of direct). The connect is native too, and the relay waits for it: no Node socket,
 * watcher or timer is made per connection.
 * Half-close is passed on; an error on either side ends both. The client is not read until the upstream
 * has accepted, and is reset (RST) if it never does.
 */
export function relay(conn: Connection, label: string, upstream: Upstream, options: RelayOptions): void {
  if (relays >= (options.maxRelays ?? MAX_RELAYS)) {
    options.metrics.reset('tcp', label, 'proxy_full');
    return conn.reset();
  }
  relays++;
  options.metrics.proxyOpened(label);
  const closed = (): void => {
    relays--;
    options.metrics.proxyClosed(label);
  };
  const fail: Fail = (reason, detail) => {
    options.metrics.upstreamFailed(label, reason);
    closed();
    options.log.warn({ label, upstream: upstream.address, reason }, `upstream failed: ${detail}`);
    conn.reset();
  };
  const to = dialled(upstream);
  if ('address' in to) return start(conn, upstream, to.address, to.port, options, fail, closed);
  // A host name: resolved per connection (the resolver caches, not this daemon).
  lookup(to.host).then(
    ({ address }) => start(conn, upstream, address, to.port, options, fail, closed),
    (err: Error) => fail('connect', err.message),
  );
}

/** What connectStream takes (port 0: a Unix socket path), or a host name to resolve first. */
type Dial = { address: string; port: number } | { host: string; port: number };

// Per upstream as the store holds it, not per connection: the address is parsed once.
const dials = new WeakMap<Upstream, Dial>();

function dialled(upstream: Upstream): Dial {
  let dial = dials.get(upstream);
  if (dial === undefined) {
    const to = target(upstream.address);
    dial = 'path' in to ? { address: to.path, port: 0 } : isIP(to.host) !== 0 ? { address: to.host, port: to.port } : to;
    dials.set(upstream, dial);
  }
  return dial;
}

type Fail = (reason: UpstreamFailure, detail: string) => void;

function start(
  conn: Connection,
  upstream: Upstream,
  address: string,
  port: number,
  options: RelayOptions,
  fail: Fail,
  closed: () => void,
): void {
  let fd: number;
  try {
    fd = native.connectStream(address, port);
  } catch (err) {
    return fail('connect', (err as Error).message);
  }
  const r = conn.record;
  // The addresses only for a header: their text costs a string each.
  const header =
    upstream.proxy_protocol === 'none'
      ? NO_HEADER
      : (proxyHeader(
          upstream.proxy_protocol,
          'tcp',
          addressAt(r, ACCEPT.PEER),
          addressText(r, ACCEPT.PEER),
          addressAt(r, ACCEPT.LOCAL),
          addressText(r, ACCEPT.LOCAL),
        ) ?? NO_HEADER);
  // The native relay waits for the connect in its own epoll set, under one timer for every connecting relay.
  const rc = native.relay(
    conn.fd,
    fd,
    (_atob, _btoa, status) => {
      if (status === RELAY_TIMED_OUT) fail('timeout', `no connection within ${options.connectTimeoutMs} ms`);
      else if (status === RELAY_HEADER_UNSENT) fail('connect', 'the PROXY header could not be sent');
      else if (status < 0) fail('connect', errnoName(status));
      else closed();
    },
    options.connectTimeoutMs,
    header,
  );
  // -EMFILE (no descriptors for the pipes) leaves both sockets ours.
  if (rc < 0) {
    native.close(fd);
    fail('relay', errnoName(rc));
  }
}

const NO_HEADER = new Uint8Array(0);
