import { type Address } from '../bindings/address.js';
import { PROTOCOLS, type Protocol } from '../bindings/binding.js';
import { type Current } from '../dispatch/current.js';
import { DispatcherError } from '../errors.js';
import { ListeningMode, type ModeOptions, type ReplyRoute } from '../listener/mode.js';
import { ReplySockets } from '../listener/reply-sockets.js';
import { type ListenerStatus } from '../listener/listeners.js';
import { LISTEN_REUSEPORT, LISTEN_UDP, native } from '../native/index.js';
import { type SteeredSockets } from '../services/peer.js';
import { type Table } from '../table/table.js';
import { findServerSocket, mayTrace } from './adopt.js';
import { compileTable } from './compile.js';
import { type SteeringCounters } from '../metrics/metrics.js';
import { readCounters } from './counters.js';
import { LabelSockets, type LabelSocket } from './label-sockets.js';
import { applySteering, labelMark, planSteering, removeSteering, type Steering, updateSteering } from './ruleset.js';

export interface KernelModeOptions extends ModeOptions {
  /** Where the label sockets' ports are kept for the next daemon. */
  stateDir: string;
  /** The table a reply socket's address is checked against. */
  current: Current;
  /** The nft command (tests run it in a namespace). */
  nft?: string | undefined;
}

/** What `adopt` is asked: the server process, and which of its sockets. */
export interface AdoptRequest {
  label: string;
  pid: number;
  protocol: Protocol;
  at?: { address: string; port: number } | undefined;
  /** Who asks (the control socket's peer): they must be allowed to trace `pid`. */
  caller: { uid: number; gid: number };
}

const WILDCARD = new Set(['0.0.0.0', '::']);

/**
 * Kernel steering: the table compiled into nftables maps that steer each packet to its label's own
 * transparent socket (ruleset.ts), which the label's workers hold and accept on, so the daemon is out of
 * the data path. The daemon serves a label's socket itself only while the label needs it to (version-1
 * workers, an upstream): `refresh` asks `servedByDaemon` for each label.
 */
export class KernelMode extends ListeningMode implements SteeredSockets {
  readonly name = 'kernel';
  readonly #labels: LabelSockets;
  readonly #replies: ReplySockets;
  readonly #options: KernelModeOptions;
  #applied: Steering | undefined;
  /** Changes of the ruleset, one at a time: a store change and an adoption may come together. */
  #queue: Promise<unknown> = Promise.resolve();
  #wanted = new Set<string>();
  #servedByDaemon: (label: string) => boolean = () => false;
  #announce: (socket: LabelSocket) => void = () => {};

  constructor(options: KernelModeOptions) {
    super(options, true);
    this.#options = options;
    this.#labels = new LabelSockets(options.stateDir, options, options.log);
    this.#replies = new ReplySockets(options.log);
  }

  /** Wiring: who decides whether the daemon reads a label's socket, and who tells workers of a new socket. */
  connect(servedByDaemon: (label: string) => boolean, announce: (socket: LabelSocket) => void): void {
    this.#servedByDaemon = servedByDaemon;
    this.#announce = announce;
  }

  async start(table: Table): Promise<void> {
    for (const saved of this.#labels.loadSaved()) {
      if (saved.adoptedFrom === undefined) continue;
      // A server adopted before the restart is taken again from the same process, if it still runs.
      try {
        this.#adoptFound({ label: saved.label, pid: saved.adoptedFrom, protocol: saved.protocol, at: saved }, saved.address);
      } catch (err) {
        this.#options.log.warn({ label: saved.label, pid: saved.adoptedFrom, error: (err as Error).message }, 'adoption not restored');
      }
    }
    await this.prepare(table);
    const failed = this.#labels.failures();
    if (failed.length > 0 && this.#labels.all().length === 0) throw new DispatcherError('ERR_TPROXY', `kernel mode: ${failed[0]}`);
  }

  prepare(table: Table): Promise<void> {
    return this.#serialized(async () => {
      this.#wanted = wanted(table);
      const opened = this.#labels.open(this.#wanted);
      await this.#apply(table);
      for (const s of opened) this.#opened(s);
    });
  }

  follow(): void {
    // After the rules moved on: the sockets no binding needs now close.
    this.#labels.closeUnwanted(this.#wanted);
  }

  warnings(): string[] {
    return this.#labels.failures();
  }

  override problems(): string[] {
    return this.#labels.failures();
  }

  /** Version-1 workers' replies: from a transparent socket bound to exactly the source, as tproxy mode's. */
  replyRoute(local: Address, port: number): ReplyRoute {
    return { fd: this.#replies.get(local, port), v6: local.family === 6, setSource: false };
  }

  override status(): ListenerStatus[] {
    return this.#labels.all().map((s) => {
      const gone = s.adoptedFrom !== undefined && !running(s.adoptedFrom);
      return {
        protocol: s.protocol,
        address: s.address,
        port: s.port,
        state: gone ? 'failed' : 'listening',
        ...(gone
          ? { error: `pid ${s.adoptedFrom} has exited: ${s.label}'s ${s.protocol} traffic is missed (adopt again, or release)` }
          : {}),
        label: s.label,
        ...(s.adoptedFrom === undefined ? {} : { adopted_from: s.adoptedFrom }),
        served_by: s.reader?.watching === true ? 'daemon' : 'workers',
      };
    });
  }

  /** Takeover hand-overs pass no sockets in this mode: the workers hold them, and the next daemon binds beside them. */
  override sockets(): [] {
    return [];
  }

  of(label: string): LabelSocket[] {
    return this.#labels.of(label);
  }

  /** Starts or stops the daemon reading each label socket, as `servedByDaemon` says now. */
  refresh(): void {
    for (const s of this.#labels.all()) {
      if (this.#servedByDaemon(s.label)) s.reader?.watch();
      else s.reader?.unwatch();
    }
  }

  replySocket(label: string, local: { address: string; port: number }): number | string {
    const bound = this.#options.current.table.lookup('udp', local.address, local.port);
    if (bound?.label !== label) return `udp ${local.address} port ${local.port} is not bound to label "${label}"`;
    try {
      // Bound to exactly the address and port (REUSEPORT: each worker of the label gets its own), and
      // marked: the output chain lets what it sends leave only from the label's addresses.
      return native.listenInet(local.address, local.port, 0, LISTEN_UDP | LISTEN_REUSEPORT, labelMark(label));
    } catch (err) {
      return `cannot open a socket on udp ${local.address} port ${local.port}: ${(err as Error).message}`;
    }
  }

  /** Takes a server's listening socket and steers its label there (Tubular's register-pid). */
  adoptServer(request: AdoptRequest): Promise<LabelSocket> {
    const refused = mayTrace(request.caller, request.pid);
    if (refused !== undefined) {
      return Promise.reject(
        new DispatcherError('ERR_NOT_ALLOWED', `uid ${request.caller.uid} may not take sockets of pid ${request.pid}: ${refused}`),
      );
    }
    return this.#serialized(async () => {
      const adopted = this.#adoptFound(request);
      await this.#apply(this.#options.current.table);
      return adopted;
    });
  }

  /** Gives a label's traffic back to the daemon's own socket. */
  release(label: string, protocol: Protocol, family: 4 | 6): Promise<boolean> {
    return this.#serialized(async () => {
      if (!this.#labels.release(label, protocol, family)) return false;
      const opened = this.#labels.open(this.#wanted);
      await this.#apply(this.#options.current.table);
      for (const s of opened) this.#opened(s);
      return true;
    });
  }

  counters(): Promise<SteeringCounters> {
    return readCounters(this.#options.nft);
  }

  override detach(): void {
    super.detach();
    this.#labels.detach();
    this.#applied = undefined; // the rules are the next daemon's
  }

  override async close(): Promise<void> {
    await this.#queue.catch(() => undefined);
    await super.close();
    this.#replies.close();
    // A daemon that never ran the rules (refused at start: another one runs) leaves them, and their state, alone.
    const ran = this.#applied !== undefined;
    if (ran) await removeSteering(this.#options.nft);
    this.#applied = undefined;
    this.#labels.close(ran);
  }

  #adoptFound(request: Omit<AdoptRequest, 'caller'>, address?: string): LabelSocket {
    const found = findServerSocket(request.pid, request.protocol, request.at);
    try {
      native.setTransparent(found.fd, labelMark(request.label));
    } catch (err) {
      throw new DispatcherError('ERR_ADOPT', `cannot make pid ${request.pid}'s socket transparent: ${(err as Error).message}`);
    } finally {
      // The options belong to the socket, not to this copy: the server's own is what the kernel steers to.
      native.close(found.fd);
    }
    const target = address ?? (WILDCARD.has(found.address) ? (found.family === 4 ? '127.0.0.1' : '::1') : found.address);
    const socket = {
      label: request.label,
      protocol: found.protocol,
      family: found.family,
      address: target,
      port: found.port,
      adoptedFrom: request.pid,
    };
    this.#options.log.info({ ...socket, bound: found.address }, 'server socket adopted');
    return this.#labels.adopt(socket);
  }

  async #apply(table: Table): Promise<void> {
    const plan = planSteering(compileTable(table), (label, protocol, family) => this.#labels.target(label, protocol, family));
    if (this.#applied === undefined) await applySteering(plan, this.#options.nft);
    else await updateSteering(this.#applied, plan, this.#options.nft);
    this.#applied = plan;
  }

  #opened(socket: LabelSocket): void {
    if (this.#servedByDaemon(socket.label)) socket.reader?.watch();
    this.#announce(socket);
  }

  #serialized<T>(work: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(work, work);
    this.#queue = next.catch(() => undefined);
    return next;
  }
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

// The labels of each space, cached on the table's unchanged spaces as the compiled entries are.
const spaceLabels = new WeakMap<object, Set<string>>();

/** The (label, protocol, family) keys the table's bindings need a socket for. */
function wanted(table: Table): Set<string> {
  const out = new Set<string>();
  for (const protocol of PROTOCOLS) {
    for (const family of [4, 6] as const) {
      const key = table.spaceKey(protocol, family);
      let labels = spaceLabels.get(key);
      if (labels === undefined) {
        labels = new Set();
        for (const group of table.groups(protocol, family)) for (const b of group.bindings) labels.add(b.label);
        spaceLabels.set(key, labels);
      }
      for (const label of labels) out.add(LabelSockets.key(label, protocol, family));
    }
  }
  return out;
}
