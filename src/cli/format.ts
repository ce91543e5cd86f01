import { stripVTControlCharacters, styleText } from 'node:util';
import { type BindingJSON } from '../bindings/binding.js';

/** `text` as lines: exactly one newline at the end, whatever the text (a message may carry its own). */
export const lines = (text: string): string => `${text.replace(/\n+$/, '')}\n`;
export const print = (text: string): void => void process.stdout.write(lines(text));
export const printJSON = (value: unknown): void => print(JSON.stringify(value, null, 2));

export const printWarnings = (warnings: readonly string[] | undefined): void => {
  for (const w of warnings ?? []) process.stderr.write(lines(`dispatcher: warning: ${w}`));
};

export const describe = (b: BindingJSON): string => `${b.protocol} ${b.prefix} port ${b.port} -> ${b.label}`;

/** The few colours the CLI uses: green for what works, yellow for what deserves a look, red for what is broken. */
export type Colour = 'green' | 'yellow' | 'red';
export type Paint = (colour: Colour, text: string) => string;
export const plain: Paint = (_colour, text) => text;
/**
 * Colours for what goes to `stream`. styleText (Node 20.18+) decides as Node itself does: colour on a
 * terminal unless NO_COLOR (or TERM=dumb) says otherwise, and anywhere if FORCE_COLOR asks; so a pipe gets
 * plain text.
 */
export const paintFor =
  (stream: NodeJS.WriteStream): Paint =>
  (colour, text) =>
    styleText(colour, text, { stream });

/** A table column: its title and how an item shows in it. Numbers are right-aligned, so that their digits line up. */
export interface Column<T> {
  title: string;
  cell: (item: T) => string;
  right?: boolean;
}

/**
 * `items` as aligned columns under their titles, two spaces apart, or `empty` if there are none. Widths
 * are measured without colour codes, so a coloured cell lines up too; a last left-aligned column is not padded.
 */
export function formatTable<T>(columns: readonly Column<T>[], items: readonly T[], empty: string): string {
  if (items.length === 0) return empty;
  const rows = [columns.map((c) => c.title), ...items.map((item) => columns.map((c) => c.cell(item)))];
  const widths = columns.map((_, i) => Math.max(...rows.map((row) => stripVTControlCharacters(row[i]!).length)));
  const pad = (cell: string, i: number): string => {
    const room = ' '.repeat(widths[i]! - stripVTControlCharacters(cell).length);
    if (columns[i]!.right) return room + cell;
    return i === columns.length - 1 ? cell : cell + room;
  };
  // An empty last cell leaves no spaces behind.
  return rows.map((row) => row.map(pad).join('  ').trimEnd()).join('\n');
}
