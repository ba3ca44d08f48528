/* Structured logs: one JSON object per line on stderr, written with a single write(2).
 *
 *   CSR_LOG(CSR_INFO, "admin listening", CSR_KS("host", host), CSR_KI("port", port));
 *
 * Fields are typed. Values that may hold personal data go through CSR_KEMAIL / CSR_KPHONE /
 * CSR_KNAME, which mask them before they reach any output: logs carry event and correlation ids,
 * never emails, names or phone numbers.
 */
#ifndef CSURELAY_LOG_H
#define CSURELAY_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "csurelay/error.h"

enum csr_log_level { CSR_DEBUG, CSR_INFO, CSR_WARN, CSR_ERROR };

enum csr_kv_type { CSR_KV_END, CSR_KV_STR, CSR_KV_INT, CSR_KV_DBL, CSR_KV_EMAIL, CSR_KV_PHONE, CSR_KV_NAME };

struct csr_kv {
  const char *key;
  enum csr_kv_type type;
  const char *s;
  int64_t i;
  double d;
};

#define CSR_KS(k, v)     ((struct csr_kv){.key = (k), .type = CSR_KV_STR, .s = (v)})
#define CSR_KI(k, v)     ((struct csr_kv){.key = (k), .type = CSR_KV_INT, .i = (int64_t)(v)})
#define CSR_KD(k, v)     ((struct csr_kv){.key = (k), .type = CSR_KV_DBL, .d = (double)(v)})
#define CSR_KERR(v)      CSR_KS("error", csr_strerror(v))
#define CSR_KEMAIL(k, v) ((struct csr_kv){.key = (k), .type = CSR_KV_EMAIL, .s = (v)})
#define CSR_KPHONE(k, v) ((struct csr_kv){.key = (k), .type = CSR_KV_PHONE, .s = (v)})
#define CSR_KNAME(k, v)  ((struct csr_kv){.key = (k), .type = CSR_KV_NAME, .s = (v)})

/** Logs `msg` with the given fields (zero or more csr_kv values). */
#define CSR_LOG(level, msg, ...)                                                                   \
  do {                                                                                             \
    if ((level) >= csr_log_threshold)                                                              \
      csr_log_kv((level), (msg), (const struct csr_kv[]){__VA_ARGS__ __VA_OPT__(, ){0}});          \
  } while (0)

extern enum csr_log_level csr_log_threshold;

/** Writes one line; `fields` ends with an entry whose type is CSR_KV_END. */
void csr_log_kv(enum csr_log_level level, const char *msg, const struct csr_kv *fields);

/** Parses "debug", "info", "warn" or "error"; -EINVAL otherwise. */
CSR_NODISCARD int csr_log_level_parse(const char *text, enum csr_log_level *out);
void csr_log_set_level(enum csr_log_level level);

/** Redirects output (tests); NULL restores stderr. `write` gets one whole line at a time. */
void csr_log_set_writer(void (*write)(const char *line, size_t len, void *arg), void *arg);

/** "jane.doe@contoso.com" → "j***@c***.com"; "" stays ""; no '@' → "***". Returns out. */
const char *csr_mask_email(const char *email, char *out, size_t len);
/** "+14125550144" → "***44" (the last two digits). Returns out. */
const char *csr_mask_phone(const char *phone, char *out, size_t len);
/** "Jane" → "J***". Returns out. */
const char *csr_mask_name(const char *name, char *out, size_t len);

/** Appends `s` JSON-escaped (without quotes) to buf at *pos, never past len-1. */
void csr_json_escape(const char *s, char *buf, size_t len, size_t *pos);

#endif
