// npm run bench:table [-- --quick] [-- --daemon-only]
//
// Lookups per second of the binding table at 1k, 100k and 1M random bindings (mixed IPv4/IPv6, mixed ports
// and port 0, full precedence), side by side with a linear scan and the npm libraries arkime-iptrie (native)
// and longest-prefix-match (pure JS) doing the same job: each library is used as the prefix index of the
// same port-group scheme, so every case answers with the same precedence. Also: build time, a full
// replace of 100k bindings and the memory of 1M, both in the real daemon.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Binding, ControlClient, Table, formatBindingsFile } from '../dist/index.js';
import { interleaved, si, writeResult } from './common.js';
import { rng } from './rng.js';

const require = createRequire(import.meta.url);
const { IPTrie } = require('arkime-iptrie');
const LongestPrefixMatch = require('longest-prefix-match');

const QUICK = process.argv.includes('--quick');
const SIZES = process.argv.includes('--daemon-only') ? [] : QUICK ? [1_000, 100_000] : [1_000, 100_000, 1_000_000];
const ROUNDS = QUICK ? 3 : 5;
const CASE_MS = QUICK ? 150 : 400;
const PORTS = [80, 443, 53, 8080, 22, 8443, 25, 3306];

function mask(words, length) {
  const out = Uint32Array.from(words);
  for (let i = 0; i < out.length; i++) {
    const keep = Math.max(0, Math.min(32, length - 32 * i));
    out[i] = keep === 0 ? 0 : keep === 32 ? out[i] : out[i] & ~(0xffffffff >>> keep);
  }
  return out;
}

/** 3/4 IPv4 (mostly /20-/32), 1/4 IPv6 (mostly /48-/128); 40% port 0; 60% tcp; 1,000 labels. */
function randomBindings(n, seed) {
  const r = rng(seed);
  const word = () => (r() * 2 ** 32) >>> 0;
  const seen = new Set();
  const out = [];
  while (out.length < n) {
    const v4 = r() < 0.75;
    const length = v4 ? 32 - Math.floor(r() ** 2 * 24) : 128 - Math.floor(r() ** 2 * 96);
    const words = mask(v4 ? [word()] : [0x20010db8, word(), word(), word()], length);
    const port = r() < 0.4 ? 0 : PORTS[Math.floor(r() * PORTS.length)];
    const protocol = r() < 0.6 ? 'tcp' : 'udp';
    const key = `${protocol} ${words.join('.')}/${length} ${port}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(new Binding(`label-${Math.floor(r() * 1000)}`, protocol, v4 ? 4 : 6, words, length, port));
  }
  return out;
}

/**
 * 70% inside a bound prefix (host bits random), 30% anywhere; ports from the same set. Held as flat typed
 * arrays, the form the accept path has them in: the listener writes each address into one reused key.
 */
function randomQueries(bindings, n, seed) {
  const r = rng(seed);
  const q = { n, protocol: [], family: new Uint8Array(n), port: new Uint16Array(n), words: new Uint32Array(n * 4), text: [], cidr: [] };
  for (let i = 0; i < n; i++) {
    const b = bindings[Math.floor(r() * bindings.length)];
    const inside = r() < 0.7;
    const words = q.words.subarray(i * 4, i * 4 + (b.family === 4 ? 1 : 4));
    for (let w = 0; w < words.length; w++) {
      const random = (r() * 2 ** 32) >>> 0;
      const keep = inside ? Math.max(0, Math.min(32, b.length - 32 * w)) : b.family === 6 && w === 0 ? 32 : 0;
      const m = keep === 0 ? 0 : (0xffffffff << (32 - keep)) >>> 0;
      words[w] = ((b.word(w) & m) | (random & ~m)) >>> 0;
    }
    q.protocol.push(b.protocol);
    q.family[i] = b.family;
    q.port[i] = r() < 0.8 ? PORTS[Math.floor(r() * PORTS.length)] : 1 + Math.floor(r() * 65535);
    const text = b.family === 4 ? [24, 16, 8, 0].map((s) => (words[0] >>> s) & 255).join('.') : Array.from(words, (x) => `${(x >>> 16).toString(16)}:${(x & 0xffff).toString(16)}`).join(':');
    q.text.push(text);
    q.cidr.push(`${text}/${b.family === 4 ? 32 : 128}`);
  }
  return q;
}

/** Runs `fn(i)` over the queries for about CASE_MS; returns lookups per second. */
function rate(q, fn) {
  let done = 0;
  let sink = 0;
  const start = process.hrtime.bigint();
  let elapsed = 0;
  do {
    for (let i = 0; i < q.n; i++) {
      const label = fn(i);
      if (label !== undefined) sink += label.length;
    }
    done += q.n;
    elapsed = Number(process.hrtime.bigint() - start) / 1e6;
  } while (elapsed < CASE_MS);
  if (sink < 0) console.log(sink);
  return (done / elapsed) * 1000;
}

/** The same precedence over any prefix index: the port's group, then the port-0 group. */
function portGroups(bindings, makeIndex) {
  const groups = { tcp: new Map(), udp: new Map() };
  const byGroup = new Map();
  for (const b of bindings) {
    const key = `${b.protocol}/${b.port}`;
    if (!byGroup.has(key)) byGroup.set(key, []);
    byGroup.get(key).push(b);
  }
  for (const list of byGroup.values()) groups[list[0].protocol].set(list[0].port, makeIndex(list));
  return (q, i, find) => {
    const g = groups[q.protocol[i]];
    const s = g.get(q.port[i]);
    const w = g.get(0);
    const a = s === undefined ? undefined : find(s, i);
    const b = w === undefined ? undefined : find(w, i);
    if (a === undefined) return b?.label;
    if (b === undefined || a.length >= b.length) return a.label;
    return b.label;
  };
}

function arkime(bindings, q) {
  const lookup = portGroups(bindings, (list) => {
    const trie = new IPTrie();
    for (const b of list) trie.add(b.prefix.split('/')[0], b.length, { label: b.label, length: b.length });
    return trie;
  });
  return (i) => lookup(q, i, (trie, i) => trie.find(q.text[i]));
}

function lpm(bindings, q) {
  const lookup = portGroups(bindings, (list) => {
    const trie = new LongestPrefixMatch();
    for (const b of list) trie.addPrefix(b.prefix, { label: b.label, length: b.length });
    return trie;
  });
  return (i) => lookup(q, i, (trie, i) => trie.getMatch(q.cidr[i])[0]);
}

/** A straightforward scan over typed arrays: the floor any index must beat. */
function linear(bindings, q) {
  const n = bindings.length;
  const words = new Uint32Array(n * 4);
  const meta = new Int32Array(n * 4); // protocol, family, length, port
  bindings.forEach((b, i) => {
    for (let w = 0; w < 4; w++) words[i * 4 + w] = b.word(w);
    meta.set([b.protocol === 'tcp' ? 0 : 1, b.family, b.length, b.port], i * 4);
  });
  return (i) => {
    const proto = q.protocol[i] === 'tcp' ? 0 : 1;
    const family = q.family[i];
    const port = q.port[i];
    let best = -1;
    let bestScore = -1;
    for (let j = 0; j < n; j++) {
      const m = j * 4;
      if (meta[m] !== proto || meta[m + 1] !== family || (meta[m + 3] !== 0 && meta[m + 3] !== port)) continue;
      const length = meta[m + 2];
      let ok = true;
      for (let w = 0; w < (family === 4 ? 1 : 4) && ok; w++) {
        const keep = Math.max(0, Math.min(32, length - 32 * w));
        const k = keep === 0 ? 0 : (0xffffffff << (32 - keep)) >>> 0;
        ok = ((q.words[i * 4 + w] & k) >>> 0) === words[m + w];
      }
      const score = length * 2 + (meta[m + 3] !== 0 ? 1 : 0);
      if (ok && score > bestScore) {
        bestScore = score;
        best = j;
      }
    }
    return best < 0 ? undefined : bindings[best].label;
  };
}

function heapBytes() {
  global.gc?.();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

function check(table, cases, q) {
  // Every case must give the table's own answers, or its figure means nothing.
  for (let i = 0; i < 2000; i++) {
    const want = table.lookup(q.protocol[i], q.text[i], q.port[i])?.label;
    for (const [name, fn] of Object.entries(cases)) {
      const got = fn(i);
      if (got !== want) throw new Error(`${name} answered ${got} for ${q.protocol[i]} ${q.text[i]} port ${q.port[i]}, the table ${want}`);
    }
  }
}

async function lookups(size) {
  const bindings = randomBindings(size, size);
  const before = heapBytes();
  const t0 = performance.now();
  const table = Table.from(bindings);
  const buildMs = performance.now() - t0;
  const tableBytes = heapBytes() - before;
  const queries = randomQueries(bindings, 1 << 16, 7);
  const q = queries;
  const key = new Uint32Array(4);
  const cases = {
    'table (numeric address)': (i) => {
      // What a listener does per connection: the address into the reused key, then the lookup.
      const w = q.words;
      const o = i * 4;
      key[0] = w[o];
      key[1] = w[o + 1];
      key[2] = w[o + 2];
      key[3] = w[o + 3];
      return table.lookupLabel(q.protocol[i], q.family[i], key, q.port[i]);
    },
    'table (address string)': (i) => table.lookup(q.protocol[i], q.text[i], q.port[i])?.label,
    'arkime-iptrie': arkime(bindings, q),
  };
  if (size <= 100_000) cases['longest-prefix-match'] = lpm(bindings, q);
  if (size <= 1_000) cases['linear scan'] = linear(bindings, q);
  check(table, cases, queries);
  const rounds = await interleaved(
    Object.fromEntries(Object.entries(cases).map(([name, fn]) => [name, () => rate(queries, fn)])),
    ROUNDS,
    `${si(size)} bindings, `,
  );
  return { size, build_ms: buildMs, table_heap_mib: tableBytes / 2 ** 20, lookups_per_second: rounds };
}

/** The real daemon: load 100k, replace them with 100k others, then load 1M and read its RSS. */
async function daemon() {
  const dir = await mkdtemp(join(tmpdir(), 'dispatcher-bench-'));
  const control = join(dir, 'control.sock');
  const child = spawn(process.execPath, [fileURLToPath(new URL('../bin/dispatcher', import.meta.url)), 'daemon', '--control', control, '--state-dir', join(dir, 'state')], { stdio: 'ignore' });
  try {
    const client = new ControlClient(control);
    for (let i = 0; ; i++) {
      try {
        await client.call('GET', '/status');
        break;
      } catch (err) {
        if (i > 200) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    const load = async (bindings) => {
      const body = JSON.stringify(formatBindingsFile(bindings));
      const t0 = performance.now();
      await client.call('PUT', '/bindings', { body });
      return performance.now() - t0;
    };
    const rss = async () => Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${child.pid}/status`, 'utf8'))[1]) / 1024;
    const idleRss = await rss();
    const first = await load(randomBindings(100_000, 1));
    const replace = await load(randomBindings(100_000, 2));
    const result = { rss_idle_mib: idleRss, load_100k_ms: first, replace_100k_ms: replace };
    if (!QUICK) {
      result.load_1m_ms = await load(randomBindings(1_000_000, 3));
      result.rss_1m_after_load_mib = await rss();
      // What the daemon keeps once the load's garbage is collected (it collects after a large replace).
      await new Promise((r) => setTimeout(r, 5_000));
      result.rss_1m_mib = await rss();
    }
    return result;
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    await rm(dir, { recursive: true, force: true });
  }
}

const results = [];
for (const size of SIZES) results.push(await lookups(size));
const daemonFigures = await daemon();

console.log('\nLookups per second (median of %d interleaved rounds; min-max)', ROUNDS);
for (const r of results) {
  console.log(`\n${si(r.size)} bindings: built in ${r.build_ms.toFixed(0)} ms, ${r.table_heap_mib.toFixed(1)} MiB of heap`);
  const ark = r.lookups_per_second['arkime-iptrie'].median;
  for (const [name, s] of Object.entries(r.lookups_per_second)) {
    console.log(`  ${name.padEnd(26)} ${si(s.median).padStart(7)}/s  (${si(s.min)}-${si(s.max)})  ${(s.median / ark).toFixed(2)}x arkime-iptrie`);
  }
}
console.log('\nThe daemon (control API, persisted):');
console.log(`  load 100k bindings        ${daemonFigures.load_100k_ms.toFixed(0)} ms`);
console.log(`  replace 100k by 100k      ${daemonFigures.replace_100k_ms.toFixed(0)} ms   (target < 1000 ms)`);
if (daemonFigures.rss_1m_mib !== undefined) {
  console.log(`  load 1M bindings          ${daemonFigures.load_1m_ms.toFixed(0)} ms`);
  console.log(`  resident memory at 1M     ${daemonFigures.rss_1m_mib.toFixed(0)} MiB settled, ${daemonFigures.rss_1m_after_load_mib.toFixed(0)} MiB right after the load (empty daemon ${daemonFigures.rss_idle_mib.toFixed(0)} MiB; target < 300 MB)`);
}
console.log(`\n${await writeResult('table', { quick: QUICK, lookups: results, daemon: daemonFigures })}`);
