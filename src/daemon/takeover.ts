import { type Logger } from 'pino';
import { type Connection } from '../handoff/connection.js';
import { type ListeningMode } from '../listener/mode.js';
import { native } from '../native/index.js';
import { type Registry } from '../registry/registry.js';
import { type ChangeStore } from '../store/store.js';
import { type Endpoints } from './endpoints.js';
import { type Systemd } from './systemd.js';
import { type HandoverChannel, type InheritedSocket, offerSockets } from './handover.js';
import { HAND_ON_MS, handOnWaiting, receiveWaiting } from './handover-completion.js';

/** The parts a hand-over moves, on either side. */
export interface HandoverParts {
  store: ChangeStore;
  mode: ListeningMode;
  endpoints: Endpoints;
  registry: Registry;
  log: Logger;
  systemd: Systemd;
}

/**
 * The old daemon's side of hand-overs (see handover.ts): one at a time; up to "ready" a failure leaves this
 * daemon serving, after it this daemon always leaves (`left` resolves) .
 */
export class Handovers {
  readonly #parts: HandoverParts;
  #inProgress = false;
  readonly #left: Promise<void>;
  #leave: () => void = () => undefined;

  constructor(parts: HandoverParts) {
    this.#parts = parts;
    this.#left = new Promise<void>((resolve) => (this.#leave = resolve));
  }

  /** Resolves once a newer daemon has taken over: this one then has nothing left and should exit. */
  get left(): Promise<void> {
    return this.#left;
  }

  /** A newer daemon connected. Never rejects. */
  readonly offer = async (channel: HandoverChannel): Promise<void> => {
    const { store, mode, endpoints, log } = this.#parts;
    const asked = await channel.receive().catch(() => undefined);
    if (asked?.message['type'] !== 'takeover') return channel.close();
    // Only the hand-over that set the flag clears it: a second one must neither start nor end the first.
    if (this.#inProgress) return channel.refuse('another daemon is taking over already: try again once it has finished');
    this.#inProgress = true;
    try {
      await store.freeze();
      log.info('handing over to a new daemon');
      await offerSockets(channel, [...endpoints.sockets(), ...mode.sockets()]);
    } catch (err) {
      // The new daemon closes what it inherited and unlinks nothing when it fails, so nothing was lost here.
      log.error({ error: (err as Error).message }, 'hand-over failed; this daemon carries on');
      store.thaw();
      this.#inProgress = false;
      return channel.close();
    }
    await this.#handOn(channel);
  };

  /** After "ready": this daemon stops accepting, gives its queued connections on, and always exits. */
  async #handOn(channel: HandoverChannel): Promise<void> {
    const { mode, endpoints, registry, log } = this.#parts;
    try {
      // Both daemons accept from the same queues now; this one stops, the new one carries on.
      mode.detach();
      endpoints.detach();
      const result = await handOnWaiting(channel, registry.takeWaiting(), Date.now() + HAND_ON_MS);
      if (result.error === undefined) log.info(result, 'handed over');
      else log.error(result, 'handed over, resetting the queued connections that could not be sent');
    } catch (err) {
      log.error({ error: (err as Error).message }, 'hand-over failed after the new daemon was ready; this daemon exits');
    } finally {
      this.#leave();
    }
  }
}

/**
 * The new daemon's side. Until "ready" it watches nothing it inherited, so the old daemon alone serves; a
 * failure closes what was inherited (plain closes: the sockets, their queues and the paths stay the old
 * daemon's, which carries on when the channel closes). `dispatch` takes the old daemon's queued connections.
 */
export async function takeOver(
  channel: HandoverChannel,
  sockets: InheritedSocket[],
  parts: HandoverParts,
  dispatch: (label: string, conn: Connection) => void,
): Promise<void> {
  const { store, mode, endpoints, log } = parts;
  // What is not yet some part's to close: closed here on failure, and at the end (e.g. no --metrics).
  const unused = new Set(sockets.map((s) => s.fd));
  try {
    for (const s of sockets) {
      if (s.kind !== 'tcp' && s.kind !== 'udp') continue;
      mode.adopt({ kind: s.kind, port: s.port, fd: s.fd });
      unused.delete(s.fd);
    }
    await mode.start(store.table);
    await endpoints.adopt(sockets, unused);
    mode.watchAdopted();
    // Before "ready", after which the old daemon exits: systemd must already follow this one.
    parts.systemd.mainPid();
    channel.send({ type: 'ready' });
    for (const fd of unused) native.close(fd);
  } catch (err) {
    mode.detach();
    endpoints.detach();
    for (const fd of unused) native.close(fd);
    channel.close();
    throw err;
  }
  await receiveWaiting(channel, dispatch, log);
  // After "ready" the old daemon always leaves, and never unlinks: the paths are this daemon's now.
  endpoints.claimPaths();
}
