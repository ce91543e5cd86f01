#!/usr/bin/env python3
"""An echo service behind the dispatcher, in Python's standard library only.

A second implementation of the services protocol, versions 1 and 2 (docs/services-protocol.md). Version 3
only puts datagrams under a binary header; this example registers as 2 and keeps JSON:

    python3 echo_service.py LABEL [SERVICES_SOCKET]

It registers LABEL and serves every connection in a thread: one greeting line, then an echo of what the
client sends. A datagram (a UDP binding) is answered with the same greeting line followed by the datagram,
from the address and port the client sent to.

Connections and datagrams come two ways, and a worker takes both:
- handed off (ports and tproxy mode): each connection's descriptor with a "connection" message, which is
  acknowledged; each datagram in a "datagram" message, answered with a "reply" the daemon sends on;
- steered (kernel steering, version 2): the daemon gives the label's own sockets in "socket" messages, and
  the worker accepts and receives on them itself. It replies from a socket bound to the address and port the
  client sent to, asked of the daemon once per address and port with a "reply-socket" message.
"""
import json
import os
import selectors
import socket
import struct
import sys
import threading

# A message is a JSON header, for datagrams and replies followed by a newline and the payload.
MAX_MESSAGE = 4096 + 65536
# Where a steered datagram was sent, in its ancillary data (the daemon set IP_RECVORIGDSTADDR on the
# socket); Linux's values, which the socket module does not name.
IP_ORIGDSTADDR = 20
IPV6_ORIGDSTADDR = 74


def canonical(address: str) -> str:
    """An IPv4 client of a dual-stack socket as IPv4, as the daemon reports it."""
    return address.removeprefix("::ffff:") if "." in address else address


def endpoint(address: tuple) -> dict:
    return {"address": canonical(address[0]), "port": address[1]}


def sockaddr(raw: bytes) -> dict:
    """A struct sockaddr_in or sockaddr_in6, as ancillary data carries it."""
    (family,) = struct.unpack_from("=H", raw)  # sa_family_t, in host order; the port is in network order
    if family == socket.AF_INET:
        port, address = struct.unpack_from("!H4s", raw, 2)
        return {"address": socket.inet_ntop(socket.AF_INET, address), "port": port}
    port, _flowinfo, address = struct.unpack_from("!HI16s", raw, 2)
    return {"address": canonical(socket.inet_ntop(socket.AF_INET6, address)), "port": port}


def greeting(label: str, client: dict, local: dict, kind: str) -> str:
    return f"{label} {os.getpid()} {client['address']} {client['port']} {local['address']} {local['port']} {kind} -\n"


def serve_connection(conn: socket.socket, label: str, client: dict, local: dict) -> None:
    with conn:
        conn.setblocking(True)  # a handed-off one arrives with O_NONBLOCK set; this thread reads blocking
        conn.sendall(greeting(label, client, local, "python").encode())
        while data := conn.recv(65536):
            conn.sendall(data)


class Worker:
    def __init__(self, label: str, path: str):
        self.label, self.path = label, path
        self.selector = selectors.DefaultSelector()
        # Per (address, port) a client sent to: the socket to reply from, the replies waiting for the daemon
        # to give it (a list), or None once refused. A real service bounds both, as the TypeScript library
        # does (256 sockets, 64 replies waiting per address and port).
        self.reply_sockets = {}
        # DISPATCHER_PROTOCOL=1 speaks version 1 only (hand-offs even in kernel mode): for tests and old daemons.
        self.connect(version=int(os.environ.get("DISPATCHER_PROTOCOL", "2")))

    def connect(self, version: int) -> None:
        self.version = version
        self.daemon = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.daemon.connect(self.path)
        self.selector.register(self.daemon, selectors.EVENT_READ, self.on_daemon)
        try:
            self.send({"type": "register", "version": version, "label": self.label, "window": 64})
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused as it connected (a uid allowed no label): the daemon's error is waiting to be read

    def send(self, message: dict, payload: bytes | None = None) -> None:
        data = json.dumps(message).encode()
        self.daemon.send(data if payload is None else data + b"\n" + payload)

    def run(self) -> int:
        while True:
            for key, _ in self.selector.select():
                status = key.data(key.fileobj)
                if status is not None:
                    return status

    def on_daemon(self, daemon: socket.socket):
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
        kind = message["type"]
        if kind == "registered":
            print(f"registered {message['label']} {message['worker']} version {message['version']}", flush=True)
        elif kind == "error" and message["code"] == "ERR_VERSION" and self.version > 1:
            # A daemon older than version 2: register again, in version 1.
            self.selector.unregister(daemon)
            daemon.close()
            self.connect(version=1)
        elif kind == "error":
            print(f"error {message['code']} {message['message']}", file=sys.stderr, flush=True)
            return 3 if message["code"] == "ERR_NOT_ALLOWED" else 1
        elif kind == "connection" and len(fds) == 1:
            args = (socket.socket(fileno=fds[0]), self.label, message["client"], message["local"])
            threading.Thread(target=serve_connection, args=args, daemon=True).start()
            # One acknowledgement per connection keeps this example short; a busy service batches them.
            self.send({"type": "ack", "count": 1})
        elif kind == "datagram" and not fds:
            client, local = message["client"], message["local"]
            answer = greeting(self.label, client, local, "udp").encode() + payload
            self.send({"type": "reply", "client": client, "local": local}, answer)
        elif kind == "socket" and len(fds) == 1:
            steered = socket.socket(fileno=fds[0])
            # Other workers of the label take from the same socket: what woke this one may be gone.
            steered.setblocking(False)
            serve = self.on_steered_tcp if message["protocol"] == "tcp" else self.on_steered_udp
            self.selector.register(steered, selectors.EVENT_READ, serve)
        elif kind == "reply-socket":
            self.on_reply_socket(message, fds)
        else:
            for fd in fds:
                os.close(fd)
        return None

    def on_steered_tcp(self, steered: socket.socket):
        try:
            conn, peer = steered.accept()
        except BlockingIOError:
            return None
        # The accepted socket's own address is the one the client dialled.
        args = (conn, self.label, endpoint(peer), endpoint(conn.getsockname()))
        threading.Thread(target=serve_connection, args=args, daemon=True).start()
        return None

    def on_steered_udp(self, steered: socket.socket):
        try:
            data, ancillary, _, source = steered.recvmsg(65536, socket.CMSG_SPACE(28))  # room for a sockaddr_in6
        except BlockingIOError:
            return None
        wanted = ((socket.IPPROTO_IP, IP_ORIGDSTADDR), (socket.IPPROTO_IPV6, IPV6_ORIGDSTADDR))
        local = next((sockaddr(value) for level, kind, value in ancillary if (level, kind) in wanted), None)
        if local is not None:
            client = endpoint(source)
            self.reply(local, (client["address"], client["port"]), greeting(self.label, client, local, "udp").encode() + data)
        return None

    def reply(self, local: dict, client: tuple, data: bytes) -> None:
        """Sends `data` to `client` from `local`, through the socket the daemon gives for it."""
        key = (local["address"], local["port"])
        if key not in self.reply_sockets:
            self.reply_sockets[key] = []
            self.send({"type": "reply-socket", "local": local})
        target = self.reply_sockets[key]
        if isinstance(target, list):
            target.append((client, data))  # until the daemon answers
        elif target is not None:
            target.sendto(data, client)

    def on_reply_socket(self, message: dict, fds: list) -> None:
        key = (message["local"]["address"], message["local"]["port"])
        waiting = self.reply_sockets.get(key)
        if not isinstance(waiting, list):
            for fd in fds:
                os.close(fd)
            return
        if not fds:
            print(f"error no reply socket for {key[0]} port {key[1]}: {message.get('error')}", file=sys.stderr, flush=True)
            self.reply_sockets[key] = None  # its replies are dropped
            return
        self.reply_sockets[key] = sock = socket.socket(fileno=fds[0])
        for client, data in waiting:
            sock.sendto(data, client)


def main() -> int:
    label = sys.argv[1]
    path = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("DISPATCHER_SERVICES", "/run/dispatcher/services.sock")
    return Worker(label, path).run()


if __name__ == "__main__":
    sys.exit(main())
