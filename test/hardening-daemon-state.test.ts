import t from 'tap';
import { lstat, mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { StateFile, STATE_VERSION } from '../src/store/state-file.js';
import { startDaemon, tempDir } from './helpers/daemon.js';

t.test('a symlink planted at a temporary path is not followed, and stale temporaries are removed safely', async (t) => {
  const dir = await tempDir(t);
  const stateDir = join(dir, 'state');
  await mkdir(stateDir);
  const target = join(dir, 'victim');
  await writeFile(target, 'precious\n');
  // The name the state file used to be written through, and a stale temporary that is a link.
  await symlink(target, join(stateDir, `state.json.${process.pid}.tmp`));
  await symlink(target, join(stateDir, 'state.json.0123abcd.tmp'));
  await writeFile(join(stateDir, 'state.json.feed.tmp'), 'half a file');
  const state = new StateFile(stateDir);
  await state.save({ bindings: [], upstreams: [] });
  t.equal(await readFile(target, 'utf8'), 'precious\n', 'the link target is untouched');
  t.ok((await lstat(state.path)).isFile(), 'the state file is a file of its own, not the link');
  t.same(await state.load(), { bindings: [], upstreams: [], refused: [] });
  t.same((await readdir(stateDir)).sort(), ['state.json'], 'the stale temporaries are gone (links removed, not followed)');
  t.equal(await readFile(target, 'utf8'), 'precious\n', 'and the target still is untouched');
});

t.test('a state file from a newer version says so, and how to get out', async (t) => {
  const dir = await tempDir(t);
  const stateDir = join(dir, 'state');
  await mkdir(stateDir);
  await writeFile(join(stateDir, 'state.json'), JSON.stringify({ version: STATE_VERSION + 1, bindings: [] }));
  await t.rejects(new StateFile(stateDir).load(), {
    code: 'ERR_STATE',
    message: new RegExp(`written by a newer version \\(${STATE_VERSION + 1}\\); this daemon reads version ${STATE_VERSION}: upgrade`),
  });
  await t.rejects(startDaemon(dir), /written by a newer version/, 'the daemon refuses to start with that message');
  await writeFile(join(stateDir, 'state.json'), JSON.stringify({ version: 'x', bindings: [] }));
  await t.rejects(new StateFile(stateDir).load(), { message: /is corrupt/ }, 'anything else is still corrupt');
});
