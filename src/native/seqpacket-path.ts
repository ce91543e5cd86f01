import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { DispatcherError } from '../errors.js';
import { native } from './index.js';

/**
 * A listening SOCK_SEQPACKET socket at `path`. Refuses while another daemon answers there; a socket file
 * nobody answers on (left by a dead daemon) is replaced; anything else at the path is left alone.
 */
export function listenSeqpacketPath(path: string, backlog: number, mode: number): number {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  const existing = lstatSync(path, { throwIfNoEntry: false });
  if (existing !== undefined) {
    if (!existing.isSocket()) throw new DispatcherError('ERR_ALREADY_RUNNING', `${path} exists and is not a socket; refusing to replace it`);
    let probe = -1;
    try {
      probe = native.connectSeqpacket(path);
    } catch {
      unlinkSync(path);
    }
    if (probe >= 0) {
      native.close(probe);
      throw new DispatcherError('ERR_ALREADY_RUNNING', `another daemon is listening on ${path}`);
    }
  }
  const fd = native.listenSeqpacket(path, backlog);
  chmodSync(path, mode);
  return fd;
}
