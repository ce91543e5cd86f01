import t from 'tap';
import { execFile, type ExecFileOptions } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, realpath, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startDaemon, type StatusJSON, tempDir } from './helpers/daemon.js';
import { ECHO_SERVICE, randomPort, request, startWorker } from './helpers/services.js';
import { type TapTest } from './helpers/tap.js';
import { VERSION } from '../src/version.js';

// The tarball as a user gets it: made by `npm run pack`, installed from the registry's dependencies into an empty
// directory, run from there. Packing compiles the addon and TypeScript, and each install fetches its dependencies.
t.setTimeout(300_000);

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PREBUILD = 'native/prebuilds/linux-x64/node.glibc.node';

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], options: ExecFileOptions = {}): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(command, args, { encoding: 'utf8', maxBuffer: 16 << 20, ...options }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/**
 * A user's shell: without the variables `npm test` set for this repo (npm_*: its config, its package) and without
 * this repo's node_modules/.bin on PATH, so that an install can only use what it installed.
 */
function userEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^npm_/i.test(name)));
  env.PATH = (process.env.PATH ?? '')
    .split(':')
    .filter((dir) => !dir.includes('node_modules'))
    .join(':');
  return { ...env, ...extra };
}

/** The .node files a process has mapped: the addon it really loaded. */
async function loadedAddons(pid: number): Promise<string[]> {
  const maps = await readFile(`/proc/${pid}/maps`, 'utf8');
  return [...new Set(maps.split('\n').flatMap((line) => /\s(\/\S+\.node)$/.exec(line)?.[1] ?? []))];
}

const ping = await run('npm', ['ping'], { timeout: 30_000 });
const skip = ping.code !== 0 && `npm cannot reach the registry, which the installs need for the dependencies: ${ping.stderr.trim()}`;

// Made by the first test, installed by the others.
const packDir = skip ? '' : await tempDir(t);
let tarball = '';

t.test('npm run pack makes a tarball with dist/ built and the prebuilt addon', { skip }, async (t) => {
  const mtimes = async (): Promise<number[]> =>
    Promise.all(['dist/index.js', 'native/build/Release/dispatcher.node'].map(async (f) => (await stat(join(ROOT, f))).mtimeMs));
  const before = await mtimes();
  const packed = await run('npm', ['run', 'pack', '--', packDir], { cwd: ROOT });
  t.equal(packed.code, 0, packed.stderr);
  t.same(await mtimes(), before, "this tree's dist/ and native/build are left alone: other tests are loading them");
  tarball = packed.stdout.trim().split('\n').at(-1) ?? '';
  t.ok(existsSync(tarball), `the script prints the tarball's path: ${tarball}`);
  const listed = await run('tar', ['-tzf', tarball]);
  const files = listed.stdout.split('\n').map((f) => f.replace(/^package\//, ''));
  for (const file of ['bin/dispatcher', 'dist/cli/main.js', 'dist/service/index.js', 'dist/service/index.d.ts', PREBUILD]) {
    t.ok(files.includes(file), `carries ${file}`);
  }
  for (const file of ['native/binding.gyp', 'native/init.c', 'native/dispatcher.h']) {
    t.ok(files.includes(file), `carries ${file}, to compile where no prebuild loads`);
  }
  t.notOk(
    files.some((f) => f.startsWith('native/build/') || f.startsWith('src/') || f.startsWith('test/')),
    'no local build, sources or tests',
  );
});

/** npm install TARBALL into an empty directory: the directory, the package's root in it and its CLI. */
async function install(t: TapTest, env: Record<string, string> = {}): Promise<{ dir: string; pkg: string; bin: string }> {
  const dir = await tempDir(t);
  const r = await run('npm', ['install', tarball, '--no-audit', '--no-fund'], { cwd: dir, env: userEnv(env) });
  t.equal(r.code, 0, 'npm install', { stderr: r.stderr });
  return { dir, pkg: join(dir, 'node_modules/l4-dispatcher'), bin: join(dir, 'node_modules/.bin/dispatcher') };
}

t.test('installed where the prebuild matches: nothing compiled, the CLI, the daemon and a worker run', { skip }, async (t) => {
  const { dir, pkg, bin } = await install(t);
  t.notOk(existsSync(join(pkg, 'native/build')), 'the install compiled nothing');
  t.notOk(existsSync(join(dir, 'node_modules/typescript')), 'nor needed TypeScript');

  const version = await run(process.execPath, [bin, '--version'], { env: userEnv() });
  t.equal(version.stdout.trim(), VERSION, '--version');

  const d = await startDaemon(await tempDir(t), [], { cli: bin });
  t.teardown(() => d.stop());
  t.same(await loadedAddons(d.process.pid!), [await realpath(join(pkg, PREBUILD))], 'the daemon loaded the prebuild');
  const status = await d.cli('status', '--json');
  t.equal(status.code, 0, status.stderr);
  t.match(JSON.parse(status.stdout) as StatusJSON, { control: d.control });

  // The tests' echo worker, importing the installed package instead of this repo's dist/.
  const source = await readFile(ECHO_SERVICE, 'utf8');
  const worker = join(dir, 'echo-service.mjs');
  await writeFile(worker, source.replace("from '../../dist/service/index.js'", "from 'l4-dispatcher/service'"));
  t.not(await readFile(worker, 'utf8'), source, 'the worker imports l4-dispatcher/service');
  const port = randomPort();
  const bound = await d.cli('bind', 'add', 'web', 'tcp', '127.0.0.1', String(port));
  t.equal(bound.code, 0, bound.stderr);
  const w = await startWorker('web', d.services, {
    command: [process.execPath, worker, 'web', d.services],
    spawn: { cwd: dir, env: userEnv() },
  });
  t.teardown(() => w.stop());
  t.match(await request('127.0.0.1', port), { label: 'web', pid: w.pid }, 'a connection reaches the worker');
});

t.test('installed where no prebuild may be used: compiled from the sources it carries', { skip }, async (t) => {
  // What node-gyp-build does where no prebuild loads (another architecture, musl, an older glibc), forced.
  const { pkg, bin } = await install(t, { npm_config_build_from_source: 'true' });
  const built = join(pkg, 'native/build/Release/dispatcher.node');
  t.ok(existsSync(built), 'the install compiled the addon');
  const d = await startDaemon(await tempDir(t), [], { cli: bin });
  t.teardown(() => d.stop());
  t.same(await loadedAddons(d.process.pid!), [await realpath(built)], 'the daemon loaded what was compiled');
  t.equal((await d.cli('status')).code, 0);
});
