/* The relay: one configuration's whole pipeline, assembled (SPEC §3). A newcomer follows an event
 * from here: poll (pipeline/poll.c) → admit (admit.c) → route (route.c: enrich, then one
 * scheduler per sink, retry.c) → sinks (sinks/<name>.c). `csurelay run` owns one relay at a time;
 * a reload stops it (drain, flush) and opens the next on the same state directory, so in-flight
 * events carry over through the AOF. */
#ifndef CSURELAY_RELAY_H
#define CSURELAY_RELAY_H

#include "csurelay/config.h"
#include "csurelay/metrics.h"
#include "csurelay/pipeline.h"
#include "csurelay/reactor.h"

struct csr_relay;

/**
 * Builds the pipeline for `cfg` (which must outlive the relay): the HTTP client, a token cache per
 * identity, the store (replayed here, synchronously), the sinks, the route, enrich and poll
 * stages; then resumes the replayed live events and starts polling. Damage found in the AOF is
 * logged and shows in /readyz. `metrics` (may be NULL) receives every series; the relay's counters
 * continue from their last values across relays. Returns 0 or an error with `err` filled.
 */
CSR_NODISCARD int csr_relay_open(struct rx_loop *loop, const struct csr_config *cfg,
                                 struct csr_metrics *metrics, struct csr_relay **out,
                                 struct csr_err *err);

/**
 * Stops: polling first, then up to `drain_ms` for the deliveries queued or in flight, then closes
 * every stage, flushes and fsyncs the AOF, and fires `cb` once the relay is freed. Deliveries
 * waiting for a retry, and anything cut off at the deadline, stay in the AOF for the next open.
 * A second call is ignored.
 */
void csr_relay_stop(struct csr_relay *r, uint64_t drain_ms, void (*cb)(void *arg), void *arg);

/** A /readyz check (arg = the relay): the AOF's health, admission, sinks down past 30 s. */
int csr_relay_ready(void *arg, char *why, size_t len);

/** Refreshes the relay's series in its metrics (before each render). */
void csr_relay_collect(struct csr_relay *r);

/** The parts the admin API reads. */
struct pl_state *csr_relay_state(struct csr_relay *r);
struct pl_route *csr_relay_route(struct csr_relay *r);
const struct csr_config *csr_relay_config(const struct csr_relay *r);

/** GET /v1/status: the pipeline's numbers as one JSON object. */
CSR_NODISCARD int csr_relay_status_json(struct csr_relay *r, struct csr_jw *jw);

#endif
