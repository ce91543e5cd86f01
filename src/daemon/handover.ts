import { DispatcherError } from '../errors.js';
import { MAX_FDS, native, READABLE, EAGAIN, type WatchHandle } from '../native/index.js';

/**
 * Zero-downtime hand-over between two daemons (`dispatcher daemon --takeover`, `dispatcher upgrade`), on a
 * SOCK_SEQPACKET socket next to the control socket (`<control>.handover`):
 *
 *   new                                   old
 *   takeover                         ──>
 *                                    <──  socket {kind, port} + fd     every listening socket: tcp, udp,
 *                                    <──  ...                          control, services, handover
 *                                    <──  sockets-done                 (old stops taking control changes)
 *   (loads the state file, watches the sockets: both daemons accept now, from the same kernel queues)
 *   ready                            ──>
 *                                    <──  connection {record} + fd     its queued connections, not dropped
 *                                    <──  done                         then it lets its workers go (they
 *                                                                      reconnect to the new daemon) and exits
 *
 * The listening sockets are the same kernel sockets throughout, so a connection in an accept queue during
 * the swap is accepted by one daemon or the other, never refused.
 */
export type SocketKind = 'tcp' | 'udp' | 'control' | 'services' | 'handover';

export interface InheritedSocket {
  kind: SocketKind;
  port: number;
  fd: number;
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
    if (rc < 0) throw new DispatcherError('ERR_STATE', `hand-over: send failed (errno ${-rc})`);
  }

  /** The next message (and its descriptor, -1 if none); undefined when the peer closed. */
  receive(timeoutMs = 10_000): Promise<{ message: Record<string, unknown>; fd: number } | undefined> {
    return new Promise((resolve, reject) => {
      const attempt = (): boolean => {
        const n = native.recvMsg(this.#fd, this.#data, this.#fds);
        if (n === -EAGAIN) return false;
        cleanup();
        if (n <= 0) {
          resolve(undefined);
          return true;
        }
        try {
          resolve({ message: JSON.parse(decoder.decode(this.#data.subarray(0, n))) as Record<string, unknown>, fd: this.#fds[0]! > 0 ? this.#fds[1]! : -1 });
        } catch (err) {
          reject(err);
        }
        return true;
      };
      let watch: WatchHandle | undefined;
      const timer = setTimeout(() => {
        cleanup();
        reject(new DispatcherError('ERR_STATE', `hand-over: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        if (watch !== undefined) native.unwatch(watch);
        watch = undefined;
      };
      if (!attempt()) watch = native.watch(this.#fd, READABLE, () => void attempt());
    });
  }

  close(): void {
    native.close(this.#fd);
  }
}

/** The new daemon's side: connect, ask, and collect the old daemon's sockets. */
export async function requestHandover(controlPath: string): Promise<{ channel: HandoverChannel; sockets: InheritedSocket[] }> {
  let fd: number;
  try {
    fd = native.connectSeqpacket(handoverPath(controlPath));
  } catch (err) {
    throw new DispatcherError('ERR_DAEMON_UNREACHABLE', `--takeover: no daemon to take over from at ${handoverPath(controlPath)} (${(err as Error).message})`);
  }
  const channel = new HandoverChannel(fd);
  channel.send({ type: 'takeover' });
  const sockets: InheritedSocket[] = [];
  for (;;) {
    const got = await channel.receive();
    if (got === undefined) throw new DispatcherError('ERR_STATE', 'hand-over: the old daemon closed before handing over its sockets');
    const { message, fd: socket } = got;
    if (message['type'] === 'sockets-done') return { channel, sockets };
    if (message['type'] === 'error') throw new DispatcherError('ERR_STATE', `hand-over refused: ${String(message['message'])}`);
    if (message['type'] !== 'socket' || socket < 0) throw new DispatcherError('ERR_STATE', `hand-over: unexpected ${JSON.stringify(message)}`);
    sockets.push({ kind: message['kind'] as SocketKind, port: Number(message['port']), fd: socket });
  }
}
