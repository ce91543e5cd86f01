import { type Logger } from 'pino';
import { type Options as YargsOption } from 'yargs';
import { DEFAULT_CONTROL_PATH, DEFAULT_STATE_DIR } from '../control/protocol.js';
import { DispatcherError } from '../errors.js';
import { DEFAULT_UPSTREAM_DIR } from '../proxy/upstream.js';
import { DEFAULT_SERVICES_PATH } from '../services/protocol.js';

import { type Mode } from '../listener/mode.js';

export type { Mode } from '../listener/mode.js';

export interface DaemonOptions {
  /** ports: a socket per bound port; tproxy: nftables steers to the daemon's socket; kernel: to each label's own sockets. */
  mode?: Mode;
  controlPath?: string;
  stateDir?: string;
  /** The services socket workers register on. */
  servicesPath?: string;
  /** Where listeners bind; `::` is dual-stack. */
  listenAddress?: string;
  /** How long a connection waits for a worker of its label (ms), and how many may wait per label. */
  queueTimeoutMs?: number;
  queueSize?: number;
  /** `LABEL=UID[,UID...]` rules: who besides root and the daemon's uid may register a label. */
  allow?: string[];
  /** Take the listening sockets over from the daemon running on the same control socket (zero downtime). */
  takeover?: boolean;
  /** How long an upstream may take to accept a proxied connection (ms). */
  upstreamTimeoutMs?: number;
  /** The directory `unix:` upstreams must lie in (root-owned). */
  upstreamDir?: string;
  /** HOST:PORT for Prometheus metrics at /metrics. */
  metrics?: string | undefined;
  /** `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`: the fleet's store the bindings follow (the state file caches it). */
  store?: string | undefined;
  storeCa?: string | undefined;
  storeCert?: string | undefined;
  storeKey?: string | undefined;
  storeUser?: string | undefined;
  storePasswordFile?: string | undefined;
  /** This host's name in the store: its own set is layered over the global one (default: the hostname). */
  hostName?: string | undefined;
  logger?: Logger;
}

/** The options that stay unset unless given. */
type Unset = 'metrics' | 'store' | 'storeCa' | 'storeCert' | 'storeKey' | 'storeUser' | 'storePasswordFile' | 'hostName';

/** Every option with its default applied; the logger is the daemon's to make. */
export type ResolvedOptions = Required<Omit<DaemonOptions, Unset | 'logger'>> & Pick<DaemonOptions, Unset>;

type OptionKey = Exclude<keyof DaemonOptions, 'logger'>;

/** How an option is given: `ms` and `count` are whole numbers, written as text; `strings` is repeatable. */
interface OptionSpec {
  flag: string;
  type: 'string' | 'ms' | 'count' | 'boolean' | 'strings' | 'choice';
  choices?: readonly string[];
  /** None: the option is unset unless given. */
  default: unknown;
  describe: string;
  /** Declared by the CLI for every command (the control socket), not by `daemon`. */
  global?: true;
  /** Left out of status().flags: `dispatcher upgrade` gives these itself. */
  reported?: false;
  /** How to reach the store: the CLI's commands that write to it take these too. */
  store?: true;
}

/** The spec of an option of type T: its default is a T and its flag's type follows T's. */
type Spec<T> = OptionSpec & { default: T | undefined } & ([T] extends [number]
    ? { type: 'ms' | 'count' }
    : [T] extends [boolean]
      ? { type: 'boolean' }
      : [T] extends [string[]]
        ? { type: 'strings' }
        : string extends T
          ? { type: 'string' }
          : { type: 'choice'; choices: readonly T[] });

/**
 * The daemon's options: the one place each is declared with its flag and default. In flag order: `dispatcher
 * daemon --help` lists them so, and status().flags reports them so.
 */
export const OPTIONS = {
  mode: {
    flag: 'mode',
    type: 'choice',
    choices: ['ports', 'tproxy', 'kernel'],
    default: 'ports',
    describe:
      "ports: a socket per bound port; tproxy: nftables steers every bound prefix and port (port 0 too) to the daemon; kernel: nftables steers each label's traffic to its own sockets, which its workers hold",
  },
  controlPath: {
    flag: 'control',
    type: 'string',
    default: DEFAULT_CONTROL_PATH,
    describe: 'control socket (env DISPATCHER_CONTROL)',
    global: true,
    reported: false,
  },
  stateDir: { flag: 'state-dir', type: 'string', default: DEFAULT_STATE_DIR, describe: 'where the bindings are kept' },
  servicesPath: { flag: 'services', type: 'string', default: DEFAULT_SERVICES_PATH, describe: 'the socket workers register on' },
  listenAddress: { flag: 'listen-address', type: 'string', default: '::', describe: 'where listeners bind (:: is dual-stack)' },
  queueTimeoutMs: {
    flag: 'queue-timeout',
    type: 'ms',
    default: 2_000,
    describe: 'ms a connection waits for a worker of its label (0: reset at once)',
  },
  queueSize: { flag: 'queue-size', type: 'count', default: 1024, describe: 'connections that may wait per label' },
  upstreamTimeoutMs: {
    flag: 'upstream-timeout',
    type: 'ms',
    default: 5_000,
    describe: 'ms an upstream may take to accept a proxied connection',
  },
  upstreamDir: {
    flag: 'upstream-dir',
    type: 'string',
    default: DEFAULT_UPSTREAM_DIR,
    describe: 'unix: upstreams must lie in this directory (root-owned)',
  },
  takeover: {
    flag: 'takeover',
    type: 'boolean',
    default: false,
    describe: 'take the listening sockets over from the daemon on --control, without refusing a connection',
    reported: false,
  },
  allow: { flag: 'allow', type: 'strings', default: [], describe: 'LABEL=UID[,UID...]: lets these users register LABEL (repeatable)' },
  metrics: { flag: 'metrics', type: 'string', default: undefined, describe: 'HOST:PORT to serve Prometheus metrics on at /metrics' },
  store: {
    flag: 'store',
    type: 'string',
    default: undefined,
    describe: "etcd://HOST:PORT[,HOST:PORT...]/PREFIX: follow a fleet's bindings there (env DISPATCHER_STORE for the CLI)",
    store: true,
  },
  storeCa: { flag: 'store-ca', type: 'string', default: undefined, describe: "CA file for etcd's certificate (https)", store: true },
  storeCert: { flag: 'store-cert', type: 'string', default: undefined, describe: 'client certificate file for etcd', store: true },
  storeKey: { flag: 'store-key', type: 'string', default: undefined, describe: "the client certificate's key file", store: true },
  storeUser: { flag: 'store-user', type: 'string', default: undefined, describe: 'etcd user name', store: true },
  storePasswordFile: {
    flag: 'store-password-file',
    type: 'string',
    default: undefined,
    describe: "file holding the etcd user's password (or env DISPATCHER_STORE_PASSWORD)",
    store: true,
  },
  hostName: {
    flag: 'host-name',
    type: 'string',
    default: undefined,
    describe: "this host's name in the store, whose own bindings are layered over the global ones (default: the hostname)",
  },
} satisfies { [K in OptionKey]-?: Spec<Exclude<DaemonOptions[K], undefined>> };

const KEYS = Object.keys(OPTIONS) as OptionKey[];

export function resolveOptions(options: DaemonOptions): ResolvedOptions {
  const resolved: Partial<Record<OptionKey, unknown>> = {};
  // A default array is shared: each daemon gets its own copy.
  for (const key of KEYS) resolved[key] = options[key] ?? structuredClone(OPTIONS[key].default);
  return resolved as ResolvedOptions;
}

/** The options as the flags that would give them: what status().flags reports and `dispatcher upgrade` hands on. */
export function optionFlags(resolved: ResolvedOptions): Record<string, string | string[]> {
  const flags: Record<string, string | string[]> = {};
  for (const key of KEYS) {
    const spec: OptionSpec = OPTIONS[key];
    const value = resolved[key];
    if (spec.reported === false || value === undefined) continue;
    flags[spec.flag] = Array.isArray(value) ? value : String(value);
  }
  return flags;
}

/** The `daemon` command's yargs options (the global --control is the CLI's own). */
export function daemonYargsOptions(): Record<string, YargsOption> {
  const options: Record<string, YargsOption> = {};
  for (const key of KEYS) {
    const spec: OptionSpec = OPTIONS[key];
    if (spec.global) continue;
    const option: YargsOption = { describe: spec.describe };
    if (spec.type === 'choice') option.choices = spec.choices;
    else if (spec.type === 'boolean') option.type = 'boolean';
    else option.type = 'string';
    if (spec.type === 'strings') option.array = true;
    // Whole numbers are parsed from text (see wholeNumber), so their defaults are shown as text too.
    if (spec.default !== undefined) option.default = typeof spec.default === 'number' ? String(spec.default) : spec.default;
    options[spec.flag] = option;
  }
  return options;
}

/** The DaemonOptions a `daemon` command line gives (`argv` as yargs parsed it, by flag name). */
export function optionsFromArgv(argv: Record<string, unknown>): DaemonOptions {
  const options: Partial<Record<OptionKey, unknown>> = {};
  for (const key of KEYS) {
    const spec: OptionSpec = OPTIONS[key];
    const value = argv[spec.flag];
    if (spec.type === 'ms' || spec.type === 'count') options[key] = wholeNumber(`--${spec.flag}`, value);
    else if (spec.type === 'strings') options[key] = (value as unknown[]).map(String);
    else options[key] = value;
  }
  return options as DaemonOptions;
}

function wholeNumber(option: string, value: unknown): number {
  const text = String(value);
  if (!/^[0-9]{1,9}$/.test(text)) throw new DispatcherError('ERR_CONFIG', `${option} ${JSON.stringify(text)} is not a whole number`);
  return Number(text);
}

/** The store flags (`--store` and its TLS and user options) as yargs options, for the CLI's commands. */
export function storeYargsOptions(): Record<string, YargsOption> {
  const options: Record<string, YargsOption> = {};
  for (const key of KEYS) {
    const spec: OptionSpec = OPTIONS[key];
    if (spec.store) options[spec.flag] = { type: 'string', describe: spec.describe };
  }
  return options;
}
