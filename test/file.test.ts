import t from 'tap';
import { formatBindingsFile, parseBindingsText } from '../src/bindings/file.js';
import { rng } from './helpers/rng.js';

t.test('an entry without protocol applies to tcp and udp (Tubular files load unchanged)', async (t) => {
  const bindings = parseBindingsText(
    JSON.stringify({
      bindings: [
        { label: 'foo', prefix: '127.0.0.1/32', port: 8080 },
        { label: 'bar', prefix: '::1', port: 0, protocol: 'udp' },
      ],
    }),
  );
  t.same(bindings.map(String), [
    'tcp 127.0.0.1/32 port 8080 -> foo',
    'udp 127.0.0.1/32 port 8080 -> foo',
    'udp ::1/128 port 0 (every port) -> bar',
  ]);
  t.same(parseBindingsText(JSON.stringify(formatBindingsFile(bindings))).map(String), bindings.map(String), 'format | parse round trip');
});

t.test('every kind of bad file is refused with what and where', async (t) => {
  const cases: [string, RegExp][] = [
    ['{', /not valid JSON/],
    ['[]', /not an object with a "bindings" array/],
    ['{"bindings": {}}', /"bindings" is not an array/],
    ['{"bindings": [], "extra": 1}', /unknown field "extra"/],
    ['{"bindings": [1]}', /bindings\[0\] is not an object/],
    ['{"bindings": [{"label": "a", "prefix": "192.0.2.0/24"}]}', /bindings\[0\]: "port" is required/],
    ['{"bindings": [{"label": "a", "prefix": "192.0.2.0/24", "port": 1, "weight": 2}]}', /bindings\[0\]: unknown field "weight"/],
    ['{"bindings": [{"label": "a", "prefix": "192.0.2.0/24", "port": "80"}]}', /bindings\[0\]: port "80"/],
    ['{"bindings": [{"label": "a", "prefix": "192.0.2.0/24", "port": 1, "protocol": "sctp"}]}', /bindings\[0\]: protocol "sctp"/],
    ['{"bindings": [{"label": "a", "label": "b", "prefix": "192.0.2.0/24", "port": 1}]}', /duplicate key "label" at line 1, column 30/],
    [
      '{"bindings": [{"label": "a", "prefix": "192.0.2.0/24", "port": 1}, {"label": "b", "prefix": "192.0.2.9/24", "port": 1, "protocol": "udp"}]}',
      /bindings\[1\]: udp 192.0.2.0\/24 port 1 is already bound by bindings\[0\]/,
    ],
    ['{"bindings": [{"label": "a", "prefix": "::ffff:1.2.3.4", "port": 1}]}', /IPv4-mapped/],
    ['{"bindings": [{"label": "a", "prefix": "192.0.2.0/24", "port": NaN}]}', /not valid JSON/],
  ];
  for (const [text, re] of cases) t.throws(() => parseBindingsText(text, 'f.json'), { code: 'ERR_BINDINGS_FILE', message: re }, text);
  t.throws(() => parseBindingsText('{', 'f.json'), { message: /^f\.json: / }, 'errors name the file');
});

t.test('an IPv4 and an IPv6 prefix with equal words and length are not duplicates', async (t) => {
  const pairs = [
    ['0.0.0.0/0', '::/0'],
    ['10.0.0.0/8', 'a00::/8'],
  ];
  for (const [four, six] of pairs) {
    const text = JSON.stringify({
      bindings: [
        { label: 'a', prefix: six, port: 0 },
        { label: 'b', prefix: four, port: 0 },
      ],
    });
    t.same(parseBindingsText(text).map(String), [
      `tcp ${six} port 0 (every port) -> a`,
      `udp ${six} port 0 (every port) -> a`,
      `tcp ${four} port 0 (every port) -> b`,
      `udp ${four} port 0 (every port) -> b`,
    ]);
  }
});

t.test('JSON nested deeper than the stack is refused with a clear error, not a RangeError', async (t) => {
  const deep = (n: number): string => `${'['.repeat(n)}${']'.repeat(n)}`;
  t.throws(() => parseBindingsText(deep(100_000)), { code: 'ERR_BINDINGS_FILE', message: /not an object with a "bindings" array/ });
  t.throws(() => parseBindingsText(`{"bindings": [{"label": ${deep(100_000)}, "prefix": "10.0.0.0/8", "port": 1}]}`), {
    code: 'ERR_BINDINGS_FILE',
    message: /bindings\[0\]: label \[\.\.\.\] \(nested too deeply to show\)/,
  });
  // A duplicate key makes the file parse a second time, with a tree: too deep for it, it still says why.
  t.throws(() => parseBindingsText(`{"bindings": [], "bindings": ${deep(200_000)}}`), {
    code: 'ERR_BINDINGS_FILE',
    message: /nested too deeply/,
  });
});

t.test('a text parsed entry by entry gives what the whole document gives: the bindings or the same error', async (t) => {
  // The escaped key means the same JSON but is not the plain shape, so it takes the whole-document path.
  const whole = (text: string): string => text.replace('"bindings"', '"bindin\\u0067s"');
  const outcome = (text: string): string => {
    try {
      return parseBindingsText(text).map(String).join('\n');
    } catch (err) {
      return (err as Error).message.replace(/line \d+, column \d+|position \d+|\(\d+:\d+\)/g, 'AT');
    }
  };
  const r = rng(16);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const space = ['', ' ', '\n', '\t', ' \r\n '];
  const entries = [
    '{"label": "a", "prefix": "192.0.2.0/24", "port": 80}',
    '{"label": "b", "prefix": "2001:db8::/32", "port": 0, "protocol": "udp"}',
    '{ "port" : 1 , "label" : "c{[\\"}", "prefix" : "10.0.0.1" }',
    '{"label": "a", "prefix": "192.0.2.0/24", "port": 80, "protocol": "tcp"}',
    '{"label": "d", "label": "e", "prefix": "10.0.0.0/8", "port": 1}',
    '{"label": "f", "prefix": "10.0.0.0/8", "port": 1, "extra": {"x": 1}}',
    '{"label": "g", "prefix": "10.0.0.0/33", "port": 1}',
    '{"label": "h", "prefix": "10.0.0.0/8", "port": [1]}',
    '{"label": "i", "prefix": "10.0.0.0/8" "port": 1}',
    '{"label": "j", "prefix": "10.0.0.0/8", "port": 1,}',
    '{}',
    '1',
    '',
  ];
  const fast = parseBindingsText('{"bindings": [' + entries[0] + ']}');
  t.equal(fast.length, 2, 'the plain shape parses');
  for (let i = 0; i < 400; i++) {
    const n = Math.floor(r() * 5);
    const parts = Array.from({ length: n }, () => pick(space) + pick(entries) + pick(space));
    const text =
      pick(space) +
      '{' +
      pick(space) +
      '"bindings"' +
      pick(space) +
      ':' +
      pick(space) +
      '[' +
      parts.join(',') +
      ']' +
      pick(space) +
      pick(['}', '}', '}', '', '}}', '}, 1']) +
      pick(space);
    t.equal(outcome(text), outcome(whole(text)), text);
  }
});
