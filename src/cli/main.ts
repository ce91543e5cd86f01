import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { type BindingJSON, parseBinding, parsePortText, parseProtocol } from '../bindings/binding.js';
import { parseBindingsText } from '../bindings/file.js';
import { ControlClient } from '../control/client.js';
import { parseUpstream, type Upstream } from '../proxy/upstream.js';
import { DEFAULT_CONTROL_PATH, DEFAULT_STATE_DIR } from '../control/protocol.js';
import { DEFAULT_SERVICES_PATH } from '../services/protocol.js';
import { DispatcherError } from '../errors.js';
import { VERSION } from '../version.js';
import { formatColumns, formatStatus } from './format.js';

/** Exit codes: 0 done, 1 `lookup` found nothing, 2 an error (bad input, daemon unreachable, refused). */
const EXIT_ERROR = 2;

// The global --control option; yargs' nested command builders do not carry its type.
const client = (argv: { [key: string]: unknown }): ControlClient => new ControlClient(String(argv['control']));
/** `text` as lines: exactly one newline at the end, whatever the text (a message may carry its own). */
const lines = (text: string): string => `${text.replace(/\n+$/, '')}\n`;
const print = (text: string): void => void process.stdout.write(lines(text));
const printJSON = (value: unknown): void => print(JSON.stringify(value, null, 2));
const bindingRow = (b: BindingJSON): string[] => [b.label, b.protocol, b.prefix, String(b.port)];
const BINDING_HEADER = ['LABEL', 'PROTOCOL', 'PREFIX', 'PORT'];
interface WorkerJSON {
  id: number;
  label: string;
  pid: number;
  uid: number;
  handoffs: number;
  inflight: number;
  window: number;
}
const describe = (b: BindingJSON): string => `${b.protocol} ${b.prefix} port ${b.port} -> ${b.label}`;

function bindingArgs(y: Argv): Argv {
  return y
    .positional('label', { type: 'string', describe: 'the label: 1-64 of A-Z a-z 0-9 . _ -' })
    .positional('protocol', { type: 'string', describe: 'tcp or udp' })
    .positional('prefix', { type: 'string', describe: 'IPv4 or IPv6 CIDR; a bare address is /32 or /128' })
    .positional('port', { type: 'string', default: '0', describe: '1-65535, or 0 for every port' });
}

function wholeNumber(option: string, value: unknown): number {
  const text = String(value);
  if (!/^[0-9]{1,9}$/.test(text)) throw new DispatcherError('ERR_CONFIG', `${option} ${JSON.stringify(text)} is not a whole number`);
  return Number(text);
}

const printWarnings = (warnings: readonly string[] | undefined): void => {
  for (const w of warnings ?? []) process.stderr.write(lines(`dispatcher: warning: ${w}`));
};

/** Validated here for a quick, local error; the daemon validates again. */
function bindingFromArgs(argv: Record<string, unknown>): BindingJSON {
  return parseBinding({ label: argv['label'], protocol: argv['protocol'], prefix: argv['prefix'], port: parsePortText(argv['port']) }).toJSON();
}

export async function main(args: string[]): Promise<void> {
  await yargs(args)
    .scriptName('dispatcher')
    .version(VERSION)
    .parserConfiguration({ 'parse-numbers': false, 'parse-positional-numbers': false })
    .option('control', {
      type: 'string',
      default: process.env['DISPATCHER_CONTROL'] ?? DEFAULT_CONTROL_PATH,
      describe: 'control socket (env DISPATCHER_CONTROL)',
      global: true,
    })
    .command(
      'daemon',
      'run the daemon',
      (y) =>
        y
          .option('mode', { choices: ['ports', 'tproxy'] as const, default: 'ports' as const, describe: 'ports: a socket per bound port; tproxy: nftables steers every bound prefix and port (port 0 too)' })
          .option('state-dir', { type: 'string', default: DEFAULT_STATE_DIR, describe: 'where the bindings are kept' })
          .option('services', { type: 'string', default: DEFAULT_SERVICES_PATH, describe: 'the socket workers register on' })
          .option('listen-address', { type: 'string', default: '::', describe: 'where listeners bind (:: is dual-stack)' })
          .option('queue-timeout', { type: 'string', default: '2000', describe: 'ms a connection waits for a worker of its label (0: reset at once)' })
          .option('queue-size', { type: 'string', default: '1024', describe: 'connections that may wait per label' })
          .option('upstream-timeout', { type: 'string', default: '5000', describe: 'ms an upstream may take to accept a proxied connection' })
          .option('takeover', { type: 'boolean', default: false, describe: 'take the listening sockets over from the daemon on --control, without refusing a connection' })
          .option('allow', { type: 'string', array: true, default: [] as string[], describe: 'LABEL=UID[,UID...]: lets these users register LABEL (repeatable)' })
          .option('metrics', { type: 'string', describe: 'HOST:PORT to serve Prometheus metrics on at /metrics' })
          .config('config', 'a JSON file of these options, e.g. {"allow": ["web=1000"], "queue-timeout": "5000"}'),
      async (argv) => {
        // Loaded only here: the other commands need none of the daemon's code.
        const { Daemon } = await import('../daemon/daemon.js');
        const daemon = await Daemon.start({
          mode: argv.mode,
          controlPath: argv.control,
          stateDir: argv['state-dir'],
          servicesPath: argv.services,
          listenAddress: argv['listen-address'],
          queueTimeoutMs: wholeNumber('--queue-timeout', argv['queue-timeout']),
          queueSize: wholeNumber('--queue-size', argv['queue-size']),
          upstreamTimeoutMs: wholeNumber('--upstream-timeout', argv['upstream-timeout']),
          allow: argv.allow.map(String),
          metrics: argv.metrics,
          takeover: argv.takeover,
        });
        // Handed over to a newer daemon: nothing is left here.
        void daemon.handedOver.then(() => daemon.stop().then(() => process.exit(0)));
        for (const signal of ['SIGTERM', 'SIGINT'] as const) {
          process.once(signal, () => {
            daemon.log.info({ signal }, 'shutting down');
            daemon.stop().then(() => process.exit(0), () => process.exit(1));
          });
        }
      },
    )
    .command('bind', 'change and show the bindings', (y) =>
      y
        .command('add <label> <protocol> <prefix> [port]', 'bind (protocol, prefix, port) to a label; replaces the label of an equal binding', bindingArgs, async (argv) => {
          const res = await client(argv).call<{ binding: BindingJSON; replaced: BindingJSON | null; warnings: string[] }>('POST', '/bindings', {
            body: JSON.stringify(bindingFromArgs(argv)),
          });
          print(`added ${describe(res.binding)}${res.replaced && res.replaced.label !== res.binding.label ? ` (was -> ${res.replaced.label})` : ''}`);
          printWarnings(res.warnings);
        })
        .command('rm <label> <protocol> <prefix> [port]', 'remove a binding (the label must match)', bindingArgs, async (argv) => {
          const res = await client(argv).call<{ removed: BindingJSON }>('DELETE', '/bindings', { body: JSON.stringify(bindingFromArgs(argv)) });
          print(`removed ${describe(res.removed)}`);
        })
        .command(
          'list',
          'list bindings in precedence-friendly order; filters combine',
          (y) =>
            y
              .option('label', { type: 'string' })
              .option('protocol', { type: 'string' })
              .option('prefix', { type: 'string', describe: 'only bindings whose prefix lies within this one' })
              .option('port', { type: 'string' })
              .option('json', { type: 'boolean', default: false }),
          async (argv) => {
            const res = await client(argv).call<{ bindings: BindingJSON[] }>('GET', '/bindings', {
              query: {
                label: argv.label,
                protocol: argv.protocol === undefined ? undefined : parseProtocol(argv.protocol),
                prefix: argv.prefix,
                port: argv.port === undefined ? undefined : parsePortText(argv.port),
              },
            });
            if (argv.json) printJSON(res);
            else print(formatColumns([BINDING_HEADER, ...res.bindings.map(bindingRow)]));
          },
        )
        .command(
          'load <file>',
          'replace all bindings with a file\'s, atomically',
          (y) => y.positional('file', { type: 'string', demandOption: true }).option('dry-run', { type: 'boolean', default: false }),
          async (argv) => {
            const text = await readFile(argv.file, 'utf8').catch((err: Error) => {
              throw new DispatcherError('ERR_BINDINGS_FILE', `cannot read ${argv.file}: ${err.message}`);
            });
            parseBindingsText(text, argv.file);
            const dryRun = argv['dry-run'];
            const res = await client(argv).call<{ added: BindingJSON[]; removed: BindingJSON[]; warnings: string[] }>('PUT', '/bindings', {
              query: { dry_run: dryRun ? 'true' : undefined },
              body: text,
            });
            const lines = [...res.removed.map((b) => `- ${describe(b)}`), ...res.added.map((b) => `+ ${describe(b)}`)];
            lines.push(`${dryRun ? 'would add' : 'added'} ${res.added.length}, ${dryRun ? 'would remove' : 'removed'} ${res.removed.length}`);
            print(lines.join('\n'));
            printWarnings(res.warnings);
          },
        )
        .command('export', 'print every binding as a bindings file (export | load is a no-op)', {}, async (argv) => {
          printJSON(await client(argv).call('GET', '/bindings'));
        })
        .demandCommand(1, 'name a bind command: add, rm, list, load or export'),
    )
    .command(
      'lookup <protocol> <ip> <port>',
      'which label and binding would receive this traffic (exit 1 if none)',
      (y) =>
        y
          .positional('protocol', { type: 'string', demandOption: true })
          .positional('ip', { type: 'string', demandOption: true })
          .positional('port', { type: 'string', demandOption: true })
          .option('json', { type: 'boolean', default: false }),
      async (argv) => {
        try {
          const res = await client(argv).call<{ label: string; binding: BindingJSON }>('GET', '/lookup', {
            query: { protocol: parseProtocol(argv.protocol), address: argv.ip, port: parsePortText(argv.port) },
          });
          if (argv.json) printJSON(res);
          else print(`${res.label}\t(${describe(res.binding)})`);
        } catch (err) {
          if (!(err instanceof DispatcherError) || err.code !== 'ERR_NO_MATCH') throw err;
          if (argv.json) printJSON({ label: null, binding: null });
          else print(err.message);
          process.exitCode = 1;
        }
      },
    )
    .command('upstream', 'proxy mode: serve a label from an unmodified server (used while no worker is registered)', (y) =>
      y
        .command(
          'add <label> <address>',
          'send the label\'s connections to unix:/path or tcp:host:port',
          (y) =>
            y
              .positional('label', { type: 'string', demandOption: true })
              .positional('address', { type: 'string', demandOption: true, describe: 'unix:/path or tcp:host:port (IPv6: tcp:[::1]:8080)' })
              .option('proxy-protocol', { choices: ['none', 'v1', 'v2'] as const, default: 'none' as const, describe: 'the PROXY protocol header to send first' }),
          async (argv) => {
            const upstream = parseUpstream({ label: argv.label, address: argv.address, proxy_protocol: argv['proxy-protocol'] });
            const res = await client(argv).call<{ upstream: Upstream; replaced: Upstream | null }>('POST', '/upstreams', { body: JSON.stringify(upstream) });
            print(`upstream ${res.upstream.label} -> ${res.upstream.address} (PROXY protocol ${res.upstream.proxy_protocol})${res.replaced ? ` (was ${res.replaced.address})` : ''}`);
          },
        )
        .command('rm <label>', 'remove a label\'s upstream', (y) => y.positional('label', { type: 'string', demandOption: true }), async (argv) => {
          const res = await client(argv).call<{ removed: Upstream }>('DELETE', '/upstreams', { body: JSON.stringify({ label: argv.label }) });
          print(`removed upstream ${res.removed.label} -> ${res.removed.address}`);
        })
        .command('list', 'the upstreams', (y) => y.option('json', { type: 'boolean', default: false }), async (argv) => {
          const res = await client(argv).call<{ upstreams: Upstream[] }>('GET', '/upstreams');
          if (argv.json) return printJSON(res);
          print(formatColumns([['LABEL', 'ADDRESS', 'PROXY-PROTOCOL'], ...res.upstreams.map((u) => [u.label, u.address, u.proxy_protocol])]));
        })
        .demandCommand(1, 'name an upstream command: add, rm or list'),
    )
    .command('services', 'registered workers and waiting connections', (y) => y.option('json', { type: 'boolean', default: false }), async (argv) => {
      const res = await client(argv).call<{ workers: WorkerJSON[]; queued: Record<string, number> }>('GET', '/services');
      if (argv.json) return printJSON(res);
      const rows = res.workers.map((w) => [w.label, String(w.id), String(w.pid), String(w.uid), String(w.handoffs), `${w.inflight}/${w.window}`, String(res.queued[w.label] ?? 0)]);
      for (const [label, n] of Object.entries(res.queued)) if (!res.workers.some((w) => w.label === label)) rows.push([label, '-', '-', '-', '0', '-', String(n)]);
      print(formatColumns([['LABEL', 'WORKER', 'PID', 'UID', 'HANDOFFS', 'UNACKED', 'QUEUED'], ...rows]));
    })
    .command(
      'upgrade',
      'start a new daemon (this installation\'s) that takes over from the running one',
      (y) => y.option('log', { type: 'string', describe: 'where the new daemon logs (default: dispatcher.log in its state directory)' }),
      async (argv) => {
      const old = await client(argv).call<{ pid: number; flags: Record<string, string | string[]> }>('GET', '/status');
      const flags = Object.entries(old.flags).flatMap(([k, v]) => (Array.isArray(v) ? v.flatMap((x) => [`--${k}`, x]) : [`--${k}`, v]));
      // Not this command's stderr: the daemon outlives it, and whoever reads this command's output would wait for the daemon.
      const log = openSync(argv.log ?? join(String(old.flags['state-dir']), 'dispatcher.log'), 'a', 0o640);
      const child = spawn(process.execPath, [process.argv[1]!, 'daemon', '--takeover', '--control', String(argv['control']), ...flags], { detached: true, stdio: ['ignore', 'ignore', log] });
      closeSync(log);
      child.unref();
      for (let i = 0; i < 300; i++) {
        await new Promise((r) => setTimeout(r, 100));
        if (child.exitCode !== null) throw new DispatcherError('ERR_STATE', `the new daemon exited with ${child.exitCode} (see its log)`);
        const now = await client(argv).call<{ pid: number }>('GET', '/status').catch(() => undefined);
        if (now !== undefined && now.pid === child.pid) return print(`upgraded: pid ${old.pid} -> ${now.pid}`);
      }
      throw new DispatcherError('ERR_STATE', 'the new daemon did not take over within 30 s');
      },
    )
    .command('status', 'the daemon at a glance', (y) => y.option('json', { type: 'boolean', default: false }), async (argv) => {
      const status = await client(argv).call<Record<string, unknown>>('GET', '/status');
      print(argv.json ? JSON.stringify(status, null, 2) : formatStatus(status));
    })
    .demandCommand(1, 'name a command')
    .strict()
    .help()
    .fail((message, err) => {
      if (err) throw err;
      throw new DispatcherError('ERR_USAGE', `${message}\nRun "dispatcher --help" for usage.`);
    })
    .parseAsync();
}

main(hideBin(process.argv)).catch((err: unknown) => {
  exitWithError(err instanceof Error ? err.message : String(err));
});

/** Every error the CLI reports ends here. Exits once the message is written: exiting at once can cut off a write still queued on a pipe. */
function exitWithError(text: string): void {
  process.exitCode = EXIT_ERROR;
  process.stderr.write(lines(`dispatcher: ${text}`), () => process.exit(EXIT_ERROR));
}
