import { type Connection } from '../handoff/connection.js';
import { type Metrics } from '../metrics/metrics.js';
import { EAGAIN } from '../native/index.js';

/** A registered worker, as the registry sees it (the services socket implements it). */
export interface Worker {
  readonly id: number;
  readonly label: string;
  readonly pid: number;
  readonly uid: number;
  /** The services protocol version it speaks: from 2, it serves its label's steered sockets itself. */
  readonly version: number;
  /** Unacknowledged hand-offs allowed. */
  readonly window: number;
  /** Hand-offs sent and not yet acknowledged. */
  readonly inflight: number;
  readonly handoffs: number;
  /** False while at its window, while its socket buffer is full, or while it drains. */
  readonly ready: boolean;
  /** It asked to stop: nothing more is sent to it, datagrams included. */
  readonly draining: boolean;
  /**
   * Takes the connection (it is ready): sent with the others taken in the same turn, and counted as handed
   * off once sent; what cannot be sent comes back through `Registry.returned`.
   */
  send(conn: Connection): void;
  /** Sends a datagram, encoded for its protocol version; bytes sent or -errno. */
  sendDatagram(datagram: OutgoingDatagram): number;
  /** Its socket buffer is full: wait until it is writable. */
  block(): void;
  /** Its socket failed: it leaves. */
  fail(reason: string): void;
}

/** A datagram for a worker: its message as the worker's protocol version has it (a JSON or binary header). */
export interface OutgoingDatagram {
  encoded(version: number): Uint8Array;
}

export interface QueueOptions {
  /** How long a connection waits for a worker (ms); 0 resets at once. */
  timeoutMs: number;
  /** Connections that may wait per label. */
  size: number;
}

/**
 * A label's waiting connections: a FIFO array with a moving head (undici's fixed-queue idea, without
 * the fixed size), so a shift costs nothing and a service restart's backlog drains in order.
 */
class Waiting {
  items: (Connection | undefined)[] = [];
  head = 0;
  timer: NodeJS.Timeout | undefined;

  get length(): number {
    return this.items.length - this.head;
  }

  peek(): Connection | undefined {
    return this.items[this.head];
  }

  /** Puts `c` first in line. */
  unshift(c: Connection): void {
    if (this.head > 0) this.items[--this.head] = c;
    else this.items.unshift(c);
  }

  shift(): Connection | undefined {
    const c = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    }
    return c;
  }
}

/**
 * label -> workers. Picks a worker per connection (round robin over the ready ones), and holds a bounded
 * queue per label while none is ready (a service restarting), resetting past its bounds.
 */
export class Registry {
  readonly #workers = new Map<string, Worker[]>();
  readonly #next = new Map<string, number>();
  readonly #waiting = new Map<string, Waiting>();
  readonly #queue: QueueOptions;
  readonly #metrics: Metrics;

  constructor(queue: QueueOptions, metrics: Metrics) {
    this.#queue = queue;
    this.#metrics = metrics;
  }

  /** Whether `label` has a worker registered (busy or not). */
  has(label: string): boolean {
    return this.#workers.has(label);
  }

  /** The workers of `label`, busy or not. */
  of(label: string): readonly Worker[] {
    return this.#workers.get(label) ?? [];
  }

  /** Called after a worker came or went (kernel steering then decides who reads the label's sockets). */
  onChange: (label: string) => void = () => {};
  readonly #waiters = new Set<() => void>();

  /** Resolves once each of `labels` has a worker, or after `ms`. */
  whenServed(labels: readonly string[], ms: number): Promise<void> {
    return new Promise((resolve) => {
      const check = (): void => {
        if (!labels.every((l) => this.#workers.has(l))) return;
        clearTimeout(timer);
        this.#waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        resolve();
      }, ms);
      timer.unref();
      this.#waiters.add(check);
      check();
    });
  }

  add(worker: Worker): void {
    const list = this.#workers.get(worker.label) ?? [];
    list.push(worker);
    this.#workers.set(worker.label, list);
    this.#metrics.workers(worker.label, list.length);
    this.onChange(worker.label);
    for (const check of [...this.#waiters]) check();
    this.drain(worker.label);
  }

  remove(worker: Worker): void {
    const list = this.#workers.get(worker.label);
    const at = list?.indexOf(worker) ?? -1;
    if (list === undefined || at < 0) return;
    list.splice(at, 1);
    if (list.length === 0) this.#workers.delete(worker.label);
    this.#metrics.workers(worker.label, list.length);
    this.onChange(worker.label);
  }

  workers(): Worker[] {
    return [...this.#workers.values()].flat();
  }

  /** Waiting connections per label. */
  queued(): Record<string, number> {
    return Object.fromEntries([...this.#waiting].filter(([, q]) => q.length > 0).map(([label, q]) => [label, q.length]));
  }

  /** Hands `conn` to a worker of `label`, or queues it, or resets it. */
  dispatch(label: string, conn: Connection): void {
    const waiting = this.#waiting.get(label);
    // Behind others already waiting: order is kept.
    if ((waiting === undefined || waiting.length === 0) && this.#handoff(label, conn)) return;
    this.#enqueue(label, conn);
  }

  /**
   * Sends a datagram to the next worker of `label`. Datagrams are not queued and not retried on another
   * worker: a full worker drops it, so one slow service never holds up the others' datagrams. A draining
   * worker was promised nothing after "drained": with only those, the label has no worker.
   */
  datagram(label: string, message: OutgoingDatagram): 'sent' | 'no_worker' | 'full' {
    const list = this.#workers.get(label);
    if (list === undefined) return 'no_worker';
    const n = list.length;
    const start = this.#next.get(label) ?? 0;
    let i = 0;
    while (i < n && list[(start + i) % n]!.draining) i++;
    if (i === n) return 'no_worker';
    const at = (start + i) % n;
    this.#next.set(label, (at + 1) % n);
    const worker = list[at]!;
    const rc = worker.sendDatagram(message);
    if (rc >= 0) return 'sent';
    if (rc === -EAGAIN) worker.block();
    else worker.fail(`datagram failed with errno ${-rc}`);
    return 'full';
  }

  /** Sends waiting connections while workers of `label` are ready: after a register, an ack, a writable. */
  drain(label: string): void {
    const waiting = this.#waiting.get(label);
    if (waiting === undefined) return;
    for (let c = waiting.peek(); c !== undefined && this.#handoff(label, c); c = waiting.peek()) waiting.shift();
    this.#queueChanged(label, waiting);
  }

  /**
   * Connections a worker of `label` took and could not send (its socket full, or failed), in the order they
   * came: each goes to another ready worker, or first in line in the queue (they came before everything
   * waiting), or is reset as the queue's bounds say.
   */
  returned(label: string, conns: readonly Connection[]): void {
    const left = conns.filter((c) => !this.#handoff(label, c));
    for (let i = left.length - 1; i >= 0; i--) this.#enqueue(label, left[i]!, true);
  }

  /** Takes every waiting connection out of the queues (a hand-over gives them to the new daemon). */
  takeWaiting(): { label: string; conn: Connection }[] {
    const out: { label: string; conn: Connection }[] = [];
    for (const [label, waiting] of this.#waiting) {
      for (let c = waiting.shift(); c !== undefined; c = waiting.shift()) out.push({ label, conn: c });
      this.#queueChanged(label, waiting);
    }
    return out;
  }

  /** Resets every waiting connection (shutdown). */
  close(): void {
    for (const [label, waiting] of this.#waiting) {
      for (let c = waiting.shift(); c !== undefined; c = waiting.shift()) c.reset();
      this.#queueChanged(label, waiting);
    }
  }

  #handoff(label: string, conn: Connection): boolean {
    const list = this.#workers.get(label);
    if (list === undefined) return false;
    const n = list.length;
    const start = this.#next.get(label) ?? 0;
    for (let i = 0; i < n; i++) {
      const worker = list[(start + i) % n]!;
      if (!worker.ready) continue;
      worker.send(conn);
      this.#next.set(label, (start + i + 1) % n);
      return true;
    }
    return false;
  }

  /** Queues `conn` last (or `first`), or resets it past the queue's bounds. */
  #enqueue(label: string, conn: Connection, first = false): void {
    let waiting = this.#waiting.get(label);
    if (this.#queue.timeoutMs <= 0 || this.#queue.size <= 0 || (waiting?.length ?? 0) >= this.#queue.size) {
      conn.reset();
      this.#metrics.reset(conn.protocol, label, this.#queue.timeoutMs <= 0 || this.#queue.size <= 0 ? 'no_worker' : 'queue_full');
      return;
    }
    if (waiting === undefined) this.#waiting.set(label, (waiting = new Waiting()));
    conn.deadline = performance.now() + this.#queue.timeoutMs;
    // The queue expires from its head: a connection put first must not outlast those behind it.
    const head = waiting.peek();
    if (first && head !== undefined) conn.deadline = Math.min(conn.deadline, head.deadline);
    if (first) waiting.unshift(conn);
    else waiting.items.push(conn);
    this.#queueChanged(label, waiting);
  }

  /** Keeps the gauge and the expiry timer (one per label, for the oldest) in step with the queue. */
  #queueChanged(label: string, waiting: Waiting): void {
    this.#metrics.queueDepth(label, waiting.length);
    const head = waiting.peek();
    if (head === undefined) {
      clearTimeout(waiting.timer);
      waiting.timer = undefined;
      this.#waiting.delete(label);
      return;
    }
    if (waiting.timer !== undefined) return;
    waiting.timer = setTimeout(
      () => {
        waiting.timer = undefined;
        const now = performance.now();
        for (let c = waiting.peek(); c !== undefined && c.deadline <= now; c = waiting.peek()) {
          waiting.shift();
          c.reset();
          this.#metrics.reset(c.protocol, label, 'queue_timeout');
        }
        this.#queueChanged(label, waiting);
      },
      Math.max(1, head.deadline - performance.now()),
    );
  }
}
