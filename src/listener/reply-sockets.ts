import { type Logger } from 'pino';
import { type Address, formatAddress } from '../bindings/address.js';
import { LISTEN_REUSEPORT, LISTEN_TRANSPARENT, LISTEN_UDP, native } from '../native/index.js';

// A reply socket nobody used for this long is closed.
const IDLE_MS = 60_000;
/**
 * Reply sockets kept at most: each is a descriptor, taken from the same limit as connections in flight.
 * Past it the least recently used one is closed, not a new one refused: a UDP socket holds no flow state,
 * so an evicted one costs only a re-open at its next reply, where a refusal would drop the reply.
 */
export const MAX_REPLY_SOCKETS = 1024;

/**
 * tproxy mode's UDP replies. A datagram steered by nftables reached the one transparent socket, whose port
 * is not the port the client sent to; the reply must come from exactly that address and port, so it
 * leaves through a transparent socket bound to them, kept while the flow is active.
 */
export class ReplySockets {
  // Keyed on the canonical address (`::ffff:1.2.3.4` is 1.2.3.4, one spelling per IPv6 address) and the
  // port; in recency order, least recently used first.
  readonly #sockets = new Map<string, { fd: number; used: number }>();
  readonly #log: Logger;
  readonly #max: number;
  readonly #sweep: NodeJS.Timeout;

  constructor(log: Logger, max = MAX_REPLY_SOCKETS) {
    this.#log = log;
    this.#max = max;
    this.#sweep = setInterval(() => this.#closeIdle(), IDLE_MS / 2);
    this.#sweep.unref();
  }

  get size(): number {
    return this.#sockets.size;
  }

  /** The socket for `address`:`port`, opened on first use (its family is the address's); -1 if it cannot be opened. */
  get(address: Address, port: number): number {
    const text = formatAddress(address.family, address.words);
    const key = `${text} ${port}`;
    const found = this.#sockets.get(key);
    if (found !== undefined) {
      this.#sockets.delete(key);
      this.#sockets.set(key, found);
      found.used = Date.now();
      return found.fd;
    }
    try {
      // REUSEPORT: kernel mode also binds the address for version-2 workers' own reply sockets (same owner).
      const fd = native.listenInet(text, port, 0, LISTEN_TRANSPARENT | LISTEN_UDP | LISTEN_REUSEPORT);
      for (const [oldest, s] of this.#sockets) {
        if (this.#sockets.size < this.#max) break;
        native.close(s.fd);
        this.#sockets.delete(oldest);
      }
      this.#sockets.set(key, { fd, used: Date.now() });
      return fd;
    } catch (err) {
      this.#log.warn({ address: text, port, error: (err as Error).message }, 'cannot open a UDP reply socket');
      return -1;
    }
  }

  close(): void {
    clearInterval(this.#sweep);
    for (const { fd } of this.#sockets.values()) native.close(fd);
    this.#sockets.clear();
  }

  #closeIdle(): void {
    const old = Date.now() - IDLE_MS;
    for (const [key, s] of this.#sockets) {
      if (s.used < old) {
        native.close(s.fd);
        this.#sockets.delete(key);
      }
    }
  }
}
