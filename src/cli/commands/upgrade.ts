import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { DispatcherError } from '../../errors.js';
import { controlClient, defineCommand } from '../command.js';
import { print } from '../format.js';

export const upgradeCommand = defineCommand({
  command: 'upgrade',
  describe: "start a new daemon (this installation's) that takes over from the running one",
  builder: (y) =>
    y.option('log', { type: 'string', describe: 'where the new daemon logs (default: dispatcher.log in its state directory)' }),
  handler: async (argv) => {
    const client = controlClient(argv);
    const old = await client.status();
    const flags = Object.entries(old.flags).flatMap(([k, v]) => (Array.isArray(v) ? v.flatMap((x) => [`--${k}`, x]) : [`--${k}`, v]));
    // Not this command's stderr: the daemon outlives it, and whoever reads this command's output would wait for the daemon.
    const logPath = argv.log ?? join(String(old.flags['state-dir']), 'dispatcher.log');
    // A daemon that never saved a binding has no state directory yet.
    mkdirSync(dirname(logPath), { recursive: true, mode: 0o750 });
    const log = openSync(logPath, 'a', 0o640);
    const child = spawn(process.execPath, [process.argv[1]!, 'daemon', '--takeover', '--control', argv.control, ...flags], {
      detached: true,
      stdio: ['ignore', 'ignore', log],
    });
    closeSync(log);
    child.unref();
    for (let i = 0; i < 300; i++) {
      await new Promise((r) => setTimeout(r, 100));
      if (child.exitCode !== null)
        throw new DispatcherError('ERR_STATE', `the new daemon exited with ${child.exitCode}: ${logPath} says why`);
      const now = await client.status().catch(() => undefined);
      if (now !== undefined && now.pid === child.pid) return print(`upgraded: pid ${old.pid} -> ${now.pid}`);
    }
    throw new DispatcherError('ERR_STATE', `the new daemon did not take over within 30 s: ${logPath} says why`);
  },
});
