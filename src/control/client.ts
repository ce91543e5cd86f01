import { request } from 'node:http';
import { DispatcherError, type ErrorCode } from '../errors.js';
import { API_PREFIX, type ErrorBody } from './protocol.js';

/** A thin client of the control API: one method per call, errors as DispatcherError with the server's code. */
export class ControlClient {
  readonly socketPath: string;

  constructor(socketPath: string) {
    this.socketPath = socketPath;
  }

  call<T>(method: string, path: string, options: { query?: Record<string, string | number | undefined>; body?: string } = {}): Promise<T> {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(options.query ?? {})) if (v !== undefined) query.set(k, String(v));
    const qs = query.size > 0 ? `?${query}` : '';
    return new Promise<T>((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          method,
          path: `${API_PREFIX}${path}${qs}`,
          headers: options.body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(options.body) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let body: unknown;
            try {
              body = JSON.parse(text);
            } catch {
              return reject(new DispatcherError('ERR_REQUEST', `daemon answered ${res.statusCode} with a body that is not JSON`));
            }
            if (res.statusCode === 200) return resolve(body as T);
            const e = (body as ErrorBody).error;
            reject(new DispatcherError((e?.code ?? 'ERR_REQUEST') as ErrorCode, e?.message ?? `daemon answered ${res.statusCode}`));
          });
        },
      );
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
          reject(new DispatcherError('ERR_DAEMON_UNREACHABLE', `the daemon is not running (nothing answers on ${this.socketPath})`));
        } else if (err.code === 'EACCES') {
          reject(new DispatcherError('ERR_DAEMON_UNREACHABLE', `no permission to use ${this.socketPath} (run as root or a member of its group)`));
        } else {
          reject(new DispatcherError('ERR_DAEMON_UNREACHABLE', `cannot reach the daemon on ${this.socketPath}: ${err.message}`));
        }
      });
      req.end(options.body);
    });
  }
}
