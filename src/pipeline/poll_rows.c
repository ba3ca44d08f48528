/* The rows of a Search answer, read with yajl's event parser rather than as a tree.
 *
 * With overlap_s of 3 and a poll a second, every event is on four pages; the admitter needs the
 * tree of none of them (it writes the row's text into the ADMIT record and dedupes by id). Building
 * and freeing a yajl tree per row was 10 % of the relay's time at 6,000 ev/s. The event parser
 * checks the whole page as JSON, hands over the four key fields of each row, and yajl's byte
 * offsets give each row's text exactly as the CSU sent it. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "csurelay/error.h"
#include "csurelay/json.h"
#include "csurelay/timefmt.h"
#include "poll_internal.h"

/* The id's parts after the CSU name, in order (SPEC §3). */
static const char *const KEY_FIELDS[4] = {"EventDataAreaId", "EventType", "EventTransactionId",
                                          "EventDateTime"};
enum { N_KEYS = 4, TIME_KEY = 3, MAX_FIELD = 512 };

/* Where the parser is: the depth of each open container counts from the answer's object (1). */
struct reader {
  struct pl__rows *r;
  const char *csu;
  size_t csu_len;
  const struct pl__query *q;
  yajl_handle h;
  int depth;
  bool in_value; /* inside the answer's "value" array (depth 2) */
  bool value_seen;
  bool at_value_key; /* the last key at depth 1 was "value" */
  int row_key;       /* index in KEY_FIELDS of the row key just read, or -1 */
  size_t row_start;  /* offset of the open row's '{' */
  char field[N_KEYS][MAX_FIELD];
  size_t field_len[N_KEYS];
  bool has[N_KEYS];
  size_t id_bytes; /* bytes of ids written so far */
  char *why;
  size_t whylen;
  int rc;
};

/* Notes why the page is refused; returns 0, which stops yajl. */
__attribute__((format(printf, 3, 4))) static int refuse(struct reader *rd, int rc, const char *fmt,
                                                        ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(rd->why, rd->whylen, fmt, ap);
  va_end(ap);
  rd->rc = rc;
  return 0;
}

static int grow(void **buf, size_t *cap, size_t need, size_t size) {
  if (need <= *cap)
    return 0;
  size_t n = *cap ? *cap : 64;
  while (n < need)
    n *= 2;
  void *p = realloc(*buf, n * size);
  if (p == NULL)
    return UV_ENOMEM;
  *buf = p;
  *cap = n;
  return 0;
}

/* A scalar or container opening at the current depth: is it allowed where it stands? */
static int value_begins(struct reader *rd, bool is_object) {
  if (rd->depth == 0 && !is_object)
    return refuse(rd, CSR_EPARSE, "malformed page: not an object");
  if (rd->depth == 1 && rd->at_value_key && is_object)
    return refuse(rd, CSR_EPARSE, "malformed page: value is not an array");
  if (rd->in_value && rd->depth == 2 && !is_object)
    return refuse(rd, CSR_EPARSE, "malformed page: row %zu is not an object", rd->r->n);
  return 1;
}

static int on_scalar(struct reader *rd) {
  if (rd->depth == 1 && rd->at_value_key)
    return refuse(rd, CSR_EPARSE, "malformed page: value is not an array");
  rd->at_value_key = false;
  rd->row_key = -1;
  return value_begins(rd, false);
}

static int cb_null(void *ctx) {
  return on_scalar(ctx);
}
static int cb_bool(void *ctx, int b) {
  return on_scalar(ctx);
}
static int cb_number(void *ctx, const char *s, size_t len) {
  return on_scalar(ctx);
}

static int cb_string(void *ctx, const unsigned char *s, size_t len) {
  struct reader *rd = ctx;
  int k = rd->depth == 3 && rd->in_value ? rd->row_key : -1;
  if (k >= 0 && !rd->has[k]) { /* the first of duplicate keys counts, as csr_json_get does */
    if (len >= MAX_FIELD)
      return refuse(rd, CSR_EPARSE, "malformed page: row %zu has an overlong key field", rd->r->n);
    memcpy(rd->field[k], s, len);
    rd->field[k][len] = '\0';
    rd->field_len[k] = len;
    rd->has[k] = true;
  }
  return on_scalar(rd);
}

static int cb_map_key(void *ctx, const unsigned char *key, size_t len) {
  struct reader *rd = ctx;
  rd->row_key = -1;
  if (rd->depth == 1) {
    rd->at_value_key = len == 5 && memcmp(key, "value", 5) == 0;
    if (rd->at_value_key && rd->value_seen)
      return refuse(rd, CSR_EPARSE, "malformed page: value appears twice");
  } else if (rd->depth == 3 && rd->in_value) {
    for (int k = 0; k < N_KEYS; k++)
      if (strlen(KEY_FIELDS[k]) == len && memcmp(key, KEY_FIELDS[k], len) == 0)
        rd->row_key = k;
  }
  return 1;
}

static int cb_start_map(void *ctx) {
  struct reader *rd = ctx;
  if (!value_begins(rd, true))
    return 0;
  if (rd->in_value && rd->depth == 2) {
    /* yajl has consumed the '{' */
    rd->row_start = yajl_get_bytes_consumed(rd->h) - 1;
    memset(rd->has, 0, sizeof(rd->has));
  }
  rd->at_value_key = false;
  rd->row_key = -1;
  rd->depth++;
  return 1;
}

/* The row that just closed at offset `end`: checked, its id written, its text's span kept. */
static int row_ends(struct reader *rd, size_t end) {
  struct pl__rows *r = rd->r;
  size_t i = r->n, bytes = rd->csu_len + 1;
  for (int k = 0; k < N_KEYS; k++) {
    if (!rd->has[k] || (k >= 2 && rd->field_len[k] == 0))
      return refuse(rd, CSR_EPARSE, "malformed page: row %zu has no %s", i, KEY_FIELDS[k]);
    bytes += rd->field_len[k] + 1;
  }
  int64_t time_ms;
  if (csr_time_parse(rd->field[TIME_KEY], &time_ms) < 0)
    return refuse(rd, CSR_EPARSE, "malformed page: row %zu has an invalid EventDateTime", i);
  /* the keyset and the dense-second proof rest on every row being inside the window */
  if (time_ms <= rd->q->from_ms || time_ms > rd->q->to_ms)
    return refuse(rd, CSR_EPARSE, "malformed page: row %zu lies outside the window", i);
  if (grow((void **)&r->ev, &r->ev_cap, i + 1, sizeof(*r->ev)) < 0 ||
      grow((void **)&r->ids, &r->ids_cap, rd->id_bytes + bytes, 1) < 0)
    return refuse(rd, UV_ENOMEM, "out of memory for a page of %zu rows", i + 1);
  /* csu|area|type|txn|time, each part exactly as sent */
  char *dst = r->ids + rd->id_bytes;
  memcpy(dst, rd->csu, rd->csu_len);
  size_t at = rd->csu_len;
  for (int k = 0; k < N_KEYS; k++) {
    dst[at++] = '|';
    memcpy(dst + at, rd->field[k], rd->field_len[k]);
    at += rd->field_len[k];
  }
  dst[at] = '\0';
  /* ids may move as the buffer grows: keep offsets now, pointers once the page is read */
  r->ev[i] = (struct pl_poll_event){.id = (const char *)(uintptr_t)rd->id_bytes,
                                    .time_ms = time_ms,
                                    .row_json = r->text + rd->row_start,
                                    .row_len = end - rd->row_start};
  rd->id_bytes += bytes;
  r->n = i + 1;
  return 1;
}

static int cb_end_map(void *ctx) {
  struct reader *rd = ctx;
  rd->depth--;
  rd->row_key = -1;
  if (rd->in_value && rd->depth == 2)
    return row_ends(rd, yajl_get_bytes_consumed(rd->h));
  return 1;
}

static int cb_start_array(void *ctx) {
  struct reader *rd = ctx;
  if (rd->depth == 1 && rd->at_value_key) {
    rd->in_value = true;
    rd->value_seen = true;
  } else if (!value_begins(rd, false)) {
    return 0;
  }
  rd->at_value_key = false;
  rd->row_key = -1;
  rd->depth++;
  return 1;
}

static int cb_end_array(void *ctx) {
  struct reader *rd = ctx;
  rd->depth--;
  if (rd->in_value && rd->depth == 1)
    rd->in_value = false;
  return 1;
}

static const yajl_callbacks CALLBACKS = {
    .yajl_null = cb_null,
    .yajl_boolean = cb_bool,
    .yajl_number = cb_number, /* numbers as text: no conversion, no overflow */
    .yajl_string = cb_string,
    .yajl_start_map = cb_start_map,
    .yajl_map_key = cb_map_key,
    .yajl_end_map = cb_end_map,
    .yajl_start_array = cb_start_array,
    .yajl_end_array = cb_end_array,
};

static int read_page(struct reader *rd, size_t len) {
  char err[160];
  rd->h = yajl_alloc(&CALLBACKS, NULL, rd);
  if (rd->h == NULL) {
    refuse(rd, UV_ENOMEM, "out of memory for a page");
    return rd->rc;
  }
  if (csr_json_stream(rd->h, rd->r->text, len, err, sizeof(err)) == CSR_EPARSE)
    refuse(rd, CSR_EPARSE, "malformed JSON: %s", err);
  yajl_free(rd->h);
  if (rd->rc == 0 && !rd->value_seen)
    refuse(rd, CSR_EPARSE, "malformed page: value is not an array");
  return rd->rc;
}

int pl__rows_parse(struct pl__rows *r, const char *csu, const struct pl__query *q, char *text,
                   size_t len, char *why, size_t whylen) {
  pl__rows_clear(r);
  r->text = text; /* the rows point into it: taken from the response, not copied */
  if (text == NULL || memchr(text, '\0', len)) {
    snprintf(why, whylen, "malformed JSON: not strict JSON (NUL byte)");
    return CSR_EPARSE;
  }
  struct reader rd = {.r = r,
                      .csu = csu,
                      .csu_len = strlen(csu),
                      .q = q,
                      .row_key = -1,
                      .why = why,
                      .whylen = whylen};
  int rc = read_page(&rd, len);
  if (rc < 0) {
    r->n = 0;
    return rc;
  }
  for (size_t i = 0; i < r->n; i++)
    r->ev[i].id = r->ids + (uintptr_t)r->ev[i].id;
  return 0;
}

void pl__rows_clear(struct pl__rows *r) {
  free(r->text);
  r->text = NULL;
  r->n = 0;
}

void pl__rows_free(struct pl__rows *r) {
  free(r->ev);
  free(r->ids);
  free(r->text);
  memset(r, 0, sizeof(*r));
}
