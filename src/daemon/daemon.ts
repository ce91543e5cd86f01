import { hostname } from 'node:os';
import { pino, type Logger } from 'pino';
import { type ControlHandlers } from '../control/server.js';
import { AcceptPath } from '../dispatch/accept.js';
import { DatagramPath } from '../dispatch/datagrams.js';
import { UdpReplies } from '../dispatch/replies.js';
import { Route } from '../dispatch/route.js';
import { UdpFlows } from '../dispatch/udp-flows.js';
import { type ListeningMode, type ModeOptions } from '../listener/mode.js';
import { PortsMode } from '../listener/ports-mode.js';
import { TproxyMode } from '../listener/tproxy-mode.js';
import { KernelMode } from '../steering/kernel-mode.js';
import { type LabelSocket } from '../steering/label-sockets.js';
import { type AdoptedJSON } from '../control/protocol.js';
import { DispatcherError } from '../errors.js';
import { Metrics } from '../metrics/metrics.js';
import { native } from '../native/index.js';
import { UdpRelay } from '../proxy/udp-relay.js';
import { Policy } from '../registry/policy.js';
import { Registry } from '../registry/registry.js';
import { type LoadedState, StateFile } from '../store/state-file.js';
import { ChangeStore } from '../store/store.js';
import { Table } from '../table/table.js';
import { VERSION } from '../version.js';
import { FleetMember, type FollowOptions } from '../fleet/member.js';
import { etcdOptions } from '../store/etcd-client.js';
import { checkHost } from '../store/etcd-layout.js';
import { changeHandlers } from './changes.js';
import { Endpoints } from './endpoints.js';
import { requestHandover } from './handover.js';
import { services, status } from './status.js';
import { type DaemonOptions, optionFlags, resolveOptions, type ResolvedOptions } from './options.js';
import { fdName, listenFds, Systemd } from './systemd.js';
import { Handovers, takeOver } from './takeover.js';

export type { DaemonOptions } from './options.js';

function onlyKernel(kernel: KernelMode | undefined): KernelMode {
  if (kernel === undefined)
    throw new DispatcherError('ERR_MODE', 'adopting a server needs kernel steering (dispatcher daemon --mode kernel)');
  return kernel;
}

function adoptedJSON(s: LabelSocket): AdoptedJSON {
  return { label: s.label, protocol: s.protocol, family: s.family, address: s.address, port: s.port, pid: s.adoptedFrom ?? 0 };
}

type Resolved = ResolvedOptions & { logger: Logger };

// How long datagrams from systemd's store wait for their workers to come back after a restart.
const UDP_SETTLE_MS = 2_000;

/**
 * The composition root: builds the parts and wires them, and nothing else. Traffic never passes through
 * here: listeners call the dispatch paths, which read the store's current table and route to the registry
 * or an upstream; control requests go to the store, which the listening mode follows.
 */
export class Daemon {
  readonly controlPath: string;
  readonly log: Logger;
  readonly metrics = new Metrics();
  readonly #store: ChangeStore;
  readonly #registry: Registry;
  readonly #mode: ListeningMode;
  readonly #route: Route;
  readonly #udpRelay: UdpRelay;
  readonly #endpoints: Endpoints;
  readonly #handovers: Handovers;
  readonly #systemd: Systemd;
  readonly #summary: () => string;
  readonly #member: FleetMember | undefined;
  readonly #following: FollowOptions;
  #handedOver = false;

  private constructor(o: Resolved, saved: LoadedState, member: FleetMember | undefined) {
    this.controlPath = o.controlPath;
    this.log = o.logger;
    const { metrics, log } = this;
    for (const refusal of saved.refused) log.warn(`state file: ${refusal}; left out`);
    const store = new ChangeStore({
      state: new StateFile(o.stateDir),
      table: Table.from(saved.bindings),
      upstreams: saved.upstreams,
      upstreamDir: o.upstreamDir,
      log,
      origin: saved.origin,
      cache: member !== undefined,
    });
    const registry = new Registry({ timeoutMs: o.queueTimeoutMs, size: o.queueSize }, metrics);
    const policy = new Policy(o.allow);
    const flows = new UdpFlows();
    // An upstream's UDP answers leave like a worker's replies (the mode's socket for the address).
    const udpRelay = new UdpRelay((client, local, payload) => void replies.send(client, local, payload));
    const route = new Route({ current: store, registry, udpRelay, metrics, log, upstreamTimeoutMs: o.upstreamTimeoutMs });
    const systemd = new Systemd(log);
    const modeOptions: ModeOptions = {
      address: o.listenAddress,
      log,
      // Every listening socket goes into systemd's store as it opens, and leaves it as it closes.
      onListener: (event, socket) => (event === 'open' ? systemd.store(socket) : systemd.forget(socket)),
      onAccepted: new AcceptPath(store, route, metrics).onAccepted,
      onDatagrams: new DatagramPath(store, route, flows, metrics).onDatagrams,
    };
    const kernel = o.mode === 'kernel' ? new KernelMode({ ...modeOptions, stateDir: o.stateDir, current: store }) : undefined;
    const mode = kernel ?? (o.mode === 'tproxy' ? new TproxyMode(modeOptions) : new PortsMode(modeOptions));
    const replies = new UdpReplies(store, mode, flows, metrics);
    store.followedBy(mode);
    const startedAt = Date.now();
    const handlers: ControlHandlers = {
      list: (filter) => store.list(filter),
      lookup: (protocol, address, port) => store.lookup(protocol, address, port),
      upstreams: () => store.upstreams(),
      ...changeHandlers({
        store,
        member,
        upstreamsChanged: () => kernel?.refresh(),
        bulk: { start: () => systemd.reloading(), end: () => systemd.ready(summary()) },
      }),
      adopt: (request, caller) =>
        onlyKernel(kernel)
          .adoptServer({ ...request, caller })
          .then(adoptedJSON),
      release: (label, protocol, family) => onlyKernel(kernel).release(label, protocol, family),
      services: () => services(registry),
      status: async () => ({
        ...status({
          store,
          mode,
          registry,
          policy,
          metrics,
          startedAt,
          controlPath: o.controlPath,
          servicesPath: o.servicesPath,
          queue: { timeout_ms: o.queueTimeoutMs, size: o.queueSize },
          flags: optionFlags(o),
        }),
        ...(kernel === undefined ? {} : { steering: await kernel.counters().catch((err: Error) => ({ error: err.message })) }),
        ...(member === undefined ? {} : { store: member.status() }),
      }),
    };
    const endpoints = new Endpoints({
      controlPath: o.controlPath,
      handlers,
      services: {
        path: o.servicesPath,
        registry,
        policy,
        metrics,
        log,
        onReply: replies.fromWorker,
        onBinaryReply: replies.fromWorkerBinary,
        steered: kernel,
      },
      metricsAddress: o.metrics,
      metrics,
      log,
      onHandover: (channel) => void this.#handovers.offer(channel),
    });
    const summary = (): string => {
      const workers = registry.workers();
      return `${o.mode} mode: ${store.table.size} bindings, ${workers.length} workers of ${new Set(workers.map((w) => w.label)).size} labels`;
    };
    this.#summary = summary;
    // Workers came or went, or the store's revision changed the table: what kernel mode reads, what systemd shows.
    const changed = (): void => {
      kernel?.refresh();
      systemd.notify({ STATUS: summary() });
    };
    registry.onChange = changed;
    this.#following = {
      store,
      describe: () => ({ mode: o.mode, bindings: store.table.size, workers: registry.workers().length }),
      onApplied: changed,
    };
    if (kernel !== undefined) {
      // The daemon reads a label's sockets itself only for what workers cannot take from them: version-1
      // workers get hand-offs, and a label with no worker but an upstream is proxied. Otherwise the accept
      // queue waits for a worker.
      kernel.connect(
        (label) => {
          const workers = registry.of(label);
          return workers.some((w) => w.version < 2) || (workers.length === 0 && store.upstream(label) !== undefined);
        },
        (socket) => endpoints.announce(socket),
      );
      metrics.steeringFrom(() => kernel.counters());
    }
    this.#store = store;
    this.#registry = registry;
    this.#mode = mode;
    this.#route = route;
    this.#udpRelay = udpRelay;
    this.#endpoints = endpoints;
    this.#systemd = systemd;
    this.#handovers = new Handovers({ store, mode, endpoints, registry, log, systemd });
    this.#member = member;
    void this.#handovers.left.then(() => (this.#handedOver = true));
    if (member !== undefined) metrics.storeFrom(() => member.status());
  }

  static async start(options: DaemonOptions = {}): Promise<Daemon> {
    const o: Resolved = { ...resolveOptions(options), logger: options.logger ?? pino({ name: 'dispatcher' }, pino.destination(2)) };
    // A takeover gets the old daemon's sockets first: by then it takes no more changes, so the state file
    // read next is its last word.
    // The store's options are checked before anything is taken or opened: bad flags change nothing. The
    // store is read before a takeover too: the old daemon's sockets wait for nobody meanwhile.
    const etcd = o.store === undefined ? undefined : etcdOptions({ ...o, store: o.store });
    const member =
      etcd === undefined
        ? undefined
        : await FleetMember.open({ etcd, url: o.store!, host: checkHost(o.hostName ?? hostname()), log: o.logger });
    const inherited = options.takeover
      ? await requestHandover(o.controlPath).catch(async (err: unknown) => {
          await member?.close();
          throw err;
        })
      : undefined;
    const state = new StateFile(o.stateDir);
    let saved;
    try {
      // With a store, the state file is its cache: what the daemon starts from while etcd does not answer.
      saved = await state.load();
      if (member !== undefined) saved = member.startFrom(saved);
    } catch (err) {
      inherited?.sockets.forEach((s) => native.close(s.fd));
      inherited?.channel.close();
      await member?.close();
      throw err;
    }
    const d = new Daemon(o, saved, member);
    const parts = { store: d.#store, mode: d.#mode, endpoints: d.#endpoints, registry: d.#registry, log: d.log, systemd: d.#systemd };
    if (inherited !== undefined) {
      await takeOver(inherited.channel, inherited.sockets, parts, (label, conn) => d.#route.connection(label, conn));
    } else {
      // What systemd passed (a socket unit, or the store after a crash) is used; the rest is opened.
      const given = listenFds();
      const unused = new Set([...given.sockets.map((s) => s.fd), ...given.unknown]);
      if (given.sockets.length > 0) d.log.info({ sockets: given.sockets.map(fdName) }, 'sockets from systemd');
      try {
        for (const s of given.sockets) {
          if (s.kind !== 'tcp' && s.kind !== 'udp') continue;
          d.#mode.adopt({ kind: s.kind, port: s.port, fd: s.fd });
          unused.delete(s.fd);
        }
        await d.#endpoints.open(given.sockets, unused);
        await d.#mode.start(d.#store.table);
        d.#mode.watchAdopted(['tcp']);
        // Datagrams that queued while no daemon ran would be dropped with no worker to take them (TCP waits in
        // the registry's queue): they stay in the socket until the labels' workers are back, 2 s at most.
        const udpLabels = [...new Set(d.#store.table.bindings().flatMap((b) => (b.protocol === 'udp' ? [b.label] : [])))];
        void d.#registry.whenServed(udpLabels, UDP_SETTLE_MS).then(() => d.#mode.watchAdopted(['udp']));
      } catch (err) {
        await d.stop();
        throw err;
      } finally {
        for (const fd of unused) native.close(fd);
      }
      d.#systemd.ready(d.#summary());
    }
    d.#member?.follow(d.#following);
    // Into the store: a crash leaves them to systemd, whose restart of the daemon gives them back. The
    // listeners store themselves as they open (onListener); inherited ones are in the store already.
    for (const s of d.#endpoints.sockets()) if (s.kind !== 'metrics') d.#systemd.store(s);
    d.log.info(
      { control: o.controlPath, services: o.servicesPath, state: state.path, bindings: d.#store.table.size, version: VERSION },
      'daemon started',
    );
    return d;
  }

  /** The current snapshot; hold the reference for a consistent view. */
  get table(): Table {
    return this.#store.table;
  }

  /** Resolves once a newer daemon has taken over: this one then has nothing left and should exit. */
  get handedOver(): Promise<void> {
    return this.#handovers.left;
  }

  async stop(): Promise<void> {
    this.#systemd.stopping();
    await this.#member?.close(this.#handedOver);
    await this.#mode.close().catch((err: Error) => this.log.error(err.message));
    this.#udpRelay.close();
    this.#registry.close();
    await this.#store.idle();
    await this.#store.flush();
    await this.#endpoints.close();
    this.log.info('daemon stopped');
  }
}
