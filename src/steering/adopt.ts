import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { formatAddress, parseAddress } from '../bindings/address.js';
import { type Protocol } from '../bindings/binding.js';
import { asError, DispatcherError } from '../errors.js';
import { native } from '../native/index.js';
import { ADDRESS, addressText, portAt } from '../native/records.js';

/**
 * Adoption: kernel steering may deliver a label's traffic straight to a server's own socket, taken from its
 * process with pidfd_getfd rather than opened by the dispatcher. Here the socket is found and duplicated;
 * making it transparent and steering to it are the caller's.
 */

/** A server's socket, duplicated from its process: `fd` is the caller's to close. */
export interface AdoptedSocket {
  fd: number;
  family: 4 | 6;
  protocol: Protocol;
  address: string;
  port: number;
}

// Reused by serverSocket: it runs synchronously, once per descriptor.
const NAME = new Int32Array(ADDRESS.SIZE);

/**
 * The one listening TCP socket (`tcp`) or bound UDP socket (`udp`) of process `pid`, at `at` if given: bound
 * to that address, or else to the wildcard address at that port. Sockets at the same address and port
 * count as one, the first by descriptor number (copies made by dup(), and SO_REUSEPORT siblings too).
 * Throws ERR_ADOPT when there is none, or several that `at` does not choose between.
 */
export function findServerSocket(pid: number, protocol: Protocol, at?: { address: string; port: number }): AdoptedSocket {
  // The address as getsockname gives it back (addressText's canonical text; IPv4-mapped as IPv4).
  const target = at === undefined ? undefined : { ...parseAddress(at.address), port: at.port };
  const targetText = target === undefined ? '' : formatAddress(target.family, target.words);
  const found: AdoptedSocket[] = [];
  try {
    for (const fd of socketDescriptors(pid)) {
      const socket = serverSocket(pid, fd, protocol);
      if (socket === undefined) continue;
      if (found.some((s) => s.address === socket.address && s.port === socket.port)) native.close(socket.fd);
      else found.push(socket);
    }
  } catch (err) {
    for (const s of found) native.close(s.fd);
    throw err;
  }
  const atPort = (match: (s: AdoptedSocket) => boolean): AdoptedSocket[] => found.filter((s) => s.port === target?.port && match(s));
  // A socket bound to the very address first: naming it chooses it over a wildcard one at the same port.
  const exact = atPort((s) => s.address === targetText);
  const matches = target === undefined ? found : exact.length > 0 ? exact : atPort((s) => wildcardFor(s, target.family));
  const chosen = matches.length === 1 ? matches[0] : undefined;
  for (const s of found) if (s !== chosen) native.close(s.fd);
  if (chosen !== undefined) return chosen;
  const kind = protocol === 'tcp' ? 'listening TCP' : 'bound UDP';
  const list = (sockets: AdoptedSocket[]): string => sockets.map((s) => endpoint(s.address, s.port)).join(', ');
  if (matches.length === 0) {
    const others = found.length === 0 ? '' : ` (it has ${list(found)})`;
    const where = target === undefined ? '' : ` at ${endpoint(targetText, target.port)}`;
    throw new DispatcherError('ERR_ADOPT', `process ${pid} has no ${kind} socket${where}${others}`);
  }
  throw new DispatcherError('ERR_ADOPT', `process ${pid} has several ${kind} sockets (${list(matches)}): name one as address:port`);
}

/** The descriptors of `pid` that are sockets, in order. */
function socketDescriptors(pid: number): number[] {
  let names: string[];
  try {
    names = readdirSync(`/proc/${pid}/fd`);
  } catch (err) {
    throw new DispatcherError('ERR_ADOPT', `process ${pid}: ${codeOf(err) === 'ENOENT' ? 'no such process' : asError(err).message}`);
  }
  return names
    .filter((name) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${name}`).startsWith('socket:[');
      } catch {
        return false; // closed since the listing
      }
    })
    .map(Number)
    .sort((a, b) => a - b);
}

/** A duplicate of descriptor `fd` of `pid` if it is the kind of server socket wanted; otherwise none is kept. */
function serverSocket(pid: number, fd: number, protocol: Protocol): AdoptedSocket | undefined {
  let dup: number;
  try {
    dup = native.pidfdGetfd(pid, fd);
  } catch (err) {
    if (codeOf(err) === 'EBADF') return undefined; // closed since the listing
    const reason = codeOf(err) === 'ESRCH' ? 'no such process' : asError(err).message;
    throw new DispatcherError('ERR_ADOPT', `cannot take descriptor ${fd} of process ${pid}: ${reason}`);
  }
  let socket: AdoptedSocket | undefined;
  try {
    const [family, type, listening] = native.socketInfo(dup);
    const wanted = protocol === 'tcp' ? type === 1 && listening === 1 : type === 2;
    // An unbound UDP socket has port 0: it serves nothing.
    if ((family === 4 || family === 6) && wanted && native.sockName(dup, NAME) === 0 && portAt(NAME, 0) !== 0)
      socket = { fd: dup, family, protocol, address: addressText(NAME, 0), port: portAt(NAME, 0) };
  } catch {
    // Not a socket after all: the number was reused since the listing.
  }
  if (socket === undefined) native.close(dup);
  return socket;
}

/** Whether `s` is bound to the wildcard address and so receives `family`'s traffic: `::` is dual-stack. */
function wildcardFor(s: AdoptedSocket, family: 4 | 6): boolean {
  return s.address === '::' || (s.address === '0.0.0.0' && family === 4);
}

function endpoint(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

function codeOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException).code;
}

/**
 * Whether a caller of the control API with these credentials may take the sockets of `pid`: undefined if
 * so, else why not. The daemon is root and could take any; this is the check ptrace's
 * PTRACE_MODE_REALCREDS starts with: root may, anyone else only if its uid is the target's real, effective
 * and saved uid and its gid the target's real, effective and saved gid.
 */
export function mayTrace(caller: { uid: number; gid: number }, pid: number): string | undefined {
  if (caller.uid === 0) return undefined;
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch (err) {
    if (codeOf(err) === 'ENOENT') return 'no such process';
    throw err;
  }
  for (const [field, name, id] of [
    ['Uid', 'uid', caller.uid],
    ['Gid', 'gid', caller.gid],
  ] as const) {
    const line = new RegExp(`^${field}:\\s+(\\d+)\\s+(\\d+)\\s+(\\d+)`, 'm').exec(status);
    const ids = line === null ? [] : line.slice(1, 4).map(Number);
    if (ids.length !== 3 || ids.some((i) => i !== id))
      return `${name} ${id} is not process ${pid}'s real, effective and saved ${name}s (${ids.join(', ')})`;
  }
  return undefined;
}
