import { request } from 'node:http';
import { DispatcherError, type ErrorCode } from '../errors.js';
import { type Protocol } from '../bindings/binding.js';
import {
  type AdoptRequest,
  type AdoptResponse,
  API_PREFIX,
  type AddBindingResponse,
  type BindingRequest,
  type BindingsQuery,
  type Endpoint,
  type Endpoints,
  type ErrorBody,
  type FleetResponse,
  type ListBindingsResponse,
  type LookupResponse,
  type RemoveBindingResponse,
  type ReleaseRequest,
  type ReleaseResponse,
  type RemoveUpstreamResponse,
  type ReplaceResponse,
  type ServicesResponse,
  type SetUpstreamResponse,
  type StatusResponse,
  type UpstreamRequest,
  type UpstreamsResponse,
  type WriteQuery,
} from './protocol.js';

/** A thin client of the control API: one method per endpoint, errors as DispatcherError with the server's code. */
export class ControlClient {
  readonly socketPath: string;

  constructor(socketPath: string) {
    this.socketPath = socketPath;
  }

  listBindings(filter: BindingsQuery = {}): Promise<ListBindingsResponse> {
    return this.#request('GET /bindings', { query: filter });
  }

  /** Every binding as a bindings file: what `replaceBindings` takes back. */
  exportBindings(): Promise<ListBindingsResponse> {
    return this.#request('GET /bindings', {});
  }

  addBinding(binding: BindingRequest, w: WriteQuery = {}): Promise<AddBindingResponse> {
    return this.#request('POST /bindings', { query: w, body: binding });
  }

  /** The label must be the bound one. */
  removeBinding(binding: BindingRequest, w: WriteQuery = {}): Promise<RemoveBindingResponse> {
    return this.#request('DELETE /bindings', { query: w, body: binding });
  }

  /** Replaces every binding with those of a bindings file's `text`, atomically (with `dryRun`, only says what would change). */
  replaceBindings(text: string, options: { dryRun?: boolean } & WriteQuery = {}): Promise<ReplaceResponse> {
    const { dryRun, ...w } = options;
    return this.#request('PUT /bindings', { query: { ...w, dry_run: dryRun ? 'true' : undefined }, body: text });
  }

  /** Rejects with ERR_NO_MATCH when no binding receives it. */
  lookup(protocol: Protocol, address: string, port: number): Promise<LookupResponse> {
    return this.#request('GET /lookup', { query: { protocol, address, port } });
  }

  status(): Promise<StatusResponse> {
    return this.#request('GET /status', {});
  }

  services(): Promise<ServicesResponse> {
    return this.#request('GET /services', {});
  }

  upstreams(): Promise<UpstreamsResponse> {
    return this.#request('GET /upstreams', {});
  }

  setUpstream(upstream: UpstreamRequest, w: WriteQuery = {}): Promise<SetUpstreamResponse> {
    return this.#request('POST /upstreams', { query: w, body: upstream });
  }

  removeUpstream(label: string, w: WriteQuery = {}): Promise<RemoveUpstreamResponse> {
    return this.#request('DELETE /upstreams', { query: w, body: { label } });
  }

  /** With a store: every host of the fleet and the revision it serves. */
  fleet(): Promise<FleetResponse> {
    return this.#request('GET /fleet', {});
  }

  /** Kernel mode: steer `label` to a socket of process `pid` (the caller must be allowed to trace it). */
  adopt(request: AdoptRequest): Promise<AdoptResponse> {
    return this.#request('POST /adopted', { body: request });
  }

  release(request: ReleaseRequest): Promise<ReleaseResponse> {
    return this.#request('DELETE /adopted', { body: request });
  }

  #request<E extends Endpoint>(
    endpoint: E,
    options: { query?: Endpoints[E]['query']; body?: Endpoints[E]['body'] },
  ): Promise<Endpoints[E]['response']> {
    const [method, path] = endpoint.split(' ') as [string, string];
    const body = options.body;
    return this.call(method, path, {
      query: options.query,
      body: body === undefined || typeof body === 'string' ? body : JSON.stringify(body),
    });
  }

  /** Any request: for what the typed methods do not cover (a test's malformed one, say). */
  call<T>(method: string, path: string, options: { query?: Record<string, string | number | undefined>; body?: string } = {}): Promise<T> {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(options.query ?? {})) if (v !== undefined) query.set(k, String(v));
    const qs = query.size > 0 ? `?${query}` : '';
    return new Promise<T>((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          // A connection of its own: a pooled keep-alive one may have been closed by the daemon (after 5 s
          // idle) while this process was too busy to see it, and a body written into it fails with EPIPE.
          agent: false,
          method,
          path: `${API_PREFIX}${path}${qs}`,
          headers:
            options.body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(options.body) },
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
              return reject(
                new DispatcherError(
                  'ERR_REQUEST',
                  `${this.socketPath} answered ${res.statusCode} with a body that is not JSON: is it the dispatcher's control socket? (--control, DISPATCHER_CONTROL)`,
                ),
              );
            }
            if (res.statusCode === 200) return resolve(body as T);
            const e = (body as ErrorBody).error;
            reject(new DispatcherError((e?.code ?? 'ERR_REQUEST') as ErrorCode, e?.message ?? `daemon answered ${res.statusCode}`));
          });
        },
      );
      req.on('error', (err: NodeJS.ErrnoException) => reject(unreachable(this.socketPath, err)));
      req.end(options.body);
    });
  }
}

/** Why the daemon could not be reached, and what to do about it. */
function unreachable(path: string, err: NodeJS.ErrnoException): DispatcherError {
  const elsewhere = "point --control (or DISPATCHER_CONTROL) at the daemon's control socket";
  switch (err.code) {
    // ECONNREFUSED: a socket file that nobody answers on, as a killed daemon leaves.
    case 'ENOENT':
    case 'ECONNREFUSED':
      return new DispatcherError(
        'ERR_DAEMON_UNREACHABLE',
        `the daemon is not running (nothing answers on ${path}): start it with \`dispatcher daemon\`, or ${elsewhere}`,
      );
    case 'EACCES':
    case 'EPERM':
      return new DispatcherError(
        'ERR_DAEMON_UNREACHABLE',
        `no permission to use ${path}: run as root or as a member of the socket's group (\`ls -l ${path}\` shows it)`,
      );
    default:
      return new DispatcherError('ERR_DAEMON_UNREACHABLE', `cannot reach the daemon on ${path} (${err.message}): ${elsewhere}`);
  }
}
