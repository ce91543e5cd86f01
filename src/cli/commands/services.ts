import { type ServicesResponse } from '../../control/protocol.js';
import { viewCommand } from '../command.js';
import { formatColumns } from '../format.js';

export const servicesCommand = viewCommand(
  'services',
  'registered workers and waiting connections',
  (client) => client.services(),
  formatServices,
);

function formatServices(res: ServicesResponse): string {
  const rows = res.workers.map((w) => [
    w.label,
    String(w.id),
    String(w.pid),
    String(w.uid),
    String(w.handoffs),
    `${w.inflight}/${w.window}`,
    String(res.queued[w.label] ?? 0),
  ]);
  // Labels with connections waiting and no worker.
  for (const [label, n] of Object.entries(res.queued)) {
    if (!res.workers.some((w) => w.label === label)) rows.push([label, '-', '-', '-', '0', '-', String(n)]);
  }
  return formatColumns([['LABEL', 'WORKER', 'PID', 'UID', 'HANDOFFS', 'UNACKED', 'QUEUED'], ...rows]);
}
