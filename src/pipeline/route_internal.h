/* The route stage's files (route.c: events, records, dead letters; route_enrich.c: enrichment as
 * a scheduled delivery; route_stop.c: drain and close) share these declarations. */
#ifndef CSURELAY_PIPELINE_ROUTE_INTERNAL_H
#define CSURELAY_PIPELINE_ROUTE_INTERNAL_H

#include <stdbool.h>

#include "csurelay/pipeline.h"

struct rev;

/** A configured sink and its scheduler. */
struct rsink {
  const struct csr_sink_conf *conf;
  struct sk_sink *sink;
  struct pl_sched *sched;
  struct csr_series *latency; /* EventDateTime → acknowledgement, NULL without metrics */
};

/** A CSU's enrichment: a scheduler over a sink of the stage's own (route_enrich.c). */
struct rcsu {
  const struct csr_csu *csu;
  struct pl_sched *sched;
  struct sk_sink *sink; /* a struct esink */
};

/** One delivery of an event in the stage. */
struct ritem {
  struct pl_sched_item it; /* it.data = this, it.delivery_data = the rev */
  struct rev *v;
  const char *sink_name;                /* interned by the state */
  struct rsink *rs;                     /* NULL: the sink is no longer configured */
  const struct csr_delivery_conf *conf; /* NULL: the route no longer delivers there */
  bool submitted;
};

/* An event the stage works on. It keeps its own copy of the id and looks the state's entry up
 * again after every record it applies (live()), because a record that finishes the event frees
 * the entry. */
struct rev {
  struct pl_route *r;
  char *id;               /* owned */
  const char *csu, *type; /* the state's lane strings (they live as long as the state) */
  int64_t time_ms;
  struct rev *prev, *next;
  /* The row's members the stage reads (ROW_KEYS in route.c), NULL when absent or not strings;
   * the texts ride after row_json. */
  const char *cart_id, *customer_id, *time_text;
  char *row_json;                /* a copy of that text (after items[]): bodies splice it */
  struct sk_event ske;           /* what sinks read: the row plus the fetched documents */
  const struct csr_route *route; /* NULL: no route for the type any more */
  struct rcsu *enricher;         /* the CSU's enrichment; NULL: the CSU is no longer configured */
  struct pl_sched_item *enrich;  /* while submitted for enrichment (rev_kick), else NULL */
  struct pl_fetch order, customer;
  unsigned fetching; /* fetches of the current enrichment attempt still out */
  unsigned order_404, customer_404;
  bool order_done, customer_done; /* fetched, or given up on after 404s, or not needed */
  bool enriched;
  unsigned outstanding; /* items submitted to a scheduler (plus holds while kicking) */
  size_t n;
  struct ritem items[];
};

struct pl_route {
  struct rx_loop *loop;
  const struct csr_config *cfg;
  struct pl_admit *admit;
  struct pl_state *state;
  struct pl_enrich *enrich;
  struct pl_poll *poll;
  struct csr_metrics *metrics;
  /* EventDateTime → durable admission and → enrichment done; NULL without metrics. With the
   * sinks' latency they tell which stage a late event waited in. */
  struct csr_series *durable_latency, *enriched_latency;
  unsigned enrich_tries;
  struct rsink *sinks;
  size_t n_sinks;
  struct rcsu *csus;
  size_t n_csus;
  struct rev *revs;
  struct csr_jw jw;
  bool jw_ok;
  char *scratch; /* rev_new reads a row's members into it, then copies out what they need */
  size_t scratch_cap;
  int failed; /* an append or apply failed: nothing new starts */
  struct pl_route_stats st;
  /* drain and close (route_stop.c) */
  struct rx_timer drain_timer;
  bool timer_open;
  uint64_t drain_deadline; /* loop time; 0 when not draining */
  void (*drain_cb)(void *arg);
  void *drain_arg;
  bool closing;
  unsigned closing_parts; /* schedulers and the timer not yet closed */
  void (*close_cb)(void *arg);
  void *close_arg;
};

/* route.c */
/** The event's live entry in the state, or NULL once it finished. */
const struct pl_state_event *pl__route_live(const struct rev *v);
/** Frees the event once nothing of it is submitted (see route.c). */
void pl__route_release(struct rev *v);

/** Frees the enrichment's scheduler item, which came back final or cancelled. */
void pl__route_end_enrichment(struct rev *v);

/* route_enrich.c */
/** One enrichment scheduler per configured CSU. */
CSR_NODISCARD int pl__route_enrich_create(struct pl_route *r, uint64_t seed);
/** The enrichment item came back final (delivered = enriched, dead = give up). */
void pl__route_enriched(struct rev *v, const struct pl_sched_item *it);

/* route_stop.c */
/** Calls the drain callback if the stage is idle or the deadline passed. */
void pl__route_check_drain(struct pl_route *r);
/** Frees a stage whose create failed part-way (nothing was submitted yet). */
void pl__route_free_partial(struct pl_route *r);

#endif
