// Sockets that listen or connect: TCP and UDP listeners (tproxy included), the Unix sockets of the services
// and control protocols, batch accept with both addresses, and the native connect of proxy mode.
#include "dispatcher.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

#include "napi_helpers.h"
#include "records.h"

// The options of a listening socket; the name of the one that failed (errno set), or NULL.
// SO_REUSEADDR on TCP only: there it just lets a restart bind past TIME_WAIT. On UDP it would let any local
// user bind the same address and port with SO_REUSEADDR too and take the daemon's datagrams; a hand-over
// passes the socket itself (SCM_RIGHTS), so nothing needs to bind a UDP port twice.
static const char *listen_options(int fd, int family, int32_t flags, int32_t mark) {
  int udp = flags & LISTEN_UDP;
  if (!udp && set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1) < 0) return "SO_REUSEADDR";
  // Unlike SO_REUSEADDR on UDP this is safe: the kernel lets only sockets of the same effective uid share the port.
  if ((flags & LISTEN_REUSEPORT) && set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1) < 0) return "SO_REUSEPORT";
  if (mark != 0 && set_int(fd, SOL_SOCKET, SO_MARK, mark) < 0) return "SO_MARK";
  if (family == AF_INET6 && set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0) < 0) return "IPV6_V6ONLY";
  if (udp) {
    // Each datagram's destination (address and port), for the lookup and for the reply's source. IPv4 on a
    // dual-stack socket reports through the SOL_IP option, IPv6 through SOL_IPV6.
    if (set_int(fd, SOL_IP, IP_RECVORIGDSTADDR, 1) < 0) return "IP_RECVORIGDSTADDR";
    if (family == AF_INET6 && set_int(fd, SOL_IPV6, IPV6_RECVORIGDSTADDR, 1) < 0) return "IPV6_RECVORIGDSTADDR";
    // Replies name their source with IPV6_PKTINFO, which IPv6 refuses for an address that is local only by
    // a route (AnyIP: ip -6 route add local 2001:db8:1::/64 dev lo) unless the socket may bind freely.
    if (set_int(fd, SOL_IP, IP_FREEBIND, 1) < 0) return "IP_FREEBIND";
  }
  if ((flags & LISTEN_TRANSPARENT) && set_transparent(fd, family) < 0) return "IP_TRANSPARENT";
  return NULL;
}

// Closes `fd` after a failed set-up step and throws that step's error.
static napi_value fail_socket(napi_env env, int fd, const char *what) {
  int err = errno;
  close(fd);
  return throw_errno(env, err, what);
}

// listenInet(address: string, port: number, backlog: number, flags: number, mark?: number): fd
// flags: LISTEN_*. An IPv6 address gets a dual-stack socket. `mark`: SO_MARK (0: none).
napi_value ListenInet(napi_env env, napi_callback_info info) {
  char address[64];
  size_t len;
  int32_t port, backlog, flags, mark;
  if (!args_parse(env, info, "listenInet(address, port 0..65535, backlog, flags, mark?)", "spiin", address, sizeof address, &len, &port, &backlog, &flags, &mark)) return NULL;
  struct sockaddr_storage ss;
  socklen_t sslen = parse_inet(address, port, &ss);
  if (sslen == 0) return throw_errno(env, EINVAL, "listen address is not an IP address");
  int family = ss.ss_family;
  int udp = flags & LISTEN_UDP;
  int fd = socket(family, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  const char *failed = listen_options(fd, family, flags, mark);
  if (failed == NULL && bind(fd, (struct sockaddr *)&ss, sslen) < 0) failed = "bind";
  if (failed == NULL && !udp && listen(fd, backlog) < 0) failed = "listen";
  if (failed != NULL) return fail_socket(env, fd, failed);
  return int_value(env, fd);
}

static int set_nonblocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

// listenSeqpacket(path: string, backlog: number, stream?: boolean): fd. The caller has removed a stale file.
// With `stream`, a SOCK_STREAM socket (the control socket: Node serves it from the descriptor, so that
// closing it after a hand-over does not remove the path, as closing a socket Node bound itself does).
// connectSeqpacket(path: string): fd (non-blocking once connected).
static napi_value unix_socket(napi_env env, napi_callback_info info, int listening) {
  char path[PATH_BUFFER];
  size_t len;
  int32_t backlog = 0;
  bool stream = false;
  if (listening ? !args_parse(env, info, "listenSeqpacket(path, backlog, stream?)", "sio", path, sizeof path, &len, &backlog, &stream)
                : !args_parse(env, info, "connectSeqpacket(path)", "s", path, sizeof path, &len)) {
    return NULL;
  }
  struct sockaddr_un sun;
  if (len >= sizeof path - 1 || unix_address(path, &sun) < 0) return throw_errno(env, ENAMETOOLONG, path);
  int fd = socket(AF_UNIX, (stream ? SOCK_STREAM : SOCK_SEQPACKET) | SOCK_CLOEXEC | (listening ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  int rc = listening ? bind(fd, (struct sockaddr *)&sun, sizeof sun) : connect(fd, (struct sockaddr *)&sun, sizeof sun);
  // Set before listen: a connection inherits it at connect time, so no message sent before the accept
  // (acceptUnix sets it again, for kernels that do not inherit) can carry a descriptor in.
  if (rc == 0 && listening) rc = refuse_rights(fd);
  if (rc == 0 && listening) rc = listen(fd, backlog);
  if (rc == 0 && !listening) rc = set_nonblocking(fd);
  if (rc < 0) return fail_socket(env, fd, path);
  return int_value(env, fd);
}

napi_value ListenSeqpacket(napi_env env, napi_callback_info info) { return unix_socket(env, info, 1); }
napi_value ConnectSeqpacket(napi_env env, napi_callback_info info) { return unix_socket(env, info, 0); }

// connectStream(address: string, port: number): fd of a non-blocking stream socket whose connect is under
// way (port 0: `address` is a Unix socket path), for relay() to wait for. Proxy mode connects this way so
// that no Node socket has to be created and taken apart for the splice relay.
napi_value ConnectStream(napi_env env, napi_callback_info info) {
  char address[PATH_BUFFER];
  size_t len;
  int32_t port;
  if (!args_parse(env, info, "connectStream(address, port 0..65535)", "sp", address, sizeof address, &len, &port)) return NULL;
  struct sockaddr_storage ss;
  socklen_t sslen;
  if (port == 0) {
    memset(&ss, 0, sizeof ss);
    if (len >= sizeof address - 1 || unix_address(address, (struct sockaddr_un *)&ss) < 0) return throw_errno(env, ENAMETOOLONG, address);
    sslen = sizeof(struct sockaddr_un);
  } else if ((sslen = parse_inet(address, port, &ss)) == 0) {
    return throw_errno(env, EINVAL, "connectStream: not an IP address");
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  // Best effort: a connection without TCP_NODELAY still relays, only a little later.
  if (port != 0) (void)set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1);
  if (connect(fd, (struct sockaddr *)&ss, sslen) < 0 && errno != EINPROGRESS && errno != EAGAIN) return fail_socket(env, fd, "connect");
  return int_value(env, fd);
}

// sockName(fd, out: Int32Array(6)): 0 with the address block of the socket's own address, or -errno.
napi_value SockName(napi_env env, napi_callback_info info) {
  int32_t fd;
  array_t block;
  if (!args_parse(env, info, "sockName(fd, out: Int32Array(6))", "iw", &fd, &block, ADDRESS_BLOCK)) return NULL;
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return int_value(env, -errno);
  put_address(&ss, block.data);
  return int_value(env, 0);
}

// acceptBatch(listenFd, out: Int32Array, max, skipLocal?): count >= 0 accept records (records.h), or -errno
// if the first accept failed with something other than EAGAIN. Accepted descriptors are non-blocking and
// close-on-exec. `skipLocal`: the caller knows every connection's local address (a listener bound to one
// address, not transparent) and writes it; no getsockname per connection.
napi_value AcceptBatch(napi_env env, napi_callback_info info) {
  int32_t lfd, max;
  array_t records;
  bool skip_local = false;
  if (!args_parse(env, info, "acceptBatch(fd, out: Int32Array, max, skipLocal?)", "iwio", &lfd, &records, 0, &max, &skip_local)) return NULL;
  int32_t *out = records.data;
  if (max < 0) max = 0;
  if ((size_t)max > records.length / ACCEPT_RECORD) max = (int32_t)(records.length / ACCEPT_RECORD);
  int n = 0;
  while (n < max) {
    struct sockaddr_storage peer, local;
    socklen_t plen = sizeof peer, llen = sizeof local;
    int fd = accept4(lfd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (n == 0 && errno != EAGAIN && errno != EWOULDBLOCK) return int_value(env, -errno);
      break;
    }
    int32_t *r = out + n * ACCEPT_RECORD;
    r[ACCEPT_FD] = fd;
    if (!skip_local) {
      if (getsockname(fd, (struct sockaddr *)&local, &llen) < 0) local.ss_family = AF_UNSPEC;
      put_address(&local, r + ACCEPT_LOCAL);
    }
    put_address(&peer, r + ACCEPT_PEER);
    n++;
  }
  return int_value(env, n);
}
