/* The relay's files (relay.c: assembly and stop; relay_metrics.c: /metrics and /v1/status). */
#ifndef CSURELAY_RELAY_INTERNAL_H
#define CSURELAY_RELAY_INTERNAL_H

#include <stdbool.h>

#include "csurelay/ingress.h"
#include "csurelay/sink.h"
#include "relay.h"

struct ident {
  const struct csr_identity *id;
  struct pl_tokens *tokens;
};

/** What the 1 s tick knows about a sink (relay.c, "Sink health"). */
struct sink_watch {
  uint64_t finals, retried; /* the sink's counters at the last tick */
  uint64_t ok_ms;           /* loop time it last looked healthy */
  bool down;
  char why[128];
};

struct relay_metrics; /* relay_metrics.c */

struct csr_relay {
  struct rx_loop *loop;
  const struct csr_config *cfg;
  struct csr_metrics *metrics;
  struct rx_http http;
  bool http_open;
  struct ident *idents;
  size_t n_idents;
  struct pl_admit *admit;
  struct pl_enrich *enrich;
  struct pl_route *route;
  struct pl_poll *poll;
  struct cs_ingress *ingress; /* NULL without an ingress section */
  struct sk_env env;
  struct sk_sink **sinks;
  size_t n_sinks_open;
  struct sink_watch *watch;
  struct rx_timer tick;
  bool tick_open;
  struct relay_metrics *m;
  uint64_t mem_checked_ms; /* loop time of the last timed heap reading (over_budget) */
  uint64_t mem_used;       /* heap in use at that reading (bytes) */
  uint64_t mem_growth;     /* its growth since the reading before (bytes) */
  uint64_t mem_read_ms;    /* loop time of the last reading, timed or not */
  uint64_t mem_last;       /* heap in use at that reading (bytes) */
  uint64_t mem_thread_base; /* csr_heap_thread_net() at the last timed reading */
  bool mem_over;           /* over limits.memory_mb at the last reading */
  bool mem_logged_over;    /* what the log last said about it */
  /* stop */
  bool stopping;
  unsigned phase;
  unsigned waiting;
  uint64_t drain_ms;
  void (*stop_cb)(void *arg);
  void *stop_arg;
};

/* relay_metrics.c */
/** Registers the relay's series (a counter continues from its value at open). */
CSR_NODISCARD int csr_relay__metrics_open(struct csr_relay *r);
void csr_relay__metrics_free(struct csr_relay *r);

#endif
