import { type Protocol } from '../bindings/binding.js';
import { ADDRESS } from '../native/records.js';
import { type Table } from '../table/table.js';

/**
 * The label for an address block of an accept or datagram record, looked up without allocating: the
 * record's words are copied into one reused key.
 */
export class RecordLookup {
  readonly #key = new Uint32Array(4);

  label(table: Table, protocol: Protocol, record: Int32Array, at: number): string | undefined {
    const family = record[at + ADDRESS.FAMILY];
    if (family !== 4 && family !== 6) return undefined;
    const key = this.#key;
    const w = at + ADDRESS.WORDS;
    key[0] = record[w]!;
    key[1] = record[w + 1]!;
    key[2] = record[w + 2]!;
    key[3] = record[w + 3]!;
    return table.lookupLabel(protocol, family, key, record[at + ADDRESS.PORT]!);
  }
}
