import { type CommandModule } from 'yargs';
import { ControlClient } from '../control/client.js';
import { print, printJSON } from './format.js';

/** What every command is given: the global --control option. */
export interface GlobalArgs {
  control: string;
}

/** A command whose handler's arguments are typed by its builder's options. */
export const defineCommand = <U>(module: CommandModule<GlobalArgs, U>): CommandModule<GlobalArgs, U> => module;

/** The daemon on --control. */
export const controlClient = (argv: GlobalArgs): ControlClient => new ControlClient(argv.control);

/** A command that shows what the daemon answers: as JSON with --json (for scripts), else as `format` writes it. */
export function viewCommand<T>(
  command: string,
  describe: string,
  fetch: (client: ControlClient) => Promise<T>,
  format: (value: T) => string,
) {
  return defineCommand({
    command,
    describe,
    builder: (y) => y.option('json', { type: 'boolean', default: false }),
    handler: async (argv) => {
      const value = await fetch(controlClient(argv));
      if (argv.json) printJSON(value);
      else print(format(value));
    },
  });
}
