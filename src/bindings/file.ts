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

/** Parses file text; `source` names the file in errors. */
export function parseBindingsText(text: string, source = 'bindings file'): Binding[] {
  let tree;
  try {
    tree = parseJSONTree(text, { mode: 'json' });
  } catch (err) {
    throw new DispatcherError('ERR_BINDINGS_FILE', `${source}: not valid JSON: ${(err as Error).message}`);
  }
  return parseBindingsDocument(toValue(tree.body, source), source);
}

/** Validates a parsed document (the control API's request body, or a file's contents). */
export function parseBindingsDocument(doc: unknown, source = 'bindings file'): Binding[] {
  if (!isObject(doc)) throw fileError(source, 'the document is not an object with a "bindings" array');
  for (const key of Object.keys(doc)) {
    if (key !== 'bindings') throw fileError(source, `unknown field ${show(key)} (only "bindings" is allowed)`);
  }
  const entries = doc['bindings'];
  if (!Array.isArray(entries)) throw fileError(source, '"bindings" is not an array');
  const out: Binding[] = [];
  const seen = new Map<string, number>();
  entries.forEach((entry: unknown, i) => {
    const where = `bindings[${i}]`;
    if (!isObject(entry)) throw fileError(source, `${where} is not an object`);
    for (const key of Object.keys(entry)) {
      if (!ENTRY_FIELDS.has(key)) throw fileError(source, `${where}: unknown field ${show(key)} (allowed: label, prefix, port, protocol)`);
    }
    if (!('port' in entry)) throw fileError(source, `${where}: "port" is required (0 means every port)`);
    const protocols = 'protocol' in entry ? [entry['protocol']] : PROTOCOLS;
    for (const protocol of protocols) {
      let binding: Binding;
      try {
        binding = parseBinding({ label: entry['label'], protocol, prefix: entry['prefix'], port: entry['port'] });
      } catch (err) {
        throw fileError(source, `${where}: ${(err as Error).message}`);
      }
      const key = `${binding.protocol} ${binding.prefix} ${binding.port}`;
      const first = seen.get(key);
      if (first !== undefined) {
        throw fileError(source, `${where}: ${binding.protocol} ${binding.prefix} port ${binding.port} is already bound by bindings[${first}]`);
      }
      seen.set(key, i);
      out.push(binding);
    }
  });
  return out;
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
      const out: Record<string, unknown> = Object.create(null);
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
