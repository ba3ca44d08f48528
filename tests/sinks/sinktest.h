/* The sink tests' shared fixture (test_webhook, test_cij, test_retry): an in-process csusim
 * (simtest.h), an rx_http client of the test's own, an sk_env on it, a sink made through the
 * registry, and a teardown that closes the sink, the client and the sim, running the loop until
 * every close callback fired. Plus deliveries counted per callback, the sim's fault plan, and the
 * pieces of a capture server of the test's own. A test embeds `struct skt` in its fixture. */
#ifndef SINKS_SINKTEST_H
#define SINKS_SINKTEST_H

#include "csurelay/sink.h"
#include "simtest.h"

#define SKT_GUARD_MS 15000

struct skt {
  struct st t;
  struct rx_http http;
  struct sk_env env;
  struct csr_sink_conf conf;
  struct sk_sink *sink;
  char url[256];        /* where the sink sends (conf.url or conf.dataverse_url) */
  char events_path[64]; /* the scripted events file, "" for none; removed by skt_stop */
  uint64_t guard_ms;    /* the bound of every wait in the teardown */
  int http_closed, sink_closed;
  int seq;       /* done() callbacks so far, across deliveries */
  int close_seq; /* the value of `seq` when the sink's close callback fired */
};

/** A delivery whose done() is counted: how often, in which order, and the sink's in_flight then. */
struct skt_deliv {
  struct sk_delivery d;
  struct skt *k;
  int done;
  int seq;
  unsigned in_flight;
};

/** Writes `len` bytes of scripted events to a fresh /tmp/<prefix>_XXXXXX (k->events_path). */
void skt_write_events(struct skt *k, const char *prefix, const char *text, size_t len);

/**
 * Starts the sim with `o` (o->events_path is k->events_path when one was written), the test's
 * client (at most `max_per_host` connections a host) and k->env on it (`timeout_ms` by default, no
 * token caches). k must be zeroed before (or hold only events_path).
 */
void skt_start(struct skt *k, const struct sim_opts *o, unsigned max_per_host, uint64_t timeout_ms);

/** k->conf for the webhook sink "audit" posting to the sim at `path` (NULL: /hooks/audit). */
void skt_webhook_conf(struct skt *k, const char *path, unsigned max_in_flight);

/** Creates k->sink from k->conf through the registry; it must be of `type`. */
void skt_create_sink(struct skt *k, const char *type);

/** Runs the loop until *flag >= want or `ms` passed; returns whether the flag got there. */
int skt_run_until(struct skt *k, const int *flag, int want, uint64_t ms);

/** Replaces the sim's fault plan. */
void skt_set_faults(struct skt *k, const char *yaml);

/**
 * The sim's ledger of generated events once it holds at least `n` (GET /ledger/events; fails when
 * they never come). The caller frees `r`.
 */
void skt_ledger_events(struct skt *k, size_t n, struct st_resp *r);

/** A Checkout event object as the CSU sends it (terminal HOUSTON-17, channel 5637144592). */
yajl_val skt_checkout_event(const char *txn, const char *time_text, const char *customer);

/** Closes the sink unless there is none or it closed already (nothing in flight, never from
 * inside the call) and waits for its callback. */
void skt_close_sink(struct skt *k);
/** skt_close_sink, then the client and the sim (a clean loop close); removes the events file. */
void skt_stop(struct skt *k);

/** The sink's close callback for sk_sink_close(k->sink, skt_on_sink_closed, k). */
void skt_on_sink_closed(void *arg);

/* Deliveries */

/** The counting done() callback; checks that the caller's callback is back in d->done. */
void skt_on_done(struct sk_delivery *d);
/** Starts `v` for `ev` (with `conf`, may be NULL) at attempt 1; done() never fires from inside. */
void skt_start_delivery(struct skt *k, struct skt_deliv *v, const struct sk_event *ev,
                        const struct csr_delivery_conf *conf);
/** skt_start_delivery, then runs the loop until its done() fired. */
void skt_run_delivery(struct skt *k, struct skt_deliv *v, const struct sk_event *ev,
                      const struct csr_delivery_conf *conf);
/**
 * Cancels `v`, the sink's one delivery in flight, twice: its done() fires once, from the loop, as
 * a "cancelled" retry (the sink's first), and no more within `settle_ms`.
 */
void skt_cancel_in_flight(struct skt *k, struct skt_deliv *v, uint64_t settle_ms);
/** Fails, with everything the delivery says, unless its outcome is exactly this. */
void skt_assert_outcome(const struct skt_deliv *v, enum sk_outcome outcome, int status,
                        const char *reason, int64_t retry_after_ms);

/* A capture server of the test's own */

/** A request header into `out`, "(none)" when absent. */
void skt_copy_header(const struct rx_http_request *req, const char *name, char *out, size_t len);
/** Serves `method` `path` (NULL method: any) with `handler` on an ephemeral loopback port. */
void skt_serve(struct skt *k, struct rx_http_server *srv, const char *method, const char *path,
               rx_http_handler handler, void *arg);
/** Closes `srv` (through srv->data); its callback counts in *closed, set to 0 here. */
void skt_close_server(struct rx_http_server *srv, int *closed);

#endif
