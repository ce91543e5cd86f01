import { createSocket, type Socket } from 'node:dgram';
import { type Endpoint } from '../services/protocol.js';
import { type RecordAddress } from '../native/records.js';
import { proxyHeader } from './proxy-protocol.js';
import { target, type Upstream } from './upstream.js';

// A flow nobody sent on for this long is closed (checked every FLOW_IDLE_MS / 2, so it lives at most 1.5 times
// as long): 30 s outlasts a DNS, QUIC-handshake or game-client retry, which is what keeps replies flowing.
export const FLOW_IDLE_MS = 30_000;
// Flows open at once. Each is a socket (a descriptor) and a few KiB; a source-spoofing flood creates one per
// forged client, and must not exhaust the daemon's descriptors: new flows are refused (the datagram dropped)
// until idle ones close. 4096 is far beyond what honest clients of one daemon need within 30 s of silence.
export const MAX_FLOWS = 4096;
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
 * specification's rule for datagrams). Flows close after FLOW_IDLE_MS without traffic; at most MAX_FLOWS are open.
 */
export class UdpRelay {
  readonly #flows = new Map<string, Flow>();
  readonly #sweep: NodeJS.Timeout;
  readonly #answer: (client: Endpoint, local: Endpoint, payload: Uint8Array) => void;
  readonly #idleMs: number;
  readonly #maxFlows: number;

  /** `answer` sends an upstream's reply to `client` from `local`. The limits default to FLOW_IDLE_MS and MAX_FLOWS. */
  constructor(
    answer: (client: Endpoint, local: Endpoint, payload: Uint8Array) => void,
    limits: { idleMs?: number; maxFlows?: number } = {},
  ) {
    this.#answer = answer;
    this.#idleMs = limits.idleMs ?? FLOW_IDLE_MS;
    this.#maxFlows = limits.maxFlows ?? MAX_FLOWS;
    this.#sweep = setInterval(() => this.#closeIdle(), this.#idleMs / 2);
    this.#sweep.unref();
  }

  get flows(): number {
    return this.#flows.size;
  }

  /** false: dropped, as a new flow past MAX_FLOWS (or an upstream that is not udp:). */
  send(upstream: Upstream, client: Endpoint & RecordAddress, local: Endpoint & RecordAddress, payload: Uint8Array): boolean {
    const key = `${upstream.label} ${client.address} ${client.port} ${local.address} ${local.port}`;
    let flow = this.#flows.get(key);
    if (flow === undefined) {
      const to = target(upstream.address);
      if (!('host' in to) || this.#flows.size >= this.#maxFlows) return false;
      const socket = createSocket(to.host.includes(':') ? 'udp6' : 'udp4');
      socket.on('message', (reply) =>
        this.#answer({ address: client.address, port: client.port }, { address: local.address, port: local.port }, reply),
      );
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
    return true;
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
    const old = Date.now() - this.#idleMs;
    for (const [key, flow] of this.#flows) if (flow.used < old) this.#close(key);
  }
}
