import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { type TapTest } from './helpers/tap.js';
import { type BindingJSON } from '../src/bindings/binding.js';
import { formatBindingsFile, parseBindingsText } from '../src/bindings/file.js';
import { compareForList } from '../src/bindings/order.js';
import { dispatcher, type RunningDaemon, startDaemon, tempDir } from './helpers/daemon.js';
import { randomBindings, rng } from './helpers/bindings.js';

const parseExport = (text: string): BindingJSON[] => (JSON.parse(text) as { bindings: BindingJSON[] }).bindings;
const exported = async (d: RunningDaemon): Promise<BindingJSON[]> => {
  const r = await d.cli('bind', 'export');
  if (r.code !== 0) throw new Error(`bind export failed: ${r.stderr}`);
  return parseExport(r.stdout);
};

t.test('an IPv4 and an IPv6 prefix with equal words and length are different bindings', async (t) => {
  const dir = await tempDir(t);
  let d = await startDaemon(dir);
  t.teardown(() => d.stop());
  for (const args of [
    ['all6', 'udp', '::/0', '0'],
    ['all4', 'udp', '0.0.0.0/0', '0'],
    ['ten4', 'tcp', '10.0.0.0/8', '0'],
    ['ten6', 'tcp', 'a00::/8', '0'],
  ]) {
    const r = await d.cli('bind', 'add', ...args);
    t.equal(r.code, 0, `bind add ${args.join(' ')}: ${r.stderr}`);
  }
  const before = await exported(d);
  t.equal(before.length, 4);
  await d.stop();
  d = await startDaemon(dir);
  t.same(await exported(d), before, 'the restarted daemon starts from the state it wrote');

  const file = join(dir, 'pairs.json');
  await writeFile(file, JSON.stringify({ bindings: before }));
  const load = await d.cli('bind', 'load', file);
  t.equal(load.code, 0, `bind load of the same pairs: ${load.stderr}`);
  t.match(load.stdout, /added 0, removed 0/);
});

t.test('the duplicate check still refuses a key given twice, in either family', async (t) => {
  for (const prefix of ['10.0.0.0/8', 'a00::/8', '::/0', '0.0.0.0/0']) {
    const text = JSON.stringify({
      bindings: [
        { label: 'a', prefix, port: 1 },
        { label: 'b', prefix, port: 1, protocol: 'udp' },
      ],
    });
    t.throws(
      () => parseBindingsText(text, 'f.json'),
      { code: 'ERR_BINDINGS_FILE', message: /bindings\[1\]: udp .* port 1 is already bound by bindings\[0\]/ },
      prefix,
    );
  }
});

t.test('every error the CLI prints ends with exactly one newline', async (t) => {
  const dir = await tempDir(t);
  const control = join(dir, 'control.sock');
  const stateDir = join(dir, 'state');
  const cases: string[][] = [
    ['status'],
    ['frob'],
    ['bind'],
    ['bind', 'add', 'x', 'tcp', '1.2.3.4', '99999'],
    ['bind', 'load', join(dir, 'missing.json')],
    ['daemon', '--queue-size', 'x'],
  ];
  for (const args of cases) {
    const r = await dispatcher(['--control', control, ...args]);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.stderr, /^dispatcher: [^\n][\s\S]*[^\n]\n$/, `${args.join(' ')}: ${JSON.stringify(r.stderr)}`);
  }
  // A daemon that cannot start from its state file says so, on a line of its own.
  await mkdir(stateDir);
  await writeFile(join(stateDir, 'state.json'), '{"version": 1, "bindings": [');
  const r = await dispatcher(['daemon', '--control', control, '--state-dir', stateDir, '--services', join(dir, 'services.sock')]);
  t.equal(r.code, 2);
  t.match(r.stderr, /^dispatcher: state file .* is corrupt .*\n$/);
  t.notMatch(r.stderr, /\n\n$/);
});

t.test('property: random tables survive export | load and a restart unchanged, entry by entry', async (t) => {
  const dir = await tempDir(t);
  const flags = ['--listen-address', '127.0.0.1'];
  let d = await startDaemon(dir, flags);
  t.teardown(() => d.stop());
  const file = join(dir, 'table.json');
  for (const seed of [11, 12, 13]) {
    // Port 0 is not listened on in this mode; one high port, unlikely to be taken, is.
    const bindings = randomBindings(rng(seed), 400, [0, 0, 0, 40000 + seed]).sort(compareForList);
    const want = bindings.map((b) => b.toJSON());
    t.ok(
      bindings.some(
        (a) =>
          a.family === 4 && bindings.some((b) => b.family === 6 && b.length === a.length && b.word(0) === a.word(0) && b.word(1) === 0),
      ),
      `seed ${seed}: has an IPv4/IPv6 pair with equal words and length`,
    );
    await writeFile(file, JSON.stringify(formatBindingsFile(bindings)));
    const load = await d.cli('bind', 'load', file);
    t.equal(load.code, 0, `seed ${seed}: load: ${load.stderr}`);

    // export | load holds the table and changes nothing.
    const exportRun = await d.cli('bind', 'export');
    sameEntries(t, parseExport(exportRun.stdout), want, `seed ${seed}: export`);
    await writeFile(file, exportRun.stdout);
    const again = await d.cli('bind', 'load', file);
    t.equal(again.code, 0, `seed ${seed}: load of the export: ${again.stderr}`);
    t.match(again.stdout, /added 0, removed 0\n$/, `seed ${seed}: export | load changes nothing`);

    await d.stop();
    d = await startDaemon(dir, flags);
    sameEntries(t, await exported(d), want, `seed ${seed}: after a restart`);
  }
});

function sameEntries(t: TapTest, got: readonly BindingJSON[], want: readonly BindingJSON[], what: string): void {
  t.equal(got.length, want.length, `${what}: ${want.length} bindings`);
  const i = want.findIndex((w, i) => JSON.stringify(w) !== JSON.stringify(got[i]));
  if (i === -1) t.pass(`${what}: every entry equal`);
  else t.fail(`${what}: entry ${i} is ${JSON.stringify(got[i])}, want ${JSON.stringify(want[i])}`);
}
