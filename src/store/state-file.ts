import { constants } from 'node:fs';
import { open, readdir, readFile, rename, unlink, mkdir } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { type Binding } from '../bindings/binding.js';
import { formatBindingsFile, parseBindingsDocument } from '../bindings/file.js';
import { DispatcherError } from '../errors.js';
import { parseUpstream, type Upstream } from '../proxy/upstream.js';

/**
 * The state file: what a restarted daemon starts from. Written whole on every change (temporary file,
 * fsync, rename, fsync of the directory), so a crash leaves the old file or the new one, never a torn one.
 */
export const STATE_VERSION = 1;

// The temporary file: created, never opened if something is there (a planted symlink is not followed).
const CREATE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
const TEMP = /^state\.json\.[0-9a-z]+\.tmp$/;

/** What the daemon keeps: the bindings, and the upstreams of labels served in proxy mode. */
export interface State {
  bindings: readonly Binding[];
  upstreams: readonly Upstream[];
  /** With a fleet's store: which store (its URL) and the revision of it these are: the file is its cache. */
  origin?: Origin | undefined;
}

export interface Origin {
  store: string;
  revision: number;
}

/** A loaded state, with the upstreams an older version accepted and this one refuses, left out and why. */
export interface LoadedState extends State {
  refused: string[];
}

export class StateFile {
  readonly path: string;
  readonly #dir: string;

  constructor(dir: string) {
    this.#dir = dir;
    this.path = join(dir, 'state.json');
  }

  /** The saved state; empty if none was ever saved. A corrupt file is an error, never replaced. */
  async load(): Promise<LoadedState> {
    await this.#removeTemps();
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { bindings: [], upstreams: [], refused: [] };
      throw new DispatcherError('ERR_STATE', `cannot read state file ${this.path}: ${(err as Error).message}`);
    }
    const corrupt = (why: string): DispatcherError =>
      new DispatcherError(
        'ERR_STATE',
        `state file ${this.path} is corrupt (${why}); fix or move it away, the daemon will not overwrite it`,
      );
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (err) {
      throw corrupt((err as Error).message);
    }
    const version = typeof doc === 'object' && doc !== null ? (doc as { version?: unknown }).version : undefined;
    // A rollback after an upgrade lands here: say so, or it is a restart loop with no explanation.
    if (typeof version === 'number' && Number.isInteger(version) && version > STATE_VERSION) {
      throw new DispatcherError(
        'ERR_STATE',
        `state file ${this.path} was written by a newer version (${version}); this daemon reads version ${STATE_VERSION}: upgrade the dispatcher, or restore a state file this version wrote (or move this one away to start empty)`,
      );
    }
    if (version !== STATE_VERSION) throw corrupt(`expected an object with "version": ${STATE_VERSION}`);
    const { version: _version, upstreams = [], origin, ...rest } = doc as Record<string, unknown>;
    if (!Array.isArray(upstreams)) throw corrupt('"upstreams" is not an array');
    const o = origin as Partial<Origin> | undefined;
    if (o !== undefined && (typeof o !== 'object' || o === null || typeof o.store !== 'string' || !Number.isSafeInteger(o.revision)))
      throw corrupt('"origin" is not {"store", "revision"}');
    let bindings;
    try {
      bindings = parseBindingsDocument(rest, 'state');
    } catch (err) {
      throw corrupt((err as Error).message);
    }
    // An upstream an older version accepted (PROXY v1 over udp:) is left out, not the whole file refused:
    // the daemon starts and says which.
    const parsed: Upstream[] = [];
    const refused: string[] = [];
    for (const u of upstreams as Record<string, unknown>[]) {
      try {
        parsed.push(parseUpstream(u));
      } catch (err) {
        refused.push(`upstream ${JSON.stringify(u)}: ${(err as Error).message}`);
      }
    }
    return { bindings, upstreams: parsed, refused, origin: o as Origin | undefined };
  }

  async save({ bindings, upstreams, origin }: State): Promise<void> {
    await mkdir(this.#dir, { recursive: true, mode: 0o750 });
    // A random name: another user cannot guess it to plant a link there first.
    const tmp = `${this.path}.${randomBytes(8).toString('hex')}.tmp`;
    const text = JSON.stringify({ version: STATE_VERSION, upstreams, origin, ...formatBindingsFile(bindings) }) + '\n';
    const file = await open(tmp, CREATE, 0o640);
    try {
      await file.writeFile(text);
      await file.sync();
    } catch (err) {
      await file.close();
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
    await file.close();
    await rename(tmp, this.path);
    const dir = await open(this.#dir, 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }

  /** Temporary files a crash left (at start, before any save): unlink removes a link, never its target. */
  async #removeTemps(): Promise<void> {
    const names = await readdir(this.#dir).catch(() => []);
    await Promise.all(names.filter((n) => TEMP.test(n)).map((n) => unlink(join(this.#dir, n)).catch(() => undefined)));
  }
}
