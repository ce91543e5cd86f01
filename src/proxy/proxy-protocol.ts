import { type RecordAddress } from '../native/records.js';

/**
 * The PROXY protocol header (HAProxy's specification, proxy-protocol.txt), which tells an unmodified server
 * behind the dispatcher who the client was and which address it dialled.
 *
 *   v1: "PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n"
 *   v2: 12-byte signature, 0x21 (version 2, PROXY), family and transport (0x11 TCP4, 0x21 TCP6, 0x12 UDP4,
 *       0x22 UDP6), length, then source address, destination address, source port, destination port.
 */
export type ProxyProtocol = 'none' | 'v1' | 'v2';

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

/**
 * The header for a connection or datagram. When either address is unknown, or the two differ in family,
 * it claims none (the specification's "PROXY UNKNOWN" for v1, the LOCAL command with AF_UNSPEC for v2, as
 * HAProxy sends) rather than a made-up 0.0.0.0: the server then uses the connection's own addresses.
 * v1 names TCP only; parseUpstream refuses it for `udp:` upstreams.
 */
export function proxyHeader(
  version: ProxyProtocol,
  transport: 'tcp' | 'udp',
  client: RecordAddress,
  clientText: string,
  local: RecordAddress,
  localText: string,
): Buffer | undefined {
  if (version === 'none') return undefined;
  const known = client.family !== 0 && client.family === local.family;
  const v6 = client.family === 6;
  if (version === 'v1')
    return Buffer.from(
      known ? `PROXY ${v6 ? 'TCP6' : 'TCP4'} ${clientText} ${localText} ${client.port} ${local.port}\r\n` : 'PROXY UNKNOWN\r\n',
      'latin1',
    );
  const length = !known ? 0 : v6 ? 36 : 12;
  const out = Buffer.alloc(16 + length);
  V2_SIGNATURE.copy(out, 0);
  // Version 2 with PROXY (0x21) or LOCAL (0x20); then family and transport, 0x00 for AF_UNSPEC.
  out[12] = known ? 0x21 : 0x20;
  out[13] = !known ? 0x00 : (v6 ? 0x20 : 0x10) | (transport === 'tcp' ? 0x01 : 0x02);
  out.writeUInt16BE(length, 14);
  if (!known) return out;
  const words = v6 ? 4 : 1;
  for (let i = 0; i < words; i++) {
    out.writeUInt32BE(client.words[i]! >>> 0, 16 + 4 * i);
    out.writeUInt32BE(local.words[i]! >>> 0, 16 + 4 * words + 4 * i);
  }
  out.writeUInt16BE(client.port, 16 + 8 * words);
  out.writeUInt16BE(local.port, 18 + 8 * words);
  return out;
}
