import { parseUpstream } from '../../proxy/upstream.js';
import { controlClient, defineCommand, viewCommand } from '../command.js';
import { formatTable, print } from '../format.js';

const add = defineCommand({
  command: 'add <label> <address>',
  describe: "send the label's connections to unix:/path or tcp:host:port",
  builder: (y) =>
    y
      .positional('label', { type: 'string', demandOption: true })
      .positional('address', { type: 'string', demandOption: true, describe: 'unix:/path or tcp:host:port (IPv6: tcp:[::1]:8080)' })
      .option('proxy-protocol', {
        choices: ['none', 'v1', 'v2'] as const,
        default: 'none' as const,
        describe: 'the PROXY protocol header to send first',
      }),
  handler: async (argv) => {
    const upstream = parseUpstream({ label: argv.label, address: argv.address, proxy_protocol: argv['proxy-protocol'] });
    const { upstream: set, replaced } = await controlClient(argv).setUpstream(upstream);
    print(`upstream ${set.label} -> ${set.address} (PROXY protocol ${set.proxy_protocol})${replaced ? ` (was ${replaced.address})` : ''}`);
  },
});

const rm = defineCommand({
  command: 'rm <label>',
  describe: "remove a label's upstream",
  builder: (y) => y.positional('label', { type: 'string', demandOption: true }),
  handler: async (argv) => {
    const { removed } = await controlClient(argv).removeUpstream(argv.label);
    print(`removed upstream ${removed.label} -> ${removed.address}`);
  },
});

const list = viewCommand(
  'list',
  'the upstreams',
  (client) => client.upstreams(),
  (res) =>
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

export const upstreamCommand = defineCommand({
  command: 'upstream',
  describe: 'proxy mode: serve a label from an unmodified server (used while no worker is registered)',
  builder: (y) => y.command(add).command(rm).command(list).demandCommand(1, 'name an upstream command: add, rm or list'),
  handler: () => undefined,
});
