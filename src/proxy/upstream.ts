import { isIP } from 'node:net';
import { parseLabel } from '../bindings/binding.js';
import { DispatcherError } from '../errors.js';
import { type ProxyProtocol } from './proxy-protocol.js';

/**
 * Where a label's connections go when no worker of it is registered: an unmodified server on a Unix socket
 * or a TCP address, told the client's address with the PROXY protocol if it reads it.
 */
export interface Upstream {
  label: string;
  /** `unix:/path` or `tcp:host:port` for TCP connections; `udp:host:port` for datagrams (an IPv6 host in brackets). */
  address: string;
  proxy_protocol: ProxyProtocol;
}

export type Target = { path: string } | { host: string; port: number };

/** Which traffic an upstream serves: `udp:` datagrams, the others connections. */
export function upstreamProtocol(u: Upstream): 'tcp' | 'udp' {
  return u.address.startsWith('udp:') ? 'udp' : 'tcp';
}

const VERSIONS: readonly ProxyProtocol[] = ['none', 'v1', 'v2'];

export function parseUpstream(input: { label?: unknown; address?: unknown; proxy_protocol?: unknown }): Upstream {
  const label = parseLabel(input.label);
  const pp = input.proxy_protocol ?? 'none';
  if (!VERSIONS.includes(pp as ProxyProtocol)) throw new DispatcherError('ERR_UPSTREAM', `proxy protocol ${JSON.stringify(pp)} is not none, v1 or v2`);
  if (typeof input.address !== 'string') throw new DispatcherError('ERR_UPSTREAM', 'an upstream address is unix:/path, tcp:host:port or udp:host:port');
  target(input.address);
  return { label, address: input.address, proxy_protocol: pp as ProxyProtocol };
}

/** The connect target of an address, or ERR_UPSTREAM naming what is wrong with it. */
export function target(address: string): Target {
  if (address.startsWith('unix:')) {
    const path = address.slice(5);
    if (!path.startsWith('/') || path.length > 107) throw new DispatcherError('ERR_UPSTREAM', `upstream ${JSON.stringify(address)}: unix: needs an absolute path of at most 107 bytes`);
    return { path };
  }
  const m = /^(?:tcp|udp):(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+|[A-Za-z0-9.-]+)):([0-9]{1,5})$/.exec(address);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (m === null || host === undefined || port < 1 || port > 65535 || (m[1] !== undefined && isIP(host) !== 6)) {
    throw new DispatcherError('ERR_UPSTREAM', `upstream ${JSON.stringify(address)} is not unix:/path, tcp:host:port or udp:host:port (IPv6 in brackets: tcp:[::1]:8080)`);
  }
  return { host, port };
}
