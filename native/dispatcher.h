// The dispatcher's native layer: only what Node has no API for. Descriptor passing (SCM_RIGHTS), peer
// credentials (SO_PEERCRED), batch accept with the local address, SOCK_SEQPACKET sockets, reset-on-close,
// and a readiness watcher on a raw descriptor (libuv's uv_poll) so that JavaScript can drive them.
// One file per concern: address, listen, fdpass, watch, udp, relay, steer, notify; init.c registers the exports.
//
// Ownership rules, which the typed wrapper (src/native/index.ts) documents:
// - A call that returns a descriptor gives it to the caller; nothing here keeps a copy.
// - sendFd, sendConnections and recvMsg: see fdpass.c. relay: see relay.c.
#ifndef DISPATCHER_H
#define DISPATCHER_H

#include <errno.h>
#include <netinet/in.h>
#include <node_api.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <uv.h>

// The longest Unix socket path, with room for the NUL that tells a cut one apart.
#define PATH_BUFFER (sizeof(((struct sockaddr_un *)0)->sun_path) + 1)

// address.c
// An IP address (text) and port as a socket address; 0 if the text is neither IPv6 nor IPv4.
socklen_t parse_inet(const char *address, int32_t port, struct sockaddr_storage *ss);
// A Unix socket address for `path`: 0, or -1 if the path is too long.
int unix_address(const char *path, struct sockaddr_un *sun);
void put_address(const struct sockaddr_storage *ss, int32_t *block);
socklen_t make_address(const int32_t *block, int v6_socket, struct sockaddr_storage *ss);

static inline int set_int(int fd, int level, int name, int value) { return setsockopt(fd, level, name, &value, sizeof value); }

// IP_TRANSPARENT, or IPV6_TRANSPARENT for AF_INET6: both set the one transparent bit of the socket, so a
// dual-stack socket is transparent to IPv4 as well.
static inline int set_transparent(int fd, int family) {
  return family == AF_INET6 ? set_int(fd, SOL_IPV6, IPV6_TRANSPARENT, 1) : set_int(fd, SOL_IP, IP_TRANSPARENT, 1);
}

// listenInet's flags (src/native/index.ts: LISTEN_*).
#define LISTEN_TRANSPARENT 1
#define LISTEN_UDP 2
#define LISTEN_REUSEPORT 4

// Linux 6.16 lets a Unix socket refuse descriptors (a sender's SCM_RIGHTS then fails with EPERM); older
// headers lack the name. 83 is asm-generic's value; alpha, mips, parisc and sparc number it otherwise.
#if !defined(SO_PASSRIGHTS) && !defined(__alpha__) && !defined(__mips__) && !defined(__hppa__) && !defined(__sparc__)
#define SO_PASSRIGHTS 83
#endif

// 0, or -1 with errno; an old kernel (ENOPROTOOPT) or an architecture whose number is unknown passes.
static inline int refuse_rights(int fd) {
#ifdef SO_PASSRIGHTS
  if (set_int(fd, SOL_SOCKET, SO_PASSRIGHTS, 0) < 0 && errno != ENOPROTOOPT) return -1;
#else
  (void)fd;
#endif
  return 0;
}


// watch.c
void call_js(napi_env env, napi_ref callback, size_t argc, const double *values);

// The entry points, registered by init.c.
napi_value ListenInet(napi_env env, napi_callback_info info);
napi_value ListenSeqpacket(napi_env env, napi_callback_info info);
napi_value ConnectSeqpacket(napi_env env, napi_callback_info info);
napi_value ConnectStream(napi_env env, napi_callback_info info);
napi_value SockName(napi_env env, napi_callback_info info);
napi_value AcceptBatch(napi_env env, napi_callback_info info);
napi_value AcceptUnix(napi_env env, napi_callback_info info);
napi_value SendFd(napi_env env, napi_callback_info info);
napi_value SendConnections(napi_env env, napi_callback_info info);
napi_value RecvMsg(napi_env env, napi_callback_info info);
napi_value PeerCred(napi_env env, napi_callback_info info);
napi_value Close(napi_env env, napi_callback_info info);
napi_value Reset(napi_env env, napi_callback_info info);
napi_value Watch(napi_env env, napi_callback_info info);
napi_value SetEvents(napi_env env, napi_callback_info info);
napi_value Unwatch(napi_env env, napi_callback_info info);
napi_value RecvDatagrams(napi_env env, napi_callback_info info);
napi_value SendDatagrams(napi_env env, napi_callback_info info);
napi_value SetBufferSizes(napi_env env, napi_callback_info info);
napi_value Relay(napi_env env, napi_callback_info info);
napi_value PidfdGetfd(napi_env env, napi_callback_info info);
napi_value SocketInfo(napi_env env, napi_callback_info info);
napi_value SetTransparent(napi_env env, napi_callback_info info);

// notify.c
napi_value Notify(napi_env env, napi_callback_info info);
napi_value Inherited(napi_env env, napi_callback_info info);

#endif
