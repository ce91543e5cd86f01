import { createRequire } from 'node:module';
import { constants } from 'node:os';

/**
 * The typed face of native/dispatcher.c, which does only what Node has no API for: descriptor passing,
 * peer credentials, batch accept with local addresses, SOCK_SEQPACKET, reset-on-close and readiness
 * watching of raw descriptors.
 *
 * Ownership: a returned descriptor is the caller's to close. `sendFd` never closes what it sends; after
 * success the caller closes its copy, after any failure (-EAGAIN included) it still owns it. `recvMsg`
 * hands over every descriptor that arrived or closes them all. I/O calls return -errno instead of
 * throwing, so the hot path allocates no Error; set-up calls throw errors whose `code` is the errno name.
 */
interface Addon {
  ACCEPT_RECORD: number;
  MAX_FDS: number;
  listenInet(address: string, port: number, backlog: number, flags: number): number;
  listenSeqpacket(path: string, backlog: number): number;
  connectSeqpacket(path: string): number;
  acceptBatch(fd: number, out: Int32Array, max: number): number;
  acceptUnix(fd: number, out: Int32Array): number;
  sendFd(sock: number, data: Uint8Array, fd: number): number;
  recvMsg(sock: number, data: Uint8Array, fds: Int32Array): number;
  peerCred(fd: number): [number, number, number] | number;
  close(fd: number): number;
  reset(fd: number): number;
  watch(fd: number, events: number, callback: (events: number) => void): WatchHandle;
  setEvents(handle: WatchHandle, events: number): void;
  unwatch(handle: WatchHandle): void;
}

declare const watchHandle: unique symbol;
export type WatchHandle = { readonly [watchHandle]: true };

const require = createRequire(import.meta.url);
const addon = require('../../native/build/Release/dispatcher.node') as Addon;

export const native = addon;

/** acceptBatch record: [fd, local family, local words x4, local port, peer family, peer words x4, peer port]. */
export const ACCEPT_RECORD = addon.ACCEPT_RECORD;
/** recvMsg's fds array must hold MAX_FDS + 1 entries. */
export const MAX_FDS = addon.MAX_FDS;

export const LISTEN_TRANSPARENT = 1;
export const LISTEN_UDP = 2;

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
