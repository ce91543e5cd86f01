import { type Server } from 'node:http';
import { unlink } from 'node:fs/promises';
import { type Logger } from 'pino';
import { type ControlHandlers, createControlServer, listenFd } from '../control/server.js';
import { type Metrics } from '../metrics/metrics.js';
import { collectSoon } from '../store/memory.js';
import { type MetricsServer, serveMetrics } from '../metrics/server.js';
import { native, READABLE, type WatchHandle } from '../native/index.js';
import { CREDENTIAL, credentialAt } from '../native/records.js';
import { listenUnixPath } from '../native/unix-path.js';
import { type SteeredSocket } from '../services/peer.js';
import { ServicesSocket, type ServicesOptions } from '../services/server.js';
import { HandoverChannel, handoverPath, type InheritedSocket } from './handover.js';

export interface EndpointOptions {
  controlPath: string;
  handlers: ControlHandlers;
  services: ServicesOptions;
  /** HOST:PORT for /metrics, if any. */
  metricsAddress: string | undefined;
  metrics: Metrics;
  log: Logger;
  /** A newer daemon asks for a hand-over (its uid was checked: root or this daemon's). */
  onHandover: (channel: HandoverChannel) => void;
}

/**
 * The daemon's own sockets, which are not traffic: the control socket, the services socket, the hand-over
 * socket next to the control socket, and the metrics endpoint. Opened fresh, or adopted from the daemon
 * being taken over; their paths are this daemon's to remove only once it owns them.
 */
export class Endpoints {
  readonly #o: EndpointOptions;
  readonly #control: Server;
  #controlFd = -1;
  #services: ServicesSocket | undefined;
  #handover: { fd: number; watch: WatchHandle } | undefined;
  #metrics: MetricsServer | undefined;
  #ownsPaths = false;

  constructor(options: EndpointOptions) {
    this.#o = options;
    this.#control = createControlServer(options.handlers, { afterLargeBody: collectSoon });
  }

  /**
   * Each socket: the one `given` (by systemd: a socket unit or the descriptor store), or a new one at its
   * path (a stale one replaced, a live daemon's refused). The daemon removes on a clean stop only the
   * control path it made. Each descriptor taken from `given` leaves `unused` (its part closes it from then on).
   */
  async open(given: readonly InheritedSocket[] = [], unused = new Set<number>()): Promise<void> {
    const o = this.#o;
    const take = (kind: InheritedSocket['kind']): number | undefined => {
      const fd = given.find((s) => s.kind === kind)?.fd;
      if (fd !== undefined) unused.delete(fd);
      return fd;
    };
    if (o.metricsAddress !== undefined) {
      // The previous daemon's own socket when the address is the same (a hand-over), else a new one.
      const same = given.find((s) => s.kind === 'metrics' && s.address === o.metricsAddress);
      this.#metrics = await serveMetrics(o.metrics, o.metricsAddress, same?.fd);
      if (same !== undefined) unused.delete(same.fd);
    }
    const control = take('control');
    await this.#serveControl(control ?? listenUnixPath(o.controlPath, 512, 0o660, 'stream'));
    this.#ownsPaths = control === undefined;
    const services = take('services');
    this.#services = services === undefined ? ServicesSocket.listen(o.services) : ServicesSocket.adopt(o.services, services);
    this.#watchHandover(take('handover') ?? listenUnixPath(handoverPath(o.controlPath), 4, 0o600, 'seqpacket'));
  }

  /**
   * A takeover: the previous daemon's sockets, all of them; the paths stay the previous daemon's until
   * `claimPaths`.
   */
  async adopt(sockets: readonly InheritedSocket[], unused: Set<number>): Promise<void> {
    await this.open(sockets, unused);
    this.#ownsPaths = false;
  }

  /** A label's new steered socket, to its version-2 workers (kernel mode). */
  announce(socket: SteeredSocket): void {
    this.#services?.announce(socket);
  }

  /** The paths are this daemon's now (it removes them on a clean stop). */
  claimPaths(): void {
    this.#ownsPaths = true;
  }

  /** What a hand-over passes on. */
  sockets(): InheritedSocket[] {
    const metrics =
      this.#metrics === undefined ? [] : [{ kind: 'metrics' as const, port: 0, fd: this.#metrics.fd, address: this.#o.metricsAddress! }];
    return [
      { kind: 'control', port: 0, fd: this.#controlFd },
      { kind: 'services', port: 0, fd: this.#services!.fd },
      { kind: 'handover', port: 0, fd: this.#handover!.fd },
      ...metrics,
    ];
  }

  /**
   * After a hand-over, or a takeover that failed: stop serving and close this daemon's copies. The paths
   * and the sockets behind them stay: they are the other daemon's. Workers reconnect by themselves.
   */
  detach(): void {
    this.#unwatchHandover();
    this.#ownsPaths = false;
    this.#control.close();
    this.#services?.detach();
    this.#services = undefined;
    this.#metrics?.server.close();
    this.#metrics = undefined;
  }

  async close(): Promise<void> {
    this.#unwatchHandover();
    if (this.#ownsPaths) await unlink(handoverPath(this.#o.controlPath)).catch(() => undefined);
    this.#services?.close();
    this.#services = undefined;
    await new Promise<void>((resolve) => {
      this.#control.close(() => resolve());
      this.#control.closeAllConnections();
    });
    await new Promise<void>((resolve) => (this.#metrics ? this.#metrics.server.close(() => resolve()) : resolve()));
    // After a failed start the path may be another daemon's: only remove what this one created.
    if (this.#ownsPaths) await unlink(this.#o.controlPath).catch(() => undefined);
  }

  /** Served by Node from a socket bound natively: Node would remove the path of one it bound itself on close. */
  async #serveControl(fd: number): Promise<void> {
    this.#controlFd = fd;
    await listenFd(this.#control, fd);
  }

  #watchHandover(fd: number): void {
    const cred = new Int32Array(CREDENTIAL.SIZE);
    const watch = native.watch(fd, READABLE, () => {
      for (let rc = native.acceptUnix(fd, cred); rc === 1; rc = native.acceptUnix(fd, cred)) {
        const peer = credentialAt(cred);
        const channel = new HandoverChannel(peer.fd);
        // Only root or the daemon's own user may take its sockets.
        if (peer.uid !== 0 && peer.uid !== process.getuid?.()) channel.refuse(`uid ${peer.uid} may not take over this daemon`);
        else this.#o.onHandover(channel);
      }
    });
    this.#handover = { fd, watch };
  }

  #unwatchHandover(): void {
    if (this.#handover === undefined) return;
    native.unwatch(this.#handover.watch);
    native.close(this.#handover.fd);
    this.#handover = undefined;
  }
}
