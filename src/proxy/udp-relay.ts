import { createSocket, type Socket } from 'node:dgram';
import { type Endpoint } from '../services/protocol.js';
import { proxyHeader, type RecordAddress } from './proxy-protocol.js';
import { target, type Upstream } from './upstream.js';

// A flow nobody sent on for this long is closed.
const IDLE_MS = 30_000;
// Datagrams held for a flow whose socket is still connecting (a host name being resolved); more are dropped.
const MAX_PENDING = 64;

interface Flow {
  socket: Socket;
  used: number;
  /** Datagrams that arrived before the socket finished connecting. */
  pending: Buffer[] | undefined;
}

/**
 * Proxy mode for UDP: each client flow (client and dialled address) gets a socket connected to the label's
 * `udp:` upstream, so the upstream's answers can be told apart and sent back to the right client, from the
 * address it dialled. With PROXY v2, every datagram to the upstream starts with the header (the
 * specification's rule for datagrams). Flows close after IDLE_MS without traffic.
 */
export class UdpRelay {
  readonly #flows = new Map<string, Flow>();
  readonly #sweep: NodeJS.Timeout;
  readonly #answer: (client: Endpoint, local: Endpoint, payload: Uint8Array) => void;

  /** `answer` sends an upstream's reply to `client` from `local`. */
  constructor(answer: (client: Endpoint, local: Endpoint, payload: Uint8Array) => void) {
    this.#answer = answer;
    this.#sweep = setInterval(() => this.#closeIdle(), IDLE_MS / 2);
    this.#sweep.unref();
  }

  send(upstream: Upstream, client: Endpoint & RecordAddress, local: Endpoint & RecordAddress, payload: Uint8Array): void {
    const key = `${upstream.label} ${client.address} ${client.port} ${local.address} ${local.port}`;
    let flow = this.#flows.get(key);
    if (flow === undefined) {
      const to = target(upstream.address);
      if (!('host' in to)) return;
      const socket = createSocket(to.host.includes(':') ? 'udp6' : 'udp4');
      socket.on('message', (reply) => this.#answer({ address: client.address, port: client.port }, { address: local.address, port: local.port }, reply));
      socket.on('error', () => this.#close(key));
      const created: Flow = { socket, used: 0, pending: [] };
      socket.connect(to.port, to.host, () => {
        for (const datagram of created.pending ?? []) socket.send(datagram);
        created.pending = undefined;
      });
      flow = created;
      this.#flows.set(key, flow);
    }
    flow.used = Date.now();
    const header = proxyHeader(upstream.proxy_protocol, 'udp', client, client.address, local, local.address);
    // A copy either way: `payload` is the receive buffer, reused by the next batch.
    const datagram = header === undefined ? Buffer.from(payload) : Buffer.concat([header, payload]);
    // A dgram socket takes sends only once connected.
    if (flow.pending === undefined) flow.socket.send(datagram);
    else if (flow.pending.length < MAX_PENDING) flow.pending.push(datagram);
  }

  close(): void {
    clearInterval(this.#sweep);
    for (const key of [...this.#flows.keys()]) this.#close(key);
  }

  #close(key: string): void {
    this.#flows.get(key)?.socket.close();
    this.#flows.delete(key);
  }

  #closeIdle(): void {
    const old = Date.now() - IDLE_MS;
    for (const [key, flow] of this.#flows) if (flow.used < old) this.#close(key);
  }
}
