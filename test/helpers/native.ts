import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { native, READABLE, type WatchHandle } from '../../src/native/index.js';

/** Open descriptors of a process, from /proc. */
export function openFds(pid: number | 'self' = 'self'): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** A connected SOCK_SEQPACKET pair through a listener in `dir`: [client, server side]. */
export function seqpacketPair(dir: string, name = 'pair.sock'): [number, number] {
  const path = join(dir, name);
  const listener = native.listenSeqpacket(path, 4);
  try {
    const client = native.connectSeqpacket(path);
    const out = new Int32Array(4);
    if (native.acceptUnix(listener, out) !== 1) throw new Error('acceptUnix found no connection');
    return [client, out[0]!];
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
