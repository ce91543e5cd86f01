import t from 'tap';
import { ACCEPT_RECORD, native } from '../src/native/index.js';
import { ACCEPT, addressText, portAt } from '../src/native/records.js';
import { fixedLocal, SocketReader } from '../src/listener/reader.js';
import { connected, listenAnywhere, readable } from './helpers/native.js';

const log = { warn: () => {}, error: () => {} };

t.test('a listener bound to one address has a fixed local address; a wildcard or transparent one has none', (t) => {
  const one = listenAnywhere('127.0.0.1');
  const local = fixedLocal(one.fd, false);
  t.ok(local !== undefined);
  t.equal(addressText(local!, 0), '127.0.0.1');
  t.equal(portAt(local!, 0), one.port);
  t.equal(fixedLocal(one.fd, true), undefined, 'transparent: tproxy steers any address to it');
  const v6 = listenAnywhere('::1');
  t.equal(addressText(fixedLocal(v6.fd, false)!, 0), '::1');
  const any = listenAnywhere('::');
  t.equal(fixedLocal(any.fd, false), undefined, 'a wildcard socket takes every local address');
  const any4 = listenAnywhere('0.0.0.0');
  t.equal(fixedLocal(any4.fd, false), undefined);
  for (const l of [one, v6, any, any4]) native.close(l.fd);
  t.end();
});

t.test('acceptBatch with skipLocal leaves the local blocks to the caller and still fills the peer', async (t) => {
  const { fd, port } = listenAnywhere('127.0.0.1');
  const client = await connected('127.0.0.1', port);
  await readable(fd);
  const out = new Int32Array(ACCEPT_RECORD).fill(-7);
  t.equal(native.acceptBatch(fd, out, 1, true), 1);
  t.same(Array.from(out.subarray(ACCEPT.LOCAL, ACCEPT.PEER)), [-7, -7, -7, -7, -7, -7], 'no local address written');
  t.equal(addressText(out, ACCEPT.PEER), '127.0.0.1');
  t.equal(portAt(out, ACCEPT.PEER), client.localPort);
  native.close(out[ACCEPT.FD]!);
  client.destroy();
  native.close(fd);
});

t.test('a reader with a fixed local address gives every connection that address, as getsockname would', async (t) => {
  const { fd, port } = listenAnywhere('127.0.0.1');
  const seen: { local: string; localPort: number; peerPort: number }[] = [];
  let done!: () => void;
  const all = new Promise<void>((resolve) => (done = resolve));
  const reader = new SocketReader(
    fd,
    'tcp',
    {
      onAccepted: (batch, count) => {
        for (let i = 0; i < count; i++) {
          const at = i * ACCEPT.SIZE;
          seen.push({
            local: addressText(batch, at + ACCEPT.LOCAL),
            localPort: portAt(batch, at + ACCEPT.LOCAL),
            peerPort: portAt(batch, at + ACCEPT.PEER),
          });
          native.close(batch[at + ACCEPT.FD]!);
        }
        if (seen.length === 3) done();
      },
    },
    log,
    { port },
    fixedLocal(fd, false),
  );
  reader.watch();
  const clients = await Promise.all([connected('127.0.0.1', port), connected('127.0.0.1', port), connected('127.0.0.1', port)]);
  await all;
  reader.close();
  t.same(
    seen.map((s) => [s.local, s.localPort]),
    [
      ['127.0.0.1', port],
      ['127.0.0.1', port],
      ['127.0.0.1', port],
    ],
  );
  t.same(seen.map((s) => s.peerPort).sort(), clients.map((c) => c.localPort).sort(), 'each with its own client');
  for (const c of clients) c.destroy();
});
