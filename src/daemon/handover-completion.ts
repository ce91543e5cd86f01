import { type Logger } from 'pino';
import { Connection } from '../handoff/connection.js';
import { native } from '../native/index.js';
import { putAcceptFd } from '../native/records.js';
import { type HandoverChannel } from './handover.js';

/**
 * How long an old daemon, past "ready", may spend giving its queued connections to the new one. The new
 * daemon reads them as fast as it dispatches, so this is only reached if it stalls or dies; the clients
 * left then are reset (they can retry) rather than kept by a daemon that is about to exit.
 */
export const HAND_ON_MS = 10_000;

/**
 * The old daemon's last part of a hand-over, after "ready": sends every waiting connection (waiting for
 * room when the channel is full), resets what cannot be sent by `deadline`, says "done" and closes the
 * channel. Never rejects: whatever happens, the caller exits afterwards.
 */
export async function handOnWaiting(
  channel: HandoverChannel,
  waiting: { label: string; conn: Connection }[],
  deadline: number,
): Promise<{ sent: number; reset: number; error?: string }> {
  let sent = 0;
  let error: string | undefined;
  try {
    for (const { label, conn } of waiting) {
      await channel.sendBy(deadline, { type: 'connection', label, protocol: conn.protocol, record: Array.from(conn.record) }, conn.fd);
      native.close(conn.fd);
      sent++;
    }
    await channel.sendBy(deadline, { type: 'done' });
  } catch (err) {
    error = (err as Error).message;
    for (const { conn } of waiting.slice(sent)) conn.reset();
  }
  channel.close();
  return { sent, reset: waiting.length - sent, ...(error === undefined ? {} : { error }) };
}

/**
 * The new daemon's last part, after "ready": the old daemon's queued connections, in order, until it says
 * "done" (or hangs up, or stalls: it is leaving either way, and what it did not send it resets).
 */
export async function receiveWaiting(
  channel: HandoverChannel,
  dispatch: (label: string, conn: Connection) => void,
  log: Logger,
): Promise<void> {
  try {
    for (
      let got = await channel.receive(30_000, true);
      got !== undefined && got.message['type'] !== 'done';
      got = await channel.receive(30_000, true)
    ) {
      const { message, fd } = got;
      if (fd < 0) continue;
      if (message['type'] !== 'connection') {
        native.close(fd);
        continue;
      }
      const record = Int32Array.from(message['record'] as number[]);
      putAcceptFd(record, fd);
      dispatch(String(message['label']), new Connection(record, message['protocol'] === 'udp' ? 'udp' : 'tcp', process.hrtime.bigint()));
    }
    log.info('took over');
  } catch (err) {
    log.warn({ error: (err as Error).message }, 'took over; the old daemon did not finish giving its queued connections');
  }
  channel.close();
}
