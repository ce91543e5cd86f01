// npm run bench:udp [-- --quick]
//
// UDP datagrams per second through the dispatcher versus a direct UDP echo service, same run, interleaved
// rounds. The client keeps 64 datagrams of 64 bytes in flight and counts echoes; the daemon's CPU per
// datagram comes from /proc (a datagram crosses the daemon twice: to the worker and the reply back).
// Then bursts: 2,000 datagrams sent as fast as one loop sends them to one bound port, and the echoes
// counted, direct versus through the dispatcher: a burst a direct server absorbs must not be lost.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { udpBurst, udpEchoRate } from './clients.js';
import { interleaved, median, si, writeResult } from './common.js';
import { bind, cpuSeconds, daemon, start, status, stopAll } from './harness.js';

const QUICK = process.argv.includes('--quick');
const ROUNDS = 3;
const SECONDS = QUICK ? 1 : 5;
const IN_FLIGHT = 64;
const BURST = 2000;
const BURST_ROUNDS = QUICK ? 3 : 5;
const BURST_SETTLE_MS = 1000;
const ECHO = fileURLToPath(new URL('./services/udp-echo.mjs', import.meta.url));

/** @param {number} port */
const load = (port) => udpEchoRate('127.0.0.1', port, { seconds: SECONDS, inFlight: IN_FLIGHT, local: '127.0.0.1' });

const dir = await mkdtemp(join(tmpdir(), 'dispatcher-bench-'));
try {
  const d = await daemon(dir);
  const ports = { direct: 25353, dispatched: 25354 };
  await bind(d.client, 'echo', 'udp', '127.0.0.1', ports.dispatched);
  await Promise.all([
    start([process.execPath, ECHO, 'direct', ports.direct]),
    start([process.execPath, ECHO, 'attach', 'echo', d.services]),
  ]);
  /** @type {number[]} daemon CPU seconds per datagram, a round each */
  const cpu = [];
  const summary = await interleaved(
    {
      'UDP echo, direct': () => load(ports.direct),
      'UDP echo, dispatcher': async () => {
        const c0 = await cpuSeconds(d.pid);
        const s0 = (await status(d.client)).connections.datagrams;
        const rate = await load(ports.dispatched);
        const s1 = (await status(d.client)).connections.datagrams;
        cpu.push(((await cpuSeconds(d.pid)) - c0) / (s1 - s0));
        return rate;
      },
    },
    ROUNDS,
  );
  /** @type {{ direct: number[], dispatched: number[], sendMs: number[] }} */
  const bursts = { direct: [], dispatched: [], sendMs: [] };
  for (let round = 0; round < BURST_ROUNDS; round++) {
    for (const [name, port] of /** @type {const} */ ([
      ['direct', ports.direct],
      ['dispatched', ports.dispatched],
    ])) {
      const { answered, sendMs } = await udpBurst('127.0.0.1', port, { count: BURST, settleMs: BURST_SETTLE_MS, local: '127.0.0.1' });
      bursts[name].push(answered / BURST);
      bursts.sendMs.push(sendMs);
    }
  }
  const burst = { direct: median(bursts.direct), dispatched: median(bursts.dispatched), send_ms: median(bursts.sendMs) };
  const direct = summary['UDP echo, direct'];
  const dispatched = summary['UDP echo, dispatcher'];
  const usPerDatagram = median(cpu) * 1e6;
  console.log(`\nMedians of ${ROUNDS} interleaved rounds, ${SECONDS} s each, ${IN_FLIGHT} datagrams in flight\n`);
  console.log(`  UDP echo, direct       ${si(direct.median).padStart(7)}/s  (${si(direct.min)}-${si(direct.max)})`);
  console.log(
    `  UDP echo, dispatcher   ${si(dispatched.median).padStart(7)}/s  (${si(dispatched.min)}-${si(dispatched.max)})  daemon ${usPerDatagram.toFixed(1)} µs CPU per datagram and its reply`,
  );
  console.log(`\n  dispatcher / direct = ${(dispatched.median / direct.median).toFixed(2)}  (target at least 0.60)`);
  const pct = (/** @type {number} */ x) => `${(x * 100).toFixed(1)}%`;
  console.log(
    `\n  burst of ${BURST} in ${burst.send_ms.toFixed(1)} ms, answered (median of ${BURST_ROUNDS}): direct ${pct(burst.direct)}, dispatcher ${pct(burst.dispatched)}`,
  );
  console.log(
    `\n${await writeResult('udp', { quick: QUICK, rounds: ROUNDS, seconds: SECONDS, in_flight: IN_FLIGHT, direct, dispatched, daemon_us_per_datagram: usPerDatagram, burst: { count: BURST, ...burst } })}`,
  );
} finally {
  stopAll();
  await rm(dir, { recursive: true, force: true });
}
