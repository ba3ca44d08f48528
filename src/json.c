/* The yajl layer: the only file that sees yajl's status codes. */
#include "csurelay/json.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>
#include <yajl/yajl_parse.h>

/* yajl_tree_parse allows comments and wants a NUL-terminated copy; a quick scan rejects comments
 * outside strings before the parse, so the tree is only ever built from strict JSON. */
static int has_comment(const char *s, size_t len) {
  int in_str = 0;
  for (size_t i = 0; i < len; i++) {
    if (in_str) {
      if (s[i] == '\\')
        i++;
      else if (s[i] == '"')
        in_str = 0;
    } else if (s[i] == '"') {
      in_str = 1;
    } else if (s[i] == '/') {
      return 1;
    }
  }
  return 0;
}

yajl_val csr_json_parse(const char *text, size_t len, char *err, size_t errlen) {
  char dummy[1];
  if (err == NULL) {
    err = dummy;
    errlen = sizeof(dummy);
  }
  if (text == NULL || has_comment(text, len) || memchr(text, '\0', len)) {
    snprintf(err, errlen, "not strict JSON (comment or NUL byte)");
    return NULL;
  }
  char *copy = malloc(len + 1);
  if (copy == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  memcpy(copy, text, len);
  copy[len] = '\0';
  char why[256] = "";
  yajl_val v = yajl_tree_parse(copy, why, sizeof(why));
  free(copy);
  if (v == NULL) {
    /* yajl's message spans lines (it draws an arrow); keep the first one. */
    why[strcspn(why, "\n")] = '\0';
    snprintf(err, errlen, "%s", why[0] ? why : "malformed JSON");
  }
  return v;
}

int csr_json_stream(yajl_handle h, const char *text, size_t len, char *err, size_t errlen) {
  yajl_status st = yajl_parse(h, (const unsigned char *)text, len);
  if (st == yajl_status_ok)
    st = yajl_complete_parse(h);
  if (st == yajl_status_ok)
    return 0;
  if (st == yajl_status_client_canceled)
    return UV_ECANCELED;
  /* yajl's message spans lines (it draws an arrow); keep the first one. */
  unsigned char *msg = yajl_get_error(h, 0, (const unsigned char *)text, len);
  snprintf(err, errlen, "%s", msg ? (const char *)msg : "malformed JSON");
  err[strcspn(err, "\n")] = '\0';
  if (msg)
    yajl_free_error(h, msg);
  return CSR_EPARSE;
}

/* Whether the first byte after leading white space opens an object. */
static bool starts_object(const char *text, size_t len) {
  size_t lead = 0;
  while (lead < len && strchr(" \t\r\n", text[lead]) != NULL)
    lead++;
  return lead < len && text[lead] == '{';
}

int csr_json_check_object(const char *text, size_t len, char *err, size_t errlen) {
  char dummy[1];
  if (err == NULL) {
    err = dummy;
    errlen = sizeof(dummy);
  }
  if (text == NULL || memchr(text, '\0', len)) {
    snprintf(err, errlen, "not strict JSON (comment or NUL byte)");
    return CSR_EPARSE;
  }
  /* yajl without callbacks only checks; comments are errors as it is configured by default */
  yajl_handle h = yajl_alloc(NULL, NULL, NULL);
  if (h == NULL) {
    snprintf(err, errlen, "out of memory");
    return UV_ENOMEM;
  }
  int rc = csr_json_stream(h, text, len, err, errlen);
  if (rc == 0 && !starts_object(text, len)) {
    snprintf(err, errlen, "another JSON value");
    rc = CSR_EPARSE;
  }
  yajl_free(h);
  return rc;
}

bool csr_json_key_in(const char *key, size_t len, const char *const *names, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (strlen(names[i]) == len && memcmp(names[i], key, len) == 0)
      return true;
  return false;
}

/* csr_json_parse_members: the top-level members kept so far, written out as an object's text. */
struct members {
  yajl_handle h;
  const char *text;
  struct csr_jw *out;
  csr_json_keep_fn keep;
  void *arg;
  int depth;       /* 1 inside the top-level object */
  bool keeping;    /* the current top-level member is kept */
  size_t value_at; /* for a kept member: where its key ended (then ':' and the value) */
  size_t want;     /* distinct members to keep before the scan stops; SIZE_MAX: never stops */
  size_t distinct; /* distinct members kept so far, their names in `names` */
  bool stopped;    /* the scan stopped once it had `want` */
  char names[512]; /* each: a length byte, then the name */
  size_t names_len;
};

/* Notes a kept member's name; false when the names no longer fit (the scan then never stops). */
static bool note_distinct(struct members *m, const char *key, size_t len) {
  for (size_t at = 0; at < m->names_len; at += 1 + (uint8_t)m->names[at])
    if ((uint8_t)m->names[at] == len && memcmp(m->names + at + 1, key, len) == 0)
      return true;
  if (len > UINT8_MAX || sizeof(m->names) - m->names_len < len + 1)
    return false;
  m->names[m->names_len] = (char)len;
  memcpy(m->names + m->names_len + 1, key, len);
  m->names_len += len + 1;
  m->distinct++;
  return true;
}

/* A kept member's value ends at `end` (yajl has consumed its last token): copy it over whole. */
static int member_value_ends(struct members *m) {
  if (m->depth != 1 || !m->keeping)
    return 1;
  size_t from = m->value_at, end = yajl_get_bytes_consumed(m->h);
  while (from < end && strchr(" \t\r\n:", m->text[from]) != NULL)
    from++;
  csr_jw_raw(m->out, m->text + from, end - from);
  m->keeping = false;
  m->stopped = m->distinct >= m->want;
  return !m->stopped; /* 0 stops yajl: every wanted member is kept */
}

static int mb_scalar(void *ctx) {
  return member_value_ends(ctx);
}
static int mb_bool(void *ctx, int b) {
  (void)b;
  return member_value_ends(ctx);
}
static int mb_text(void *ctx, const char *s, size_t len) {
  (void)s, (void)len;
  return member_value_ends(ctx);
}
static int mb_string(void *ctx, const unsigned char *s, size_t len) {
  (void)s, (void)len;
  return member_value_ends(ctx);
}

static int mb_key(void *ctx, const unsigned char *key, size_t len) {
  struct members *m = ctx;
  if (m->depth == 1 && (m->keeping = m->keep(m->arg, (const char *)key, len))) {
    if (m->want != SIZE_MAX && !note_distinct(m, (const char *)key, len))
      m->want = SIZE_MAX;
    csr_jw_strn(m->out, (const char *)key, len);
    m->value_at = yajl_get_bytes_consumed(m->h);
  }
  return 1;
}

static int mb_open(void *ctx) {
  ((struct members *)ctx)->depth++;
  return 1;
}

static int mb_close(void *ctx) {
  struct members *m = ctx;
  m->depth--;
  return member_value_ends(m);
}

static const yajl_callbacks MEMBER_CALLBACKS = {
    .yajl_null = mb_scalar,
    .yajl_boolean = mb_bool,
    .yajl_number = mb_text,
    .yajl_string = mb_string,
    .yajl_start_map = mb_open,
    .yajl_map_key = mb_key,
    .yajl_end_map = mb_close,
    .yajl_start_array = mb_open,
    .yajl_end_array = mb_close,
};

static yajl_val parse_members(const char *text, size_t len, csr_json_keep_fn keep, void *arg,
                              size_t want, char *err, size_t errlen) {
  char dummy[1];
  if (err == NULL) {
    err = dummy;
    errlen = sizeof(dummy);
  }
  /* No has_comment scan: a handle of our own rejects comments (yajl_allow_comments is off unless
   * set; only yajl_tree_parse sets it), and the scan was a second pass over a 17 KB order. */
  if (text == NULL || !starts_object(text, len) || memchr(text, '\0', len)) {
    snprintf(err, errlen, "not a strict JSON object");
    return NULL;
  }
  struct csr_jw out;
  if (csr_jw_init(&out) != 0) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  struct members m = {.text = text, .out = &out, .keep = keep, .arg = arg, .want = want};
  m.h = yajl_alloc(&MEMBER_CALLBACKS, NULL, &m);
  yajl_val v = NULL;
  const char *kept;
  size_t kept_len;
  csr_jw_obj(&out);
  int rc = m.h ? csr_json_stream(m.h, text, len, err, errlen) : UV_ENOMEM;
  if (rc == UV_ECANCELED && m.stopped)
    rc = 0;
  csr_jw_obj_end(&out);
  if (rc == 0 && csr_jw_finish(&out, &kept, &kept_len) == 0)
    v = csr_json_parse(kept, kept_len, err, errlen);
  else if (rc != CSR_EPARSE)
    snprintf(err, errlen, "out of memory");
  if (m.h)
    yajl_free(m.h);
  csr_jw_free(&out);
  return v;
}

yajl_val csr_json_parse_members(const char *text, size_t len, csr_json_keep_fn keep, void *arg,
                                char *err, size_t errlen) {
  return parse_members(text, len, keep, arg, SIZE_MAX, err, errlen);
}

yajl_val csr_json_parse_checked_members(const char *text, size_t len, csr_json_keep_fn keep,
                                        void *arg, size_t want, char *err, size_t errlen) {
  return parse_members(text, len, keep, arg, want == 0 ? SIZE_MAX : want, err, errlen);
}

/* csr_json_top_strings: the wanted top-level strings copied out as the scan meets them. */
struct top_strings {
  const char *const *names;
  size_t n;
  const char **vals;
  char *buf;
  size_t cap, used;
  int depth;    /* 1 inside the top-level object */
  long pending; /* the index in names of the member whose value comes next, else -1 */
  uint64_t met; /* bit i: names[i] was met (its first value is the one that counts) */
  bool full;
};

static int ts_value(void *ctx) {
  ((struct top_strings *)ctx)->pending = -1;
  return 1;
}
static int ts_bool(void *ctx, int b) {
  (void)b;
  return ts_value(ctx);
}
static int ts_number(void *ctx, const char *s, size_t len) {
  (void)s, (void)len;
  return ts_value(ctx);
}

static int ts_string(void *ctx, const unsigned char *s, size_t len) {
  struct top_strings *t = ctx;
  if (t->pending < 0)
    return 1;
  if (len + 1 > t->cap - t->used) {
    t->full = true;
    return 0;
  }
  char *v = t->buf + t->used;
  memcpy(v, s, len);
  v[len] = '\0';
  t->used += len + 1;
  t->vals[t->pending] = v;
  return ts_value(t);
}

static int ts_key(void *ctx, const unsigned char *key, size_t len) {
  struct top_strings *t = ctx;
  t->pending = -1;
  for (size_t i = 0; t->depth == 1 && i < t->n; i++)
    if (!(t->met & (1ull << i)) && strlen(t->names[i]) == len &&
        memcmp(t->names[i], key, len) == 0) {
      t->met |= 1ull << i;
      t->pending = (long)i;
    }
  return 1;
}

static int ts_open(void *ctx) {
  struct top_strings *t = ctx;
  t->depth++;
  t->pending = -1; /* an object or array value is not a string */
  return 1;
}

static int ts_close(void *ctx) {
  ((struct top_strings *)ctx)->depth--;
  return 1;
}

static const yajl_callbacks TOP_STRING_CALLBACKS = {
    .yajl_null = ts_value,
    .yajl_boolean = ts_bool,
    .yajl_number = ts_number,
    .yajl_string = ts_string,
    .yajl_start_map = ts_open,
    .yajl_map_key = ts_key,
    .yajl_end_map = ts_close,
    .yajl_start_array = ts_open,
    .yajl_end_array = ts_close,
};

int csr_json_top_strings(const char *text, size_t len, const char *const *names, size_t n,
                         char *buf, size_t cap, const char **vals, char *err, size_t errlen) {
  char dummy[1];
  if (err == NULL) {
    err = dummy;
    errlen = sizeof(dummy);
  }
  for (size_t i = 0; i < n; i++)
    vals[i] = NULL;
  if (text == NULL || !starts_object(text, len) || memchr(text, '\0', len)) {
    snprintf(err, errlen, "not a strict JSON object");
    return CSR_EPARSE;
  }
  if (n > 64) {
    snprintf(err, errlen, "more than 64 names");
    return UV_EINVAL;
  }
  if (cap > INT_MAX)
    cap = INT_MAX; /* the count of bytes used is the return value */
  struct top_strings t = {
      .names = names, .n = n, .vals = vals, .buf = buf, .cap = cap, .pending = -1};
  yajl_handle h = yajl_alloc(&TOP_STRING_CALLBACKS, NULL, &t);
  if (h == NULL) {
    snprintf(err, errlen, "out of memory");
    return UV_ENOMEM;
  }
  int rc = csr_json_stream(h, text, len, err, errlen);
  yajl_free(h);
  if (rc == UV_ECANCELED && t.full) {
    snprintf(err, errlen, "the values outgrow the buffer");
    rc = UV_E2BIG;
  }
  if (rc < 0)
    for (size_t i = 0; i < n; i++)
      vals[i] = NULL;
  return rc < 0 ? rc : (int)t.used;
}

void csr_json_free(yajl_val v) {
  if (v)
    yajl_tree_free(v);
}

static yajl_val get(yajl_val obj, const char *key, int ci) {
  if (!YAJL_IS_OBJECT(obj) || key == NULL)
    return NULL;
  for (size_t i = 0; i < obj->u.object.len; i++) {
    const char *k = obj->u.object.keys[i];
    if (ci ? strcasecmp(k, key) == 0 : strcmp(k, key) == 0)
      return obj->u.object.values[i];
  }
  return NULL;
}

yajl_val csr_json_get(yajl_val obj, const char *key) {
  return get(obj, key, 0);
}

yajl_val csr_json_get_ci(yajl_val obj, const char *key) {
  return get(obj, key, 1);
}

yajl_val csr_json_path(yajl_val obj, const char *path) {
  char step[128];
  while (obj && path && *path) {
    size_t n = strcspn(path, ".");
    if (n >= sizeof(step))
      return NULL;
    memcpy(step, path, n);
    step[n] = '\0';
    obj = get(obj, step, 0);
    path += n + (path[n] == '.');
  }
  return obj;
}

const char *csr_json_str(yajl_val v) {
  return YAJL_IS_STRING(v) ? v->u.string : NULL;
}

const char *csr_json_get_str(yajl_val obj, const char *key) {
  return csr_json_str(get(obj, key, 0));
}

const char *csr_json_num_text(yajl_val v) {
  return YAJL_IS_NUMBER(v) ? v->u.number.r : NULL;
}

int csr_json_get_int(yajl_val obj, const char *key, int64_t *out) {
  yajl_val v = get(obj, key, 0);
  if (!YAJL_IS_INTEGER(v))
    return CSR_EPARSE;
  *out = v->u.number.i;
  return 0;
}

size_t csr_json_len(yajl_val v) {
  return YAJL_IS_ARRAY(v) ? v->u.array.len : 0;
}

yajl_val csr_json_at(yajl_val v, size_t i) {
  return YAJL_IS_ARRAY(v) && i < v->u.array.len ? v->u.array.values[i] : NULL;
}

/* A fresh buffer starts at yajl's own first size (YAJL_BUF_INIT_SIZE): writers made per call
 * (csr_json_parse_members, admin answers) would otherwise grow a 1-2 KB text in 3-4 reallocs. */
enum { JW_MISUSE = 1, JW_NOMEM = 2, JW_MIN_CAP = 2048 };

/* What yajl prints into, NUL-terminated. */
struct csr_jw_out {
  char *buf;
  size_t len, cap;
  size_t hint; /* the last taken text's size: the next buffer's first capacity */
  int err;     /* 0, JW_MISUSE (CSR_EPARSE) or JW_NOMEM (UV_ENOMEM); the first one sticks */
};

/* yajl's print callback. */
static void jw_print(void *ctx, const char *s, size_t n) {
  struct csr_jw_out *o = ctx;
  if (o->err)
    return;
  if (o->len + n + 1 > o->cap) {
    size_t cap = o->cap ? o->cap : (o->hint > JW_MIN_CAP ? o->hint : JW_MIN_CAP);
    while (cap < o->len + n + 1)
      cap *= 2;
    char *grown = realloc(o->buf, cap);
    if (grown == NULL) {
      o->err = JW_NOMEM;
      return;
    }
    o->buf = grown;
    o->cap = cap;
  }
  memcpy(o->buf + o->len, s, n);
  o->len += n;
  o->buf[o->len] = '\0';
}

int csr_jw_init(struct csr_jw *jw) {
  jw->_out = calloc(1, sizeof(*jw->_out));
  jw->_g = jw->_out ? yajl_gen_alloc(NULL) : NULL;
  if (jw->_g == NULL) {
    free(jw->_out);
    jw->_out = NULL;
    return UV_ENOMEM;
  }
  yajl_gen_config(jw->_g, yajl_gen_print_callback, jw_print, jw->_out);
  /* Emit "/" as is: Dataverse and OData URLs in bodies stay readable and byte-identical. */
  yajl_gen_config(jw->_g, yajl_gen_escape_solidus, 0);
  yajl_gen_config(jw->_g, yajl_gen_validate_utf8, 1);
  return 0;
}

void csr_jw_free(struct csr_jw *jw) {
  if (jw->_g)
    yajl_gen_free(jw->_g);
  jw->_g = NULL;
  if (jw->_out)
    free(jw->_out->buf);
  free(jw->_out);
  jw->_out = NULL;
}

int csr_jw_finish(struct csr_jw *jw, const char **text, size_t *len) {
  const struct csr_jw_out *o = jw->_out;
  if (o->err)
    return o->err == JW_NOMEM ? UV_ENOMEM : CSR_EPARSE;
  *text = o->buf ? o->buf : "";
  *len = o->len;
  return 0;
}

int csr_jw_take(struct csr_jw *jw, char **text, size_t *len) {
  struct csr_jw_out *o = jw->_out;
  const char *done;
  *text = NULL;
  int rc = csr_jw_finish(jw, &done, len);
  if (rc == 0 && o->buf == NULL) {
    jw_print(o, "", 0); /* an empty text still needs a buffer of its own */
    rc = o->err ? UV_ENOMEM : 0;
  }
  if (rc != 0)
    return rc;
  *text = o->buf;
  o->hint = o->len + 1;
  o->buf = NULL;
  o->len = o->cap = 0;
  csr_jw_reset(jw);
  return 0;
}

void csr_jw_reset(struct csr_jw *jw) {
  struct csr_jw_out *o = jw->_out;
  yajl_gen_reset(jw->_g, NULL);
  yajl_gen_clear(jw->_g);
  o->len = 0;
  if (o->buf)
    o->buf[0] = '\0';
  o->err = 0;
}

/* The first error sticks: running out of memory stays UV_ENOMEM, not a misuse. */
static void misuse(struct csr_jw *jw) {
  if (jw->_out->err == 0)
    jw->_out->err = JW_MISUSE;
}

static void check(struct csr_jw *jw, yajl_gen_status st) {
  if (st != yajl_gen_status_ok)
    misuse(jw);
}

void csr_jw_obj(struct csr_jw *jw) {
  check(jw, yajl_gen_map_open(jw->_g));
}

void csr_jw_obj_end(struct csr_jw *jw) {
  check(jw, yajl_gen_map_close(jw->_g));
}

void csr_jw_arr(struct csr_jw *jw) {
  check(jw, yajl_gen_array_open(jw->_g));
}

void csr_jw_arr_end(struct csr_jw *jw) {
  check(jw, yajl_gen_array_close(jw->_g));
}

void csr_jw_key(struct csr_jw *jw, const char *key) {
  check(jw, yajl_gen_string(jw->_g, (const unsigned char *)key, strlen(key)));
}

void csr_jw_strn(struct csr_jw *jw, const char *s, size_t len) {
  check(jw, yajl_gen_string(jw->_g, (const unsigned char *)s, len));
}

void csr_jw_str(struct csr_jw *jw, const char *s) {
  if (s == NULL)
    csr_jw_null(jw);
  else
    csr_jw_strn(jw, s, strlen(s));
}

void csr_jw_int(struct csr_jw *jw, int64_t v) {
  check(jw, yajl_gen_integer(jw->_g, (long long)v));
}

void csr_jw_bool(struct csr_jw *jw, bool v) {
  check(jw, yajl_gen_bool(jw->_g, v));
}

void csr_jw_null(struct csr_jw *jw) {
  check(jw, yajl_gen_null(jw->_g));
}

/* JSON number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int is_json_number(const char *s) {
  const char *p = s;
  if (*p == '-')
    p++;
  if (*p == '0')
    p++;
  else if (isdigit((unsigned char)*p))
    while (isdigit((unsigned char)*p))
      p++;
  else
    return 0;
  if (*p == '.') {
    if (!isdigit((unsigned char)*++p))
      return 0;
    while (isdigit((unsigned char)*p))
      p++;
  }
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-')
      p++;
    if (!isdigit((unsigned char)*p))
      return 0;
    while (isdigit((unsigned char)*p))
      p++;
  }
  return *p == '\0';
}

void csr_jw_num_text(struct csr_jw *jw, const char *text) {
  if (text == NULL || !is_json_number(text)) {
    misuse(jw);
    return;
  }
  check(jw, yajl_gen_number(jw->_g, text, strlen(text)));
}

void csr_copy_utf8(char *dst, size_t size, const char *src) {
  size_t n = strlen(src);
  if (n >= size) {
    n = size - 1;
    while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80)
      n--;
  }
  memcpy(dst, src, n);
  dst[n] = '\0';
}

void csr_jw_raw(struct csr_jw *jw, const char *json, size_t len) {
  if (json == NULL || len == 0) {
    misuse(jw);
    return;
  }
  /* yajl_gen_number prints its text as is, with the separators and state of any value. */
  check(jw, yajl_gen_number(jw->_g, json, len));
}

void csr_jw_value(struct csr_jw *jw, yajl_val v) {
  if (v == NULL || YAJL_IS_NULL(v)) {
    csr_jw_null(jw);
  } else if (YAJL_IS_STRING(v)) {
    csr_jw_str(jw, v->u.string);
  } else if (YAJL_IS_NUMBER(v)) {
    csr_jw_num_text(jw, v->u.number.r);
  } else if (YAJL_IS_TRUE(v) || YAJL_IS_FALSE(v)) {
    csr_jw_bool(jw, YAJL_IS_TRUE(v));
  } else if (YAJL_IS_ARRAY(v)) {
    csr_jw_arr(jw);
    for (size_t i = 0; i < v->u.array.len; i++)
      csr_jw_value(jw, v->u.array.values[i]);
    csr_jw_arr_end(jw);
  } else {
    csr_jw_obj(jw);
    for (size_t i = 0; i < v->u.object.len; i++) {
      csr_jw_key(jw, v->u.object.keys[i]);
      csr_jw_value(jw, v->u.object.values[i]);
    }
    csr_jw_obj_end(jw);
  }
}

void csr_jw_kstr(struct csr_jw *jw, const char *key, const char *s) {
  csr_jw_key(jw, key);
  csr_jw_str(jw, s);
}

void csr_jw_kint(struct csr_jw *jw, const char *key, int64_t v) {
  csr_jw_key(jw, key);
  csr_jw_int(jw, v);
}

void csr_jw_kbool(struct csr_jw *jw, const char *key, bool v) {
  csr_jw_key(jw, key);
  csr_jw_bool(jw, v);
}

void csr_jw_knum_text(struct csr_jw *jw, const char *key, const char *text) {
  csr_jw_key(jw, key);
  csr_jw_num_text(jw, text);
}
