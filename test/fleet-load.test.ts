import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { type BindingJSON } from '../src/bindings/binding.js';
import { tempDir } from './helpers/daemon.js';
import { noEtcd, TestEtcd } from './helpers/etcd.js';
import { allServe, type Member, printedRevision, servedBy, startTwo, storeCli, workerOf } from './helpers/fleet.js';
import { randomPort } from './helpers/services.js';

const OLD = 100_000;
const EXTRA = 1_000;

// The last old binding (in the last chunk) is loopback's: real connections reach it.
const LOOPBACK = OLD - 1;

/** Binding i: tcp, one port, an IPv6 /128 of its own (2001:db8::HI:LO, HI from 1: as the daemon writes it), or loopback's. */
const address = (i: number): string => `2001:db8::${((i >>> 16) + 1).toString(16)}:${(i & 0xffff).toString(16)}`;
const prefix = (i: number): string => (i === LOOPBACK ? '127.0.0.0/8' : `${address(i)}/128`);
const table = (label: string, count: number, port: number): string =>
  JSON.stringify({ bindings: Array.from({ length: count }, (_, i): BindingJSON => ({ label, protocol: 'tcp', prefix: prefix(i), port })) });

type Seen = 'old' | 'new' | `bad: ${string}`;

/**
 * Asks `member` over and over until `stop()`: its status, lookups of the first binding, the last old one and
 * an extra one (in different chunks), and a real connection to its listener, which the last old binding
 * hands to a worker of its label. Each answer is classified as the old table's or the new one's.
 */
function poll(member: Member, port: number): { stop(): Promise<Seen[]>; rounds(): number; slowestMs(): number } {
  const seen: Seen[] = [];
  let running = true;
  let rounds = 0;
  let slowest = 0;
  const label = async (i: number): Promise<string> =>
    member.api.lookup('tcp', i === LOOPBACK ? member.address : address(i), port).then(
      (r) => r.label,
      (err: { code?: string }) => (err.code === 'ERR_NO_MATCH' ? 'none' : `error ${err.code}`),
    );
  const loop = (async () => {
    while (running) {
      const started = performance.now();
      const { total } = (await member.api.status()).bindings;
      seen.push(total === OLD ? 'old' : total === OLD + EXTRA ? 'new' : `bad: ${total} bindings`);
      for (const i of [0, LOOPBACK]) {
        const l = await label(i);
        seen.push(l === 'old' || l === 'new' ? l : `bad: binding ${i} -> ${l}`);
      }
      const extra = await label(OLD + EXTRA - 1);
      seen.push(extra === 'none' ? 'old' : extra === 'new' ? 'new' : `bad: extra -> ${extra}`);
      const worker = await servedBy(member, port).then(
        (w) => w.label,
        (err: { code?: string }) => `connection ${err.code}`,
      );
      seen.push(worker === 'old' || worker === 'new' ? worker : `bad: ${worker}`);
      slowest = Math.max(slowest, performance.now() - started);
      rounds++;
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return seen;
    },
    rounds: () => rounds,
    slowestMs: () => slowest,
  };
}

/** The last line of `text` (a load prints a line per binding, then its summary). */
const last = (text: string): string => text.trimEnd().split('\n').at(-1) ?? '';

/** `seen` with runs collapsed: one swap is exactly ['old', 'new']. */
const runs = (seen: readonly Seen[]): Seen[] => seen.filter((s, i) => i === 0 || s !== seen[i - 1]);

if (noEtcd !== undefined) {
  t.plan(0, noEtcd);
} else {
  t.test('a 100,000-binding load reaches each daemon as one swap: every answer is the old table or the new one', async (t) => {
    const etcd = await TestEtcd.start();
    t.teardown(() => etcd.stop());
    const url = etcd.storeUrl('/load');
    const dir = await tempDir(t);
    const port = randomPort();
    const oldFile = join(dir, 'old.json');
    const newFile = join(dir, 'new.json');
    await writeFile(oldFile, table('old', OLD, port));
    await writeFile(newFile, table('new', OLD + EXTRA, port));
    const members = await startTwo(t, url);
    await Promise.all(members.flatMap((m) => [workerOf(t, m, 'old'), workerOf(t, m, 'new')]));

    let started = performance.now();
    const first = await storeCli(url, 'bind', 'load', oldFile);
    t.equal(first.code, 0, first.stderr.slice(0, 500));
    t.match(last(first.stdout), new RegExp(`^added ${OLD}, removed 0 \\(revision [0-9]+\\)$`));
    const loaded = performance.now() - started;
    const served = await allServe(members, printedRevision(first), 60_000);
    t.comment(`100k old: bind load --store took ${loaded.toFixed(0)} ms; both daemons served it ${served.toFixed(0)} ms later`);

    // The probes' premise: the first and the last binding live in different chunks.
    const pointer = JSON.parse((await etcd.client.get('/load/live/global/current').string())!) as { gen: string; chunks: number };
    const chunk = (i: number): Promise<string | null> => etcd.client.get(`/load/data/global/${pointer.gen}/${i}`).string();
    t.ok(pointer.chunks > 1, `the old table is in ${pointer.chunks} chunks`);
    t.ok((await chunk(0))?.includes(`"${address(0)}/128"`), 'the first binding is in the first chunk');
    t.ok((await chunk(pointer.chunks - 1))?.includes(`"${prefix(LOOPBACK)}"`), 'the last one in the last chunk');

    const polls = members.map((m) => poll(m, port));
    const logBefore = members.map((m) => m.stderr().length);
    started = performance.now();
    const second = await storeCli(url, 'bind', 'load', newFile);
    t.equal(second.code, 0, second.stderr.slice(0, 500));
    t.match(last(second.stdout), new RegExp(`^added ${OLD + EXTRA}, removed ${OLD} \\(revision [0-9]+\\)$`));
    const revision = printedRevision(second);
    const swapped = performance.now() - started;
    const both = await allServe(members, revision, 60_000);
    // A few more rounds on the new table.
    const after = polls.map((p) => p.rounds() + 3);
    while (polls.some((p, i) => p.rounds() < after[i]!)) await new Promise((r) => setTimeout(r, 10));
    const seen = await Promise.all(polls.map((p) => p.stop()));
    t.comment(`101k new: bind load --store took ${swapped.toFixed(0)} ms; both daemons served it ${both.toFixed(0)} ms later`);

    members.forEach((m, i) => {
      const p = polls[i]!;
      t.comment(
        `${m.host}: ${p.rounds()} rounds of 4 requests and a connection during the swap, the slowest round ${p.slowestMs().toFixed(0)} ms`,
      );
      t.same(runs(seen[i]!), ['old', 'new'], `${m.host}: the old table, then the new one, never a mix (${seen[i]!.length} answers)`);
      // The daemon's log: one change for the revision, every binding at once.
      const changes = m
        .stderr()
        .slice(logBefore[i])
        .split('\n')
        .filter((l) => l.includes('"msg":"bindings changed"'))
        .map((l) => JSON.parse(l) as { revision: number; loaded: number; bindings: number });
      t.match(changes, [{ revision, loaded: OLD + EXTRA, bindings: OLD + EXTRA }], `${m.host} applied it in one change`);
    });
  });
}
