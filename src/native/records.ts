import { formatAddress } from '../bindings/address.js';

/*
 * The records the addon and JavaScript share in Int32Arrays, mirrored by native/records.h. Offsets are read
 * and written here only; index.ts checks the addon's record sizes against these layouts at start-up.
 *
 *   address block (6)        0        1    2    3    4    5
 *                          [ family | w0 | w1 | w2 | w3 | port ]
 *     family 4 or 6 (0: unknown); words big-endian as the table keys them, IPv4 in w0 (w1..w3 zero).
 *
 *   accept record (13)       0    1 .. 6        7 .. 12
 *     acceptBatch          [ fd | local block | peer block ]          local: the address the client dialled
 *
 *   datagram record (13)     0        1 .. 6         7 .. 12
 *     recvDatagrams        [ length | source block | destination block ]   length -EMSGSIZE: truncated
 *
 *   send record (14)         0        1        2 .. 7              8 .. 13
 *     sendDatagrams        [ offset | length | destination block | source block ]   source family 0: the socket's own
 *
 *   credential record (4)    0    1     2     3
 *     acceptUnix           [ fd | pid | uid | gid ]
 */

export const ADDRESS = { FAMILY: 0, WORDS: 1, PORT: 5, SIZE: 6 } as const;
export const ACCEPT = { FD: 0, LOCAL: 1, PEER: 7, SIZE: 13 } as const;
export const DATAGRAM = { LENGTH: 0, SOURCE: 1, DESTINATION: 7, SIZE: 13 } as const;
export const SEND = { OFFSET: 0, LENGTH: 1, DESTINATION: 2, SOURCE: 8, SIZE: 14 } as const;
export const CREDENTIAL = { FD: 0, PID: 1, UID: 2, GID: 3, SIZE: 4 } as const;

/** The record sizes the addon exports. */
export interface RecordSizes {
  ACCEPT_RECORD: number;
  DATAGRAM_RECORD: number;
  SEND_RECORD: number;
}

/** Throws unless the addon's record sizes are those of the layouts above (an addon built from other sources). */
export function checkRecordSizes(sizes: RecordSizes): void {
  const expected: RecordSizes = { ACCEPT_RECORD: ACCEPT.SIZE, DATAGRAM_RECORD: DATAGRAM.SIZE, SEND_RECORD: SEND.SIZE };
  for (const name of Object.keys(expected) as (keyof RecordSizes)[]) {
    if (sizes[name] !== expected[name])
      throw new Error(`native addon: ${name} is ${sizes[name]}, src/native/records.ts expects ${expected[name]}`);
  }
}

/** An address block as the records hold it: family 4 or 6 (0: unknown, getsockname failed), big-endian words, port. */
export interface RecordAddress {
  family: 0 | 4 | 6;
  words: ArrayLike<number>;
  port: number;
}

/** The address block at `at`, keeping family 0 ("unknown") as such; `words` is a view of the record. */
export function addressAt(record: Int32Array, at: number): RecordAddress {
  const family = record[at + ADDRESS.FAMILY];
  const words = at + ADDRESS.WORDS;
  return { family: family === 4 || family === 6 ? family : 0, words: record.subarray(words, words + 4), port: portAt(record, at) };
}

/** The text of the address block at `at` (an unknown family reads as IPv4). */
export function addressText(record: Int32Array, at: number): string {
  const w = at + ADDRESS.WORDS;
  const family = record[at + ADDRESS.FAMILY] === 6 ? 6 : 4;
  return formatAddress(family, [record[w]! >>> 0, record[w + 1]! >>> 0, record[w + 2]! >>> 0, record[w + 3]! >>> 0]);
}

/** The port of the address block at `at`. */
export function portAt(record: Int32Array, at: number): number {
  return record[at + ADDRESS.PORT]!;
}

/** Writes an address block at `at`, as the native layer takes addresses; missing words are 0. */
export function putAddress(record: Int32Array, at: number, family: number, words: ArrayLike<number>, port: number): void {
  record[at + ADDRESS.FAMILY] = family;
  for (let i = 0; i < 4; i++) record[at + ADDRESS.WORDS + i] = i < words.length ? words[i]! | 0 : 0;
  record[at + ADDRESS.PORT] = port;
}

/** Record `i` of a batch of records of `size` int32s, as a view. */
export function recordIn(batch: Int32Array, i: number, size: number): Int32Array {
  return batch.subarray(i * size, (i + 1) * size);
}

/** The descriptor of accept record `i` of a batch. */
export function acceptFd(batch: Int32Array, i = 0): number {
  return batch[i * ACCEPT.SIZE + ACCEPT.FD]!;
}

/** Puts a descriptor into an accept record (one handed over from another daemon takes the old one's place). */
export function putAcceptFd(record: Int32Array, fd: number): void {
  record[ACCEPT.FD] = fd;
}

/** A datagram record's length: the datagram's bytes, or -EMSGSIZE when it was truncated. */
export function datagramLength(record: Int32Array): number {
  return record[DATAGRAM.LENGTH]!;
}

/** Writes where a send record's datagram lies in the data: `length` bytes from `offset`. */
export function putSendData(record: Int32Array, offset: number, length: number): void {
  record[SEND.OFFSET] = offset;
  record[SEND.LENGTH] = length;
}

/** The connecting process of a credential record (acceptUnix), and the descriptor accepted from it. */
export function credentialAt(record: Int32Array): { fd: number; pid: number; uid: number; gid: number } {
  return { fd: record[CREDENTIAL.FD]!, pid: record[CREDENTIAL.PID]!, uid: record[CREDENTIAL.UID]!, gid: record[CREDENTIAL.GID]! };
}
