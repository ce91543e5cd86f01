import t from 'tap';
import { once } from 'node:events';
import { type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { ControlClient } from '../src/control/client.js';
import { type ControlHandlers, createControlServer } from '../src/control/server.js';
import { tempDir } from './helpers/daemon.js';

t.test('afterLargeBody is called once a large body has been answered, not for a small one', async (t) => {
  const socketPath = join(await tempDir(t), 'control.sock');
  let calls = 0;
  const handlers = {
    replace: async () => ({ added: [], removed: [], warnings: [] }),
  } as Partial<ControlHandlers> as ControlHandlers;
  const server = createControlServer(handlers, { afterLargeBody: () => calls++ });
  server.listen(socketPath);
  await once(server, 'listening');
  t.teardown(() => server.close());
  const client = new ControlClient(socketPath);
  /** Replaces with `text` and resolves once the server is done with the reply (its 'close'). */
  const replace = async (text: string): Promise<void> => {
    const closed = once(server, 'request').then(([, res]) => once(res as ServerResponse, 'close'));
    await client.replaceBindings(text);
    await closed;
  };
  await replace('{"bindings": []}');
  t.equal(calls, 0, 'not after a small body');
  // A valid bindings file, padded with whitespace past 4 MiB.
  await replace(`{"bindings": []${' '.repeat(5 * 1024 * 1024)}}`);
  t.equal(calls, 1, 'once after a large one');
});
