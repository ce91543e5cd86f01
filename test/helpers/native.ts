import { readdirSync } from 'node:fs';
import { release } from 'node:os';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { native, READABLE, type WatchHandle } from '../../src/native/index.js';
import { CREDENTIAL, credentialAt } from '../../src/native/records.js';

// SO_PASSRIGHTS came with Linux 6.16: there an accepted Unix socket refuses descriptors at the send
// (acceptUnix sets it); an older kernel delivers them and the daemon resets them.
const [major = 0, minor = 0] = release().split('.').map(Number);
export const passRights = major > 6 || (major === 6 && minor >= 16);

/** Open descriptors of a process, from /proc. */
export function openFds(pid: number | 'self' = 'self'): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/**
 * A connected SOCK_SEQPACKET pair through a listener in `dir`: [accepted end, connecting end]. Descriptors
 * go from the first to the second, as from the daemon to a worker: an accepted end refuses them
 * (SO_PASSRIGHTS, where the kernel has it).
 */
export function seqpacketPair(dir: string, name = 'pair.sock'): [number, number] {
  const path = join(dir, name);
  const listener = native.listenSeqpacket(path, 4);
  try {
    const client = native.connectSeqpacket(path);
    const out = new Int32Array(CREDENTIAL.SIZE);
    if (native.acceptUnix(listener, out) !== 1) throw new Error('acceptUnix found no connection');
    return [credentialAt(out).fd, client];
  } finally {
    native.close(listener);
  }
}

/** Resolves at the next readiness of `fd`. */
export function readable(fd: number): Promise<number> {
  return new Promise((resolve) => {
    const handle: WatchHandle = native.watch(fd, READABLE, (events) => {
      native.unwatch(handle);
      resolve(events);
    });
  });
}

/**
 * A process's open descriptors once they stop changing: a control connection the CLI just closed can
 * still be open in the daemon for a moment, and must not be counted in a baseline.
 */
export async function settledFds(pid: number): Promise<number> {
  let last = openFds(pid);
  for (let same = 0, i = 0; same < 3 && i < 50; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const now = openFds(pid);
    same = now === last ? same + 1 : 0;
    last = now;
  }
  return last;
}

/** A listener on a free port of `address`, found by trying. */
export function listenAnywhere(address: string): { fd: number; port: number } {
  for (let port = 20000 + Math.floor(Math.random() * 20000); ; port++) {
    try {
      return { fd: native.listenInet(address, port, 16, 0), port };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
  }
}

/** A client connected to `host`:`port` (from `localAddress`). */
export function connected(host: string, port: number, localAddress?: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, localAddress }, () => resolve(s));
    s.once('error', reject);
  });
}
