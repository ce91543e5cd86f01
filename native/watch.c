// A readiness watcher on a raw descriptor: libuv's uv_poll on the main loop, calling back into JS with the
// events (1 readable, 2 writable, or a negative libuv error).
// The struct is freed when both libuv has closed the handle and the JS handle (an external) is collected,
// whichever comes last.
#include "dispatcher.h"

#include <errno.h>
#include <stdlib.h>

#include "napi_helpers.h"

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

static void close_watcher(watcher_t *w) {
  w->closed = 1;
  uv_close((uv_handle_t *)&w->poll, on_close);
}

// Calls a JavaScript callback from a libuv callback, with up to three numbers. make_callback runs the
// microtask queue afterwards, as Node's own I/O callbacks do; an exception is fatal, as in Node.
void call_js(napi_env env, napi_ref callback, size_t argc, const double *values) {
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, global, args[3], result;
  int ready = napi_get_reference_value(env, callback, &cb) == napi_ok && napi_get_global(env, &global) == napi_ok;
  for (size_t i = 0; ready && i < argc && i < 3; i++) ready = napi_create_double(env, values[i], &args[i]) == napi_ok;
  if (ready && napi_make_callback(env, NULL, global, cb, argc, args, &result) == napi_pending_exception) {
    napi_value exc;
    if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
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
  if (!w->closed) close_watcher(w);
  else if (w->close_done) free(w);
}

// JavaScript's events (1 read | 2 write) as libuv's.
static int uv_events(int32_t events) { return ((events & 1) ? UV_READABLE : 0) | ((events & 2) ? UV_WRITABLE : 0); }

// watch(fd, events (1 read | 2 write), callback): a handle for setEvents/unwatch.
napi_value Watch(napi_env env, napi_callback_info info) {
  int32_t fd, events;
  napi_value callback;
  if (!args_parse(env, info, "watch(fd, events, callback)", "iif", &fd, &events, &callback)) return NULL;
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
  if (napi_create_reference(env, callback, 1, &w->callback) != napi_ok || napi_create_external(env, w, finalize_watcher, NULL, &handle) != napi_ok) {
    w->finalized = 1;
    close_watcher(w);
    napi_throw_error(env, "ERR_NATIVE", "watch: out of memory");
    return NULL;
  }
  if (uv_events(events) && (rc = uv_poll_start(&w->poll, uv_events(events), on_poll)) < 0) {
    close_watcher(w);  // freed once the external is collected too
    return throw_errno(env, -rc, "uv_poll_start");
  }
  return handle;
}

// setEvents(handle, events): 0 stops watching without closing; the descriptor stays the caller's.
napi_value SetEvents(napi_env env, napi_callback_info info) {
  void *handle;
  int32_t events;
  if (!args_parse(env, info, "setEvents(handle, events)", "xi", &handle, &events)) return NULL;
  watcher_t *w = handle;
  if (w->closed) return NULL;
  // Neither fails on an open handle whose descriptor watch() accepted.
  if (uv_events(events)) (void)uv_poll_start(&w->poll, uv_events(events), on_poll);
  else (void)uv_poll_stop(&w->poll);
  return NULL;
}

// unwatch(handle): stops and releases the watcher. Call it before closing the descriptor.
napi_value Unwatch(napi_env env, napi_callback_info info) {
  void *handle;
  if (!args_parse(env, info, "unwatch(handle)", "x", &handle)) return NULL;
  watcher_t *w = handle;
  if (!w->closed) {
    (void)uv_poll_stop(&w->poll);  // stopping an open handle cannot fail
    close_watcher(w);
  }
  return NULL;
}
