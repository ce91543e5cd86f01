/** How long a UDP flow may be answered after its last datagram (DNS, QUIC, game traffic: well under it). */
export const FLOW_IDLE_MS = 60_000;
/**
 * Flows remembered at most (about 150 bytes each: ~10 MB). Past it the older half is forgotten rather than
 * a new flow refused: a flood of spoofed sources can then only make a quiet flow's late reply be refused,
 * while every flow that received a datagram since the last turn over stays answerable.
 */
export const MAX_FLOWS = 65_536;

/** [family, w0..w3, port]: a datagram record's address (see native/index.ts), or a parsed one. */
type Words = ArrayLike<number>;

/**
 * The UDP flows each label received recently, keyed on (client address, client port, local address, local
 * port): a worker may reply only on one of them, so it can neither send from an address that received
 * nothing (a non-local one included) nor to a host that never sent it anything.
 *
 * Two generations instead of a recency list: a flow is added to (or refreshed in) the current one, which
 * becomes the previous one every FLOW_IDLE_MS or at MAX_FLOWS / 2 entries, dropping the one before. No
 * per-datagram reordering and no sweep: a refresh writes a number in place.
 */
export class UdpFlows {
  #current = new Map<string, { label: string; seen: number }>();
  #previous = new Map<string, { label: string; seen: number }>();
  #turned = 0;

  get size(): number {
    return this.#current.size + this.#previous.size;
  }

  /** A datagram from the client at `r[c..c+5]` to the local address at `r[l..l+5]` went to `label`'s worker. */
  received(label: string, r: Words, c: number, l: number, now: number): void {
    const key = flowKey(r[c]!, r, c + 1, r[c + 5]!, r[l]!, r, l + 1, r[l + 5]!);
    const flow = this.#current.get(key);
    if (flow !== undefined) {
      flow.label = label;
      flow.seen = now;
      return;
    }
    if (now - this.#turned >= FLOW_IDLE_MS || this.#current.size >= MAX_FLOWS / 2) {
      this.#previous = this.#current;
      this.#current = new Map();
      this.#turned = now;
    }
    this.#current.set(key, { label, seen: now });
  }

  /** Whether `label` received a datagram from `client` to `local` within FLOW_IDLE_MS. */
  allows(
    label: string,
    client: { family: number; words: Words },
    clientPort: number,
    local: { family: number; words: Words },
    localPort: number,
    now: number,
  ): boolean {
    const key = flowKey(client.family, client.words, 0, clientPort, local.family, local.words, 0, localPort);
    const flow = this.#current.get(key) ?? this.#previous.get(key);
    return flow !== undefined && flow.label === label && now - flow.seen <= FLOW_IDLE_MS;
  }
}

/**
 * The flow as 19 UTF-16 code units (families, ports, and each address word as two halves): about five times
 * cheaper than decimal text, and this runs once per datagram. Missing words (an IPv4 address parsed as one
 * word) are 0, as in a datagram record.
 */
function flowKey(cf: number, cw: Words, ci: number, cp: number, lf: number, lw: Words, li: number, lp: number): string {
  const w = (words: Words, i: number): number => (i < words.length ? words[i]! : 0);
  const [a, b, c, d, e, f, g, h] = [
    w(cw, ci),
    w(cw, ci + 1),
    w(cw, ci + 2),
    w(cw, ci + 3),
    w(lw, li),
    w(lw, li + 1),
    w(lw, li + 2),
    w(lw, li + 3),
  ];
  return String.fromCharCode(
    cf | (lf << 4),
    a >>> 16,
    a & 0xffff,
    b >>> 16,
    b & 0xffff,
    c >>> 16,
    c & 0xffff,
    d >>> 16,
    d & 0xffff,
    cp,
    e >>> 16,
    e & 0xffff,
    f >>> 16,
    f & 0xffff,
    g >>> 16,
    g & 0xffff,
    h >>> 16,
    h & 0xffff,
    lp,
  );
}
