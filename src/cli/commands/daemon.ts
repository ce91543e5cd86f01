import { daemonYargsOptions, optionsFromArgv } from '../../daemon/options.js';
import { defineCommand } from '../command.js';

export const daemonCommand = defineCommand({
  command: 'daemon',
  describe: 'run the daemon',
  builder: (y) =>
    y.options(daemonYargsOptions()).config('config', 'a JSON file of these options, e.g. {"allow": ["web=1000"], "queue-timeout": "5000"}'),
  handler: async (argv) => {
    const options = optionsFromArgv(argv);
    // Loaded only here: the other commands need none of the daemon's code.
    const { Daemon } = await import('../../daemon/daemon.js');
    const daemon = await Daemon.start(options);
    // Handed over to a newer daemon: nothing is left here.
    void daemon.handedOver.then(() =>
      daemon.stop().then(
        () => process.exit(0),
        () => process.exit(1),
      ),
    );
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      process.once(signal, () => {
        daemon.log.info({ signal }, 'shutting down');
        daemon.stop().then(
          () => process.exit(0),
          () => process.exit(1),
        );
      });
    }
  },
});
