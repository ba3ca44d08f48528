/* Error names for csurelay's own codes; everything else is libuv's (which covers errno on Unix). */
#include "csurelay/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

const char *csr_strerror(int code) {
  switch (code) {
    case 0:
      return "success";
    case CSR_EPARSE:
      return "malformed input";
    case CSR_ESTATUS:
      return "unexpected HTTP status";
    case CSR_ECONFIG:
      return "invalid configuration";
    case CSR_ETRANSPORT:
      return "transport failure";
    case CSR_ELIMIT:
      return "limit reached";
    case CSR_ECORRUPT:
      return "stored state is corrupt";
    case CSR_EINVALID:
      return "invalid request";
    default:
      return uv_strerror(code);
  }
}

int csr_err_set(struct csr_err *err, const char *file, int line, const char *key, const char *fmt,
                ...) {
  if (err == NULL)
    return CSR_ECONFIG;
  snprintf(err->file, sizeof(err->file), "%s", file ? file : "");
  err->line = line;
  snprintf(err->key, sizeof(err->key), "%s", key ? key : "");
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
  va_end(ap);
  return CSR_ECONFIG;
}

const char *csr_err_format(const struct csr_err *err, char *buf, size_t len) {
  const char *sep = err->key[0] ? ": " : "";
  if (err->line > 0)
    snprintf(buf, len, "%s:%d: %s%s%s", err->file, err->line, err->key, sep, err->msg);
  else if (err->file[0])
    snprintf(buf, len, "%s: %s%s%s", err->file, err->key, sep, err->msg);
  else
    snprintf(buf, len, "%s%s%s", err->key, sep, err->msg);
  return buf;
}
