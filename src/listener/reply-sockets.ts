import { type Logger } from 'pino';
import { LISTEN_TRANSPARENT, LISTEN_UDP, native } from '../native/index.js';

// A reply socket nobody used for this long is closed.
const IDLE_MS = 60_000;

/**
 * tproxy mode's UDP replies. A datagram steered by nftables reached the one transparent socket, whose port
 * is not the port the client sent to; the reply must come from exactly that address and port, so it
 * leaves through a transparent socket bound to them, kept while the flow is active.
 */
export class ReplySockets {
  readonly #sockets = new Map<string, { fd: number; used: number }>();
  readonly #log: Logger;
  readonly #sweep: NodeJS.Timeout;

  constructor(log: Logger) {
    this.#log = log;
    this.#sweep = setInterval(() => this.#closeIdle(), IDLE_MS / 2);
    this.#sweep.unref();
  }

  /** The socket for `address`:`port`, opened on first use (its family is the address's); -1 if it cannot be opened. */
  get(address: string, port: number): number {
    const key = `${address} ${port}`;
    const found = this.#sockets.get(key);
    if (found !== undefined) {
      found.used = Date.now();
      return found.fd;
    }
    try {
      const fd = native.listenInet(address, port, 0, LISTEN_TRANSPARENT | LISTEN_UDP);
      this.#sockets.set(key, { fd, used: Date.now() });
      return fd;
    } catch (err) {
      this.#log.warn({ address, port, error: (err as Error).message }, 'cannot open a UDP reply socket');
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
