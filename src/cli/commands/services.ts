import { type ServicesResponse, type WorkerJSON } from '../../control/protocol.js';
import { viewCommand } from '../command.js';
import { type Column, formatTable } from '../format.js';

export const servicesCommand = viewCommand(
  'services',
  'registered workers and waiting connections',
  (client) => client.services(),
  formatServices,
);

/** A row: a worker, or a label with connections waiting and no worker. */
interface Row {
  label: string;
  worker?: WorkerJSON;
  queued: number;
}

const of = (row: Row, cell: (w: WorkerJSON) => string): string => (row.worker === undefined ? '-' : cell(row.worker));

const COLUMNS: Column<Row>[] = [
  { title: 'LABEL', cell: (r) => r.label },
  { title: 'WORKER', cell: (r) => of(r, (w) => String(w.id)), right: true },
  { title: 'PID', cell: (r) => of(r, (w) => String(w.pid)), right: true },
  { title: 'UID', cell: (r) => of(r, (w) => String(w.uid)), right: true },
  { title: 'HANDOFFS', cell: (r) => of(r, (w) => String(w.handoffs)), right: true },
  { title: 'UNACKED', cell: (r) => of(r, (w) => `${w.inflight}/${w.window}`), right: true },
  { title: 'QUEUED', cell: (r) => String(r.queued), right: true },
];

function formatServices(res: ServicesResponse): string {
  const rows: Row[] = res.workers.map((w) => ({ label: w.label, worker: w, queued: res.queued[w.label] ?? 0 }));
  for (const [label, queued] of Object.entries(res.queued)) if (!res.workers.some((w) => w.label === label)) rows.push({ label, queued });
  return formatTable(COLUMNS, rows, 'no workers registered');
}
