import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { type Binding, parseBinding, parseLabel, parsePortText, parseProtocol, type Protocol } from '../bindings/binding.js';
import { parseBindingsText } from '../bindings/file.js';
import { type Filter } from '../bindings/order.js';
import { asError, DispatcherError, type ErrorCode } from '../errors.js';
import { native } from '../native/index.js';
import { type Diff } from '../table/table.js';
import { type WriteOptions } from '../fleet/member.js';
import { checkHost, parseRevision } from '../store/etcd-layout.js';
import { parseUpstream, type Upstream } from '../proxy/upstream.js';
import {
  type AdoptedJSON,
  API_PREFIX,
  type Endpoint,
  type Endpoints,
  type ErrorBody,
  type FleetResponse,
  type ServicesResponse,
  type StatusResponse,
} from './protocol.js';

/** With a store, each change says its revision. */
type Revised<T> = T & { revision?: number };

/** What the control API drives; the daemon implements it. `w`: where a change goes (see WriteQuery). */
export interface ControlHandlers {
  list(filter: Filter): Binding[];
  /** `warnings`: e.g. the binding's port could not be listened on (it is retried). */
  add(binding: Binding, w: WriteOptions): Promise<Revised<{ binding: Binding; replaced: Binding | undefined; warnings: string[] }>>;
  remove(binding: Binding, w: WriteOptions): Promise<Revised<{ removed: Binding }>>;
  replace(bindings: Binding[], dryRun: boolean, w: WriteOptions): Promise<Revised<Diff & { warnings: string[] }>>;
  lookup(protocol: 'tcp' | 'udp', address: string, port: number): Binding | undefined;
  status(): StatusResponse | Promise<StatusResponse>;
  services(): ServicesResponse;
  upstreams(): Upstream[];
  setUpstream(upstream: Upstream, w: WriteOptions): Promise<Revised<{ upstream: Upstream; replaced: Upstream | undefined }>>;
  removeUpstream(label: string, w: WriteOptions): Promise<Revised<{ removed: Upstream }>>;
  /** With a store: the fleet as the store shows it. */
  fleet(): Promise<FleetResponse>;
  /** Kernel mode: takes a server's socket for a label; `caller` is the control socket's peer. */
  adopt(request: ParsedAdopt, caller: { uid: number; gid: number }): Promise<AdoptedJSON>;
  release(label: string, protocol: Protocol, family: 4 | 6): Promise<boolean>;
}

/** An adopt request, checked: `at` is the socket asked for, if the server has several. */
export interface ParsedAdopt {
  label: string;
  pid: number;
  protocol: Protocol;
  at: { address: string; port: number } | undefined;
}

/**
 * A value JSON.stringify turns into a `T`: `T` itself or, at any depth, an object whose toJSON() gives that
 * part (a Binding for its BindingJSON), so the server answers with what it holds, not a copy.
 */
type Encodes<T> = T extends (infer U)[]
  ? readonly Encodes<U>[]
  : T extends object
    ? { [K in keyof T]: Encodes<T[K]> } | { toJSON(): T }
    : T;

export interface ControlServerOptions {
  /** Largest request body accepted; a 1M-binding file is about 70 MiB. */
  maxBodyBytes?: number;
  /**
   * Body bytes all requests together may hold, each from its first byte until its reply: one largest body
   * and room for small requests beside it. A request that would pass it is refused with 503, so a client
   * cannot make the daemon hold more than this (about twice over, text and buffer) however many it opens.
   */
  maxBufferedBytes?: number;
  /**
   * Called once the reply to a request with a body of LARGE_BODY bytes or more is sent (or its client gone):
   * from then on what the request left (its text, the parsed bindings, the reply) is garbage.
   */
  afterLargeBody?: () => void;
}

/** A bindings file of about 60,000 bindings. */
const LARGE_BODY = 4 * 1024 * 1024;

/** A body that is one JSON object (a binding, an upstream) is small: a bigger one is refused early. */
const OBJECT_BODY_MAX = 64 * 1024;

const STATUS_BY_CODE: Partial<Record<ErrorCode, number>> = {
  ERR_NO_BINDING: 404,
  ERR_NO_MATCH: 404,
  ERR_NO_UPSTREAM: 404,
  ERR_NOT_FOUND: 404,
  ERR_LABEL_MISMATCH: 409,
  ERR_STATE: 500,
  ERR_BUSY: 503,
  ERR_NOT_ALLOWED: 403,
  ERR_MODE: 409,
  ERR_CONFLICT: 409,
  ERR_NO_STORE: 409,
  ERR_STORE: 503,
};

class HttpError extends DispatcherError {
  constructor(
    readonly status: number,
    code: ErrorCode,
    message: string,
  ) {
    super(code, message);
  }
}

/** The body bytes held by requests in flight, against one limit. */
class BodyBudget {
  readonly #limit: number;
  #held = 0;

  constructor(limit: number) {
    this.#limit = limit;
  }

  /** A request's share: it grows as the body arrives and is given back when the reply is done. */
  open(res: ServerResponse): (total: number) => void {
    let mine = 0;
    res.once('close', () => {
      this.#held -= mine;
      mine = 0;
    });
    return (total) => {
      if (total <= mine) return;
      if (this.#held + total - mine > this.#limit) {
        throw new HttpError(
          503,
          'ERR_BUSY',
          `request bodies in progress hold ${this.#held} of the ${this.#limit} bytes the daemon buffers at once; retry when they are done`,
        );
      }
      this.#held += total - mine;
      mine = total;
    };
  }
}

/** What reading one request's body may use. */
interface BodyLimits {
  readonly max: number;
  /** Holds `total` body bytes for this request (throws ERR_BUSY when the daemon holds too many). */
  readonly hold: (total: number) => void;
}

export function createControlServer(handlers: ControlHandlers, options: ControlServerOptions = {}): Server {
  const maxBody = options.maxBodyBytes ?? 128 * 1024 * 1024;
  const budget = new BodyBudget(options.maxBufferedBytes ?? maxBody + 64 * 1024 * 1024);
  const server = createServer((req, res) => {
    const hold = budget.open(res);
    let bodyBytes = 0;
    const { afterLargeBody } = options;
    if (afterLargeBody !== undefined) res.once('close', () => bodyBytes >= LARGE_BODY && afterLargeBody());
    const limits: BodyLimits = {
      max: maxBody,
      hold: (total) => {
        hold(total);
        bodyBytes = total;
      },
    };
    route(handlers, req, limits).then(
      (body) => reply(res, 200, body),
      (err: unknown) => {
        if (err instanceof HttpError) return reply(res, err.status, errorBody(err.code, err.message));
        if (err instanceof DispatcherError) return reply(res, STATUS_BY_CODE[err.code] ?? 400, errorBody(err.code, err.message));
        reply(res, 500, errorBody('ERR_INTERNAL', (err as Error).message));
      },
    );
  });
  // A slow or stuck client must not hold a connection forever.
  server.requestTimeout = 60_000;
  server.headersTimeout = 10_000;
  return server;
}

/** One request as a route sees it. */
interface RouteRequest {
  readonly req: IncomingMessage;
  readonly query: URLSearchParams;
  readonly body: BodyLimits;
}

/** Every endpoint's handling: each must answer with its endpoint's response body (a Binding stands for its JSON). */
type Routes = {
  [E in Endpoint]: (h: ControlHandlers, r: RouteRequest) => Encodes<Endpoints[E]['response']> | Promise<Encodes<Endpoints[E]['response']>>;
};

const ROUTES: Routes = {
  'GET /bindings': (h, { query: q }) => ({
    bindings: h.list({
      label: q.get('label') ?? undefined,
      protocol: q.has('protocol') ? parseProtocol(q.get('protocol')) : undefined,
      prefix: q.get('prefix') ?? undefined,
      port: q.has('port') ? parsePortText(q.get('port')) : undefined,
    }),
  }),
  'POST /bindings': async (h, { req, query, body }) => {
    const w = writeOptions(query);
    const added = await h.add(await readBinding(req, body), w);
    return { ...added, replaced: added.replaced ?? null };
  },
  'DELETE /bindings': async (h, { req, query, body }) => {
    const w = writeOptions(query);
    return h.remove(await readBinding(req, body), w);
  },
  'PUT /bindings': async (h, { req, query, body }) => {
    const w = writeOptions(query);
    const bindings = parseBindingsText(await readBody(req, body), 'request body');
    const dryRun = query.get('dry_run') === 'true';
    return { dry_run: dryRun, ...(await h.replace(bindings, dryRun, w)) };
  },
  'GET /lookup': (h, { query: q }) => {
    const protocol = parseProtocol(q.get('protocol') ?? undefined);
    const port = parsePortText(q.get('port') ?? undefined);
    const address = q.get('address') ?? '';
    const binding = h.lookup(protocol, address, port);
    if (binding === undefined) throw new DispatcherError('ERR_NO_MATCH', `no binding receives ${protocol} ${address} port ${port}`);
    return { label: binding.label, binding };
  },
  'GET /status': (h) => h.status(),
  'GET /services': (h) => h.services(),
  'GET /upstreams': (h) => ({ upstreams: h.upstreams() }),
  'POST /upstreams': async (h, { req, query, body }) => {
    const w = writeOptions(query);
    const set = await h.setUpstream(parseUpstream(await readObject(req, body, ['label', 'address', 'proxy_protocol'])), w);
    return { ...set, replaced: set.replaced ?? null };
  },
  'DELETE /upstreams': async (h, { req, query, body }) => {
    const w = writeOptions(query);
    return h.removeUpstream(parseLabel((await readObject(req, body, ['label']))['label']), w);
  },
  'GET /fleet': (h) => h.fleet(),
  'POST /adopted': async (h, { req, body }) => {
    const f = await readObject(req, body, ['label', 'pid', 'protocol', 'address']);
    const pid = f['pid'];
    if (typeof pid !== 'number' || !Number.isInteger(pid) || pid < 1)
      throw new DispatcherError('ERR_REQUEST', '"pid" must be a process id');
    const at = f['address'] === undefined ? undefined : parseSocketAddress(f['address']);
    const request = { label: parseLabel(f['label']), pid, protocol: parseProtocol(f['protocol'] ?? 'tcp'), at };
    return { adopted: await h.adopt(request, peerOf(req)) };
  },
  'DELETE /adopted': async (h, { req, body }) => {
    const f = await readObject(req, body, ['label', 'protocol', 'family']);
    const family = f['family'];
    if (family !== 4 && family !== 6) throw new DispatcherError('ERR_REQUEST', '"family" must be 4 or 6');
    return { released: await h.release(parseLabel(f['label']), parseProtocol(f['protocol']), family) };
  },
};

/** A change's `host` and `if_revision` (checked before the body is read: bad input changes nothing). */
function writeOptions(query: URLSearchParams): WriteOptions {
  const host = query.get('host');
  const ifRevision = query.get('if_revision');
  return {
    host: host === null ? undefined : checkHost(host),
    ifRevision: ifRevision === null ? undefined : parseRevision(ifRevision, 'if_revision', 'ERR_REQUEST'),
  };
}

/** `198.51.100.1:80` or `[2001:db8::1]:80`: which of a server's sockets. */
function parseSocketAddress(value: unknown): { address: string; port: number } {
  const m = typeof value === 'string' ? /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):(\d{1,5})$/.exec(value) : null;
  const port = Number(m?.[3]);
  if (m === null || port > 65535 || isIP(m[1] ?? m[2] ?? '') === 0) {
    throw new DispatcherError('ERR_ADDRESS', `${JSON.stringify(value)} is not ADDRESS:PORT (IPv6 in brackets: [::1]:80)`);
  }
  return { address: (m[1] ?? m[2])!, port };
}

/** Who sent a request: the control socket's peer (SO_PEERCRED of the connection). */
function peerOf(req: IncomingMessage): { uid: number; gid: number } {
  const fd = (req.socket as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1;
  const cred = fd >= 0 ? native.peerCred(fd) : -1;
  if (typeof cred === 'number') throw new DispatcherError('ERR_REQUEST', 'cannot tell who sent the request (no peer credentials)');
  return { uid: cred[1], gid: cred[2] };
}

const PATHS = new Set(Object.keys(ROUTES).map((endpoint) => endpoint.slice(endpoint.indexOf(' ') + 1)));

async function route(h: ControlHandlers, req: IncomingMessage, body: BodyLimits): Promise<unknown> {
  const url = new URL(req.url ?? '/', 'http://dispatcher');
  const path = url.pathname.startsWith(API_PREFIX) ? url.pathname.slice(API_PREFIX.length) : '';
  const endpoint = `${req.method} ${path}`;
  if (Object.hasOwn(ROUTES, endpoint)) return ROUTES[endpoint as Endpoint](h, { req, query: url.searchParams, body });
  if (PATHS.has(path)) throw new HttpError(405, 'ERR_REQUEST', `${req.method} is not allowed on ${API_PREFIX}${path}`);
  throw new HttpError(404, 'ERR_NOT_FOUND', `no endpoint ${req.method} ${url.pathname} (see docs/control-api.md)`);
}

/**
 * The body as text. A body over the limit, or one the daemon has no room for, is refused as soon as that is
 * known (from Content-Length, before a byte is read); the rest is read and dropped, not kept. Not closed:
 * a client still writing (Node's among them) would see EPIPE instead of the error (requestTimeout bounds it).
 */
function readBody(req: IncomingMessage, body: BodyLimits, max = body.max): Promise<string> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > max) {
    req.resume();
    return Promise.reject(new HttpError(413, 'ERR_REQUEST', `request body of ${declared} bytes is over the limit of ${max}`));
  }
  try {
    body.hold(declared);
  } catch (err) {
    req.resume();
    return Promise.reject(asError(err));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      try {
        if (size > max) throw new HttpError(413, 'ERR_REQUEST', `request body is over the limit of ${max} bytes`);
        body.hold(size);
      } catch (err) {
        req.off('data', onData);
        req.off('end', onEnd);
        req.resume();
        chunks.length = 0;
        reject(asError(err));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      const all = Buffer.concat(chunks, size);
      // The listeners (and so `chunks`) live as long as the request, past the parse and the reply: a 1M
      // load's 80 MB of chunks would be held through all of it.
      chunks.length = 0;
      resolve(all.toString('utf8'));
    };
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', reject);
    // A client gone before its body ended: nothing will answer it, but the promise must settle.
    req.once('close', () => reject(new HttpError(400, 'ERR_REQUEST', 'the request body ended early')));
  });
}

/** A JSON object body with only `fields` (the error names the one that is not). */
async function readObject(req: IncomingMessage, body: BodyLimits, fields: readonly string[]): Promise<Record<string, unknown>> {
  const text = await readBody(req, body, Math.min(body.max, OBJECT_BODY_MAX));
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new DispatcherError('ERR_REQUEST', `request body is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new DispatcherError('ERR_REQUEST', `request body is not a JSON object {${fields.map((f) => `"${f}"`).join(', ')}}`);
  }
  for (const k of Object.keys(value)) {
    if (!fields.includes(k)) throw new DispatcherError('ERR_REQUEST', `unknown field "${k}" (allowed: ${fields.join(', ')})`);
  }
  return value as Record<string, unknown>;
}

const BINDING_FIELDS = ['label', 'protocol', 'prefix', 'port'];

/** A binding body; `port` defaults to 0. */
async function readBinding(req: IncomingMessage, body: BodyLimits): Promise<Binding> {
  const f = await readObject(req, body, BINDING_FIELDS);
  return parseBinding({ label: f['label'], protocol: f['protocol'], prefix: f['prefix'], port: f['port'] ?? 0 });
}

function errorBody(code: string, message: string): ErrorBody {
  return { error: { code, message } };
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Serves `server` from a listening socket already open (`fd`). */
export function listenFd(server: Server, fd: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ fd }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}
