import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { ControlClient } from '../src/control/client.js';
import { tempDir } from './helpers/daemon.js';

// A server in another process (so it closes while this one is busy) that closes a connection 50 ms after its
// reply, as the daemon's http.Server does after its 5 s keepAliveTimeout. (A keepAliveTimeout under 2 s would
// not do: its Keep-Alive hint makes Node's client drop the connection itself.)
const SERVER = `
import { createServer } from 'node:http';
const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => res.end('{}', () => setTimeout(() => req.socket.destroy(), 50)));
});
server.listen(process.argv[1], () => console.log('listening'));
`;

t.test('a call after this process was busy longer than the server keeps an idle connection succeeds', async (t) => {
  const socketPath = join(await tempDir(t), 'control.sock');
  const server = spawn(process.execPath, ['--input-type=module', '-e', SERVER, socketPath], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => server.kill());
  await once(server.stdout, 'data');
  const client = new ControlClient(socketPath);
  t.same(await client.call('GET', '/status'), {});
  // Busy, as a caller building a large bindings file is: this event loop never sees the server close.
  const until = Date.now() + 1000;
  while (Date.now() < until);
  t.same(await client.call('PUT', '/bindings', { body: 'x'.repeat(8 * 1024 * 1024) }), {});
});
