import { type Logger } from 'pino';

/**
 * At most `perSecond` warnings a second; the rest are counted and summed up in one line when the second
 * ends. What a local user can make the daemon log must be bounded: one line per refused peer would let
 * anyone fill the journal (and spend the loop on formatting).
 */
export class LogThrottle {
  readonly #log: Logger;
  readonly #perSecond: number;
  #windowStart = -Infinity;
  #logged = 0;
  #suppressed = 0;

  constructor(log: Logger, perSecond: number) {
    this.#log = log;
    this.#perSecond = perSecond;
  }

  warn(fields: Record<string, unknown>, message: string): void {
    const now = performance.now();
    if (now - this.#windowStart >= 1000) {
      this.#windowStart = now;
      this.#logged = 0;
    }
    if (this.#logged < this.#perSecond) {
      this.#logged++;
      this.#log.warn(fields, message);
      return;
    }
    // The first one suppressed in this second schedules the summary for its end.
    if (this.#suppressed++ === 0) setTimeout(() => this.#summarize(), Math.max(1, this.#windowStart + 1000 - now)).unref();
  }

  #summarize(): void {
    this.#log.warn({ suppressed: this.#suppressed }, `services socket: ${this.#suppressed} more warnings like the above suppressed`);
    this.#suppressed = 0;
  }
}
