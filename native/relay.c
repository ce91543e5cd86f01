// Proxy mode's byte copying: splice(2) between the client's and the upstream's sockets through a pipe per
// direction, so the bytes never enter user space. Half-close is passed on (a direction that ends is shut
// down for writing on the other side, the other direction keeps flowing); an error ends both.
#include "dispatcher.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "napi_helpers.h"

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
      (void)shutdown(d->to, SHUT_WR);  // fails only if the far side is gone, which its own splice reports
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
napi_value Relay(napi_env env, napi_callback_info info) {
  int32_t fa, fb;
  napi_value callback;
  if (!args_parse(env, info, "relay(a, b, callback)", "iif", &fa, &fb, &callback)) return NULL;
  if (fa < 0 || fb < 0) return int_value(env, -EBADF);
  if (fa == fb) return int_value(env, -EINVAL);  // one descriptor cannot have two watchers
  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  relay_t *r = calloc(1, sizeof *r);
  if (r == NULL) return int_value(env, -ENOMEM);
  r->a = fa;
  r->b = fb;
  r->env = env;
  r->ab = (direction_t){.from = fa, .to = fb, .pipe_r = -1, .pipe_w = -1};
  r->ba = (direction_t){.from = fb, .to = fa, .pipe_r = -1, .pipe_w = -1};
  return int_value(env, relay_start(r, loop, callback));
}
