import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import t from 'tap';
import { rng } from './helpers/bindings.js';
import { daemonIn } from './helpers/daemon.js';
import { openFds, settledFds } from './helpers/native.js';

/**
 * Fuzzes the control socket: valid requests of docs/control-api.md, mutated (bytes flipped, truncated,
 * wrong types, huge numbers, deep nesting, bad prefixes, ports and labels, huge and broken headers), sent
 * raw over the Unix socket. Every answer is read; the bindings the successful ones reported changing are
 * kept in a model, which must equal the daemon's table afterwards: a request that failed changed nothing.
 */
const SEED = Number(process.env['FUZZ_SEED'] ?? 20261201);
const ITERATIONS = 1200;
const CONCURRENCY = 8;
const MiB = 1024 * 1024;
/**
 * What the daemon's RSS may grow by, each figure read after the daemon's own full collection: V8 keeps the
 * heap it grew to parse bodies of up to 2 MB, 8 at a time, so the first half of the run may grow it to a
 * plateau; the second half, the same kind of requests, must not grow it much more. The bound catches leaks
 * of a body's size (a 2 MB body kept per request would be over 1 GB), not of a few kilobytes.
 */
const RSS_GROWTH_MAX = 128 * MiB;
const RSS_SECOND_HALF_MAX = 48 * MiB;

const rand = rng(SEED);
const int = (n: number): number => Math.floor(rand() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;

// Few ports, so the listeners that valid adds open stay few.
const PORTS = [0, 0, 0, 40400, 40401];
const PREFIXES = ['192.0.2.0/24', '192.0.2.200', '10.0.0.0/8', 'a00::/8', '::/0', '0.0.0.0/0', '2001:db8::/32', '2001:db8::1'];
const WEIRD: unknown[] = [
  null,
  true,
  1.5,
  -1,
  65536,
  1e308,
  -0,
  2 ** 53 + 1,
  '',
  ' ',
  'a'.repeat(65),
  'wéb',
  'a\u0000b',
  '80',
  [],
  {},
  [1, 2],
  '1.2.3.4/33',
  '::ffff:1.2.3.4',
  '1.2.3.4/',
  '999.1.1.1',
  'fe80::1%eth0',
  '1.2.3.4/-1',
  'x'.repeat(5000),
  'sctp',
  'TCP',
];

function binding(): Record<string, unknown> {
  return { label: pick(['web', 'dns', 'a.b_c-1', 'w2']), protocol: pick(['tcp', 'udp']), prefix: pick(PREFIXES), port: pick(PORTS) };
}

/** A value nested `depth` deep in arrays or objects. */
const deep = (depth: number): string =>
  rand() < 0.5 ? `${'['.repeat(depth)}${']'.repeat(depth)}` : `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;

/** A JSON body that is valid, or wrong in one of the ways a hostile client would try. */
function body(valid: Record<string, unknown>): string {
  switch (int(8)) {
    case 0:
    case 1:
    case 2:
      return JSON.stringify(valid);
    case 3: {
      const field = pick(Object.keys(valid));
      return JSON.stringify({ ...valid, [field]: pick(WEIRD) });
    }
    case 4:
      return JSON.stringify({ ...valid, [pick(['extra', '__proto__', 'constructor', 'Label'])]: 1 });
    case 5: {
      const field = pick(Object.keys(valid));
      return JSON.stringify(valid).replace(`"${field}":`, `"${field}": ${deep(1 + int(20_000))}, "${field}":`);
    }
    case 6:
      return deep(1 + int(100_000));
    default: {
      const text = JSON.stringify(valid);
      return `{"${field(valid)}": ${text}, "x": ${text}`.slice(0, 1 + int(text.length * 2));
    }
  }
}
const field = (o: Record<string, unknown>): string => pick(Object.keys(o));

/** A valid request of the control API, as raw HTTP. */
function validRequest(): { method: string; path: string; body?: string } {
  switch (int(10)) {
    case 0:
      return {
        method: 'GET',
        path: pick(['/v1/bindings', '/v1/bindings?protocol=tcp', '/v1/bindings?prefix=10.0.0.0/8&port=0', '/v1/bindings?port=x']),
      };
    case 1:
    case 2:
    case 3:
      return { method: 'POST', path: '/v1/bindings', body: body(binding()) };
    case 4:
      return { method: 'DELETE', path: '/v1/bindings', body: body(binding()) };
    case 5: {
      const file = { bindings: Array.from({ length: int(6) }, binding) };
      return { method: 'PUT', path: pick(['/v1/bindings', '/v1/bindings?dry_run=true']), body: body(file) };
    }
    case 6:
      return {
        method: 'GET',
        path: `/v1/lookup?protocol=${pick(['tcp', 'udp', 'x'])}&address=${pick(['192.0.2.9', '::1', '10.1.2.3', 'zz', ''])}&port=${pick(['80', '0', '65536', '-1'])}`,
      };
    case 7:
      return {
        method: 'GET',
        path: pick(['/v1/status', '/v1/services', '/v1/upstreams', '/v2/status', '/', '/v1/../v1/status', '/v1/%zz']),
      };
    case 8:
      return {
        method: 'POST',
        path: '/v1/upstreams',
        body: body({
          label: 'web',
          address: pick(['tcp:127.0.0.1:1', 'tcp:[::1]:2', 'udp:1.2.3.4:5', 'tcp:x']),
          proxy_protocol: pick(['none', 'v1', 'v2', 'v3']),
        }),
      };
    default:
      return {
        method: pick(['DELETE', 'PATCH', 'OPTIONS']),
        path: pick(['/v1/upstreams', '/v1/bindings']),
        body: body({ label: pick(['web', 'nope']) }),
      };
  }
}

function raw(r: { method: string; path: string; body?: string }, headers: string[] = []): Buffer {
  const b = r.body === undefined ? Buffer.alloc(0) : Buffer.from(r.body);
  const lines = [
    `${r.method} ${r.path} HTTP/1.1`,
    'Host: dispatcher',
    ...(r.body === undefined ? [] : [`Content-Length: ${b.length}`, 'Content-Type: application/json']),
    ...headers,
  ];
  return Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`), b]);
}

/** A request to send, valid or mutated at the byte or header level, and the answers to wait for. */
function request(): [Buffer, number | 'incomplete'] {
  const r = validRequest();
  switch (int(10)) {
    case 0: {
      const bytes = raw(r);
      for (let i = 0, n = 1 + int(4); i < n; i++) bytes[int(bytes.length)] = int(256);
      return [bytes, 1];
    }
    case 1: {
      const bytes = raw(r);
      return [bytes.subarray(0, int(bytes.length)), 'incomplete'];
    }
    case 2:
      return [raw(r, [`X-Big: ${'a'.repeat(pick([100, 20_000, 200_000]))}`]), 1];
    case 3:
      return [
        raw(
          r,
          Array.from({ length: pick([10, 3000]) }, (_, i) => `X-H${i}: ${i}`),
        ),
        1,
      ];
    case 4: {
      const header = pick([
        'Content-Length: -1',
        'Content-Length: 99999999999',
        'Content-Length: 1, 2',
        'Transfer-Encoding: chunked',
        'Content-Length: 1e3',
        'Expect: 100-continue',
        'Connection: close',
      ]);
      return [raw(r, [header]), 1];
    }
    case 5:
      return [Buffer.concat([raw(r), raw(validRequest())]), 2]; // pipelined
    case 6:
      return [Buffer.from(Array.from({ length: int(300) }, () => int(256))), 1];
    case 7: {
      // A large file cut short: the body is complete, the JSON is not.
      const entries = '{"label": "a", "prefix": "10.0.0.0/8", "port": 1},'.repeat(int(40_000));
      return [raw({ method: 'PUT', path: '/v1/bindings', body: `{"bindings": [${entries}` }), 1];
    }
    default:
      return [raw(r), 1];
  }
}

interface Answer {
  status: number;
  body: unknown;
  head: string;
}

/**
 * Sends `bytes` and reads the answers. Node's server drops the requests of a client that half-closes, so
 * the socket is ended only once `expect` answers came, after 2 s without them (a mutation left a request
 * incomplete), or at once for a request sent incomplete on purpose. Undefined if the daemon never closes.
 */
function send(socket: string, bytes: Buffer, expect: number | 'incomplete' = 1): Promise<Answer[] | undefined> {
  return new Promise((resolve) => {
    let received = Buffer.alloc(0);
    let timedOut = false;
    const s = connect(socket, () => (expect === 'incomplete' ? s.end(bytes) : s.write(bytes)));
    const quiet = setTimeout(() => s.end(), 2000);
    const timer = setTimeout(() => {
      timedOut = true;
      s.destroy();
    }, 5000);
    s.on('data', (c: Buffer) => {
      received = Buffer.concat([received, c]);
      if (typeof expect === 'number' && parseAnswers(received).length >= expect) s.end();
    });
    // The daemon may close while this side still writes (a refused request): the answer is read anyway.
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(quiet);
      clearTimeout(timer);
      resolve(timedOut ? undefined : parseAnswers(received));
    });
  });
}

/**
 * The complete answers in `bytes`: the daemon's have a Content-Length; Node's own (a 400 for a request
 * without Host) may be chunked.
 */
function parseAnswers(bytes: Buffer): Answer[] {
  const out: Answer[] = [];
  let at = 0;
  for (;;) {
    const end = bytes.indexOf('\r\n\r\n', at);
    if (end < 0) return out;
    const head = bytes.subarray(at, end).toString('latin1');
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
    let body: Buffer = Buffer.alloc(0);
    at = end + 4;
    if (/\r\ntransfer-encoding: *chunked/i.test(head)) {
      for (;;) {
        const line = bytes.indexOf('\r\n', at);
        if (line < 0) return out;
        const size = parseInt(bytes.subarray(at, line).toString('latin1'), 16);
        if (bytes.length < line + 2 + size + 2) return out;
        body = Buffer.concat([body, bytes.subarray(line + 2, line + 2 + size)]);
        at = line + 2 + size + 2;
        if (size === 0) break;
      }
    } else {
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      if (bytes.length < at + length) return out;
      body = bytes.subarray(at, at + length);
      at += length;
    }
    const text = body.toString('utf8');
    // 1xx answers (100 Continue) come before the real one.
    if (!(status >= 100 && status < 200)) out.push({ status, body: text === '' ? undefined : JSON.parse(text), head });
  }
}

interface BindingJSON {
  label: string;
  protocol: string;
  prefix: string;
  port: number;
}
const isBinding = (v: unknown): v is BindingJSON => typeof v === 'object' && v !== null && 'prefix' in v && 'label' in v;
const keyOf = (b: BindingJSON): string => `${b.protocol} ${b.prefix} ${b.port}`;

t.test('fuzzing the control socket: errors change nothing, the daemon serves, descriptors and memory come back', async (t) => {
  t.comment(`seed ${SEED} (replay with FUZZ_SEED=${SEED})`);
  const d = await daemonIn(t, ['--listen-address', '127.0.0.1']);
  const pid = d.process.pid!;
  const rss = (): number => Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
  // RSS once the daemon has collected: without it the figure is wherever V8's last collection left it
  // (47-205 MiB of growth over the same run). A request of LARGE_BODY bytes or more makes the daemon
  // collect half a second after its reply; a dry run of the initial table, padded, changes nothing.
  const settledRss = async (): Promise<number> => {
    const padded = JSON.stringify(initial) + ' '.repeat(4 * MiB);
    const a = await send(d.control, raw({ method: 'PUT', path: '/v1/bindings?dry_run=true', body: padded }));
    t.equal(a?.[0]?.status, 200, 'a padded dry run, for the collection after it');
    await new Promise((r) => setTimeout(r, 1500));
    return rss();
  };
  const list = async (): Promise<BindingJSON[]> => {
    const a = await send(d.control, raw({ method: 'GET', path: '/v1/bindings' }));
    return (a![0]!.body as { bindings: BindingJSON[] }).bindings;
  };
  const initial = {
    bindings: [
      { label: 'seed', protocol: 'tcp', prefix: '198.51.100.0/24', port: 0 },
      { label: 'seed6', protocol: 'udp', prefix: '::/0', port: 0 },
    ],
  };
  t.equal((await send(d.control, raw({ method: 'PUT', path: '/v1/bindings', body: JSON.stringify(initial) })))![0]!.status, 200);
  const fdsBefore = await settledFds(pid);
  const rssBefore = await settledRss();

  // What the daemon's table must be: the initial bindings, changed only by what 200 answers reported.
  const model = new Map((await list()).map((b) => [keyOf(b), b]));
  const apply = (a: Answer): void => {
    if (a.status !== 200 || typeof a.body !== 'object' || a.body === null) return;
    const body = a.body as Record<string, unknown>;
    if (isBinding(body['binding'])) model.set(keyOf(body['binding']), body['binding']);
    else if (isBinding(body['removed'])) model.delete(keyOf(body['removed']));
    else if (body['dry_run'] === false) {
      for (const b of body['removed'] as BindingJSON[]) model.delete(keyOf(b));
      for (const b of body['added'] as BindingJSON[]) model.set(keyOf(b), b);
    }
  };

  let queue: Promise<unknown> = Promise.resolve();
  const serially = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = queue.then(fn);
    queue = run.catch(() => undefined);
    return run;
  };
  const statuses = new Map<number, number>();
  const problems: string[] = [];
  let unanswered = 0;
  let next = 0;
  const worker = async (until: number): Promise<void> => {
    while (next < until) {
      const i = next++;
      const [bytes, expect] = request();
      // Changes are sent one at a time: answers to concurrent changes of one key can arrive in either order.
      const changes = /(POST|PUT|DELETE) \/v1\/bindings/.test(bytes.toString('latin1'));
      const answers = changes ? await serially(() => send(d.control, bytes, expect)) : await send(d.control, bytes, expect);
      if (answers === undefined) {
        unanswered++;
        continue;
      }
      for (const a of answers) {
        statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
        if (!(a.status >= 200 && a.status < 600)) problems.push(`#${i}: an answer that is not HTTP/1.1: ${JSON.stringify(a.head)}`);
        apply(a);
        // The daemon's own answers are JSON, and an error names its code; a 500 is a bug it did not expect.
        const error = (a.body as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
        if (a.status !== 200 && a.body !== undefined && (typeof error?.code !== 'string' || typeof error.message !== 'string'))
          problems.push(`#${i}: ${a.status} without an error code`);
        if (a.status >= 500 && a.status !== 503)
          problems.push(
            `#${i}: ${a.status} ${JSON.stringify(a.body).slice(0, 200)} for ${JSON.stringify(bytes.subarray(0, 200).toString('latin1'))}`,
          );
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, () => worker(ITERATIONS / 2)));
  const rssHalfway = await settledRss();
  await Promise.all(Array.from({ length: CONCURRENCY }, () => worker(ITERATIONS)));
  t.comment(`statuses: ${JSON.stringify(Object.fromEntries([...statuses].sort()))}, unanswered: ${unanswered}`);
  t.same(problems, [], 'no answer is a 5xx (but 503) or an error without a code');
  t.ok(
    (statuses.get(200) ?? 0) > ITERATIONS / 10 && (statuses.get(400) ?? 0) > ITERATIONS / 10,
    'both successes and refusals were exercised',
  );
  t.equal(unanswered, 0, 'every connection was answered or closed within 5 s');

  const after = await list();
  const want = [...model.values()].map(keyOf).sort();
  t.same(after.map(keyOf).sort(), want, 'the table is what the successful requests made it: no failed request changed it');
  t.same(new Map(after.map((b) => [keyOf(b), b.label])), new Map([...model].map(([k, b]) => [k, b.label])), 'with the same labels');

  // Alive and serving.
  t.equal((await d.cli('bind', 'add', 'after', 'tcp', '203.0.113.0/24', '0')).code, 0, 'a valid bind add works');
  t.match((await d.cli('lookup', 'tcp', '203.0.113.7', '80')).stdout, /^after\t/, 'and a lookup finds it');

  // Back to the initial table: the listeners valid adds opened close, so descriptors return to the baseline.
  t.equal((await send(d.control, raw({ method: 'PUT', path: '/v1/bindings', body: JSON.stringify(initial) })))![0]!.status, 200);
  const deadline = Date.now() + 10_000;
  while (openFds(pid) !== fdsBefore && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  t.equal(openFds(pid), fdsBefore, `descriptors back to the baseline of ${fdsBefore}`);
  const rssAfter = await settledRss();
  const mb = (n: number): number => Math.round(n / MiB);
  t.ok(rssAfter - rssBefore < RSS_GROWTH_MAX, `RSS grew by ${mb(rssAfter - rssBefore)} MiB, under ${mb(RSS_GROWTH_MAX)} MiB`);
  t.ok(
    rssAfter - rssHalfway < RSS_SECOND_HALF_MAX,
    `RSS grew by ${mb(rssAfter - rssHalfway)} MiB in the second half, under ${mb(RSS_SECOND_HALF_MAX)} MiB`,
  );
});
