// An HTTP service behind the dispatcher: two lines more than a plain http server.
//   node examples/hello-service.mjs LABEL [SERVICES_SOCKET]
import { createServer } from 'node:http';
import { attach } from 'l4-dispatcher/service';

const [label, socket] = process.argv.slice(2);
if (!label) {
  console.error('usage: node examples/hello-service.mjs LABEL [SERVICES_SOCKET]');
  process.exit(2);
}
const server = createServer((req, res) => {
  const s = req.socket;
  res.end(
    `hello from ${label} (pid ${process.pid}): you are ${s.remoteAddress}:${s.remotePort}, you dialled ${s.localAddress}:${s.localPort}\n`,
  );
});
const service = attach(server, { label, socket });
service.on('registered', () => console.log(`${label}: registered`));
service.on('error', (err) => console.error(`${label}: ${err.message}`));
process.on('SIGTERM', () => void service.close().then(() => process.exit(0)));
