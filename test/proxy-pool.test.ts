import t from 'tap';
import { readdirSync, readlinkSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { daemonIn } from './helpers/daemon.js';
import { settledFds } from './helpers/native.js';
import { randomPort, sleep } from './helpers/services.js';

// The relay's pipe pool (native/relay.c): pipes are reused, a pipe with bytes left in it is never reused,
// and an idle daemon holds none of them.

/** The pipes a process holds, by inode, once they stop changing. */
async function settledPipes(pid: number): Promise<Set<string>> {
  const read = (): Set<string> => {
    const pipes = new Set<string>();
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const link = readlinkSync(`/proc/${pid}/fd/${fd}`);
        if (link.startsWith('pipe:')) pipes.add(link);
      } catch {
        // closed while listed
      }
    }
    return pipes;
  };
  let last = read();
  for (let same = 0, i = 0; same < 3 && i < 50; i++) {
    await sleep(100);
    const now = read();
    same = [...now].join() === [...last].join() ? same + 1 : 0;
    last = now;
  }
  return last;
}

/** Connects through the daemon, sends `text` and resolves with everything received until the far end closes. */
function exchange(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.end(text));
    let got = '';
    s.on('data', (c: Buffer) => (got += c.toString()));
    s.on('error', reject);
    s.on('close', () => resolve(got));
  });
}

t.test('pipes are reused, a pipe left holding bytes is closed, and an idle daemon holds none', async (t) => {
  const d = await daemonIn(t);
  const port = randomPort();
  // An echo server, except that "big" is answered with more bytes than the sockets on the way can hold.
  const big = Buffer.alloc(64 * 2 ** 20, 'x');
  let flood: Socket | undefined;
  const upstream = createServer((s) => {
    s.on('error', () => {});
    s.once('data', (c: Buffer) => {
      if (c.toString() === 'big') {
        flood = s;
        s.write(big);
        return;
      }
      s.write(c);
      s.pipe(s);
    });
  });
  const upstreamPort = randomPort();
  await new Promise<void>((r) => upstream.listen(upstreamPort, '127.0.0.1', r));
  t.teardown(() => upstream.close());
  await d.cli('bind', 'add', 'web', 'tcp', '127.0.0.1', String(port));
  await d.cli('upstream', 'add', 'web', `tcp:127.0.0.1:${upstreamPort}`);
  const pid = d.process.pid!;
  const baselineFds = await settledFds(pid);
  const baselinePipes = await settledPipes(pid);

  // A relay kept open throughout, so that the pool is not released as idle between the steps.
  const keeper = connect(port, '127.0.0.1');
  await new Promise((r) => keeper.once('connect', r));
  keeper.write('keep');
  await new Promise((r) => keeper.once('data', r));

  t.equal(await exchange(port, 'first'), 'first');
  const pooled = await settledPipes(pid);
  t.equal(pooled.size, baselinePipes.size + 4, "the keeper's two pipes and the first connection's two, pooled");
  for (let i = 0; i < 30; i++) t.equal(await exchange(port, `message ${i}`), `message ${i}`);
  t.same(await settledPipes(pid), pooled, 'thirty connections one after another used the same pipes');

  // A client that reads nothing and then resets: the upstream's bytes fill every buffer, the pipe included.
  const stuck = connect(port, '127.0.0.1', () => stuck.write('big'));
  stuck.on('error', () => {});
  stuck.pause();
  let last = -1;
  for (let same = 0; same < 3;) {
    await sleep(200);
    const queued = flood?.writableLength ?? -1;
    same = queued === last && queued > 0 ? same + 1 : 0;
    last = queued;
  }
  stuck.resetAndDestroy();
  const after = await settledPipes(pid);
  t.equal(after.size, pooled.size - 1, 'the pipe holding bytes was closed, the empty one pooled');
  t.ok(
    [...after].every((p) => pooled.has(p)),
    'no pipe was made',
  );
  t.equal(await exchange(port, 'clean'), 'clean', 'the next connection gets its own bytes only');

  keeper.destroy();
  let fds = 0;
  for (let i = 0; i < 100 && (fds = await settledFds(pid)) !== baselineFds; i++) await sleep(100);
  t.equal(fds, baselineFds, 'idle, the daemon holds no pipe and no epoll set of the relay');
});
