/* JSON views of the pipeline's state for the admin API and `csurelay state` (state_json.h). Pure
 * formatting over the state's read-only views: nothing here changes the state or logs. */
#include "state_json.h"

#include <stdio.h>

#include "csurelay/ingress.h"
#include "csurelay/timefmt.h"

static const char *state_name(enum pl_dstate st) {
  switch (st) {
    case PL_DS_PENDING:
      return "pending";
    case PL_DS_WAITING:
      return "waiting";
    case PL_DS_DELIVERED:
      return "delivered";
    case PL_DS_SKIPPED:
      return "skipped";
    case PL_DS_DEAD:
      return "dead";
    case PL_DS_DELETED:
      return "deleted";
  }
  return "?";
}

size_t csr_state_json_time(int64_t ms, char *buf, size_t len) {
  char tmp[CSR_TIME_BUF];
  size_t n = csr_time_format_seconds(ms, tmp, sizeof(tmp));
  int frac = (int)(((ms % 1000) + 1000) % 1000); /* the seconds were floored towards the past */
  if (n == 0 || len < n + 5) {
    if (len > 0)
      buf[0] = '\0';
    return 0;
  }
  return (size_t)snprintf(buf, len, "%.*s.%03dZ", (int)(n - 1), tmp, frac);
}

static void kv_time(struct csr_jw *jw, const char *key, int64_t ms) {
  char buf[CSR_TIME_BUF];
  csr_jw_key(jw, key);
  if (csr_state_json_time(ms, buf, sizeof(buf)) == 0)
    csr_jw_null(jw);
  else
    csr_jw_str(jw, buf);
}

static void kv_opt_str(struct csr_jw *jw, const char *key, const char *s) {
  csr_jw_kstr(jw, key, s && s[0] ? s : NULL);
}

/* status, reason, excerpt: the last answer's, null when there was none. */
static void kv_answer(struct csr_jw *jw, const struct pl_state_delivery *d) {
  csr_jw_key(jw, "status");
  if (d->status)
    csr_jw_int(jw, d->status);
  else
    csr_jw_null(jw);
  kv_opt_str(jw, "reason", d->reason);
  kv_opt_str(jw, "excerpt", d->excerpt);
}

static void delivery(struct csr_jw *jw, const struct pl_state_delivery *d) {
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "sink", d->sink);
  csr_jw_kstr(jw, "state", state_name(d->state));
  switch (d->state) {
    case PL_DS_PENDING:
      csr_jw_kint(jw, "attempt", d->attempt);
      break;
    case PL_DS_WAITING:
      csr_jw_kint(jw, "attempt", d->attempt);
      kv_time(jw, "next_attempt_at", d->next_ms);
      break;
    default:
      csr_jw_kint(jw, "attempts", d->attempt);
      kv_time(jw, "decided_at", d->at_ms);
      break;
  }
  kv_answer(jw, d);
  csr_jw_obj_end(jw);
}

/* The stored row, copied through the parser so its numbers keep their text. */
static int row(struct csr_jw *jw, const struct pl_state_event *ev) {
  yajl_val v = csr_json_parse(ev->row, ev->row_len, NULL, 0);
  if (v == NULL)
    return CSR_EPARSE;
  csr_jw_key(jw, "event");
  csr_jw_value(jw, v);
  csr_json_free(v);
  return 0;
}

int csr_state_json_event(struct csr_jw *jw, const struct pl_state_event *ev, bool with_row) {
  if (jw == NULL || ev == NULL)
    return UV_EINVAL;
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "id", ev->id);
  csr_jw_kstr(jw, "csu", ev->csu);
  csr_jw_kstr(jw, "type", ev->type);
  kv_time(jw, "event_time", ev->time_ms);
  if (ev->admitted_ms)
    kv_time(jw, "admitted_at", ev->admitted_ms);
  else
    csr_jw_kstr(jw, "admitted_at", NULL);
  csr_jw_kbool(jw, "finished", ev->finished);
  if (!ev->finished) {
    if (with_row && ev->row) {
      int rc = row(jw, ev);
      if (rc < 0)
        return rc;
    }
    csr_jw_key(jw, "deliveries");
    csr_jw_arr(jw);
    for (size_t i = 0; i < ev->n_sinks; i++)
      delivery(jw, &ev->sinks[i]);
    csr_jw_arr_end(jw);
  }
  csr_jw_obj_end(jw);
  return 0;
}

static void dead_letter(struct csr_jw *jw, const struct pl_state_delivery *d) {
  const struct pl_state_event *ev = d->event;
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "id", ev->id);
  csr_jw_kstr(jw, "sink", d->sink);
  csr_jw_kstr(jw, "csu", ev->csu);
  csr_jw_kstr(jw, "type", ev->type);
  kv_time(jw, "event_time", ev->time_ms);
  csr_jw_kint(jw, "attempts", d->attempt);
  kv_answer(jw, d);
  kv_time(jw, "dead_at", d->at_ms);
  csr_jw_obj_end(jw);
}

int csr_state_json_dlq(struct csr_jw *jw, const struct pl_state *s, size_t offset, size_t limit) {
  if (jw == NULL || s == NULL)
    return UV_EINVAL;
  struct pl_state_stats st;
  pl_state_stats(s, &st);
  csr_jw_obj(jw);
  csr_jw_kint(jw, "total", (int64_t)st.dead_letters);
  csr_jw_kint(jw, "offset", offset > INT64_MAX ? INT64_MAX : (int64_t)offset);
  csr_jw_key(jw, "items");
  csr_jw_arr(jw);
  size_t i = 0, shown = 0;
  const struct pl_state_delivery *d = offset < st.dead_letters ? pl_state_dlq_next(s, NULL) : NULL;
  for (; d != NULL && shown < limit; d = pl_state_dlq_next(s, d), i++) {
    if (i < offset)
      continue;
    dead_letter(jw, d);
    shown++;
  }
  csr_jw_arr_end(jw);
  csr_jw_obj_end(jw);
  return 0;
}

static void cursors(struct csr_jw *jw, const struct pl_state *s, int64_t now_ms) {
  const char *csu, *type;
  int64_t at;
  csr_jw_key(jw, "cursors");
  csr_jw_arr(jw);
  for (size_t i = 0; pl_state_cursor_at(s, i, &csu, &type, &at) == 0; i++) {
    csr_jw_obj(jw);
    csr_jw_kstr(jw, "csu", csu);
    csr_jw_kstr(jw, "type", type);
    kv_time(jw, "cursor", at);
    csr_jw_kint(jw, "lag_s", now_ms > at ? (now_ms - at) / 1000 : 0);
    csr_jw_obj_end(jw);
  }
  csr_jw_arr_end(jw);
}

/* The customer sync jobs held (pl_state_jobs wants a mutable state; this only reads counts). */
static void jobs(struct csr_jw *jw, const struct pl_state *s) {
  struct cs_jobs_stats js;
  cs_jobs_stats(pl_state_jobs((struct pl_state *)s), &js);
  csr_jw_key(jw, "jobs");
  csr_jw_obj(jw);
  csr_jw_kint(jw, "pending", (int64_t)js.pending);
  csr_jw_kint(jw, "ended", (int64_t)js.ended);
  csr_jw_kint(jw, "accounts", (int64_t)js.accounts);
  csr_jw_obj_end(jw);
}

int csr_state_json_summary(struct csr_jw *jw, const struct pl_state *s, int64_t now_ms) {
  if (jw == NULL || s == NULL)
    return UV_EINVAL;
  struct pl_state_stats st;
  pl_state_stats(s, &st);
  csr_jw_obj(jw);
  csr_jw_kint(jw, "live", (int64_t)st.live);
  csr_jw_kint(jw, "finished", (int64_t)st.finished);
  csr_jw_kint(jw, "parked", (int64_t)st.parked);
  csr_jw_kint(jw, "dead_letters", (int64_t)st.dead_letters);
  csr_jw_kint(jw, "pending", (int64_t)st.pending);
  csr_jw_kint(jw, "waiting", (int64_t)st.waiting);
  csr_jw_kint(jw, "row_bytes", (int64_t)st.row_bytes);
  csr_jw_kint(jw, "live_bytes", (int64_t)st.live_bytes);
  cursors(jw, s, now_ms);
  jobs(jw, s);
  csr_jw_obj_end(jw);
  return 0;
}
