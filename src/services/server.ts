import { unlinkSync } from 'node:fs';
import { type RefusalReason } from '../metrics/metrics.js';
import { errnoName, native, READABLE, type WatchHandle } from '../native/index.js';
import { CREDENTIAL, credentialAt } from '../native/records.js';
import { listenUnixPath } from '../native/unix-path.js';
import { LogThrottle } from './log-throttle.js';
import { MAX_PER_CALLBACK, Peer, type ServicesOptions, type SteeredSocket } from './peer.js';
import { encode } from './protocol.js';

export type { ServicesOptions } from './peer.js';

// A peer must register soon after connecting (see peer.ts), and only so many may sit unregistered: a local
// user must not be able to hold the daemon's descriptors by connecting and saying nothing.
// Unregistered connections of all untrusted uids together, and of each trusted uid (root, the daemon's).
// Untrusted uids are counted apart, so however many of them connect, root's workers still get in.
const MAX_UNREGISTERED = 256;
// Of one untrusted uid: a worker registers in its first message, so even a service starting many workers
// at once rarely has more than a few unregistered; a user cannot take the whole budget alone.
const MAX_UNREGISTERED_PER_UID = 32;
const ACCEPT_BACKOFF_MS = 100;
// Warnings a second that peers can cause (refusals, protocol errors); the rest are counted.
const WARNINGS_PER_SECOND = 10;

/**
 * The services socket: SOCK_SEQPACKET, so every message arrives whole and a hand-off's descriptor never
 * parts from its header. Anyone may connect (mode 0666); the policy decides, per label and by the peer's
 * uid from SO_PEERCRED, who may register.
 */
export class ServicesSocket {
  readonly path: string;
  readonly #fd: number;
  readonly #watch: WatchHandle;
  readonly #options: ServicesOptions;
  readonly #peers = new Set<Peer>();
  readonly #cred = new Int32Array(CREDENTIAL.SIZE);
  /** uid -> its unregistered connections. */
  readonly #unregistered = new Map<number, number>();
  /** Unregistered connections of untrusted uids, together. */
  #untrusted = 0;
  readonly #warnings: LogThrottle;
  #nextId = 1;
  #closed = false;

  private constructor(options: ServicesOptions, fd: number) {
    this.path = options.path;
    this.#options = options;
    this.#fd = fd;
    this.#warnings = new LogThrottle(options.log, WARNINGS_PER_SECOND);
    this.#watch = native.watch(fd, READABLE, () => this.#accept());
  }

  static listen(options: ServicesOptions): ServicesSocket {
    return new ServicesSocket(options, listenUnixPath(options.path, 512, 0o666, 'seqpacket'));
  }

  /** Takes over the listening socket of a previous daemon (`fd`), at the same path. */
  static adopt(options: ServicesOptions, fd: number): ServicesSocket {
    return new ServicesSocket(options, fd);
  }

  get fd(): number {
    return this.#fd;
  }

  /** A label's new steered socket, to every version-2 worker of the label. */
  announce(socket: SteeredSocket): void {
    for (const peer of this.#peers) if (peer.registered && peer.label === socket.label) peer.sendSocket(socket);
  }

  /** After a hand-over: stop accepting (the new daemon has the socket) and let the workers go, keeping the path. */
  detach(): void {
    this.#closed = true;
    native.unwatch(this.#watch);
    native.close(this.#fd);
    for (const peer of [...this.#peers]) peer.close();
  }

  close(): void {
    this.detach();
    try {
      unlinkSync(this.path);
    } catch {
      // already gone
    }
  }

  #accept(): void {
    for (let i = 0; i < MAX_PER_CALLBACK; i++) {
      const rc = native.acceptUnix(this.#fd, this.#cred);
      if (rc === 0) return;
      if (rc < 0) {
        // Out of descriptors, most likely: the socket stays readable, so pause rather than spin.
        this.#options.log.warn({ error: errnoName(rc) }, `services socket: accept failed; pausing ${ACCEPT_BACKOFF_MS} ms`);
        native.setEvents(this.#watch, 0);
        setTimeout(() => this.#closed || native.setEvents(this.#watch, READABLE), ACCEPT_BACKOFF_MS).unref();
        return;
      }
      const { fd, pid, uid } = credentialAt(this.#cred);
      const policy = this.#options.policy;
      if (!policy.allowsAny(uid)) {
        this.#refuseAtAccept(
          fd,
          pid,
          uid,
          'not_allowed',
          'ERR_NOT_ALLOWED',
          `uid ${uid} may not register any label (the daemon's --allow LABEL=${uid} permits one)`,
        );
        continue;
      }
      const trusted = policy.trusted(uid);
      const mine = this.#unregistered.get(uid) ?? 0;
      if (trusted ? mine >= MAX_UNREGISTERED : mine >= MAX_UNREGISTERED_PER_UID || this.#untrusted >= MAX_UNREGISTERED) {
        // Not fatal for the worker library: it connects again with backoff.
        this.#refuseAtAccept(
          fd,
          pid,
          uid,
          'too_many',
          'ERR_PROTOCOL_MESSAGE',
          `too many unregistered connections (uid ${uid} has ${mine}); try again later`,
        );
        continue;
      }
      this.#countUnregistered(uid, 1);
      const peer = new Peer(this.#nextId++, fd, pid, uid, this.#options, this.#warnings, {
        registered: () => this.#countUnregistered(uid, -1),
        closed: (registered) => {
          this.#peers.delete(peer);
          if (!registered) this.#countUnregistered(uid, -1);
        },
      });
      this.#peers.add(peer);
    }
  }

  #countUnregistered(uid: number, change: 1 | -1): void {
    const n = (this.#unregistered.get(uid) ?? 0) + change;
    if (n === 0) this.#unregistered.delete(uid);
    else this.#unregistered.set(uid, n);
    if (!this.#options.policy.trusted(uid)) this.#untrusted += change;
  }

  /** Tells the peer why (best effort) and closes it, before any of its messages is read. */
  #refuseAtAccept(fd: number, pid: number, uid: number, reason: RefusalReason, code: string, message: string): void {
    this.#options.metrics.refused(reason);
    this.#warnings.warn({ worker_pid: pid, uid, code }, message);
    native.sendFd(fd, encode({ type: 'error', code, message }), -1);
    native.close(fd);
  }
}
