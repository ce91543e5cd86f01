import { controlClient, defineCommand } from '../command.js';
import { formatColumns, print, printJSON } from '../format.js';

export const servicesCommand = defineCommand({
  command: 'services',
  describe: 'registered workers and waiting connections',
  builder: (y) => y.option('json', { type: 'boolean', default: false }),
  handler: async (argv) => {
    const res = await controlClient(argv).services();
    if (argv.json) return printJSON(res);
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
    print(formatColumns([['LABEL', 'WORKER', 'PID', 'UID', 'HANDOFFS', 'UNACKED', 'QUEUED'], ...rows]));
  },
});
