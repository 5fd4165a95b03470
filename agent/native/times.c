// Exact file times for deltamesh: node's utimes/futimes/lutimes take seconds as a double (~240 ns steps at
// today's epoch), so a mirror could not carry the source's nanoseconds. utimensat(2) and futimens(2) take
// integer seconds and nanoseconds. Two functions, errors thrown like node's fs errors (code, errno, syscall).
#define NAPI_VERSION 8
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

// errno's name, as node's fs errors carry it in `code` (callers test err.code); the ones these two calls can give
static const char *errno_name (int err) {
  switch (err) {
    case ENOENT: return "ENOENT";
    case ELOOP: return "ELOOP";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case EBADF: return "EBADF";
    case EROFS: return "EROFS";
    case EINVAL: return "EINVAL";
    case ENOTDIR: return "ENOTDIR";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case EIO: return "EIO";
    case EFAULT: return "EFAULT";
    case ENOMEM: return "ENOMEM";
    case ENOSYS: return "ENOSYS";
    case EOVERFLOW: return "EOVERFLOW";
    case ESTALE: return "ESTALE";
    case EINTR: return "EINTR";
#if defined(EOPNOTSUPP) && EOPNOTSUPP != ENOTSUP
    case EOPNOTSUPP: return "EOPNOTSUPP";
#endif
    case ENOTSUP: return "ENOTSUP";
    default: return "EUNKNOWN";
  }
}

static napi_value throw_errno (napi_env env, int err, const char *syscall) {
  napi_value message, error, code, errnum, sys;
  char text[256];
  const char *name = errno_name(err);
  // as node words them: "ENOENT: No such file or directory, utimensat"
  snprintf(text, sizeof text, "%s: %s, %s", name, strerror(err), syscall);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, message, &error);
  napi_set_named_property(env, error, "code", code);
  napi_create_int32(env, -err, &errnum);
  napi_set_named_property(env, error, "errno", errnum);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sys);
  napi_set_named_property(env, error, "syscall", sys);
  napi_throw(env, error);
  return NULL;
}

static bool read_times (napi_env env, napi_value *argv, struct timespec times[2]) {
  int64_t v[4];
  for (int i = 0; i < 4; i++) {
    if (napi_get_value_int64(env, argv[i], &v[i]) != napi_ok) {
      napi_throw_type_error(env, NULL, "times must be integers (seconds, nanoseconds)");
      return false;
    }
  }
  if (v[1] < 0 || v[1] > 999999999 || v[3] < 0 || v[3] > 999999999) {
    napi_throw_range_error(env, NULL, "nanoseconds must be in [0, 999999999]");
    return false;
  }
  times[0].tv_sec = (time_t)v[0];
  times[0].tv_nsec = (long)v[1];
  times[1].tv_sec = (time_t)v[2];
  times[1].tv_nsec = (long)v[3];
  return true;
}

// futimens(fd, atimeSec, atimeNsec, mtimeSec, mtimeNsec)
static napi_value Futimens (napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 5) { napi_throw_type_error(env, NULL, "futimens(fd, atimeSec, atimeNsec, mtimeSec, mtimeNsec)"); return NULL; }
  int32_t fd;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok) { napi_throw_type_error(env, NULL, "fd must be an integer"); return NULL; }
  struct timespec times[2];
  if (!read_times(env, argv + 1, times)) return NULL;
  if (futimens(fd, times) != 0) return throw_errno(env, errno, "futimens");
  return NULL;
}

// utimensat(path: Buffer, atimeSec, atimeNsec, mtimeSec, mtimeNsec, noFollow: boolean)
static napi_value Utimensat (napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 6) { napi_throw_type_error(env, NULL, "utimensat(path, atimeSec, atimeNsec, mtimeSec, mtimeNsec, noFollow)"); return NULL; }
  void *data;
  size_t length;
  bool is_buffer = false;
  napi_is_buffer(env, argv[0], &is_buffer);
  if (!is_buffer || napi_get_buffer_info(env, argv[0], &data, &length) != napi_ok) { napi_throw_type_error(env, NULL, "path must be a Buffer"); return NULL; }
  if (length == 0 || length >= 4096 || memchr(data, 0, length) != NULL) { napi_throw_range_error(env, NULL, "path must be 1..4095 bytes without NUL"); return NULL; }
  char path[4096];
  memcpy(path, data, length);
  path[length] = 0;
  struct timespec times[2];
  if (!read_times(env, argv + 1, times)) return NULL;
  bool no_follow = false;
  napi_get_value_bool(env, argv[5], &no_follow);
  if (utimensat(AT_FDCWD, path, times, no_follow ? AT_SYMLINK_NOFOLLOW : 0) != 0) return throw_errno(env, errno, "utimensat");
  return NULL;
}

NAPI_MODULE_INIT () {
  napi_value fn;
  napi_create_function(env, "futimens", NAPI_AUTO_LENGTH, Futimens, NULL, &fn);
  napi_set_named_property(env, exports, "futimens", fn);
  napi_create_function(env, "utimensat", NAPI_AUTO_LENGTH, Utimensat, NULL, &fn);
  napi_set_named_property(env, exports, "utimensat", fn);
  return exports;
}
