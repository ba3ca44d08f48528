/* Metrics: counters, gauges and histograms, rendered as Prometheus text for /metrics.
 *
 * A family (one metric name) holds series (one per label set). Look a series up once when the thing
 * it counts is created, keep the pointer, and update it with plain arithmetic on the hot path.
 * Values computed elsewhere (open connections, queue depths) are refreshed by collectors, which run
 * just before each render.
 */
#ifndef CSURELAY_METRICS_H
#define CSURELAY_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "csurelay/error.h"

enum csr_metric_type { CSR_COUNTER, CSR_GAUGE, CSR_HISTOGRAM };

struct csr_series {
  /* public: update directly */
  double value;       /* counter or gauge */
  uint64_t *buckets;  /* histogram: cumulative-on-render counts per bound (+Inf last) */
  double sum;
  uint64_t count;
  /* private */
  struct csr_series *_next;
  struct csr_family *_family;
  char *_labels;
};

struct csr_family {
  /* private */
  struct csr_family *_next;
  char *_name;
  char *_help;
  enum csr_metric_type _type;
  double *_bounds;
  size_t _nbounds;
  struct csr_series *_series;
  struct csr_series *_series_tail;
};

struct csr_collector {
  void (*fn)(void *arg);
  void *arg;
  struct csr_collector *_next;
};

struct csr_metrics {
  /* private */
  struct csr_family *_head;
  struct csr_family *_tail;
  struct csr_collector *_collectors;
};

void csr_metrics_init(struct csr_metrics *m);
void csr_metrics_destroy(struct csr_metrics *m);

/**
 * Finds or creates the family `name`. For histograms, `bounds` are the ascending upper bounds
 * (copied); otherwise pass NULL, 0. NULL on allocation failure or a type clash with an existing name.
 */
struct csr_family *csr_metrics_family(struct csr_metrics *m, const char *name, const char *help,
                                      enum csr_metric_type type, const double *bounds,
                                      size_t nbounds);

/**
 * Finds or creates the series with the given labels: NULL-terminated key, value pairs
 * (`"csu", "houston", "sink", "journeys", NULL`). Values are escaped. NULL on allocation failure.
 */
struct csr_series *csr_metrics_series(struct csr_family *fam, ...);

/** Histogram observation. */
void csr_series_observe(struct csr_series *s, double value);

/** Registers `fn(arg)` to run before every render. -ENOMEM on failure. */
CSR_NODISCARD int csr_metrics_collector(struct csr_metrics *m, void (*fn)(void *arg), void *arg);

/** Renders every family as Prometheus text format 0.0.4 into a malloc'd buffer (caller frees). */
CSR_NODISCARD int csr_metrics_render(struct csr_metrics *m, char **out, size_t *len);

#endif
