import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const PROBE = fileURLToPath(new URL('../fixtures/probe.mjs', import.meta.url));
const NETNS = fileURLToPath(new URL('../../scripts/netns.sh', import.meta.url));

function run(cmd: string, args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** What test/fixtures/probe.mjs prints for each target, in one JSON array. */
export interface ProbeResult {
  target: string;
  line?: string;
  error?: string;
  from?: string;
}

/** Two network namespaces joined by a veth pair, made by scripts/netns.sh (which draws them). */
export interface Namespaces {
  host: string;
  client: string;
  /** Runs a command in the host namespace. */
  inHost(...args: string[]): string[];
  /** Probes targets (`tcp ADDRESS PORT`, `udp ADDRESS PORT`, ...) from the client namespace. */
  probe(...targets: (string | number)[]): Promise<ProbeResult[]>;
  /** Runs a command in the client namespace. */
  client_(cmd: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Runs nft in the host namespace. */
  nft(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  remove(): Promise<void>;
}

/** `prefix` starts the id (`kt`: disp-h-kt...), so a file's namespaces can be told apart from the others'. */
export async function createNamespaces(prefix = ''): Promise<Namespaces> {
  const id = `${prefix}${process.pid.toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
  const host = `disp-h-${id}`;
  const client = `disp-c-${id}`;
  const up = await run(NETNS, ['up', id]);
  if (up.code !== 0) throw new Error(`scripts/netns.sh up: ${up.stderr}`);
  const remove = async (): Promise<void> => void (await run(NETNS, ['down', id]));
  return {
    host,
    client,
    inHost: (...args) => ['ip', 'netns', 'exec', host, ...args],
    probe: async (...targets) => {
      const r = await run('ip', ['netns', 'exec', client, process.execPath, PROBE, ...targets.map(String)]);
      if (r.code !== 0) throw new Error(`probe failed: ${r.stderr}`);
      return JSON.parse(r.stdout) as ProbeResult[];
    },
    client_: (cmd, ...args) => run('ip', ['netns', 'exec', client, cmd, ...args]),
    nft: (...args) => run('ip', ['netns', 'exec', host, 'nft', ...args]),
    remove,
  };
}
