// Descriptors between processes over Unix sockets (SCM_RIGHTS), peer credentials, and closing.
//
// Ownership rules, which the typed wrapper (src/native/index.ts) documents:
// - sendFd never closes the descriptor it sends: on success the kernel holds a reference for the receiver
//   and the caller closes its own; on any error (EAGAIN included) nothing was sent and the caller still owns
//   it. A partial send cannot happen on SOCK_SEQPACKET: a message goes whole or not at all.
// - sendConnections closes the descriptors of the messages that went (the hand-off's close, in the same
//   call); those of the messages that did not are still the caller's.
// - recvMsg returns every descriptor that arrived, or closes them all and reports an error (MSG_CTRUNC,
//   MSG_TRUNC), so a descriptor is never left open without an owner.
#include "dispatcher.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "napi_helpers.h"
#include "records.h"

// acceptUnix(listenFd, out: Int32Array(4)): 1 with [fd, pid, uid, gid] (SO_PEERCRED), 0 on EAGAIN, or -errno.
// The accepted socket refuses descriptors (SO_PASSRIGHTS 0) where the kernel can: the daemon only sends on
// its accepted ends, and a descriptor a peer slips in would otherwise be the daemon's to close, on the
// loop thread (a lingering TCP socket's close can block for seconds). Older kernels say ENOPROTOOPT.
napi_value AcceptUnix(napi_env env, napi_callback_info info) {
  int32_t lfd;
  array_t record;
  if (!args_parse(env, info, "acceptUnix(fd, out: Int32Array(4))", "iw", &lfd, &record, CRED_RECORD)) return NULL;
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
  int32_t *out = record.data;
  out[CRED_FD] = fd;
  out[CRED_PID] = cred.pid;
  out[CRED_UID] = (int32_t)cred.uid;
  out[CRED_GID] = (int32_t)cred.gid;
  return int_value(env, 1);
}

// sendFd(sock, data: Uint8Array, fd): bytes sent, or -errno (-EAGAIN when the peer's buffer is full). With
// fd < 0 the message carries no descriptor. Never blocks, never raises SIGPIPE, never closes `fd`.
napi_value SendFd(napi_env env, napi_callback_info info) {
  int32_t sock, fd;
  array_t bytes;
  if (!args_parse(env, info, "sendFd(sock, data: Uint8Array, fd)", "iui", &sock, &bytes, 0, &fd)) return NULL;
  struct iovec iov = {.iov_base = bytes.data, .iov_len = bytes.length};
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

// An address block's text as formatAddress (src/bindings/address.ts) writes it: dotted IPv4 (an unknown
// family too, as addressText reads it), or RFC 5952 IPv6 (lower case, no leading zeros, the first longest
// run of two or more zero groups as "::", never a dotted tail). Returns the length; `out` holds 40 bytes.
static int format_address(const int32_t *block, char *out) {
  const uint32_t *w = (const uint32_t *)(block + ADDRESS_WORDS);
  if (block[ADDRESS_FAMILY] != 6)
    return sprintf(out, "%u.%u.%u.%u", w[0] >> 24, (w[0] >> 16) & 255, (w[0] >> 8) & 255, w[0] & 255);
  uint16_t g[8];
  for (int i = 0; i < 4; i++) {
    g[2 * i] = (uint16_t)(w[i] >> 16);
    g[2 * i + 1] = (uint16_t)(w[i] & 0xffff);
  }
  int run_at = -1, run_length = 1;
  for (int i = 0; i < 8;) {
    int j = i;
    while (j < 8 && g[j] == 0) j++;
    if (j - i > run_length) run_at = i, run_length = j - i;
    i = j == i ? i + 1 : j;
  }
  int n = 0;
  for (int i = 0; i < 8; i++) {
    if (i == run_at) {
      out[n++] = ':';
      out[n++] = ':';
      i += run_length - 1;
      continue;
    }
    if (n > 0 && out[n - 1] != ':') out[n++] = ':';
    n += sprintf(out + n, "%x", g[i]);
  }
  out[n] = '\0';
  return n;
}

// Messages per sendmmsg: a listener's accept batch.
#define SEND_CONNECTIONS_CHUNK 64
// The longest prefix taken: the connection header up to the client's address, with a 64-character label.
#define CONNECTION_PREFIX_MAX 256
// The rest of a header: two addresses of at most 39 characters, two ports, and the JSON around them.
#define CONNECTION_TAIL 160

// sendConnections(sock, prefix: Uint8Array, records: Int32Array, count): hands off `count` accept records
// (records.h) as connection messages, with sendmmsg: each message is `prefix` (the header up to and
// including `"client":{"address":"`) followed by the client's address and port and the local ones, and
// carries the record's descriptor. Returns how many went, whole and in order (a SOCK_SEQPACKET message goes
// whole or not at all); their descriptors are closed here, saving a call per connection. The rest (from an
// EAGAIN part-way, or any error) are still the caller's. -errno when the first failed.
napi_value SendConnections(napi_env env, napi_callback_info info) {
  int32_t sock, count;
  array_t prefix, records;
  if (!args_parse(env, info, "sendConnections(sock, prefix: Uint8Array, records: Int32Array, count)", "iuwi", &sock, &prefix, 0, &records, 0, &count)) return NULL;
  if (prefix.length > CONNECTION_PREFIX_MAX) return args_invalid(env, "sendConnections(sock, prefix: at most 256 bytes, records, count)", 1);
  if (count < 0 || (size_t)count > records.length / ACCEPT_RECORD) return args_invalid(env, "sendConnections(sock, prefix, records, count: 0..records)", 3);
  const int32_t *all = records.data;
  int sent = 0;
  while (sent < count) {
    struct mmsghdr msgs[SEND_CONNECTIONS_CHUNK];
    struct iovec iov[SEND_CONNECTIONS_CHUNK][2];
    char tails[SEND_CONNECTIONS_CHUNK][CONNECTION_TAIL];
    union {
      char buf[CMSG_SPACE(sizeof(int))];
      struct cmsghdr align;
    } control[SEND_CONNECTIONS_CHUNK];
    int n = count - sent < SEND_CONNECTIONS_CHUNK ? count - sent : SEND_CONNECTIONS_CHUNK;
    for (int i = 0; i < n; i++) {
      const int32_t *r = all + (size_t)(sent + i) * ACCEPT_RECORD;
      char client[40], local[40];
      format_address(r + ACCEPT_PEER, client);
      format_address(r + ACCEPT_LOCAL, local);
      int len = snprintf(tails[i], CONNECTION_TAIL, "%s\",\"port\":%d},\"local\":{\"address\":\"%s\",\"port\":%d}}", client,
                         r[ACCEPT_PEER + ADDRESS_PORT], local, r[ACCEPT_LOCAL + ADDRESS_PORT]);
      iov[i][0] = (struct iovec){.iov_base = prefix.data, .iov_len = prefix.length};
      iov[i][1] = (struct iovec){.iov_base = tails[i], .iov_len = (size_t)len};
      memset(&control[i], 0, sizeof control[i]);
      msgs[i].msg_hdr = (struct msghdr){.msg_iov = iov[i], .msg_iovlen = 2, .msg_control = control[i].buf, .msg_controllen = sizeof control[i].buf};
      msgs[i].msg_len = 0;
      struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      memcpy(CMSG_DATA(c), &r[ACCEPT_FD], sizeof(int));
    }
    int k;
    do k = sendmmsg(sock, msgs, (unsigned)n, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (k < 0 && errno == EINTR);
    if (k < 0) {
      if (sent == 0) return int_value(env, -errno);
      break;
    }
    // The receiver holds its own reference to each sent descriptor now.
    for (int i = 0; i < k; i++) close(all[(size_t)(sent + i) * ACCEPT_RECORD + ACCEPT_FD]);
    sent += k;
    if (k < n) break;
  }
  return int_value(env, sent);
}

// The descriptors of a received message into fds[1..MAX_FDS]; how many.
static int take_fds(struct msghdr *msg, int32_t *fds) {
  int count = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    for (int i = 0; i < k; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (count < MAX_FDS) fds[1 + count++] = fd;
      else close(fd);  // cannot happen with a control buffer of MAX_FDS, but never leak
    }
  }
  return count;
}

// recvMsg(sock, data: Uint8Array, fds: Int32Array(MAX_FDS + 1)): bytes received (0: the peer closed), or
// -errno (-EAGAIN: nothing waiting). fds[0] is how many descriptors arrived, fds[1..] the descriptors,
// close-on-exec. A message whose data or descriptors did not fit has every descriptor closed and gives
// -EMSGSIZE.
napi_value RecvMsg(napi_env env, napi_callback_info info) {
  int32_t sock;
  array_t bytes, received;
  if (!args_parse(env, info, "recvMsg(sock, data: Uint8Array, fds: Int32Array(9))", "iuw", &sock, &bytes, 0, &received, MAX_FDS + 1)) return NULL;
  int32_t *fds = received.data;
  fds[0] = 0;
  struct iovec iov = {.iov_base = bytes.data, .iov_len = bytes.length};
  union {
    char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
    struct cmsghdr align;
  } control;
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
  ssize_t n;
  do n = recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return int_value(env, -errno);
  int count = take_fds(&msg, fds);
  if (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) {
    for (int i = 0; i < count; i++) close(fds[1 + i]);
    return int_value(env, -EMSGSIZE);
  }
  fds[0] = count;
  return int_value(env, n);
}

// peerCred(fd): [pid, uid, gid] of the process that connected (or -errno as a number).
napi_value PeerCred(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!args_parse(env, info, "peerCred(fd)", "i", &fd)) return NULL;
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return int_value(env, -errno);
  const int64_t values[3] = {cred.pid, cred.uid, cred.gid};
  napi_value arr, v;
  CHECK(napi_create_array_with_length(env, 3, &arr));
  for (uint32_t i = 0; i < 3; i++) {
    if ((v = int_value(env, values[i])) == NULL) return NULL;
    CHECK(napi_set_element(env, arr, i, v));
  }
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
    rc = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (rc == 0) rc = pthread_attr_setstacksize(&attr, 65536);
    if (rc == 0) rc = pthread_create(&thread, &attr, close_thread, (void *)(intptr_t)fd);
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
  int32_t fd;
  if (!args_parse(env, info, reset ? "reset(fd)" : "close(fd)", "d", &fd)) return NULL;
  if (reset) {
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l) < 0 && errno == ENOTSOCK) return int_value(env, close_aside(fd));
  }
  return int_value(env, close(fd) < 0 && errno != EINTR ? -errno : 0);
}

napi_value Close(napi_env env, napi_callback_info info) { return fd_call(env, info, 0); }
napi_value Reset(napi_env env, napi_callback_info info) { return fd_call(env, info, 1); }
