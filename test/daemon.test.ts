import t from 'tap';
import { execFile } from 'node:child_process';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { type BindingsJSON, dispatcher, startDaemon, type StatusJSON, tempDir } from './helpers/daemon.js';

t.test('add, replace, list, lookup and remove through the real CLI', async (t) => {
  const d = await startDaemon(await tempDir(t));
  t.teardown(() => d.stop());

  const add = await d.cli('bind', 'add', 'spectrum', 'tcp', '192.0.2.7/24');
  t.equal(add.code, 0, add.stderr);
  t.equal(add.stdout.trim(), 'added tcp 192.0.2.0/24 port 0 -> spectrum', 'prints the normalized binding');
  t.equal((await d.cli('bind', 'add', 'cdn', 'tcp', '192.0.2.0/25', '443')).code, 0);
  t.equal((await d.cli('bind', 'add', 'cdn', 'tcp', '192.0.2.200', '443')).code, 0);
  t.equal((await d.cli('bind', 'add', 'dns', 'udp', '2001:db8::/32', '53')).code, 0);
  const replace = await d.cli('bind', 'add', 'edge', 'tcp', '192.0.2.0/25', '443');
  t.match(replace.stdout, /added tcp 192\.0\.2\.0\/25 port 443 -> edge \(was -> cdn\)/);

  const list = await d.cli('bind', 'list');
  t.equal(
    list.stdout,
    [
      'LABEL     PROTOCOL  PREFIX          PORT',
      'edge      tcp       192.0.2.0/25     443',
      'cdn       tcp       192.0.2.200/32   443',
      'spectrum  tcp       192.0.2.0/24       0',
      'dns       udp       2001:db8::/32     53',
      '',
    ].join('\n'),
  );
  const filtered = JSON.parse(
    (await d.cli('bind', 'list', '--json', '--protocol', 'tcp', '--port', '443', '--prefix', '192.0.2.128/25')).stdout,
  ) as BindingsJSON;
  t.same(filtered, { bindings: [{ label: 'cdn', protocol: 'tcp', prefix: '192.0.2.200/32', port: 443 }] });

  const hit = await d.cli('lookup', 'tcp', '192.0.2.200', '443', '--json');
  t.equal(hit.code, 0);
  t.same(JSON.parse(hit.stdout), { label: 'cdn', binding: { label: 'cdn', protocol: 'tcp', prefix: '192.0.2.200/32', port: 443 } });
  t.match((await d.cli('lookup', 'tcp', '::ffff:192.0.2.201', '443')).stdout, /^spectrum\t/);
  const miss = await d.cli('lookup', 'udp', '192.0.2.1', '53');
  t.equal(miss.code, 1, 'lookup exits 1 when nothing matches');
  t.match(miss.stdout, /no binding receives udp 192\.0\.2\.1 port 53/);

  const rm = await d.cli('bind', 'rm', 'cdn', 'tcp', '192.0.2.200', '443');
  t.equal(rm.code, 0);
  t.match((await d.cli('lookup', 'tcp', '192.0.2.200', '443')).stdout, /^spectrum\t/);
  const status = JSON.parse((await d.cli('status', '--json')).stdout) as StatusJSON;
  t.match(status, { bindings: { total: 3, tcp: 2, udp: 1, labels: 3 }, control: d.control });
});

t.test('bad input is refused, names the problem, and changes nothing', async (t) => {
  const dir = await tempDir(t);
  const d = await startDaemon(dir);
  t.teardown(() => d.stop());
  await d.cli('bind', 'add', 'web', 'tcp', '127.0.0.0/8', '80');
  const before = await d.cli('bind', 'export');
  const stateBefore = await readFile(join(d.stateDir, 'state.json'), 'utf8');

  const cases: [string[], RegExp][] = [
    [['bind', 'add', 'web', 'sctp', '127.0.0.0/8', '80'], /protocol "sctp" is not "tcp" or "udp"/],
    [['bind', 'add', 'web', 'tcp', '127.0.0.0/33', '80'], /mask "\/33"/],
    [['bind', 'add', 'web', 'tcp', '127.0.0.0/8', '65536'], /port "65536"/],
    [['bind', 'add', 'web tier', 'tcp', '127.0.0.0/8', '80'], /label "web tier"/],
    [['bind', 'add', 'web', 'tcp', '::ffff:127.0.0.1', '80'], /IPv4-mapped/],
    [['bind', 'rm', 'api', 'tcp', '127.0.0.0/8', '80'], /bound to "web", not "api"/],
    [['bind', 'rm', 'web', 'tcp', '127.0.0.0/8', '81'], /no binding for tcp 127\.0\.0\.0\/8 port 81/],
    [['bind', 'list', '--prefix', 'nonsense'], /prefix "nonsense"/],
    [['lookup', 'tcp', 'localhost', '80'], /"localhost" is not an IPv4 or IPv6 address/],
  ];
  for (const [args, re] of cases) {
    const r = await d.cli(...args);
    t.equal(r.code, 2, `${args.join(' ')} exits 2`);
    t.match(r.stderr, re, args.join(' '));
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  }

  const files: [string, RegExp][] = [
    ['{"bindings": [{"label": "a", "label": "b", "prefix": "192.0.2.0/24", "port": 1}]}', /duplicate key "label"/],
    ['{"bindings": [{"label": "a", "prefix": "192.0.2.0/24", "port": 1, "colour": "red"}]}', /unknown field "colour"/],
    [
      '{"bindings": [{"label": "a", "prefix": "192.0.2.0/24", "port": 1}, {"label": "b", "prefix": "192.0.2.0/24", "port": 1}]}',
      /already bound by bindings\[0\]/,
    ],
    [
      '{"bindings": [{"label": "ok", "prefix": "192.0.2.0/24", "port": 1}, {"label": "bad!", "prefix": "192.0.2.0/24", "port": 2}]}',
      /bindings\[1\]: label "bad!"/,
    ],
    ['not json', /not valid JSON/],
  ];
  for (const [text, re] of files) {
    const file = join(dir, 'bad.json');
    await writeFile(file, text);
    const r = await d.cli('bind', 'load', file);
    t.equal(r.code, 2);
    t.match(r.stderr, re);
  }
  // The daemon validates too: the same bad file straight to the API is refused there.
  const raw = await curl(d.control, ['-X', 'PUT', '--data-binary', files[0]![0], 'http://d/v1/bindings']);
  t.match(raw, { status: 400, body: { error: { code: 'ERR_BINDINGS_FILE', message: /duplicate key/ } } });

  t.equal((await d.cli('bind', 'export')).stdout, before.stdout, 'bindings unchanged');
  t.equal(await readFile(join(d.stateDir, 'state.json'), 'utf8'), stateBefore, 'state file unchanged');
});

t.test('load: atomic replace, dry run, Tubular files, export | load is a no-op', async (t) => {
  const dir = await tempDir(t);
  const d = await startDaemon(dir);
  t.teardown(() => d.stop());
  await d.cli('bind', 'add', 'old', 'tcp', '198.51.100.0/24', '80');
  const file = join(dir, 'tubular.json');
  await writeFile(
    file,
    JSON.stringify({
      bindings: [
        { label: 'foo', prefix: '127.0.0.1/32', port: 8080 },
        { label: 'bar', prefix: '2001:db8::/48', port: 0, protocol: 'udp' },
      ],
    }),
  );

  const dry = await d.cli('bind', 'load', file, '--dry-run');
  t.equal(dry.code, 0, dry.stderr);
  t.match(
    dry.stdout,
    /- tcp 198\.51\.100\.0\/24 port 80 -> old\n\+ tcp 127\.0\.0\.1\/32 port 8080 -> foo\n\+ udp 127\.0\.0\.1\/32 port 8080 -> foo\n\+ udp 2001:db8::\/48 port 0 -> bar\nwould add 3, would remove 1/,
  );
  t.match((await d.cli('bind', 'list')).stdout, /old/, 'a dry run changes nothing');

  const load = await d.cli('bind', 'load', file);
  t.match(load.stdout, /added 3, removed 1/);
  const exported = await d.cli('bind', 'export');
  t.same(
    (JSON.parse(exported.stdout) as BindingsJSON).bindings.map((b) => b.label),
    ['foo', 'foo', 'bar'],
  );

  const exportFile = join(dir, 'export.json');
  await writeFile(exportFile, exported.stdout);
  const again = await d.cli('bind', 'load', exportFile);
  t.match(again.stdout, /^added 0, removed 0\n$/, 'export | load is a no-op');
});

t.test('restart keeps exactly the bindings; corrupt state stops start-up untouched', async (t) => {
  const dir = await tempDir(t);
  const d1 = await startDaemon(dir);
  for (const args of [
    ['a', 'tcp', '192.0.2.0/24', '0'],
    ['b', 'udp', '2001:db8::1', '53'],
    ['c', 'tcp', '0.0.0.0/0', '22'],
  ])
    await d1.cli('bind', 'add', ...args);
  const before = (await d1.cli('bind', 'export')).stdout;
  t.equal(await d1.stop('SIGTERM'), 0, 'SIGTERM shuts down cleanly');
  await t.rejects(stat(d1.control), 'the control socket is removed on shutdown');

  const d2 = await startDaemon(dir);
  t.equal((await d2.cli('bind', 'export')).stdout, before, 'same bindings after restart');
  await d2.stop('SIGINT');

  const state = join(dir, 'state', 'state.json');
  const corrupt = '{"version":1,"bindings":[{"label":"a","prefix":"192.0.2.0/24","port":99999}]}';
  await writeFile(state, corrupt);
  const r = await dispatcher(['daemon', '--control', join(dir, 'control.sock'), '--state-dir', join(dir, 'state')]);
  t.equal(r.code, 2, 'a corrupt state file stops start-up');
  t.match(r.stderr, /state file .*state\.json is corrupt \(state: bindings\[0\]: port 99999.*will not overwrite it/);
  t.equal(await readFile(state, 'utf8'), corrupt, 'the corrupt file is left as it was');
});

t.test('one daemon per control socket; a stale socket is replaced; mode 0660', async (t) => {
  const dir = await tempDir(t);
  const d1 = await startDaemon(dir);
  t.equal((await stat(d1.control)).mode & 0o777, 0o660);
  const second = await dispatcher(['daemon', '--control', d1.control, '--state-dir', join(dir, 'other')]);
  t.equal(second.code, 2);
  t.match(second.stderr, /another daemon is listening on/);
  t.equal((await d1.cli('status')).code, 0, 'the first daemon is untouched');

  await d1.cli('bind', 'add', 'kept', 'tcp', '192.0.2.1', '80');
  await d1.stop('SIGKILL');
  t.ok((await stat(d1.control)).isSocket(), 'a killed daemon leaves its socket file');
  const d2 = await startDaemon(dir);
  t.teardown(() => d2.stop());
  t.match((await d2.cli('bind', 'list')).stdout, /kept/, 'the stale socket was replaced and state restored');
});

t.test('the CLI says in one line when the daemon is not running, and what to do', async (t) => {
  const dir = await tempDir(t);
  const r = await dispatcher(['bind', 'list'], { DISPATCHER_CONTROL: join(dir, 'none.sock') });
  t.equal(r.code, 2);
  t.equal(
    r.stderr,
    `dispatcher: the daemon is not running (nothing answers on ${join(dir, 'none.sock')}): start it with \`dispatcher daemon\`, ` +
      "or point --control (or DISPATCHER_CONTROL) at the daemon's control socket\n",
  );
});

t.test('curl can drive the control API; garbage gets an error, not a crash', async (t) => {
  const d = await startDaemon(await tempDir(t));
  t.teardown(() => d.stop());
  const add = await curl(d.control, [
    '-X',
    'POST',
    '-d',
    '{"label":"web","protocol":"tcp","prefix":"192.0.2.0/24","port":443}',
    'http://d/v1/bindings',
  ]);
  t.match(add, { status: 200, body: { binding: { label: 'web', prefix: '192.0.2.0/24', port: 443 }, replaced: null } });
  t.match(await curl(d.control, ['http://d/v1/lookup?protocol=tcp&address=192.0.2.9&port=443']), { status: 200, body: { label: 'web' } });
  t.match(await curl(d.control, ['http://d/v1/lookup?protocol=tcp&address=192.0.2.9&port=80']), {
    status: 404,
    body: { error: { code: 'ERR_NO_MATCH' } },
  });
  t.match(
    await curl(d.control, [
      '-X',
      'POST',
      '-d',
      '{"label":"web","protocol":"tcp","prefix":"192.0.2.0/24","port":"443"}',
      'http://d/v1/bindings',
    ]),
    {
      status: 400,
      body: { error: { code: 'ERR_PORT' } },
    },
  );
  t.match(await curl(d.control, ['-X', 'POST', '-d', '{"label":"web"', 'http://d/v1/bindings']), {
    status: 400,
    body: { error: { code: 'ERR_REQUEST' } },
  });
  t.match(await curl(d.control, ['-X', 'PATCH', 'http://d/v1/bindings']), { status: 405 });
  t.match(await curl(d.control, ['http://d/v2/nothing']), { status: 404, body: { error: { code: 'ERR_NOT_FOUND' } } });

  // Raw garbage and a truncated request on the socket itself.
  for (const junk of [
    Buffer.from([0, 1, 2, 255, 254, 13, 10, 13, 10]),
    Buffer.from('POST /v1/bindings HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"lab'),
  ]) {
    await new Promise<void>((resolve) => {
      const s = connect(d.control, () => s.end(junk));
      s.on('error', () => resolve());
      s.on('close', () => resolve());
      s.resume();
    });
  }
  t.equal((await d.cli('status')).code, 0, 'still serving');
  t.equal(d.process.exitCode, null);
});

function curl(socket: string, args: string[]): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    execFile('curl', ['-s', '--unix-socket', socket, '-w', '\n%{http_code}', ...args], (err: Error | null, stdout) => {
      if (err) return reject(err);
      const cut = stdout.lastIndexOf('\n');
      resolve({ status: Number(stdout.slice(cut + 1)), body: JSON.parse(stdout.slice(0, cut)) });
    });
  });
}
