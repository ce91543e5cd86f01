import { DispatcherError } from '../errors.js';
import { MAX_FDS, native, READABLE, EAGAIN, errnoName, WRITABLE } from '../native/index.js';

/**
 * Zero-downtime hand-over between two daemons (`dispatcher daemon --takeover`, `dispatcher upgrade`), on a
 * SOCK_SEQPACKET socket next to the control socket (`<control>.handover`):
 *
 *   new                                   old
 *   takeover                         ──>
 *                                    <──  socket {kind, port} + fd     every listening socket: tcp, udp,
 *                                    <──  ...                          control, services, handover, metrics
 *                                    <──  sockets-done                 (old stops taking control changes)
 *   (loads the state file and does everything that can fail, watching nothing yet; a failure closes what
 *   it inherited, unlinks nothing, and leaves: the old daemon sees the channel close and carries on)
 *   (then watches the sockets: both daemons accept now, from the same kernel queues)
 *   ready                            ──>
 *                                    <──  connection {record} + fd     its queued connections, not dropped
 *                                    <──  done                         then it exits; its workers reconnect
 *                                                                      to the new daemon by themselves
 *
 * From "ready" on the old daemon always leaves: what it cannot send before a deadline it resets. The new
 * daemon owns the paths once the old one has said "done" (or hung up after "ready").
 *
 * The listening sockets are the same kernel sockets throughout, so a connection in an accept queue during
 * the swap is accepted by one daemon or the other, never refused.
 */
export type SocketKind = 'tcp' | 'udp' | 'control' | 'services' | 'handover' | 'metrics';

export interface InheritedSocket {
  kind: SocketKind;
  port: number;
  fd: number;
  /** metrics: the HOST:PORT it serves, so a new daemon with another --metrics binds its own. */
  address?: string;
}

export const handoverPath = (controlPath: string): string => `${controlPath}.handover`;

const MAX = 4096;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One message on the hand-over socket, with at most one descriptor. */
export class HandoverChannel {
  readonly #fd: number;
  readonly #data = new Uint8Array(MAX);
  readonly #fds = new Int32Array(MAX_FDS + 1);

  constructor(fd: number) {
    this.#fd = fd;
  }

  send(message: Record<string, unknown>, fd = -1): void {
    const rc = native.sendFd(this.#fd, encoder.encode(JSON.stringify(message)), fd);
    if (rc < 0) throw sendFailed(rc);
  }

  /**
   * Sends, waiting while the peer's buffer is full (a thousand queued connections do not fit in it) until
   * `deadline` (a Date.now() time). Rejects on any other failure or at the deadline; `fd` stays the caller's.
   */
  async sendBy(deadline: number, message: Record<string, unknown>, fd = -1): Promise<void> {
    const data = encoder.encode(JSON.stringify(message));
    for (let rc = native.sendFd(this.#fd, data, fd); rc < 0; rc = native.sendFd(this.#fd, data, fd)) {
      if (rc !== -EAGAIN) throw sendFailed(rc);
      await this.#wait(WRITABLE, deadline - Date.now(), 'room to send');
    }
  }

  /**
   * The next message; undefined when the peer closed. With `withFd`, the first descriptor that came with it
   * (-1 if none) is the caller's; every other descriptor is closed here, so a peer cannot leak them into us.
   */
  async receive(timeoutMs = 10_000, withFd = false): Promise<{ message: Record<string, unknown>; fd: number } | undefined> {
    const deadline = Date.now() + timeoutMs;
    let n = native.recvMsg(this.#fd, this.#data, this.#fds);
    for (; n === -EAGAIN; n = native.recvMsg(this.#fd, this.#data, this.#fds))
      await this.#wait(READABLE, deadline - Date.now(), 'an answer');
    const count = n > 0 ? this.#fds[0]! : 0;
    const fd = withFd && count > 0 ? this.#fds[1]! : -1;
    for (let i = fd < 0 ? 1 : 2; i <= count; i++) native.close(this.#fds[i]!);
    if (n <= 0) return undefined;
    try {
      return { message: JSON.parse(decoder.decode(this.#data.subarray(0, n))) as Record<string, unknown>, fd };
    } catch (err) {
      if (fd >= 0) native.close(fd);
      throw new DispatcherError('ERR_STATE', `hand-over: a message that is not JSON (${(err as Error).message})`);
    }
  }

  /** Says why to the peer (best effort: it may be gone) and closes. */
  refuse(why: string): void {
    native.sendFd(this.#fd, encoder.encode(JSON.stringify({ type: 'error', message: why })), -1);
    this.close();
  }

  /** Resolves when the channel is ready for `events` (or has failed: the next call says how). */
  #wait(events: number, ms: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        native.unwatch(watch);
      };
      const timer = setTimeout(
        () => {
          done();
          reject(new DispatcherError('ERR_STATE', `hand-over: no ${what} in time`));
        },
        Math.max(0, ms),
      );
      const watch = native.watch(this.#fd, events, () => {
        done();
        resolve();
      });
    });
  }

  close(): void {
    native.close(this.#fd);
  }
}

/**
 * The old daemon's side, up to "ready": sends its sockets and waits. Rejects if the new daemon fails first
 * (it closes the channel): the old daemon then carries on.
 */
export async function offerSockets(channel: HandoverChannel, sockets: InheritedSocket[]): Promise<void> {
  for (const { fd, ...s } of sockets) channel.send({ type: 'socket', ...s }, fd);
  channel.send({ type: 'sockets-done' });
  const ready = await channel.receive(30_000);
  if (ready?.message['type'] !== 'ready') throw new DispatcherError('ERR_STATE', 'the new daemon closed the hand-over before it was ready');
}

/** The new daemon's side: connect, ask, and collect the old daemon's sockets. */
export async function requestHandover(controlPath: string): Promise<{ channel: HandoverChannel; sockets: InheritedSocket[] }> {
  let fd: number;
  try {
    fd = native.connectSeqpacket(handoverPath(controlPath));
  } catch (err) {
    throw new DispatcherError(
      'ERR_DAEMON_UNREACHABLE',
      `--takeover: no daemon to take over from at ${handoverPath(controlPath)} (${(err as Error).message})`,
    );
  }
  const channel = new HandoverChannel(fd);
  const sockets: InheritedSocket[] = [];
  try {
    channel.send({ type: 'takeover' });
    for (;;) {
      const got = await channel.receive(10_000, true);
      if (got === undefined) throw new DispatcherError('ERR_STATE', 'hand-over: the old daemon closed before handing over its sockets');
      const { message, fd: socket } = got;
      if (message['type'] === 'socket' && socket >= 0) {
        const address = message['address'];
        sockets.push({
          kind: message['kind'] as SocketKind,
          port: Number(message['port']),
          fd: socket,
          ...(typeof address === 'string' ? { address } : {}),
        });
        continue;
      }
      if (socket >= 0) native.close(socket);
      if (message['type'] === 'sockets-done') return { channel, sockets };
      if (message['type'] === 'error') throw new DispatcherError('ERR_STATE', `hand-over refused: ${String(message['message'])}`);
      throw new DispatcherError('ERR_STATE', `hand-over: unexpected ${JSON.stringify(message)}`);
    }
  } catch (err) {
    // Plain closes: the sockets stay the old daemon's, which carries on when this channel closes.
    for (const s of sockets) native.close(s.fd);
    channel.close();
    throw err;
  }
}

function sendFailed(rc: number): DispatcherError {
  return new DispatcherError('ERR_STATE', `hand-over: send failed (${errnoName(rc)})`);
}
