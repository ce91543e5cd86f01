import { isIP } from 'node:net';
import { posix } from 'node:path';
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
  if (!VERSIONS.includes(pp as ProxyProtocol))
    throw new DispatcherError('ERR_UPSTREAM', `proxy protocol ${JSON.stringify(pp)} is not none, v1 or v2`);
  if (typeof input.address !== 'string')
    throw new DispatcherError('ERR_UPSTREAM', 'an upstream address is unix:/path, tcp:host:port or udp:host:port');
  target(input.address);
  const upstream: Upstream = { label, address: input.address, proxy_protocol: pp as ProxyProtocol };
  // v1 is text naming TCP4 or TCP6 only; a datagram upstream would be told its clients used TCP.
  if (pp === 'v1' && upstreamProtocol(upstream) === 'udp')
    throw new DispatcherError(
      'ERR_UPSTREAM',
      `upstream ${JSON.stringify(input.address)}: PROXY protocol v1 is for TCP only; a udp: upstream takes none or v2`,
    );
  return upstream;
}

/** Where `unix:` upstreams may be unless the daemon is told otherwise (--upstream-dir). */
export const DEFAULT_UPSTREAM_DIR = '/run/dispatcher/upstreams';

/**
 * Refuses a `unix:` upstream outside `allowedDir` (ERR_NOT_ALLOWED, naming the directory); other upstreams
 * pass. The root daemon connects wherever an upstream points, so without this a member of the control
 * group could reach any socket root can (/run/docker.sock). A path with a `..` segment is refused
 * outright: the kernel resolves `..` after following symbolic links, so a lexical check of it proves
 * nothing. Links inside the directory are followed: it must be writable by root alone.
 */
export function checkUpstreamPath(upstream: Upstream, allowedDir: string): Upstream {
  const to = target(upstream.address);
  if (!('path' in to)) return upstream;
  if (!posix.isAbsolute(allowedDir))
    throw new DispatcherError('ERR_CONFIG', `the upstream directory ${JSON.stringify(allowedDir)} is not an absolute path`);
  const dir = posix.normalize(`${allowedDir}/`);
  const path = posix.normalize(to.path);
  if (to.path.split('/').includes('..') || !path.startsWith(dir) || path === dir) {
    throw new DispatcherError(
      'ERR_NOT_ALLOWED',
      `upstream ${JSON.stringify(upstream.address)}: a unix: upstream must be a socket in ${dir} (named without ..)`,
    );
  }
  return upstream;
}

/** The connect target of an address, or ERR_UPSTREAM naming what is wrong with it. */
export function target(address: string): Target {
  if (address.startsWith('unix:')) {
    const path = address.slice(5);
    if (!path.startsWith('/') || path.length > 107)
      throw new DispatcherError('ERR_UPSTREAM', `upstream ${JSON.stringify(address)}: unix: needs an absolute path of at most 107 bytes`);
    return { path };
  }
  const m = /^(?:tcp|udp):(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+|[A-Za-z0-9.-]+)):([0-9]{1,5})$/.exec(address);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (m === null || host === undefined || port < 1 || port > 65535 || (m[1] !== undefined && isIP(host) !== 6)) {
    throw new DispatcherError(
      'ERR_UPSTREAM',
      `upstream ${JSON.stringify(address)} is not unix:/path, tcp:host:port or udp:host:port (IPv6 in brackets: tcp:[::1]:8080)`,
    );
  }
  return { host, port };
}

/** The error for a label with no upstream to remove. */
export function noUpstream(label: string): DispatcherError {
  return new DispatcherError('ERR_NO_UPSTREAM', `label "${label}" has no upstream`);
}
