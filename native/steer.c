// Adopting a server's socket for kernel steering: a duplicate taken from its process (pidfd_getfd), what a
// socket is, and making it transparent so that steered connections to any address reach it.
#include "dispatcher.h"

#include <sys/syscall.h>
#include <unistd.h>

#include "napi_helpers.h"

// Linux 5.6; glibc wraps neither. The numbers are the same on every architecture but alpha.
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

// pidfdGetfd(pid, fd): a duplicate of descriptor `fd` of process `pid`. The kernel checks that the caller
// may ptrace the target (PTRACE_MODE_ATTACH_REALCREDS: EPERM if not) and returns it close-on-exec already.
napi_value PidfdGetfd(napi_env env, napi_callback_info info) {
  int32_t pid, fd;
  if (!args_parse(env, info, "pidfdGetfd(pid, fd)", "dd", &pid, &fd)) return NULL;
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd < 0) return throw_errno(env, errno, "pidfd_open");
  int got = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
  int err = errno;
  close(pidfd);
  if (got < 0) return throw_errno(env, err, "pidfd_getfd");
  return int_value(env, got);
}

static int get_option(int fd, int name, int *value) {
  socklen_t len = sizeof *value;
  return getsockopt(fd, SOL_SOCKET, name, value, &len);
}

// socketInfo(fd): [family 4 | 6 | 0, type 1 stream | 2 datagram | 0, listening 0 | 1].
napi_value SocketInfo(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!args_parse(env, info, "socketInfo(fd)", "d", &fd)) return NULL;
  int domain, type, listening;
  if (get_option(fd, SO_DOMAIN, &domain) < 0) return throw_errno(env, errno, "SO_DOMAIN");
  if (get_option(fd, SO_TYPE, &type) < 0) return throw_errno(env, errno, "SO_TYPE");
  if (get_option(fd, SO_ACCEPTCONN, &listening) < 0) return throw_errno(env, errno, "SO_ACCEPTCONN");
  int32_t values[3] = {domain == AF_INET ? 4 : domain == AF_INET6 ? 6 : 0, type == SOCK_STREAM ? 1 : type == SOCK_DGRAM ? 2 : 0, listening != 0};
  napi_value result;
  CHECK(napi_create_array_with_length(env, 3, &result));
  for (uint32_t i = 0; i < 3; i++) {
    napi_value v;
    CHECK(napi_create_int32(env, values[i], &v));
    CHECK(napi_set_element(env, result, i, v));
  }
  return result;
}

// setTransparent(fd, mark): the socket accepts connections and datagrams to any address that the steering
// sends it; a nonzero `mark` becomes its SO_MARK.
napi_value SetTransparent(napi_env env, napi_callback_info info) {
  int32_t fd, mark;
  if (!args_parse(env, info, "setTransparent(fd, mark)", "di", &fd, &mark)) return NULL;
  int domain;
  if (get_option(fd, SO_DOMAIN, &domain) < 0) return throw_errno(env, errno, "SO_DOMAIN");
  if (set_transparent(fd, domain) < 0) return throw_errno(env, errno, domain == AF_INET6 ? "IPV6_TRANSPARENT" : "IP_TRANSPARENT");
  if (mark != 0 && set_int(fd, SOL_SOCKET, SO_MARK, mark) < 0) return throw_errno(env, errno, "SO_MARK");
  return NULL;
}
