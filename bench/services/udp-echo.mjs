// UDP echo for bench:udp: directly on a port, or behind the dispatcher.
//   node udp-echo.mjs direct PORT [HOST] | node udp-echo.mjs attach LABEL SERVICES_SOCKET
import { createSocket } from 'node:dgram';
import { serve } from '../../dist/service/index.js';

const [mode, a, b] = process.argv.slice(2);
if (mode === 'direct') {
  const s = createSocket('udp4');
  s.on('message', (m, r) => s.send(m, r.port, r.address));
  // Sized for bursts, as the dispatcher's own UDP sockets are (up to net.core.rmem_max).
  s.bind(Number(a), b ?? '127.0.0.1', () => {
    s.setRecvBufferSize(4 << 20);
    console.log('ready');
  });
} else {
  if (a === undefined) {
    console.error('udp-echo attach: LABEL missing');
    process.exit(2);
  }
  serve({ label: a, socket: b }, { datagram: (payload, _info, reply) => reply(payload) }).on('registered', () => console.log('ready'));
}
