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
import { capture, interleaved, si, writeResult } from './common.js';
import { rng } from '../test/helpers/rng.js';

/** @typedef {import('../dist/index.js').Protocol} Protocol */
/** @typedef {import('../dist/index.js').Family} Family */
/** @typedef {import('./common.js').Summary} Summary */
/** A case: the label the `i`th query finds. @typedef {(i: number) => string | undefined} Lookup */
/** What the libraries' indexes hold per prefix. @typedef {{ label: string, length: number }} Match */
/**
 * The parts used of two libraries that ship no typings.
 * @typedef {{ add(address: string, bits: number, value: Match): void, find(address: string): Match | undefined }} IPTrie
 * @typedef {{ addPrefix(prefix: string, value: Match): void, getMatch(address: string): Match[] }} LongestPrefixMatch
 */
/**
 * Queries as flat arrays (query `i`: words[4i .. 4i+3], the unused ones 0).
 * @typedef {{ n: number, protocol: Protocol[], family: Uint8Array, port: Uint16Array, words: Uint32Array, text: string[], cidr: string[] }} Queries
 */

// CommonJS packages, typed by hand above (`require` by that name would make tsc look for their typings).
const requireCommonJs = createRequire(import.meta.url);
// Each is `unknown` before its cast: typescript-eslint does not see JSDoc casts, so a cast of `any` stays `any` to it.
/** @type {unknown} */
const arkimeModule = requireCommonJs('arkime-iptrie');
/** @type {unknown} */
const lpmModule = requireCommonJs('longest-prefix-match');
const { IPTrie } = /** @type {{ IPTrie: new () => IPTrie }} */ (arkimeModule);
const LongestPrefixMatch = /** @type {new () => LongestPrefixMatch} */ (lpmModule);

const QUICK = process.argv.includes('--quick');
const SIZES = process.argv.includes('--daemon-only') ? [] : QUICK ? [1_000, 100_000] : [1_000, 100_000, 1_000_000];
const ROUNDS = QUICK ? 3 : 5;
const CASE_MS = QUICK ? 150 : 400;
const PORTS = [80, 443, 53, 8080, 22, 8443, 25, 3306];

/**
 * `words` with the bits past `length` cleared.
 * @param {number[]} words
 * @param {number} length
 */
function mask(words, length) {
  return Uint32Array.from(words, (word, i) => {
    const keep = Math.max(0, Math.min(32, length - 32 * i));
    return keep === 0 ? 0 : keep === 32 ? word : word & ~(0xffffffff >>> keep);
  });
}

/**
 * One of PORTS, drawn with `r`.
 * @param {() => number} r
 */
const anyPort = (r) => /** @type {number} */ (PORTS[Math.floor(r() * PORTS.length)]);

/**
 * 3/4 IPv4 (mostly /20-/32), 1/4 IPv6 (mostly /48-/128); 40% port 0; 60% tcp; 1,000 labels.
 * @param {number} n
 * @param {number} seed
 */
function randomBindings(n, seed) {
  const r = rng(seed);
  const word = () => (r() * 2 ** 32) >>> 0;
  /** @type {Set<string>} */
  const seen = new Set();
  /** @type {Binding[]} */
  const out = [];
  while (out.length < n) {
    const v4 = r() < 0.75;
    const length = v4 ? 32 - Math.floor(r() ** 2 * 24) : 128 - Math.floor(r() ** 2 * 96);
    const words = mask(v4 ? [word()] : [0x20010db8, word(), word(), word()], length);
    const port = r() < 0.4 ? 0 : anyPort(r);
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
 * @param {Binding[]} bindings (not empty)
 * @param {number} n
 * @param {number} seed
 * @returns {Queries}
 */
function randomQueries(bindings, n, seed) {
  const r = rng(seed);
  /** @type {Queries} */
  const q = { n, protocol: [], family: new Uint8Array(n), port: new Uint16Array(n), words: new Uint32Array(n * 4), text: [], cidr: [] };
  for (let i = 0; i < n; i++) {
    const b = /** @type {Binding} */ (bindings[Math.floor(r() * bindings.length)]);
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
    q.port[i] = r() < 0.8 ? anyPort(r) : 1 + Math.floor(r() * 65535);
    const w0 = /** @type {number} */ (words[0]);
    const text =
      b.family === 4
        ? [24, 16, 8, 0].map((s) => (w0 >>> s) & 255).join('.')
        : Array.from(words, (x) => `${(x >>> 16).toString(16)}:${(x & 0xffff).toString(16)}`).join(':');
    q.text.push(text);
    q.cidr.push(`${text}/${b.family === 4 ? 32 : 128}`);
  }
  return q;
}

/**
 * Runs `fn(i)` over the queries for about CASE_MS; returns lookups per second.
 * @param {Queries} q
 * @param {Lookup} fn
 */
function rate(q, fn) {
  let done = 0;
  let sink = 0;
  const start = process.hrtime.bigint();
  /** @type {number} */
  let elapsed;
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

/**
 * The same precedence over any prefix index: the port's group, then the port-0 group.
 * @template T an index
 * @param {Binding[]} bindings
 * @param {(list: Binding[]) => T} makeIndex an index of one group's bindings
 * @returns {(q: Queries, i: number, find: (index: T, i: number) => Match | undefined) => string | undefined}
 */
function portGroups(bindings, makeIndex) {
  /** @type {Record<Protocol, Map<number, T>>} */
  const groups = { tcp: new Map(), udp: new Map() };
  /** @type {Map<string, Binding[]>} */
  const byGroup = new Map();
  for (const b of bindings) {
    const key = `${b.protocol}/${b.port}`;
    let list = byGroup.get(key);
    if (!list) byGroup.set(key, (list = []));
    list.push(b);
  }
  for (const list of byGroup.values()) {
    const [first] = list;
    if (first) groups[first.protocol].set(first.port, makeIndex(list));
  }
  return (q, i, find) => {
    const g = groups[/** @type {Protocol} */ (q.protocol[i])];
    const s = g.get(/** @type {number} */ (q.port[i]));
    const w = g.get(0);
    const a = s === undefined ? undefined : find(s, i);
    const b = w === undefined ? undefined : find(w, i);
    if (a === undefined) return b?.label;
    if (b === undefined || a.length >= b.length) return a.label;
    return b.label;
  };
}

/**
 * @param {Binding[]} bindings
 * @param {Queries} q
 * @returns {Lookup}
 */
function arkime(bindings, q) {
  const lookup = portGroups(bindings, (list) => {
    const trie = new IPTrie();
    for (const b of list) {
      const prefix = b.prefix;
      trie.add(prefix.slice(0, prefix.indexOf('/')), b.length, { label: b.label, length: b.length });
    }
    return trie;
  });
  return (i) => lookup(q, i, (trie, i) => trie.find(/** @type {string} */ (q.text[i])));
}

/**
 * @param {Binding[]} bindings
 * @param {Queries} q
 * @returns {Lookup}
 */
function lpm(bindings, q) {
  const lookup = portGroups(bindings, (list) => {
    const trie = new LongestPrefixMatch();
    for (const b of list) trie.addPrefix(b.prefix, { label: b.label, length: b.length });
    return trie;
  });
  return (i) => lookup(q, i, (trie, i) => trie.getMatch(/** @type {string} */ (q.cidr[i]))[0]);
}

/**
 * A straightforward scan over typed arrays: the floor any index must beat.
 * @param {Binding[]} bindings
 * @param {Queries} q
 * @returns {Lookup}
 */
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
      const length = /** @type {number} */ (meta[m + 2]);
      let ok = true;
      for (let w = 0; w < (family === 4 ? 1 : 4) && ok; w++) {
        const keep = Math.max(0, Math.min(32, length - 32 * w));
        const k = keep === 0 ? 0 : (0xffffffff << (32 - keep)) >>> 0;
        const word = /** @type {number} */ (q.words[i * 4 + w]);
        ok = (word & k) >>> 0 === words[m + w];
      }
      const score = length * 2 + (meta[m + 3] !== 0 ? 1 : 0);
      if (ok && score > bestScore) {
        bestScore = score;
        best = j;
      }
    }
    return best < 0 ? undefined : bindings[best]?.label;
  };
}

function heapBytes() {
  global.gc?.();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/**
 * @param {Table} table
 * @param {Record<string, Lookup>} cases
 * @param {Queries} q
 */
function check(table, cases, q) {
  // Every case must give the table's own answers, or its figure means nothing.
  for (let i = 0; i < 2000; i++) {
    const want = table.lookup(
      /** @type {Protocol} */ (q.protocol[i]),
      /** @type {string} */ (q.text[i]),
      /** @type {number} */ (q.port[i]),
    )?.label;
    for (const [name, fn] of Object.entries(cases)) {
      const got = fn(i);
      if (got !== want) throw new Error(`${name} answered ${got} for ${q.protocol[i]} ${q.text[i]} port ${q.port[i]}, the table ${want}`);
    }
  }
}

/** @param {number} size */
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
  /** @type {Record<string, Lookup>} */
  const cases = {
    'table (numeric address)': (i) => {
      // What a listener does per connection: the address into the reused key, then the lookup.
      const w = q.words;
      const o = i * 4;
      key[0] = /** @type {number} */ (w[o]);
      key[1] = /** @type {number} */ (w[o + 1]);
      key[2] = /** @type {number} */ (w[o + 2]);
      key[3] = /** @type {number} */ (w[o + 3]);
      return table.lookupLabel(
        /** @type {Protocol} */ (q.protocol[i]),
        /** @type {Family} */ (q.family[i]),
        key,
        /** @type {number} */ (q.port[i]),
      );
    },
    'table (address string)': (i) =>
      table.lookup(/** @type {Protocol} */ (q.protocol[i]), /** @type {string} */ (q.text[i]), /** @type {number} */ (q.port[i]))?.label,
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
  const child = spawn(
    process.execPath,
    [fileURLToPath(new URL('../bin/dispatcher', import.meta.url)), 'daemon', '--control', control, '--state-dir', join(dir, 'state')],
    { stdio: 'ignore' },
  );
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
    /** @param {Binding[]} bindings */
    const load = async (bindings) => {
      const body = JSON.stringify(formatBindingsFile(bindings));
      const t0 = performance.now();
      await client.call('PUT', '/bindings', { body });
      return performance.now() - t0;
    };
    const rss = async () => Number(capture(/VmRSS:\s+(\d+)/, await readFile(`/proc/${child.pid}/status`, 'utf8'))) / 1024;
    const idleRss = await rss();
    const first = await load(randomBindings(100_000, 1));
    const replace = await load(randomBindings(100_000, 2));
    /** @type {{ rss_idle_mib: number, load_100k_ms: number, replace_100k_ms: number, load_1m_ms?: number, rss_1m_after_load_mib?: number, rss_1m_mib?: number }} */
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
  const ark = r.lookups_per_second['arkime-iptrie']?.median ?? NaN;
  for (const [name, s] of Object.entries(r.lookups_per_second)) {
    console.log(
      `  ${name.padEnd(26)} ${si(s.median).padStart(7)}/s  (${si(s.min)}-${si(s.max)})  ${(s.median / ark).toFixed(2)}x arkime-iptrie`,
    );
  }
}
console.log('\nThe daemon (control API, persisted):');
console.log(`  load 100k bindings        ${daemonFigures.load_100k_ms.toFixed(0)} ms`);
console.log(`  replace 100k by 100k      ${daemonFigures.replace_100k_ms.toFixed(0)} ms   (target < 1000 ms)`);
const { load_1m_ms: load1m, rss_1m_mib: rss1m, rss_1m_after_load_mib: rss1mAfterLoad } = daemonFigures;
if (load1m !== undefined && rss1m !== undefined && rss1mAfterLoad !== undefined) {
  console.log(`  load 1M bindings          ${load1m.toFixed(0)} ms`);
  console.log(
    `  resident memory at 1M     ${rss1m.toFixed(0)} MiB settled, ${rss1mAfterLoad.toFixed(0)} MiB right after the load (empty daemon ${daemonFigures.rss_idle_mib.toFixed(0)} MiB; target < 300 MB)`,
  );
}
console.log(`\n${await writeResult('table', { quick: QUICK, lookups: results, daemon: daemonFigures })}`);
