import { type Address } from '../bindings/address.js';
import { DispatcherError } from '../errors.js';
import { type Table } from '../table/table.js';
import { ListeningMode, type ModeOptions, type ReplyRoute } from './mode.js';
import { applyRuleset, removalRuleset, renderRuleset } from './nftables.js';
import { ReplySockets } from './reply-sockets.js';

/**
 * One transparent socket per protocol, to which nftables' tproxy steers every bound prefix and port; the
 * rules are rewritten in one `nft -f` transaction per change, before the new table is served.
 */
export class TproxyMode extends ListeningMode {
  readonly name = 'tproxy';
  readonly #replies: ReplySockets;
  #installed = false;

  constructor(options: ModeOptions) {
    super(options, true);
    this.#replies = new ReplySockets(options.log);
  }

  async start(table: Table): Promise<void> {
    this.tcp.sync([0]);
    this.udp.sync([0]);
    const failure = this.tcp.failure(0) ?? this.udp.failure(0);
    if (failure !== undefined) {
      throw new DispatcherError(
        'ERR_TPROXY',
        `tproxy mode: ${failure.replace(/; retrying.*$/, '')} (transparent sockets need CAP_NET_ADMIN)`,
      );
    }
    await this.prepare(table);
  }

  async prepare(table: Table): Promise<void> {
    await applyRuleset(renderRuleset(table.bindings(), { tcp: this.tcp.bound(0), udp: this.udp.bound(0) }));
    this.#installed = true;
  }

  follow(): void {}

  warnings(): string[] {
    return [];
  }

  /** A transparent socket bound to exactly the source (so it has its family). */
  replyRoute(local: Address, port: number): ReplyRoute {
    return { fd: this.#replies.get(local, port), v6: local.family === 6, setSource: false };
  }

  override detach(): void {
    super.detach();
    this.#installed = false; // the rules are the new daemon's
  }

  override async close(): Promise<void> {
    await super.close();
    this.#replies.close();
    if (this.#installed) await applyRuleset(removalRuleset());
    this.#installed = false;
  }
}
