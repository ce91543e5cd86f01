import { type Server } from 'node:http';
import { unlink } from 'node:fs/promises';
import { type Logger } from 'pino';
import { type ControlHandlers, createControlServer, listenFd } from '../control/server.js';
import { type Metrics } from '../metrics/metrics.js';
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
    this.#control = createControlServer(options.handlers);
  }

  /** A fresh start: each socket at its path (a stale one replaced, a live daemon's refused). */
  async open(): Promise<void> {
    const o = this.#o;
    await this.#serveControl(listenUnixPath(o.controlPath, 512, 0o660, 'stream'));
    this.#ownsPaths = true;
    this.#services = ServicesSocket.listen(o.services);
    this.#watchHandover(listenUnixPath(handoverPath(o.controlPath), 4, 0o600, 'seqpacket'));
    if (o.metricsAddress !== undefined) this.#metrics = await serveMetrics(o.metrics, o.metricsAddress);
  }

  /**
   * A takeover: the previous daemon's sockets. The metrics socket first, as the step that can fail (its
   * own when the address is the same, else a new one); the paths stay the previous daemon's until
   * `claimPaths`. Each descriptor it takes leaves `unused` as it is taken (its part closes it from then on).
   */
  async adopt(sockets: readonly InheritedSocket[], unused: Set<number>): Promise<void> {
    const o = this.#o;
    const one = (kind: InheritedSocket['kind']): number => {
      const fd = sockets.find((s) => s.kind === kind)?.fd ?? -1;
      unused.delete(fd);
      return fd;
    };
    if (o.metricsAddress !== undefined) {
      const same = sockets.find((s) => s.kind === 'metrics' && s.address === o.metricsAddress);
      this.#metrics = await serveMetrics(o.metrics, o.metricsAddress, same?.fd);
      if (same !== undefined) unused.delete(same.fd);
    }
    await this.#serveControl(one('control'));
    this.#services = ServicesSocket.adopt(o.services, one('services'));
    this.#watchHandover(one('handover'));
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
