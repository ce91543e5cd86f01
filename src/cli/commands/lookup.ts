import { parsePortText, parseProtocol } from '../../bindings/binding.js';
import { DispatcherError } from '../../errors.js';
import { controlClient, defineCommand } from '../command.js';
import { describe, print, printJSON } from '../format.js';

export const lookupCommand = defineCommand({
  command: 'lookup <protocol> <ip> <port>',
  describe: 'which label and binding would receive this traffic (exit 1 if none)',
  builder: (y) =>
    y
      .positional('protocol', { type: 'string', demandOption: true })
      .positional('ip', { type: 'string', demandOption: true })
      .positional('port', { type: 'string', demandOption: true })
      .option('json', { type: 'boolean', default: false }),
  handler: async (argv) => {
    try {
      const res = await controlClient(argv).lookup(parseProtocol(argv.protocol), argv.ip, parsePortText(argv.port));
      if (argv.json) printJSON(res);
      else print(`${res.label}\t(${describe(res.binding)})`);
    } catch (err) {
      if (!(err instanceof DispatcherError) || err.code !== 'ERR_NO_MATCH') throw err;
      if (argv.json) printJSON({ label: null, binding: null });
      else print(err.message);
      process.exitCode = 1;
    }
  },
});
