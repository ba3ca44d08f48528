/* JSON views of the pipeline's durable state (pipeline.h "State model") for the admin API
 * (/v1/events/{id}, /v1/dlq, /v1/status) and `csurelay state`.
 *
 * Each function writes one JSON value at the writer's current position, so it can stand alone
 * (the caller has initialised or reset `jw` and reads the text with csr_jw_finish) or be the value
 * of a key in a larger document. Instants are ISO-8601 UTC with milliseconds,
 * "2026-11-22T10:00:05.000Z"; a time that cannot be written (outside years 1 to 9999) is null.
 * Absent HTTP status (0), reason and excerpt ("") are null.
 *
 * The views carry event rows, reasons and excerpts, which may hold customer data (emails): they
 * are the operator's data, for the authenticated admin API and the offline CLI, never for the log.
 * They never carry secrets (the state holds none).
 *
 * Errors: UV_EINVAL for a NULL argument (nothing written); CSR_EPARSE when a stored row no longer
 * parses (the document is left unfinished, so csr_jw_finish fails too); the writer's own errors
 * surface from csr_jw_finish.
 */
#ifndef CSURELAY_STATE_JSON_H
#define CSURELAY_STATE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "csurelay/json.h"
#include "csurelay/pipeline.h"

/**
 * Writes `ms` the way the views do, "2026-11-22T10:00:05.000Z" (always three fraction digits, so
 * the text has one width and sorts as the time does), into buf, which holds CSR_TIME_BUF bytes.
 * Returns the length, or 0 (and "") for an instant outside years 1 to 9999.
 */
size_t csr_state_json_time(int64_t ms, char *buf, size_t len);

/**
 * One entry of the dedupe set:
 *   {"id", "csu", "type", "event_time", "admitted_at", "finished": bool,
 *    "event": {the row as stored, numbers keeping their text}   only when with_row and live,
 *    "deliveries": [{"sink", "state", ...}]                      only when live}
 * state is "pending" | "waiting" | "delivered" | "skipped" | "dead" | "deleted". pending and
 * waiting have "attempt" (the next attempt's number), waiting also "next_attempt_at"; the final
 * states have "attempts" (made) and "decided_at". Every delivery has "status", "reason" and
 * "excerpt" (the last answer's). A finished event has neither row nor deliveries: the state
 * keeps only its id, csu, type and times for dedupe (admitted_at is null when the entry was
 * rebuilt from a compacted file, which keeps only the event time).
 */
int csr_state_json_event(struct csr_jw *jw, const struct pl_state_event *ev, bool with_row);

/**
 * One page of the dead-letter queue, oldest first:
 *   {"total": N, "offset": o, "items": [{"id", "sink", "csu", "type", "event_time", "attempts",
 *    "status", "reason", "excerpt", "dead_at"}]}
 * items are the queue's entries offset .. offset + limit - 1 (fewer at the end; none past it).
 * Walking to the offset costs O(offset).
 */
int csr_state_json_dlq(struct csr_jw *jw, const struct pl_state *s, size_t offset, size_t limit);

/**
 * The counts and the cursors:
 *   {"live", "finished", "parked", "dead_letters", "pending", "waiting", "row_bytes",
 *    "live_bytes", "cursors": [{"csu", "type", "cursor", "lag_s"}],
 *    "jobs": {"pending", "ended", "accounts"}}
 * (the counts as pl_state_stats has them; jobs: the customer sync jobs, as cs_jobs_stats has
 * them). lag_s is now_ms - cursor in whole seconds, 0 for a cursor ahead of now_ms; cursors come
 * in the state's order (first recorded first).
 */
int csr_state_json_summary(struct csr_jw *jw, const struct pl_state *s, int64_t now_ms);

#endif
