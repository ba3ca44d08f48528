/* The route stage's drain and close (pipeline.h, "Route stage", Stop). A drain lets everything
 * queued or in flight finish while nothing new arrives (the poll stage is stopped first); the
 * deliveries waiting for a retry stay in the store for the next start. Close cancels what is
 * left: every scheduler hands its items back, and the stage is freed once all of them have. */
#include <stdlib.h>

#include "route_internal.h"

enum { DRAIN_TICK_MS = 20 };

static bool sched_idle(struct pl_sched *s) {
  struct pl_sched_stats st;
  if (s == NULL)
    return true;
  pl_sched_stats(s, &st);
  return st.queued == 0 && st.in_flight == 0;
}

static bool idle(const struct pl_route *r) {
  for (size_t i = 0; i < r->n_sinks; i++)
    if (!sched_idle(r->sinks[i].sched))
      return false;
  for (size_t i = 0; i < r->n_csus; i++)
    if (!sched_idle(r->csus[i].sched))
      return false;
  return true;
}

void pl__route_check_drain(struct pl_route *r) {
  if (r->drain_cb == NULL || r->closing)
    return;
  if (!idle(r) && rx_now_ms(r->loop) < r->drain_deadline)
    return;
  void (*cb)(void *arg) = r->drain_cb;
  r->drain_cb = NULL;
  rx_timer_stop(&r->drain_timer);
  cb(r->drain_arg);
}

static uint64_t on_drain_tick(struct rx_timer *t) {
  struct pl_route *r = t->data;
  pl__route_check_drain(r);
  return r->drain_cb ? DRAIN_TICK_MS : RX_TIMER_STOP;
}

void pl_route_drain(struct pl_route *r, uint64_t deadline_ms, void (*cb)(void *arg), void *arg) {
  if (r == NULL || r->closing)
    return;
  r->drain_cb = cb;
  r->drain_arg = arg;
  r->drain_deadline = rx_now_ms(r->loop) + deadline_ms;
  if (cb != NULL && rx_timer_start(&r->drain_timer, on_drain_tick, 0) < 0)
    r->drain_deadline = 0; /* cannot tick: the next event that changes anything checks it */
}

static void free_stage(struct pl_route *r) {
  void (*cb)(void *arg) = r->close_cb;
  void *arg = r->close_arg;
  /* Every item came back, so every event was released; anything left is a held kick. */
  while (r->revs != NULL) {
    struct rev *v = r->revs;
    v->outstanding = 0;
    pl__route_release(v);
  }
  for (size_t i = 0; r->csus && i < r->n_csus; i++)
    free(r->csus[i].sink);
  free(r->csus);
  free(r->sinks);
  if (r->jw_ok)
    csr_jw_free(&r->jw);
  free(r->scratch);
  free(r);
  if (cb != NULL)
    cb(arg);
}

static void part_closed(struct pl_route *r) {
  if (--r->closing_parts == 0)
    free_stage(r);
}

static void on_sched_closed(void *arg) {
  part_closed(arg);
}

static void on_timer_closed(struct rx_timer *t) {
  part_closed(t->data);
}

void pl_route_close(struct pl_route *r, void (*cb)(void *arg), void *arg) {
  if (r == NULL || r->closing)
    return;
  r->closing = true;
  r->drain_cb = NULL;
  r->close_cb = cb;
  r->close_arg = arg;
  r->closing_parts = 1; /* held until every close below has been started */
  for (size_t i = 0; r->sinks && i < r->n_sinks; i++)
    if (r->sinks[i].sched != NULL) {
      r->closing_parts++;
      pl_sched_close(r->sinks[i].sched, on_sched_closed, r);
    }
  for (size_t i = 0; r->csus && i < r->n_csus; i++)
    if (r->csus[i].sched != NULL) {
      r->closing_parts++;
      pl_sched_close(r->csus[i].sched, on_sched_closed, r);
    }
  if (r->timer_open) {
    r->closing_parts++;
    rx_timer_close(&r->drain_timer, on_timer_closed);
  }
  part_closed(r);
}

void pl__route_free_partial(struct pl_route *r) {
  pl_route_close(r, NULL, NULL);
}
