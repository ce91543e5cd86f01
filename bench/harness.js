// What the benchmarks that run real processes share: the daemon, services, tools and CPU readings.
import { execFileSync, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ControlClient } from '../dist/index.js';

const CLI = fileURLToPath(new URL('../bin/dispatcher', import.meta.url));
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
 * Starts a server that prints nothing when ready (HAProxy), and resolves once `port` accepts.
 * @param {readonly string[]} args the command and its arguments
 * @param {number} port
 */
export async function startServer(args, port) {
  const child = spawn(...fileAndArgs(args), { stdio: 'ignore' });
  children.push(child);
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise(
      /** @param {(connected: boolean) => void} resolve */ (resolve) => {
        const s = connect(port, '127.0.0.1', () => {
          s.destroy();
          resolve(true);
        });
        s.on('error', () => resolve(false));
      },
    );
    if (ok) return child;
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${args.join(' ')} did not accept on port ${port}`);
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

export function stopAll() {
  children.forEach((c) => c.kill('SIGTERM'));
}
