/* JSON-lines logging. One line is built in a stack buffer and written with a single write(2), so
 * lines from csurelay and from helper processes sharing a terminal never interleave mid-line. */
#include "csurelay/log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 4096

enum csr_log_level csr_log_threshold = CSR_INFO;

static void (*writer)(const char *line, size_t len, void *arg);
static void *writer_arg;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void csr_log_set_level(enum csr_log_level level) {
  csr_log_threshold = level;
}

int csr_log_level_parse(const char *text, enum csr_log_level *out) {
  for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
    if (strcmp(text, level_names[i]) == 0) {
      *out = (enum csr_log_level)i;
      return 0;
    }
  }
  return -EINVAL;
}

void csr_log_set_writer(void (*write_fn)(const char *line, size_t len, void *arg), void *arg) {
  writer = write_fn;
  writer_arg = arg;
}

static void put(const char *s, char *buf, size_t len, size_t *pos) {
  while (*s && *pos + 1 < len)
    buf[(*pos)++] = *s++;
}

void csr_json_escape(const char *s, char *buf, size_t len, size_t *pos) {
  static const char hex[] = "0123456789abcdef";
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    char esc[7] = {0};
    switch (*p) {
      case '"': memcpy(esc, "\\\"", 2); break;
      case '\\': memcpy(esc, "\\\\", 2); break;
      case '\n': memcpy(esc, "\\n", 2); break;
      case '\r': memcpy(esc, "\\r", 2); break;
      case '\t': memcpy(esc, "\\t", 2); break;
      default:
        if (*p < 0x20) {
          memcpy(esc, "\\u00", 4);
          esc[4] = hex[*p >> 4];
          esc[5] = hex[*p & 15];
        } else {
          esc[0] = (char)*p;
        }
    }
    if (*pos + strlen(esc) + 1 >= len)
      return; /* truncate at a character boundary rather than split an escape */
    put(esc, buf, len, pos);
  }
}

const char *csr_mask_email(const char *email, char *out, size_t len) {
  const char *at = email ? strchr(email, '@') : NULL;
  if (email == NULL || *email == '\0')
    snprintf(out, len, "%s", "");
  else if (at == NULL || at == email)
    snprintf(out, len, "***");
  else {
    const char *dot = strrchr(at, '.');
    snprintf(out, len, "%c***@%c***%s", email[0], at[1] ? at[1] : '*', dot && dot > at + 1 ? dot : "");
  }
  return out;
}

const char *csr_mask_phone(const char *phone, char *out, size_t len) {
  char digits[3] = {0};
  size_t n = 0;
  for (const char *p = phone ? phone : ""; *p; p++) {
    if (*p >= '0' && *p <= '9') {
      digits[0] = digits[1];
      digits[1] = *p;
      n++;
    }
  }
  snprintf(out, len, "***%s", n >= 4 ? digits : "");
  return out;
}

const char *csr_mask_name(const char *name, char *out, size_t len) {
  if (name == NULL || *name == '\0')
    snprintf(out, len, "%s", "");
  else
    snprintf(out, len, "%c***", name[0]);
  return out;
}

static void put_value(const struct csr_kv *kv, char *buf, size_t len, size_t *pos) {
  char tmp[64];
  const char *s = kv->s ? kv->s : "";
  switch (kv->type) {
    case CSR_KV_INT:
      snprintf(tmp, sizeof(tmp), "%lld", (long long)kv->i);
      put(tmp, buf, len, pos);
      return;
    case CSR_KV_DBL:
      snprintf(tmp, sizeof(tmp), "%.6g", kv->d);
      put(tmp, buf, len, pos);
      return;
    case CSR_KV_EMAIL:
      s = csr_mask_email(s, tmp, sizeof(tmp));
      break;
    case CSR_KV_PHONE:
      s = csr_mask_phone(s, tmp, sizeof(tmp));
      break;
    case CSR_KV_NAME:
      s = csr_mask_name(s, tmp, sizeof(tmp));
      break;
    default:
      break;
  }
  /* The value is cut short, never its closing quote: a truncated line is still valid JSON. */
  put("\"", buf, len, pos);
  csr_json_escape(s, buf, len - 2, pos);
  put("\"", buf, len, pos);
}

static void put_timestamp(char *buf, size_t len, size_t *pos) {
  struct timespec ts;
  struct tm tm;
  char tmp[40];
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  size_t n = strftime(tmp, sizeof(tmp), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(tmp + n, sizeof(tmp) - n, ".%03ldZ", ts.tv_nsec / 1000000);
  put(tmp, buf, len, pos);
}

void csr_log_kv(enum csr_log_level level, const char *msg, const struct csr_kv *fields) {
  char line[LINE_MAX_BYTES];
  size_t pos = 0;
  size_t room = sizeof(line) - 2; /* keep space for "}\n" */
  put("{\"ts\":\"", line, room, &pos);
  put_timestamp(line, room, &pos);
  put("\",\"level\":\"", line, room, &pos);
  put(level_names[level], line, room, &pos);
  put("\",\"msg\":\"", line, room, &pos);
  csr_json_escape(msg, line, room - 64, &pos);
  put("\"", line, room, &pos);
  for (const struct csr_kv *kv = fields; kv && kv->type != CSR_KV_END; kv++) {
    if (pos + 64 >= room)
      break; /* no room for another whole field */
    put(",\"", line, room, &pos);
    csr_json_escape(kv->key, line, room, &pos);
    put("\":", line, room, &pos);
    put_value(kv, line, room, &pos);
  }
  line[pos++] = '}';
  line[pos++] = '\n';
  if (writer) {
    writer(line, pos, writer_arg);
    return;
  }
  for (size_t off = 0; off < pos;) {
    ssize_t n = write(STDERR_FILENO, line + off, pos - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return; /* nowhere to report a failing stderr */
    off += (size_t)n;
  }
}
