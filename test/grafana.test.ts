import t from 'tap';
import { readFile } from 'node:fs/promises';
import { parser } from '@prometheus-io/lezer-promql';
import { Metrics } from '../src/metrics/metrics.js';
import { startDaemon, tempDir } from './helpers/daemon.js';
import { randomPort } from './helpers/services.js';

// contrib/grafana/dispatcher.json against what the daemon exports: each panel's PromQL parsed with Prometheus's
// own grammar, its metric and label names compared with a real daemon's /metrics.

interface Datasource {
  type: string;
  uid: string;
}
interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: Datasource;
  targets?: { expr: string; datasource?: Datasource }[];
  panels?: Panel[];
}
interface Dashboard {
  __inputs: { name: string; type: string; pluginId: string }[];
  schemaVersion: number;
  uid: string;
  panels: Panel[];
  templating: { list: { name: string; type: string; datasource?: Datasource; definition: string }[] };
}

const dashboard = JSON.parse(await readFile(new URL('../contrib/grafana/dispatcher.json', import.meta.url), 'utf8')) as Dashboard;
const DATASOURCE = { type: 'prometheus', uid: '${DS_PROMETHEUS}' };
const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]).filter((p) => p.type !== 'row');
const exprs = panels.flatMap((p) => (p.targets ?? []).map((target) => ({ panel: p.title, expr: target.expr })));

/** Metric families in Prometheus text, from the `# TYPE` lines, which prom-client writes whether or not a family has samples. */
function families(text: string): Map<string, string> {
  return new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
}

/** The names a family's samples carry, which a query selects. */
function seriesOf(family: string, type: string): string[] {
  if (type === 'histogram') return [`${family}_bucket`, `${family}_sum`, `${family}_count`];
  return [family];
}

interface Query {
  errors: string[];
  /** Each vector selector: its metric name and the labels it matches on. */
  selectors: { name: string; labels: Map<string, string> }[];
  /** The labels of every by (...) and without (...). */
  grouping: string[];
}

function parse(expr: string): Query {
  // Grafana substitutes its own variables before Prometheus sees the query: a range, and values inside strings.
  const promql = expr.replaceAll('$__rate_interval', '1m');
  const text = (node: { from: number; to: number }): string => promql.slice(node.from, node.to);
  const query: Query = { errors: [], selectors: [], grouping: [] };
  const cursor = parser.parse(promql).cursor();
  do {
    const node = cursor.node;
    if (node.type.isError) query.errors.push(`at ${node.from}: ${JSON.stringify(promql.slice(node.from, node.from + 20))}`);
    else if (node.name === 'VectorSelector') {
      const labels = new Map<string, string>();
      for (const matcher of node.getChildren('LabelMatchers').flatMap((m) => m.getChildren('UnquotedLabelMatcher'))) {
        const name = text(matcher.getChild('LabelName')!);
        labels.set(name, text(matcher).slice(name.length));
      }
      query.selectors.push({ name: text(node.getChild('Identifier') ?? node), labels });
    } else if (node.name === 'GroupingLabels') query.grouping.push(...node.getChildren('LabelName').map(text));
  } while (cursor.next());
  return query;
}

// What the daemon exports: a real one's /metrics in ports mode, and kernel mode's series, which it registers only in
// kernel mode (Metrics.steeringFrom, given a stub in place of nftables' counters).
const dir = await tempDir(t);
const metricsPort = randomPort();
const daemon = await startDaemon(dir, ['--metrics', `127.0.0.1:${metricsPort}`]);
t.teardown(() => daemon.stop());
const scraped = families(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text());
const plain = new Metrics();
const kernel = new Metrics();
kernel.steeringFrom(() => Promise.resolve({ labels: { web: { tcp: { steered: 1, missed: 0 } } }, spoofed: 0 }));
const kernelOnly = [...families(await kernel.registry.metrics())].filter(([name]) => !plain.registry.getSingleMetric(name));
const exported = new Map([...scraped, ...kernelOnly]);
// The labels each family is declared with: prom-client keeps its configuration's labelNames on the metric.
const declared = new Map(
  kernel.registry.getMetricsAsArray().map((m) => [m.name, new Set((m as unknown as { labelNames: string[] }).labelNames)]),
);

t.test('the daemon exports its families, and kernel mode its own', async (t) => {
  t.ok(scraped.has('dispatcher_lookups_total') && scraped.get('dispatcher_handoff_latency_seconds') === 'histogram', 'ports mode, scraped');
  t.same(
    kernelOnly.map(([name]) => name),
    ['dispatcher_steered_total', 'dispatcher_steer_missed_total', 'dispatcher_steer_spoofed_total'],
    'kernel mode adds three',
  );
  t.same(new Set(declared.keys()), new Set(exported.keys()), 'the registry declares what the daemon exports');
});

t.test('the dashboard is an importable JSON model for a chosen Prometheus', async (t) => {
  t.ok(dashboard.schemaVersion >= 39, `schemaVersion ${dashboard.schemaVersion}`);
  t.match(dashboard.__inputs, [{ name: 'DS_PROMETHEUS', type: 'datasource', pluginId: 'prometheus' }]);
  const ids = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]).map((p) => p.id);
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  for (const p of panels) {
    t.same(p.datasource, DATASOURCE, `${p.title}: the input's data source`);
    t.ok((p.targets ?? []).length > 0, `${p.title}: has queries`);
    for (const target of p.targets ?? []) t.same(target.datasource, DATASOURCE, `${p.title}: its query too`);
  }
  const variables = dashboard.templating.list;
  t.same(
    variables.map((v) => v.name),
    ['instance', 'label'],
    'an instance and a label variable',
  );
  for (const v of variables) {
    t.same(v.datasource, DATASOURCE, `$${v.name} queries the input's data source`);
    t.same(parse(v.definition.replace(/^label_values\((.*), \w+\)$/, '$1')).errors, [], `$${v.name}'s series selector parses`);
  }
});

t.test('every panel query parses, and selects only what the daemon exports, by labels it has', async (t) => {
  const series = new Map([...exported].flatMap(([family, type]) => seriesOf(family, type).map((s) => [s, family] as const)));
  for (const { panel, expr } of exprs) {
    const q = parse(expr);
    t.same(q.errors, [], `${panel}: parses: ${expr}`);
    const labels = new Set(['instance', 'job']);
    for (const s of q.selectors) {
      const family = series.get(s.name);
      t.ok(family, `${panel}: ${s.name} is exported`);
      if (family === undefined) continue;
      const has = new Set([
        ...labels,
        ...declared.get(family)!,
        ...(exported.get(family) === 'histogram' && s.name.endsWith('_bucket') ? ['le'] : []),
      ]);
      for (const label of s.labels.keys()) t.ok(has.has(label), `${panel}: ${s.name} has the label ${label}`);
      // The variables narrow every panel alike: none shows another daemon's or another label's series.
      t.equal(s.labels.get('instance'), '=~"$instance"', `${panel}: ${s.name} follows $instance`);
      if (declared.get(family)!.has('label')) t.equal(s.labels.get('label'), '=~"$label"', `${panel}: ${s.name} follows $label`);
      for (const label of has) labels.add(label);
    }
    for (const label of q.grouping) t.ok(labels.has(label), `${panel}: groups by ${label}, which its series have`);
  }
});

t.test('every family the daemon exports appears in some panel', async (t) => {
  const used = new Set(exprs.flatMap(({ expr }) => parse(expr).selectors.map((s) => s.name)));
  for (const [family, type] of exported) {
    t.ok(
      seriesOf(family, type).some((s) => used.has(s)),
      `${family} is shown`,
    );
  }
});
