/* The state model (pipeline.h "State model"): the dedupe set, cursors, live events and the
 * dead-letter queue, changed only by applying records. Apply validates everything it needs before
 * it changes anything, so a refused record leaves the state as it was. Live events are entries of
 * the `ids` table; a finished one leaves it for the compact set of state_seen.c. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/ingress.h"
#include "csurelay/pipeline.h"
#include "state_internal.h"
#include "hash.h"

/* ---------------------------------------------------------------------------------------------- */
/* A string-keyed hash table: open addressing, linear probing, backward-shift deletion            */
/* ---------------------------------------------------------------------------------------------- */

static uint64_t hash_str(const char *k) {
  uint64_t h = csr_strhash(CSR_FNV1A_BASIS, k);
  return h ^ (h >> 29);
}

static size_t tab_find(const struct tab *t, const char *key, uint64_t h) {
  size_t mask = t->cap - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask)
    if (t->s[i].key == NULL || (t->s[i].h == h && strcmp(t->s[i].key, key) == 0))
      return i;
}

static void *tab_get(const struct tab *t, const char *key) {
  if (t->cap == 0)
    return NULL;
  size_t i = tab_find(t, key, hash_str(key));
  return t->s[i].key ? t->s[i].val : NULL;
}

/* Room for one more key (so the insert that follows cannot fail). */
static int tab_reserve(struct tab *t) {
  if ((t->n + 1) * 10 <= t->cap * 7)
    return 0;
  size_t cap = t->cap ? t->cap * 2 : 64;
  struct slot *s = calloc(cap, sizeof(*s));
  if (s == NULL)
    return UV_ENOMEM;
  struct tab nt = {s, cap, 0};
  for (size_t i = 0; i < t->cap; i++)
    if (t->s[i].key)
      nt.s[tab_find(&nt, t->s[i].key, t->s[i].h)] = t->s[i];
  nt.n = t->n;
  free(t->s);
  *t = nt;
  return 0;
}

/* The key must be absent and tab_reserve must have succeeded. */
static void tab_put(struct tab *t, const char *key, void *val) {
  uint64_t h = hash_str(key);
  t->s[tab_find(t, key, h)] = (struct slot){h, key, val};
  t->n++;
}

static void tab_del(struct tab *t, const char *key) {
  if (t->cap == 0)
    return;
  size_t mask = t->cap - 1, i = tab_find(t, key, hash_str(key)), j = i;
  if (t->s[i].key == NULL)
    return;
  for (;;) {
    j = (j + 1) & mask;
    if (t->s[j].key == NULL)
      break;
    size_t k = t->s[j].h & mask;
    /* Leave slot j where it is if its home lies cyclically in (i, j]. */
    if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
      continue;
    t->s[i] = t->s[j];
    i = j;
  }
  t->s[i].key = NULL;
  t->n--;
}

/* ---------------------------------------------------------------------------------------------- */
/* The state                                                                                      */
/* ---------------------------------------------------------------------------------------------- */

static const char empty[] = "";

static int fail(struct pl_state *s, int rc, uint8_t type, const char *fmt, const char *what) {
  char msg[200];
  snprintf(msg, sizeof(msg), fmt, what);
  snprintf(s->err, sizeof(s->err), "%s: %s", pl_rec_name(type), msg);
  return rc;
}

static const char *intern(struct pl_state *s, const char *name) {
  const char *v = tab_get(&s->names, name);
  if (v)
    return v;
  char *copy = strdup(name);
  if (copy == NULL || tab_reserve(&s->names) != 0) {
    free(copy);
    return NULL;
  }
  tab_put(&s->names, copy, copy);
  return copy;
}

static int64_t horizon_of(const struct pl_state *s, const char *csu) {
  for (size_t i = 0; i < s->n_horizons; i++)
    if (strcmp(s->horizons[i].csu, csu) == 0)
      return s->horizons[i].horizon_ms;
  return s->default_horizon_ms;
}

/* Lanes are few (CSUs x event types, bounded by the configuration): a scan is cheapest. */
static struct lane *lane_find(const struct pl_state *s, const char *csu, const char *type) {
  for (size_t i = 0; i < s->n_lanes; i++)
    if (strcmp(s->lanes[i]->csu, csu) == 0 && strcmp(s->lanes[i]->type, type) == 0)
      return s->lanes[i];
  return NULL;
}

static struct lane *lane_get(struct pl_state *s, const char *csu, const char *type) {
  struct lane *l = lane_find(s, csu, type);
  if (l)
    return l;
  if (s->n_lanes == s->cap_lanes) {
    size_t cap = s->cap_lanes ? s->cap_lanes * 2 : 8;
    struct lane **v = realloc(s->lanes, cap * sizeof(*v));
    if (v == NULL)
      return NULL;
    s->lanes = v;
    s->cap_lanes = cap;
  }
  const char *c = intern(s, csu), *t = intern(s, type);
  if (c == NULL || t == NULL || s->n_lanes >= UINT32_MAX || (l = calloc(1, sizeof(*l))) == NULL)
    return NULL;
  *l = (struct lane){
      .csu = c, .type = t, .index = (uint32_t)s->n_lanes, .horizon_ms = horizon_of(s, csu)};
  s->lanes[s->n_lanes++] = l;
  return l;
}

/* The id's 128-bit hash (state_internal.h says why 128 bits). */
static void hash_id(const char *id, uint64_t h[2]) {
  pl__seen_hash(id, strlen(id), h);
}

static bool seen_has(const struct pl_state *s, const char *id) {
  uint64_t h[2];
  if (s->seen.n == 0)
    return false;
  hash_id(id, h);
  return pl__seen_find(&s->seen, h) != NULL;
}

int pl_state_create(const struct pl_state_opts *opts, struct pl_state **out) {
  if (out == NULL || (opts && opts->n_horizons > 0 && opts->horizons == NULL))
    return UV_EINVAL;
  *out = NULL;
  struct pl_state *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return UV_ENOMEM;
  pl__seen_init(&s->seen);
  if (cs_jobs_create(NULL, &s->jobs) != 0 || (s->view = calloc(1, sizeof(*s->view))) == NULL ||
      csr_jw_init(&s->jw) != 0) {
    cs_jobs_destroy(s->jobs);
    free(s->view);
    free(s);
    return UV_ENOMEM;
  }
  if (opts && opts->n_horizons > 0) {
    s->horizons = calloc(opts->n_horizons, sizeof(*s->horizons));
    if (s->horizons == NULL) {
      pl_state_destroy(s);
      return UV_ENOMEM;
    }
    for (size_t i = 0; i < opts->n_horizons; i++, s->n_horizons++) {
      s->horizons[i].horizon_ms = opts->horizons[i].horizon_ms;
      if (opts->horizons[i].csu == NULL ||
          (s->horizons[i].csu = strdup(opts->horizons[i].csu)) == NULL) {
        int rc = opts->horizons[i].csu == NULL ? UV_EINVAL : UV_ENOMEM;
        pl_state_destroy(s);
        return rc;
      }
    }
  }
  s->default_horizon_ms = opts ? opts->default_horizon_ms : 0;
  *out = s;
  return 0;
}

static void delivery_clear(struct pl_state *s, struct pl_state_delivery *d) {
  if (d->reason != empty) {
    s->st.live_bytes -= strlen(d->reason) + 1;
    free((char *)d->reason);
  }
  if (d->excerpt != empty) {
    s->st.live_bytes -= strlen(d->excerpt) + 1;
    free((char *)d->excerpt);
  }
  d->reason = d->excerpt = empty;
}

/* Frees what a live event holds besides its entry (row, deliveries). */
static void event_release(struct pl_state *s, struct pl_state_event *ev) {
  for (size_t i = 0; i < ev->n_sinks; i++)
    delivery_clear(s, &ev->sinks[i]);
  s->st.live_bytes -= ev->n_sinks * sizeof(*ev->sinks) + (ev->row ? ev->row_len + 1 : 0);
  s->st.row_bytes -= ev->row ? ev->row_len : 0;
  free((char *)ev->row);
  free(ev->sinks);
  ev->row = NULL;
  ev->row_len = 0;
  ev->sinks = NULL;
  ev->n_sinks = 0;
}

void pl_state_destroy(struct pl_state *s) {
  if (s == NULL)
    return;
  for (size_t i = 0; i < s->ids.cap; i++)
    if (s->ids.s[i].key) {
      struct pl_state_event *ev = s->ids.s[i].val;
      event_release(s, ev);
      free(ev);
    }
  free(s->ids.s);
  pl__seen_free(&s->seen);
  free(s->view->id);
  free(s->view);
  for (size_t i = 0; i < s->names.cap; i++)
    free(s->names.s[i].val);
  free(s->names.s);
  for (size_t i = 0; i < s->n_lanes; i++) {
    pl__seen_heap_free(&s->lanes[i]->seen);
    free(s->lanes[i]);
  }
  free(s->lanes);
  for (size_t i = 0; i < s->n_horizons; i++)
    free((char *)s->horizons[i].csu);
  free(s->horizons);
  csr_jw_free(&s->jw);
  cs_jobs_destroy(s->jobs);
  free(s);
}

/* ---------------------------------------------------------------------------------------------- */
/* Transitions                                                                                    */
/* ---------------------------------------------------------------------------------------------- */

static void count_state(struct pl_state *s, enum pl_dstate st, int64_t by) {
  if (st == PL_DS_PENDING)
    s->st.pending += (uint64_t)by;
  else if (st == PL_DS_WAITING)
    s->st.waiting += (uint64_t)by;
  else if (st == PL_DS_DEAD)
    s->st.dead_letters += (uint64_t)by;
}

static void set_state(struct pl_state *s, struct pl_state_delivery *d, enum pl_dstate st) {
  struct pl_state_event *ev = (struct pl_state_event *)d->event;
  count_state(s, d->state, -1);
  count_state(s, st, 1);
  if (d->state == PL_DS_DEAD)
    ev->_dead--;
  if (st == PL_DS_DEAD)
    ev->_dead++;
  d->state = st;
}

/* Parked: live with only dead letters open. Called around every change of _open or _dead. */
static bool is_parked(const struct pl_state_event *ev) {
  return !ev->finished && ev->_open > 0 && ev->_dead == ev->_open;
}

static void count_parked(struct pl_state *s, const struct pl_state_event *ev, bool was) {
  bool now = is_parked(ev);
  if (now && !was)
    s->st.parked++;
  else if (was && !now)
    s->st.parked--;
}

static void dlq_link(struct pl_state *s, struct pl_state_delivery *d) {
  d->_dlq_next = NULL;
  d->_dlq_prev = s->dlq_tail;
  if (s->dlq_tail)
    s->dlq_tail->_dlq_next = d;
  else
    s->dlq_head = d;
  s->dlq_tail = d;
}

static void dlq_unlink(struct pl_state *s, struct pl_state_delivery *d) {
  if (d->_dlq_prev)
    d->_dlq_prev->_dlq_next = d->_dlq_next;
  else
    s->dlq_head = d->_dlq_next;
  if (d->_dlq_next)
    d->_dlq_next->_dlq_prev = d->_dlq_prev;
  else
    s->dlq_tail = d->_dlq_prev;
  d->_dlq_prev = d->_dlq_next = NULL;
}

static void live_link(struct pl_state *s, struct pl_state_event *ev) {
  ev->_next = NULL;
  ev->_prev = s->live_tail;
  if (s->live_tail)
    s->live_tail->_next = ev;
  else
    s->live_head = ev;
  s->live_tail = ev;
  s->st.live++;
}

static void live_unlink(struct pl_state *s, struct pl_state_event *ev) {
  if (ev->_prev)
    ev->_prev->_next = ev->_next;
  else
    s->live_head = ev->_next;
  if (ev->_next)
    ev->_next->_prev = ev->_prev;
  else
    s->live_tail = ev->_prev;
  ev->_prev = ev->_next = NULL;
  s->st.live--;
}

/* Room for one more finished id of lane `l`, taken before a record that finishes an event (or a
 * SEEN) changes anything: finish() cannot fail, and a refused record changes nothing. */
static int seen_reserve(struct pl_state *s, struct lane *l) {
  return pl__seen_reserve(&s->seen, &l->seen);
}

/* Every delivery is final and none is a dead letter: the entry is freed (the route stage looks
 * entries up again after each record), the dedupe set keeps the id's hash, time and lane
 * (reserved by seen_reserve). `ev` must not be used after this. */
static void finish(struct pl_state *s, struct pl_state_event *ev) {
  struct lane *l = ev->_lane;
  uint64_t h[2];
  live_unlink(s, ev);
  event_release(s, ev);
  tab_del(&s->ids, ev->id);
  hash_id(ev->id, h);
  /* Already held only after a SEEN by hash for an id that was live (never in a dump's order). */
  (void)pl__seen_add(&s->seen, &l->seen, l->index, h, ev->time_ms);
  free(ev);
}

/* Ends a change of an event's _open or _dead: the parked count follows, and an event with nothing
 * open finishes. `ev` must not be used after this. */
static void settle(struct pl_state *s, struct pl_state_event *ev, bool was_parked) {
  if (ev->_open > 0) {
    count_parked(s, ev, was_parked);
    return;
  }
  if (was_parked)
    s->st.parked--;
  finish(s, ev);
}

/* A new live entry (the id copied after the struct). */
static struct pl_state_event *entry_new(struct pl_state *s, const char *id, struct lane *l,
                                        int64_t time_ms) {
  size_t idlen = strlen(id);
  struct pl_state_event *ev = calloc(1, sizeof(*ev) + idlen + 1);
  if (ev == NULL || tab_reserve(&s->ids) != 0) {
    free(ev);
    return NULL;
  }
  memcpy((char *)(ev + 1), id, idlen + 1);
  ev->id = (const char *)(ev + 1);
  ev->csu = l->csu;
  ev->type = l->type;
  ev->time_ms = time_ms;
  ev->_lane = l;
  return ev;
}

static void entry_add(struct pl_state *s, struct pl_state_event *ev) {
  tab_put(&s->ids, ev->id, ev);
}

/* ---------------------------------------------------------------------------------------------- */
/* Decoding                                                                                       */
/* ---------------------------------------------------------------------------------------------- */

struct rec {
  uint8_t type;
  yajl_val root;
};

static int need_str(struct pl_state *s, const struct rec *r, const char *key, const char **out) {
  *out = csr_json_get_str(r->root, key);
  if (*out == NULL)
    return fail(s, CSR_EPARSE, r->type, "missing or non-string field \"%s\"", key);
  return 0;
}

static int opt_str(struct pl_state *s, const struct rec *r, const char *key, const char **out) {
  yajl_val v = csr_json_get(r->root, key);
  *out = NULL;
  if (v == NULL || YAJL_IS_NULL(v))
    return 0;
  if ((*out = csr_json_str(v)) == NULL)
    return fail(s, CSR_EPARSE, r->type, "field \"%s\" is not a string", key);
  return 0;
}

static int need_int(struct pl_state *s, const struct rec *r, const char *key, int64_t min,
                    int64_t max, int64_t *out) {
  if (csr_json_get_int(r->root, key, out) != 0 || *out < min || *out > max)
    return fail(s, CSR_EPARSE, r->type, "missing, non-integer or out of range field \"%s\"", key);
  return 0;
}

/* The live event `id` and its delivery to `sink`; CSR_ECORRUPT when either is unknown. */
static int find_delivery_of(struct pl_state *s, uint8_t type, const char *id, const char *sink,
                            struct pl_state_event **evp, struct pl_state_delivery **dp) {
  struct pl_state_event *ev = tab_get(&s->ids, id);
  if (ev == NULL && seen_has(s, id))
    return fail(s, CSR_ECORRUPT, type, "event \"%s\" is already finished", id);
  if (ev == NULL)
    return fail(s, CSR_ECORRUPT, type, "unknown id \"%s\"", id);
  const char *name = tab_get(&s->names, sink);
  for (size_t i = 0; name && i < ev->n_sinks; i++)
    if (ev->sinks[i].sink == name) {
      *evp = ev;
      *dp = &ev->sinks[i];
      return 0;
    }
  return fail(s, CSR_ECORRUPT, type, "the route has no sink \"%s\"", sink);
}

static int find_delivery(struct pl_state *s, const struct rec *r, struct pl_state_event **evp,
                         struct pl_state_delivery **dp) {
  const char *id, *sink;
  int rc;
  if ((rc = need_str(s, r, "id", &id)) != 0 || (rc = need_str(s, r, "sink", &sink)) != 0)
    return rc;
  return find_delivery_of(s, r->type, id, sink, evp, dp);
}

/* Copies the error texts into fresh strings (NULL for none), before anything changes. */
static int dup_error_texts(const char *rs, const char *ex, char **reason, char **excerpt) {
  *reason = *excerpt = NULL;
  if ((rs && rs[0] && (*reason = strdup(rs)) == NULL) ||
      (ex && ex[0] && (*excerpt = strdup(ex)) == NULL)) {
    free(*reason);
    return UV_ENOMEM;
  }
  return 0;
}

static void set_errors(struct pl_state *s, struct pl_state_delivery *d, char *reason,
                       char *excerpt) {
  delivery_clear(s, d);
  if (reason) {
    d->reason = reason;
    s->st.live_bytes += strlen(reason) + 1;
  }
  if (excerpt) {
    d->excerpt = excerpt;
    s->st.live_bytes += strlen(excerpt) + 1;
  }
}

/* ---------------------------------------------------------------------------------------------- */
/* Apply, one function per record type                                                           */
/* ---------------------------------------------------------------------------------------------- */

static int apply_cursor(struct pl_state *s, const struct rec *r) {
  const char *csu, *type;
  int64_t ms;
  int rc;
  if ((rc = need_str(s, r, "csu", &csu)) != 0 || (rc = need_str(s, r, "type", &type)) != 0 ||
      (rc = need_int(s, r, "cursor_ms", INT64_MIN, INT64_MAX, &ms)) != 0)
    return rc;
  struct lane *l = lane_get(s, csu, type);
  if (l == NULL)
    return UV_ENOMEM;
  if (!l->has_cursor)
    s->st.cursors++;
  if (!l->has_cursor || ms > l->cursor_ms)
    l->cursor_ms = ms;
  l->has_cursor = true;
  return 0;
}

static int check_sinks(struct pl_state *s, const struct rec *r, yajl_val sinks) {
  size_t n = csr_json_len(sinks);
  if (sinks == NULL || !YAJL_IS_ARRAY(sinks))
    return fail(s, CSR_EPARSE, r->type, "missing or non-array field \"%s\"", "sinks");
  for (size_t i = 0; i < n; i++)
    if (csr_json_str(csr_json_at(sinks, i)) == NULL)
      return fail(s, CSR_EPARSE, r->type, "field \"%s\" holds a non-string", "sinks");
  return 0; /* distinct names: admit_event, for both ways in */
}

/* Builds the live part of an admitted event: a copy of the row's text and its deliveries. */
static int admit_build(struct pl_state *s, struct pl_state_event *ev, const char *const *sinks,
                       size_t n, const char *row, size_t row_len) {
  char *copy = malloc(row_len + 1);
  ev->sinks = n ? calloc(n, sizeof(*ev->sinks)) : NULL;
  if (copy == NULL || (n && ev->sinks == NULL)) {
    free(copy);
    free(ev->sinks);
    return UV_ENOMEM;
  }
  memcpy(copy, row, row_len);
  copy[row_len] = '\0';
  for (size_t i = 0; i < n; i++) {
    const char *name = intern(s, sinks[i]);
    if (name == NULL) {
      free(copy);
      free(ev->sinks);
      return UV_ENOMEM;
    }
    ev->sinks[i] = (struct pl_state_delivery){
        .sink = name, .event = ev, .attempt = 1, .reason = empty, .excerpt = empty};
  }
  ev->row = copy;
  ev->row_len = row_len;
  ev->n_sinks = n;
  ev->_open = n;
  return 0;
}

/* What an ADMIT does, however its fields arrived (checked: a row, non-NULL sink names). */
static int admit_event(struct pl_state *s, const struct pl_rec_admit *a) {
  for (size_t i = 0; i < a->n_sinks; i++)
    for (size_t j = 0; j < i; j++)
      if (strcmp(a->sinks[i], a->sinks[j]) == 0)
        return fail(s, CSR_EPARSE, PL_REC_ADMIT, "field \"sinks\" names \"%s\" twice",
                    a->sinks[i]);
  if (tab_get(&s->ids, a->id) || seen_has(s, a->id)) {
    s->st.dup_admits++;
    return fail(s, UV_EEXIST, PL_REC_ADMIT, "id \"%s\" is already in the dedupe set", a->id);
  }
  struct lane *l = lane_get(s, a->csu, a->type);
  if (l && a->n_sinks == 0 && seen_reserve(s, l) != 0) /* finished at once */
    return UV_ENOMEM;
  struct pl_state_event *ev = l ? entry_new(s, a->id, l, a->time_ms) : NULL;
  if (ev == NULL)
    return UV_ENOMEM;
  int rc = admit_build(s, ev, a->sinks, a->n_sinks, a->row_json, a->row_len);
  if (rc != 0) {
    free(ev);
    return rc;
  }
  ev->admitted_ms = a->admitted_ms;
  entry_add(s, ev);
  live_link(s, ev);
  s->st.row_bytes += ev->row_len;
  s->st.live_bytes += ev->row_len + 1 + ev->n_sinks * sizeof(*ev->sinks);
  s->st.pending += ev->n_sinks;
  if (ev->_open == 0)
    finish(s, ev);
  return 0;
}

static int apply_admit(struct pl_state *s, const struct rec *r) {
  struct pl_rec_admit a = {0};
  int rc;
  if ((rc = need_str(s, r, "id", &a.id)) != 0 || (rc = need_str(s, r, "csu", &a.csu)) != 0 ||
      (rc = need_str(s, r, "type", &a.type)) != 0 ||
      (rc = need_int(s, r, "time_ms", INT64_MIN, INT64_MAX, &a.time_ms)) != 0 ||
      (rc = need_int(s, r, "admitted_ms", INT64_MIN, INT64_MAX, &a.admitted_ms)) != 0)
    return rc;
  yajl_val sinks = csr_json_get(r->root, "sinks"), row = csr_json_get(r->root, "event");
  if ((rc = check_sinks(s, r, sinks)) != 0)
    return rc;
  if (row == NULL || !YAJL_IS_OBJECT(row))
    return fail(s, CSR_EPARSE, r->type, "missing or non-object field \"%s\"", "event");
  /* the state keeps the row's compact text */
  csr_jw_reset(&s->jw);
  csr_jw_value(&s->jw, row);
  if (csr_jw_finish(&s->jw, &a.row_json, &a.row_len) != 0)
    return fail(s, CSR_EPARSE, r->type, "field \"%s\" cannot be re-encoded", "event");
  a.n_sinks = csr_json_len(sinks);
  const char **names = malloc((a.n_sinks ? a.n_sinks : 1) * sizeof(*names));
  if (names == NULL)
    return UV_ENOMEM;
  for (size_t i = 0; i < a.n_sinks; i++)
    names[i] = csr_json_str(csr_json_at(sinks, i));
  a.sinks = names;
  rc = admit_event(s, &a);
  free(names);
  return rc;
}

int pl_state_admit(struct pl_state *s, const struct pl_rec_admit *a) {
  if (s == NULL || !pl_rec_admit_complete(a))
    return UV_EINVAL;
  int rc = admit_event(s, a);
  if (rc == UV_ENOMEM)
    fail(s, rc, PL_REC_ADMIT, "%s", "out of memory");
  return rc;
}

static bool is_final(enum pl_dstate st) {
  return st != PL_DS_PENDING && st != PL_DS_WAITING;
}

/* An ATTEMPT's change, its fields checked; reason and excerpt are fresh copies (or NULL). */
static int do_attempt(struct pl_state *s, struct pl_state_delivery *d, int64_t attempt,
                      int64_t next_ms, int64_t status, const char *rs, const char *ex) {
  char *reason, *excerpt;
  if (is_final(d->state))
    return fail(s, UV_EALREADY, PL_REC_ATTEMPT, "the delivery to \"%s\" is already final",
                d->sink);
  if (dup_error_texts(rs, ex, &reason, &excerpt) != 0)
    return UV_ENOMEM;
  set_errors(s, d, reason, excerpt);
  set_state(s, d, PL_DS_WAITING);
  d->attempt = (unsigned)attempt;
  d->next_ms = next_ms;
  d->status = (int)status;
  return 0;
}

static int apply_attempt(struct pl_state *s, const struct rec *r) {
  struct pl_state_event *ev;
  struct pl_state_delivery *d;
  int64_t attempt, next_ms, status;
  const char *rs, *ex;
  int rc;
  if ((rc = find_delivery(s, r, &ev, &d)) != 0 ||
      (rc = need_int(s, r, "attempt", 1, UINT_MAX, &attempt)) != 0 ||
      (rc = need_int(s, r, "next_ms", INT64_MIN, INT64_MAX, &next_ms)) != 0 ||
      (rc = need_int(s, r, "status", INT_MIN, INT_MAX, &status)) != 0 ||
      (rc = opt_str(s, r, "reason", &rs)) != 0 || (rc = opt_str(s, r, "excerpt", &ex)) != 0)
    return rc;
  return do_attempt(s, d, attempt, next_ms, status, rs, ex);
}

static int parse_outcome(const char *o, enum pl_dstate *out) {
  if (strcmp(o, "delivered") == 0)
    *out = PL_DS_DELIVERED;
  else if (strcmp(o, "skipped") == 0)
    *out = PL_DS_SKIPPED;
  else if (strcmp(o, "dead") == 0)
    *out = PL_DS_DEAD;
  else
    return CSR_EPARSE;
  return 0;
}

/* An OUTCOME's change, its fields checked. */
static int do_outcome(struct pl_state *s, struct pl_state_event *ev, struct pl_state_delivery *d,
                      enum pl_dstate st, int64_t attempts, int64_t status, int64_t at_ms,
                      const char *rs, const char *ex) {
  char *reason, *excerpt;
  int rc;
  if (is_final(d->state))
    return fail(s, UV_EALREADY, PL_REC_OUTCOME, "the delivery to \"%s\" is already final",
                d->sink);
  if (st != PL_DS_DEAD && ev->_open == 1 && (rc = seen_reserve(s, ev->_lane)) != 0)
    return rc;
  if (dup_error_texts(rs, ex, &reason, &excerpt) != 0)
    return UV_ENOMEM;
  bool was_parked = is_parked(ev);
  set_errors(s, d, reason, excerpt);
  set_state(s, d, st);
  d->attempt = (unsigned)attempts;
  d->next_ms = 0;
  d->status = (int)status;
  d->at_ms = at_ms;
  if (st == PL_DS_DEAD)
    dlq_link(s, d);
  else
    ev->_open--;
  settle(s, ev, was_parked);
  return 0;
}

static int apply_outcome(struct pl_state *s, const struct rec *r) {
  struct pl_state_event *ev;
  struct pl_state_delivery *d;
  const char *o, *rs, *ex;
  enum pl_dstate st;
  int64_t attempts, status, at_ms;
  int rc;
  if ((rc = find_delivery(s, r, &ev, &d)) != 0 || (rc = need_str(s, r, "outcome", &o)) != 0 ||
      (rc = need_int(s, r, "attempts", 0, UINT_MAX, &attempts)) != 0 ||
      (rc = need_int(s, r, "status", INT_MIN, INT_MAX, &status)) != 0 ||
      (rc = need_int(s, r, "at_ms", INT64_MIN, INT64_MAX, &at_ms)) != 0 ||
      (rc = opt_str(s, r, "reason", &rs)) != 0 || (rc = opt_str(s, r, "excerpt", &ex)) != 0)
    return rc;
  if (parse_outcome(o, &st) != 0)
    return fail(s, CSR_EPARSE, r->type, "field \"outcome\" is \"%s\"", o);
  return do_outcome(s, ev, d, st, attempts, status, at_ms, rs, ex);
}

int pl_state_deliver(struct pl_state *s, uint8_t type, const struct pl_rec_delivery *rec) {
  if (s == NULL || rec == NULL || rec->id == NULL || rec->sink == NULL ||
      (type != PL_REC_ATTEMPT && type != PL_REC_OUTCOME))
    return UV_EINVAL;
  struct pl_state_event *ev;
  struct pl_state_delivery *d;
  int rc = find_delivery_of(s, type, rec->id, rec->sink, &ev, &d);
  if (rc != 0)
    return rc;
  if (type == PL_REC_ATTEMPT) {
    rc = rec->attempt < 1 ? UV_EINVAL
                          : do_attempt(s, d, rec->attempt, rec->next_ms, rec->status, rec->reason,
                                       rec->excerpt);
  } else {
    enum pl_dstate st = rec->outcome == SK_DELIVERED ? PL_DS_DELIVERED
                        : rec->outcome == SK_SKIPPED ? PL_DS_SKIPPED
                        : rec->outcome == SK_DEAD    ? PL_DS_DEAD
                                                     : PL_DS_PENDING;
    rc = st == PL_DS_PENDING ? UV_EINVAL
                             : do_outcome(s, ev, d, st, rec->attempt, rec->status, rec->at_ms,
                                          rec->reason, rec->excerpt);
  }
  if (rc == UV_ENOMEM)
    fail(s, rc, type, "%s", "out of memory");
  return rc;
}

static int apply_dlq(struct pl_state *s, const struct rec *r) {
  struct pl_state_event *ev;
  struct pl_state_delivery *d;
  int64_t at_ms;
  int rc;
  if ((rc = find_delivery(s, r, &ev, &d)) != 0)
    return rc;
  if (r->type == PL_REC_DLQ_REPLAY &&
      (rc = need_int(s, r, "at_ms", INT64_MIN, INT64_MAX, &at_ms)) != 0)
    return rc;
  if (d->state != PL_DS_DEAD)
    return fail(s, UV_ENOENT, r->type, "the delivery to \"%s\" is not a dead letter", d->sink);
  if (r->type == PL_REC_DLQ_DELETE && ev->_open == 1 && (rc = seen_reserve(s, ev->_lane)) != 0)
    return rc;
  bool was_parked = is_parked(ev);
  dlq_unlink(s, d);
  if (r->type == PL_REC_DLQ_DELETE) {
    set_state(s, d, PL_DS_DELETED);
    ev->_open--;
    settle(s, ev, was_parked);
    return 0;
  }
  delivery_clear(s, d);
  set_state(s, d, PL_DS_PENDING);
  d->attempt = 1;
  d->next_ms = d->at_ms = 0;
  d->status = 0;
  count_parked(s, ev, was_parked);
  return 0;
}

/* 32 lowercase hex digits: h1 then h2, as pl_rec_seen_hash writes them. */
static int parse_hash(const char *text, uint64_t h[2]) {
  if (strlen(text) != 32)
    return CSR_EPARSE;
  h[0] = h[1] = 0;
  for (size_t i = 0; i < 32; i++) {
    char c = text[i];
    int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (v < 0)
      return CSR_EPARSE;
    h[i / 16] = h[i / 16] << 4 | (uint64_t)v;
  }
  return 0;
}

/* SEEN names its id by text (files written before ids were kept as hashes) or by hash (dumps). */
static int seen_key(struct pl_state *s, const struct rec *r, uint64_t h[2]) {
  const char *id, *text;
  int rc;
  bool by_id = csr_json_get(r->root, "id") != NULL, by_hash = csr_json_get(r->root, "h") != NULL;
  if (by_id == by_hash)
    return fail(s, CSR_EPARSE, r->type, "needs exactly one of the fields \"id\" and \"%s\"", "h");
  if (by_id) {
    if ((rc = need_str(s, r, "id", &id)) != 0)
      return rc;
    if (tab_get(&s->ids, id) || seen_has(s, id))
      return fail(s, UV_EEXIST, r->type, "id \"%s\" is already in the dedupe set", id);
    hash_id(id, h);
    return 0;
  }
  if ((rc = need_str(s, r, "h", &text)) != 0)
    return rc;
  if (parse_hash(text, h) != 0)
    return fail(s, CSR_EPARSE, r->type, "field \"%s\" is not 32 lowercase hex digits", "h");
  if (pl__seen_find(&s->seen, h))
    return fail(s, UV_EEXIST, r->type, "h \"%s\" is already in the dedupe set", text);
  return 0;
}

static int apply_seen(struct pl_state *s, const struct rec *r) {
  const char *csu, *type;
  int64_t time_ms;
  uint64_t h[2];
  int rc;
  if ((rc = need_str(s, r, "csu", &csu)) != 0 || (rc = need_str(s, r, "type", &type)) != 0 ||
      (rc = need_int(s, r, "time_ms", INT64_MIN, INT64_MAX, &time_ms)) != 0 ||
      (rc = seen_key(s, r, h)) != 0)
    return rc;
  struct lane *l = lane_get(s, csu, type);
  if (l == NULL || seen_reserve(s, l) != 0)
    return UV_ENOMEM;
  (void)pl__seen_add(&s->seen, &l->seen, l->index, h, time_ms);
  return 0;
}

int pl_state_apply(struct pl_state *s, uint8_t type, const void *payload, size_t len) {
  if (s == NULL || (payload == NULL && len > 0))
    return UV_EINVAL;
  if (type < PL_REC_CURSOR || type > PL_REC_CUSTOMER) {
    snprintf(s->err, sizeof(s->err), "unknown record type %u", (unsigned)type);
    return CSR_ECORRUPT;
  }
  if (type >= PL_REC_JOB) { /* the job model's own, with its message */
    int rc = cs_jobs_apply(s->jobs, type, payload, len);
    if (rc < 0)
      snprintf(s->err, sizeof(s->err), "%s", cs_jobs_error(s->jobs));
    return rc;
  }
  char why[160];
  struct rec r = {.type = type, .root = csr_json_parse(payload, len, why, sizeof(why))};
  if (r.root == NULL || !YAJL_IS_OBJECT(r.root)) {
    int rc = fail(s, CSR_EPARSE, type, "malformed payload: %s", r.root ? "not an object" : why);
    csr_json_free(r.root);
    return rc;
  }
  int rc;
  switch (type) {
    case PL_REC_CURSOR:
      rc = apply_cursor(s, &r);
      break;
    case PL_REC_ADMIT:
      rc = apply_admit(s, &r);
      break;
    case PL_REC_ATTEMPT:
      rc = apply_attempt(s, &r);
      break;
    case PL_REC_OUTCOME:
      rc = apply_outcome(s, &r);
      break;
    case PL_REC_SEEN:
      rc = apply_seen(s, &r);
      break;
    default:
      rc = apply_dlq(s, &r);
      break;
  }
  if (rc == UV_ENOMEM)
    fail(s, rc, type, "%s", "out of memory");
  csr_json_free(r.root);
  return rc;
}

const char *pl_state_error(const struct pl_state *s) {
  return s->err;
}

int pl_state_replay(void *arg, uint8_t type, const void *payload, size_t len) {
  int rc = pl_state_apply(arg, type, payload, len);
  return rc == UV_EEXIST && type == PL_REC_ADMIT ? 0 : rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* Queries and expiry                                                                             */
/* ---------------------------------------------------------------------------------------------- */

bool pl_state_seen(const struct pl_state *s, const char *id) {
  return s && id && (tab_get(&s->ids, id) != NULL || seen_has(s, id));
}

int pl_state_cursor(const struct pl_state *s, const char *csu, const char *type, int64_t *out_ms) {
  const struct lane *l = s && csu && type ? lane_find(s, csu, type) : NULL;
  if (l == NULL || !l->has_cursor)
    return UV_ENOENT;
  *out_ms = l->cursor_ms;
  return 0;
}

int pl_state_cursor_at(const struct pl_state *s, size_t i, const char **csu, const char **type,
                       int64_t *cursor_ms) {
  for (size_t k = 0; k < s->n_lanes; k++) {
    const struct lane *l = s->lanes[k];
    if (l->has_cursor && i-- == 0) {
      *csu = l->csu;
      *type = l->type;
      *cursor_ms = l->cursor_ms;
      return 0;
    }
  }
  return UV_ENOENT;
}

const struct pl_state_event *pl_state_event(const struct pl_state *s, const char *id) {
  if (s == NULL || id == NULL)
    return NULL;
  const struct pl_state_event *ev = tab_get(&s->ids, id);
  uint64_t h[2];
  if (ev != NULL || s->seen.n == 0)
    return ev;
  size_t len = strlen(id);
  pl__seen_hash(id, len, h);
  const struct pl__seen_rec *rec = pl__seen_find(&s->seen, h);
  struct finished_view *v = s->view; /* scratch memory, hence writable through a const state */
  if (rec == NULL)
    return NULL;
  if (len + 1 > v->cap) {
    char *p = realloc(v->id, len + 1);
    if (p == NULL)
      return NULL;
    v->id = p;
    v->cap = len + 1;
  }
  memcpy(v->id, id, len + 1);
  const struct lane *l = s->lanes[rec->lane];
  v->ev = (struct pl_state_event){
      .id = v->id, .csu = l->csu, .type = l->type, .time_ms = rec->time_ms, .finished = true};
  return &v->ev;
}

const struct pl_state_event *pl_state_live_next(const struct pl_state *s,
                                                const struct pl_state_event *prev) {
  return prev ? prev->_next : s->live_head;
}

const struct pl_state_delivery *pl_state_dlq_next(const struct pl_state *s,
                                                  const struct pl_state_delivery *prev) {
  return prev ? prev->_dlq_next : s->dlq_head;
}

void pl_state_stats(const struct pl_state *s, struct pl_state_stats *out) {
  *out = s->st;
  out->finished = s->seen.n;
  out->seen_bytes = pl__seen_bytes(&s->seen);
  for (size_t i = 0; i < s->n_lanes; i++)
    out->seen_bytes += pl__seen_heap_bytes(&s->lanes[i]->seen);
}

size_t pl_state_expire(struct pl_state *s) {
  size_t dropped = 0;
  for (size_t i = 0; i < s->n_lanes; i++) {
    struct lane *l = s->lanes[i];
    if (!l->has_cursor)
      continue;
    /* Saturate: a horizon larger than the cursor keeps everything. */
    int64_t below = l->horizon_ms > 0 && l->cursor_ms < INT64_MIN + l->horizon_ms
                        ? INT64_MIN
                        : l->cursor_ms - l->horizon_ms;
    dropped += pl__seen_expire(&s->seen, &l->seen, below);
  }
  if (dropped > 0)
    pl__seen_shrink(&s->seen);
  s->st.expired += dropped;
  return dropped;
}

struct cs_jobs *pl_state_jobs(struct pl_state *s) {
  return s->jobs;
}
