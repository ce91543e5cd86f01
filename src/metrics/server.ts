import { lookup } from 'node:dns/promises';
import { createServer, type Server } from 'node:http';
import { isIP } from 'node:net';
import { DispatcherError } from '../errors.js';
import { native } from '../native/index.js';
import { type Metrics } from './metrics.js';

/** A Prometheus endpoint, and its listening socket's descriptor (what a hand-over passes on). */
export interface MetricsServer {
  server: Server;
  fd: number;
}

/**
 * Serves /metrics on `hostPort`, or on `fd`: an open listening socket (the previous daemon's, handed over).
 * The socket is opened natively so that the daemon knows its descriptor without reaching into Node's.
 */
export async function serveMetrics(metrics: Metrics, hostPort: string, fd?: number): Promise<MetricsServer> {
  const m = /^(.*):([0-9]{1,5})$/.exec(hostPort);
  if (m === null) throw new DispatcherError('ERR_CONFIG', `--metrics ${JSON.stringify(hostPort)} is not HOST:PORT`);
  const host = m[1]!.replace(/^\[(.*)\]$/, '$1');
  const address = isIP(host) === 0 ? (await lookup(host)).address : host;
  const socket = fd ?? native.listenInet(address, Number(m[2]), 64, 0);
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || req.url !== '/metrics') {
      res.writeHead(404).end('see /metrics\n');
      return;
    }
    metrics.registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
      (err: Error) => res.writeHead(500).end(err.message),
    );
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ fd: socket }, () => resolve());
    });
  } catch (err) {
    if (fd === undefined) native.close(socket);
    throw err;
  }
  return { server, fd: socket };
}
