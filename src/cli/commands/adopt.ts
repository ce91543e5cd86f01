import { parseProtocol } from '../../bindings/binding.js';
import { DispatcherError } from '../../errors.js';
import { controlClient, defineCommand } from '../command.js';
import { print } from '../format.js';

/**
 * Kernel mode's adoption (Tubular's register-pid): the daemon takes an unmodified server's socket with
 * pidfd_getfd, makes it transparent and steers the label there. The caller must be allowed to trace the
 * server (root, or the server's own uid and gid); the daemon itself runs as root.
 */
export const adoptCommand = defineCommand({
  command: 'adopt <label> <pid> [protocol] [address]',
  describe: "kernel mode: steer a label to an unmodified server's listening socket (taken from its pid)",
  builder: (y) =>
    y
      .positional('label', { type: 'string', demandOption: true })
      .positional('pid', { type: 'string', demandOption: true })
      .positional('protocol', { type: 'string', default: 'tcp', describe: 'tcp or udp' })
      .positional('address', { type: 'string', describe: 'ADDRESS:PORT of the socket, if the server has several ([::]:80 for IPv6)' }),
  handler: async (argv) => {
    const client = controlClient(argv);
    const protocol = parseProtocol(argv.protocol);
    const pid = Number(argv.pid);
    if (!Number.isInteger(pid) || pid < 1) throw new DispatcherError('ERR_USAGE', `pid ${JSON.stringify(argv.pid)} is not a process id`);
    const { adopted: a } = await client.adopt({
      label: argv.label,
      pid,
      protocol,
      ...(argv.address === undefined ? {} : { address: argv.address }),
    });
    const at = a.family === 6 ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
    print(`${a.label} ${a.protocol}${a.family} -> pid ${a.pid}'s socket ${at}`);
  },
});

export const releaseCommand = defineCommand({
  command: 'release <label> [protocol] [family]',
  describe: "kernel mode: give a label's traffic back from an adopted server to the label's own socket",
  builder: (y) =>
    y
      .positional('label', { type: 'string', demandOption: true })
      .positional('protocol', { type: 'string', default: 'tcp', describe: 'tcp or udp' })
      .positional('family', { choices: ['4', '6'] as const, default: '4' as const, describe: 'IPv4 or IPv6' }),
  handler: async (argv) => {
    const protocol = parseProtocol(argv.protocol);
    const family = argv.family === '6' ? 6 : 4;
    const { released } = await controlClient(argv).release({ label: argv.label, protocol, family });
    print(released ? `released ${argv.label} ${protocol}${family}` : `${argv.label} ${protocol}${family} had no adopted socket`);
  },
});
