import { type Logger } from 'pino';
import { type Address } from '../bindings/address.js';
import { type Binding } from '../bindings/binding.js';
import { type Table } from '../table/table.js';
import { Listeners, type ListenerStatus, type OnAccepted, type OnDatagrams } from './listeners.js';

/**
 * ports: a socket per bound port; tproxy: nftables steers every bound prefix and port to one socket;
 * kernel: nftables steers each label's traffic to the label's own sockets, which its workers hold.
 */
export type Mode = 'ports' | 'tproxy' | 'kernel';

export interface ModeOptions {
  /** Where listeners bind; `::` is dual-stack. */
  address: string;
  log: Logger;
  onAccepted: OnAccepted;
  onDatagrams: OnDatagrams;
  /** A listening socket opened or closed (systemd's descriptor store follows). */
  onListener?: ((event: 'open' | 'close', socket: ModeSocket) => void) | undefined;
}

/** The socket a UDP reply from a local address leaves by. */
export interface ReplyRoute {
  fd: number;
  /** The socket is AF_INET6. */
  v6: boolean;
  /** The socket is not bound to the source: it must be set per datagram (IP_PKTINFO). */
  setSource: boolean;
}

/** A listening socket for a hand-over: its protocol and the port it was opened for (0 in tproxy mode). */
export interface ModeSocket {
  kind: 'tcp' | 'udp';
  port: number;
  fd: number;
}

/**
 * How traffic reaches the daemon's sockets, one mode per daemon: the daemon asks the mode, never which mode
 * it is. A change runs `prepare` (may refuse: then nothing changed), the swap, then `follow`.
 */
export abstract class ListeningMode {
  abstract readonly name: Mode;
  readonly tcp: Listeners;
  readonly udp: Listeners;

  constructor(options: ModeOptions, transparent: boolean) {
    const common = { address: options.address, transparent, log: options.log, onListener: options.onListener };
    this.tcp = new Listeners({ ...common, protocol: 'tcp', onAccepted: options.onAccepted });
    this.udp = new Listeners({ ...common, protocol: 'udp', onDatagrams: options.onDatagrams });
  }

  /** Opens the sockets it lacks and serves `table`; throws if the mode cannot run here. */
  abstract start(table: Table): Promise<void>;
  /** Before `table` is served. */
  abstract prepare(table: Table): Promise<void>;
  /** Once `table` is served. */
  abstract follow(table: Table): void;
  /** Problems with a binding just added (its port could not be bound). */
  abstract warnings(binding: Binding): string[];
  abstract replyRoute(local: Address, port: number): ReplyRoute;

  status(): ListenerStatus[] {
    return [...this.tcp.status(), ...this.udp.status()];
  }

  /** Every listener's problem, for a bulk change's reply. */
  problems(): string[] {
    return this.status().flatMap((l) => (l.error === undefined ? [] : [l.error]));
  }

  sockets(): ModeSocket[] {
    return [
      ...this.tcp.sockets().map((s) => ({ kind: 'tcp' as const, ...s })),
      ...this.udp.sockets().map((s) => ({ kind: 'udp' as const, ...s })),
    ];
  }

  /** A takeover: the previous daemon's socket, not watched until `watchAdopted`. */
  adopt(socket: ModeSocket): void {
    (socket.kind === 'tcp' ? this.tcp : this.udp).adopt(socket.port, socket.fd);
  }

  watchAdopted(protocols: readonly ('tcp' | 'udp')[] = ['tcp', 'udp']): void {
    for (const p of protocols) this[p].watchAdopted();
  }

  /** After a hand-over (or a takeover that failed): this daemon's copies close, the sockets and rules live on. */
  detach(): void {
    this.tcp.detach();
    this.udp.detach();
  }

  async close(): Promise<void> {
    this.tcp.close();
    this.udp.close();
    return Promise.resolve();
  }
}
