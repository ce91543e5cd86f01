import { setTimeout as sleep } from 'node:timers/promises';
import { DispatcherError } from '../../errors.js';
import { type FleetHost, notServing } from '../../fleet/view.js';
import { parseRevision } from '../../store/etcd-layout.js';
import { defineCommand } from '../command.js';
import { formatTable, paintFor, print, printJSON } from '../format.js';
import { storeArgs, withTarget } from '../target.js';

// How often `fleet wait` looks again: the store answers a listing in about a millisecond.
const POLL_MS = 200;

const wait = defineCommand({
  command: 'wait [revision]',
  describe: "return once every live host serves REVISION (default: the store's latest); exit 2 on --timeout",
  builder: (y) =>
    storeArgs(y)
      .positional('revision', { type: 'string', describe: 'a revision a change printed' })
      .option('timeout', { type: 'string', default: '60', describe: 'seconds to wait' }),
  handler: async (argv) => {
    const timeout = Number(argv.timeout);
    if (!/^[0-9]+(\.[0-9]+)?$/.test(argv.timeout) || timeout <= 0)
      throw new DispatcherError('ERR_USAGE', `--timeout ${JSON.stringify(argv.timeout)} is not a number of seconds`);
    const wanted = argv.revision === undefined ? undefined : parseRevision(argv.revision, 'revision');
    const started = Date.now();
    const { revision, hosts } = await withTarget(argv, async (t) => {
      let fleet = await t.fleet();
      const revision = wanted ?? fleet.revision;
      while (notServing(fleet, revision).length > 0 || fleet.hosts.every((h) => h.record === null)) {
        if (Date.now() - started > timeout * 1000) return { revision, hosts: fleet.hosts };
        await sleep(POLL_MS);
        fleet = await t.fleet();
      }
      return { revision, hosts: [] as FleetHost[] };
    });
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    if (hosts.length === 0) return print(`every live host serves revision ${revision} (${seconds} s)`);
    const waiting = hosts.filter((h) => h.record !== null && h.record.revision < revision);
    throw new DispatcherError(
      'ERR_TIMEOUT',
      waiting.length === 0
        ? `no host is live in the store after ${seconds} s (\`dispatcher fleet\` lists those that joined)`
        : `after ${seconds} s, ${waiting.length} live host(s) do not serve revision ${revision}: ${waiting
            .map((h) => `${h.host} (at ${h.record!.revision}${h.record!.health === 'ok' ? '' : `: ${h.record!.health}`})`)
            .join(', ')}`,
    );
  },
});

export const fleetCommand = defineCommand({
  command: 'fleet',
  describe: "the fleet's hosts: the revision each serves, its lag behind the store, which are stale or missing",
  builder: (y) => storeArgs(y).option('json', { type: 'boolean', default: false }).command(wait),
  handler: async (argv) => {
    const fleet = await withTarget(argv, (t) => t.fleet());
    if (argv.json) return printJSON(fleet);
    const paint = paintFor(process.stdout);
    const colour = { current: 'green', stale: 'yellow', failing: 'red', missing: 'red' } as const;
    const count = (state: FleetHost['state']): number => fleet.hosts.filter((h) => h.state === state).length;
    const header = `store revision ${fleet.revision}: ${count('current')} current, ${count('stale')} stale, ${count('failing')} failing, ${count('missing')} missing`;
    const table = formatTable(
      [
        { title: 'HOST', cell: (h: FleetHost) => h.host },
        { title: 'STATE', cell: (h) => paint(colour[h.state], h.state) },
        { title: 'REVISION', cell: (h) => String(h.record?.revision ?? '-'), right: true },
        { title: 'LAG', cell: (h) => String(h.lag ?? '-'), right: true },
        { title: 'MODE', cell: (h) => h.record?.mode ?? '-' },
        { title: 'BINDINGS', cell: (h) => String(h.record?.bindings ?? '-'), right: true },
        { title: 'WORKERS', cell: (h) => String(h.record?.workers ?? '-'), right: true },
        { title: 'HEALTH', cell: (h) => h.record?.health ?? 'no presence: stopped, dead, or cut off from etcd' },
      ],
      fleet.hosts,
      'no host has joined this store yet',
    );
    print(`${header}\n\n${table}`);
  },
});
