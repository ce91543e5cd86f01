#include "napi_helpers.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

// The most arguments an entry point takes.
#define MAX_ARGS 5

napi_value args_invalid(napi_env env, const char *usage, size_t index) {
  // The argument's text in `usage`: the index-th of the list in parentheses.
  const char *name = strchr(usage, '(');
  name = name == NULL ? usage : name + 1;
  for (size_t i = 0; i < index && name != NULL; i++) {
    name = strchr(name, ',');
    if (name != NULL) name += strspn(name, ", ");
  }
  char message[192];
  snprintf(message, sizeof message, "%s: invalid %.*s", usage, name == NULL ? 0 : (int)strcspn(name, ",)"), name == NULL ? "" : name);
  napi_throw_type_error(env, "ERR_INVALID_ARG", message);
  return NULL;
}

static bool get_int(napi_env env, napi_value v, int32_t *out, int32_t min, int32_t max) {
  return napi_get_value_int32(env, v, out) == napi_ok && *out >= min && *out <= max;
}

static bool get_array(napi_env env, napi_value v, napi_typedarray_type type, array_t *out, int min) {
  napi_typedarray_type got;
  return napi_get_typedarray_info(env, v, &got, &out->length, &out->data, NULL, NULL) == napi_ok && got == type && out->length >= (size_t)min;
}

static bool is_function(napi_env env, napi_value v) {
  napi_valuetype t;
  return napi_typeof(env, v, &t) == napi_ok && t == napi_function;
}

// One argument by its format letter, taking its pointers from `ap`.
static bool get_arg(napi_env env, napi_value v, char letter, va_list *ap) {
  switch (letter) {
    case 'i': return get_int(env, v, va_arg(*ap, int32_t *), INT32_MIN, INT32_MAX);
    case 'p': return get_int(env, v, va_arg(*ap, int32_t *), 0, 65535);
    case 'd': return get_int(env, v, va_arg(*ap, int32_t *), 0, INT32_MAX);
    case 'b': return napi_get_value_bool(env, v, va_arg(*ap, bool *)) == napi_ok;
    case 'o': {  // anything but `true` is false
      bool *flag = va_arg(*ap, bool *);
      if (napi_get_value_bool(env, v, flag) != napi_ok) *flag = false;
      return true;
    }
    case 'n': {
      int32_t *out = va_arg(*ap, int32_t *);
      napi_valuetype t;
      if (napi_typeof(env, v, &t) == napi_ok && t == napi_undefined) {
        *out = 0;
        return true;
      }
      return get_int(env, v, out, INT32_MIN, INT32_MAX);
    }
    case 's': {
      char *buf = va_arg(*ap, char *);
      size_t size = va_arg(*ap, size_t);
      return napi_get_value_string_utf8(env, v, buf, size, va_arg(*ap, size_t *)) == napi_ok;
    }
    case 'u':
    case 'w': {
      array_t *out = va_arg(*ap, array_t *);
      return get_array(env, v, letter == 'u' ? napi_uint8_array : napi_int32_array, out, va_arg(*ap, int));
    }
    case 'f': {
      napi_value *out = va_arg(*ap, napi_value *);
      *out = v;
      return is_function(env, v);
    }
    case 'x': return napi_get_value_external(env, v, va_arg(*ap, void **)) == napi_ok;
    default: return false;
  }
}

bool args_parse(napi_env env, napi_callback_info info, const char *usage, const char *format, ...) {
  size_t argc = MAX_ARGS;
  napi_value argv[MAX_ARGS];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || strlen(format) > MAX_ARGS) {
    napi_throw_error(env, "ERR_NATIVE", "N-API call failed: napi_get_cb_info");
    return false;
  }
  va_list ap;
  va_start(ap, format);
  size_t i = 0;
  while (format[i] != '\0' && get_arg(env, argv[i], format[i], &ap)) i++;
  va_end(ap);
  if (format[i] == '\0') return true;
  args_invalid(env, usage, i);
  return false;
}

static const char *errno_name(int err) {
  switch (err) {
    case EADDRINUSE: return "EADDRINUSE";
    case EACCES: return "EACCES";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case ENOENT: return "ENOENT";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EPERM: return "EPERM";
    case EMFILE: return "EMFILE";
    case EINVAL: return "EINVAL";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case EAGAIN: return "EAGAIN";
    case ENOTSOCK: return "ENOTSOCK";
    case ESRCH: return "ESRCH";
    case EBADF: return "EBADF";
    case ENOSYS: return "ENOSYS";
    default: return "ERR_SYSCALL";
  }
}

napi_value throw_errno(napi_env env, int err, const char *what) {
  char message[256];
  snprintf(message, sizeof message, "%s: %s", what, strerror(err));
  napi_value code, msg, error, errno_value;
  if (napi_create_string_utf8(env, errno_name(err), NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg) != napi_ok || napi_create_error(env, code, msg, &error) != napi_ok ||
      napi_create_int32(env, err, &errno_value) != napi_ok || napi_set_named_property(env, error, "errno", errno_value) != napi_ok) {
    napi_throw_error(env, errno_name(err), message);  // the same error, without its errno property
    return NULL;
  }
  napi_throw(env, error);
  return NULL;
}

napi_value int_value(napi_env env, int64_t n) {
  napi_value v;
  CHECK(napi_create_int64(env, n, &v));
  return v;
}
