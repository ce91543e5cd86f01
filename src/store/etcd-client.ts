import { readFileSync } from 'node:fs';
import { ExponentialBackoff, isBrokenCircuitError } from 'cockatiel';
import { Etcd3, type IOptions } from 'etcd3';
import { DispatcherError } from '../errors.js';

/** How to reach the store: `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`, and etcd's TLS and user options. */
export interface EtcdOptions {
  endpoints: string[];
  /** Every key lives under it, e.g. `/dispatcher/prod`. */
  prefix: string;
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
  auth?: { username: string; password: string };
}

/** The store's flags, as the daemon and the CLI take them (declared once, in daemon/options.ts). */
export interface StoreFlags {
  store: string;
  storeCa?: string | undefined;
  storeCert?: string | undefined;
  storeKey?: string | undefined;
  storeUser?: string | undefined;
  /** A file holding the password (a flag's value would show in `ps`). */
  storePasswordFile?: string | undefined;
}

let quiet: true | undefined;

// A call waits this long for an answer: a dead member is left for another, and a daemon cut off from etcd
// says so within seconds instead of hanging a control request.
const CALL_MS = 5_000;

/** The store's URL and files checked and read: every problem named before anything connects. */
export function etcdOptions(flags: StoreFlags): EtcdOptions {
  const given: Record<string, unknown> = {
    store: flags.store,
    'store-ca': flags.storeCa,
    'store-cert': flags.storeCert,
    'store-key': flags.storeKey,
    'store-user': flags.storeUser,
    'store-password-file': flags.storePasswordFile,
  };
  for (const [flag, value] of Object.entries(given))
    if (value !== undefined && typeof value !== 'string') throw new DispatcherError('ERR_CONFIG', `--${flag} is given more than once`);
  const m = /^etcd:\/\/([^/]+)(\/.*)$/.exec(flags.store);
  const usage = `--store ${JSON.stringify(flags.store)} is not etcd://HOST:PORT[,HOST:PORT...]/PREFIX`;
  if (m === null) throw new DispatcherError('ERR_CONFIG', usage);
  const endpoints = m[1]!.split(',').map((hostPort) => {
    if (!/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$/.test(hostPort) || Number(hostPort.split(':').at(-1)) > 65535)
      throw new DispatcherError('ERR_CONFIG', `${usage}: ${JSON.stringify(hostPort)} is not HOST:PORT`);
    return `${flags.storeCa === undefined ? 'http' : 'https'}://${hostPort}`;
  });
  const prefix = m[2]!.replace(/\/+$/, '');
  if (!/^(\/[A-Za-z0-9._-]+)+$/.test(prefix))
    throw new DispatcherError('ERR_CONFIG', `${usage}: the prefix must be /NAME[/NAME...] of A-Z a-z 0-9 . _ -`);
  const file = (flag: string, path: string | undefined): Buffer | undefined => {
    if (path === undefined) return undefined;
    try {
      return readFileSync(path);
    } catch (err) {
      throw new DispatcherError('ERR_CONFIG', `--${flag} ${path}: ${(err as Error).message}`);
    }
  };
  const options: EtcdOptions = { endpoints, prefix };
  if (flags.storeCa !== undefined) {
    if ((flags.storeCert === undefined) !== (flags.storeKey === undefined))
      throw new DispatcherError('ERR_CONFIG', '--store-cert and --store-key go together (a client certificate and its key)');
    options.tls = {
      ca: file('store-ca', flags.storeCa)!,
      cert: file('store-cert', flags.storeCert),
      key: file('store-key', flags.storeKey),
    };
  } else if (flags.storeCert !== undefined || flags.storeKey !== undefined) {
    throw new DispatcherError('ERR_CONFIG', "--store-cert and --store-key need --store-ca (the CA that signed etcd's certificate)");
  }
  if (flags.storeUser !== undefined) {
    const password = process.env['DISPATCHER_STORE_PASSWORD'] ?? file('store-password-file', flags.storePasswordFile)?.toString().trim();
    if (password === undefined)
      throw new DispatcherError('ERR_CONFIG', '--store-user needs --store-password-file (or DISPATCHER_STORE_PASSWORD)');
    options.auth = { username: flags.storeUser, password };
  }
  return options;
}

/**
 * gRPC gives TLS an etcd's IP address as the server name, which Node deprecates with a warning on every
 * connection (DEP0123): noise in the CLI's output and the daemon's log, about nothing the user controls.
 */
function quietIpServerNames(): void {
  const emit = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = (warning: string | Error, ...rest: unknown[]) => {
    const code = typeof rest[0] === 'object' && rest[0] !== null ? (rest[0] as { code?: string }).code : rest[1];
    if (code !== 'DEP0123') emit(warning, ...rest);
  };
}

/** A client for the store. Nothing is sent until the first call; every call gives up after CALL_MS. */
export function etcdClient(options: EtcdOptions): Etcd3 {
  if (options.tls !== undefined) quiet ??= (quietIpServerNames(), true);
  const config: IOptions = {
    hosts: options.endpoints,
    dialTimeout: CALL_MS,
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + CALL_MS }),
    // Watches come back within 2 s of etcd (the default waits up to 30 s): a fleet converges soon after.
    // (The factory's first step: etcd3 types the option as a step and calls next() on it.)
    faultHandling: { watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 2_000 }).next() },
  };
  if (options.tls !== undefined)
    config.credentials = { rootCertificate: options.tls.ca, privateKey: options.tls.key, certChain: options.tls.cert };
  if (options.auth !== undefined) config.auth = options.auth;
  return new Etcd3(config);
}

/** An error from etcd as the dispatcher's: ERR_STORE, naming the store and, briefly, why. */
export function storeUnreachable(options: EtcdOptions, err: unknown): DispatcherError {
  if (err instanceof DispatcherError) return err;
  const e = err as Error;
  // gRPC's message runs on with resolver notes; the cockatiel breaker's says nothing of etcd.
  const why = isBrokenCircuitError(err)
    ? 'it failed three times in a row; the client tries it again 5 s after the last failure'
    : e.message.replace(/\.? *(Last error|Resolution note).*$/s, '');
  return new DispatcherError('ERR_STORE', `etcd at ${options.endpoints.join(', ')} does not answer (${why})`);
}
