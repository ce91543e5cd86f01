import { type Binding, parseBinding, show } from '../bindings/binding.js';
import { parseBindingsDocument } from '../bindings/file.js';
import { DispatcherError } from '../errors.js';
import { parseUpstream, type Upstream } from '../proxy/upstream.js';

/**
 * The keys of the store in etcd (docs/ARCHITECTURE.md, "The store in etcd"), under a PREFIX. What readers
 * follow lives under `live/`, the chunks under `data/`, so a watch of `live/` never carries a load's bulk:
 *
 *   PREFIX/live/global/current                {"gen":"<id>","chunks":N}: the one key readers follow
 *   PREFIX/live/global/o/<id>/<binding key>   a binding (or null: removed) changed since the load: an overlay
 *   PREFIX/data/global/<id>/<n>               {"bindings":[...]}: chunk n of generation <id>, n < N
 *   PREFIX/data/global/stamp                  rewritten by every overlay write: a fold compares it
 *   PREFIX/live/host/<host>/..., PREFIX/data/host/<host>/...   the same, for one host's scope
 *   PREFIX/live/upstreams                     [Upstream, ...]
 *   PREFIX/fleet/live/<host>                  a daemon's presence (src/fleet/presence.ts), under its lease
 *   PREFIX/fleet/known/<host>                 every host that ever joined: one whose presence is gone is missing
 */

/** A chunk's JSON stays under this: a quarter of etcd's default 1.5 MiB request limit. */
export const CHUNK_BYTES = 384 * 1024;

export type Scope = 'global' | { host: string };

const HOST = /^[A-Za-z0-9._-]{1,253}$/;

/** A host name as keys take it; anything else is refused with its reason. */
export function checkHost(host: string): string {
  if (!HOST.test(host)) throw new DispatcherError('ERR_USAGE', `host ${show(host)} is not 1-253 characters of A-Z a-z 0-9 . _ -`);
  return host;
}

/** A store revision as text (`name` says where it came from, for the error): a whole number from 1. */
export function parseRevision(text: string, name: string, code: 'ERR_USAGE' | 'ERR_REQUEST' = 'ERR_USAGE'): number {
  if (!/^[1-9][0-9]{0,15}$/.test(text))
    throw new DispatcherError(code, `${name} ${JSON.stringify(text)} is not a revision (a whole number from 1)`);
  return Number(text);
}

/** One scope's keys. */
export interface ScopeKeys {
  pointer: string;
  /** Every overlay key of the scope starts so, whatever the generation. */
  overlayRoot: string;
  overlays(gen: string): string;
  overlay(gen: string, b: Binding): string;
  chunks(gen: string): string;
  chunk(gen: string, n: number): string;
  /** Every generation's chunks start so. */
  dataRoot: string;
  stamp: string;
}

export function scopeKeys(prefix: string, scope: Scope): ScopeKeys {
  if (scope !== 'global') checkHost(scope.host);
  const path = scope === 'global' ? 'global' : `host/${scope.host}`;
  const live = `${prefix}/live/${path}`;
  const data = `${prefix}/data/${path}`;
  return {
    pointer: `${live}/current`,
    overlayRoot: `${live}/o/`,
    overlays: (gen) => `${live}/o/${gen}/`,
    // The binding key (protocol, prefix, port) as text; the prefix names the family.
    overlay: (gen, b) => `${live}/o/${gen}/${b.protocol},${b.prefix},${b.port}`,
    chunks: (gen) => `${data}/${gen}/`,
    chunk: (gen, n) => `${data}/${gen}/${n}`,
    dataRoot: `${data}/`,
    stamp: `${data}/stamp`,
  };
}

export const liveDir = (prefix: string): string => `${prefix}/live/`;
export const presenceDir = (prefix: string): string => `${prefix}/fleet/live/`;
export const knownDir = (prefix: string): string => `${prefix}/fleet/known/`;
export const upstreamsKey = (prefix: string): string => `${prefix}/live/upstreams`;

export interface Pointer {
  gen: string;
  chunks: number;
}

function storeError(key: string, why: string): DispatcherError {
  return new DispatcherError('ERR_STORE', `etcd key ${key}: ${why}`);
}

function parseJSON(key: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw storeError(key, `not JSON (${(err as Error).message})`);
  }
}

export function parsePointer(key: string, text: string): Pointer {
  const v = parseJSON(key, text) as Partial<Pointer> | null;
  if (
    typeof v !== 'object' ||
    v === null ||
    typeof v.gen !== 'string' ||
    !/^[0-9a-z-]{1,64}$/.test(v.gen) ||
    !Number.isInteger(v.chunks) ||
    v.chunks! < 0
  ) {
    throw storeError(key, `not a generation pointer {"gen", "chunks"}: ${show(v)}`);
  }
  return { gen: v.gen, chunks: v.chunks! };
}

export function parseChunk(key: string, text: string): Binding[] {
  try {
    return parseBindingsDocument(parseJSON(key, text), key);
  } catch (err) {
    throw err instanceof DispatcherError && err.code === 'ERR_STORE' ? err : storeError(key, (err as Error).message);
  }
}

/**
 * An overlay: the identity of the binding its key names, a binding of that key (`named`, its label
 * meaningless), and the binding, or undefined when it records a removal.
 */
export function parseOverlay(key: string, text: string): { id: string; named: Binding; binding: Binding | undefined } {
  const m = /\/o\/[^/]+\/(tcp|udp),([^,]+),([0-9]{1,5})$/.exec(key);
  let named: Binding;
  try {
    if (m === null) throw new Error('the key does not end in /o/<generation>/<protocol>,<prefix>,<port>');
    named = parseBinding({ label: 'x', protocol: m[1], prefix: m[2], port: Number(m[3]) });
  } catch (err) {
    throw storeError(key, (err as Error).message);
  }
  const v = parseJSON(key, text);
  if (v === null) return { id: named.key(), named, binding: undefined };
  const [binding] = parseChunk(key, JSON.stringify({ bindings: [v] }));
  // A value for another binding than the key names would leave two overlays for one binding.
  if (binding === undefined || !binding.sameKey(named)) throw storeError(key, `holds ${show(v)}, which is not the binding the key names`);
  return { id: named.key(), named, binding };
}

export function parseUpstreams(key: string, text: string): Upstream[] {
  const v = parseJSON(key, text);
  if (!Array.isArray(v)) throw storeError(key, 'not an array of upstreams');
  return v.map((u: unknown, i) => {
    try {
      return parseUpstream(typeof u === 'object' && u !== null ? u : {});
    } catch (err) {
      throw storeError(key, `[${i}]: ${(err as Error).message}`);
    }
  });
}

/** The bindings as chunk texts, each under CHUNK_BYTES. */
export function chunks(bindings: readonly Binding[]): string[] {
  const out: string[] = [];
  let items: string[] = [];
  let size = 0;
  for (const b of bindings) {
    const item = JSON.stringify(b.toJSON());
    if (size + item.length > CHUNK_BYTES - 32 && items.length > 0) {
      out.push(`{"bindings":[${items.join(',')}]}`);
      items = [];
      size = 0;
    }
    items.push(item);
    size += item.length + 1;
  }
  if (items.length > 0) out.push(`{"bindings":[${items.join(',')}]}`);
  return out;
}

/** One scope's bindings by key: the chunks, then the overlays (a removal deletes). */
export function scopeBindings(
  base: readonly Binding[][],
  chunkKeys: readonly string[],
  overlays: readonly { id: string; binding: Binding | undefined }[],
): Map<string, Binding> {
  const byKey = new Map<string, Binding>();
  base.forEach((chunk, i) => {
    for (const b of chunk) {
      const k = b.key();
      if (byKey.has(k)) throw storeError(chunkKeys[i]!, `${b.protocol} ${b.prefix} port ${b.port} is also in an earlier chunk`);
      byKey.set(k, b);
    }
  });
  for (const o of overlays) {
    if (o.binding === undefined) byKey.delete(o.id);
    else byKey.set(o.id, o.binding);
  }
  return byKey;
}
