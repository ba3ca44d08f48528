/* Percent-decoding and the plain JSON answers: see text.h. */
#include <string.h>

#include "text.h"

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if ((c | 32) >= 'a' && (c | 32) <= 'f')
    return (c | 32) - 'a' + 10;
  return -1;
}

/* The byte an escape at `p` stands for ("%41" -> 'A'), or -1 when `p` is no whole escape. */
static int escape_at(const char *p) {
  if (p[0] != '%' || hexval(p[1]) < 0 || hexval(p[2]) < 0)
    return -1;
  return hexval(p[1]) * 16 + hexval(p[2]);
}

void sim_url_decode(char *s) {
  char *o = s;
  for (; *s; s++) {
    int b = escape_at(s);
    if (b >= 0) {
      *o++ = (char)b;
      s += 2;
    } else {
      *o++ = *s == '+' ? ' ' : *s;
    }
  }
  *o = '\0';
}

char *sim_url_pair(char *kv) {
  char *eq = strchr(kv, '=');
  if (eq != NULL)
    *eq++ = '\0';
  sim_url_decode(kv);
  if (eq == NULL)
    return kv + strlen(kv);
  sim_url_decode(eq);
  return eq;
}

bool sim_query_get(const char *q, const char *key, char *out, size_t len) {
  size_t klen = strlen(key);
  for (const char *p = q; p && *p; p = strchr(p, '&'), p = p ? p + 1 : NULL) {
    if (strncmp(p, key, klen) != 0 || p[klen] != '=')
      continue;
    size_t n = 0;
    for (p += klen + 1; *p && *p != '&'; p++) {
      if (n + 1 >= len)
        return false;
      int b = escape_at(p);
      if (b >= 0) {
        out[n++] = (char)b;
        p += 2;
      } else {
        out[n++] = *p == '+' ? ' ' : *p;
      }
    }
    out[n] = '\0';
    return true;
  }
  return false;
}

void sim_respond_json(struct rx_http_request *req, int status, struct csr_jw *jw) {
  const char *body;
  size_t len;
  if (csr_jw_finish(jw, &body, &len) != 0)
    rx_http_respond(req, 500, NULL, "application/json", "{\"error\":\"encoding\"}", 20);
  else
    rx_http_respond(req, status, NULL, "application/json", body, len);
}

void sim_respond_msg(struct rx_http_request *req, int status, const char *key, const char *msg) {
  struct csr_jw jw;
  if (csr_jw_init(&jw) != 0) {
    rx_http_respond(req, 500, NULL, NULL, NULL, 0);
    return;
  }
  csr_jw_obj(&jw);
  if (msg != NULL)
    csr_jw_kstr(&jw, key, msg);
  else
    csr_jw_kbool(&jw, key, true);
  csr_jw_obj_end(&jw);
  sim_respond_json(req, status, &jw);
  csr_jw_free(&jw);
}
