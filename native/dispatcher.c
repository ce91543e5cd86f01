// The dispatcher's native layer: only what Node has no API for. Descriptor passing (SCM_RIGHTS), peer
// credentials (SO_PEERCRED), batch accept with the local address, SOCK_SEQPACKET sockets, reset-on-close,
// and a readiness watcher on a raw descriptor (libuv's uv_poll) so that JavaScript can drive them.
//
// Ownership rules, which the typed wrapper (src/native/index.ts) documents:
// - A call that returns a descriptor gives it to the caller; nothing here keeps a copy.
// - sendFd never closes the descriptor it sends: on success the kernel holds a reference for the receiver
//   and the caller closes its own; on any error (EAGAIN included) nothing was sent and the caller still owns
//   it. A partial send cannot happen on SOCK_SEQPACKET: a message goes whole or not at all.
// - recvMsg returns every descriptor that arrived, or closes them all and reports an error (MSG_CTRUNC,
//   MSG_TRUNC), so a descriptor is never left open without an owner.
// Errors come back as negative errno values from the I/O calls (the hot path must not allocate an Error),
// and as thrown errors with `code` set to the errno name from the set-up calls.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/uio.h>
#include <node_api.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

// Descriptors one message may carry. The protocol sends one; a peer that sends more gets them closed.
#define MAX_FDS 8

#define CHECK(call)                                                              \
  do {                                                                           \
    if ((call) != napi_ok) {                                                     \
      napi_throw_error(env, "ERR_NATIVE", "N-API call failed: " #call);          \
      return NULL;                                                               \
    }                                                                            \
  } while (0)

static napi_value throw_errno(napi_env env, int err, const char *what) {
  char message[256];
  snprintf(message, sizeof message, "%s: %s", what, strerror(err));
  napi_value code, msg, error;
  const char *name = err == EADDRINUSE ? "EADDRINUSE"
                     : err == EACCES  ? "EACCES"
                     : err == EADDRNOTAVAIL ? "EADDRNOTAVAIL"
                     : err == ENOENT  ? "ENOENT"
                     : err == ECONNREFUSED ? "ECONNREFUSED"
                     : err == EPERM   ? "EPERM"
                     : err == EMFILE  ? "EMFILE"
                     : err == EINVAL  ? "EINVAL"
                     : err == ENAMETOOLONG ? "ENAMETOOLONG"
                     : err == EAGAIN  ? "EAGAIN"
                                      : "ERR_SYSCALL";
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, code, msg, &error);
  napi_value errno_value;
  napi_create_int32(env, err, &errno_value);
  napi_set_named_property(env, error, "errno", errno_value);
  napi_throw(env, error);
  return NULL;
}

static int arg_int(napi_env env, napi_value v, int32_t *out) { return napi_get_value_int32(env, v, out) == napi_ok; }

static napi_value int_value(napi_env env, int64_t n) {
  napi_value v;
  napi_create_int64(env, n, &v);
  return v;
}

// An IP address (text) and port as a socket address; 0 if the text is neither IPv6 nor IPv4.
static socklen_t parse_inet(const char *address, int32_t port, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
  struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
  if (inet_pton(AF_INET6, address, &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
    return sizeof *s6;
  }
  if (inet_pton(AF_INET, address, &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    return sizeof *s4;
  }
  return 0;
}

// A function argument.
static int arg_function(napi_env env, napi_value v) {
  napi_valuetype t;
  return napi_typeof(env, v, &t) == napi_ok && t == napi_function;
}

// A typed array argument of type `want`: its data and element count; 0 if `v` is not one.
static int arg_array(napi_env env, napi_value v, napi_typedarray_type want, void **data, size_t *length) {
  napi_typedarray_type type;
  return napi_get_typedarray_info(env, v, &type, length, data, NULL, NULL) == napi_ok && type == want;
}

static int set_int(int fd, int level, int name, int value) { return setsockopt(fd, level, name, &value, sizeof value); }

// The options of a listening socket; the name of the one that failed (errno set), or NULL.
// SO_REUSEADDR on TCP only: there it just lets a restart bind past TIME_WAIT. On UDP it would let any local
// user bind the same address and port with SO_REUSEADDR too and take the daemon's datagrams; a hand-over
// passes the socket itself (SCM_RIGHTS), so nothing needs to bind a UDP port twice.
static const char *listen_options(int fd, int family, int udp, int transparent) {
  if (!udp && set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1) < 0) return "SO_REUSEADDR";
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
  if (transparent && set_int(fd, family == AF_INET6 ? SOL_IPV6 : SOL_IP, family == AF_INET6 ? IPV6_TRANSPARENT : IP_TRANSPARENT, 1) < 0) return "IP_TRANSPARENT";
  return NULL;
}

// A port argument: 0..65535 (htons would silently wrap a larger one onto another port).
static int arg_port(napi_env env, napi_value v, int32_t *out) { return arg_int(env, v, out) && *out >= 0 && *out <= 65535; }

// listenInet(address: string, port: number, backlog: number, flags: number): fd
// flags: 1 = IP_TRANSPARENT (tproxy), 2 = UDP instead of TCP. An IPv6 address gets a dual-stack socket.
static napi_value ListenInet(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char address[64];
  size_t len;
  int32_t port, backlog, flags;
  if (argc < 4 || napi_get_value_string_utf8(env, argv[0], address, sizeof address, &len) != napi_ok ||
      !arg_port(env, argv[1], &port) || !arg_int(env, argv[2], &backlog) || !arg_int(env, argv[3], &flags)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "listenInet(address, port 0..65535, backlog, flags)");
    return NULL;
  }
  struct sockaddr_storage ss;
  socklen_t sslen = parse_inet(address, port, &ss);
  if (sslen == 0) return throw_errno(env, EINVAL, "listen address is not an IP address");
  int family = ss.ss_family;
  int udp = flags & 2;
  int fd = socket(family, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  const char *failed = listen_options(fd, family, udp, flags & 1);
  if (failed == NULL && bind(fd, (struct sockaddr *)&ss, sslen) < 0) failed = "bind";
  if (failed == NULL && !udp && listen(fd, backlog) < 0) failed = "listen";
  if (failed != NULL) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, failed);
  }
  return int_value(env, fd);
}

static int unix_address(const char *path, struct sockaddr_un *sun) {
  memset(sun, 0, sizeof *sun);
  sun->sun_family = AF_UNIX;
  if (strlen(path) >= sizeof sun->sun_path) return -1;
  strcpy(sun->sun_path, path);
  return 0;
}

// listenSeqpacket(path: string, backlog: number, stream?: boolean): fd. The caller has removed a stale file.
// With `stream`, a SOCK_STREAM socket (the control socket: Node serves it from the descriptor, so that
// closing it after a hand-over does not remove the path, as closing a socket Node bound itself does).
// connectSeqpacket(path: string): fd (non-blocking once connected).
static napi_value unix_socket(napi_env env, napi_callback_info info, int listening) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  bool stream = false;
  if (listening && argc >= 3) napi_get_value_bool(env, argv[2], &stream);
  char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
  size_t len;
  int32_t backlog = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != napi_ok ||
      (listening && (argc < 2 || !arg_int(env, argv[1], &backlog)))) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", listening ? "listenSeqpacket(path, backlog)" : "connectSeqpacket(path)");
    return NULL;
  }
  struct sockaddr_un sun;
  if (len >= sizeof path - 1 || unix_address(path, &sun) < 0) return throw_errno(env, ENAMETOOLONG, path);
  int fd = socket(AF_UNIX, (stream ? SOCK_STREAM : SOCK_SEQPACKET) | SOCK_CLOEXEC | (listening ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  int rc = listening ? bind(fd, (struct sockaddr *)&sun, sizeof sun) : connect(fd, (struct sockaddr *)&sun, sizeof sun);
  if (rc == 0 && listening) rc = listen(fd, backlog);
  if (rc == 0 && !listening) rc = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  if (rc < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, path);
  }
  return int_value(env, fd);
}

static napi_value ListenSeqpacket(napi_env env, napi_callback_info info) { return unix_socket(env, info, 1); }
static napi_value ConnectSeqpacket(napi_env env, napi_callback_info info) { return unix_socket(env, info, 0); }

// Writes an address as [family (4|6), word0..word3, port] at out[0..5]; IPv4-mapped IPv6 becomes IPv4,
// so the table sees the family the client really used.
static void put_address(const struct sockaddr_storage *ss, int32_t *out) {
  memset(out, 0, 6 * sizeof *out);
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
    out[0] = 4;
    out[1] = (int32_t)ntohl(s4->sin_addr.s_addr);
    out[5] = ntohs(s4->sin_port);
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
    const uint8_t *b = s6->sin6_addr.s6_addr;
    uint32_t w[4];
    for (int i = 0; i < 4; i++) w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 | (uint32_t)b[4 * i + 2] << 8 | b[4 * i + 3];
    if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
      out[0] = 4;
      out[1] = (int32_t)w[3];
    } else {
      out[0] = 6;
      for (int i = 0; i < 4; i++) out[1 + i] = (int32_t)w[i];
    }
    out[5] = ntohs(s6->sin6_port);
  }
}

// Record layout of acceptBatch: [fd, local family, local words x4, local port, peer family, peer words x4,
// peer port] = 13 int32s. Exported as ACCEPT_RECORD.
#define ACCEPT_RECORD 13

// acceptBatch(listenFd, out: Int32Array, max): count >= 0, or -errno if the first accept failed with
// something other than EAGAIN. Accepted descriptors are non-blocking and close-on-exec.
static napi_value AcceptBatch(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t lfd, max;
  size_t length;
  void *data;
  if (argc < 3 || !arg_int(env, argv[0], &lfd) || !arg_int(env, argv[2], &max) ||
      !arg_array(env, argv[1], napi_int32_array, &data, &length)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "acceptBatch(fd, Int32Array, max)");
    return NULL;
  }
  int32_t *out = data;
  if (max < 0) max = 0;
  if ((size_t)max > length / ACCEPT_RECORD) max = (int32_t)(length / ACCEPT_RECORD);
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
    r[0] = fd;
    if (getsockname(fd, (struct sockaddr *)&local, &llen) < 0) local.ss_family = AF_UNSPEC;
    put_address(&local, r + 1);
    put_address(&peer, r + 7);
    n++;
  }
  return int_value(env, n);
}

// Linux 6.16 lets a Unix socket refuse descriptors (a sender's SCM_RIGHTS then fails with EPERM); older
// headers lack the name. 83 is asm-generic's value; alpha, mips, parisc and sparc number it otherwise.
#if !defined(SO_PASSRIGHTS) && !defined(__alpha__) && !defined(__mips__) && !defined(__hppa__) && !defined(__sparc__)
#define SO_PASSRIGHTS 83
#endif

// 0, or -1 with errno; an old kernel (ENOPROTOOPT) or an architecture whose number is unknown passes.
static int refuse_rights(int fd) {
#ifdef SO_PASSRIGHTS
  if (set_int(fd, SOL_SOCKET, SO_PASSRIGHTS, 0) < 0 && errno != ENOPROTOOPT) return -1;
#else
  (void)fd;
#endif
  return 0;
}

// acceptUnix(listenFd, out: Int32Array(4)): 1 with [fd, pid, uid, gid] (SO_PEERCRED), 0 on EAGAIN, or -errno.
// The accepted socket refuses descriptors (SO_PASSRIGHTS 0) where the kernel can: the daemon only sends on
// its accepted ends, and a descriptor a peer slips in would otherwise be the daemon's to close, on the
// loop thread (a lingering TCP socket's close can block for seconds). Older kernels say ENOPROTOOPT.
static napi_value AcceptUnix(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t lfd;
  size_t length;
  void *data;
  if (argc < 2 || !arg_int(env, argv[0], &lfd) || !arg_array(env, argv[1], napi_int32_array, &data, &length) || length < 4) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "acceptUnix(fd, Int32Array(4))");
    return NULL;
  }
  int fd;
  do fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  while (fd < 0 && (errno == EINTR || errno == ECONNABORTED));
  if (fd < 0) return int_value(env, errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno);
  struct ucred cred;
  socklen_t clen = sizeof cred;
  if (refuse_rights(fd) < 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0) {
    int err = errno;
    close(fd);
    return int_value(env, -err);
  }
  int32_t *out = data;
  out[0] = fd;
  out[1] = cred.pid;
  out[2] = (int32_t)cred.uid;
  out[3] = (int32_t)cred.gid;
  return int_value(env, 1);
}

// sendFd(sock, data: Uint8Array, fd): bytes sent, or -errno (-EAGAIN when the peer's buffer is full). With
// fd < 0 the message carries no descriptor. Never blocks, never raises SIGPIPE, never closes `fd`.
static napi_value SendFd(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t sock, fd;
  size_t length;
  void *data;
  if (argc < 3 || !arg_int(env, argv[0], &sock) || !arg_int(env, argv[2], &fd) ||
      !arg_array(env, argv[1], napi_uint8_array, &data, &length)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "sendFd(sock, Uint8Array, fd)");
    return NULL;
  }
  struct iovec iov = {.iov_base = data, .iov_len = length};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } control;
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (fd >= 0) {
    memset(&control, 0, sizeof control);
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof control.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  ssize_t n;
  do n = sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return int_value(env, n < 0 ? -errno : n);
}

// recvMsg(sock, data: Uint8Array, fds: Int32Array(MAX_FDS + 1)): bytes received (0: the peer closed), or
// -errno (-EAGAIN: nothing waiting). fds[0] is how many descriptors arrived, fds[1..] the descriptors,
// close-on-exec. A message whose data or descriptors did not fit has every descriptor closed and gives
// -EMSGSIZE.
static napi_value RecvMsg(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t sock;
  size_t length, flength;
  void *data, *fdata;
  if (argc < 3 || !arg_int(env, argv[0], &sock) || !arg_array(env, argv[1], napi_uint8_array, &data, &length) || !arg_array(env, argv[2], napi_int32_array, &fdata, &flength) || flength < MAX_FDS + 1) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "recvMsg(sock, Uint8Array, Int32Array(9))");
    return NULL;
  }
  int32_t *fds = fdata;
  fds[0] = 0;
  struct iovec iov = {.iov_base = data, .iov_len = length};
  union {
    char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
    struct cmsghdr align;
  } control;
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
  ssize_t n;
  do n = recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return int_value(env, -errno);
  int count = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    for (int i = 0; i < k; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (count < MAX_FDS) fds[1 + count++] = fd;
      else close(fd);  // cannot happen with a control buffer of MAX_FDS, but never leak
    }
  }
  if (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) {
    for (int i = 0; i < count; i++) close(fds[1 + i]);
    fds[0] = 0;
    return int_value(env, -EMSGSIZE);
  }
  fds[0] = count;
  return int_value(env, n);
}

// peerCred(fd): [pid, uid, gid] of the process that connected (or -errno as a number).
static napi_value PeerCred(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  if (argc < 1 || !arg_int(env, argv[0], &fd)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "peerCred(fd)");
    return NULL;
  }
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return int_value(env, -errno);
  napi_value arr;
  napi_create_array_with_length(env, 3, &arr);
  napi_set_element(env, arr, 0, int_value(env, cred.pid));
  napi_set_element(env, arr, 1, int_value(env, cred.uid));
  napi_set_element(env, arr, 2, int_value(env, cred.gid));
  return arr;
}

static void *close_thread(void *arg) {
  close((int)(intptr_t)arg);
  return NULL;
}

// Closes a descriptor that is not a socket off the loop thread: closing the last reference to a file on
// FUSE or NFS waits for its server to flush, which a local user controls.
static int close_aside(int fd) {
  pthread_attr_t attr;
  pthread_t thread;
  int rc = pthread_attr_init(&attr);
  if (rc == 0) {
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 65536);
    rc = pthread_create(&thread, &attr, close_thread, (void *)(intptr_t)fd);
    pthread_attr_destroy(&attr);
  }
  if (rc == 0) return 0;
  return close(fd) < 0 && errno != EINTR ? -errno : 0;  // no thread to be had: close here rather than leak
}

// close(fd) / reset(fd): 0 or -errno. reset sets SO_LINGER {on, 0} first, so the client gets a RST at once
// instead of a FIN it might take for a served, empty answer.
// reset never blocks the caller, whatever the descriptor (so it is the call for one a peer sent): a socket
// with SO_LINGER {1, 0} closes at once (TCP aborts, no other family lingers), and a descriptor that is not
// a socket (setsockopt says ENOTSOCK) is closed on a thread of its own (close_aside).
static napi_value fd_call(napi_env env, napi_callback_info info, int reset) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  if (argc < 1 || !arg_int(env, argv[0], &fd) || fd < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "expects a descriptor");
    return NULL;
  }
  if (reset) {
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l) < 0 && errno == ENOTSOCK) return int_value(env, close_aside(fd));
  }
  return int_value(env, close(fd) < 0 && errno != EINTR ? -errno : 0);
}

static napi_value Close(napi_env env, napi_callback_info info) { return fd_call(env, info, 0); }
static napi_value Reset(napi_env env, napi_callback_info info) { return fd_call(env, info, 1); }

// A readiness watcher on a raw descriptor: libuv's uv_poll on the main loop, calling back into JS with the
// events (1 readable, 2 writable, or a negative libuv error).
// The struct is freed when both libuv has closed the handle and the JS handle (an external) is collected,
// whichever comes last.
typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  int closed;      // uv_close called
  int close_done;  // its callback ran
  int finalized;   // the external was collected
} watcher_t;

static void on_close(uv_handle_t *h) {
  watcher_t *w = h->data;
  if (w->callback != NULL) napi_delete_reference(w->env, w->callback);
  w->callback = NULL;
  w->close_done = 1;
  if (w->finalized) free(w);
}

// Calls a JavaScript callback from a libuv callback, with up to three numbers. make_callback runs the
// microtask queue afterwards, as Node's own I/O callbacks do; an exception is fatal, as in Node.
static void call_js(napi_env env, napi_ref callback, size_t argc, const double *values) {
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, global, args[3], result;
  napi_get_reference_value(env, callback, &cb);
  napi_get_global(env, &global);
  for (size_t i = 0; i < argc && i < 3; i++) napi_create_double(env, values[i], &args[i]);
  if (napi_make_callback(env, NULL, global, cb, argc, args, &result) == napi_pending_exception) {
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    napi_fatal_exception(env, exc);
  }
  napi_close_handle_scope(env, scope);
}

static void on_poll(uv_poll_t *p, int status, int events) {
  watcher_t *w = p->data;
  if (w->closed) return;
  double arg = status < 0 ? status : ((events & UV_READABLE) ? 1 : 0) | ((events & UV_WRITABLE) ? 2 : 0);
  call_js(w->env, w->callback, 1, &arg);
}

static void finalize_watcher(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  watcher_t *w = data;
  w->finalized = 1;
  if (!w->closed) {
    w->closed = 1;
    uv_close((uv_handle_t *)&w->poll, on_close);
  } else if (w->close_done) {
    free(w);
  }
}

// watch(fd, events (1 read | 2 write), callback): a handle for setEvents/unwatch.
static napi_value Watch(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd, events;
  if (argc < 3 || !arg_int(env, argv[0], &fd) || !arg_int(env, argv[1], &events) || !arg_function(env, argv[2])) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "watch(fd, events, callback)");
    return NULL;
  }
  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  watcher_t *w = calloc(1, sizeof *w);
  if (w == NULL) return throw_errno(env, ENOMEM, "watch");
  w->env = env;
  int rc = uv_poll_init(loop, &w->poll, fd);
  if (rc < 0) {
    free(w);
    return throw_errno(env, -rc, "uv_poll_init");
  }
  w->poll.data = w;
  // Without its reference or its external, the watcher is closed again (and freed by on_close, as if
  // already collected) before it ever calls back.
  napi_value handle;
  if (napi_create_reference(env, argv[2], 1, &w->callback) != napi_ok || napi_create_external(env, w, finalize_watcher, NULL, &handle) != napi_ok) {
    w->closed = w->finalized = 1;
    uv_close((uv_handle_t *)&w->poll, on_close);
    napi_throw_error(env, "ERR_NATIVE", "watch: out of memory");
    return NULL;
  }
  int uv_events = ((events & 1) ? UV_READABLE : 0) | ((events & 2) ? UV_WRITABLE : 0);
  if (uv_events && (rc = uv_poll_start(&w->poll, uv_events, on_poll)) < 0) {
    w->closed = 1;  // freed once the external is collected too
    uv_close((uv_handle_t *)&w->poll, on_close);
    return throw_errno(env, -rc, "uv_poll_start");
  }
  return handle;
}

static watcher_t *get_watcher(napi_env env, napi_value v) {
  void *data = NULL;
  if (napi_get_value_external(env, v, &data) != napi_ok) return NULL;
  return data;
}

// setEvents(handle, events): 0 stops watching without closing; the descriptor stays the caller's.
static napi_value SetEvents(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t events;
  watcher_t *w = argc < 2 ? NULL : get_watcher(env, argv[0]);
  if (w == NULL || !arg_int(env, argv[1], &events)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "setEvents(handle, events)");
    return NULL;
  }
  if (w->closed) return NULL;
  int uv_events = ((events & 1) ? UV_READABLE : 0) | ((events & 2) ? UV_WRITABLE : 0);
  if (uv_events) uv_poll_start(&w->poll, uv_events, on_poll);
  else uv_poll_stop(&w->poll);
  return NULL;
}

// unwatch(handle): stops and releases the watcher. Call it before closing the descriptor.
static napi_value Unwatch(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  watcher_t *w = argc < 1 ? NULL : get_watcher(env, argv[0]);
  if (w == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "unwatch(handle)");
    return NULL;
  }
  if (!w->closed) {
    w->closed = 1;
    uv_poll_stop(&w->poll);
    uv_close((uv_handle_t *)&w->poll, on_close);
  }
  return NULL;
}

// sockName(fd, out: Int32Array(6)): 0 with [family, w0..w3, port] of the socket's own address, or -errno.
static napi_value SockName(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  size_t length;
  void *data;
  if (argc < 2 || !arg_int(env, argv[0], &fd) || !arg_array(env, argv[1], napi_int32_array, &data, &length) || length < 6) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "sockName(fd, Int32Array(6))");
    return NULL;
  }
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return int_value(env, -errno);
  put_address(&ss, data);
  return int_value(env, 0);
}

// Datagram record of recvDatagrams: [length, source family, w0..w3, port, destination family, w0..w3, port].
#define DATAGRAM_RECORD 13
#define DATAGRAM_SLOT 65536
#define DATAGRAM_BATCH 32

// recvDatagrams(fd, data: Uint8Array(count * 65536), meta: Int32Array(count * 13), count): datagrams
// received (0: none waiting) or -errno. Datagram i is at data[i * 65536], its length meta[i * 13]; the
// destination comes from IP_ORIGDSTADDR / IPV6_ORIGDSTADDR: the address and port the client sent to.
static napi_value RecvDatagrams(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd, count;
  size_t dlen, mlen;
  void *ddata, *mdata;
  if (argc < 4 || !arg_int(env, argv[0], &fd) || !arg_int(env, argv[3], &count) ||
      !arg_array(env, argv[1], napi_uint8_array, &ddata, &dlen) ||
      !arg_array(env, argv[2], napi_int32_array, &mdata, &mlen)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "recvDatagrams(fd, Uint8Array, Int32Array, count)");
    return NULL;
  }
  // Clamped to [0, DATAGRAM_BATCH] and to the records the arrays hold: the batch lives on the stack.
  if (count < 0) count = 0;
  if (count > DATAGRAM_BATCH) count = DATAGRAM_BATCH;
  if ((size_t)count > dlen / DATAGRAM_SLOT) count = (int32_t)(dlen / DATAGRAM_SLOT);
  if ((size_t)count > mlen / DATAGRAM_RECORD) count = (int32_t)(mlen / DATAGRAM_RECORD);
  struct mmsghdr msgs[DATAGRAM_BATCH];
  struct iovec iovs[DATAGRAM_BATCH];
  struct sockaddr_storage sources[DATAGRAM_BATCH];
  union {
    char buf[CMSG_SPACE(sizeof(struct sockaddr_in6)) * 2];
    struct cmsghdr align;
  } controls[DATAGRAM_BATCH];
  memset(msgs, 0, sizeof msgs[0] * (size_t)count);
  for (int i = 0; i < count; i++) {
    iovs[i].iov_base = (uint8_t *)ddata + (size_t)i * DATAGRAM_SLOT;
    iovs[i].iov_len = DATAGRAM_SLOT;
    msgs[i].msg_hdr.msg_iov = &iovs[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_name = &sources[i];
    msgs[i].msg_hdr.msg_namelen = sizeof sources[i];
    msgs[i].msg_hdr.msg_control = controls[i].buf;
    msgs[i].msg_hdr.msg_controllen = sizeof controls[i].buf;
  }
  int n;
  do n = recvmmsg(fd, msgs, (unsigned)count, MSG_DONTWAIT, NULL);
  while (n < 0 && errno == EINTR);
  if (n < 0) return int_value(env, errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno);
  int32_t *meta = mdata;
  for (int i = 0; i < n; i++) {
    int32_t *r = meta + i * DATAGRAM_RECORD;
    r[0] = (int32_t)msgs[i].msg_len;
    put_address(&sources[i], r + 1);
    struct sockaddr_storage dst;
    memset(&dst, 0, sizeof dst);
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c != NULL; c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
      if ((c->cmsg_level == SOL_IP && c->cmsg_type == IP_ORIGDSTADDR) || (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_ORIGDSTADDR)) {
        memcpy(&dst, CMSG_DATA(c), c->cmsg_len - CMSG_LEN(0) < sizeof dst ? c->cmsg_len - CMSG_LEN(0) : sizeof dst);
      }
    }
    put_address(&dst, r + 7);  // family 0 if the kernel gave no destination
    if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) r[0] = -EMSGSIZE;
  }
  return int_value(env, n);
}

static socklen_t make_address(const int32_t *a, int v6_socket, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  uint8_t bytes[16];
  for (int i = 0; i < 4; i++) {
    uint32_t w = (uint32_t)a[1 + i];
    bytes[4 * i] = (uint8_t)(w >> 24);
    bytes[4 * i + 1] = (uint8_t)(w >> 16);
    bytes[4 * i + 2] = (uint8_t)(w >> 8);
    bytes[4 * i + 3] = (uint8_t)w;
  }
  if (a[0] == 4 && !v6_socket) {
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    memcpy(&s4->sin_addr, bytes, 4);
    s4->sin_port = htons((uint16_t)a[5]);
    return sizeof *s4;
  }
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
  s6->sin6_family = AF_INET6;
  if (a[0] == 4) {  // IPv4 through a dual-stack socket: ::ffff:a.b.c.d
    s6->sin6_addr.s6_addr[10] = s6->sin6_addr.s6_addr[11] = 0xff;
    memcpy(&s6->sin6_addr.s6_addr[12], bytes, 4);
  } else {
    memcpy(&s6->sin6_addr, bytes, 16);
  }
  s6->sin6_port = htons((uint16_t)a[5]);
  return sizeof *s6;
}

// Record of sendDatagrams: [offset, length, destination family, w0..w3, port, source family, w0..w3, port].
#define SEND_RECORD 14

// sendDatagrams(fd, data: Uint8Array, records: Int32Array, count, v6): datagrams sent (sendmmsg, so a batch
// of replies costs one system call), or -errno if none was. The source address (not port: that is the
// socket's) is set with IP_PKTINFO / IPV6_PKTINFO when its family is not 0. `v6` says the socket is
// AF_INET6 (the caller knows; asking the kernel each time cost a system call).
static napi_value SendDatagrams(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd, count;
  size_t dlen, rlen;
  void *ddata, *rdata;
  bool v6;
  if (argc < 5 || !arg_int(env, argv[0], &fd) || !arg_int(env, argv[3], &count) ||
      !arg_array(env, argv[1], napi_uint8_array, &ddata, &dlen) ||
      !arg_array(env, argv[2], napi_int32_array, &rdata, &rlen) ||
      napi_get_value_bool(env, argv[4], &v6) != napi_ok || count < 0 || count > DATAGRAM_BATCH || (size_t)count * SEND_RECORD > rlen) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "sendDatagrams(fd, Uint8Array, Int32Array, count <= 32, v6)");
    return NULL;
  }
  const int32_t *records = rdata;
  struct mmsghdr msgs[DATAGRAM_BATCH];
  struct iovec iovs[DATAGRAM_BATCH];
  struct sockaddr_storage dsts[DATAGRAM_BATCH];
  union {
    char buf[CMSG_SPACE(sizeof(struct in6_pktinfo))];
    struct cmsghdr align;
  } controls[DATAGRAM_BATCH];
  memset(msgs, 0, sizeof msgs[0] * (size_t)count);
  memset(controls, 0, sizeof controls[0] * (size_t)count);
  for (int i = 0; i < count; i++) {
    const int32_t *r = records + i * SEND_RECORD;
    if (r[0] < 0 || r[1] < 0 || (size_t)r[0] + (size_t)r[1] > dlen) {
      napi_throw_range_error(env, "ERR_INVALID_ARG", "sendDatagrams: a record lies outside the data");
      return NULL;
    }
    iovs[i].iov_base = (uint8_t *)ddata + r[0];
    iovs[i].iov_len = (size_t)r[1];
    struct msghdr *m = &msgs[i].msg_hdr;
    m->msg_iov = &iovs[i];
    m->msg_iovlen = 1;
    m->msg_name = &dsts[i];
    m->msg_namelen = make_address(r + 2, v6, &dsts[i]);
    if (r[8] != 0) {
      struct sockaddr_storage src;
      make_address(r + 8, v6, &src);
      m->msg_control = controls[i].buf;
      struct cmsghdr *c;
      if (v6) {
        m->msg_controllen = CMSG_SPACE(sizeof(struct in6_pktinfo));
        c = CMSG_FIRSTHDR(m);
        c->cmsg_level = SOL_IPV6;
        c->cmsg_type = IPV6_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(struct in6_pktinfo));
        struct in6_pktinfo pi = {.ipi6_addr = ((struct sockaddr_in6 *)&src)->sin6_addr};
        memcpy(CMSG_DATA(c), &pi, sizeof pi);
      } else {
        m->msg_controllen = CMSG_SPACE(sizeof(struct in_pktinfo));
        c = CMSG_FIRSTHDR(m);
        c->cmsg_level = SOL_IP;
        c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
        struct in_pktinfo pi = {.ipi_spec_dst = ((struct sockaddr_in *)&src)->sin_addr};
        memcpy(CMSG_DATA(c), &pi, sizeof pi);
      }
    }
  }
  int n;
  do n = sendmmsg(fd, msgs, (unsigned)count, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return int_value(env, n < 0 ? -errno : n);
}

// Proxy mode's byte copying: splice(2) between the client's and the upstream's sockets through a pipe per
// direction, so the bytes never enter user space. Half-close is passed on (a direction that ends is shut
// down for writing on the other side, the other direction keeps flowing); an error ends both.
// The default pipe capacity. Raising it to 1 MiB (F_SETPIPE_SZ) gained nothing in bulk and cost each
// connection a system call and a larger allocation.
#define RELAY_PIPE 65536

typedef struct {
  int from, to;
  int pipe_r, pipe_w;
  size_t in_pipe, cap;
  int eof, done;
  int stalled;  // the pipe took nothing while holding bytes: read again only once some have left it
  double bytes;
} direction_t;

typedef struct {
  uv_poll_t pa, pb;
  int a, b;
  direction_t ab, ba;
  napi_env env;
  napi_ref callback;
  int failed, finishing, closes;
} relay_t;

static int make_pipe(direction_t *d) {
  int p[2];
  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) return -errno;
  d->pipe_r = p[0];
  d->pipe_w = p[1];
  d->cap = RELAY_PIPE;
  return 0;
}

static void close_pipe(direction_t *d) {
  if (d->pipe_r < 0) return;
  close(d->pipe_r);
  close(d->pipe_w);
  d->pipe_r = d->pipe_w = -1;
}

// Moves what it can; returns -1 on a socket error.
// EAGAIN from the splice into the pipe means "the socket is empty" or "the pipe is full", and a pipe is
// full after 16 small reads (one buffer each), long before `cap` bytes. With bytes in the pipe it is taken
// as full: the direction stops reading (stalled) until some leave. Waiting for readable instead spun a
// core, the socket staying readable while the pipe took nothing.
static int pump(direction_t *d) {
  for (;;) {
    int progress = 0;
    if (!d->eof && !d->stalled && d->in_pipe < d->cap) {
      ssize_t n = splice(d->from, NULL, d->pipe_w, NULL, d->cap - d->in_pipe, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
      if (n > 0) {
        d->in_pipe += (size_t)n;
        progress = 1;
      } else if (n == 0) {
        d->eof = 1;
      } else if (errno == EAGAIN) {
        d->stalled = d->in_pipe > 0;
      } else if (errno != EINTR) {
        return -1;
      }
    }
    if (d->in_pipe > 0) {
      ssize_t m = splice(d->pipe_r, NULL, d->to, NULL, d->in_pipe, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
      if (m > 0) {
        d->in_pipe -= (size_t)m;
        d->bytes += (double)m;
        d->stalled = 0;
        progress = 1;
      } else if (m < 0 && errno != EAGAIN && errno != EINTR) {
        return -1;
      }
    }
    if (d->eof && d->in_pipe == 0 && !d->done) {
      shutdown(d->to, SHUT_WR);
      d->done = 1;
    }
    if (!progress) return 0;
  }
}

// What a side waits for: readable while its outgoing direction may read, writable while its incoming
// direction holds bytes for it. A stalled direction waits for the far side's writable only.
static int side_events(const direction_t *out, const direction_t *in) {
  return ((!out->eof && !out->stalled && out->in_pipe < out->cap) ? UV_READABLE : 0) | (in->in_pipe > 0 ? UV_WRITABLE : 0);
}

static int watch_side(uv_poll_t *p, int events, uv_poll_cb cb) { return events ? uv_poll_start(p, events, cb) : uv_poll_stop(p); }

static void relay_closed(uv_handle_t *h) {
  relay_t *r = h->data;
  if (++r->closes < 2) return;
  const double args[3] = {r->ab.bytes, r->ba.bytes, r->failed};
  call_js(r->env, r->callback, 3, args);
  napi_delete_reference(r->env, r->callback);
  free(r);
}

static void relay_finish(relay_t *r) {
  if (r->finishing) return;
  r->finishing = 1;
  uv_poll_stop(&r->pa);
  uv_poll_stop(&r->pb);
  close(r->a);
  close(r->b);
  close_pipe(&r->ab);
  close_pipe(&r->ba);
  uv_close((uv_handle_t *)&r->pa, relay_closed);
  uv_close((uv_handle_t *)&r->pb, relay_closed);
}

static void relay_on_poll(uv_poll_t *p, int status, int events) {
  (void)events;
  relay_t *r = p->data;
  if (r->finishing) return;
  if (status < 0 || pump(&r->ab) < 0 || pump(&r->ba) < 0) {
    r->failed = 1;
    return relay_finish(r);
  }
  if (r->ab.done && r->ba.done) return relay_finish(r);
  if (watch_side(&r->pa, side_events(&r->ab, &r->ba), relay_on_poll) < 0 || watch_side(&r->pb, side_events(&r->ba, &r->ab), relay_on_poll) < 0) {
    r->failed = 1;
    relay_finish(r);
  }
}

// A relay that never started: freed once its `polls` initialized handles are closed; a and b untouched.
static void relay_dropped(uv_handle_t *h) {
  relay_t *r = h->data;
  if (++r->closes == 2) free(r);
}

static int relay_abandon(relay_t *r, int polls, int err) {
  close_pipe(&r->ab);
  close_pipe(&r->ba);
  if (r->callback != NULL) napi_delete_reference(r->env, r->callback);
  r->closes = 2 - polls;
  if (polls == 0) free(r);
  if (polls >= 1) uv_close((uv_handle_t *)&r->pa, relay_dropped);
  if (polls == 2) uv_close((uv_handle_t *)&r->pb, relay_dropped);
  return err;
}

// Pipes, watchers and the callback's reference of a new relay: 0, or -errno with nothing left behind.
static int relay_start(relay_t *r, uv_loop_t *loop, napi_value callback) {
  int rc;
  if ((rc = make_pipe(&r->ab)) < 0 || (rc = make_pipe(&r->ba)) < 0) return relay_abandon(r, 0, rc);
  if ((rc = uv_poll_init(loop, &r->pa, r->a)) < 0) return relay_abandon(r, 0, rc);
  r->pa.data = r;
  if ((rc = uv_poll_init(loop, &r->pb, r->b)) < 0) return relay_abandon(r, 1, rc);
  r->pb.data = r;
  if (napi_create_reference(r->env, callback, 1, &r->callback) != napi_ok) return relay_abandon(r, 2, -ENOMEM);
  if ((rc = uv_poll_start(&r->pa, UV_READABLE, relay_on_poll)) < 0 || (rc = uv_poll_start(&r->pb, UV_READABLE, relay_on_poll)) < 0) {
    return relay_abandon(r, 2, rc);
  }
  return 0;
}

// relay(a, b, callback(bytesAtoB, bytesBtoA, failed: 0 or 1)): 0, then copies both ways until both
// directions end or one fails, closes a and b (they are the relay's now) and calls back. Or -errno (EMFILE:
// no descriptors for the pipes), and a and b are still the caller's; the callback is never called.
static napi_value Relay(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t a, b;
  if (argc < 3 || !arg_int(env, argv[0], &a) || !arg_int(env, argv[1], &b) || !arg_function(env, argv[2])) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "relay(a, b, callback)");
    return NULL;
  }
  if (a < 0 || b < 0) return int_value(env, -EBADF);
  if (a == b) return int_value(env, -EINVAL);  // one descriptor cannot have two watchers
  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  relay_t *r = calloc(1, sizeof *r);
  if (r == NULL) return int_value(env, -ENOMEM);
  r->a = a;
  r->b = b;
  r->env = env;
  r->ab = (direction_t){.from = a, .to = b, .pipe_r = -1, .pipe_w = -1};
  r->ba = (direction_t){.from = b, .to = a, .pipe_r = -1, .pipe_w = -1};
  return int_value(env, relay_start(r, loop, argv[2]));
}

// connectStream(address: string, port: number): fd of a non-blocking stream socket whose connect is under
// way (port 0: `address` is a Unix socket path). Wait for it to be writable, then read socketError. Proxy
// mode connects this way so that no Node socket has to be created and taken apart for the splice relay.
static napi_value ConnectStream(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char address[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
  size_t len;
  int32_t port;
  if (argc < 2 || napi_get_value_string_utf8(env, argv[0], address, sizeof address, &len) != napi_ok || !arg_port(env, argv[1], &port)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "connectStream(address, port 0..65535)");
    return NULL;
  }
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
  if (port != 0) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  if (connect(fd, (struct sockaddr *)&ss, sslen) < 0 && errno != EINPROGRESS && errno != EAGAIN) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, "connect");
  }
  return int_value(env, fd);
}

// socketError(fd): the pending error of a socket (SO_ERROR), 0 when its connect succeeded.
static napi_value SocketError(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  if (argc < 1 || !arg_int(env, argv[0], &fd)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "socketError(fd)");
    return NULL;
  }
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
  return int_value(env, err);
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"listenInet", NULL, ListenInet, NULL, NULL, NULL, napi_enumerable, NULL},
      {"listenSeqpacket", NULL, ListenSeqpacket, NULL, NULL, NULL, napi_enumerable, NULL},
      {"connectSeqpacket", NULL, ConnectSeqpacket, NULL, NULL, NULL, napi_enumerable, NULL},
      {"acceptBatch", NULL, AcceptBatch, NULL, NULL, NULL, napi_enumerable, NULL},
      {"acceptUnix", NULL, AcceptUnix, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sendFd", NULL, SendFd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"recvMsg", NULL, RecvMsg, NULL, NULL, NULL, napi_enumerable, NULL},
      {"peerCred", NULL, PeerCred, NULL, NULL, NULL, napi_enumerable, NULL},
      {"close", NULL, Close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"reset", NULL, Reset, NULL, NULL, NULL, napi_enumerable, NULL},
      {"watch", NULL, Watch, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setEvents", NULL, SetEvents, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unwatch", NULL, Unwatch, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sockName", NULL, SockName, NULL, NULL, NULL, napi_enumerable, NULL},
      {"recvDatagrams", NULL, RecvDatagrams, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sendDatagrams", NULL, SendDatagrams, NULL, NULL, NULL, napi_enumerable, NULL},
      {"relay", NULL, Relay, NULL, NULL, NULL, napi_enumerable, NULL},
      {"connectStream", NULL, ConnectStream, NULL, NULL, NULL, napi_enumerable, NULL},
      {"socketError", NULL, SocketError, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof *props, props);
  napi_value v;
  napi_create_int32(env, ACCEPT_RECORD, &v);
  napi_set_named_property(env, exports, "ACCEPT_RECORD", v);
  napi_create_int32(env, MAX_FDS, &v);
  napi_set_named_property(env, exports, "MAX_FDS", v);
  napi_create_int32(env, DATAGRAM_RECORD, &v);
  napi_set_named_property(env, exports, "DATAGRAM_RECORD", v);
  napi_create_int32(env, DATAGRAM_SLOT, &v);
  napi_set_named_property(env, exports, "DATAGRAM_SLOT", v);
  napi_create_int32(env, SEND_RECORD, &v);
  napi_set_named_property(env, exports, "SEND_RECORD", v);
  napi_create_int32(env, DATAGRAM_BATCH, &v);
  napi_set_named_property(env, exports, "DATAGRAM_BATCH", v);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
