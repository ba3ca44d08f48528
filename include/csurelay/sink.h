/* csurelay sinks — one interface, one file per sink (src/sinks/<name>.c), one registry.
 *
 * A sink turns one enriched event into one delivery and classifies the result; it never schedules
 * retries (pipeline/retry.c does, as Fluent Bit's engine owns retry timing). The pipeline enforces
 * each sink's max_in_flight and rate before calling deliver(), so a sink only sees what it may send.
 *
 * Configuration keys are validated by src/config.c's per-type tables (struct csr_sink_conf), so a
 * sink reads its settings from `sink->conf`; `csurelay check` reports every key error before a sink
 * is ever created.
 */
#ifndef CSURELAY_SINK_H
#define CSURELAY_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "csurelay/config.h"
#include "csurelay/error.h"
#include "csurelay/json.h"
#include "csurelay/reactor.h"

struct pl_tokens;
struct sk_sink;
struct sk_delivery;

/** What a delivery came to. Not an error code: a sink outcome. */
enum sk_outcome {
  SK_DELIVERED, /* the receiver has it */
  SK_SKIPPED,   /* deliberately not sent (reason says why, e.g. "no_email") */
  SK_RETRY,     /* transient: 408, 429, 5xx, transport errors; retry_after_ms may say when */
  SK_DEAD,      /* permanent: other 4xx, or a body that can never be built */
};

/** The enriched event, read-only for sinks; owned by the pipeline for the delivery's lifetime. */
struct sk_event {
  const char *id;        /* SPEC §3 event id */
  const char *csu;       /* the CSU's configured name */
  const char *type;      /* EventType */
  int64_t time_ms;       /* EventDateTime as an instant */
  const char *time_text; /* EventDateTime exactly as the CSU sent it */
  yajl_val event;        /* EventDetails as a tree, or NULL: the pipeline gives event_json */
  yajl_val order;        /* OrderDetails, or NULL when not enriched / not found */
  yajl_val customer;     /* CustomerDetails, or NULL (guests, or not enriched) */
  /* The same three documents as JSON text when the pipeline has it (else NULL): bodies that carry
   * a document whole splice its text instead of re-encoding its tree (sk_encode_message). */
  const char *event_json, *order_json, *customer_json;
  size_t event_json_len, order_json_len, customer_json_len;
};

typedef void (*sk_done_cb)(struct sk_delivery *d);

/** One delivery of one event to one sink. The pipeline owns it; the sink fills the outcome. */
struct sk_delivery {
  /* public: set by the pipeline before deliver() */
  void *data;
  const struct sk_event *event;
  const struct csr_delivery_conf *conf; /* the route's deliver entry: trigger, fields */
  unsigned attempt;                     /* 1 for the first try */
  sk_done_cb done;                      /* fires exactly once after deliver() returned 0 */
  /* read-only: set by the sink before done() */
  enum sk_outcome outcome;
  int status;             /* HTTP status of the deciding answer, 0 when none */
  int64_t retry_after_ms; /* from Retry-After, -1 when absent */
  char reason[64];        /* short and machine-readable: "no_email", "http_429", "timeout" */
  char excerpt[256];      /* the start of the error body or message, for the dead-letter queue */
  /* private: the sink's own per-delivery state */
  void *_sink_state;
  /* private: sk_deliver's; while a delivery is in flight, `done` is sk_deliver's own callback */
  sk_done_cb _done;
  struct sk_sink *_sink;
};

/** What every sink is given: the loop, the shared HTTP client, token caches by identity name. */
struct sk_env {
  struct rx_loop *loop;
  struct rx_http *http;
  uint64_t default_timeout_ms; /* limits.http_timeout_ms */
  struct pl_tokens *(*tokens)(void *arg, const char *identity); /* NULL when unknown */
  void *tokens_arg;
};

/** One sink-specific number for /metrics (csurelay_sink_<name>{sink="..."}), see sk_ops.metrics. */
struct sk_metric {
  const char *name; /* without the prefix: "connected", "reconnects_total", ... */
  const char *help;
  int counter;      /* 1: a counter (name ends in _total), 0: a gauge */
  double value;
};

/** The operations of one sink type (h2o's handler, Fluent Bit's output plugin). */
struct sk_ops {
  const char *name;        /* the config `type`: "cij", "mqtt", "webhook" */
  const char *description; /* one line, for `csurelay check` help */
  size_t size;             /* sizeof the sink's struct, which embeds struct sk_sink first */
  /** Prepares the sink from sink->conf and sink->env; < 0 with `err` filled on failure. */
  int (*init)(struct sk_sink *sink, struct csr_err *err);
  /** Starts a delivery: 0 and d->done fires once later, or < 0 and done never fires. */
  int (*deliver)(struct sk_sink *sink, struct sk_delivery *d);
  /** Stops a started delivery; its done() fires with SK_RETRY, reason "cancelled". */
  void (*cancel)(struct sk_sink *sink, struct sk_delivery *d);
  /** Writes the body this sink would send for `d` (pure: no I/O); < 0 when it cannot be built. */
  int (*encode)(struct sk_sink *sink, const struct sk_delivery *d, struct csr_jw *jw);
  /** 0 when the sink can deliver; else < 0 with a short reason (for /readyz). May be NULL. */
  int (*ready)(struct sk_sink *sink, char *why, size_t len);
  /** Fills up to `max` sink-specific metrics and returns how many (the same names, in the same
   * order, on every call). Read before each /metrics render. May be NULL. */
  size_t (*metrics)(struct sk_sink *sink, struct sk_metric *out, size_t max);
  /** Releases the sink once every started delivery has completed or been cancelled. */
  void (*close)(struct sk_sink *sink, void (*cb)(struct sk_sink *sink));
};

/** The part every sink embeds first (h2o's `super`). */
struct sk_sink {
  /* public */
  void *data;
  /* read-only */
  const struct sk_ops *ops;
  const struct csr_sink_conf *conf;
  const struct sk_env *env;
  unsigned in_flight; /* deliveries started and not yet done (maintained by sk_deliver) */
  uint64_t delivered, skipped, retried, dead;
  /* private: the registry's (sk_sink_close) */
  int _closing;
  void (*_close_cb)(void *arg);
  void *_close_arg;
};

/* ---------------------------------------------------------------------------------------------- */
/* The registry (src/sinks/registry.c: the only list of sink types)                                */
/* ---------------------------------------------------------------------------------------------- */

/** The ops for a config type name, or NULL. */
const struct sk_ops *sk_find(const char *type);

/**
 * Allocates `ops->size` bytes, fills the base and calls ops->init. `conf` and `env` must outlive
 * the sink. On failure returns < 0 with `err` filled, and nothing is left allocated.
 */
CSR_NODISCARD int sk_sink_create(const struct csr_sink_conf *conf, const struct sk_env *env,
                                 struct sk_sink **out, struct csr_err *err);

/**
 * Delivers through the sink's ops, keeping in_flight and the outcome counters. Same contract as
 * ops->deliver. The caller checks in_flight against conf->max_in_flight first; sk_deliver refuses
 * past it too (CSR_ELIMIT). -EINVAL without an event or a done callback, -ECANCELED once the sink is
 * closing. The outcome fields are reset before ops->deliver runs.
 */
CSR_NODISCARD int sk_deliver(struct sk_sink *sink, struct sk_delivery *d);

/**
 * Closes and frees the sink once every started delivery is done (ops->close cancels or finishes
 * them; their done() fires first), then `cb` (may be NULL), always from the loop. A second close is
 * ignored; sk_deliver refuses from the first.
 */
void sk_sink_close(struct sk_sink *sink, void (*cb)(void *arg), void *arg);

/* ---------------------------------------------------------------------------------------------- */
/* Shared by the sinks (src/sinks/common.c)                                                        */
/* ---------------------------------------------------------------------------------------------- */

/**
 * The one HTTP classifier for cij and webhook (SPEC §3): 2xx delivered; 408, 429, 5xx and transport
 * errors retry (Retry-After kept); any other 4xx is dead. 401 is reported as SK_RETRY with reason
 * "http_401" so the caller can refresh its token once before the retry. Fills outcome, status,
 * retry_after_ms, reason and excerpt (the body's first bytes, control characters replaced).
 */
void sk_classify_http(const struct rx_http_req *req, struct sk_delivery *d);

/**
 * The MQTT and webhook body (SPEC §4, Service Bus message compatible):
 * {"EventId": id, "EventDetails": {event as received}, "OrderDetails": {...}|null,
 *  "CustomerDetails": {...}|null}. Numbers keep their text.
 */
CSR_NODISCARD int sk_encode_message(const struct sk_event *ev, struct csr_jw *jw);

/** The documents of an event, for sk_reads_fn. */
enum sk_doc { SK_DOC_EVENT, SK_DOC_ORDER, SK_DOC_CUSTOMER };
/** Says whether a sink reads the top-level member `key` (`len` bytes) of document `doc` (non-zero:
 * yes). With key NULL: how many distinct members of it the sink reads at most, so the scan of the
 * document stops once it has them all (SIZE_MAX: no bound); 0 when it reads nothing of it (no tree
 * is built for it). */
typedef size_t (*sk_reads_fn)(void *arg, enum sk_doc doc, const char *key, size_t len);

/**
 * `ev` with trees for the documents it carries only as text (the event, order and customer), for
 * a sink that reads them field by field. The pipeline keeps documents as text (a tree costs several times its
 * text, and most events never need one); such a sink builds the trees for the time of one
 * delivery and releases them with sk_event_trees_free(). With `reads`, a tree holds only the
 * top-level members `reads` accepts (a whole order is 10-20 KB, a trigger reads a few fields of
 * it); NULL builds whole trees. 0, or -ENOMEM; `out` is usable either way (a tree that could not
 * be built is NULL) and must be freed.
 */
CSR_NODISCARD int sk_event_trees(const struct sk_event *ev, sk_reads_fn reads, void *arg,
                                 struct sk_event *out);
/** Frees the trees sk_event_trees() built into `out` for `ev`; `out` is zeroed. */
void sk_event_trees_free(struct sk_event *out, const struct sk_event *ev);

#endif
