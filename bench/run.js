// npm run bench [-- --quick] [-- SUITE...]
//
// Every benchmark in one run, one after another (each interleaves its own cases in rounds), then one
// results file, a Markdown summary and an SVG chart of the ratios to direct:
//   bench/results/<date>.json, bench/results/summary.md, bench/results/chart.svg (-quick for --quick)
// --quick is a smoke check (short cases, smaller tables): it proves the suite works, not how fast it is.
// Suite names (table, handoff, udp, ..., kernel, fleet) run only those, into files named after them
// (summary-kernel.md).
import { spawn, execFileSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { machine, resultFile, RESULTS_DIR } from './common.js';

/** @typedef {import('./common.js').Summary} Summary */
/**
 * What this reads of each benchmark's result file.
 * @typedef {{
 *   handoff?: { figures: Record<string, Summary> },
 *   udp?: { direct: Summary, dispatched: Summary },
 *   scaling?: { summary: Record<string, Summary> & { '1 worker per label': Summary } },
 *   tproxy?: { summary: Record<string, Summary> & { direct: Summary } },
 *   table?: {
 *     lookups: { size: number, build_ms: number, lookups_per_second: Record<string, Summary> & Record<'table (numeric address)' | 'arkime-iptrie', Summary> }[],
 *     daemon: { replace_100k_ms: number, rss_1m_mib?: number },
 *   },
 *   steering?: { sizes: { size: number, entries: number, compile_ms: Summary, render_ms: Summary }[] },
 *   'steering-packets'?: Record<'connections' | 'datagrams_steered' | 'datagrams_read', Record<string, Summary>>,
 *   control?: {
 *     bind_to_served_ms: { same_port: Summary, new_port: Summary },
 *     replace_100k_ms: Summary,
 *     during_replaces: { served: number, failed: number },
 *   },
 *   kernel?: {
 *     connections: {
 *       summary: Record<KernelCase, Summary>,
 *       p99_ms: Record<KernelCase, number>,
 *       daemon_us_per_connection: Record<KernelCase, number>,
 *       ratios: Record<'kernel_direct' | 'kernel_handoff' | 'p99_kernel_direct' | 'p99_kernel_handoff', Ratio>,
 *     },
 *     udp: { summary: Record<KernelCase, Summary>, daemon_us_per_echo: Record<KernelCase, number>, ratios: Record<'kernel_direct' | 'handoff_direct', Ratio> },
 *     bulk: { summary: Record<string, Summary>, ratios: Record<string, Ratio> },
 *     bind_to_steered: Record<string, { replace_ms: number } & Record<'new_address' | 'carved' | 'cli', { served_ms: Summary, returned_ms: Summary, removed_ms: Summary }>>,
 *   },
 *   fleet?: {
 *     daemons: number,
 *     targets: { single_ms: number, load_ms: number },
 *     single: FleetCase,
 *     single_large_table: FleetCase,
 *     load: FleetCase & { size: number },
 *     idle: { seconds: number, daemon_cpu_percent: { mean: number, max: number }, etcd_cpu_percent: number },
 *     memory: { daemon_rss_mib: { mean: number }, daemon_peak_rss_mib: { mean: number }, etcd_rss_mib: number },
 *   },
 * }} Results
 */
/** bench/fleet.js's figures of a case: the time to the last daemon served, a daemon's CPU. @typedef {{ last_daemon_ms: Summary, daemon_cpu_ms_each: Summary, daemons_cpu_s: Summary, others_cpu_s: Summary }} FleetCase */
/** bench/kernel.js's cases of new connections and UDP. @typedef {'direct' | 'hand-off' | 'kernel'} KernelCase */
/** bench/kernel.js's ratio of two cases: of their medians, and each round's. @typedef {{ of_medians: number, per_round: Summary }} Ratio */
/** A chart's group of bars, each a ratio to its group's direct case. @typedef {{ title: string, bars: { name: string, value: number, ratio: number }[] }} Group */

const QUICK = process.argv.includes('--quick');
const HERE = fileURLToPath(new URL('.', import.meta.url));
const date = new Date().toISOString().slice(0, 10);

/** @param {string} cmd */
const has = (cmd) => {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};

/** @type {{ name: keyof Results, script: string, node?: string[], needs: [cmd: string, pkg: string][], root?: boolean }[]} */
const suites = [
  { name: 'table', script: 'table.js', node: ['--expose-gc'], needs: [] },
  {
    name: 'handoff',
    script: 'handoff.js',
    needs: [
      ['wrk', 'wrk'],
      ['haproxy', 'haproxy'],
    ],
  },
  { name: 'udp', script: 'udp.js', needs: [] },
  { name: 'control', script: 'control.js', needs: [] },
  { name: 'steering', script: 'steering.js', needs: [] },
  {
    name: 'steering-packets',
    script: 'steering-packets.js',
    needs: [
      ['wrk', 'wrk'],
      ['nft', 'nftables'],
    ],
    root: true,
  },
  { name: 'scaling', script: 'scaling.js', needs: [['wrk', 'wrk']] },
  {
    name: 'tproxy',
    script: 'tproxy.js',
    needs: [
      ['wrk', 'wrk'],
      ['nft', 'nftables'],
    ],
    root: true,
  },
  {
    name: 'kernel',
    script: 'kernel.js',
    needs: [
      ['wrk', 'wrk'],
      ['nft', 'nftables'],
      ['nginx', 'nginx'],
    ],
    root: true,
  },
  { name: 'fleet', script: 'fleet.js', needs: [['etcd', 'etcd-server']] },
];

const only = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const unknown = only.filter((name) => !suites.some((s) => s.name === name));
if (unknown.length > 0) {
  console.error(`no suite ${unknown.join(', ')}: the suites are ${suites.map((s) => s.name).join(', ')}`);
  process.exit(2);
}
const chosen = only.length > 0 ? suites.filter((s) => only.includes(s.name)) : suites;

/** @type {Results} */
const results = {};
/** @type {string[]} */
const skipped = [];
const started = Date.now();
for (const [i, suite] of chosen.entries()) {
  const missing = suite.needs.filter(([cmd]) => !has(cmd)).map(([, pkg]) => pkg);
  if (missing.length > 0 || (suite.root && process.getuid?.() !== 0)) {
    const why = missing.length > 0 ? `missing ${missing.join(', ')} (apt-get install ${missing.join(' ')})` : 'needs root';
    skipped.push(`${suite.name}: ${why}`);
    process.stderr.write(`[${i + 1}/${chosen.length}] ${suite.name}: skipped, ${why}\n`);
    continue;
  }
  const elapsed = Math.round((Date.now() - started) / 1000);
  process.stderr.write(`[${i + 1}/${chosen.length}] ${suite.name} (${elapsed} s so far)\n`);
  const code = await new Promise(
    /** @param {(code: number | null) => void} resolve */ (resolve) => {
      const child = spawn(process.execPath, [...(suite.node ?? []), join(HERE, suite.script), ...(QUICK ? ['--quick'] : [])], {
        stdio: ['ignore', 'inherit', 'inherit'],
      });
      child.on('exit', resolve);
    },
  );
  if (code !== 0) {
    skipped.push(`${suite.name}: failed with exit code ${code}`);
    continue;
  }
  // What the suite wrote: the Results entry of its name (unknown first: typescript-eslint does not see JSDoc casts).
  /** @type {unknown} */
  const result = JSON.parse(await readFile(resultFile(suite.name, QUICK), 'utf8'));
  Object.assign(results, { [suite.name]: result });
}

/** Bars: each comparison as ratios to its own direct case, from the same run. */
function comparisons() {
  /** @type {Group[]} */
  const out = [];
  const h = results.handoff?.figures;
  if (h) {
    /**
     * The cases of `names` that ran ("kind, how") as bars named "how", ratios to `direct` (no group without it).
     * @param {string} title
     * @param {string} direct
     * @param {string[]} names
     */
    const group = (title, direct, names) => {
      const base = h[direct];
      if (!base) return;
      const bars = names.flatMap((n) => {
        const s = h[n];
        return s ? [{ name: n.split(', ')[1] ?? n, value: s.median, ratio: s.median / base.median }] : [];
      });
      out.push({ title, bars });
    };
    group('New TCP connections/s (wrk, Connection: close)', 'new connections, direct', [
      'new connections, direct',
      'new connections, dispatcher',
      'new connections, proxy mode',
      'new connections, HAProxy',
    ]);
    group('Keep-alive requests/s', 'keep-alive, direct', ['keep-alive, direct', 'keep-alive, dispatcher']);
    group('Bulk transfer, Gbit/s', 'bulk, direct', ['bulk, direct', 'bulk, dispatcher', 'bulk, proxy mode', 'bulk, HAProxy']);
  }
  const u = results.udp;
  if (u)
    out.push({
      title: 'UDP echoes/s',
      bars: [
        { name: 'direct', value: u.direct.median, ratio: 1 },
        { name: 'dispatcher', value: u.dispatched.median, ratio: u.dispatched.median / u.direct.median },
      ],
    });
  const sc = results.scaling?.summary;
  if (sc) {
    const base = sc['1 worker per label'].median;
    out.push({
      title: 'New connections/s as the registry grows (ratio to 1 worker)',
      bars: Object.entries(sc).map(([name, s]) => ({ name, value: s.median, ratio: s.median / base })),
    });
  }
  const sp = results['steering-packets'];
  if (sp) {
    for (const [title, figure] of /** @type {const} */ ([
      ['Steered new connections/s by table size (ratio to 10 bindings)', sp.connections],
      ['Steered datagrams/s by table size (ratio to 10 bindings)', sp.datagrams_steered],
    ])) {
      const base = figure['10'];
      if (base)
        out.push({
          title,
          bars: Object.entries(figure).map(([size, s]) => ({ name: `${size} bindings`, value: s.median, ratio: s.median / base.median })),
        });
    }
  }
  const tp = results.tproxy?.summary;
  if (tp)
    out.push({
      title: 'New connections/s from another namespace',
      bars: Object.entries(tp).map(([name, s]) => ({ name, value: s.median, ratio: s.median / tp.direct.median })),
    });
  const k = results.kernel;
  if (k) {
    /**
     * @param {string} title
     * @param {Record<string, Summary>} cases
     * @param {string} direct
     */
    const group = (title, cases, direct) => {
      const base = cases[direct]?.median ?? NaN;
      out.push({ title, bars: Object.entries(cases).map(([name, s]) => ({ name, value: s.median, ratio: s.median / base })) });
    };
    group('Kernel steering: new TCP connections/s from a client namespace', k.connections.summary, 'direct');
    group('Kernel steering: UDP echoes/s from a client namespace', k.udp.summary, 'direct');
    for (const size of new Set(Object.keys(k.bulk.summary).map((name) => name.split(', ')[1] ?? name))) {
      const cases = Object.fromEntries(
        Object.entries(k.bulk.summary).flatMap(([name, s]) => (name.endsWith(`, ${size}`) ? [[name.split(', ')[0] ?? name, s]] : [])),
      );
      group(`nginx adopted by kernel steering: ${size} files over keep-alive, Gbit/s`, cases, 'direct');
    }
  }
  return out;
}

/** @param {Group[]} groups */
function svg(groups) {
  const rowH = 22;
  const left = 250;
  const width = 760;
  const scale = (width - left - 120) / Math.max(1.5, ...groups.flatMap((g) => g.bars.map((b) => b.ratio)));
  let y = 30;
  const parts = [];
  for (const g of groups) {
    parts.push(`<text x="10" y="${y}" font-weight="bold">${g.title}</text>`);
    y += 8;
    for (const b of g.bars) {
      const w = Math.max(1, b.ratio * scale);
      parts.push(`<text x="${left - 8}" y="${y + 15}" text-anchor="end">${b.name}</text>`);
      parts.push(
        `<rect x="${left}" y="${y + 3}" width="${w.toFixed(1)}" height="${rowH - 6}" fill="${b.name === 'direct' ? '#888' : '#3b7dd8'}"/>`,
      );
      parts.push(
        `<text x="${(left + w + 6).toFixed(1)}" y="${y + 15}">${b.ratio.toFixed(2)}x (${b.value >= 1000 ? `${(b.value / 1000).toFixed(1)}k` : b.value.toFixed(1)})</text>`,
      );
      y += rowH;
    }
    parts.push(
      `<line x1="${left + scale}" y1="${y - rowH * g.bars.length}" x2="${left + scale}" y2="${y}" stroke="#c00" stroke-dasharray="4 3"/>`,
    );
    y += 18;
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
${parts.join('\n')}
<text x="10" y="${y - 6}" font-size="11" fill="#555">Ratios to direct from the same run (dashed line: direct). ${machine().cpus} cores, Node ${process.version}, ${date}${QUICK ? ', quick run' : ''}.</text>
</svg>
`;
}

/** @param {Group[]} groups */
function markdown(groups) {
  const lines = [
    `# Benchmarks, ${date}${QUICK ? ' (quick smoke run: not for judging speed)' : ''}`,
    '',
    `Machine: ${JSON.stringify(machine())}`,
    '',
  ];
  for (const g of groups) {
    lines.push(`## ${g.title}`, '', '| case | median | ratio to direct |', '| --- | --- | --- |');
    for (const b of g.bars) lines.push(`| ${b.name} | ${b.value.toFixed(b.value >= 100 ? 0 : 2)} | ${b.ratio.toFixed(2)} |`);
    lines.push('');
  }
  const table = results.table;
  if (table) {
    lines.push('## Binding table', '', '| bindings | table lookups/s | vs arkime-iptrie | build ms |', '| --- | --- | --- | --- |');
    for (const r of table.lookups) {
      const l = r.lookups_per_second;
      lines.push(
        `| ${r.size} | ${l['table (numeric address)'].median.toFixed(0)} | ${(l['table (numeric address)'].median / l['arkime-iptrie'].median).toFixed(2)}x | ${r.build_ms.toFixed(0)} |`,
      );
    }
    lines.push(
      '',
      `Daemon: replace 100k bindings ${table.daemon.replace_100k_ms.toFixed(0)} ms${table.daemon.rss_1m_mib ? `, resident at 1M ${table.daemon.rss_1m_mib.toFixed(0)} MiB` : ''}.`,
      '',
    );
  }
  const c = results.control;
  if (c) {
    lines.push(
      '## Control plane',
      '',
      `- From \`bind add\` returning to the first connection served under it: ${c.bind_to_served_ms.same_port.median.toFixed(2)} ms (port already listening), ${c.bind_to_served_ms.new_port.median.toFixed(2)} ms (new port).`,
      `- Replace of 100k bindings: ${c.replace_100k_ms.median.toFixed(0)} ms; meanwhile ${c.during_replaces.served} connections under an unchanged binding served, ${c.during_replaces.failed} failed.`,
      '',
    );
  }
  const k = results.kernel;
  if (k) {
    const c = k.connections;
    /** @param {{ served_ms: Summary }} t */
    const served = (t) => `${t.served_ms.median.toFixed(1)} ms (max ${t.served_ms.max.toFixed(1)})`;
    lines.push(
      '## Kernel steering',
      '',
      `- New connections, p99 latency: direct ${c.p99_ms.direct.toFixed(2)} ms, hand-off ${c.p99_ms['hand-off'].toFixed(2)} ms, kernel ${c.p99_ms.kernel.toFixed(2)} ms.`,
      `- Each round's ratio (median over the rounds): new connections kernel/direct ${k.connections.ratios.kernel_direct.per_round.median.toFixed(2)}, kernel/hand-off ${k.connections.ratios.kernel_handoff.per_round.median.toFixed(2)}; p99 kernel/direct ${k.connections.ratios.p99_kernel_direct.per_round.median.toFixed(2)}; UDP kernel/direct ${k.udp.ratios.kernel_direct.per_round.median.toFixed(2)}; nginx adopted/direct ${Object.entries(
        k.bulk.ratios,
      )
        .map(([size, r]) => `${r.per_round.median.toFixed(2)} (${size})`)
        .join(', ')}.`,
      `- The daemon's CPU per connection: hand-off ${c.daemon_us_per_connection['hand-off'].toFixed(2)} µs, kernel ${c.daemon_us_per_connection.kernel.toFixed(2)} µs; per UDP echo: hand-off ${k.udp.daemon_us_per_echo['hand-off'].toFixed(2)} µs, kernel ${k.udp.daemon_us_per_echo.kernel.toFixed(2)} µs.`,
      '',
      '| bindings | bind add to served: new address | carved from a bound prefix | new address, CLI | bind rm: new address, carved |',
      '| --- | --- | --- | --- | --- |',
      ...Object.entries(k.bind_to_steered).map(
        ([size, b]) =>
          `| ${size} | ${served(b.new_address)} | ${served(b.carved)} | ${served(b.cli)} | ${b.new_address.removed_ms.median.toFixed(1)} ms, ${b.carved.removed_ms.median.toFixed(1)} ms |`,
      ),
      '',
    );
  }
  const f = results.fleet;
  if (f) {
    /**
     * @param {string} name
     * @param {FleetCase} c
     * @param {number | undefined} target
     */
    const row = (name, c, target) =>
      `| ${name} | ${c.last_daemon_ms.median.toFixed(0)} ms | ${c.last_daemon_ms.max.toFixed(0)} ms | ${c.last_daemon_ms.rounds} | ${c.daemon_cpu_ms_each.median.toFixed(0)} ms | ${
        target === undefined ? '-' : `< ${target} ms at max: ${c.last_daemon_ms.max < target ? 'met' : '**not met**'}`
      } |`;
    const size = f.load.size.toLocaleString('en');
    lines.push(
      `## Fleet: ${f.daemons} daemons following one etcd`,
      '',
      'From just before a write to the last daemon serving it (real connections to each daemon).',
      '',
      '| write | p50 | max | writes | CPU of a daemon | target |',
      '| --- | --- | --- | --- | --- | --- |',
      row('a single binding, small table', f.single, f.targets.single_ms),
      row(`a single binding, ${size}-binding table`, f.single_large_table, f.targets.single_ms),
      row(`a load of ${size} bindings`, f.load, f.load.size >= 100_000 ? f.targets.load_ms : undefined),
      '',
      `- The daemons share ${machine().cpus} cores: the time to the last is about all their CPU over the cores (a load: ${f.load.daemons_cpu_s.median.toFixed(1)} s, median), plus whatever else ran (other processes: ${f.load.others_cpu_s.median.toFixed(1)} s). On machines of their own, each would take about its own CPU.`,
      `- Idle: a daemon ${f.idle.daemon_cpu_percent.mean.toFixed(2)}% of a core (max ${f.idle.daemon_cpu_percent.max.toFixed(2)}%), etcd ${f.idle.etcd_cpu_percent.toFixed(1)}%, over ${f.idle.seconds.toFixed(0)} s (target: about 0).`,
      `- Memory at ${size} bindings: a daemon ${f.memory.daemon_rss_mib.mean.toFixed(0)} MiB resident (peak ${f.memory.daemon_peak_rss_mib.mean.toFixed(0)} MiB), etcd ${f.memory.etcd_rss_mib.toFixed(0)} MiB.`,
      '',
    );
  }
  if (skipped.length > 0) lines.push('## Not run', '', ...skipped.map((s) => `- ${s}`), '');
  return lines.join('\n');
}

const groups = comparisons();
// A quick run keeps its own files, so a smoke check never replaces the figures the README shows; nor does
// a run of some suites only.
const suffix = `${only.length > 0 ? `-${only.join('-')}` : ''}${QUICK ? '-quick' : ''}`;
const files = /** @type {const} */ ([`${date}${suffix}.json`, `summary${suffix}.md`, `chart${suffix}.svg`]);
await writeFile(join(RESULTS_DIR, files[0]), `${JSON.stringify({ date, quick: QUICK, machine: machine(), results, skipped }, null, 2)}\n`);
await writeFile(join(RESULTS_DIR, files[1]), markdown(groups));
await writeFile(join(RESULTS_DIR, files[2]), svg(groups));
process.stderr.write(
  `done in ${Math.round((Date.now() - started) / 1000)} s: bench/results/${files.join(', ')}${skipped.length ? `; not run: ${skipped.join('; ')}` : ''}\n`,
);
