import { type Server } from 'node:http';
import { unlink } from 'node:fs/promises';
import { pino, type Logger } from 'pino';
import { type Binding } from '../bindings/binding.js';
import { bindingFilter } from '../bindings/order.js';
import { type ControlHandlers, createControlServer, listenUnix } from '../control/server.js';
import { DEFAULT_CONTROL_PATH, DEFAULT_STATE_DIR } from '../control/protocol.js';
import { Table } from '../table/table.js';
import { VERSION } from '../version.js';
import { collectSoon } from './memory.js';
import { StateFile } from './state.js';

// A replace this large leaves enough garbage to be worth a full collection (see memory.ts).
const LARGE_REPLACE = 100_000;

export interface DaemonOptions {
  controlPath?: string;
  stateDir?: string;
  logger?: Logger;
}

/**
 * The composition root: owns the current table snapshot, applies control changes one at a time
 * (validate, build the new snapshot, persist, swap), and wires the parts together.
 */
export class Daemon {
  readonly controlPath: string;
  readonly log: Logger;
  readonly #state: StateFile;
  readonly #control: Server;
  readonly #startedAt = Date.now();
  #table: Table;
  // Changes run one after another, so each builds on the last one's snapshot and persists in order.
  #changes: Promise<unknown> = Promise.resolve();

  private constructor(options: Required<DaemonOptions>, table: Table) {
    this.controlPath = options.controlPath;
    this.log = options.logger;
    this.#state = new StateFile(options.stateDir);
    this.#table = table;
    this.#control = createControlServer(this.#handlers());
  }

  static async start(options: DaemonOptions = {}): Promise<Daemon> {
    const full: Required<DaemonOptions> = {
      controlPath: options.controlPath ?? DEFAULT_CONTROL_PATH,
      stateDir: options.stateDir ?? DEFAULT_STATE_DIR,
      logger: options.logger ?? pino({ name: 'dispatcher' }, pino.destination(2)),
    };
    const state = new StateFile(full.stateDir);
    const table = Table.from(await state.load());
    const daemon = new Daemon(full, table);
    await listenUnix(daemon.#control, full.controlPath);
    daemon.log.info({ control: full.controlPath, state: state.path, bindings: table.size, version: VERSION }, 'daemon started');
    return daemon;
  }

  /** The current snapshot; hold the reference for a consistent view. */
  get table(): Table {
    return this.#table;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#control.close(() => resolve());
      this.#control.closeAllConnections();
    });
    await this.#changes;
    await unlink(this.controlPath).catch(() => undefined);
    this.log.info('daemon stopped');
  }

  #change<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#changes.then(work);
    this.#changes = run.catch(() => undefined);
    return run;
  }

  /** Persists first: if the disk refuses, the live table stays as it was and the caller gets the error. */
  async #commit(next: Table, what: Record<string, unknown>): Promise<void> {
    await this.#state.save(next.bindings());
    this.#table = next;
    this.log.info({ ...what, bindings: next.size }, 'bindings changed');
  }

  #handlers(): ControlHandlers {
    return {
      list: (filter) => this.#table.bindings().filter(bindingFilter(filter)),
      add: (binding) =>
        this.#change(async () => {
          const { table, replaced } = this.#table.with(binding);
          await this.#commit(table, { added: binding.toJSON(), replaced: replaced?.label });
          return { binding, replaced };
        }),
      remove: (binding) =>
        this.#change(async () => {
          const table = this.#table.without(binding);
          const removed: Binding = this.#table.find(binding)!;
          await this.#commit(table, { removed: removed.toJSON() });
          return removed;
        }),
      replace: (bindings, dryRun) =>
        this.#change(async () => {
          const next = Table.from(bindings);
          const diff = this.#table.diff(next);
          if (!dryRun && (diff.added.length > 0 || diff.removed.length > 0)) await this.#commit(next, { loaded: bindings.length, added: diff.added.length, removed: diff.removed.length });
          if (bindings.length >= LARGE_REPLACE) collectSoon();
          return diff;
        }),
      lookup: (protocol, address, port) => this.#table.lookup(protocol, address, port),
      status: () => {
        const all = this.#table.bindings();
        return {
          version: VERSION,
          pid: process.pid,
          uptime_seconds: Math.round((Date.now() - this.#startedAt) / 1000),
          control: this.controlPath,
          state_file: this.#state.path,
          bindings: {
            total: all.length,
            tcp: all.filter((b) => b.protocol === 'tcp').length,
            udp: all.filter((b) => b.protocol === 'udp').length,
            labels: new Set(all.map((b) => b.label)).size,
          },
        };
      },
    };
  }
}
