import t from 'tap';
import { checkUpstreamPath, DEFAULT_UPSTREAM_DIR, parseUpstream, type Upstream } from '../src/proxy/upstream.js';
import { addressAt, type RecordAddress } from '../src/native/records.js';
import { proxyHeader } from '../src/proxy/proxy-protocol.js';

const unix = (path: string): Upstream => ({ label: 'web', address: `unix:${path}`, proxy_protocol: 'none' });

t.test('unix: upstreams only inside the allowed directory', async (t) => {
  t.equal(DEFAULT_UPSTREAM_DIR, '/run/dispatcher/upstreams');
  for (const path of [
    '/run/dispatcher/upstreams/app.sock',
    '/run/dispatcher/upstreams/sub/app.sock',
    '/run/dispatcher/upstreams//./app.sock',
  ]) {
    t.doesNotThrow(() => checkUpstreamPath(unix(path), DEFAULT_UPSTREAM_DIR), `${path} is allowed`);
  }
  t.doesNotThrow(() => checkUpstreamPath(unix('/srv/up/a.sock'), '/srv/up/'), 'a directory given with a trailing slash');
  for (const path of [
    '/run/docker.sock',
    '/run/dispatcher/upstreams/../../docker.sock',
    '/run/dispatcher/upstreams/link/../x.sock', // `..` after a symbolic link leaves the directory
    '/run/dispatcher/upstreams-evil/x.sock',
    '/run/dispatcher/upstreams',
    '/run/dispatcher/upstreams/',
    '/run/dispatcher',
  ]) {
    t.throws(
      () => checkUpstreamPath(unix(path), DEFAULT_UPSTREAM_DIR),
      { code: 'ERR_NOT_ALLOWED', message: /must be a socket in \/run\/dispatcher\/upstreams\// },
      `${path} is refused`,
    );
  }
  t.throws(() => checkUpstreamPath(unix('relative.sock'), DEFAULT_UPSTREAM_DIR), { code: 'ERR_UPSTREAM' }, 'a relative path');
  t.throws(
    () => checkUpstreamPath(unix('/run/dispatcher/upstreams/a.sock'), 'run/dispatcher'),
    { code: 'ERR_CONFIG' },
    'a relative directory',
  );
  for (const address of ['tcp:127.0.0.1:80', 'udp:[::1]:53']) {
    const u: Upstream = { label: 'web', address, proxy_protocol: 'none' };
    t.equal(checkUpstreamPath(u, DEFAULT_UPSTREAM_DIR), u, `${address} is not a path: allowed`);
  }
});

t.test('PROXY v1 is refused for udp: upstreams', async (t) => {
  t.throws(() => parseUpstream({ label: 'dns', address: 'udp:127.0.0.1:53', proxy_protocol: 'v1' }), {
    code: 'ERR_UPSTREAM',
    message: /v1 is for TCP only/,
  });
  t.equal(parseUpstream({ label: 'dns', address: 'udp:127.0.0.1:53', proxy_protocol: 'v2' }).proxy_protocol, 'v2');
  t.equal(parseUpstream({ label: 'web', address: 'tcp:127.0.0.1:80', proxy_protocol: 'v1' }).proxy_protocol, 'v1');
});

t.test('an unknown local address (getsockname failed) is never claimed as 0.0.0.0', async (t) => {
  // An accept record whose local address the kernel did not give: family 0.
  const record = Int32Array.from([9, 0, 0, 0, 0, 0, 0, 4, 0xc0000201, 0, 0, 0, 51234]);
  const local = addressAt(record, 1);
  const client = addressAt(record, 7);
  t.equal(local.family, 0, 'family 0 stays unknown');
  t.equal(proxyHeader('v1', 'tcp', client, '192.0.2.1', local, '0.0.0.0')!.toString(), 'PROXY UNKNOWN\r\n', 'v1: UNKNOWN');
  const v2 = proxyHeader('v2', 'tcp', client, '192.0.2.1', local, '0.0.0.0')!;
  t.equal(v2.length, 16, 'v2: no addresses');
  t.equal(v2[12], 0x20, 'v2: the LOCAL command');
  t.equal(v2[13], 0x00, 'v2: AF_UNSPEC');
  t.equal(v2.readUInt16BE(14), 0);
  const known: RecordAddress = { family: 4, words: [0xc6336407], port: 443 };
  t.equal(
    proxyHeader('v1', 'tcp', client, '192.0.2.1', known, '198.51.100.7')!.toString(),
    'PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n',
    'known addresses as before',
  );
  const full = proxyHeader('v2', 'udp', client, '192.0.2.1', known, '198.51.100.7')!;
  t.same([full[12], full[13], full.readUInt16BE(14), full.length], [0x21, 0x12, 12, 28], 'v2 PROXY over UDP4 as before');
});
