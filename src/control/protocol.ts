/**
 * What the control API's server and client agree on (documented in docs/control-api.md). Version 1 lives
 * under /v1; an incompatible change gets a new prefix. The body types are declared here once: the server
 * must produce them and the client reads them, so a change on one side that the other does not follow
 * fails to compile.
 */
import { type BindingJSON, type Protocol } from '../bindings/binding.js';
import { type BindingsFile } from '../bindings/file.js';
import { type ListenerStatus } from '../listener/listeners.js';
import { type Upstream } from '../proxy/upstream.js';
import { type LabelCounts, type Metrics, type SteeringCounters } from '../metrics/metrics.js';
import { type StoreStatus } from '../fleet/member.js';
import { type FleetResponse } from '../fleet/view.js';

export type { FleetResponse } from '../fleet/view.js';

export const API_PREFIX = '/v1';
export const DEFAULT_CONTROL_PATH = '/run/dispatcher/control.sock';
export const DEFAULT_STATE_DIR = '/var/lib/dispatcher';

export interface ErrorBody {
  error: { code: string; message: string };
}

/** Filters of `GET /bindings`; they combine. `prefix`: bindings whose prefix lies within this one. */
export type BindingsQuery = { label?: string; protocol?: Protocol; prefix?: string; port?: number };
/** `GET /bindings`: in list order. Unfiltered, it is a bindings file (`load` takes it back). */
export type ListBindingsResponse = BindingsFile;
/**
 * The query of every change (bindings and upstreams), for a daemon with a store: `host` changes that host's
 * set instead of the global one; `if_revision` refuses the change (ERR_CONFLICT) if what it changes was
 * changed after that revision of the store. A daemon without a store refuses both (ERR_NO_STORE).
 */
export type WriteQuery = { host?: string; if_revision?: number };
/** With a store: the store's revision of the change (the daemon answers once it serves it, if it does). */
export interface Revision {
  revision?: number;
}
/** The body of `POST` and `DELETE /bindings`: a binding; `port` defaults to 0. */
export type BindingRequest = Omit<BindingJSON, 'port'> & { port?: number };
/** `replaced`: the equal binding (same protocol, prefix and port) whose label this one replaced. */
export interface AddBindingResponse extends Revision {
  binding: BindingJSON;
  replaced: BindingJSON | null;
  /** E.g. the binding's port could not be listened on (it is retried). */
  warnings: string[];
}
export interface RemoveBindingResponse extends Revision {
  removed: BindingJSON;
}
/** `PUT /bindings`: the body is a bindings file; `dry_run=true` changes nothing. */
export type ReplaceQuery = WriteQuery & { dry_run?: 'true' };
/** What changed (or would): a relabelled binding is in both lists. */
export interface ReplaceResponse extends Revision {
  dry_run: boolean;
  added: BindingJSON[];
  removed: BindingJSON[];
  warnings: string[];
}
export type LookupQuery = { protocol: Protocol; address: string; port: number };
export interface LookupResponse {
  label: string;
  binding: BindingJSON;
}
/** The body of `POST /upstreams`: an upstream; `proxy_protocol` defaults to `none`. */
export type UpstreamRequest = Omit<Upstream, 'proxy_protocol'> & { proxy_protocol?: Upstream['proxy_protocol'] };
export interface UpstreamsResponse {
  upstreams: Upstream[];
}
export interface SetUpstreamResponse extends Revision {
  upstream: Upstream;
  replaced: Upstream | null;
}
export interface RemoveUpstreamRequest {
  label: string;
}
export interface RemoveUpstreamResponse extends Revision {
  removed: Upstream;
}
/** The body of `POST /adopted`: take `pid`'s listening (tcp) or bound (udp) socket for `label` (kernel mode). */
export interface AdoptRequest {
  label: string;
  pid: number;
  /** Default tcp. */
  protocol?: Protocol;
  /** Which of the server's sockets, when it has several: `198.51.100.1:80`, `[::]:80`. */
  address?: string;
}
export interface AdoptedJSON {
  label: string;
  protocol: Protocol;
  family: 4 | 6;
  /** Where the kernel hands the label's packets: the socket's address (loopback for a wildcard one) and port. */
  address: string;
  port: number;
  pid: number;
}
export interface AdoptResponse {
  adopted: AdoptedJSON;
}
/** The body of `DELETE /adopted`: the label's own socket takes its traffic back. */
export interface ReleaseRequest {
  label: string;
  protocol: Protocol;
  family: 4 | 6;
}
export interface ReleaseResponse {
  released: boolean;
}
export interface WorkerJSON {
  id: number;
  label: string;
  pid: number;
  uid: number;
  handoffs: number;
  inflight: number;
  window: number;
}
export interface ServicesResponse {
  workers: WorkerJSON[];
  /** Connections waiting per label (labels with none are left out). */
  queued: Record<string, number>;
}
export interface StatusResponse {
  version: string;
  pid: number;
  uptime_seconds: number;
  /** `ports`, `tproxy` or `kernel`. */
  mode: string;
  control: string;
  services: string;
  state_file: string;
  bindings: { total: number; tcp: number; udp: number; labels: number };
  listeners: ListenerStatus[];
  upstreams: number;
  workers: { total: number; labels: number };
  queued: Record<string, number>;
  /** The counters, and per "protocol label" its lookups, hand-offs and resets. */
  connections: Metrics['totals'] & { by_label: Record<string, LabelCounts> };
  queue: { timeout_ms: number; size: number };
  /** Who besides root and the daemon's user may register each label. */
  allow: Record<string, number[]>;
  /** The daemon's options as its flags (without --control and --takeover): `dispatcher upgrade` hands them on. */
  flags: Record<string, string | string[]>;
  /** Kernel mode: what the kernel counted (nft counters), or why it could not be read. */
  steering?: SteeringCounters | { error: string };
  /** With --store: how this daemon follows the fleet's store. */
  store?: StoreStatus;
}

/**
 * Every endpoint: its query, its body (text is sent as it is, an object as JSON) and its answer's body.
 * The server routes by these keys and the client calls by them.
 */
export interface Endpoints {
  'GET /bindings': { query: BindingsQuery; body: undefined; response: ListBindingsResponse };
  'POST /bindings': { query: WriteQuery; body: BindingRequest; response: AddBindingResponse };
  'DELETE /bindings': { query: WriteQuery; body: BindingRequest; response: RemoveBindingResponse };
  /** The body: a bindings file's text. */
  'PUT /bindings': { query: ReplaceQuery; body: string; response: ReplaceResponse };
  'GET /lookup': { query: LookupQuery; body: undefined; response: LookupResponse };
  'GET /status': { query: undefined; body: undefined; response: StatusResponse };
  'GET /services': { query: undefined; body: undefined; response: ServicesResponse };
  'GET /upstreams': { query: undefined; body: undefined; response: UpstreamsResponse };
  'POST /upstreams': { query: WriteQuery; body: UpstreamRequest; response: SetUpstreamResponse };
  'DELETE /upstreams': { query: WriteQuery; body: RemoveUpstreamRequest; response: RemoveUpstreamResponse };
  /** With --store: every host of the fleet, the revision it serves and its lag behind the store. */
  'GET /fleet': { query: undefined; body: undefined; response: FleetResponse };
  'POST /adopted': { query: undefined; body: AdoptRequest; response: AdoptResponse };
  'DELETE /adopted': { query: undefined; body: ReleaseRequest; response: ReleaseResponse };
}
export type Endpoint = keyof Endpoints;
