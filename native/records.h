// The records the addon and JavaScript share in Int32Arrays; src/native/records.ts mirrors them (and checks
// the sizes exported from init.c against its own at start-up).
//
// An address block, 6 int32s: [family (4 or 6; 0 unknown), w0, w1, w2, w3, port]. Words are big-endian
// halves of the address as the table keys it: IPv4 in w0 (w1..w3 zero), IPv6 in w0..w3.
#ifndef DISPATCHER_RECORDS_H
#define DISPATCHER_RECORDS_H

enum { ADDRESS_FAMILY = 0, ADDRESS_WORDS = 1, ADDRESS_PORT = 5, ADDRESS_BLOCK = 6 };

// acceptBatch: [fd, local address block, peer address block].
enum { ACCEPT_FD = 0, ACCEPT_LOCAL = 1, ACCEPT_PEER = 7, ACCEPT_RECORD = 13 };

// recvDatagrams' meta: [length (or -EMSGSIZE), source block, destination block]. Datagram i's bytes are at
// data[i * DATAGRAM_SLOT]; a batch is at most DATAGRAM_BATCH datagrams (it lives on the stack).
enum { DATAGRAM_LENGTH = 0, DATAGRAM_SOURCE = 1, DATAGRAM_DESTINATION = 7, DATAGRAM_RECORD = 13 };
#define DATAGRAM_SLOT 65536
#define DATAGRAM_BATCH 32

// sendDatagrams: [offset, length, destination block, source block] (source family 0: the socket's own).
enum { SEND_OFFSET = 0, SEND_LENGTH = 1, SEND_DESTINATION = 2, SEND_SOURCE = 8, SEND_RECORD = 14 };

// acceptUnix: [fd, pid, uid, gid] of the connecting process (SO_PEERCRED).
enum { CRED_FD = 0, CRED_PID = 1, CRED_UID = 2, CRED_GID = 3, CRED_RECORD = 4 };

// recvMsg's fds: [count, fd...]. Descriptors one message may carry: the protocol sends one; a peer that
// sends more gets them closed.
#define MAX_FDS 8

#endif
