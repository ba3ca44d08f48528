/* The state model's dump (pipeline.h, pl_state_dump): the fewest records that rebuild an equal
 * state, written through the store's emitter when it compacts. state.c applies records; this file
 * turns the state back into them. */
#include <stdlib.h>

#include "csurelay/ingress.h"
#include "csurelay/pipeline.h"
#include "state_internal.h"

static struct pl_rec_delivery rec_of(const struct pl_state_delivery *d) {
  return (struct pl_rec_delivery){
      .id = d->event->id,
      .sink = d->sink,
      .outcome = d->state == PL_DS_DELIVERED ? SK_DELIVERED
                 : d->state == PL_DS_SKIPPED ? SK_SKIPPED
                                             : SK_DEAD,
      .attempt = d->attempt,
      .next_ms = d->next_ms,
      .at_ms = d->at_ms,
      .status = d->status,
      .reason = d->reason,
      .excerpt = d->excerpt,
  };
}

static int dump_admit(struct pl_state *s, struct pl_store_emitter *e,
                      const struct pl_state_event *ev) {
  const char **names = malloc((ev->n_sinks ? ev->n_sinks : 1) * sizeof(*names));
  if (names == NULL)
    return UV_ENOMEM;
  for (size_t i = 0; i < ev->n_sinks; i++)
    names[i] = ev->sinks[i].sink;
  struct pl_rec_admit a = {ev->id,          ev->csu, ev->type,    ev->time_ms,
                           ev->admitted_ms, names,   ev->n_sinks, ev->row, ev->row_len};
  int rc = pl_store_emit_jw(e, PL_REC_ADMIT, &s->jw, pl_rec_admit(&s->jw, &a));
  free(names);
  return rc;
}

static int dump_live(struct pl_state *s, struct pl_store_emitter *e,
                     const struct pl_state_event *ev) {
  int rc = dump_admit(s, e, ev);
  for (size_t i = 0; rc == 0 && i < ev->n_sinks; i++) {
    const struct pl_state_delivery *d = &ev->sinks[i];
    struct pl_rec_delivery r = rec_of(d);
    if (d->state == PL_DS_WAITING)
      rc = pl_store_emit_jw(e, PL_REC_ATTEMPT, &s->jw, pl_rec_attempt(&s->jw, &r));
    else if (d->state == PL_DS_DELIVERED || d->state == PL_DS_SKIPPED || d->state == PL_DS_DELETED)
      rc = pl_store_emit_jw(e, PL_REC_OUTCOME, &s->jw, pl_rec_outcome(&s->jw, &r));
    if (rc == 0 && d->state == PL_DS_DELETED)
      rc = pl_store_emit_jw(e, PL_REC_DLQ_DELETE, &s->jw,
                            pl_rec_dlq_delete(&s->jw, ev->id, d->sink));
  }
  return rc;
}

int pl_state_dump(void *arg, struct pl_store_emitter *e) {
  struct pl_state *s = arg;
  int rc = 0;
  csr_jw_reset(&s->jw);
  for (size_t i = 0; rc == 0 && i < s->n_lanes; i++) {
    const struct lane *l = s->lanes[i];
    if (l->has_cursor)
      rc = pl_store_emit_jw(e, PL_REC_CURSOR, &s->jw,
                            pl_rec_cursor(&s->jw, l->csu, l->type, l->cursor_ms));
    for (size_t k = 0; rc == 0 && k < l->seen.n; k++) {
      const struct pl__seen_rec *f = pl__seen_heap_at(&s->seen, &l->seen, k);
      rc = pl_store_emit_jw(e, PL_REC_SEEN, &s->jw,
                            pl_rec_seen_hash(&s->jw, f->h1, f->h2, l->csu, l->type, f->time_ms));
    }
  }
  for (const struct pl_state_event *ev = s->live_head; rc == 0 && ev; ev = ev->_next)
    rc = dump_live(s, e, ev);
  for (const struct pl_state_delivery *d = s->dlq_head; rc == 0 && d; d = d->_dlq_next) {
    struct pl_rec_delivery r = rec_of(d);
    rc = pl_store_emit_jw(e, PL_REC_OUTCOME, &s->jw, pl_rec_outcome(&s->jw, &r));
  }
  return rc == 0 ? cs_jobs_dump(s->jobs, e) : rc;
}
