import { type BindingJSON } from '../bindings/binding.js';

/** `text` as lines: exactly one newline at the end, whatever the text (a message may carry its own). */
export const lines = (text: string): string => `${text.replace(/\n+$/, '')}\n`;
export const print = (text: string): void => void process.stdout.write(lines(text));
export const printJSON = (value: unknown): void => print(JSON.stringify(value, null, 2));

export const printWarnings = (warnings: readonly string[] | undefined): void => {
  for (const w of warnings ?? []) process.stderr.write(lines(`dispatcher: warning: ${w}`));
};

export const describe = (b: BindingJSON): string => `${b.protocol} ${b.prefix} port ${b.port} -> ${b.label}`;

export const BINDING_HEADER = ['LABEL', 'PROTOCOL', 'PREFIX', 'PORT'];
export const bindingRow = (b: BindingJSON): string[] => [b.label, b.protocol, b.prefix, String(b.port)];

/** Aligned columns, two spaces apart; the last column is not padded. */
export function formatColumns(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ')).join('\n');
}

/** Nested status objects as `a.b: value` lines, aligned. */
export function formatStatus(status: object): string {
  const rows: string[][] = [];
  const walk = (value: unknown, path: string): void => {
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
      for (const [k, v] of Object.entries(value)) walk(v, path === '' ? k : `${path}.${k}`);
    } else if (Array.isArray(value) && value.some((v) => typeof v === 'object' && v !== null)) {
      value.forEach((v, i) => walk(v, `${path}[${i}]`));
    } else {
      rows.push([`${path}:`, Array.isArray(value) ? value.join(', ') : String(value)]);
    }
  };
  walk(status, '');
  return formatColumns(rows);
}
