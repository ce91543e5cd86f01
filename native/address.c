// Socket addresses and the address block of the records ([family, w0..w3, port], records.h).
#include "dispatcher.h"

#include <arpa/inet.h>
#include <string.h>

#include "records.h"

socklen_t parse_inet(const char *address, int32_t port, struct sockaddr_storage *ss) {
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

int unix_address(const char *path, struct sockaddr_un *sun) {
  memset(sun, 0, sizeof *sun);
  sun->sun_family = AF_UNIX;
  if (strlen(path) >= sizeof sun->sun_path) return -1;
  strcpy(sun->sun_path, path);
  return 0;
}

// Writes an address block; IPv4-mapped IPv6 becomes IPv4, so the table sees the family the client really
// used. Any other family (AF_UNSPEC: getsockname failed, or no destination came) gives family 0.
void put_address(const struct sockaddr_storage *ss, int32_t *block) {
  memset(block, 0, ADDRESS_BLOCK * sizeof *block);
  int32_t *words = block + ADDRESS_WORDS;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
    block[ADDRESS_FAMILY] = 4;
    words[0] = (int32_t)ntohl(s4->sin_addr.s_addr);
    block[ADDRESS_PORT] = ntohs(s4->sin_port);
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
    const uint8_t *b = s6->sin6_addr.s6_addr;
    uint32_t w[4];
    for (int i = 0; i < 4; i++) w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 | (uint32_t)b[4 * i + 2] << 8 | b[4 * i + 3];
    if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
      block[ADDRESS_FAMILY] = 4;
      words[0] = (int32_t)w[3];
    } else {
      block[ADDRESS_FAMILY] = 6;
      for (int i = 0; i < 4; i++) words[i] = (int32_t)w[i];
    }
    block[ADDRESS_PORT] = ntohs(s6->sin6_port);
  }
}

// The socket address of an address block, for a socket of the given family: IPv4 through a dual-stack
// (AF_INET6) socket is written IPv4-mapped.
socklen_t make_address(const int32_t *block, int v6_socket, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  uint8_t bytes[16];
  for (int i = 0; i < 4; i++) {
    uint32_t w = (uint32_t)block[ADDRESS_WORDS + i];
    bytes[4 * i] = (uint8_t)(w >> 24);
    bytes[4 * i + 1] = (uint8_t)(w >> 16);
    bytes[4 * i + 2] = (uint8_t)(w >> 8);
    bytes[4 * i + 3] = (uint8_t)w;
  }
  uint16_t port = htons((uint16_t)block[ADDRESS_PORT]);
  if (block[ADDRESS_FAMILY] == 4 && !v6_socket) {
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    memcpy(&s4->sin_addr, bytes, 4);
    s4->sin_port = port;
    return sizeof *s4;
  }
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
  s6->sin6_family = AF_INET6;
  if (block[ADDRESS_FAMILY] == 4) {  // IPv4 through a dual-stack socket: ::ffff:a.b.c.d
    s6->sin6_addr.s6_addr[10] = s6->sin6_addr.s6_addr[11] = 0xff;
    memcpy(&s6->sin6_addr.s6_addr[12], bytes, 4);
  } else {
    memcpy(&s6->sin6_addr, bytes, 16);
  }
  s6->sin6_port = port;
  return sizeof *s6;
}
