#!/usr/bin/env python3
"""An echo service behind the dispatcher, in Python's standard library only.

A second implementation of the services protocol (docs/services-protocol.md):

    python3 echo_service.py LABEL [SERVICES_SOCKET]

It registers LABEL, receives each connection's descriptor with socket.recv_fds, acknowledges what it
received, and serves every connection in a thread: one greeting line, then an echo of what the client sends.
A datagram (a UDP binding) is answered with the same greeting line followed by the datagram; the reply
goes back through the dispatcher, which sends it from the address and port the client sent to.
"""
import json
import os
import socket
import sys
import threading

# A message is a JSON header, for datagrams and replies followed by a newline and the payload.
MAX_MESSAGE = 4096 + 65536


def serve_connection(conn: socket.socket, header: dict) -> None:
    client, local = header["client"], header["local"]
    with conn:
        greeting = f"{header['label']} {os.getpid()} {client['address']} {client['port']} {local['address']} {local['port']} python -\n"
        conn.sendall(greeting.encode())
        while data := conn.recv(65536):
            conn.sendall(data)


def main() -> int:
    label = sys.argv[1]
    path = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("DISPATCHER_SERVICES", "/run/dispatcher/services.sock")
    daemon = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    daemon.connect(path)
    try:
        daemon.send(json.dumps({"type": "register", "version": 1, "label": label, "window": 64}).encode())
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused as it connected (a uid allowed no label): the daemon's error is waiting to be read
    while True:
        data, fds, flags, _ = socket.recv_fds(daemon, MAX_MESSAGE, 1)
        if not data:
            print("the dispatcher closed the connection", file=sys.stderr)
            return 1
        if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
            for fd in fds:
                os.close(fd)
            print("a message did not fit: protocol error", file=sys.stderr)
            return 1
        header, _, payload = data.partition(b"\n")
        message = json.loads(header)
        if message["type"] == "registered":
            print(f"registered {message['label']} {message['worker']}", flush=True)
        elif message["type"] == "error":
            print(f"error {message['code']} {message['message']}", file=sys.stderr, flush=True)
            return 3 if message["code"] == "ERR_NOT_ALLOWED" else 1
        elif message["type"] == "connection" and len(fds) == 1:
            conn = socket.socket(fileno=fds[0])
            conn.setblocking(True)  # it arrives with O_NONBLOCK set; the thread below reads blocking
            threading.Thread(target=serve_connection, args=(conn, message), daemon=True).start()
            # One acknowledgement per connection keeps this example short; a busy service batches them.
            daemon.send(json.dumps({"type": "ack", "count": 1}).encode())
        elif message["type"] == "datagram" and not fds:
            client, local = message["client"], message["local"]
            greeting = f"{message['label']} {os.getpid()} {client['address']} {client['port']} {local['address']} {local['port']} udp -\n"
            reply = json.dumps({"type": "reply", "client": client, "local": local}).encode()
            daemon.send(reply + b"\n" + greeting.encode() + payload)
        else:
            for fd in fds:
                os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
