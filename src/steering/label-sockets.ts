import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type Logger } from 'pino';
import { type Family } from '../bindings/address.js';
import { type Protocol } from '../bindings/binding.js';
import { BACKLOG, type ReaderCallbacks, SocketReader } from '../listener/reader.js';
import { LISTEN_REUSEPORT, LISTEN_TRANSPARENT, LISTEN_UDP, native } from '../native/index.js';
import { labelMark, type SocketAddress } from './ruleset.js';

/** One of a label's steered sockets: the daemon's own, or a server's that `adopt` took. */
export interface LabelSocket {
  readonly label: string;
  readonly protocol: Protocol;
  readonly family: Family;
  readonly address: string;
  readonly port: number;
  /**
   * The daemon's copy; the kernel keeps the socket while any copy is open, a worker's included. None for an
   * adopted server's socket: the server alone keeps it, so when the server exits the socket goes with it and
   * its traffic is a counted miss, not a queue nobody reads.
   */
  readonly reader: SocketReader | undefined;
  /** The pid of the server it was taken from. */
  readonly adoptedFrom?: number;
}

/** What the daemon remembers of its sockets across a restart (steering.json in the state directory). */
interface Saved {
  label: string;
  protocol: Protocol;
  family: Family;
  address: string;
  port: number;
  adoptedFrom?: number;
}

const LOOPBACK: Record<Family, string> = { 4: '127.0.0.1', 6: '::1' };
const key = (label: string, protocol: Protocol, family: Family): string => `${label} ${protocol}${family}`;

/**
 * Kernel steering's sockets: one transparent socket per label, protocol and family, bound to loopback on a
 * free port, where the ruleset's tproxy hands the label's packets. Workers get duplicates (services protocol
 * version 2) and accept or receive on them; the daemon's copy keeps the accept queue while a label has no
 * worker, and is read by the daemon itself only while it serves the label (a version-1 worker, an upstream).
 *
 * The ports are saved: a daemon that died left its rules naming them and its workers holding the sockets, so
 * traffic kept flowing; the next one binds the same ports beside them (SO_REUSEPORT, which every label
 * socket sets), so the rules it writes name the sockets the workers hold, and no connection waits for the
 * workers to come back.
 */
export class LabelSockets {
  readonly #sockets = new Map<string, LabelSocket>();
  readonly #callbacks: ReaderCallbacks;
  readonly #log: Logger;
  readonly #path: string;
  readonly #self = new Int32Array(6);
  #saved = new Map<string, Saved>();
  readonly #failures = new Map<string, string>();

  constructor(stateDir: string, callbacks: ReaderCallbacks, log: Logger) {
    this.#path = join(stateDir, 'steering.json');
    this.#callbacks = callbacks;
    this.#log = log;
  }

  /** What a previous daemon left: its sockets' ports and adoptions, to be bound or taken again. */
  loadSaved(): Saved[] {
    try {
      const saved = JSON.parse(readFileSync(this.#path, 'utf8')) as { sockets?: Saved[] };
      this.#saved = new Map((saved.sockets ?? []).map((s) => [key(s.label, s.protocol, s.family), s]));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        this.#log.warn({ path: this.#path, error: (err as Error).message }, 'steering state left out');
    }
    return [...this.#saved.values()];
  }

  get(label: string, protocol: Protocol, family: Family): LabelSocket | undefined {
    return this.#sockets.get(key(label, protocol, family));
  }

  of(label: string): LabelSocket[] {
    return [...this.#sockets.values()].filter((s) => s.label === label);
  }

  all(): LabelSocket[] {
    return [...this.#sockets.values()];
  }

  target(label: string, protocol: Protocol, family: Family): SocketAddress | undefined {
    const s = this.get(label, protocol, family);
    return s === undefined ? undefined : { address: s.address, port: s.port };
  }

  /** Errors of sockets that could not be opened, for `status` and a change's reply. */
  failures(): string[] {
    return [...this.#failures.values()];
  }

  /** Opens a socket for each (label, protocol, family) key in `want` that has none; returns those opened. */
  open(want: ReadonlySet<string>): LabelSocket[] {
    const opened: LabelSocket[] = [];
    for (const k of want) {
      if (this.#sockets.has(k)) continue;
      const [label, space] = k.split(' ') as [string, string];
      const s = this.#open(label, space.slice(0, 3) as Protocol, Number(space.slice(3)) as Family);
      if (s !== undefined) opened.push(s);
    }
    for (const k of this.#failures.keys()) if (!want.has(k)) this.#failures.delete(k);
    if (opened.length > 0) this.#save();
    return opened;
  }

  /** Closes the daemon's sockets not in `want`, after dispatching what waits in them. */
  closeUnwanted(want: ReadonlySet<string>): void {
    // An adoption stays until it is released, bindings or not: the server is there for the label.
    const unwanted = [...this.#sockets].filter(([k, s]) => !want.has(k) && s.adoptedFrom === undefined);
    for (const [k, s] of unwanted) this.#close(k, s);
    if (unwanted.length > 0) this.#save();
  }

  /** Puts a server's socket in its label's place: the daemon's own one, if any, is dispatched and closed. */
  adopt(socket: Omit<LabelSocket, 'reader'>): LabelSocket {
    const k = key(socket.label, socket.protocol, socket.family);
    const old = this.#sockets.get(k);
    if (old !== undefined) this.#close(k, old);
    const s: LabelSocket = { ...socket, reader: undefined };
    this.#sockets.set(k, s);
    this.#save();
    return s;
  }

  /** Gives a label's place back to the daemon's own socket (at the next open); false if it held no adoption. */
  release(label: string, protocol: Protocol, family: Family): boolean {
    const k = key(label, protocol, family);
    const s = this.#sockets.get(k);
    if (s?.adoptedFrom === undefined) return false;
    this.#close(k, s);
    this.#save();
    return true;
  }

  /** The daemon's copies close; the sockets live on in the workers, the rules in the kernel (a hand-over). */
  detach(): void {
    for (const s of this.#sockets.values()) s.reader?.close();
    this.#sockets.clear();
  }

  /** A clean stop: the copies close, and (`forget`: if this daemon ran the rules) nothing is left to restore. */
  close(forget: boolean): void {
    this.detach();
    if (forget) rmSync(this.#path, { force: true });
  }

  static key = key;

  #open(label: string, protocol: Protocol, family: Family): LabelSocket | undefined {
    const k = key(label, protocol, family);
    const saved = this.#saved.get(k);
    if (saved?.adoptedFrom !== undefined)
      this.#log.warn({ label, protocol, family, pid: saved.adoptedFrom }, 'adopted socket not taken again: the label gets its own');
    const address = LOOPBACK[family];
    const flags = LISTEN_TRANSPARENT | LISTEN_REUSEPORT | (protocol === 'udp' ? LISTEN_UDP : 0);
    // The port a previous daemon used first: its rules and its workers' sockets name it.
    const ports = saved !== undefined && saved.adoptedFrom === undefined ? [saved.port, 0] : [0];
    for (const port of ports) {
      try {
        const fd = native.listenInet(address, port, BACKLOG, flags, labelMark(label));
        const bound = native.sockName(fd, this.#self) === 0 ? this.#self[5]! : port;
        const s: LabelSocket = {
          label,
          protocol,
          family,
          address,
          port: bound,
          reader: new SocketReader(fd, protocol, this.#callbacks, this.#log, { label }),
        };
        this.#sockets.set(k, s);
        this.#failures.delete(k);
        this.#log.info({ label, protocol, family, address, port: bound }, 'label socket open');
        return s;
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        if (port !== 0) continue;
        const error = `cannot open ${label}'s ${protocol} IPv${family} socket: ${e.code ?? ''} ${e.message} (transparent sockets need CAP_NET_ADMIN)`;
        this.#failures.set(k, error);
        this.#log.error({ label, protocol, family, code: e.code }, error);
      }
    }
    return undefined;
  }

  #close(k: string, s: LabelSocket): void {
    this.#sockets.delete(k);
    // Connections waiting in the daemon's copy are dispatched by the new table, not dropped with it.
    s.reader?.readQueued();
    s.reader?.close();
    this.#log.info({ label: s.label, protocol: s.protocol, family: s.family, port: s.port }, 'label socket closed');
  }

  #save(): void {
    const sockets: Saved[] = [...this.#sockets.values()].map((s) => ({
      label: s.label,
      protocol: s.protocol,
      family: s.family,
      address: s.address,
      port: s.port,
      ...(s.adoptedFrom === undefined ? {} : { adoptedFrom: s.adoptedFrom }),
    }));
    const tmp = `${this.#path}.tmp`;
    try {
      mkdirSync(dirname(this.#path), { recursive: true, mode: 0o700 });
      writeFileSync(tmp, `${JSON.stringify({ sockets }, null, 2)}\n`, { mode: 0o600 });
      renameSync(tmp, this.#path);
    } catch (err) {
      this.#log.warn({ path: this.#path, error: (err as Error).message }, 'steering state not saved');
    }
  }
}
