// What the benchmarks that run real processes share: the daemon, services, tools and CPU readings.
import { execFileSync, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ControlClient } from '../dist/index.js';
import { capture } from './common.js';

export const CLI = fileURLToPath(new URL('../bin/dispatcher', import.meta.url));
const NETNS = fileURLToPath(new URL('../scripts/netns.sh', import.meta.url));
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());

/** @typedef {import('node:child_process').ChildProcess} ChildProcess */
/** The part of GET /status the benchmarks read. @typedef {{ connections: { handoffs: number, datagrams: number } }} Status */

/** @type {ChildProcess[]} */
const children = [];
process.on('exit', () => children.forEach((c) => c.kill('SIGKILL')));

/**
 * `spawn`'s two arguments from one command line.
 * @param {readonly string[]} command
 * @returns {[string, string[]]}
 */
function fileAndArgs(command) {
  const [file, ...args] = command;
  if (file === undefined) throw new Error('an empty command');
  return [file, args];
}

/**
 * Exits with the package to install when a tool is missing, instead of failing obscurely later.
 * @param {string} name
 * @param {string} pkg
 */
export function requireTool(name, pkg) {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
  } catch {
    console.error(`this benchmark needs ${name}: apt-get install ${pkg}`);
    process.exit(2);
  }
}

/**
 * Starts a process (`prefix` e.g. ip netns exec NAME) and resolves once its output matches `ready`.
 * @param {readonly (string | number)[]} args the command and its arguments (numbers as their decimal text)
 * @param {readonly string[]} prefix
 * @returns {Promise<ChildProcess>}
 */
export function start(args, ready = /ready/, prefix = []) {
  const command = [...prefix, ...args].map(String);
  const child = spawn(...fileAndArgs(command), { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  return new Promise((resolve, reject) => {
    /** @param {Buffer} c */
    const onData = (c) => {
      out += c.toString();
      if (ready.test(out)) resolve(child);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${command.join(' ')} exited with ${code}: ${out}`)));
  });
}

/**
 * Starts a process that prints nothing when ready, and resolves once `ready()` says it is (polled every
 * 50 ms, for 5 s at most).
 * @param {readonly string[]} args the command and its arguments
 * @param {() => boolean | Promise<boolean>} ready
 * @param {readonly string[]} prefix
 */
export async function startQuiet(args, ready, prefix = []) {
  const command = [...prefix, ...args];
  const child = spawn(...fileAndArgs(command), { stdio: 'ignore' });
  children.push(child);
  for (let i = 0; i < 100; i++) {
    if (await ready()) return child;
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${command.join(' ')} did not become ready`);
}

/**
 * Starts a server that prints nothing when ready (HAProxy), and resolves once `port` accepts.
 * @param {readonly string[]} args the command and its arguments
 * @param {number} port
 */
export function startServer(args, port) {
  const accepts = () =>
    new Promise(
      /** @param {(connected: boolean) => void} resolve */ (resolve) => {
        const s = connect(port, '127.0.0.1', () => {
          s.destroy();
          resolve(true);
        });
        s.on('error', () => resolve(false));
      },
    );
  return startQuiet(args, accepts).catch(() => {
    throw new Error(`${args.join(' ')} did not accept on port ${port}`);
  });
}

/** @typedef {Awaited<ReturnType<typeof daemon>>} Daemon */

/**
 * A daemon in `dir`, answering on its control socket.
 * @param {string} dir
 * @param {readonly string[]} extra more daemon options
 * @param {readonly string[]} prefix
 */
export async function daemon(dir, extra = [], prefix = []) {
  const control = join(dir, 'control.sock');
  const services = join(dir, 'services.sock');
  const command = [
    ...prefix,
    process.execPath,
    CLI,
    'daemon',
    '--control',
    control,
    '--services',
    services,
    '--state-dir',
    join(dir, 'state'),
    ...extra,
  ];
  const child = spawn(...fileAndArgs(command), { stdio: 'ignore' });
  children.push(child);
  const client = new ControlClient(control);
  for (let i = 0; ; i++) {
    try {
      await client.call('GET', '/status');
      return { child, client, services, pid: child.pid };
    } catch (err) {
      if (i > 200) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/**
 * @param {ControlClient} client
 * @param {string} label
 * @param {import('../dist/index.js').Protocol} protocol
 * @param {string} prefix
 * @param {number} port
 */
export async function bind(client, label, protocol, prefix, port) {
  await client.call('POST', '/bindings', { body: JSON.stringify({ label, protocol, prefix, port }) });
}

/**
 * The daemon's counters.
 * @param {ControlClient} client
 * @returns {Promise<Status>}
 */
export async function status(client) {
  return client.call('GET', '/status');
}

/**
 * User plus system CPU seconds of a process so far.
 * @param {number | undefined} pid (undefined, from a process that never started: throws ENOENT)
 */
export async function cpuSeconds(pid) {
  // The fields after the command name, which is in parentheses and may hold anything, ") " too.
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

/** @param {string} text wrk's latency, e.g. 812.00us, 1.20ms, 2.01s */
function toMs(text) {
  const m = /^([\d.]+)(us|ms|s)$/.exec(text);
  if (!m) return NaN;
  const [, value, unit] = m;
  return Number(value) * (unit === 'us' ? 0.001 : unit === 's' ? 1000 : 1);
}

/**
 * What one wrk run measured: requests (and with `close`, connections) per second and in all, latency
 * percentiles, its socket errors (empty when none) and the responses that were not 2xx or 3xx.
 * @typedef {{ rps: number, requests: number, p50: number, p99: number, errors: string, non2xx: number }} WrkResult
 */

/**
 * One wrk -t1 run against `url`, with --latency; `close` sends Connection: close, a new connection per
 * request. `prefix` runs it elsewhere (ip netns exec NAME).
 * @param {string} url
 * @param {{ seconds: number, connections: number, close: boolean, prefix?: readonly string[] }} options
 * @returns {WrkResult}
 */
export function wrk(url, { seconds, connections, close, prefix = [] }) {
  const args = ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', ...(close ? ['-H', 'Connection: close'] : []), url];
  const out = execFileSync(...fileAndArgs([...prefix, 'wrk', ...args]), { encoding: 'utf8' });
  return {
    rps: Number(capture(/Requests\/sec:\s+([\d.]+)/, out)),
    requests: Number(capture(/(\d+) requests in/, out)),
    p50: toMs(capture(/^\s+50%\s+(\S+)/m, out)),
    p99: toMs(capture(/^\s+99%\s+(\S+)/m, out)),
    errors: /Socket errors: (.*)/.exec(out)?.[1] ?? '',
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
  };
}

/**
 * scripts/netns.sh's two namespaces, disp-h-ID (the host: daemons, servers) and disp-c-ID (clients), and
 * how to run a command in each. They are removed by `down()`, and at exit whatever the way out (an uncaught
 * error, SIGINT, SIGTERM) if `down()` was not reached.
 * @param {string} id
 */
export function netns(id) {
  execFileSync(NETNS, ['up', id]);
  let up = true;
  const down = () => {
    if (!up) return;
    up = false;
    execFileSync(NETNS, ['down', id]);
  };
  process.on('exit', down);
  for (const signal of /** @type {const} */ (['SIGINT', 'SIGTERM'])) process.once(signal, () => process.exit(130));
  return {
    host: ['ip', 'netns', 'exec', `disp-h-${id}`],
    client: ['ip', 'netns', 'exec', `disp-c-${id}`],
    down,
  };
}

export function stopAll() {
  children.forEach((c) => c.kill('SIGTERM'));
}
