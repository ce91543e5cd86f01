import { parse as parseJSONTree, type ValueNode } from '@humanwhocodes/momoa';
import { DispatcherError } from '../errors.js';
import { type Binding, type BindingJSON, PROTOCOLS, parseBinding, show } from './binding.js';

/**
 * The bindings file: `{"bindings": [{"label", "prefix", "port", "protocol"?}]}`. An entry without
 * `protocol` applies to tcp and udp, so files written for Tubular's `load-bindings` load unchanged.
 * Unknown fields, duplicate JSON keys and a (protocol, prefix, port) given twice are refused.
 */
export interface BindingsFile {
  bindings: BindingJSON[];
}

const ENTRY_FIELDS = new Set(['label', 'prefix', 'port', 'protocol']);

/**
 * Text up to this size gets a syntax error's line and column from momoa's tree when V8's message has no
 * position. A larger text is not parsed a second time: a tree costs ~20 bytes per byte of JSON, so a hostile
 * 50 MB body would have cost the daemon a gigabyte.
 */
const TREE_MAX_CHARS = 1 << 20;

/** Parses file text; `source` names the file in errors. */
export function parseBindingsText(text: string, source = 'bindings file'): Binding[] {
  const streamed = parseEntryByEntry(text, source);
  if (streamed !== undefined) return streamed;
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    const at = /^(.*) in JSON at position (\d+)/.exec((err as Error).message);
    if (at !== null) throw notJSON(source, `${at[1]!} at ${lineColumn(text, Number(at[2]))}`);
    if (text.length > TREE_MAX_CHARS) throw notJSON(source, (err as Error).message.replace(/\n/g, '\\n'));
    return parseBindingsDocument(preciseParse(text, source), source);
  }
  // JSON.parse keeps the last of duplicate keys. Counting keys is one pass over the text; momoa's tree,
  // which says where the duplicate is, took 0.6 s at 100k bindings, so it runs only when the counts differ.
  if (keysInText(text) !== keysInValue(doc)) doc = preciseParse(text, source);
  return parseBindingsDocument(doc, source);
}

/** Parses with positions, for errors that name a line and column. */
function preciseParse(text: string, source: string): unknown {
  let tree;
  try {
    tree = parseJSONTree(text, { mode: 'json' });
    return toValue(tree.body, source);
  } catch (err) {
    if (err instanceof DispatcherError) throw err;
    // momoa and toValue recurse: JSON nested deeper than the stack cannot be located, only refused.
    if (err instanceof RangeError)
      throw fileError(source, 'nested too deeply to locate the error (no bindings file nests more than 3 deep)');
    throw notJSON(source, (err as Error).message);
  }
}

function notJSON(source: string, message: string): DispatcherError {
  return fileError(source, `not valid JSON: ${message}`);
}

/** `line L, column C` (both from 1, as momoa counts) of a UTF-16 offset. */
function lineColumn(text: string, offset: number): string {
  let line = 1;
  let lineStart = 0;
  for (let i = text.indexOf('\n'); i !== -1 && i < offset; i = text.indexOf('\n', i + 1)) {
    line++;
    lineStart = i + 1;
  }
  return `line ${line}, column ${offset - lineStart + 1}`;
}

/** Object keys in valid JSON text: the strings followed by a colon. */
function keysInText(text: string): number {
  let keys = 0;
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) !== 0x22) continue;
    i = stringEnd(text, i);
    if (namesKey(text, i)) keys++;
  }
  return keys;
}

/** The offset of the quote that closes the string opening at `i` (the text's length if none does). */
function stringEnd(text: string, i: number): number {
  for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c) i++;
  return i;
}

/** Whether the string closed at `quote` is a key: a colon follows it. */
function namesKey(text: string, quote: number): boolean {
  return text.charCodeAt(skipSpace(text, quote + 1)) === 0x3a;
}

/** Object keys in a parsed value. A loop, not recursion: a hostile body nests 100k deep. */
function keysInValue(value: unknown): number {
  let keys = 0;
  const todo: unknown[] = [value];
  while (todo.length > 0) {
    const v = todo.pop();
    if (Array.isArray(v)) {
      for (const item of v) todo.push(item);
    } else if (isObject(v)) {
      for (const k in v) {
        if (!Object.hasOwn(v, k)) continue;
        keys++;
        todo.push(v[k]);
      }
    }
  }
  return keys;
}

/** Validates a parsed document (the control API's request body, or a file's contents). */
export function parseBindingsDocument(doc: unknown, source = 'bindings file'): Binding[] {
  if (!isObject(doc)) throw fileError(source, 'the document is not an object with a "bindings" array');
  for (const key of Object.keys(doc)) {
    if (key !== 'bindings') throw fileError(source, `unknown field ${show(key)} (only "bindings" is allowed)`);
  }
  const entries = doc['bindings'];
  if (!Array.isArray(entries)) throw fileError(source, '"bindings" is not an array');
  const out = new Entries(source);
  entries.forEach((entry: unknown, i) => out.add(entry, i));
  return out.bindings;
}

/** The bindings of a document's entries, validated one entry at a time. */
class Entries {
  readonly bindings: Binding[] = [];
  readonly #source: string;
  readonly #seen = new Seen();
  // One string per distinct label, not one per entry: at a million entries that is 30 MB.
  readonly #labels = new Map<unknown, unknown>();

  constructor(source: string) {
    this.#source = source;
  }

  add(entry: unknown, i: number): void {
    const source = this.#source;
    const where = `bindings[${i}]`;
    if (!isObject(entry)) throw fileError(source, `${where} is not an object`);
    for (const key of Object.keys(entry)) {
      if (!ENTRY_FIELDS.has(key)) throw fileError(source, `${where}: unknown field ${show(key)} (allowed: label, prefix, port, protocol)`);
    }
    if (!('port' in entry)) throw fileError(source, `${where}: "port" is required (0 means every port)`);
    const protocols = 'protocol' in entry ? [entry['protocol']] : PROTOCOLS;
    let label = this.#labels.get(entry['label']);
    if (label === undefined) this.#labels.set(entry['label'], (label = entry['label']));
    for (const protocol of protocols) {
      let binding: Binding;
      try {
        binding = parseBinding({ label, protocol, prefix: entry['prefix'], port: entry['port'] });
      } catch (err) {
        throw fileError(source, `${where}: ${(err as Error).message}`);
      }
      const first = this.#seen.add(binding, i);
      if (first !== undefined) {
        throw fileError(
          source,
          `${where}: ${binding.protocol} ${binding.prefix} port ${binding.port} is already bound by bindings[${first}]`,
        );
      }
      this.bindings.push(binding);
    }
  }
}

/**
 * A plain `{"bindings": [{...}, ...]}` text parsed one entry at a time, so the whole document never exists
 * as one tree: at 1M bindings that tree held ~150 MB beside the text and the bindings, and the daemon's
 * memory after a load kept much of that peak. Undefined for any other shape, a nested or invalid entry,
 * a duplicate key or a refused entry: the caller then parses the whole text, which gives the same bindings
 * or the error it always gave (first syntax error before the first refused entry, positions and all).
 */
function parseEntryByEntry(text: string, source: string): Binding[] | undefined {
  let i = skipSpace(text, 0);
  if (text.charCodeAt(i) !== 0x7b) return undefined;
  i = skipSpace(text, i + 1);
  if (!text.startsWith('"bindings"', i)) return undefined;
  i = skipSpace(text, i + '"bindings"'.length);
  if (text.charCodeAt(i) !== 0x3a) return undefined;
  i = skipSpace(text, i + 1);
  if (text.charCodeAt(i) !== 0x5b) return undefined;
  i = skipSpace(text, i + 1);
  const out = new Entries(source);
  for (let n = 0; text.charCodeAt(i) !== 0x5d; n++) {
    if (n > 0) {
      if (text.charCodeAt(i) !== 0x2c) return undefined;
      i = skipSpace(text, i + 1);
    }
    const object = flatObjectAt(text, i);
    if (object === undefined) return undefined;
    try {
      const entry: unknown = JSON.parse(text.slice(i, object.end));
      // Fewer keys parsed than written: JSON.parse kept the last of a duplicate.
      if (!isObject(entry) || Object.keys(entry).length !== object.keys) return undefined;
      out.add(entry, n);
    } catch {
      return undefined;
    }
    i = skipSpace(text, object.end);
  }
  i = skipSpace(text, i + 1);
  if (text.charCodeAt(i) !== 0x7d || skipSpace(text, i + 1) !== text.length) return undefined;
  return out.bindings;
}

/** The offset past JSON whitespace from `i`. */
function skipSpace(text: string, i: number): number {
  for (let c = text.charCodeAt(i); c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09; c = text.charCodeAt(++i));
  return i;
}

/**
 * Where the object that starts at `i` ends and how many keys its text names (strings followed by a colon),
 * in one pass; undefined if there is none or it holds an object or array.
 */
function flatObjectAt(text: string, i: number): { end: number; keys: number } | undefined {
  if (text.charCodeAt(i) !== 0x7b) return undefined;
  let keys = 0;
  for (i++; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x7d) return { end: i + 1, keys };
    if (c === 0x7b || c === 0x5b) return undefined;
    if (c !== 0x22) continue;
    i = stringEnd(text, i);
    if (namesKey(text, i)) keys++;
  }
  return undefined;
}

/**
 * Which entry first named each (protocol, prefix, port). Keyed by a 30-bit hash, a small integer that V8
 * stores without allocating: a Map of a million string keys doubled the memory of a 1M-binding load.
 * Keys whose hashes collide (a few hundred in a million) go to a map by full key.
 */
class Seen {
  readonly #byHash = new Map<number, { binding: Binding; entry: number }>();
  readonly #byKey = new Map<string, number>();

  /** Records `binding` from `entry`; returns the earlier entry if its key was seen. */
  add(binding: Binding, entry: number): number | undefined {
    // The hash only spreads keys; equality is Binding.key's, so a field the hash missed costs speed, not correctness.
    let h =
      Math.imul(binding.port + 1, 0x9e3779b1) ^
      (binding.length << 2) ^
      (binding.protocol === 'tcp' ? 0 : 1) ^
      (binding.family === 4 ? 0 : 2);
    for (let i = 0; i < 4; i++) h = Math.imul(h ^ binding.word(i), 0x85ebca6b) ^ (h >>> 13);
    h &= 0x3fffffff;
    const other = this.#byHash.get(h);
    if (other === undefined) {
      this.#byHash.set(h, { binding, entry });
      return undefined;
    }
    if (other.binding.sameKey(binding)) return other.entry;
    const first = other.binding.key();
    if (!this.#byKey.has(first)) this.#byKey.set(first, other.entry);
    const key = binding.key();
    const earlier = this.#byKey.get(key);
    if (earlier === undefined) this.#byKey.set(key, entry);
    return earlier;
  }
}

export function formatBindingsFile(bindings: readonly Binding[]): BindingsFile {
  return { bindings: bindings.map((b) => b.toJSON()) };
}

function fileError(source: string, message: string): DispatcherError {
  return new DispatcherError('ERR_BINDINGS_FILE', `${source}: ${message}`);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The parsed tree as plain values, refusing an object that names a key twice (JSON.parse keeps the last). */
function toValue(node: ValueNode, source: string): unknown {
  switch (node.type) {
    case 'Object': {
      const out = Object.create(null) as Record<string, unknown>;
      for (const m of node.members) {
        const key = m.name.type === 'String' ? m.name.value : m.name.name;
        if (Object.hasOwn(out, key)) {
          const at = m.name.loc.start;
          throw fileError(source, `duplicate key ${show(key)} at line ${at.line}, column ${at.column}`);
        }
        out[key] = toValue(m.value, source);
      }
      return out;
    }
    case 'Array':
      return node.elements.map((e) => toValue(e.value, source));
    case 'Null':
      return null;
    case 'NaN':
    case 'Infinity':
      throw fileError(source, `unexpected ${node.type} (JSON mode does not allow it)`);
    default:
      return node.value;
  }
}
