import { type Address, parseAddress } from '../bindings/address.js';
import { type Metrics } from '../metrics/metrics.js';
import { native } from '../native/index.js';
import { putAddress, putSendData, SEND } from '../native/records.js';
import { type BinaryReply, type Endpoint, type ReplyHeader } from '../services/protocol.js';
import { type Worker } from '../registry/registry.js';
import { type ListeningMode } from '../listener/mode.js';
import { type Current } from './current.js';
import { type UdpFlows } from './udp-flows.js';

export type ReplyResult = 'sent' | 'not_bound' | 'failed';

/**
 * UDP answers: a worker's replies and a UDP upstream's, sent to the client from exactly the address and
 * port it sent to, through the listening mode's socket for that address.
 */
export class UdpReplies {
  readonly #current: Current;
  readonly #mode: ListeningMode;
  readonly #flows: UdpFlows;
  readonly #metrics: Metrics;
  // One send record, reused: [offset, length, destination, source].
  readonly #record = new Int32Array(SEND.SIZE);

  constructor(current: Current, mode: ListeningMode, flows: UdpFlows, metrics: Metrics) {
    this.#current = current;
    this.#mode = mode;
    this.#flows = flows;
    this.#metrics = metrics;
  }

  /**
   * A worker's reply. It may only answer a flow its label received recently (see udp-flows.ts), from an
   * address and port its label is still bound to, so a worker cannot send as another service, from an
   * address that is not local, or to a host that sent it nothing.
   */
  readonly fromWorker = (worker: Worker, reply: ReplyHeader, payload: Uint8Array): void => {
    this.#metrics.reply(worker.label, this.send(reply.client, reply.local, payload, worker.label));
  };

  /** A worker's reply under the binary header (version 3): the same checks, with no address text to parse. */
  readonly fromWorkerBinary = (worker: Worker, reply: BinaryReply): void => {
    const { client, local } = reply;
    this.#metrics.reply(worker.label, this.#sendTo(client, client.port, local, local.port, reply.payload, worker.label));
  };

  /**
   * Sends `payload` to `client` from exactly `local` (an address and port the daemon receives on). With
   * `label`, only on a flow that label received, and if `local` is still bound to it ('not_bound' otherwise).
   */
  send(clientEnd: Endpoint, localEnd: Endpoint, payload: Uint8Array, label?: string): ReplyResult {
    let local;
    let client;
    try {
      local = parseAddress(localEnd.address);
    } catch {
      return label === undefined ? 'failed' : 'not_bound';
    }
    try {
      client = parseAddress(clientEnd.address);
    } catch {
      return label === undefined || this.#bound(local, localEnd.port, label) ? 'failed' : 'not_bound';
    }
    return this.#sendTo(client, clientEnd.port, local, localEnd.port, payload, label);
  }

  #bound(local: Address, localPort: number, label: string): boolean {
    return this.#current.table.lookupLabel('udp', local.family, local.words, localPort) === label;
  }

  #sendTo(client: Address, clientPort: number, local: Address, localPort: number, payload: Uint8Array, label?: string): ReplyResult {
    if (label !== undefined && !this.#bound(local, localPort, label)) return 'not_bound';
    if (label !== undefined && !this.#flows.allows(label, client, clientPort, local, localPort, Date.now())) return 'not_bound';
    const route = this.#mode.replyRoute(local, localPort);
    const r = this.#record;
    putSendData(r, 0, payload.length);
    putAddress(r, SEND.DESTINATION, client.family, client.words, clientPort);
    putAddress(r, SEND.SOURCE, route.setSource ? local.family : 0, local.words, localPort);
    return route.fd >= 0 && native.sendDatagrams(route.fd, payload, r, 1, route.v6) === 1 ? 'sent' : 'failed';
  }
}
