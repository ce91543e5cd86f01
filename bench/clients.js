// Clients the benchmarks run in process, or as a process of their own when they must run elsewhere (in
// the client network namespace, under ip netns exec):
//   node bench/clients.js udp ADDRESS PORT SECONDS IN_FLIGHT   prints the echoes per second
//   node bench/clients.js probe                               reads "ADDRESS PORT [EXPECT]" lines; for each
//       prints "armed", then dials ADDRESS:PORT every millisecond until one answers an HTTP request (with a
//       response holding EXPECT), and prints "served ATTEMPTS" (or "timeout" after 10 s)
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/**
 * Echoes per second from `address`:`port` with `inFlight` datagrams of 64 bytes outstanding, over `seconds`.
 * @param {string} address
 * @param {number} port
 * @param {{ seconds: number, inFlight: number, local?: string }} options `local`: the address to send from (any by default)
 * @returns {Promise<number>}
 */
export function udpEchoRate(address, port, { seconds, inFlight, local }) {
  return new Promise((resolve) => {
    const s = createSocket(address.includes(':') ? 'udp6' : 'udp4');
    const payload = Buffer.alloc(64, 'x');
    let echoes = 0;
    let t0 = 0;
    s.on('message', () => {
      echoes++;
      s.send(payload, port, address);
    });
    s.bind(0, local, () => {
      t0 = performance.now();
      for (let i = 0; i < inFlight; i++) s.send(payload, port, address);
      // A lost datagram would shrink the window for good: top it up now and then.
      const topUp = setInterval(() => {
        for (let i = 0; i < 8; i++) s.send(payload, port, address);
      }, 100);
      setTimeout(() => {
        clearInterval(topUp);
        s.close();
        resolve(echoes / ((performance.now() - t0) / 1000));
      }, seconds * 1000);
    });
  });
}

/**
 * A burst: `count` datagrams of 64 bytes sent to `address`:`port` as fast as one loop sends them, then
 * waits `settleMs` for the echoes. Resolves with the echoes received and how long the sending took (ms).
 * @param {string} address
 * @param {number} port
 * @param {{ count: number, settleMs: number, local?: string }} options
 * @returns {Promise<{ answered: number, sendMs: number }>}
 */
export function udpBurst(address, port, { count, settleMs, local }) {
  return new Promise((resolve) => {
    const s = createSocket(address.includes(':') ? 'udp6' : 'udp4');
    const payload = Buffer.alloc(64, 'x');
    let answered = 0;
    s.on('message', () => answered++);
    s.bind(0, local, () => {
      // The client's own buffers must not be what loses the burst: its sends and the echoes coming back.
      s.setRecvBufferSize(4 << 20);
      s.setSendBufferSize(4 << 20);
      const t0 = performance.now();
      let sendMs = 0;
      for (let i = 0; i < count; i++) s.send(payload, port, address);
      // Sends are queued and go out in order: the last one's callback is the end of the burst.
      s.send(payload.subarray(0, 0), 9, '127.0.0.1', () => {
        sendMs = performance.now() - t0;
        setTimeout(() => {
          s.close();
          resolve({ answered, sendMs });
        }, settleMs);
      });
    });
  });
}

const PROBE_EVERY_MS = 1;
const PROBE_GIVE_UP_MS = 10_000;

/**
 * Dials `address`:`port` every PROBE_EVERY_MS (not waiting for the last attempt to fail) until one
 * connection answers an HTTP request with a response holding `expect`; resolves with the attempts made, or
 * 0 when none was answered so in time.
 * @param {string} address
 * @param {number} port
 * @param {string} expect
 * @returns {Promise<number>}
 */
export function firstServed(address, port, expect = '') {
  return new Promise((resolve) => {
    /** @type {Set<import('node:net').Socket>} */
    const open = new Set();
    let attempts = 0;
    const done = (/** @type {number} */ result) => {
      clearInterval(timer);
      clearTimeout(giveUp);
      for (const s of open) s.destroy();
      open.clear();
      resolve(result);
    };
    const attempt = () => {
      attempts++;
      let answer = '';
      const s = connect(port, address, () => s.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
      open.add(s);
      s.on('data', (chunk) => {
        answer += chunk.toString();
        if (answer.includes(expect)) done(attempts);
      });
      s.on('error', () => open.delete(s));
      s.on('close', () => open.delete(s));
    };
    const timer = setInterval(attempt, PROBE_EVERY_MS);
    const giveUp = setTimeout(() => done(0), PROBE_GIVE_UP_MS);
    attempt();
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [what, ...args] = process.argv.slice(2);
  if (what === 'udp') {
    const [address = '', port, seconds, inFlight] = args;
    const rate = await udpEchoRate(address, Number(port), { seconds: Number(seconds), inFlight: Number(inFlight) });
    console.log(rate);
  } else if (what === 'probe') {
    for await (const line of createInterface({ input: process.stdin })) {
      const [address = '', port, expect] = line.split(' ');
      const served = firstServed(address, Number(port), expect);
      console.log('armed');
      const attempts = await served;
      console.log(attempts > 0 ? `served ${attempts}` : 'timeout');
    }
  } else {
    console.error(`usage at the head of ${process.argv[1]}`);
    process.exit(2);
  }
}
