/** Aligned columns, two spaces apart; the last column is not padded. */
export function formatColumns(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ')).join('\n');
}

/** Nested status objects as `a.b: value` lines, aligned. */
export function formatStatus(status: Record<string, unknown>): string {
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
