import { controlClient, defineCommand } from '../command.js';
import { formatStatus, print, printJSON } from '../format.js';

export const statusCommand = defineCommand({
  command: 'status',
  describe: 'the daemon at a glance',
  builder: (y) => y.option('json', { type: 'boolean', default: false }),
  handler: async (argv) => {
    const status = await controlClient(argv).status();
    if (argv.json) printJSON(status);
    else print(formatStatus(status));
  },
});
