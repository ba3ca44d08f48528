/* The state model's record payloads (pipeline.h "State model"): one compact JSON object per
 * record, written with csr_jw so numbers in rows keep their text. Decoding lives in state.c, next
 * to the code that applies what it decodes. */
#include <inttypes.h>
#include <stdio.h>

#include "csurelay/pipeline.h"

const char *pl_rec_name(uint8_t type) {
  switch (type) {
    case PL_REC_CURSOR:
      return "CURSOR";
    case PL_REC_ADMIT:
      return "ADMIT";
    case PL_REC_ATTEMPT:
      return "ATTEMPT";
    case PL_REC_OUTCOME:
      return "OUTCOME";
    case PL_REC_DLQ_REPLAY:
      return "DLQ_REPLAY";
    case PL_REC_DLQ_DELETE:
      return "DLQ_DELETE";
    case PL_REC_SEEN:
      return "SEEN";
    case PL_REC_JOB:
      return "JOB";
    case PL_REC_JOB_END:
      return "JOB_END";
    case PL_REC_CUSTOMER:
      return "CUSTOMER";
    default:
      return "?";
  }
}

int pl_rec_cursor(struct csr_jw *jw, const char *csu, const char *type, int64_t cursor_ms) {
  if (jw == NULL || csu == NULL || type == NULL)
    return UV_EINVAL;
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "csu", csu);
  csr_jw_kstr(jw, "type", type);
  csr_jw_kint(jw, "cursor_ms", cursor_ms);
  csr_jw_obj_end(jw);
  return 0;
}

bool pl_rec_admit_complete(const struct pl_rec_admit *a) {
  if (a == NULL || a->id == NULL || a->csu == NULL || a->type == NULL ||
      (a->n_sinks > 0 && a->sinks == NULL) || a->row_json == NULL || a->row_len == 0)
    return false;
  for (size_t i = 0; i < a->n_sinks; i++)
    if (a->sinks[i] == NULL)
      return false;
  return true;
}

int pl_rec_admit(struct csr_jw *jw, const struct pl_rec_admit *a) {
  if (jw == NULL || !pl_rec_admit_complete(a))
    return UV_EINVAL;
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "id", a->id);
  csr_jw_kstr(jw, "csu", a->csu);
  csr_jw_kstr(jw, "type", a->type);
  csr_jw_kint(jw, "time_ms", a->time_ms);
  csr_jw_kint(jw, "admitted_ms", a->admitted_ms);
  csr_jw_key(jw, "sinks");
  csr_jw_arr(jw);
  for (size_t i = 0; i < a->n_sinks; i++)
    csr_jw_str(jw, a->sinks[i]);
  csr_jw_arr_end(jw);
  csr_jw_key(jw, "event");
  csr_jw_raw(jw, a->row_json, a->row_len);
  csr_jw_obj_end(jw);
  return 0;
}

static void error_fields(struct csr_jw *jw, const struct pl_rec_delivery *d) {
  csr_jw_kint(jw, "status", d->status);
  if (d->reason && d->reason[0])
    csr_jw_kstr(jw, "reason", d->reason);
  if (d->excerpt && d->excerpt[0])
    csr_jw_kstr(jw, "excerpt", d->excerpt);
}

int pl_rec_attempt(struct csr_jw *jw, const struct pl_rec_delivery *d) {
  if (jw == NULL || d == NULL || d->id == NULL || d->sink == NULL)
    return UV_EINVAL;
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "id", d->id);
  csr_jw_kstr(jw, "sink", d->sink);
  csr_jw_kint(jw, "attempt", d->attempt);
  csr_jw_kint(jw, "next_ms", d->next_ms);
  error_fields(jw, d);
  csr_jw_obj_end(jw);
  return 0;
}

int pl_rec_outcome(struct csr_jw *jw, const struct pl_rec_delivery *d) {
  if (jw == NULL || d == NULL || d->id == NULL || d->sink == NULL)
    return UV_EINVAL;
  const char *o = d->outcome == SK_DELIVERED ? "delivered"
                  : d->outcome == SK_SKIPPED ? "skipped"
                  : d->outcome == SK_DEAD    ? "dead"
                                             : NULL;
  if (o == NULL)
    return UV_EINVAL;
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "id", d->id);
  csr_jw_kstr(jw, "sink", d->sink);
  csr_jw_kstr(jw, "outcome", o);
  csr_jw_kint(jw, "attempts", d->attempt);
  error_fields(jw, d);
  csr_jw_kint(jw, "at_ms", d->at_ms);
  csr_jw_obj_end(jw);
  return 0;
}

int pl_rec_dlq_replay(struct csr_jw *jw, const char *id, const char *sink, int64_t at_ms) {
  if (jw == NULL || id == NULL || sink == NULL)
    return UV_EINVAL;
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "id", id);
  csr_jw_kstr(jw, "sink", sink);
  csr_jw_kint(jw, "at_ms", at_ms);
  csr_jw_obj_end(jw);
  return 0;
}

int pl_rec_dlq_delete(struct csr_jw *jw, const char *id, const char *sink) {
  if (jw == NULL || id == NULL || sink == NULL)
    return UV_EINVAL;
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "id", id);
  csr_jw_kstr(jw, "sink", sink);
  csr_jw_obj_end(jw);
  return 0;
}

int pl_rec_seen(struct csr_jw *jw, const char *id, const char *csu, const char *type,
                int64_t time_ms) {
  if (jw == NULL || id == NULL || csu == NULL || type == NULL)
    return UV_EINVAL;
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "id", id);
  csr_jw_kstr(jw, "csu", csu);
  csr_jw_kstr(jw, "type", type);
  csr_jw_kint(jw, "time_ms", time_ms);
  csr_jw_obj_end(jw);
  return 0;
}

int pl_rec_seen_hash(struct csr_jw *jw, uint64_t h1, uint64_t h2, const char *csu, const char *type,
                     int64_t time_ms) {
  char hex[33];
  if (jw == NULL || csu == NULL || type == NULL)
    return UV_EINVAL;
  snprintf(hex, sizeof(hex), "%016" PRIx64 "%016" PRIx64, h1, h2);
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "h", hex);
  csr_jw_kstr(jw, "csu", csu);
  csr_jw_kstr(jw, "type", type);
  csr_jw_kint(jw, "time_ms", time_ms);
  csr_jw_obj_end(jw);
  return 0;
}
