import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import t from 'tap';
import { ControlClient } from '../src/control/client.js';
import { startDaemon, dispatcher, tempDir } from './helpers/daemon.js';
import { ETCD, freePort, noEtcd } from './helpers/etcd.js';
import { until } from './helpers/fleet.js';

const run = promisify(execFile);

/** A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl in `dir`. */
async function certificates(dir: string): Promise<void> {
  const ssl = (...args: string[]): Promise<unknown> => run('openssl', args, { cwd: dir });
  await ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', '/CN=test-ca');
  await writeFile(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n');
  await writeFile(join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const [name, cn] of [
    ['server', 'etcd'],
    ['client', 'dispatcher'],
  ] as const) {
    await ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
    await ssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${name}.crt`,
      '-days',
      '1',
      '-extfile',
      `${name}.ext`,
    );
  }
}

if (noEtcd !== undefined) t.plan(0, noEtcd);
else {
  const dir = await tempDir(t);
  await certificates(dir);
  const port = await freePort();
  const endpoint = `https://127.0.0.1:${port}`;
  const peer = `http://127.0.0.1:${await freePort()}`;
  const proc: ChildProcess = spawn(
    ETCD,
    [
      '--name=tls',
      `--data-dir=${join(dir, 'data')}`,
      `--listen-client-urls=${endpoint}`,
      `--advertise-client-urls=${endpoint}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=tls=${peer}`,
      `--cert-file=${join(dir, 'server.crt')}`,
      `--key-file=${join(dir, 'server.key')}`,
      `--trusted-ca-file=${join(dir, 'ca.crt')}`,
      '--client-cert-auth',
      '--log-level=error',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  t.teardown(() => void proc.kill('SIGKILL'));
  const tls = ['--store-ca', join(dir, 'ca.crt'), '--store-cert', join(dir, 'client.crt'), '--store-key', join(dir, 'client.key')];
  const etcdctl = (...args: string[]): Promise<unknown> =>
    run(
      'etcdctl',
      [
        `--endpoints=${endpoint}`,
        `--cacert=${join(dir, 'ca.crt')}`,
        `--cert=${join(dir, 'client.crt')}`,
        `--key=${join(dir, 'client.key')}`,
        ...args,
      ],
      {
        env: { ...process.env, ETCDCTL_API: '3' },
      },
    );
  for (let i = 0; ; i++) {
    if (
      (await etcdctl('endpoint', 'health').then(
        () => true,
        () => false,
      )) ||
      i > 200
    )
      break;
    await sleep(50);
  }
  const url = `etcd://127.0.0.1:${port}/tls`;

  t.test('TLS with a client certificate: the daemon follows and the CLI writes; without the CA, a clear refusal', async (t) => {
    const home = await tempDir(t);
    const d = await startDaemon(home, ['--store', url, '--host-name', 'a', '--listen-address', '127.0.0.1', ...tls]);
    t.teardown(() => d.stop());
    const api = new ControlClient(d.control);
    const added = await dispatcher(['bind', 'add', 'web', 'tcp', '192.0.2.0/24', '443', '--store', url, ...tls]);
    t.equal(added.code, 0, added.stderr);
    t.match(added.stdout, /^added tcp 192\.0\.2\.0\/24 port 443 -> web \(revision \d+\)/);
    await until('the daemon serves it', async () => (await api.listBindings()).bindings.some((b) => b.label === 'web'));
    t.match((await api.status()).store, { connected: true, error: null });

    const noCa = await dispatcher(['bind', 'list', '--store', url]);
    t.equal(noCa.code, 2, 'plain text against TLS fails');
    t.match(noCa.stderr, /^dispatcher: etcd at http:\/\/127\.0\.0\.1:\d+ does not answer/);
    const noCert = await dispatcher(['bind', 'list', '--store', url, '--store-ca', join(dir, 'ca.crt')]);
    t.equal(noCert.code, 2, 'a client certificate is required by this etcd');
    t.match(noCert.stderr, /^dispatcher: etcd at https:\/\/127\.0\.0\.1:\d+ does not answer/);
  });

  t.test('user and password: a right one writes, a wrong one is refused and writes nothing', async (t) => {
    await etcdctl('user', 'add', 'root', '--new-user-password=rootpw');
    await etcdctl('user', 'add', 'writer', '--new-user-password=s3cret');
    await etcdctl('role', 'add', 'dispatch');
    await etcdctl('role', 'grant-permission', 'dispatch', '--prefix=true', 'readwrite', '/auth/');
    await etcdctl('user', 'grant-role', 'writer', 'dispatch');
    await etcdctl('auth', 'enable');
    t.teardown(() => etcdctl('--user=root:rootpw', 'auth', 'disable').catch(() => undefined));
    const good = join(dir, 'good.pw');
    const bad = join(dir, 'bad.pw');
    await writeFile(good, 's3cret\n', { mode: 0o600 });
    await writeFile(bad, 'nope\n', { mode: 0o600 });
    const store = `etcd://127.0.0.1:${port}/auth`;
    const as = (file: string, ...args: string[]): ReturnType<typeof dispatcher> =>
      dispatcher([...args, '--store', store, ...tls, '--store-user', 'writer', '--store-password-file', file]);
    const ok = await as(good, 'bind', 'add', 'web', 'tcp', '198.51.100.0/24', '80');
    t.equal(ok.code, 0, ok.stderr);
    const refused = await as(bad, 'bind', 'add', 'evil', 'tcp', '203.0.113.0/24', '80');
    t.equal(refused.code, 2, 'a wrong password is refused');
    t.match(refused.stderr, /^dispatcher: etcd at https:\/\/127\.0\.0\.1:\d+ does not answer \(.*(authentication failed|invalid)/i);
    const list = await as(good, 'bind', 'list', '--json');
    t.same(
      (JSON.parse(list.stdout) as { bindings: { label: string }[] }).bindings.map((b) => b.label),
      ['web'],
      'nothing was written by the refused user',
    );
    const outside = await dispatcher([
      'bind',
      'add',
      'x',
      'tcp',
      '203.0.113.0/24',
      '80',
      '--store',
      `etcd://127.0.0.1:${port}/elsewhere`,
      ...tls,
      '--store-user',
      'writer',
      '--store-password-file',
      good,
    ]);
    t.equal(outside.code, 2, 'a prefix the user has no permission on is refused');
    t.match(outside.stderr, /permission denied/i);
    const missing = await dispatcher(['bind', 'list', '--store', store, ...tls, '--store-user', 'writer']);
    t.equal(missing.code, 2);
    t.match(missing.stderr, /--store-user needs --store-password-file/);
  });
}
