// The steered label of bench/steering-packets.js, run in its server namespace: a transparent TCP listener
// and a transparent UDP socket bound to 127.0.0.1, as src/steering/ruleset.ts expects a label's sockets.
// Prints "TCP_PORT UDP_PORT", then answers each connection's request with an empty HTTP response
// (for wrk) and reads and counts datagrams; each line on stdin is answered with the count so far.
//   node steer-sink.mjs
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import {
  DATAGRAM_BATCH,
  DATAGRAM_RECORD,
  DATAGRAM_SLOT,
  LISTEN_TRANSPARENT,
  LISTEN_UDP,
  native,
  READABLE,
} from '../../dist/native/index.js';

const RESPONSE = 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n';
const name = new Int32Array(6);

/** @param {number} flags */
function socket(flags) {
  const fd = native.listenInet('127.0.0.1', 0, 4096, LISTEN_TRANSPARENT | flags);
  native.sockName(fd, name);
  return { fd, port: /** @type {number} */ (name[5]) };
}

const tcp = socket(0);
createServer((s) => {
  s.on('error', () => s.destroy());
  s.once('data', () => s.end(RESPONSE));
}).listen({ fd: tcp.fd });

const udp = socket(LISTEN_UDP);
const data = new Uint8Array(DATAGRAM_SLOT * DATAGRAM_BATCH);
const meta = new Int32Array(DATAGRAM_RECORD * DATAGRAM_BATCH);
let datagrams = 0;
// Kept until the end: a watch whose handle is collected stops.
const watch = native.watch(udp.fd, READABLE, () => {
  for (let n; (n = native.recvDatagrams(udp.fd, data, meta, DATAGRAM_BATCH)) > 0;) datagrams += n;
});

console.log(`${tcp.port} ${udp.port}`);
createInterface({ input: process.stdin })
  .on('line', () => console.log(datagrams))
  .on('close', () => {
    native.unwatch(watch);
    process.exit(0);
  });
