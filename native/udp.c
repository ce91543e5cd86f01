// UDP the way the dispatcher needs it: batches of datagrams with each one's destination address
// (IP_ORIGDSTADDR, right for ports and tproxy mode alike), and batches of replies from a chosen source.
#include "dispatcher.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>

#include "napi_helpers.h"
#include "records.h"

// The destination a received datagram was sent to (IP_ORIGDSTADDR / IPV6_ORIGDSTADDR); AF_UNSPEC if the
// kernel gave none.
static void original_destination(struct msghdr *msg, struct sockaddr_storage *dst) {
  memset(dst, 0, sizeof *dst);
  for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
    if ((c->cmsg_level == SOL_IP && c->cmsg_type == IP_ORIGDSTADDR) || (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_ORIGDSTADDR)) {
      memcpy(dst, CMSG_DATA(c), c->cmsg_len - CMSG_LEN(0) < sizeof *dst ? c->cmsg_len - CMSG_LEN(0) : sizeof *dst);
    }
  }
}

// recvDatagrams(fd, data: Uint8Array(count * 65536), meta: Int32Array(count * 13), count): datagrams
// received (0: none waiting) or -errno. Datagram i is at data[i * DATAGRAM_SLOT], its datagram record at
// meta[i * DATAGRAM_RECORD]; the destination is the address and port the client sent to.
napi_value RecvDatagrams(napi_env env, napi_callback_info info) {
  int32_t fd, count;
  array_t data, meta;
  if (!args_parse(env, info, "recvDatagrams(fd, data: Uint8Array, meta: Int32Array, count)", "iuwi", &fd, &data, 0, &meta, 0, &count)) return NULL;
  // Clamped to [0, DATAGRAM_BATCH] and to the records the arrays hold: the batch lives on the stack.
  if (count < 0) count = 0;
  if (count > DATAGRAM_BATCH) count = DATAGRAM_BATCH;
  if ((size_t)count > data.length / DATAGRAM_SLOT) count = (int32_t)(data.length / DATAGRAM_SLOT);
  if ((size_t)count > meta.length / DATAGRAM_RECORD) count = (int32_t)(meta.length / DATAGRAM_RECORD);
  struct mmsghdr msgs[DATAGRAM_BATCH];
  struct iovec iovs[DATAGRAM_BATCH];
  struct sockaddr_storage sources[DATAGRAM_BATCH];
  union {
    char buf[CMSG_SPACE(sizeof(struct sockaddr_in6)) * 2];
    struct cmsghdr align;
  } controls[DATAGRAM_BATCH];
  memset(msgs, 0, sizeof msgs[0] * (size_t)count);
  for (int i = 0; i < count; i++) {
    iovs[i].iov_base = (uint8_t *)data.data + (size_t)i * DATAGRAM_SLOT;
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
  for (int i = 0; i < n; i++) {
    int32_t *r = (int32_t *)meta.data + i * DATAGRAM_RECORD;
    r[DATAGRAM_LENGTH] = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) ? -EMSGSIZE : (int32_t)msgs[i].msg_len;
    put_address(&sources[i], r + DATAGRAM_SOURCE);
    struct sockaddr_storage dst;
    original_destination(&msgs[i].msg_hdr, &dst);
    put_address(&dst, r + DATAGRAM_DESTINATION);  // family 0 if the kernel gave no destination
  }
  return int_value(env, n);
}

typedef union {
  char buf[CMSG_SPACE(sizeof(struct in6_pktinfo))];
  struct cmsghdr align;
} pktinfo_control_t;

// Names a reply's source address (IP_PKTINFO / IPV6_PKTINFO) in `m`'s control data; its port is the socket's.
static void set_source(struct msghdr *m, pktinfo_control_t *control, const int32_t *source, int v6) {
  struct sockaddr_storage src;
  make_address(source, v6, &src);
  m->msg_control = control->buf;
  m->msg_controllen = v6 ? CMSG_SPACE(sizeof(struct in6_pktinfo)) : CMSG_SPACE(sizeof(struct in_pktinfo));
  struct cmsghdr *c = CMSG_FIRSTHDR(m);
  c->cmsg_level = v6 ? SOL_IPV6 : SOL_IP;
  c->cmsg_type = v6 ? IPV6_PKTINFO : IP_PKTINFO;
  if (v6) {
    c->cmsg_len = CMSG_LEN(sizeof(struct in6_pktinfo));
    struct in6_pktinfo pi = {.ipi6_addr = ((struct sockaddr_in6 *)&src)->sin6_addr};
    memcpy(CMSG_DATA(c), &pi, sizeof pi);
  } else {
    c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
    struct in_pktinfo pi = {.ipi_spec_dst = ((struct sockaddr_in *)&src)->sin_addr};
    memcpy(CMSG_DATA(c), &pi, sizeof pi);
  }
}

// sendDatagrams(fd, data: Uint8Array, records: Int32Array, count, v6): datagrams sent (sendmmsg, so a batch
// of replies costs one system call), or -errno if none was. Each send record names its bytes in `data`, its
// destination and its source address (not port: that is the socket's), set when its family is not 0.
// `v6` says the socket is AF_INET6 (the caller knows; asking the kernel each time cost a system call).
napi_value SendDatagrams(napi_env env, napi_callback_info info) {
  const char *usage = "sendDatagrams(fd, data: Uint8Array, records: Int32Array, count <= 32, v6)";
  int32_t fd, count;
  array_t data, records;
  bool v6;
  if (!args_parse(env, info, usage, "iuwib", &fd, &data, 0, &records, 0, &count, &v6)) return NULL;
  if (count < 0 || count > DATAGRAM_BATCH || (size_t)count * SEND_RECORD > records.length) return args_invalid(env, usage, 3);
  struct mmsghdr msgs[DATAGRAM_BATCH];
  struct iovec iovs[DATAGRAM_BATCH];
  struct sockaddr_storage dsts[DATAGRAM_BATCH];
  pktinfo_control_t controls[DATAGRAM_BATCH];
  memset(msgs, 0, sizeof msgs[0] * (size_t)count);
  memset(controls, 0, sizeof controls[0] * (size_t)count);
  for (int i = 0; i < count; i++) {
    const int32_t *r = (const int32_t *)records.data + i * SEND_RECORD;
    if (r[SEND_OFFSET] < 0 || r[SEND_LENGTH] < 0 || (size_t)r[SEND_OFFSET] + (size_t)r[SEND_LENGTH] > data.length) {
      napi_throw_range_error(env, "ERR_INVALID_ARG", "sendDatagrams: a record lies outside the data");
      return NULL;
    }
    iovs[i].iov_base = (uint8_t *)data.data + r[SEND_OFFSET];
    iovs[i].iov_len = (size_t)r[SEND_LENGTH];
    struct msghdr *m = &msgs[i].msg_hdr;
    m->msg_iov = &iovs[i];
    m->msg_iovlen = 1;
    m->msg_name = &dsts[i];
    m->msg_namelen = make_address(r + SEND_DESTINATION, v6, &dsts[i]);
    if (r[SEND_SOURCE + ADDRESS_FAMILY] != 0) set_source(m, &controls[i], r + SEND_SOURCE, v6);
  }
  int n;
  do n = sendmmsg(fd, msgs, (unsigned)count, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return int_value(env, n < 0 ? -errno : n);
}

// Sets a socket buffer to `bytes`: SO_xxxBUFFORCE first (root or CAP_NET_ADMIN: past net.core.rmem_max /
// wmem_max), else SO_xxxBUF, which the kernel caps at those. The size the kernel then reports (it doubles
// what it was given, for its bookkeeping), or -errno.
static int size_buffer(int fd, int force, int plain, int bytes) {
  if (set_int(fd, SOL_SOCKET, force, bytes) < 0 && set_int(fd, SOL_SOCKET, plain, bytes) < 0) return -errno;
  int size = 0;
  socklen_t len = sizeof size;
  return getsockopt(fd, SOL_SOCKET, plain, &size, &len) < 0 ? -errno : size;
}

// setBufferSizes(fd, receive, send): a socket's receive and send buffers sized for bursts (0 leaves one as
// it is). [receive, send] as the kernel reports them afterwards, or -errno of the first that failed.
napi_value SetBufferSizes(napi_env env, napi_callback_info info) {
  int32_t fd, receive, send;
  if (!args_parse(env, info, "setBufferSizes(fd, receive >= 0, send >= 0)", "dii", &fd, &receive, &send)) return NULL;
  if (receive < 0) return args_invalid(env, "setBufferSizes(fd, receive >= 0, send >= 0)", 1);
  if (send < 0) return args_invalid(env, "setBufferSizes(fd, receive >= 0, send >= 0)", 2);
  int r = receive > 0 ? size_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, receive) : 0;
  if (r < 0) return int_value(env, r);
  int s = send > 0 ? size_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, send) : 0;
  if (s < 0) return int_value(env, s);
  napi_value out, rv, sv;
  CHECK(napi_create_array_with_length(env, 2, &out));
  CHECK(napi_create_int32(env, r, &rv));
  CHECK(napi_create_int32(env, s, &sv));
  CHECK(napi_set_element(env, out, 0, rv));
  CHECK(napi_set_element(env, out, 1, sv));
  return out;
}
