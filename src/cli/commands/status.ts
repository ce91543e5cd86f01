import { setTimeout as sleep } from 'node:timers/promises';
import { type ControlClient } from '../../control/client.js';
import { DispatcherError } from '../../errors.js';
import { controlClient, defineCommand } from '../command.js';
import { paintFor, print, printJSON } from '../format.js';
import { formatStatus, type StatusSample, SUMMARY_LIMIT } from '../summary.js';

// The bound labels come from listing every binding, which costs the daemon a pass over them all and a
// body as big: fine for a summary up to this many, not at a million.
const MAX_LISTED_BINDINGS = 10_000;
// `--rate` and `--watch` without a number, as watch(1).
const DEFAULT_INTERVAL = '2';

export const statusCommand = defineCommand({
  command: 'status',
  describe: 'the daemon at a glance: listeners, labels and their traffic, and what needs attention',
  builder: (y) =>
    y
      // No default: yargs would count a default as given, and refuse it beside --rate.
      .option('json', { type: 'boolean', describe: "the control API's answer as it is, for scripts" })
      .option('rate', {
        type: 'string',
        coerce: (text: string) => seconds('--rate', text),
        describe: 'rates over SECONDS (two readings that far apart) instead of averages since start',
      })
      .option('watch', {
        type: 'string',
        coerce: (text: string) => seconds('--watch', text),
        describe: 'the summary every SECONDS, rates over the last interval, until interrupted',
      })
      .option('all', { type: 'boolean', default: false, describe: `every listener and label, not the first ${SUMMARY_LIMIT}` })
      .conflicts('json', ['rate', 'watch'])
      .conflicts('rate', 'watch'),
  handler: async (argv) => {
    const client = controlClient(argv);
    if (argv.json) return printJSON(await client.status());
    const options = { paint: paintFor(process.stdout), limit: argv.all ? Infinity : SUMMARY_LIMIT };
    const interval = argv.watch ?? argv.rate;
    let before = await read(client);
    if (interval === undefined) return print(formatStatus(before, options));
    for (;;) {
      await sleep(interval * 1000);
      const now = await read(client);
      // On a terminal each summary replaces the last; into a pipe they follow one another.
      if (argv.watch !== undefined) console.clear();
      print(formatStatus(now, { ...options, before }));
      if (argv.watch === undefined) return;
      if (!process.stdout.isTTY) print('');
      before = now;
    }
  },
});

async function read(client: ControlClient): Promise<StatusSample> {
  const [status, services, { upstreams }] = await Promise.all([client.status(), client.services(), client.upstreams()]);
  const at = performance.now();
  if (status.bindings.total > MAX_LISTED_BINDINGS) return { status, services, upstreams, at };
  const { bindings } = await client.listBindings();
  return { status, services, upstreams, boundLabels: [...new Set(bindings.map((b) => b.label))], at };
}

function seconds(option: string, text: string): number {
  const n = Number(text === '' ? DEFAULT_INTERVAL : text);
  // Faster would only load the daemon; slower is a different tool's job.
  if (!(n >= 0.5 && n <= 3600))
    throw new DispatcherError('ERR_USAGE', `${option} ${JSON.stringify(text)} is not a number of seconds from 0.5 to 3600`);
  return n;
}
