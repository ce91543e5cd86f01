import t from 'tap';
import { pino } from 'pino';
import { parseAddress } from '../src/bindings/address.js';
import { ReplySockets } from '../src/listener/reply-sockets.js';
import { openFds } from './helpers/native.js';
import { randomPort } from './helpers/services.js';

// Transparent sockets need CAP_NET_ADMIN.
const root = process.getuid?.() === 0;

t.test('reply sockets are keyed on the address, not its spelling', { skip: !root && 'needs root' }, async (t) => {
  const sockets = new ReplySockets(pino({ level: 'silent' }));
  t.teardown(() => sockets.close());
  const port = randomPort();
  const v4 = sockets.get(parseAddress('127.0.0.1'), port);
  t.ok(v4 >= 0);
  t.equal(sockets.get(parseAddress('::ffff:127.0.0.1'), port), v4, '::ffff:127.0.0.1 is 127.0.0.1');
  const v6 = sockets.get(parseAddress('2001:db8::1'), port);
  t.ok(v6 >= 0);
  t.equal(sockets.get(parseAddress('2001:0db8:0::1'), port), v6, '2001:0db8:0::1 is 2001:db8::1');
  t.equal(sockets.get(parseAddress('2001:DB8:0:0:0:0:0:1'), port), v6, 'in any case');
  t.not(sockets.get(parseAddress('127.0.0.1'), port + 1), v4, 'another port is another socket');
  t.equal(sockets.size, 3);
});

t.test('reply sockets are capped: the least recently used is closed', { skip: !root && 'needs root' }, async (t) => {
  const before = openFds();
  const sockets = new ReplySockets(pino({ level: 'silent' }), 4);
  const port = randomPort();
  const at = (i: number): number => sockets.get(parseAddress(`127.0.0.${i}`), port);
  const first = at(1);
  for (let i = 2; i <= 4; i++) at(i);
  t.equal(at(1), first, 'a used socket is kept (and is now the most recent)');
  for (let i = 5; i <= 40; i++) at(i);
  t.equal(sockets.size, 4, 'never more than the cap');
  t.equal(openFds(), before + 4, 'and the evicted ones are closed');
  sockets.close();
  t.equal(openFds(), before, 'all closed at the end');
});
