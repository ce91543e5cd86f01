import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { OPTIONS } from '../daemon/options.js';
import { DispatcherError, type ErrorCode } from '../errors.js';
import { VERSION } from '../version.js';
import { adoptCommand, releaseCommand } from './commands/adopt.js';
import { bindCommand } from './commands/bind.js';
import { daemonCommand } from './commands/daemon.js';
import { fleetCommand } from './commands/fleet.js';
import { lookupCommand } from './commands/lookup.js';
import { servicesCommand } from './commands/services.js';
import { statusCommand } from './commands/status.js';
import { upgradeCommand } from './commands/upgrade.js';
import { upstreamCommand } from './commands/upstream.js';
import { lines } from './format.js';

/** Exit codes: 0 done, 1 `lookup` found nothing, 2 an error (bad input, daemon unreachable, refused). */
const EXIT_ERROR = 2;

export async function main(args: string[]): Promise<void> {
  await yargs(args)
    .scriptName('dispatcher')
    .version(VERSION)
    .parserConfiguration({ 'parse-numbers': false, 'parse-positional-numbers': false })
    .option('control', {
      type: 'string',
      default: process.env['DISPATCHER_CONTROL'] ?? OPTIONS.controlPath.default,
      describe: OPTIONS.controlPath.describe,
      global: true,
    })
    .command(daemonCommand)
    .command(bindCommand)
    .command(lookupCommand)
    .command(upstreamCommand)
    .command(adoptCommand)
    .command(releaseCommand)
    .command(servicesCommand)
    .command(upgradeCommand)
    .command(statusCommand)
    .command(fleetCommand)
    .demandCommand(1, 'name a command')
    .strict()
    .help()
    .fail((message, err) => {
      if (err) throw err;
      throw new DispatcherError(
        'ERR_USAGE',
        `${message}\nRun "dispatcher COMMAND --help" for a command's arguments, "dispatcher --help" for the commands.`,
      );
    })
    .parseAsync();
}

main(hideBin(process.argv)).catch((err: unknown) => {
  const next = err instanceof DispatcherError ? NEXT_STEP[err.code] : undefined;
  const message = err instanceof Error ? err.message : String(err);
  exitWithError(next === undefined ? message : `${message}: ${next}`);
});

/** The way out, for errors whose message names the problem but cannot know the CLI that would solve it. */
const NEXT_STEP: Partial<Record<ErrorCode, string>> = {
  ERR_NO_BINDING: '`dispatcher bind list` shows the bindings',
  ERR_LABEL_MISMATCH: 'remove it under the label it is bound to',
  ERR_NO_UPSTREAM: '`dispatcher upstream list` shows the upstreams',
  ERR_CONFLICT: '`dispatcher bind list` (with --store: the revision) shows what is there now',
  ERR_NO_STORE: 'or give the CLI --store to write to the store directly',
};

/** Every error the CLI reports ends here. Exits once the message is written: exiting at once can cut off a write still queued on a pipe. */
function exitWithError(text: string): void {
  process.exitCode = EXIT_ERROR;
  process.stderr.write(lines(`dispatcher: ${text}`), () => process.exit(EXIT_ERROR));
}
