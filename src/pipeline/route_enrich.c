/* Enrichment as a scheduled delivery (pipeline.h, "Route stage"): each CSU has a pl_sched over a
 * small sink of the stage's own, whose deliver() fetches what the event's route asks for. The
 * scheduler then gives fetch failures exactly the treatment deliveries get (backoff, Retry-After,
 * max_attempts, a CSU-wide pause on 429), and pl_enrich bounds the HTTP concurrency per CSU.
 *
 * An attempt's outcome is the worst of its fetches: DEAD over RETRY over DELIVERED. A document
 * fetched in an earlier attempt is kept, so a retry only asks again for what is missing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/log.h"
#include "route_internal.h"

struct esink {
  struct sk_sink base;
  /* max_in_flight: the events enriching at once, as many as pl_enrich lets GETs run per CSU now
   * (follow_window). An event asks for at most two documents, so the scheduler's order (oldest
   * event first) is about the order its GETs go out. Unbounded, every admitted event queued its
   * GETs at once, in the order the pages came, and each second's oldest events waited behind the
   * newer ones of the lanes answered first. At 5,000 ev/s (with new rows polled first) the webhook
   * delivered the events of a second's first 50 ms at p50 ~85 instead of ~100 ms after the second
   * ended. */
  struct csr_sink_conf conf;
  struct pl_route *r;
  struct rcsu *rc;
  char name[96];
};

/* How bad an outcome is, to keep the worst of an attempt's fetches. */
static int severity(enum sk_outcome o) {
  return o == SK_DEAD ? 2 : o == SK_RETRY ? 1 : 0;
}

static void set_result(struct sk_delivery *d, enum sk_outcome o, int status, int64_t retry_after,
                       const char *what, const char *reason, const char *excerpt) {
  if (severity(o) <= severity(d->outcome))
    return;
  d->outcome = o;
  d->status = status;
  d->retry_after_ms = retry_after;
  /* Truncation is fine: the reason is a label ("order: http_503"), the excerpt has the detail. */
  int n = snprintf(d->reason, sizeof(d->reason), "%s: ", what);
  snprintf(d->reason + n, sizeof(d->reason) - (size_t)n, "%.50s", reason);
  snprintf(d->excerpt, sizeof(d->excerpt), "%s", excerpt ? excerpt : "");
}

/* An OK fetch's document goes into the event's view as text: a sink that looks inside it (cij)
 * builds its tree for the time of a delivery (sk_event_trees), so waiting events hold no trees. */
static void keep_document(struct rev *v, struct pl_fetch *f, bool is_order) {
  if (is_order) {
    v->ske.order_json = f->doc_json;
    v->ske.order_json_len = f->doc_json_len;
  } else {
    v->ske.customer_json = f->doc_json;
    v->ske.customer_json_len = f->doc_json_len;
  }
  *(is_order ? &v->order_done : &v->customer_done) = true;
}

/* One fetch answered: keep the document, count a 404, or note the failure for this attempt. */
static void on_fetch(struct rx_fut *fut) {
  struct pl_fetch *f = RX_CONTAINER_OF(fut, struct pl_fetch, fut);
  struct rev *v = f->data;
  struct sk_delivery *d = v->enrich->d; /* lent for the attempt these fetches belong to */
  bool is_order = f == &v->order;
  const char *what = is_order ? "order" : "customer";
  if (fut->result < 0) {
    set_result(d, SK_RETRY, 0, -1, what, "cancelled", NULL);
  } else if (f->outcome == PL_FETCH_OK) {
    keep_document(v, f, is_order);
  } else if (f->outcome == PL_FETCH_NOT_FOUND) {
    unsigned *n = is_order ? &v->order_404 : &v->customer_404;
    if (++*n >= v->r->enrich_tries) {
      /* Gone for good (or never there): the event goes on with null for it. */
      *(is_order ? &v->order_done : &v->customer_done) = true;
      v->r->st.enrich_missing++;
      CSR_LOG(CSR_WARN, "route: enrichment document not found; delivering without it",
              CSR_KS("event_id", v->id), CSR_KS("document", what));
    } else {
      set_result(d, SK_RETRY, f->status, -1, what, "not_found", f->excerpt);
    }
  } else {
    set_result(d, f->outcome == PL_FETCH_DEAD ? SK_DEAD : SK_RETRY, f->status, f->retry_after_ms,
               what, f->reason, f->excerpt);
  }
  if (--v->fetching == 0)
    d->done(d);
}

static const char *or_empty(const char *s) {
  return s ? s : "";
}

/* Starts the fetches this attempt needs; an id that cannot be fetched counts as done without it. */
static int start_fetches(struct esink *es, struct rev *v) {
  const struct csr_route *route = v->route;
  int rc = 0;
  if ((route->enrich & CSR_ENRICH_ORDER) && !v->order_done) {
    const char *cart = or_empty(v->cart_id);
    if (*cart == '\0')
      v->order_done = true;
    else if ((rc = pl_enrich_order(es->r->enrich, es->rc->csu, cart, &v->order, on_fetch)) == 0)
      v->fetching++;
  }
  if (rc == 0 && (route->enrich & CSR_ENRICH_CUSTOMER) && !v->customer_done) {
    const char *customer = or_empty(v->customer_id);
    if (*customer == '\0')
      v->customer_done = true; /* a guest: no customer to ask for */
    else if ((rc = pl_enrich_customer(es->r->enrich, es->rc->csu, customer, &v->customer,
                                      on_fetch)) == 0)
      v->fetching++;
  }
  return rc;
}

static int esink_deliver(struct sk_sink *sink, struct sk_delivery *d) {
  struct esink *es = (struct esink *)sink;
  struct rev *v = d->data;
  d->outcome = SK_DELIVERED;
  v->fetching = 1; /* held until every fetch started, so none can finish the attempt early */
  int rc = start_fetches(es, v);
  if (rc < 0 && v->fetching > 1)
    set_result(d, SK_RETRY, 0, -1, "fetch", "start", csr_strerror(rc));
  if (--v->fetching > 0)
    return 0;
  /* Nothing went out: a refusal is a failed start; nothing left to fetch would be a bug upstream,
   * since the stage submits only events that need a fetch. */
  return rc < 0 ? rc : UV_EINVAL;
}

static void esink_cancel(struct sk_sink *sink, struct sk_delivery *d) {
  (void)sink;
  struct rev *v = d->data;
  pl_fetch_cancel(&v->order);
  pl_fetch_cancel(&v->customer);
}

static void esink_close(struct sk_sink *sink, void (*cb)(struct sk_sink *sink)) {
  cb(sink); /* never closed through the registry: the stage frees its own */
}

static const struct sk_ops esink_ops = {
    .name = "enrich",
    .description = "the route stage's enrichment fetches",
    .size = sizeof(struct esink),
    .deliver = esink_deliver,
    .cancel = esink_cancel,
    .close = esink_close,
};

/* The events enriching at once follow the CSU's GET window (pl_enrich adapts it): each asks for
 * at most two documents, so that keeps about as many of them started as can be fetched. */
static void follow_window(struct esink *es) {
  const struct pl_enrich_csu_stats *st = pl_enrich_csu_stats(es->r->enrich, es->rc->csu);
  if (st != NULL)
    es->conf.max_in_flight = st->window;
}

static void on_enrich_final(void *arg, struct pl_sched_item *it) {
  (void)arg;
  struct rev *v = it->data;
  follow_window(RX_CONTAINER_OF(v->enricher->sink, struct esink, base));
  pl__route_enriched(v, it);
}

static void on_enrich_cancelled(void *arg, struct pl_sched_item *it) {
  (void)arg;
  struct rev *v = it->data;
  pl__route_end_enrichment(v);
  pl__route_release(v);
}

int pl__route_enrich_create(struct pl_route *r, uint64_t seed) {
  static const struct pl_sched_ops ops = {.on_final = on_enrich_final,
                                          .on_cancelled = on_enrich_cancelled};
  struct pl_sched_opts so = {.base_ms = r->cfg->retry.base_ms,
                             .cap_ms = r->cfg->retry.cap_ms,
                             .max_attempts = r->cfg->retry.max_attempts};
  for (size_t i = 0; i < r->n_csus; i++) {
    struct rcsu *rc = &r->csus[i];
    rc->csu = &r->cfg->csus[i];
    struct esink *es = calloc(1, sizeof(*es));
    if (es == NULL)
      return UV_ENOMEM;
    snprintf(es->name, sizeof(es->name), "enrich:%s", rc->csu->name);
    es->conf.name = es->name;
    es->base.ops = &esink_ops;
    es->base.conf = &es->conf;
    es->r = r;
    es->rc = rc;
    follow_window(es);
    rc->sink = &es->base;
    so.seed = seed ? seed + 1000 + i : 0;
    int err = pl_sched_create(r->loop, rc->sink, &so, &ops, r, &rc->sched);
    if (err < 0)
      return err;
  }
  return 0;
}
