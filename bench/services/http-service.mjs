// The service the benchmarks load: a Node http server answering "hello", listening directly or attached
// to the dispatcher; or a sink that closes every connection it is handed.
//   node http-service.mjs direct PORT [HOST]
//   node http-service.mjs attach LABEL[,LABEL...] SERVICES_SOCKET   (one registration per label)
//   node http-service.mjs sink LABEL SERVICES_SOCKET
//   node http-service.mjs bulk-direct PORT BYTES | bulk-attach LABEL SERVICES_SOCKET BYTES
import { createServer } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { attach, serve } from '../../dist/service/index.js';

const [mode, a, b, c] = process.argv.slice(2);
const ready = () => process.stdout.write('ready\n');
const hello = createServer((_req, res) => res.end('hello\n'));

/**
 * A required argument, or exit with the usage above.
 * @param {string | undefined} value
 * @param {string} what
 * @returns {string}
 */
function required(value, what) {
  if (value === undefined) {
    console.error(`http-service ${mode}: ${what} missing (usage at the head of ${process.argv[1]})`);
    process.exit(2);
  }
  return value;
}

// Bulk: write BYTES on connect, in 1 MiB chunks with backpressure, then end.
const chunk = Buffer.alloc(1 << 20, 'x');
/** @param {number} bytes */
const bulk = (bytes) =>
  createNetServer((socket) => {
    let left = bytes;
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!socket.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
          socket.once('drain', pump);
          return;
        }
      }
      socket.end();
    };
    socket.on('error', () => socket.destroy());
    pump();
  });

/** @param {import('../../dist/service/index.js').Service} service */
const registered = (service) => service.on('registered', ready).on('error', (err) => console.error(err.message));

switch (mode) {
  case 'direct':
    hello.listen(Number(a), b ?? '127.0.0.1', ready);
    break;
  case 'attach': {
    // Ready once every label is registered.
    const labels = required(a, 'LABEL[,LABEL...]').split(',');
    let left = labels.length;
    for (const label of labels) {
      attach(hello, { label, socket: b, window: 256 })
        .on('registered', () => --left === 0 && ready())
        .on('error', (err) => console.error(err.message));
    }
    break;
  }
  case 'sink':
    registered(serve({ label: required(a, 'LABEL'), socket: b, window: 256 }, (socket) => socket.destroy()));
    break;
  case 'bulk-direct':
    bulk(Number(b)).listen(Number(a), '127.0.0.1', ready);
    break;
  case 'bulk-attach': {
    const server = bulk(Number(c));
    registered(attach(server, { label: required(a, 'LABEL'), socket: b }));
    break;
  }
  default:
    console.error(`unknown mode ${mode}`);
    process.exit(2);
}
