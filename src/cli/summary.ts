import { type Protocol } from '../bindings/binding.js';
import { type ServicesResponse, type StatusResponse } from '../control/protocol.js';
import { type ListenerStatus } from '../listener/listeners.js';
import { type LabelCounts } from '../metrics/metrics.js';
import { type Upstream } from '../proxy/upstream.js';
import { type SteeredCounts, type SteeringCounters } from '../metrics/metrics.js';
import { type Colour, type Column, formatTable, type Paint, plain } from './format.js';

/** One reading of the daemon: all that `dispatcher status` summarises. */
export interface StatusSample {
  status: StatusResponse;
  services: ServicesResponse;
  upstreams: readonly Upstream[];
  /** The labels that have bindings; absent when there are too many bindings to list for a summary. */
  boundLabels?: readonly string[];
  /** When it was read, in milliseconds on a monotonic clock (performance.now()). */
  at: number;
}

export interface SummaryOptions {
  paint?: Paint;
  /** An earlier reading: rates are over the time between the two, not averaged since the daemon started. */
  before?: StatusSample;
  /** Rows per table and names per attention line; the rest are counted. */
  limit?: number;
}

export const SUMMARY_LIMIT = 20;

/** `dispatcher status`: who the daemon is, what it listens on, each label's traffic, and what needs a look. */
export function formatStatus(sample: StatusSample, options: SummaryOptions = {}): string {
  const { paint = plain, limit = SUMMARY_LIMIT } = options;
  const s = sample.status;
  const rates = rateBasis(sample, options.before);
  const labels = labelRows(sample, rates.before?.status);
  const out = [
    `dispatcher ${s.version}, pid ${s.pid}, ${s.mode} mode, up ${duration(s.uptime_seconds)}`,
    '',
    `bindings   ${count(s.bindings.total)} (${count(s.bindings.tcp)} tcp, ${count(s.bindings.udp)} udp) on ${plural(s.bindings.labels, 'label')}`,
    `workers    ${count(s.workers.total)} on ${plural(s.workers.labels, 'label')}`,
    `upstreams  ${count(s.upstreams)}`,
    ...storeLine(s),
    '',
    'listeners',
    indent(capped(formatTable(listenerColumns(s.listeners, paint), s.listeners.slice(0, limit), 'none'), s.listeners.length, limit)),
    '',
    `labels (rates: ${rates.describe})`,
    indent(
      capped(formatTable(labelColumns(sample, rates), firstLabels(labels, limit), 'none'), new Set(labels.map((r) => r.label)).size, limit),
    ),
  ];
  if (sample.boundLabels === undefined) {
    out.push(`  (labels that only have bindings are left out: ${count(s.bindings.total)} bindings are too many to list for a summary)`);
  }
  const problems = attention(sample, limit);
  out.push('');
  if (problems.length === 0) out.push('attention: none');
  else out.push('attention (counts since the daemon started)', ...problems.map((p) => `  ${paint(p.colour, p.text)}`));
  return out.join('\n');
}

/** Seconds in the two largest units that are not zero: "3d 4h", "2h 14m", "12m 5s", "45s". */
export function duration(seconds: number): string {
  let rest = Math.round(seconds);
  const parts: string[] = [];
  for (const [size, unit] of [
    [86_400, 'd'],
    [3_600, 'h'],
    [60, 'm'],
    [1, 's'],
  ] as const) {
    const n = Math.floor(rest / size);
    rest -= n * size;
    if (n > 0 || parts.length > 0) parts.push(`${n}${unit}`);
  }
  return parts.slice(0, 2).join(' ') || '0s';
}

const count = (n: number): string => n.toLocaleString('en-US');
const plural = (n: number, noun: string): string => `${count(n)} ${noun}${n === 1 ? '' : 's'}`;
const indent = (text: string): string => text.replace(/^/gm, '  ');
const capped = (table: string, total: number, limit: number): string =>
  total > limit ? `${table}\n... and ${count(total - limit)} more (--all shows them)` : table;
/** Names as a list, at most `limit` of them. */
const names = (list: readonly string[], limit: number): string =>
  list.length > limit ? `${list.slice(0, limit).join(', ')} and ${count(list.length - limit)} more` : list.join(', ');

/** What rates are over: the interval between two readings of the same daemon, or else its uptime (its counters start at zero). */
interface RateBasis {
  seconds: number;
  before: StatusSample | undefined;
  describe: string;
}

function rateBasis(now: StatusSample, before: StatusSample | undefined): RateBasis {
  if (before !== undefined && before.status.pid === now.status.pid) {
    const seconds = (now.at - before.at) / 1000;
    return { seconds, before, describe: `per second over the last ${seconds.toFixed(1)}s` };
  }
  // A new pid (an upgrade, a restart) has new counters: the earlier reading says nothing about them.
  const restarted = before === undefined ? '' : '; the daemon restarted in between';
  const uptime = now.status.uptime_seconds;
  return {
    seconds: uptime,
    before: undefined,
    describe: `per second, averaged over the ${duration(uptime)} since the daemon started${restarted}`,
  };
}

function rate(basis: RateBasis, now: number, then: number | undefined): string {
  if (basis.seconds <= 0) return '-';
  const r = (now - (then ?? 0)) / basis.seconds;
  if (r === 0) return '0';
  if (r < 0.1) return '<0.1';
  return r < 10 ? r.toFixed(1) : count(Math.round(r));
}

function listenerColumns(listeners: readonly ListenerStatus[], paint: Paint): Column<ListenerStatus>[] {
  const kernel = listeners.some((l) => l.label !== undefined);
  const failed = listeners.some((l) => l.state === 'failed');
  return [
    { title: 'PROTOCOL', cell: (l) => l.protocol },
    { title: 'ADDRESS', cell: (l) => l.address },
    { title: 'PORT', cell: (l) => String(l.port), right: true },
    { title: 'STATE', cell: (l) => paint(l.state === 'listening' ? 'green' : 'red', l.state) },
    ...(kernel
      ? [
          { title: 'LABEL', cell: (l: ListenerStatus) => l.label ?? '-' },
          {
            title: 'SERVED BY',
            cell: (l: ListenerStatus) => (l.adopted_from === undefined ? (l.served_by ?? '-') : `pid ${l.adopted_from} (adopted)`),
          },
        ]
      : []),
    ...(failed ? [{ title: 'ERROR', cell: (l: ListenerStatus) => l.error ?? '' }] : []),
  ];
}

/** A row of the labels table: a label and one protocol it has counters for (or none, `protocol` undefined). */
interface LabelRow {
  label: string;
  /** The label's first row: the one that shows its workers and queue. */
  first: boolean;
  protocol: Protocol | undefined;
  counts: LabelCounts | undefined;
  steered: SteeredCounts | undefined;
  /** The same counters in the earlier reading, for rates. */
  countsBefore: LabelCounts | undefined;
  steeredBefore: SteeredCounts | undefined;
}

const readableSteering = (s: StatusResponse): SteeringCounters | undefined =>
  s.steering === undefined || 'error' in s.steering ? undefined : s.steering;

/** `by_label`'s keys are "protocol label". */
const byLabel = (s: StatusResponse | undefined, protocol: Protocol, label: string): LabelCounts | undefined =>
  s?.connections.by_label[`${protocol} ${label}`];

/** `before`: the earlier reading's status, for rates over the interval. */
function labelRows(sample: StatusSample, before: StatusResponse | undefined): LabelRow[] {
  const s = sample.status;
  const steering = readableSteering(s);
  const labels = new Set([
    ...(sample.boundLabels ?? []),
    ...sample.services.workers.map((w) => w.label),
    ...Object.keys(sample.services.queued),
    ...sample.upstreams.map((u) => u.label),
    ...s.listeners.flatMap((l) => (l.label === undefined ? [] : [l.label])),
    ...Object.keys(s.connections.by_label).map((key) => key.split(' ')[1]!),
    ...Object.keys(steering?.labels ?? {}),
  ]);
  return [...labels].sort().flatMap((label) => {
    const protocols = (['tcp', 'udp'] as const).filter(
      (p) => byLabel(s, p, label) !== undefined || steering?.labels[label]?.[p] !== undefined,
    );
    return (protocols.length > 0 ? protocols : [undefined]).map((protocol, i) => ({
      label,
      first: i === 0,
      protocol,
      counts: protocol && byLabel(s, protocol, label),
      steered: protocol && steering?.labels[label]?.[protocol],
      countsBefore: protocol && byLabel(before, protocol, label),
      steeredBefore: protocol && (before && readableSteering(before))?.labels[label]?.[protocol],
    }));
  });
}

/** The rows of the first `limit` labels. */
function firstLabels(rows: readonly LabelRow[], limit: number): LabelRow[] {
  let labels = 0;
  return rows.filter((r) => (labels += r.first ? 1 : 0) <= limit);
}

function labelColumns(sample: StatusSample, basis: RateBasis): Column<LabelRow>[] {
  const workers = (label: string): number => sample.services.workers.filter((w) => w.label === label).length;
  const upstreams = new Set(sample.upstreams.map((u) => u.label));
  // Workers, queue and upstream belong to the label, not to one protocol: they show on its first row.
  const ofLabel = (cell: (label: string) => string) => (r: LabelRow) => (r.first ? cell(r.label) : '');
  return [
    { title: 'LABEL', cell: ofLabel((label) => label) },
    { title: 'PROTOCOL', cell: (r) => r.protocol ?? '-' },
    { title: 'WORKERS', cell: ofLabel((label) => count(workers(label))), right: true },
    { title: 'QUEUED', cell: ofLabel((label) => count(sample.services.queued[label] ?? 0)), right: true },
    ...(upstreams.size > 0 ? [{ title: 'UPSTREAM', cell: ofLabel((label) => (upstreams.has(label) ? 'yes' : '-')) }] : []),
    { title: 'LOOKUPS', cell: (r) => count(r.counts?.lookups ?? 0), right: true },
    { title: 'HANDOFFS', cell: (r) => count(r.counts?.handoffs ?? 0), right: true },
    { title: 'HANDOFFS/S', cell: (r) => rate(basis, r.counts?.handoffs ?? 0, r.countsBefore?.handoffs), right: true },
    { title: 'RESETS', cell: (r) => count(r.counts?.resets ?? 0), right: true },
    ...(readableSteering(sample.status) === undefined
      ? []
      : [
          { title: 'STEERED', cell: (r: LabelRow) => count(r.steered?.steered ?? 0), right: true },
          { title: 'STEERED/S', cell: (r: LabelRow) => rate(basis, r.steered?.steered ?? 0, r.steeredBefore?.steered), right: true },
          { title: 'MISSED', cell: (r: LabelRow) => count(r.steered?.missed ?? 0), right: true },
        ]),
  ];
}

/** A line of the attention section. */
interface Problem {
  colour: Colour;
  text: string;
}

/** Only what deserves a look: what is broken (red), and counters of trouble that are not zero (yellow). */
/** With a store: which, this host's name in it, and the revision served. */
function storeLine(s: StatusResponse): string[] {
  const st = s.store;
  if (st === undefined) return [];
  const behind = st.store_revision > st.revision ? `, behind ${st.store_revision} for ${st.lag_seconds.toFixed(1)} s` : '';
  return [
    `store      ${st.url} as host ${st.host}: revision ${st.revision}${behind}, ${st.connected ? 'connected' : 'disconnected'} since ${st.since}`,
  ];
}

function attention(sample: StatusSample, limit: number): Problem[] {
  const s = sample.status;
  const red = (text: string): Problem => ({ colour: 'red', text });
  const yellow = (text: string): Problem => ({ colour: 'yellow', text });
  const out: Problem[] = [];

  const failed = s.listeners.filter((l) => l.state === 'failed');
  for (const l of failed.slice(0, limit)) {
    out.push(red(`${l.protocol} port ${l.port} is not listening (see listeners): free the port, or remove the bindings that name it`));
  }
  if (failed.length > limit) out.push(red(`... and ${count(failed.length - limit)} more ports not listening`));
  if (s.steering !== undefined && 'error' in s.steering)
    out.push(red(`the kernel's steering counters cannot be read: ${s.steering.error}`));
  if (s.store !== undefined && !s.store.connected)
    out.push(
      red(
        `etcd does not answer (since ${s.store.since}): serving revision ${s.store.revision} until it does; changes are refused meanwhile`,
      ),
    );
  if (s.store?.error != null) out.push(red(`store: ${s.store.error}`));
  const spoofed = readableSteering(s)?.spoofed ?? 0;
  if (spoofed > 0) {
    out.push(
      red(`datagrams dropped as spoofed (a steered socket sent from an address or port its label is not bound to): ${count(spoofed)}`),
    );
  }

  // Adopted sockets belong to servers that are neither workers nor upstreams.
  const served = new Set([
    ...sample.services.workers.map((w) => w.label),
    ...sample.upstreams.map((u) => u.label),
    ...s.listeners.flatMap((l) => (l.adopted_from === undefined || l.label === undefined ? [] : [l.label])),
  ]);
  const unserved = (sample.boundLabels ?? []).filter((label) => !served.has(label)).sort();
  if (unserved.length > 0) {
    const what = 'labels with bindings but no worker or upstream (connections reset, datagrams dropped; start a worker or add an upstream)';
    out.push(yellow(`${what}: ${names(unserved, limit)}`));
  }
  const figures = (what: string, entries: [string, number][]): void => {
    const listed = entries.filter(([, n]) => n > 0).map(([name, n]) => `${name} ${count(n)}`);
    if (listed.length > 0) out.push(yellow(`${what}: ${names(listed, limit)}`));
  };
  figures('waiting for a worker', Object.entries(sample.services.queued));
  figures(
    'connections reset',
    Object.entries(s.connections.by_label).map(([key, c]) => [key.split(' ').reverse().join(' '), c.resets]),
  );
  figures(
    'steering missed (no socket for the label)',
    Object.entries(readableSteering(s)?.labels ?? {}).flatMap(([label, byProtocol]) =>
      Object.entries(byProtocol).map(([protocol, c]): [string, number] => [`${label} ${protocol}`, c.missed]),
    ),
  );

  const t = s.connections;
  const totals: [string, number][] = [
    ['matched no binding (reset or dropped; `dispatcher lookup` shows what an address matches)', t.misses],
    ["datagrams dropped (no worker, or the worker's socket was full)", t.dropped],
    ['connections to upstreams that failed', t.upstream_failures],
    ['worker replies refused (from an address or port the label is not bound to)', t.replies_refused],
    ["worker registrations refused (the daemon's log says why)", t.refused],
  ];
  for (const [what, n] of totals) if (n > 0) out.push(yellow(`${what}: ${count(n)}`));
  return out;
}
