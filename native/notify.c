// systemd's notification protocol (sd_notify): one datagram to $NOTIFY_SOCKET, an AF_UNIX SOCK_DGRAM
// socket that Node cannot address, optionally with descriptors for the service's descriptor store
// (FDSTORE=1). A path starting with '@' is in the abstract namespace, as systemd writes it.
#include "dispatcher.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "napi_helpers.h"

// The most descriptors one notification carries: systemd accepts up to SCM_MAX_FD (253) per message.
#define MAX_NOTIFY_FDS 253

// notify(path, message: Uint8Array, fds: Int32Array, count): bytes sent, or -errno. Never closes `fds`.
napi_value Notify(napi_env env, napi_callback_info info) {
  char path[PATH_BUFFER];
  size_t len;
  array_t message, fds;
  int32_t count;
  if (!args_parse(env, info, "notify(path, message: Uint8Array, fds: Int32Array, count)", "suwi", path, sizeof path, &len, &message, 0,
                  &fds, 0, &count)) {
    return NULL;
  }
  if (count < 0 || count > MAX_NOTIFY_FDS || (size_t)count > fds.length) return args_invalid(env, "notify(path, message, fds, count)", 3);
  struct sockaddr_un sun;
  if (len == 0 || unix_address(path, &sun) < 0) return int_value(env, -EINVAL);
  socklen_t sunlen = offsetof(struct sockaddr_un, sun_path) + len;
  if (path[0] == '@') sun.sun_path[0] = '\0';
  else sunlen += 1;
  int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return int_value(env, -errno);
  struct iovec iov = {.iov_base = message.data, .iov_len = message.length};
  struct msghdr msg = {.msg_name = &sun, .msg_namelen = sunlen, .msg_iov = &iov, .msg_iovlen = 1};
  union {
    char buf[CMSG_SPACE(sizeof(int) * MAX_NOTIFY_FDS)];
    struct cmsghdr align;
  } control;
  if (count > 0) {
    memset(&control, 0, sizeof control);
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * count);
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * count);
    memcpy(CMSG_DATA(cmsg), fds.data, sizeof(int) * count);
  }
  ssize_t n;
  do n = sendmsg(sock, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  int err = errno;
  close(sock);
  return int_value(env, n < 0 ? -err : (int32_t)n);
}

// inherited(fd): 0 or -errno. A descriptor systemd passed (LISTEN_FDS) comes blocking and inheritable: the
// daemon's accept loops need O_NONBLOCK, and the commands it runs (nft) must not inherit its sockets.
napi_value Inherited(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!args_parse(env, info, "inherited(fd)", "d", &fd)) return NULL;
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) return int_value(env, -errno);
  return int_value(env, 0);
}
