// N-API helpers shared by every entry point: argument unpacking that throws a TypeError naming the bad
// argument, and errors from errno values.
// Errors come back as negative errno values from the I/O calls (the hot path must not allocate an Error),
// and as thrown errors with `code` set to the errno name from the set-up calls.
#ifndef DISPATCHER_NAPI_HELPERS_H
#define DISPATCHER_NAPI_HELPERS_H

#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CHECK(call)                                                              \
  do {                                                                           \
    if ((call) != napi_ok) {                                                     \
      napi_throw_error(env, "ERR_NATIVE", "N-API call failed: " #call);          \
      return NULL;                                                               \
    }                                                                            \
  } while (0)

// A typed array's memory and element count.
typedef struct {
  void *data;
  size_t length;
} array_t;

// Unpacks a call's arguments by `format`, one letter an argument, into the pointers that follow it:
//   i  int32_t *               an integer
//   p  int32_t *               a port, 0..65535 (htons would silently wrap a larger one onto another port)
//   d  int32_t *               a descriptor, >= 0
//   b  bool *                  a boolean
//   o  bool *                  optional: false unless the argument is `true`
//   n  int32_t *               optional: 0 when `undefined`, else an integer
//   s  char *, size_t, size_t *  a string into a buffer of that size, NUL-terminated and cut to fit, and the
//                              bytes copied (size - 1 may mean a cut: a caller to whom it matters checks)
//   u  array_t *, int          a Uint8Array of at least that many elements
//   w  array_t *, int          an Int32Array of at least that many elements
//   f  napi_value *            a function
//   x  void **                 an external's data (a handle)
// A missing argument is `undefined` and fails like a wrong one. On failure a TypeError (ERR_INVALID_ARG)
// names the argument from `usage` ("listenInet(address, port, ...)") and the result is false.
bool args_parse(napi_env env, napi_callback_info info, const char *usage, const char *format, ...);

// Throws the TypeError for argument `index` of `usage`, for a check beyond its type; returns NULL.
napi_value args_invalid(napi_env env, const char *usage, size_t index);

// Throws an Error with `code` the errno name and `errno` the number; returns NULL for the entry point.
napi_value throw_errno(napi_env env, int err, const char *what);

// A number for JavaScript, or NULL with an error thrown.
napi_value int_value(napi_env env, int64_t n);

#endif
