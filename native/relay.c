// Proxy mode's byte copying: splice(2) between the client's and the upstream's sockets through a pipe per
// direction, so the bytes never enter user space. Half-close is passed on (a direction that ends is shut
// down for writing on the other side, the other direction keeps flowing); an error ends both.
//
// Proxy mode hands over the upstream socket with its connect still under way: the relay waits for it in
// the same epoll set, enforces the connect timeout, sends the PROXY header and only then reads the client.
//
// Per connection this costs no more system calls than it must (measured with strace -c, proxy mode made
// 24 epoll_ctl, 11 splice, 6 close, 2 pipe2 and 3 ioctl calls a connection with a libuv poll handle per
// socket, then 10 epoll_ctl with a libuv watcher for the connect and 2 shutdown; now 4 epoll_ctl, 7 splice,
// 2 close and 1 shutdown):
// - One epoll set for every relay, watched by one libuv handle. Each socket is added once, edge-triggered
//   for both directions, and never modified: a pump runs until the kernel says EAGAIN, which re-arms the edge.
//   The upstream's first writable edge is its connect's end; the client's edges are noted until then.
// - Connecting relays wait in one list ordered by deadline, under one timer (no timer per connection).
// - Pipes come from a pool and go back to it only empty; one with bytes left in it is closed.
// An idle second (no relay open) releases the pool and the epoll set: an idle daemon holds no descriptor here.
#include "dispatcher.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "napi_helpers.h"

// The default pipe capacity. Raising it to 1 MiB (F_SETPIPE_SZ) gained nothing in bulk and cost each
// connection a system call and a larger allocation.
#define RELAY_PIPE 65536
// Pipes kept for reuse: two a relay, so 128 relays' worth, 512 descriptors at most.
#define POOL_PIPES 256
// Events taken a wake-up; more wait for the next (the epoll descriptor stays readable).
#define BATCH 64
#define IDLE_MS 1000
// The longest PROXY header: v1's is at most 107 bytes, v2's for IPv6 52.
#define MAX_HEADER 108
// done()'s status for a connect that failed before the relay began (below zero: the connect's -errno).
#define TIMED_OUT 2
#define HEADER_UNSENT 3

typedef struct {
  int r, w;
} pipe_t;

typedef struct {
  int from, to;
  pipe_t pipe;
  size_t in_pipe, cap;
  int eof, done;
  int stalled;  // the pipe took nothing while holding bytes: read again only once some have left it
  // What the epoll set said of `from` and `to` and no EAGAIN has contradicted since: a splice the kernel
  // would refuse is not made (each event pumped both directions, half of the splices failing).
  int readable, writable;
  double bytes;
} direction_t;

typedef struct relay {
  int a, b;
  direction_t ab, ba;
  napi_env env;
  napi_ref callback;
  int finished;
  struct relay *next_dead;  // finished this batch: freed once the batch's events are handled
  // While b's connect is under way: its deadline (the loop's ms), its place in the hub's waiting list and
  // the header to send once it is made.
  int connecting;
  uint64_t deadline;
  struct relay *prev_wait, *next_wait;
  size_t header_len;
  uint8_t header[MAX_HEADER];
} relay_t;

// The shared part, made by the first relay and released when idle. Its handles are closed (and it freed)
// once both close callbacks have run.
typedef struct {
  uv_poll_t poll;
  uv_timer_t idle;
  uv_timer_t wait;  // due at the first waiting relay's deadline, or earlier
  int epfd;
  int relays;  // open
  int closes;
  relay_t *dead;
  relay_t *waiting, *waiting_last;  // connecting, by deadline
  pipe_t pool[POOL_PIPES];
  int pooled;
} hub_t;

static hub_t *hub;

static int take_pipe(pipe_t *p) {
  if (hub->pooled > 0) {
    *p = hub->pool[--hub->pooled];
    return 0;
  }
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) return -errno;
  *p = (pipe_t){fds[0], fds[1]};
  return 0;
}

// A pipe goes back to the pool only empty: bytes left in it would reach the next connection.
static void give_pipe(pipe_t *p, size_t in_pipe) {
  if (p->r < 0) return;
  if (in_pipe == 0 && hub->pooled < POOL_PIPES) {
    hub->pool[hub->pooled++] = *p;
  } else {
    close(p->r);
    close(p->w);
  }
  p->r = p->w = -1;
}

// Moves what it can; returns -1 on a socket error. `last`: the other direction is done, so the relay is
// about to close both sockets, and the close passes on the end (a FIN: both sockets have been read to
// their end) without a shutdown.
// EAGAIN from the splice into the pipe means "the socket is empty" or "the pipe is full", and a pipe is
// full after 16 small reads (one buffer each), long before `cap` bytes. With bytes in the pipe it is taken
// as full: the direction stops reading (stalled) until some leave. Waiting for readable instead spun a
// core, the socket staying readable while the pipe took nothing.
static int pump(direction_t *d, int last) {
  for (;;) {
    int progress = 0;
    if (d->readable && !d->eof && !d->stalled && d->in_pipe < d->cap) {
      ssize_t n = splice(d->from, NULL, d->pipe.w, NULL, d->cap - d->in_pipe, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
      if (n > 0) {
        d->in_pipe += (size_t)n;
        progress = 1;
      } else if (n == 0) {
        d->eof = 1;
      } else if (errno == EAGAIN) {
        // With bytes in the pipe, EAGAIN may mean a full pipe: the socket may hold more, and stays readable.
        d->stalled = d->in_pipe > 0;
        d->readable = d->stalled;
      } else if (errno != EINTR) {
        return -1;
      }
    }
    if (d->writable && d->in_pipe > 0) {
      ssize_t m = splice(d->pipe.r, NULL, d->to, NULL, d->in_pipe, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
      if (m > 0) {
        d->in_pipe -= (size_t)m;
        d->bytes += (double)m;
        d->stalled = 0;
        progress = 1;
      } else if (m < 0 && errno == EAGAIN) {
        d->writable = 0;
      } else if (m < 0 && errno != EINTR) {
        return -1;
      }
    }
    if (d->eof && d->in_pipe == 0 && !d->done) {
      if (!last) (void)shutdown(d->to, SHUT_WR);  // fails only if the far side is gone, which its own splice reports
      d->done = 1;
    }
    if (!progress) return 0;
  }
}

static void hub_closed(uv_handle_t *h) {
  hub_t *g = h->data;
  if (++g->closes == 3) free(g);
}

// Idle for IDLE_MS: the pool's pipes and the epoll set go (the next relay makes them again).
static void hub_release(uv_timer_t *t) {
  hub_t *g = t->data;
  if (g->relays > 0) return;
  while (g->pooled > 0) {
    pipe_t *p = &g->pool[--g->pooled];
    close(p->r);
    close(p->w);
  }
  uv_close((uv_handle_t *)&g->poll, hub_closed);  // before its descriptor is closed, as libuv asks
  close(g->epfd);
  uv_close((uv_handle_t *)&g->idle, hub_closed);
  uv_close((uv_handle_t *)&g->wait, hub_closed);
  hub = NULL;
}

static void relay_ended(void) {
  // The poll handle keeps the loop alive only while relays are open.
  if (--hub->relays == 0) {
    uv_unref((uv_handle_t *)&hub->poll);
    uv_timer_start(&hub->idle, hub_release, IDLE_MS, 0);
  }
}

static void unlink_waiting(relay_t *r) {
  if (r->prev_wait != NULL) r->prev_wait->next_wait = r->next_wait;
  else hub->waiting = r->next_wait;
  if (r->next_wait != NULL) r->next_wait->prev_wait = r->prev_wait;
  else hub->waiting_last = r->prev_wait;
  r->connecting = 0;
}

// Takes the sockets out of the set, closes b (and a unless `keep_a`), returns the pipes and calls back;
// freed once the batch's events are handled, some of which may still name it.
static void relay_finish(relay_t *r, int keep_a, int status) {
  r->finished = 1;
  if (r->connecting) unlink_waiting(r);
  // Out of the set before the close: a descriptor duplicated elsewhere would stay in it and report events.
  (void)epoll_ctl(hub->epfd, EPOLL_CTL_DEL, r->a, NULL);
  (void)epoll_ctl(hub->epfd, EPOLL_CTL_DEL, r->b, NULL);
  if (!keep_a) close(r->a);
  close(r->b);
  give_pipe(&r->ab.pipe, r->ab.in_pipe);
  give_pipe(&r->ba.pipe, r->ba.in_pipe);
  r->next_dead = hub->dead;
  hub->dead = r;
  relay_ended();
  const double args[3] = {r->ab.bytes, r->ba.bytes, status};
  call_js(r->env, r->callback, 3, args);
  napi_delete_reference(r->env, r->callback);
}

static void free_dead(hub_t *g) {
  while (g->dead != NULL) {
    relay_t *r = g->dead;
    g->dead = r->next_dead;
    free(r);
  }
}

// b's connect has ended (an event of b while connecting): on success the header goes and the relay
// begins, with the edges the client's socket reported meanwhile. 0 once relaying.
static int connected(relay_t *r, uint32_t events) {
  int err = 0;
  if (events & (EPOLLERR | EPOLLHUP)) {
    socklen_t len = sizeof err;
    if (getsockopt(r->b, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
  } else if (!(events & EPOLLOUT)) {
    return -1;  // not its end yet
  }
  // A hang-up with no error: a Unix socket whose listener's queue was full, never connected.
  if (err == 0 && (events & EPOLLHUP)) err = ENOTCONN;
  if (err != 0) return relay_finish(r, 1, -err), -1;
  // A fresh connection's socket buffer takes a header whole, or the upstream is gone.
  if (r->header_len > 0 && send(r->b, r->header, r->header_len, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)r->header_len)
    return relay_finish(r, 1, HEADER_UNSENT), -1;
  unlink_waiting(r);
  return 0;
}

// Connects that missed their deadline fail; the timer is set again for the first still waiting.
static void hub_on_wait(uv_timer_t *t) {
  hub_t *g = t->data;
  uint64_t now = uv_now(t->loop);
  while (g->waiting != NULL && g->waiting->deadline <= now) relay_finish(g->waiting, 1, TIMED_OUT);
  if (g->waiting != NULL) uv_timer_start(&g->wait, hub_on_wait, g->waiting->deadline - now, 0);
  free_dead(g);
}

// Into the waiting list from its end (deadlines mostly arrive in order); the timer is set only when the
// relay becomes the first, else it already fires no later than this deadline's predecessor.
static void wait_connect(relay_t *r, uint64_t now, int32_t timeout_ms) {
  r->connecting = 1;
  r->deadline = now + (uint64_t)timeout_ms;
  relay_t *after = hub->waiting_last;
  while (after != NULL && after->deadline > r->deadline) after = after->prev_wait;
  r->prev_wait = after;
  r->next_wait = after != NULL ? after->next_wait : hub->waiting;
  if (r->next_wait != NULL) r->next_wait->prev_wait = r;
  else hub->waiting_last = r;
  if (after != NULL) {
    after->next_wait = r;
  } else {
    hub->waiting = r;
    uv_timer_start(&hub->wait, hub_on_wait, (uint64_t)timeout_ms, 0);
  }
}

// An event of socket a (side 0) or b (side 1), its pointer's low bit: a relay is malloc'd, so aligned.
static void relay_pump(relay_t *r, int side, uint32_t events) {
  if (r->finished) return;
  if (r->connecting && side == 1 && connected(r, events) < 0) return;
  direction_t *out = side ? &r->ba : &r->ab, *in = side ? &r->ab : &r->ba;
  // An error or hang-up is read from the splices.
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) out->readable = 1;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) in->writable = 1;
  // The client's edges are kept for when the upstream is ready.
  if (r->connecting) return;
  if (pump(&r->ab, r->ba.done) < 0 || pump(&r->ba, r->ab.done) < 0) return relay_finish(r, 0, 1);
  if (r->ab.done && r->ba.done) relay_finish(r, 0, 0);
}

static void hub_on_poll(uv_poll_t *p, int status, int events) {
  (void)status;
  (void)events;
  hub_t *g = p->data;
  struct epoll_event ev[BATCH];
  int n = epoll_wait(g->epfd, ev, BATCH, 0);
  // A relay's callback may start relays (on this hub) but cannot release it: that waits for a timer.
  for (int i = 0; i < n; i++) relay_pump((relay_t *)(ev[i].data.u64 & ~(uint64_t)1), (int)(ev[i].data.u64 & 1), ev[i].events);
  free_dead(g);
}

static int hub_make(uv_loop_t *loop) {
  hub_t *g = calloc(1, sizeof *g);
  if (g == NULL) return -ENOMEM;
  g->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (g->epfd < 0) {
    int err = -errno;
    free(g);
    return err;
  }
  // Neither fails on a new epoll descriptor; init fails before the handle is registered.
  int rc = uv_poll_init(loop, &g->poll, g->epfd);
  if (rc < 0) {
    close(g->epfd);
    free(g);
    return rc;
  }
  (void)uv_poll_start(&g->poll, UV_READABLE, hub_on_poll);
  uv_unref((uv_handle_t *)&g->poll);
  g->poll.data = g;
  uv_timer_init(loop, &g->idle);  // cannot fail
  uv_unref((uv_handle_t *)&g->idle);
  g->idle.data = g;
  uv_timer_init(loop, &g->wait);  // nor this; the poll handle keeps the loop alive while relays wait
  uv_unref((uv_handle_t *)&g->wait);
  g->wait.data = g;
  hub = g;
  return 0;
}

static int watch_socket(int fd, relay_t *r, int side) {
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u64 = (uintptr_t)r | (uint64_t)side};
  return epoll_ctl(hub->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

// Pipes, the callback's reference and the epoll entries of a new relay: 0, or -errno with nothing left behind.
static int relay_start(relay_t *r, napi_value callback) {
  int rc;
  if ((rc = take_pipe(&r->ab.pipe)) < 0 || (rc = take_pipe(&r->ba.pipe)) < 0) goto pipes;
  r->ab.cap = r->ba.cap = RELAY_PIPE;
  if (napi_create_reference(r->env, callback, 1, &r->callback) != napi_ok) {
    rc = -ENOMEM;
    goto pipes;
  }
  if ((rc = watch_socket(r->a, r, 0)) < 0) goto reference;
  if ((rc = watch_socket(r->b, r, 1)) < 0) {
    (void)epoll_ctl(hub->epfd, EPOLL_CTL_DEL, r->a, NULL);
    goto reference;
  }
  if (hub->relays++ == 0) {
    uv_ref((uv_handle_t *)&hub->poll);
    uv_timer_stop(&hub->idle);
  }
  return 0;
reference:
  napi_delete_reference(r->env, r->callback);
pipes:
  give_pipe(&r->ab.pipe, 0);
  give_pipe(&r->ba.pipe, 0);
  return rc;
}

// relay(a, b, callback(bytesAtoB, bytesBtoA, status), timeoutMs, header): 0, or -errno (EMFILE: no
// descriptors for the pipes) and a and b are still the caller's, the callback never called. b's connect is
// under way (connectStream): once it is made within timeoutMs, `header` (a Uint8Array, may be empty) is sent
// and the relay copies both ways until both directions end or one fails, closes a and b (they are the
// relay's now) and calls back with status 0, or 1 for a failure. If the connect fails first, b is closed, a
// is the caller's again and the status says why: TIMED_OUT, HEADER_UNSENT or the connect's -errno. a and b
// must be non-blocking (the daemon's accepted and connected sockets are).
napi_value Relay(napi_env env, napi_callback_info info) {
  int32_t fa, fb, timeout_ms = 0;
  napi_value callback;
  array_t header = {NULL, 0};
  if (!args_parse(env, info, "relay(a, b, callback, timeoutMs, header)", "iifiu", &fa, &fb, &callback, &timeout_ms, &header, 0)) return NULL;
  if (timeout_ms < 0) return args_invalid(env, "relay(a, b, callback, timeoutMs, header)", 3);
  if (header.length > MAX_HEADER) return args_invalid(env, "relay(a, b, callback, timeoutMs, header)", 4);
  if (fa < 0 || fb < 0) return int_value(env, -EBADF);
  if (fa == fb) return int_value(env, -EINVAL);  // one descriptor cannot be in the epoll set twice
  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  int rc;
  if (hub == NULL && (rc = hub_make(loop)) < 0) return int_value(env, rc);
  if (hub->poll.loop != loop) return int_value(env, -ENOTSUP);  // the main thread's relays only
  relay_t *r = calloc(1, sizeof *r);
  if (r == NULL) return int_value(env, -ENOMEM);
  r->a = fa;
  r->b = fb;
  r->env = env;
  r->ab = (direction_t){.from = fa, .to = fb, .pipe = {-1, -1}};
  r->ba = (direction_t){.from = fb, .to = fa, .pipe = {-1, -1}};
  if ((rc = relay_start(r, callback)) < 0) {
    free(r);
    if (hub->relays == 0) uv_timer_start(&hub->idle, hub_release, IDLE_MS, 0);
    return int_value(env, rc);
  }
  if (header.length > 0) memcpy(r->header, header.data, header.length);
  r->header_len = header.length;
  wait_connect(r, uv_now(loop), timeout_ms);
  return int_value(env, 0);
}
