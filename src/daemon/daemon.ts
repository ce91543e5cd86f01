import { createServer, type Server } from 'node:http';
import { unlink } from 'node:fs/promises';
import { pino, type Logger } from 'pino';
import { type Binding, type Protocol } from '../bindings/binding.js';
import { bindingFilter } from '../bindings/order.js';
import { type ControlHandlers, createControlServer, listenFd, listenUnix } from '../control/server.js';
import { DEFAULT_CONTROL_PATH, DEFAULT_STATE_DIR } from '../control/protocol.js';
import { DispatcherError } from '../errors.js';
import { Connection, recordAddress } from '../handoff/connection.js';
import { Listeners } from '../listener/listeners.js';
import { applyRuleset, removalRuleset, renderRuleset } from '../listener/nftables.js';
import { ReplySockets } from '../listener/reply-sockets.js';
import { relay } from '../proxy/relay.js';
import { type RecordAddress } from '../proxy/proxy-protocol.js';
import { upstreamProtocol, type Upstream } from '../proxy/upstream.js';
import { UdpRelay } from '../proxy/udp-relay.js';
import { parseAddress } from '../bindings/address.js';
import { DEFAULT_SERVICES_PATH, encodeDatagram, type Endpoint, type ReplyHeader } from '../services/protocol.js';
import { type Worker } from '../registry/registry.js';
import { Metrics } from '../metrics/metrics.js';
import { ACCEPT_RECORD, DATAGRAM_RECORD, DATAGRAM_SLOT, native, READABLE, SEND_RECORD, type WatchHandle } from '../native/index.js';
import { listenUnixPath } from '../native/unix-path.js';
import { HandoverChannel, handoverPath, type InheritedSocket, offerSockets, requestHandover } from './handover.js';
import { HAND_ON_MS, handOnWaiting, receiveWaiting } from './handover-completion.js';
import { Policy } from '../registry/policy.js';
import { Registry } from '../registry/registry.js';
import { ServicesSocket, type ServicesOptions } from '../services/server.js';
import { Table } from '../table/table.js';
import { VERSION } from '../version.js';
import { collectSoon } from './memory.js';
import { StateFile } from './state.js';
import { UdpFlows } from './udp-flows.js';

// A replace this large leaves enough garbage to be worth a full collection (see memory.ts).
const LARGE_REPLACE = 100_000;

export type Mode = 'ports' | 'tproxy';

export interface DaemonOptions {
  /** ports: a socket per bound port; tproxy: nftables steers every bound prefix and port to one socket. */
  mode?: Mode;
  controlPath?: string;
  stateDir?: string;
  /** The services socket workers register on. */
  servicesPath?: string;
  /** Where listeners bind; `::` is dual-stack. */
  listenAddress?: string;
  /** How long a connection waits for a worker of its label (ms), and how many may wait per label. */
  queueTimeoutMs?: number;
  queueSize?: number;
  /** `LABEL=UID[,UID...]` rules: who besides root and the daemon's uid may register a label. */
  allow?: string[];
  /** Take the listening sockets over from the daemon running on the same control socket (zero downtime). */
  takeover?: boolean;
  /** How long an upstream may take to accept a proxied connection (ms). */
  upstreamTimeoutMs?: number;
  /** HOST:PORT for Prometheus metrics at /metrics. */
  metrics?: string | undefined;
  logger?: Logger;
}

type Resolved = Required<Omit<DaemonOptions, 'metrics' | 'takeover'>> & { metrics: string | undefined };

/**
 * The composition root: owns the current table snapshot, applies control changes one at a time
 * (validate, build the new snapshot, persist, swap, resync the listeners), and wires listeners, table,
 * registry and services socket together. The accept path:
 *
 *   listener batch ─> table.lookupLabel(local address, port) ─ miss ─> reset, count
 *                        └─> registry.dispatch(label) ─> worker (SCM_RIGHTS) | queue | reset
 */
export class Daemon {
  readonly controlPath: string;
  readonly log: Logger;
  readonly metrics = new Metrics();
  readonly #options: Resolved;
  readonly #state: StateFile;
  readonly #control: Server;
  readonly #startedAt = Date.now();
  readonly #registry: Registry;
  readonly #policy: Policy;
  readonly #tcp: Listeners;
  readonly #udp: Listeners;
  readonly #replySockets: ReplySockets | undefined;
  #nftInstalled = false;
  // A reply's sendDatagrams record: [offset, length, destination, source] (see native/index.ts).
  readonly #addresses = new Int32Array(SEND_RECORD);
  readonly #udpRelay = new UdpRelay((client, local, payload) => void this.#sendUdp(client, local, payload));
  readonly #datagramOut = new Uint8Array(DATAGRAM_SLOT + 4096);
  // What a worker may reply to: the flows its label received.
  readonly #flows = new UdpFlows();
  #services: ServicesSocket | undefined;
  // The hand-over socket a newer daemon connects to (see handover.ts).
  #handover: { fd: number; watch: WatchHandle } | undefined;
  #handingOver = false;
  readonly #handedOver: { promise: Promise<void>; resolve: () => void };
  #ownsControl = false;
  #metricsServer: Server | undefined;
  #table: Table;
  // label -> upstream: proxy mode for labels with no worker registered. Changed like bindings: persisted first.
  #upstreams = new Map<string, Upstream>();
  // Changes run one after another, so each builds on the last one's snapshot and persists in order.
  #changes: Promise<unknown> = Promise.resolve();
  readonly #key = new Uint32Array(4);

  private constructor(options: Resolved, table: Table) {
    this.#options = options;
    this.controlPath = options.controlPath;
    this.log = options.logger;
    this.#state = new StateFile(options.stateDir);
    this.#table = table;
    let resolve = (): void => undefined;
    this.#handedOver = { promise: new Promise<void>((r) => (resolve = r)), resolve: () => resolve() };
    this.#control = createControlServer(this.#handlers());
    this.#policy = new Policy(options.allow);
    this.#registry = new Registry({ timeoutMs: options.queueTimeoutMs, size: options.queueSize }, this.metrics, (label, conn) => {
      const upstream = this.#upstreams.get(label);
      if (upstream === undefined || conn.protocol !== 'tcp' || upstreamProtocol(upstream) !== 'tcp') return false;
      relay(conn, label, upstream, { connectTimeoutMs: options.upstreamTimeoutMs, metrics: this.metrics, log: this.log });
      return true;
    });
    const transparent = options.mode === 'tproxy';
    const common = { address: options.listenAddress, transparent, log: this.log };
    this.#tcp = new Listeners({ ...common, protocol: 'tcp', onAccepted: (batch, count, protocol) => this.#dispatch(batch, count, protocol) });
    this.#udp = new Listeners({ ...common, protocol: 'udp', onDatagrams: (fd, data, meta, count) => this.#dispatchDatagrams(fd, data, meta, count) });
    this.#replySockets = transparent ? new ReplySockets(this.log) : undefined;
  }

  static async start(options: DaemonOptions = {}): Promise<Daemon> {
    const full: Resolved = {
      controlPath: options.controlPath ?? DEFAULT_CONTROL_PATH,
      stateDir: options.stateDir ?? DEFAULT_STATE_DIR,
      mode: options.mode ?? 'ports',
      servicesPath: options.servicesPath ?? DEFAULT_SERVICES_PATH,
      listenAddress: options.listenAddress ?? '::',
      queueTimeoutMs: options.queueTimeoutMs ?? 2_000,
      queueSize: options.queueSize ?? 1024,
      upstreamTimeoutMs: options.upstreamTimeoutMs ?? 5_000,
      allow: options.allow ?? [],
      metrics: options.metrics,
      logger: options.logger ?? pino({ name: 'dispatcher' }, pino.destination(2)),
    };
    // A takeover gets the old daemon's sockets first: by then it takes no more changes, so the state file
    // read next is its last word.
    const inherited = options.takeover ? await requestHandover(full.controlPath) : undefined;
    const state = new StateFile(full.stateDir);
    let saved;
    try {
      saved = await state.load();
    } catch (err) {
      inherited?.sockets.forEach((s) => native.close(s.fd));
      inherited?.channel.close();
      throw err;
    }
    const table = Table.from(saved.bindings);
    const daemon = new Daemon(full, table);
    for (const u of saved.upstreams) daemon.#upstreams.set(u.label, u);
    const services: ServicesOptions = {
      path: full.servicesPath,
      registry: daemon.#registry,
      policy: daemon.#policy,
      metrics: daemon.metrics,
      log: daemon.log,
      onReply: (worker: Worker, reply: ReplyHeader, payload: Uint8Array) => daemon.#reply(worker, reply, payload),
    };
    if (inherited !== undefined) await daemon.#takeOver(inherited.channel, inherited.sockets, services);
    else {
      try {
        await listenUnix(daemon.#control, full.controlPath);
        daemon.#services = ServicesSocket.listen(services);
        daemon.#watchHandover(listenUnixPath(handoverPath(full.controlPath), 4, 0o600, 'seqpacket'));
        daemon.#ownsControl = true;
        await daemon.#startListeners(table);
        if (full.metrics !== undefined) daemon.#metricsServer = await daemon.#serveMetrics(full.metrics);
      } catch (err) {
        await daemon.stop();
        throw err;
      }
    }
    daemon.log.info({ control: full.controlPath, services: full.servicesPath, state: state.path, bindings: table.size, version: VERSION }, 'daemon started');
    return daemon;
  }

  /** The current snapshot; hold the reference for a consistent view. */
  get table(): Table {
    return this.#table;
  }

  async stop(): Promise<void> {
    if (this.#handover !== undefined) {
      native.unwatch(this.#handover.watch);
      native.close(this.#handover.fd);
      this.#handover = undefined;
      if (this.#ownsControl) await unlink(handoverPath(this.controlPath)).catch(() => undefined);
    }
    this.#tcp.close();
    this.#udp.close();
    this.#replySockets?.close();
    this.#udpRelay.close();
    if (this.#nftInstalled) await applyRuleset(removalRuleset()).catch((err: Error) => this.log.error(err.message));
    this.#services?.close();
    this.#registry.close();
    await new Promise<void>((resolve) => {
      this.#control.close(() => resolve());
      this.#control.closeAllConnections();
    });
    await new Promise<void>((resolve) => (this.#metricsServer ? this.#metricsServer.close(() => resolve()) : resolve()));
    await this.#changes;
    // After a failed start the path may be another daemon's: only remove what this one created.
    if (this.#ownsControl) await unlink(this.controlPath).catch(() => undefined);
    this.log.info('daemon stopped');
  }

  /**
   * The accept path, once per batch. One table snapshot serves the batch, so every connection goes where
   * the table said when it was accepted.
   */
  #dispatch(batch: Int32Array, count: number, protocol: Protocol): void {
    const table = this.#table;
    const now = process.hrtime.bigint();
    for (let i = 0; i < count; i++) {
      const o = i * ACCEPT_RECORD;
      // The local address: the one the client dialled.
      const label = this.#labelAt(table, protocol, batch, o + 1);
      if (label === undefined) {
        native.reset(batch[o]!);
        this.metrics.miss(protocol);
        continue;
      }
      this.metrics.lookup(protocol, label);
      this.#registry.dispatch(label, Connection.fromBatch(batch, i, protocol, now));
    }
  }

  /** The label for the address at `at` of an accept or datagram record ([family, w0..w3, port]). */
  #labelAt(table: Table, protocol: Protocol, record: Int32Array, at: number): string | undefined {
    const family = record[at];
    if (family !== 4 && family !== 6) return undefined;
    const key = this.#key;
    key[0] = record[at + 1]!;
    key[1] = record[at + 2]!;
    key[2] = record[at + 3]!;
    key[3] = record[at + 4]!;
    return table.lookupLabel(protocol, family, key, record[at + 5]!);
  }

  /** Ports mode: sockets follow the bound ports. tproxy mode: one transparent socket each, and the rules. */
  async #startListeners(table: Table): Promise<void> {
    if (this.#options.mode === 'ports') return this.#syncPorts(table);
    this.#tcp.sync([0]);
    this.#udp.sync([0]);
    const failure = this.#tcp.failure(0) ?? this.#udp.failure(0);
    if (failure !== undefined) throw new DispatcherError('ERR_TPROXY', `tproxy mode: ${failure.replace(/; retrying.*$/, '')} (transparent sockets need CAP_NET_ADMIN)`);
    await this.#steer(table);
  }

  #syncPorts(table: Table): void {
    if (this.#options.mode !== 'ports') return;
    // Port 0 has no socket of its own in ports mode: it matches every port that has one.
    this.#tcp.sync(table.ports('tcp').filter((p) => p !== 0));
    this.#udp.sync(table.ports('udp').filter((p) => p !== 0));
  }

  async #steer(table: Table): Promise<void> {
    await applyRuleset(renderRuleset(table.bindings(), { tcp: this.#tcp.bound(0), udp: this.#udp.bound(0) }));
    this.#nftInstalled = true;
  }

  /** UDP, once per batch: each datagram by its destination, to the next worker of its label, or dropped. */
  #dispatchDatagrams(_fd: number, data: Uint8Array, meta: Int32Array, count: number): void {
    const table = this.#table;
    const now = Date.now();
    for (let i = 0; i < count; i++) {
      const r = meta.subarray(i * DATAGRAM_RECORD, (i + 1) * DATAGRAM_RECORD);
      // The destination: the address and port the client sent to.
      const label = this.#labelAt(table, 'udp', r, 7);
      if (label === undefined) {
        this.metrics.miss('udp');
        continue;
      }
      if (r[0]! < 0) {
        this.metrics.dropped(label, 'truncated');
        continue;
      }
      const payload = data.subarray(i * DATAGRAM_SLOT, i * DATAGRAM_SLOT + r[0]!);
      const message = encodeDatagram(this.#datagramOut, label, recordAddress(r, 1), r[6]!, recordAddress(r, 7), r[12]!, payload);
      const result = this.#registry.datagram(label, message);
      const upstream = result === 'no_worker' ? this.#upstreams.get(label) : undefined;
      if (upstream !== undefined && upstreamProtocol(upstream) === 'udp') {
        // Refused past the relay's flow cap: dropped like a datagram for a full worker.
        if (this.#udpRelay.send(upstream, recordEndpoint(r, 1), recordEndpoint(r, 7), payload)) this.metrics.datagram(label);
        else this.metrics.dropped(label, 'full');
      } else if (result === 'sent') {
        this.#flows.received(label, r, 1, 7, now);
        this.metrics.datagram(label);
      } else this.metrics.dropped(label, result);
    }
  }

  /**
   * A worker's UDP reply. It may only answer a flow its label received recently (see udp-flows.ts), from
   * an address and port its label is still bound to, so a worker cannot send as another service, from an
   * address that is not local, or to a host that sent it nothing; it leaves from exactly the address and
   * port the client sent to.
   */
  #reply(worker: Worker, reply: ReplyHeader, payload: Uint8Array): void {
    this.metrics.reply(worker.label, this.#sendUdp(reply.client, reply.local, payload, worker.label));
  }

  /**
   * Sends `payload` to `client` from exactly `local` (an address and port the daemon receives on). With
   * `label`, only on a flow that label received, and if `local` is still bound to it ('not_bound' otherwise).
   */
  #sendUdp(clientEnd: Endpoint, localEnd: Endpoint, payload: Uint8Array, label?: string): 'sent' | 'not_bound' | 'failed' {
    let local;
    let client;
    try {
      local = parseAddress(localEnd.address);
    } catch {
      return label === undefined ? 'failed' : 'not_bound';
    }
    if (label !== undefined && this.#table.lookupLabel('udp', local.family, local.words, localEnd.port) !== label) return 'not_bound';
    try {
      client = parseAddress(clientEnd.address);
    } catch {
      return 'failed';
    }
    if (label !== undefined && !this.#flows.allows(label, client, clientEnd.port, local, localEnd.port, Date.now())) return 'not_bound';
    const a = this.#addresses;
    a[0] = 0;
    a[1] = payload.length;
    putAddress(a, 2, client.family, client.words, clientEnd.port);
    const tproxy = this.#replySockets !== undefined;
    const fd = tproxy ? this.#replySockets.get(local, localEnd.port) : this.#udp.fd(localEnd.port);
    // A tproxy reply socket is bound to the source already (and has its family); a ports-mode socket is the
    // listen address's family and needs the source per datagram.
    putAddress(a, 8, tproxy ? 0 : local.family, local.words, localEnd.port);
    const v6 = tproxy ? local.family === 6 : this.#options.listenAddress.includes(':');
    return fd >= 0 && native.sendDatagrams(fd, payload, a, 1, v6) === 1 ? 'sent' : 'failed';
  }

  /** Persists first, then swaps: a refused write changes nothing. */
  async #saveUpstreams(next: Map<string, Upstream>): Promise<void> {
    await this.#save(this.#table, next);
    this.#upstreams = next;
  }

  /** Writes the state file: what a restarted daemon starts from. */
  #save(table: Table, upstreams: Map<string, Upstream>): Promise<void> {
    return this.#state.save({ bindings: table.bindings(), upstreams: [...upstreams.values()] });
  }

  #listenerWarnings(): string[] {
    return [...this.#tcp.status(), ...this.#udp.status()].flatMap((l) => (l.error === undefined ? [] : [l.error]));
  }

  #watchHandover(fd: number): void {
    const cred = new Int32Array(4);
    const watch = native.watch(fd, READABLE, () => {
      for (let rc = native.acceptUnix(fd, cred); rc === 1; rc = native.acceptUnix(fd, cred)) {
        const channel = new HandoverChannel(cred[0]!);
        // Only root or the daemon's own user may take its sockets.
        if (cred[2] !== 0 && cred[2] !== process.getuid?.()) channel.refuse(`uid ${cred[2]} may not take over this daemon`);
        else void this.#handOver(channel);
      }
    });
    this.#handover = { fd, watch };
  }

  /** The old daemon's side of a hand-over (see handover.ts). Never rejects. */
  async #handOver(channel: HandoverChannel): Promise<void> {
    const asked = await channel.receive().catch(() => undefined);
    if (asked?.message['type'] !== 'takeover') return channel.close();
    // Only the hand-over that set the flag clears it: a second one must neither start nor end the first.
    if (this.#handingOver) return channel.refuse('another daemon is taking over already: try again once it has finished');
    this.#handingOver = true;
    try {
      await this.#changes.catch(() => undefined);
      this.log.info('handing over to a new daemon');
      const controlFd = (this.#control as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1;
      const metricsFd = (this.#metricsServer as unknown as { _handle?: { fd?: number } } | undefined)?._handle?.fd ?? -1;
      await offerSockets(channel, [
        { kind: 'control', port: 0, fd: controlFd },
        { kind: 'services', port: 0, fd: this.#services!.fd },
        { kind: 'handover', port: 0, fd: this.#handover!.fd },
        ...(metricsFd >= 0 ? [{ kind: 'metrics' as const, port: 0, fd: metricsFd, address: this.#options.metrics! }] : []),
        ...this.#tcp.sockets().map((s) => ({ kind: 'tcp' as const, ...s })),
        ...this.#udp.sockets().map((s) => ({ kind: 'udp' as const, ...s })),
      ]);
    } catch (err) {
      // The new daemon closes what it inherited and unlinks nothing when it fails, so nothing was lost here.
      this.log.error({ error: (err as Error).message }, 'hand-over failed; this daemon carries on');
      this.#handingOver = false;
      return channel.close();
    }
    await this.#leave(channel);
  }

  /** After "ready": this daemon stops accepting, gives its queued connections on, and always exits. */
  async #leave(channel: HandoverChannel): Promise<void> {
    try {
      // Both daemons accept from the same queues now; this one stops, the new one carries on.
      this.#tcp.detach();
      this.#udp.detach();
      this.#nftInstalled = false; // the rules are the new daemon's
      native.unwatch(this.#handover!.watch);
      native.close(this.#handover!.fd);
      this.#handover = undefined;
      this.#ownsControl = false; // the paths are the new daemon's now
      this.#control.close();
      // Its workers reconnect to the new daemon by themselves; what they were handed stays theirs.
      this.#services?.detach();
      this.#services = undefined;
      const result = await handOnWaiting(channel, this.#registry.takeWaiting(), Date.now() + HAND_ON_MS);
      if (result.error === undefined) this.log.info(result, 'handed over');
      else this.log.error(result, 'handed over, resetting the queued connections that could not be sent');
    } catch (err) {
      this.log.error({ error: (err as Error).message }, 'hand-over failed after the new daemon was ready; this daemon exits');
    } finally {
      this.#handedOver.resolve();
    }
  }

  /**
   * The new daemon's side. Until "ready" it watches nothing it inherited, so the old daemon alone serves;
   * a failure closes what was inherited (plain closes: the sockets, their queues and the paths stay the
   * old daemon's, which carries on when the channel closes).
   */
  async #takeOver(channel: HandoverChannel, sockets: InheritedSocket[], services: ServicesOptions): Promise<void> {
    // What is not yet some part's to close: closed here on failure, and at the end (e.g. no --metrics).
    const unused = new Set(sockets.map((s) => s.fd));
    const one = (kind: string): number => {
      const fd = sockets.find((x) => x.kind === kind)?.fd ?? -1;
      unused.delete(fd);
      return fd;
    };
    try {
      for (const s of sockets) {
        if (s.kind !== 'tcp' && s.kind !== 'udp') continue;
        (s.kind === 'tcp' ? this.#tcp : this.#udp).adopt(s.port, s.fd);
        unused.delete(s.fd);
      }
      await this.#startListeners(this.#table);
      // The old daemon's metrics socket if it serves the same address (it holds the port until it exits).
      const metrics = sockets.find((x) => x.kind === 'metrics' && x.address === this.#options.metrics);
      if (metrics !== undefined) unused.delete(metrics.fd);
      if (this.#options.metrics !== undefined) this.#metricsServer = await this.#serveMetrics(this.#options.metrics, metrics?.fd);
      await listenFd(this.#control, one('control'));
      this.#services = ServicesSocket.adopt(services, one('services'));
      this.#watchHandover(one('handover'));
      this.#tcp.watchAdopted();
      this.#udp.watchAdopted();
      channel.send({ type: 'ready' });
      for (const fd of unused) native.close(fd);
    } catch (err) {
      this.#tcp.detach();
      this.#udp.detach();
      this.#services?.detach();
      if (this.#handover !== undefined) {
        native.unwatch(this.#handover.watch);
        native.close(this.#handover.fd);
        this.#handover = undefined;
      }
      this.#control.close();
      this.#metricsServer?.close();
      for (const fd of unused) native.close(fd);
      channel.close();
      throw err;
    }
    await receiveWaiting(channel, (label, conn) => this.#registry.dispatch(label, conn), this.log);
    // After "ready" the old daemon always leaves, and never unlinks: the paths are this daemon's now.
    this.#ownsControl = true;
  }

  /** Serves /metrics on `hostPort`, or on `fd`: the old daemon's socket for it, handed over. */
  #serveMetrics(hostPort: string, fd?: number): Promise<Server> {
    const m = /^(.*):([0-9]{1,5})$/.exec(hostPort);
    if (m === null) return Promise.reject(new DispatcherError('ERR_CONFIG', `--metrics ${JSON.stringify(hostPort)} is not HOST:PORT`));
    const server = createServer((req, res) => {
      if (req.method !== 'GET' || req.url !== '/metrics') {
        res.writeHead(404).end('see /metrics\n');
        return;
      }
      this.metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.metrics.registry.contentType }).end(text),
        (err: Error) => res.writeHead(500).end(err.message),
      );
    });
    return new Promise<Server>((resolve, reject) => {
      server.once('error', reject);
      if (fd !== undefined) server.listen({ fd }, () => resolve(server));
      else server.listen(Number(m[2]), m[1]!.replace(/^\[(.*)\]$/, '$1'), () => resolve(server));
    });
  }

  /** Resolves once a newer daemon has taken over: this one then has nothing left and should exit. */
  get handedOver(): Promise<void> {
    return this.#handedOver.promise;
  }

  #change<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#changes.then(() => {
      if (this.#handingOver) throw new DispatcherError('ERR_STATE', 'this daemon is handing over to a new one: repeat the change in a moment');
      return work();
    });
    this.#changes = run.catch(() => undefined);
    return run;
  }

  /** Persists first: if the disk refuses, the live table stays as it was and the caller gets the error. */
  async #commit(next: Table, what: Record<string, unknown>): Promise<void> {
    await this.#save(next, this.#upstreams);
    if (this.#options.mode === 'tproxy') {
      try {
        await this.#steer(next);
      } catch (err) {
        // The rules did not change, so neither may the bindings.
        await this.#save(this.#table, this.#upstreams);
        throw err;
      }
    }
    this.#table = next;
    this.#syncPorts(next);
    this.log.info({ ...what, bindings: next.size }, 'bindings changed');
  }

  #handlers(): ControlHandlers {
    return {
      list: (filter) => this.#table.bindings().filter(bindingFilter(filter)),
      add: (binding) =>
        this.#change(async () => {
          const { table, replaced } = this.#table.with(binding);
          await this.#commit(table, { added: binding.toJSON(), replaced: replaced?.label });
          const failure = this.#options.mode === 'ports' ? (binding.protocol === 'tcp' ? this.#tcp : this.#udp).failure(binding.port) : undefined;
          return { binding, replaced, warnings: failure === undefined ? [] : [failure] };
        }),
      remove: (binding) =>
        this.#change(async () => {
          const table = this.#table.without(binding);
          const removed: Binding = this.#table.find(binding)!;
          await this.#commit(table, { removed: removed.toJSON() });
          return removed;
        }),
      replace: (bindings, dryRun) =>
        this.#change(async () => {
          const next = Table.from(bindings);
          const diff = this.#table.diff(next);
          if (!dryRun && (diff.added.length > 0 || diff.removed.length > 0)) await this.#commit(next, { loaded: bindings.length, added: diff.added.length, removed: diff.removed.length });
          if (bindings.length >= LARGE_REPLACE) collectSoon();
          return { ...diff, warnings: dryRun ? [] : this.#listenerWarnings() };
        }),
      lookup: (protocol, address, port) => this.#table.lookup(protocol, address, port),
      status: () => {
        const all = this.#table.bindings();
        const workers = this.#registry.workers();
        return {
          version: VERSION,
          pid: process.pid,
          uptime_seconds: Math.round((Date.now() - this.#startedAt) / 1000),
          mode: this.#options.mode,
          control: this.controlPath,
          services: this.#options.servicesPath,
          state_file: this.#state.path,
          bindings: {
            total: all.length,
            tcp: all.filter((b) => b.protocol === 'tcp').length,
            udp: all.filter((b) => b.protocol === 'udp').length,
            labels: new Set(all.map((b) => b.label)).size,
          },
          listeners: [...this.#tcp.status(), ...this.#udp.status()],
          upstreams: this.#upstreams.size,
          workers: { total: workers.length, labels: new Set(workers.map((w) => w.label)).size },
          queued: this.#registry.queued(),
          connections: { ...this.metrics.totals, by_label: this.metrics.byLabel() },
          queue: { timeout_ms: this.#options.queueTimeoutMs, size: this.#options.queueSize },
          allow: this.#policy.toJSON(),
          // The daemon's options as its flags: `dispatcher upgrade` starts the new daemon with them.
          flags: {
            mode: this.#options.mode,
            'state-dir': this.#options.stateDir,
            services: this.#options.servicesPath,
            'listen-address': this.#options.listenAddress,
            'queue-timeout': String(this.#options.queueTimeoutMs),
            'queue-size': String(this.#options.queueSize),
            'upstream-timeout': String(this.#options.upstreamTimeoutMs),
            allow: this.#options.allow,
            ...(this.#options.metrics === undefined ? {} : { metrics: this.#options.metrics }),
          },
        };
      },
      upstreams: () => [...this.#upstreams.values()].sort((a, b) => (a.label < b.label ? -1 : 1)),
      setUpstream: (upstream) =>
        this.#change(async () => {
          const replaced = this.#upstreams.get(upstream.label);
          await this.#saveUpstreams(new Map(this.#upstreams).set(upstream.label, upstream));
          this.log.info({ upstream }, 'upstream set');
          return { upstream, replaced };
        }),
      removeUpstream: (label) =>
        this.#change(async () => {
          const removed = this.#upstreams.get(label);
          if (removed === undefined) throw new DispatcherError('ERR_NO_UPSTREAM', `label "${label}" has no upstream`);
          const next = new Map(this.#upstreams);
          next.delete(label);
          await this.#saveUpstreams(next);
          this.log.info({ upstream: removed }, 'upstream removed');
          return removed;
        }),
      services: () => ({
        workers: this.#registry.workers().map((w) => ({ id: w.id, label: w.label, pid: w.pid, uid: w.uid, handoffs: w.handoffs, inflight: w.inflight, window: w.window })),
        queued: this.#registry.queued(),
      }),
    };
  }
}

/** The address at `at` of a datagram record, as text and as words. */
function recordEndpoint(r: Int32Array, at: number): Endpoint & RecordAddress {
  return { address: recordAddress(r, at), port: r[at + 5]!, family: r[at] === 6 ? 6 : 4, words: r.subarray(at + 1, at + 5) };
}

/** [family, w0..w3, port] at `at`, as the native layer takes addresses. */
function putAddress(out: Int32Array, at: number, family: number, words: Uint32Array, port: number): void {
  out[at] = family;
  for (let i = 0; i < 4; i++) out[at + 1 + i] = i < words.length ? words[i]! | 0 : 0;
  out[at + 5] = port;
}
