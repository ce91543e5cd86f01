import { type Address } from '../bindings/address.js';
import { type Binding } from '../bindings/binding.js';
import { type Table } from '../table/table.js';
import { ListeningMode, type ModeOptions, type ReplyRoute } from './mode.js';

/** A socket per bound port, on the listen address: no privileges, no nftables. */
export class PortsMode extends ListeningMode {
  readonly name = 'ports';
  readonly #v6: boolean;

  constructor(options: ModeOptions) {
    super(options, false);
    this.#v6 = options.address.includes(':');
  }

  start(table: Table): Promise<void> {
    this.follow(table);
    return Promise.resolve();
  }

  prepare(): Promise<void> {
    return Promise.resolve();
  }

  follow(table: Table): void {
    // Port 0 has no socket of its own in ports mode: it matches every port that has one.
    this.tcp.sync(table.ports('tcp').filter((p) => p !== 0));
    this.udp.sync(table.ports('udp').filter((p) => p !== 0));
  }

  warnings(binding: Binding): string[] {
    const failure = (binding.protocol === 'tcp' ? this.tcp : this.udp).failure(binding.port);
    return failure === undefined ? [] : [failure];
  }

  /** The port's own socket, which has the listen address's family and needs the source per datagram. */
  replyRoute(_local: Address, port: number): ReplyRoute {
    return { fd: this.udp.fd(port), v6: this.#v6, setSource: true };
  }
}
