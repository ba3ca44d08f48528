/* csurelay — error codes and human-facing error reports.
 *
 * Functions return int: 0 on success, a negative code on failure. On Linux -errno equals UV_E*, so
 * libuv and system errors pass through unchanged; csurelay's own codes sit at -6000 and below.
 */
#ifndef CSURELAY_ERROR_H
#define CSURELAY_ERROR_H

#include <stddef.h>

#if defined(__GNUC__)
#define CSR_NODISCARD     __attribute__((warn_unused_result))
#define CSR_PRINTF(f, a)  __attribute__((format(printf, f, a)))
#else
#define CSR_NODISCARD
#define CSR_PRINTF(f, a)
#endif

enum {
  CSR_EPARSE = -6000,     /* malformed input: JSON, YAML, HTTP, a date */
  CSR_ESTATUS = -6001,    /* a peer answered with an unexpected HTTP status */
  CSR_ECONFIG = -6002,    /* the configuration is invalid */
  CSR_ETRANSPORT = -6003, /* a transport failure with no closer errno */
  CSR_ELIMIT = -6004,     /* a configured limit was reached */
  CSR_ECORRUPT = -6005,   /* stored state failed its checksum */
  CSR_EINVALID = -6006,   /* a request broke validation rules (the fields are listed apart) */
};

/** Returns a static, human-readable name for any code: csurelay's, libuv's or an errno. */
const char *csr_strerror(int code);

/**
 * A human-facing error (config, CLI), in the form "file:line: key: message". `line` is 0 when no line
 * applies; `key` is the dotted path of the offending key ("csus[1].page_size"), or empty.
 */
struct csr_err {
  char file[256];
  int line;
  char key[128];
  char msg[512];
};

/** Fills `err` (which may be NULL) and returns CSR_ECONFIG, so callers can `return csr_err_set(...)`. */
int csr_err_set(struct csr_err *err, const char *file, int line, const char *key, const char *fmt,
                ...) CSR_PRINTF(5, 6);

/** Writes "file:line: key: msg" into buf (always NUL-terminated) and returns buf. */
const char *csr_err_format(const struct csr_err *err, char *buf, size_t len);

#endif
