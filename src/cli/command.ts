import { type CommandModule } from 'yargs';
import { ControlClient } from '../control/client.js';

/** What every command is given: the global --control option. */
export interface GlobalArgs {
  control: string;
}

/** A command whose handler's arguments are typed by its builder's options. */
export const defineCommand = <U>(module: CommandModule<GlobalArgs, U>): CommandModule<GlobalArgs, U> => module;

/** The daemon on --control. */
export const controlClient = (argv: GlobalArgs): ControlClient => new ControlClient(argv.control);
