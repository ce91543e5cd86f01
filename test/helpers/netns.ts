import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const PROBE = fileURLToPath(new URL('../fixtures/probe.mjs', import.meta.url));

function run(cmd: string, args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

async function must(cmd: string, ...args: string[]): Promise<string> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/**
 * Two network namespaces joined by a veth pair:
 *
 *   client ns  veth 192.0.2.2/24, 2001:db8::2/64 ──── veth 192.0.2.1/24, 2001:db8::1/64  host ns
 *              routes to the bound prefixes via the host      AnyIP: 198.51.100.0/24, 203.0.113.0/24 and
 *                                                             2001:db8:1::/64 are local (dev lo)
 *
 * The daemon runs in the host namespace; clients in the client namespace, so their packets arrive from
 * outside and pass nftables' prerouting hook, as real traffic does. Only documentation ranges are used.
 */
export interface Namespaces {
  host: string;
  client: string;
  /** Runs a command in the host namespace. */
  inHost(...args: string[]): string[];
  /** Probes targets (`tcp ADDRESS PORT`, `udp ADDRESS PORT`, ...) from the client namespace. */
  probe(...targets: (string | number)[]): Promise<{ target: string; line?: string; error?: string; from?: string }[]>;
  /** Runs a command in the client namespace. */
  client_(cmd: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Runs nft in the host namespace. */
  nft(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  remove(): Promise<void>;
}

export async function createNamespaces(): Promise<Namespaces> {
  const id = `${process.pid.toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
  const host = `disp-h-${id}`;
  const client = `disp-c-${id}`;
  const remove = async (): Promise<void> => {
    await run('ip', ['netns', 'del', host]);
    await run('ip', ['netns', 'del', client]);
  };
  try {
    await must('ip', 'netns', 'add', host);
    await must('ip', 'netns', 'add', client);
    const h = (...a: string[]): Promise<string> => must('ip', 'netns', 'exec', host, ...a);
    const c = (...a: string[]): Promise<string> => must('ip', 'netns', 'exec', client, ...a);
    await must('ip', 'link', 'add', `vh${id}`.slice(0, 15), 'netns', host, 'type', 'veth', 'peer', 'name', `vc${id}`.slice(0, 15), 'netns', client);
    const vh = `vh${id}`.slice(0, 15);
    const vc = `vc${id}`.slice(0, 15);
    for (const [ns, dev, v4, v6] of [
      [h, vh, '192.0.2.1/24', '2001:db8::1/64'],
      [c, vc, '192.0.2.2/24', '2001:db8::2/64'],
    ] as const) {
      await ns('ip', 'link', 'set', 'lo', 'up');
      await ns('ip', 'addr', 'add', v4, 'dev', dev);
      await ns('ip', '-6', 'addr', 'add', v6, 'dev', dev, 'nodad');
      await ns('ip', 'link', 'set', dev, 'up');
    }
    for (const prefix of ['198.51.100.0/24', '203.0.113.0/24']) {
      await h('ip', 'route', 'add', 'local', prefix, 'dev', 'lo');
      await c('ip', 'route', 'add', prefix, 'via', '192.0.2.1');
    }
    await h('ip', '-6', 'route', 'add', 'local', '2001:db8:1::/64', 'dev', 'lo');
    await c('ip', '-6', 'route', 'add', '2001:db8:1::/64', 'via', '2001:db8::1');
  } catch (err) {
    await remove();
    throw err;
  }
  return {
    host,
    client,
    inHost: (...args) => ['ip', 'netns', 'exec', host, ...args],
    probe: async (...targets) => {
      const r = await run('ip', ['netns', 'exec', client, process.execPath, PROBE, ...targets.map(String)]);
      if (r.code !== 0) throw new Error(`probe failed: ${r.stderr}`);
      return JSON.parse(r.stdout);
    },
    client_: (cmd, ...args) => run('ip', ['netns', 'exec', client, cmd, ...args]),
    nft: (...args) => run('ip', ['netns', 'exec', host, 'nft', ...args]),
    remove,
  };
}
