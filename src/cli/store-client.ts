import { parseBinding } from '../bindings/binding.js';
import { formatBindingsFile, parseBindingsText } from '../bindings/file.js';
import { bindingFilter } from '../bindings/order.js';
import {
  type AddBindingResponse,
  type BindingRequest,
  type BindingsQuery,
  type FleetResponse,
  type ListBindingsResponse,
  type RemoveBindingResponse,
  type Revision,
  type ReplaceResponse,
  type SetUpstreamResponse,
  type RemoveUpstreamResponse,
  type UpstreamRequest,
  type UpstreamsResponse,
  type WriteQuery,
} from '../control/protocol.js';
import { parseUpstream } from '../proxy/upstream.js';
import { EtcdBindings, type EtcdOptions, type Scope } from '../store/etcd.js';
import { Table } from '../table/table.js';
import { readFleet } from '../fleet/view.js';
import { FleetWriter, readView } from '../fleet/writes.js';

/**
 * The CLI's way to the store with no daemon (`--store`): the control API's answers for bindings, upstreams
 * and the fleet, from etcd. A host's set is read and written with `host`; without it, the global set.
 */
export class StoreClient {
  readonly #store: EtcdBindings;
  readonly #writer: FleetWriter;

  private constructor(store: EtcdBindings) {
    this.#store = store;
    this.#writer = new FleetWriter(store, readView(store));
  }

  static async connect(options: EtcdOptions): Promise<StoreClient> {
    // The host of the layered read is not used here: every read names its scope.
    return new StoreClient(await EtcdBindings.connect({ ...options, host: 'cli' }));
  }

  close(): void {
    this.#store.close();
  }

  async listBindings(filter: BindingsQuery = {}, host?: string): Promise<ListBindingsResponse & Revision> {
    const { revision, bindings } = await this.#store.scope(scopeOf(host));
    // In the daemon's list order.
    return { ...formatBindingsFile(Table.from(bindings).bindings().filter(bindingFilter(filter))), revision };
  }

  async addBinding(request: BindingRequest, w: WriteQuery): Promise<AddBindingResponse> {
    const binding = parseBinding({ ...request, port: request.port ?? 0 });
    const { replaced, revision } = await this.#writer.add(scopeOf(w.host), binding, w.if_revision);
    return { binding: binding.toJSON(), replaced: replaced?.toJSON() ?? null, warnings: [], revision };
  }

  async removeBinding(request: BindingRequest, w: WriteQuery): Promise<RemoveBindingResponse> {
    const binding = parseBinding({ ...request, port: request.port ?? 0 });
    const { removed, revision } = await this.#writer.remove(scopeOf(w.host), binding, w.if_revision);
    return { removed: removed.toJSON(), revision };
  }

  async replaceBindings(text: string, options: { dryRun?: boolean } & WriteQuery): Promise<ReplaceResponse> {
    const bindings = parseBindingsText(text, 'bindings file');
    const dryRun = options.dryRun === true;
    const diff = await this.#writer.replace(scopeOf(options.host), bindings, dryRun, options.if_revision);
    const json = (list: typeof bindings): ReturnType<(typeof bindings)[number]['toJSON']>[] => list.map((b) => b.toJSON());
    return { dry_run: dryRun, added: json(diff.added), removed: json(diff.removed), warnings: [], revision: diff.revision };
  }

  async upstreams(): Promise<UpstreamsResponse> {
    return { upstreams: (await this.#store.upstreams()).upstreams };
  }

  async setUpstream(request: UpstreamRequest, w: WriteQuery): Promise<SetUpstreamResponse> {
    const upstream = parseUpstream(request);
    const { replaced, revision } = await this.#writer.setUpstream(upstream, w.if_revision);
    return { upstream, replaced: replaced ?? null, revision };
  }

  async removeUpstream(label: string, w: WriteQuery): Promise<RemoveUpstreamResponse> {
    return this.#writer.removeUpstream(label, w.if_revision);
  }

  fleet(): Promise<FleetResponse> {
    return readFleet(this.#store);
  }
}

const scopeOf = (host: string | undefined): Scope => (host === undefined ? 'global' : { host });
