// What the benchmarks that run real processes share: the daemon, services, tools and CPU readings.
import { execFileSync, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ControlClient } from '../dist/index.js';

const CLI = fileURLToPath(new URL('../bin/dispatcher', import.meta.url));
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());

const children = [];
process.on('exit', () => children.forEach((c) => c.kill('SIGKILL')));

/** Exits with the package to install when a tool is missing, instead of failing obscurely later. */
export function requireTool(name, pkg) {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
  } catch {
    console.error(`this benchmark needs ${name}: apt-get install ${pkg}`);
    process.exit(2);
  }
}

/** Starts a process (`prefix` e.g. ip netns exec NAME) and resolves once its output matches `ready`. */
export function start(args, ready = /ready/, prefix = []) {
  const command = [...prefix, ...args];
  const child = spawn(command[0], command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  return new Promise((resolve, reject) => {
    const onData = (c) => {
      out += c.toString();
      if (ready.test(out)) resolve(child);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${command.join(' ')} exited with ${code}: ${out}`)));
  });
}

/** Starts a server that prints nothing when ready (HAProxy), and resolves once `port` accepts. */
export async function startServer(args, port) {
  const child = spawn(args[0], args.slice(1), { stdio: 'ignore' });
  children.push(child);
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise((resolve) => {
      const s = connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return child;
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${args.join(' ')} did not accept on port ${port}`);
}

/** A daemon in `dir`, answering on its control socket. */
export async function daemon(dir, extra = [], prefix = []) {
  const control = join(dir, 'control.sock');
  const services = join(dir, 'services.sock');
  const command = [...prefix, process.execPath, CLI, 'daemon', '--control', control, '--services', services, '--state-dir', join(dir, 'state'), ...extra];
  const child = spawn(command[0], command.slice(1), { stdio: 'ignore' });
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

export async function bind(client, label, protocol, prefix, port) {
  await client.call('POST', '/bindings', { body: JSON.stringify({ label, protocol, prefix, port }) });
}

/** User plus system CPU seconds of a process so far. */
export async function cpuSeconds(pid) {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

export function stopAll() {
  children.forEach((c) => c.kill('SIGTERM'));
}
