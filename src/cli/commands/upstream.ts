import { type Argv } from 'yargs';
import { parseUpstream } from '../../proxy/upstream.js';
import { defineCommand } from '../command.js';
import { formatTable, print, printJSON } from '../format.js';
import { atRevision, storeArgs, withTarget, writeQuery } from '../target.js';

// Upstreams are global in a store: no --host.
const changeArgs = <T>(y: Argv<T>) =>
  storeArgs(y).option('if-revision', {
    type: 'string',
    describe: 'refuse the change if the upstreams were changed in the store after this revision (compare-and-swap)',
  });

const add = defineCommand({
  command: 'add <label> <address>',
  describe: "send the label's connections to unix:/path or tcp:host:port",
  builder: (y) =>
    changeArgs(y)
      .positional('label', { type: 'string', demandOption: true })
      .positional('address', { type: 'string', demandOption: true, describe: 'unix:/path or tcp:host:port (IPv6: tcp:[::1]:8080)' })
      .option('proxy-protocol', {
        choices: ['none', 'v1', 'v2'] as const,
        default: 'none' as const,
        describe: 'the PROXY protocol header to send first',
      }),
  handler: async (argv) => {
    const upstream = parseUpstream({ label: argv.label, address: argv.address, proxy_protocol: argv['proxy-protocol'] });
    const w = writeQuery(argv);
    const { upstream: set, replaced, revision } = await withTarget(argv, (t) => t.setUpstream(upstream, w));
    print(
      `upstream ${set.label} -> ${set.address} (PROXY protocol ${set.proxy_protocol})${replaced ? ` (was ${replaced.address})` : ''}${atRevision(revision)}`,
    );
  },
});

const rm = defineCommand({
  command: 'rm <label>',
  describe: "remove a label's upstream",
  builder: (y) => changeArgs(y).positional('label', { type: 'string', demandOption: true }),
  handler: async (argv) => {
    const w = writeQuery(argv);
    const { removed, revision } = await withTarget(argv, (t) => t.removeUpstream(argv.label, w));
    print(`removed upstream ${removed.label} -> ${removed.address}${atRevision(revision)}`);
  },
});

const list = defineCommand({
  command: 'list',
  describe: 'the upstreams',
  builder: (y) => storeArgs(y).option('json', { type: 'boolean', default: false }),
  handler: async (argv) => {
    const res = await withTarget(argv, (t) => t.upstreams());
    if (argv.json) return printJSON(res);
    print(
      formatTable(
        [
          { title: 'LABEL', cell: (u) => u.label },
          { title: 'ADDRESS', cell: (u) => u.address },
          { title: 'PROXY-PROTOCOL', cell: (u) => u.proxy_protocol },
        ],
        res.upstreams,
        'no upstreams',
      ),
    );
  },
});

export const upstreamCommand = defineCommand({
  command: 'upstream',
  describe: 'proxy mode: serve a label from an unmodified server (used while no worker is registered)',
  builder: (y) => y.command(add).command(rm).command(list).demandCommand(1, 'name an upstream command: add, rm or list'),
  handler: () => undefined,
});
