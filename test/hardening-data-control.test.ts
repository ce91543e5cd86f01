import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import t from 'tap';
import { daemonIn } from './helpers/daemon.js';

const MiB = 1024 * 1024;
/** The daemon's defaults: the largest body, and the body bytes all requests may hold at once. */
const MAX_BODY = 128 * MiB;
const MAX_BUFFERED = MAX_BODY + 64 * MiB;

/** A line of /proc/PID/status in bytes, e.g. VmRSS or VmHWM (the peak). */
const memory = (pid: number, field: 'VmRSS' | 'VmHWM'): number => {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
};

interface Answer {
  status: number;
  body: { error?: { code: string; message: string } };
  ms: number;
}

/** Sends `size` bytes made of `chunk` repeated (then `tail`), with Content-Length, and resolves on the answer. */
function upload(socketPath: string, method: string, path: string, chunk: Buffer, size: number, tail = Buffer.alloc(0)): Promise<Answer> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = request({ socketPath, method, path, headers: { 'content-length': size + tail.length } }, (res) => {
      answered = true;
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) as Answer['body'], ms: Date.now() - started }));
    });
    // Once refused, the daemon closes the connection while this side may still be writing.
    req.on('error', (err) => answered || reject(err));
    let sent = 0;
    const write = (): void => {
      while (sent < size) {
        const part = chunk.subarray(0, Math.min(chunk.length, size - sent));
        sent += part.length;
        if (!req.write(part)) return void req.once('drain', write);
      }
      req.end(tail);
    };
    write();
  });
}

t.test('concurrent large bodies are bounded: the extra ones get 503 naming the limit, memory stays bounded', async (t) => {
  const d = await daemonIn(t);
  const pid = d.process.pid!;
  const before = memory(pid, 'VmRSS');
  const n = 16;
  const size = 40 * MiB;
  const x = Buffer.alloc(MiB, 'x');
  const answers = await Promise.all(Array.from({ length: n }, () => upload(d.control, 'PUT', '/v1/bindings', x, size)));
  const busy = answers.filter((a) => a.status === 503);
  const read = answers.filter((a) => a.status === 400);
  t.equal(busy.length + read.length, n, `every upload is answered 400 or 503: ${answers.map((a) => a.status).join(' ')}`);
  t.ok(read.length >= 1, 'at least one body is read');
  t.ok(
    read.length <= Math.floor(MAX_BUFFERED / size),
    `at most ${Math.floor(MAX_BUFFERED / size)} bodies of ${size} are held at once (${read.length})`,
  );
  for (const a of busy)
    t.match(a.body.error, { code: 'ERR_BUSY', message: new RegExp(`of the ${MAX_BUFFERED} bytes the daemon buffers at once`) });
  for (const a of read) t.match(a.body.error, { code: 'ERR_BINDINGS_FILE', message: /not valid JSON/ });

  // A held body is a buffer, then a string: 2x the budget at the peak, plus the allocator's and heap's slack.
  const bound = 3 * MAX_BUFFERED;
  const grew = memory(pid, 'VmHWM') - before;
  t.ok(grew < bound, `peak RSS grew by ${Math.round(grew / MiB)} MiB, under ${Math.round(bound / MiB)} MiB`);

  t.equal((await d.cli('bind', 'add', 'web', 'tcp', '192.0.2.0/24', '0')).code, 0, 'it still serves');
  t.match((await d.cli('lookup', 'tcp', '192.0.2.9', '80')).stdout, /^web\t/);
});

t.test('a body meant to be one object is refused past 64 KiB, before it is read', async (t) => {
  const d = await daemonIn(t);
  const a = await upload(d.control, 'POST', '/v1/bindings', Buffer.alloc(MiB, ' '), 32 * MiB);
  t.equal(a.status, 413);
  t.match(a.body.error, { code: 'ERR_REQUEST', message: /request body of 33554432 bytes is over the limit of 65536/ });
});

t.test('a 50 MB malformed body gets a prompt error naming where', async (t) => {
  const d = await daemonIn(t);
  const entry = '{"label": "a", "prefix": "10.0.0.0/8", "port": 1},\n';
  const count = Math.ceil((50 * MiB) / entry.length);
  const entries = entry.repeat(count);
  const put = (text: string): Promise<Answer> => {
    const body = Buffer.from(text);
    return upload(d.control, 'PUT', '/v1/bindings', body, body.length);
  };

  // The last entry lacks its comma: V8's error gives the position.
  const missingComma = await put(`{"bindings": [\n${entries}{"label": "b"} {}]}`);
  t.equal(missingComma.status, 400);
  t.match(missingComma.body.error, {
    code: 'ERR_BINDINGS_FILE',
    message: new RegExp(`not valid JSON: Expected ',' or ']' after array element at line ${count + 2}, column 16`),
  });
  t.ok(missingComma.ms < 10_000, `answered in ${missingComma.ms} ms`);

  // A trailing comma: V8 gives no position but quotes the text around it.
  const token = await put(`{"bindings": [\n${entries}]}`);
  t.equal(token.status, 400);
  t.match(token.body.error, {
    code: 'ERR_BINDINGS_FILE',
    message: /not valid JSON: Unexpected token '\]', \.\.\.".*\\n\]}" is not valid JSON/,
  });
  t.ok(token.ms < 10_000, `answered in ${token.ms} ms`);
  t.match((await d.cli('bind', 'export')).stdout, /"bindings": \[\]/, 'nothing changed');
});
