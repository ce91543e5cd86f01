import { createRequire } from 'node:module';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { checkRecordSizes } from './records.js';

/**
 * The typed face of the native addon (native/*.c), which does only what Node has no API for: descriptor passing,
 * peer credentials, batch accept with local addresses, SOCK_SEQPACKET, reset-on-close and readiness
 * watching of raw descriptors.
 *
 * It also carries UDP the way the dispatcher needs it: batches of datagrams with each one's destination
 * address (IP_ORIGDSTADDR, right for ports and tproxy mode alike), and replies from a chosen source address.
 *
 * Ownership: a returned descriptor is the caller's to close. `sendFd` never closes what it sends; after
 * success the caller closes its copy, after any failure (-EAGAIN included) it still owns it.
 * `sendConnections` closes the descriptors of the messages that went, and leaves the rest to the caller. `recvMsg`
 * hands over every descriptor that arrived or closes them all. I/O calls return -errno instead of
 * throwing, so the hot path allocates no Error; set-up calls throw errors whose `code` is the errno name.
 *
 * The records these calls fill and read are laid out, read and written in records.ts.
 */
interface Addon {
  ACCEPT_RECORD: number;
  MAX_FDS: number;
  /** flags: LISTEN_*; `mark`: SO_MARK for what the socket sends (0: none). */
  listenInet(address: string, port: number, backlog: number, flags: number, mark?: number): number;
  /** `stream`: a SOCK_STREAM socket instead (the control socket). */
  listenSeqpacket(path: string, backlog: number, stream?: boolean): number;
  connectSeqpacket(path: string): number;
  acceptBatch(fd: number, out: Int32Array, max: number, skipLocal?: boolean): number;
  acceptUnix(fd: number, out: Int32Array): number;
  sendFd(sock: number, data: Uint8Array, fd: number): number;
  /**
   * Hands off the first `count` accept records of `records` in one sendmmsg: each a connection header
   * (`prefix`, up to and including `"client":{"address":"`, then the record's addresses and ports) with the
   * record's descriptor. How many went, in order, their descriptors closed; the rest are still the caller's
   * (-errno when none went).
   */
  sendConnections(sock: number, prefix: Uint8Array, records: Int32Array, count: number): number;
  recvMsg(sock: number, data: Uint8Array, fds: Int32Array): number;
  peerCred(fd: number): [number, number, number] | number;
  close(fd: number): number;
  /** RST for a TCP socket; never blocks, whatever `fd` is (a non-socket is closed on a thread): for descriptors from peers. */
  reset(fd: number): number;
  watch(fd: number, events: number, callback: (events: number) => void): WatchHandle;
  setEvents(handle: WatchHandle, events: number): void;
  unwatch(handle: WatchHandle): void;
  DATAGRAM_RECORD: number;
  DATAGRAM_SLOT: number;
  DATAGRAM_BATCH: number;
  sockName(fd: number, out: Int32Array): number;
  recvDatagrams(fd: number, data: Uint8Array, meta: Int32Array, count: number): number;
  SEND_RECORD: number;
  sendDatagrams(fd: number, data: Uint8Array, records: Int32Array, count: number, v6: boolean): number;
  /**
   * Sizes a socket's receive and send buffers (bytes; 0 leaves one): SO_RCVBUFFORCE / SO_SNDBUFFORCE with
   * CAP_NET_ADMIN, else SO_RCVBUF / SO_SNDBUF, capped at net.core.rmem_max / wmem_max. [receive, send] as
   * the kernel then reports them (twice what it was given), or -errno.
   */
  setBufferSizes(fd: number, receive: number, send: number): [number, number] | number;
  /**
   * Copies a <-> b with splice(2) once b's connect (connectStream) is made: the relay waits for it at most
   * `timeoutMs`, sends `header` (up to 108 bytes, may be empty) and only then reads a. 0, and a and b are the
   * relay's until `done` (status 0, or 1 for a failure); or -errno (-EMFILE: no descriptors for its pipes): a
   * and b are still the caller's, `done` never runs. If the connect fails first, b is closed, a is the
   * caller's again and `done`'s status says why: RELAY_TIMED_OUT, RELAY_HEADER_UNSENT or the connect's
   * -errno. Both must be non-blocking.
   */
  relay(
    a: number,
    b: number,
    done: (bytesAtoB: number, bytesBtoA: number, status: number) => void,
    timeoutMs: number,
    header: Uint8Array,
  ): number;
  /** A non-blocking connect under way to `address`:`port` (port 0: a Unix socket path). */
  connectStream(address: string, port: number): number;
  /**
   * One sd_notify datagram to `path` (systemd's $NOTIFY_SOCKET; a leading '@' is the abstract namespace),
   * with the first `count` descriptors of `fds` (FDSTORE=1): bytes sent, or -errno. Closes nothing.
   */
  notify(path: string, message: Uint8Array, fds: Int32Array, count: number): number;
  /** A descriptor systemd passed: made non-blocking and close-on-exec; 0 or -errno. */
  inherited(fd: number): number;
  /** A duplicate of descriptor `fd` of process `pid` (pidfd_open + pidfd_getfd), close-on-exec: the caller's to close. Throws (EPERM, ESRCH, EBADF). */
  pidfdGetfd(pid: number, fd: number): number;
  /** What a socket is: [family 4 | 6 (0: neither), type 1 stream | 2 datagram, listening 0 | 1]. Throws if `fd` is not a socket. */
  socketInfo(fd: number): [number, number, number];
  /**
   * Makes a socket transparent (IP_TRANSPARENT, IPV6_TRANSPARENT on AF_INET6: the one flag, so a dual-stack socket is transparent to
   * IPv4 too) and sets its SO_MARK (0: leaves it). Throws.
   */
  setTransparent(fd: number, mark: number): void;
}

declare const watchHandle: unique symbol;
export type WatchHandle = { readonly [watchHandle]: true };

// node-gyp-build takes native/build/Release when the addon was compiled here (the repo, or an install that
// found no prebuild that loads), else the package's prebuild for this platform (native/prebuilds/, made by
// scripts/pack.sh): one N-API build serves every Node version.
const require = createRequire(import.meta.url);
const load = require('node-gyp-build') as (dir: string) => unknown;
const addon = load(fileURLToPath(new URL('../../native', import.meta.url))) as Addon;
checkRecordSizes(addon);

export const native = addon;

/** Int32s of an acceptBatch record (records.ts: ACCEPT). */
export const ACCEPT_RECORD = addon.ACCEPT_RECORD;
/** recvMsg's fds array must hold MAX_FDS + 1 entries. */
export const MAX_FDS = addon.MAX_FDS;

/**
 * recvDatagrams: datagram i at data[i * DATAGRAM_SLOT], its record (records.ts: DATAGRAM) at
 * meta[i * DATAGRAM_RECORD]; at most DATAGRAM_BATCH a call. sendDatagrams' records: records.ts, SEND.
 */
export const DATAGRAM_RECORD = addon.DATAGRAM_RECORD;
export const DATAGRAM_SLOT = addon.DATAGRAM_SLOT;
export const DATAGRAM_BATCH = addon.DATAGRAM_BATCH;
export const SEND_RECORD = addon.SEND_RECORD;

/**
 * The buffers the daemon gives its UDP sockets and its end of each worker connection, and a worker its end:
 * room for a burst of a few thousand small datagrams (each costs about 1 KB of buffer, headers included)
 * while the reader is busy. Beyond net.core.rmem_max / wmem_max only with CAP_NET_ADMIN.
 */
export const BURST_BUFFER = 4 << 20;

export const LISTEN_TRANSPARENT = 1;
export const LISTEN_UDP = 2;
/** SO_REUSEPORT: a restarted daemon binds its label sockets beside those its workers still hold. */
export const LISTEN_REUSEPORT = 4;

/** relay()'s status when the upstream's connect did not finish in time, or took no PROXY header. */
export const RELAY_TIMED_OUT = 2;
export const RELAY_HEADER_UNSENT = 3;

export const READABLE = 1;
export const WRITABLE = 2;

export const EAGAIN = constants.errno.EAGAIN;
export const EMSGSIZE = constants.errno.EMSGSIZE;
export const EMFILE = constants.errno.EMFILE;
export const ENFILE = constants.errno.ENFILE;

/** "EAGAIN" for -11, and so on: for logs and errors from a -errno result. */
export function errnoName(negative: number): string {
  const n = -negative;
  for (const [name, value] of Object.entries(constants.errno)) if (value === n) return name;
  return `errno ${n}`;
}
