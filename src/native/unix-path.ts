import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { DispatcherError } from '../errors.js';
import { native } from './index.js';

/**
 * A listening Unix socket at `path` (the services and hand-over sockets are SOCK_SEQPACKET, the control
 * socket SOCK_STREAM), created with `mode` from the start. Refuses while another daemon answers there; a
 * socket file nobody answers on (left by a dead daemon) is replaced; anything else at the path is left alone.
 *
 * Bound natively, also the control socket that Node serves: Node removes the path when it closes a socket
 * it bound itself, which would break a hand-over (the new daemon serves the same socket on the same path).
 */
export function listenUnixPath(path: string, backlog: number, mode: number, type: 'seqpacket' | 'stream'): number {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  const existing = lstatSync(path, { throwIfNoEntry: false });
  if (existing !== undefined) {
    if (!existing.isSocket())
      throw new DispatcherError(
        'ERR_ALREADY_RUNNING',
        `${path} exists and is not a socket; refusing to replace it: move it away, or choose another path`,
      );
    let probe = -1;
    try {
      // The probe must be of the socket's own type: another type is refused as if nobody answered.
      probe = type === 'stream' ? native.connectStream(path, 0) : native.connectSeqpacket(path);
    } catch {
      unlinkSync(path);
    }
    if (probe >= 0) {
      native.close(probe);
      throw new DispatcherError(
        'ERR_ALREADY_RUNNING',
        `another daemon is listening on ${path}: \`dispatcher upgrade\` replaces it without a gap; a second daemon needs its own --control, --services and --state-dir`,
      );
    }
  }
  const umask = process.umask(~mode & 0o777);
  try {
    const fd = native.listenSeqpacket(path, backlog, type === 'stream');
    chmodSync(path, mode);
    return fd;
  } finally {
    process.umask(umask);
  }
}
