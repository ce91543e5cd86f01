// The UDP load of bench/steering-packets.js, run in its client namespace: 64-byte datagrams to ADDRESS:PORT
// as fast as one process sends them, 32 a system call (sendmmsg), for SECONDS; then prints "SENT SECONDS".
// Nothing answers: the server side counts what it reads.
//   node udp-blast.mjs ADDRESS PORT SECONDS
import { parseAddress } from '../../dist/bindings/address.js';
import { DATAGRAM_BATCH, LISTEN_UDP, native, SEND_RECORD } from '../../dist/native/index.js';
import { putAddress, putSendData, SEND } from '../../dist/native/records.js';

const [address = '', port = '', seconds = ''] = process.argv.slice(2);
const to = parseAddress(address);
const data = new Uint8Array(64);
const records = new Int32Array(SEND_RECORD * DATAGRAM_BATCH);
for (let i = 0; i < DATAGRAM_BATCH; i++) {
  const at = i * SEND_RECORD;
  putSendData(records.subarray(at), 0, data.length);
  putAddress(records, at + SEND.DESTINATION, to.family, to.words, Number(port));
}
const fd = native.listenInet(to.family === 4 ? '0.0.0.0' : '::', 0, 0, LISTEN_UDP);
let sent = 0;
const started = performance.now();
const end = started + Number(seconds) * 1000;
// A full send buffer (-EAGAIN) is retried: the loop is the load, and its rate is the figure.
while (performance.now() < end) sent += Math.max(0, native.sendDatagrams(fd, data, records, DATAGRAM_BATCH, to.family === 6));
console.log(`${sent} ${(performance.now() - started) / 1000}`);
native.close(fd);
