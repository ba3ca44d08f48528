/* What the next Search of a window is: the keyset walk, the $skip passes over a dense second and
 * the proof that such a second was read whole (the approach is described in pipeline.h, "Poll
 * stage"); the Search's body and URL; the answer's rows and their ids. No I/O: poll.c does that. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/timefmt.h"
#include "poll_internal.h"
#include "hash.h"

/* ---------------------------------------------------------------------------------------------- */
/* Id hashes */
/* ---------------------------------------------------------------------------------------------- */

uint64_t pl__id_hash(const char *id) {
  return csr_strhash(CSR_FNV1A_BASIS, id);
}

static int idset_grow(struct pl__idset *s) {
  size_t cap = s->cap ? s->cap * 2 : 256;
  uint64_t *slots = calloc(cap, sizeof(*slots));
  if (slots == NULL)
    return UV_ENOMEM;
  for (size_t i = 0; i < s->cap; i++) {
    if (s->slots[i] == 0)
      continue;
    size_t pos = (size_t)s->slots[i] & (cap - 1);
    while (slots[pos] != 0)
      pos = (pos + 1) & (cap - 1);
    slots[pos] = s->slots[i];
  }
  free(s->slots);
  s->slots = slots;
  s->cap = cap;
  return 0;
}

int pl__idset_add(struct pl__idset *s, uint64_t h) {
  if (h == 0)
    h = 1;
  if ((s->n + 1) * 2 > s->cap) {
    if (s->n >= PL__IDSET_MAX)
      return UV_E2BIG;
    int rc = idset_grow(s);
    if (rc < 0)
      return rc;
  }
  /* fold the high bits in (csr_strhash mixes well; the fold dates from byte-wise FNV-1a) */
  size_t pos = (size_t)(h ^ (h >> 29) ^ (h >> 47)) & (s->cap - 1);
  while (s->slots[pos] != 0) {
    if (s->slots[pos] == h)
      return 0;
    pos = (pos + 1) & (s->cap - 1);
  }
  s->slots[pos] = h;
  s->n++;
  return 1;
}

void pl__idset_free(struct pl__idset *s) {
  free(s->slots);
  memset(s, 0, sizeof(*s));
}

/* ---------------------------------------------------------------------------------------------- */
/* Windows */
/* ---------------------------------------------------------------------------------------------- */

void pl__win_begin(struct pl__win *w, bool sweep, int64_t from_ms, int64_t to_ms) {
  pl__idset_free(&w->seen);
  *w = (struct pl__win){
      .active = true, .sweep = sweep, .start_ms = from_ms, .to_ms = to_ms, .from_ms = from_ms};
}

void pl__win_end(struct pl__win *w) {
  pl__idset_free(&w->seen);
  memset(w, 0, sizeof(*w));
}

/* $top of dense pass `pass`: counting down from the wide top in steps of pg->kinds, never a keyset
 * $top of any window (a keyset query of the same second, which the CSU may have cached), so no two
 * queries of the lane ever send the same (From, To, $top, $skip). 0 when the tops run out. */
static unsigned pass_top(const struct pl__paging *pg, unsigned pass) {
  unsigned wide = pg->wide_top > pg->keyset_hi ? pg->wide_top : pg->keyset_hi;
  uint64_t step = (uint64_t)pass * pg->kinds + pg->kind;
  if (step >= wide)
    return 0;
  unsigned top = wide - (unsigned)step;
  if (top <= pg->keyset_hi) {
    unsigned band = pg->keyset_hi - pg->keyset_lo + 1;
    top = top > band ? top - band : 0;
  }
  return top;
}

void pl__win_query(const struct pl__win *w, const struct pl__paging *pg, struct pl__query *q) {
  q->from_ms = w->from_ms;
  q->to_ms = w->to_ms;
  q->top = w->dense ? w->top : pg->page_size;
  q->skip = w->dense ? w->skip : 0;
}

/* Adds the ids of rows inside the dense second to `seen`; returns how many rows were inside it (or
 * < 0 when the set cannot grow) and whether any row lies after it. */
static long note_second(struct pl__win *w, const struct pl_poll_event *ev, size_t n, bool *beyond) {
  int64_t hi = w->from_ms + 1000;
  long inside = 0;
  *beyond = false;
  for (size_t i = 0; i < n; i++) {
    if (ev[i].time_ms > hi) {
      *beyond = true;
      continue;
    }
    int rc = pl__idset_add(&w->seen, pl__id_hash(ev[i].id));
    if (rc < 0)
      return rc;
    inside++;
  }
  return inside;
}

/* A full page inside one second: start paging that second in passes. The stuck page's rows count
 * as seen (they are rows of the second), which helps the first pass finish the proof. */
static enum pl__step enter_dense(struct pl__win *w, const struct pl__paging *pg,
                                 const struct pl_poll_event *ev, size_t n, const char **why) {
  bool beyond;
  w->dense = true;
  w->pass = 0;
  w->skip = 0;
  w->pass_rows = 0;
  w->top = pass_top(pg, 0);
  if (note_second(w, ev, n, &beyond) < 0) {
    *why = "dense second: too many rows to track";
    return PL__STEP_FAIL;
  }
  return PL__STEP_NEXT;
}

static enum pl__step keyset_step(struct pl__win *w, const struct pl__paging *pg,
                                 const struct pl__query *q, const struct pl_poll_event *ev,
                                 size_t n, int64_t *mark, const char **why) {
  if (n < q->top) {
    *mark = w->to_ms;
    return PL__STEP_DONE;
  }
  int64_t last = ev[0].time_ms;
  for (size_t i = 1; i < n; i++)
    if (ev[i].time_ms > last)
      last = ev[i].time_ms;
  /* every row before `last` is on this page; From is exclusive, so the next Search starts just
   * before last's second and reads all of it again */
  int64_t next = pl__floor_s(last - 1);
  if (next > w->from_ms) {
    w->from_ms = next;
    *mark = next;
    return PL__STEP_NEXT;
  }
  return enter_dense(w, pg, ev, n, why);
}

static enum pl__step dense_step(struct pl__win *w, const struct pl__paging *pg,
                                const struct pl__query *q, const struct pl_poll_event *ev, size_t n,
                                int64_t *mark, const char **why) {
  bool beyond;
  long inside = note_second(w, ev, n, &beyond);
  if (inside < 0) {
    *why = "dense second: too many rows to track";
    return PL__STEP_FAIL;
  }
  w->pass_rows += (uint64_t)inside;
  bool short_page = n < q->top;
  if (!short_page && !beyond) {
    w->skip += q->top;
    return PL__STEP_NEXT;
  }
  /* The pass is over. Its pages before this one were full of the second's rows, so pass_rows is
   * the second's size as of this page; ids only accumulate rows that exist, so reaching that many
   * distinct ids means every row of the second has been on a page. */
  if (w->seen.n >= w->pass_rows) {
    int64_t hi = w->from_ms + 1000;
    w->dense = false;
    pl__idset_free(&w->seen);
    if (short_page || hi >= w->to_ms) {
      *mark = w->to_ms;
      return PL__STEP_DONE;
    }
    w->from_ms = hi;
    *mark = hi;
    return PL__STEP_NEXT;
  }
  w->pass++;
  w->top = w->pass < pg->max_passes ? pass_top(pg, w->pass) : 0;
  if (w->top == 0) {
    *why = "dense second: rows still unseen after every pass";
    return PL__STEP_FAIL;
  }
  w->skip = 0;
  w->pass_rows = 0;
  return PL__STEP_NEXT;
}

enum pl__step pl__win_advance(struct pl__win *w, const struct pl__paging *pg,
                              const struct pl__query *q, const struct pl_poll_event *ev, size_t n,
                              int64_t *mark, const char **why) {
  enum pl__step step =
      w->dense ? dense_step(w, pg, q, ev, n, mark, why) : keyset_step(w, pg, q, ev, n, mark, why);
  if (step == PL__STEP_NEXT && w->dense && w->top == 0) {
    *why = "dense second: no $top left for a pass";
    return PL__STEP_FAIL;
  }
  return step;
}

/* ---------------------------------------------------------------------------------------------- */
/* The request */
/* ---------------------------------------------------------------------------------------------- */

static int keep_text(const char *text, size_t len, char **out) {
  char *s = realloc(*out, len + 1);
  if (s == NULL)
    return UV_ENOMEM;
  memcpy(s, text, len);
  s[len] = '\0';
  *out = s;
  return 0;
}

int pl__search_body(struct csr_jw *jw, const char *type, const struct pl__query *q, char **body) {
  char from[CSR_TIME_BUF], to[CSR_TIME_BUF];
  const char *text;
  size_t len;
  if (csr_time_format_seconds(q->from_ms, from, sizeof(from)) == 0 ||
      csr_time_format_seconds(q->to_ms, to, sizeof(to)) == 0)
    return UV_EINVAL;
  csr_jw_reset(jw);
  csr_jw_obj(jw);
  csr_jw_key(jw, "commerceEventSearchCriteria");
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "EventType", type);
  csr_jw_kstr(jw, "EventDateTimeFrom", from);
  csr_jw_kstr(jw, "EventDateTimeTo", to);
  csr_jw_obj_end(jw);
  csr_jw_obj_end(jw);
  int rc = csr_jw_finish(jw, &text, &len);
  return rc < 0 ? rc : keep_text(text, len, body);
}

int pl__search_url(const char *base, const struct pl__query *q, char **url) {
  size_t blen = strlen(base);
  const char *slash = blen > 0 && base[blen - 1] == '/' ? "" : "/";
  char tail[160];
  int n = snprintf(tail, sizeof(tail),
                   "%sCommerce/CommerceEventsController/Search?$top=%u&$skip=%" PRIu64
                   "&api-version=7.3",
                   slash, q->top, q->skip);
  char *s = realloc(*url, blen + (size_t)n + 1);
  if (s == NULL)
    return UV_ENOMEM;
  memcpy(s, base, blen);
  memcpy(s + blen, tail, (size_t)n + 1);
  *url = s;
  return 0;
}
