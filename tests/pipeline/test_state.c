/* The state model: admissions, attempts and outcomes finishing events, the dedupe horizon, the
 * dead-letter queue, refusals and decoding errors, number text in rows, a dump round trip through
 * a real store (compaction, reopen, replay, field-by-field comparison), the ingress's job records
 * kept in the same store through replay and compaction, and a 100,000-event cycle
 * that leaves nothing held. Finished ids (state_seen.c): their views, expiry at the exact bound,
 * SEEN by id and by hash, the hash against SipHash's reference vectors, bytes per id, and the
 * table's backward-shift deletion under 200,000 random operations against a plain reference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "csurelay/ingress.h"
#include "csurelay/pipeline.h"
#include "pipeline/state_internal.h"

/* The state's hash of "c1|DAT|Checkout|cart-1|2026-11-22T10:00:00" (see test_siphash). */
#define PINNED_HASH "cbc16d0ab06282c8efa8775b5f54049a"

/* ---------------------------------------------------------------------------------------------- */
/* Fixtures: encode a record with pl_rec_*, append it to the store (when one is open), apply it   */
/* ---------------------------------------------------------------------------------------------- */

struct h {
  struct pl_state *s;
  struct pl_store *store; /* NULL: apply only */
  struct csr_jw jw;
};

static void h_init(struct h *h, const struct pl_state_opts *opts) {
  memset(h, 0, sizeof(*h));
  assert_int_equal(pl_state_create(opts, &h->s), 0);
  assert_int_equal(csr_jw_init(&h->jw), 0);
}

static void h_free(struct h *h) {
  pl_state_destroy(h->s);
  csr_jw_free(&h->jw);
}

/* Appends and applies what h->jw holds (enc: the encoder's answer); returns apply's answer. */
static int put(struct h *h, uint8_t type, int enc) {
  const char *text;
  size_t len;
  assert_int_equal(enc, 0);
  assert_int_equal(csr_jw_finish(&h->jw, &text, &len), 0);
  int rc = pl_state_apply(h->s, type, text, len);
  if (rc == 0 && h->store)
    assert_int_equal(pl_store_append(h->store, type, text, len, NULL, NULL), 0);
  csr_jw_reset(&h->jw);
  return rc;
}

static int raw(struct h *h, uint8_t type, const char *text) {
  return pl_state_apply(h->s, type, text, strlen(text));
}

static int cursor(struct h *h, const char *csu, const char *type, int64_t ms) {
  return put(h, PL_REC_CURSOR, pl_rec_cursor(&h->jw, csu, type, ms));
}

static const char *const SINKS[] = {"cij", "mqtt", "webhook"};

static int admit_row(struct h *h, const char *id, const char *csu, int64_t t, size_t n_sinks,
                     const char *row_text) {
  struct pl_rec_admit a = {id,      csu,     "Checkout", t, t + 1000,
                           SINKS,   n_sinks, row_text,   strlen(row_text)};
  return put(h, PL_REC_ADMIT, pl_rec_admit(&h->jw, &a));
}

static int admit(struct h *h, const char *id, const char *csu, int64_t t, size_t n_sinks) {
  char row[256];
  snprintf(row, sizeof(row),
           "{\"EventTransactionId\":\"%s\",\"AmountPaid\":184.2200000000000000,"
           "\"EventChannelId\":5637144592}",
           id);
  return admit_row(h, id, csu, t, n_sinks, row);
}

static int attempt(struct h *h, const char *id, const char *sink, unsigned next, int64_t next_ms) {
  struct pl_rec_delivery d = {.id = id,
                              .sink = sink,
                              .attempt = next,
                              .next_ms = next_ms,
                              .status = 503,
                              .reason = "http_503",
                              .excerpt = "Service Unavailable"};
  return put(h, PL_REC_ATTEMPT, pl_rec_attempt(&h->jw, &d));
}

static int outcome(struct h *h, const char *id, const char *sink, enum sk_outcome o,
                   unsigned attempts) {
  struct pl_rec_delivery d = {.id = id,
                              .sink = sink,
                              .outcome = o,
                              .attempt = attempts,
                              .at_ms = 42000 + attempts,
                              .status = o == SK_DEAD ? 400 : 200,
                              .reason = o == SK_DEAD      ? "http_400"
                                        : o == SK_SKIPPED ? "no_email"
                                                          : NULL,
                              .excerpt = o == SK_DEAD ? "{\"error\":\"bad\"}" : NULL};
  return put(h, PL_REC_OUTCOME, pl_rec_outcome(&h->jw, &d));
}

static int dlq_replay(struct h *h, const char *id, const char *sink) {
  return put(h, PL_REC_DLQ_REPLAY, pl_rec_dlq_replay(&h->jw, id, sink, 77));
}

static int dlq_delete(struct h *h, const char *id, const char *sink) {
  return put(h, PL_REC_DLQ_DELETE, pl_rec_dlq_delete(&h->jw, id, sink));
}

static struct pl_state_stats stats(const struct h *h) {
  struct pl_state_stats st;
  pl_state_stats(h->s, &st);
  return st;
}

static const struct pl_state_delivery *dv(const struct h *h, const char *id, size_t i) {
  const struct pl_state_event *ev = pl_state_event(h->s, id);
  assert_non_null(ev);
  assert_true(i < ev->n_sinks);
  return &ev->sinks[i];
}

/* ---------------------------------------------------------------------------------------------- */
/* Life of an event                                                                               */
/* ---------------------------------------------------------------------------------------------- */

static void test_admit_attempt_outcome(void **state) {
  (void)state;
  struct h h;
  h_init(&h, NULL);
  assert_false(pl_state_seen(h.s, "c1|A|Checkout|T1|t"));
  assert_int_equal(admit(&h, "c1|A|Checkout|T1|t", "c1", 5000, 2), 0);
  assert_true(pl_state_seen(h.s, "c1|A|Checkout|T1|t"));
  const struct pl_state_event *ev = pl_state_event(h.s, "c1|A|Checkout|T1|t");
  assert_non_null(ev);
  assert_false(ev->finished);
  assert_string_equal(ev->csu, "c1");
  assert_string_equal(ev->type, "Checkout");
  assert_int_equal(ev->time_ms, 5000);
  assert_int_equal(ev->admitted_ms, 6000);
  assert_int_equal(ev->n_sinks, 2);
  assert_string_equal(ev->sinks[0].sink, "cij");
  assert_string_equal(ev->sinks[1].sink, "mqtt");
  assert_int_equal(ev->sinks[0].state, PL_DS_PENDING);
  assert_int_equal(ev->sinks[0].attempt, 1);
  assert_ptr_equal(ev->sinks[0].event, ev);
  assert_ptr_equal(pl_state_live_next(h.s, NULL), ev);
  assert_null(pl_state_live_next(h.s, ev));
  struct pl_state_stats st = stats(&h);
  assert_int_equal(st.live, 1);
  assert_int_equal(st.pending, 2);
  assert_int_equal(st.row_bytes, ev->row_len);

  assert_int_equal(attempt(&h, ev->id, "cij", 2, 9000), 0);
  const struct pl_state_delivery *d = dv(&h, ev->id, 0);
  assert_int_equal(d->state, PL_DS_WAITING);
  assert_int_equal(d->attempt, 2);
  assert_int_equal(d->next_ms, 9000);
  assert_int_equal(d->status, 503);
  assert_string_equal(d->reason, "http_503");
  assert_string_equal(d->excerpt, "Service Unavailable");
  assert_int_equal(stats(&h).waiting, 1);
  assert_int_equal(stats(&h).pending, 1);
  assert_int_equal(attempt(&h, ev->id, "cij", 3, 12000), 0); /* waiting again */
  assert_int_equal(dv(&h, ev->id, 0)->attempt, 3);

  assert_int_equal(outcome(&h, ev->id, "cij", SK_DELIVERED, 3), 0);
  d = dv(&h, ev->id, 0);
  assert_int_equal(d->state, PL_DS_DELIVERED);
  assert_int_equal(d->attempt, 3);
  assert_int_equal(d->at_ms, 42003);
  assert_string_equal(d->reason, "");
  assert_int_equal(stats(&h).waiting, 0);
  assert_false(ev->finished);

  assert_int_equal(outcome(&h, ev->id, "mqtt", SK_SKIPPED, 1), 0);
  ev = pl_state_event(h.s, "c1|A|Checkout|T1|t");
  assert_true(ev->finished);
  assert_null(ev->row);
  assert_int_equal(ev->n_sinks, 0);
  assert_null(pl_state_live_next(h.s, NULL));
  st = stats(&h);
  assert_int_equal(st.live, 0);
  assert_int_equal(st.finished, 1);
  assert_int_equal(st.pending + st.waiting + st.dead_letters, 0);
  assert_int_equal(st.row_bytes, 0);
  assert_int_equal(st.live_bytes, 0);
  assert_true(pl_state_seen(h.s, "c1|A|Checkout|T1|t"));

  /* a record for a finished event is damage */
  assert_int_equal(outcome(&h, "c1|A|Checkout|T1|t", "cij", SK_DELIVERED, 1), CSR_ECORRUPT);
  assert_non_null(strstr(pl_state_error(h.s), "already finished"));
  /* no sinks: finished at once */
  assert_int_equal(admit(&h, "c1|A|Checkout|T2|t", "c1", 5000, 0), 0);
  assert_true(pl_state_event(h.s, "c1|A|Checkout|T2|t")->finished);
  h_free(&h);
}

static void test_dup_admit(void **state) {
  (void)state;
  struct h h;
  h_init(&h, NULL);
  assert_int_equal(admit(&h, "e1", "c1", 1, 2), 0);
  assert_int_equal(outcome(&h, "e1", "cij", SK_DELIVERED, 1), 0);
  struct pl_state_stats before = stats(&h);
  assert_int_equal(admit(&h, "e1", "c1", 1, 3), UV_EEXIST);
  assert_non_null(strstr(pl_state_error(h.s), "ADMIT"));
  struct pl_state_stats after = stats(&h);
  assert_int_equal(after.dup_admits, 1);
  after.dup_admits = 0;
  assert_memory_equal(&before, &after, sizeof(before));
  assert_int_equal(dv(&h, "e1", 0)->state, PL_DS_DELIVERED);
  assert_int_equal(pl_state_event(h.s, "e1")->n_sinks, 2);
  /* the replay callback skips it (an id admitted again after it expired at run time) */
  assert_int_equal(admit(&h, "e2", "c1", 1, 0), 0); /* finished at once */
  const char *again = "{\"id\":\"e2\",\"csu\":\"c1\",\"type\":\"Checkout\",\"time_ms\":1,"
                      "\"admitted_ms\":2,\"sinks\":[],\"event\":{}}";
  assert_int_equal(pl_state_replay(h.s, PL_REC_ADMIT, again, strlen(again)), 0);
  assert_int_equal(stats(&h).dup_admits, 2);
  /* but other refusals are not skipped */
  const char *bad = "{\"id\":\"nope\",\"sink\":\"cij\"}";
  assert_int_equal(pl_state_replay(h.s, PL_REC_DLQ_DELETE, bad, strlen(bad)), CSR_ECORRUPT);
  h_free(&h);
}

/* pl_state_admit (the admitter's way, no record parsed back) does what applying the record does. */
static void test_admit_from_fields(void **state) {
  (void)state;
  struct h h;
  h_init(&h, NULL);
  const char *row = "{\"EventTransactionId\":\"c1\", \"AmountPaid\":184.2200000000000000}";
  struct pl_rec_admit live = {"live", "c1", "Checkout", 5, 6, SINKS, 2, row, strlen(row)};
  struct pl_rec_admit rep = {"rep", "c1", "Checkout", 5, 6, SINKS, 2, row, strlen(row)};
  assert_int_equal(pl_state_admit(h.s, &live), 0);
  assert_int_equal(put(&h, PL_REC_ADMIT, pl_rec_admit(&h.jw, &rep)), 0);
  const struct pl_state_event *a = pl_state_event(h.s, "live"), *b = pl_state_event(h.s, "rep");
  assert_non_null(a);
  assert_non_null(b);
  assert_int_equal(a->time_ms, b->time_ms);
  assert_int_equal(a->admitted_ms, b->admitted_ms);
  assert_int_equal(a->n_sinks, 2);
  assert_int_equal(b->n_sinks, 2);
  for (size_t i = 0; i < 2; i++) {
    assert_string_equal(a->sinks[i].sink, b->sinks[i].sink);
    assert_int_equal(a->sinks[i].state, PL_DS_PENDING);
  }
  /* the live row is the text as given; the replayed one its compact re-encoding */
  assert_string_equal(a->row, row);
  assert_string_equal(b->row, "{\"EventTransactionId\":\"c1\",\"AmountPaid\":184.2200000000000000}");
  assert_int_equal(stats(&h).pending, 4);
  /* the same refusals */
  assert_int_equal(pl_state_admit(h.s, &live), UV_EEXIST);
  assert_non_null(strstr(pl_state_error(h.s), "already in the dedupe set"));
  const char *const twice[] = {"cij", "cij"};
  struct pl_rec_admit dup = {"x", "c1", "Checkout", 5, 6, twice, 2, row, strlen(row)};
  assert_int_equal(pl_state_admit(h.s, &dup), CSR_EPARSE);
  assert_null(pl_state_event(h.s, "x"));
  struct pl_rec_admit norow = {"y", "c1", "Checkout", 5, 6, SINKS, 1, NULL, 0};
  assert_int_equal(pl_state_admit(h.s, &norow), UV_EINVAL);
  h_free(&h);
}

/* pl_state_deliver does what applying the ATTEMPT or OUTCOME record does. */
static void test_deliver_from_fields(void **state) {
  (void)state;
  struct h h;
  h_init(&h, NULL);
  const char *row = "{\"EventTransactionId\":\"c1\"}";
  for (int i = 0; i < 2; i++) {
    struct pl_rec_admit a = {i ? "rec" : "live", "c1", "Checkout", 5, 6, SINKS, 2, row,
                             strlen(row)};
    assert_int_equal(pl_state_admit(h.s, &a), 0);
  }
  struct pl_rec_delivery att = {.id = "live", .sink = "cij", .attempt = 2, .next_ms = 900,
                                .status = 503, .reason = "http_503", .excerpt = "busy"};
  struct pl_rec_delivery out = {.id = "live", .sink = "cij", .outcome = SK_DEAD, .attempt = 2,
                                .at_ms = 950, .status = 400, .reason = "http_400",
                                .excerpt = "bad field"};
  struct pl_rec_delivery ok = {.id = "live", .sink = "mqtt", .outcome = SK_DELIVERED,
                               .attempt = 1, .at_ms = 960, .status = 0};
  assert_int_equal(pl_state_deliver(h.s, PL_REC_ATTEMPT, &att), 0);
  assert_int_equal(dv(&h, "live", 0)->state, PL_DS_WAITING);
  assert_int_equal(pl_state_deliver(h.s, PL_REC_OUTCOME, &out), 0);
  assert_int_equal(pl_state_deliver(h.s, PL_REC_OUTCOME, &ok), 0);
  att.id = out.id = ok.id = "rec";
  assert_int_equal(put(&h, PL_REC_ATTEMPT, pl_rec_attempt(&h.jw, &att)), 0);
  assert_int_equal(put(&h, PL_REC_OUTCOME, pl_rec_outcome(&h.jw, &out)), 0);
  assert_int_equal(put(&h, PL_REC_OUTCOME, pl_rec_outcome(&h.jw, &ok)), 0);
  for (size_t i = 0; i < 2; i++) {
    const struct pl_state_delivery *a = dv(&h, "live", i), *b = dv(&h, "rec", i);
    assert_int_equal(a->state, b->state);
    assert_int_equal(a->attempt, b->attempt);
    assert_int_equal(a->status, b->status);
    assert_int_equal(a->at_ms, b->at_ms);
    assert_string_equal(a->reason, b->reason);
    assert_string_equal(a->excerpt, b->excerpt);
  }
  assert_int_equal(dv(&h, "live", 0)->state, PL_DS_DEAD);
  assert_string_equal(dv(&h, "live", 0)->excerpt, "bad field");
  assert_int_equal(stats(&h).dead_letters, 2);
  /* the same refusals */
  assert_int_equal(pl_state_deliver(h.s, PL_REC_OUTCOME, &ok), UV_EALREADY);
  ok.id = "nope";
  assert_int_equal(pl_state_deliver(h.s, PL_REC_OUTCOME, &ok), CSR_ECORRUPT);
  assert_non_null(strstr(pl_state_error(h.s), "unknown id"));
  ok.outcome = SK_RETRY;
  ok.id = "rec";
  assert_int_equal(pl_state_deliver(h.s, PL_REC_OUTCOME, &ok), UV_EINVAL);
  h_free(&h);
}

/* ---------------------------------------------------------------------------------------------- */
/* Dedupe horizon                                                                                 */
/* ---------------------------------------------------------------------------------------------- */

static void test_dedupe_horizon(void **state) {
  (void)state;
  struct pl_state_horizon hz[] = {{"c1", 10000}, {"c2", 60000}};
  struct pl_state_opts opts = {hz, 2, 900000};
  struct h h;
  h_init(&h, &opts);
  char id[64];
  /* c1, c2, c3 (default horizon): finished events at t = 0, 10000, ..., 90000 */
  const char *csus[] = {"c1", "c2", "c3"};
  for (int c = 0; c < 3; c++)
    for (int i = 0; i < 10; i++) {
      snprintf(id, sizeof(id), "%s|%d", csus[c], i);
      assert_int_equal(admit(&h, id, csus[c], i * 10000, 1), 0);
      assert_int_equal(outcome(&h, id, "cij", SK_DELIVERED, 1), 0);
    }
  /* a live event, long below every horizon */
  assert_int_equal(admit(&h, "c1|live", "c1", -5000000, 1), 0);
  /* no cursor yet: nothing expires */
  assert_int_equal(pl_state_expire(h.s), 0);
  int64_t ms;
  assert_int_equal(pl_state_cursor(h.s, "c1", "Checkout", &ms), UV_ENOENT);
  /* a cursor of another type of c1 does not expire Checkout ids */
  assert_int_equal(cursor(&h, "c1", "AddCartLines", 1000000), 0);
  assert_int_equal(pl_state_expire(h.s), 0);

  /* c1 Checkout cursor 60000, horizon 10000: ids below 50000 go, 50000 itself stays */
  assert_int_equal(cursor(&h, "c1", "Checkout", 60000), 0);
  assert_int_equal(cursor(&h, "c1", "Checkout", 30000), 0); /* never moves back */
  assert_int_equal(pl_state_cursor(h.s, "c1", "Checkout", &ms), 0);
  assert_int_equal(ms, 60000);
  /* c2 Checkout cursor 100000, horizon 60000: below 40000 go */
  assert_int_equal(cursor(&h, "c2", "Checkout", 100000), 0);
  assert_int_equal(pl_state_expire(h.s), 5 + 4);
  for (int c = 0; c < 3; c++)
    for (int i = 0; i < 10; i++) {
      snprintf(id, sizeof(id), "%s|%d", csus[c], i);
      bool kept = c == 0 ? i >= 5 : c == 1 ? i >= 4 : true;
      assert_int_equal(pl_state_seen(h.s, id), kept);
    }
  assert_true(pl_state_seen(h.s, "c1|live"));
  struct pl_state_stats st = stats(&h);
  assert_int_equal(st.expired, 9);
  assert_int_equal(st.finished, 30 - 9);
  assert_int_equal(st.cursors, 3);
  /* an expired id may be admitted again */
  assert_int_equal(admit(&h, "c1|0", "c1", 0, 0), 0);
  /* the live one goes once it finishes */
  assert_int_equal(pl_state_expire(h.s), 1); /* c1|0 again (finished at once) */
  assert_int_equal(outcome(&h, "c1|live", "cij", SK_DELIVERED, 1), 0);
  assert_true(pl_state_seen(h.s, "c1|live"));
  assert_int_equal(pl_state_expire(h.s), 1);
  assert_false(pl_state_seen(h.s, "c1|live"));
  /* c3's default horizon of 900 s */
  assert_int_equal(cursor(&h, "c3", "Checkout", 900000 + 35000), 0);
  assert_int_equal(pl_state_expire(h.s), 4);
  assert_true(pl_state_seen(h.s, "c3|4"));
  assert_false(pl_state_seen(h.s, "c3|3"));
  /* cursor_at lists every cursor */
  size_t n = 0;
  const char *csu, *type;
  while (pl_state_cursor_at(h.s, n, &csu, &type, &ms) == 0)
    n++;
  assert_int_equal(n, 4);
  h_free(&h);
}

/* ---------------------------------------------------------------------------------------------- */
/* Dead-letter queue                                                                              */
/* ---------------------------------------------------------------------------------------------- */

static void test_dlq(void **state) {
  (void)state;
  struct h h;
  h_init(&h, NULL);
  assert_int_equal(admit(&h, "e1", "c1", 1, 2), 0);
  assert_int_equal(admit(&h, "e2", "c1", 2, 1), 0);
  assert_int_equal(outcome(&h, "e1", "cij", SK_DELIVERED, 1), 0);
  assert_int_equal(attempt(&h, "e1", "mqtt", 2, 100), 0);
  assert_int_equal(outcome(&h, "e1", "mqtt", SK_DEAD, 10), 0);
  assert_int_equal(outcome(&h, "e2", "cij", SK_DEAD, 1), 0);
  /* listed oldest first, rows kept */
  const struct pl_state_delivery *d = pl_state_dlq_next(h.s, NULL);
  assert_non_null(d);
  assert_string_equal(d->event->id, "e1");
  assert_string_equal(d->sink, "mqtt");
  assert_int_equal(d->status, 400);
  assert_int_equal(d->attempt, 10);
  assert_string_equal(d->reason, "http_400");
  assert_string_equal(d->excerpt, "{\"error\":\"bad\"}");
  assert_non_null(d->event->row);
  d = pl_state_dlq_next(h.s, d);
  assert_string_equal(d->event->id, "e2");
  assert_null(pl_state_dlq_next(h.s, d));
  struct pl_state_stats st = stats(&h);
  assert_int_equal(st.dead_letters, 2);
  assert_int_equal(st.live, 2);
  assert_false(pl_state_event(h.s, "e1")->finished);
  /* a dead delivery is final: no attempt, no outcome */
  assert_int_equal(attempt(&h, "e1", "mqtt", 2, 100), UV_EALREADY);
  assert_int_equal(outcome(&h, "e1", "mqtt", SK_DELIVERED, 1), UV_EALREADY);
  /* only dead letters replay */
  assert_int_equal(dlq_replay(&h, "e1", "cij"), UV_ENOENT);
  assert_non_null(strstr(pl_state_error(h.s), "DLQ_REPLAY"));

  /* replay: back to pending with attempts reset, then delivered: finished */
  assert_int_equal(dlq_replay(&h, "e1", "mqtt"), 0);
  d = dv(&h, "e1", 1);
  assert_int_equal(d->state, PL_DS_PENDING);
  assert_int_equal(d->attempt, 1);
  assert_int_equal(d->status, 0);
  assert_string_equal(d->reason, "");
  assert_string_equal(pl_state_dlq_next(h.s, NULL)->event->id, "e2");
  assert_int_equal(stats(&h).dead_letters, 1);
  assert_int_equal(stats(&h).pending, 1);
  assert_int_equal(attempt(&h, "e1", "mqtt", 2, 500), 0);
  assert_int_equal(outcome(&h, "e1", "mqtt", SK_DELIVERED, 2), 0);
  assert_true(pl_state_event(h.s, "e1")->finished);

  /* delete: the dead letter goes, the event finishes */
  assert_int_equal(dlq_delete(&h, "e2", "cij"), 0);
  assert_null(pl_state_dlq_next(h.s, NULL));
  assert_true(pl_state_event(h.s, "e2")->finished);
  assert_int_equal(dlq_delete(&h, "e2", "cij"), CSR_ECORRUPT);

  /* delete while another delivery is pending: not finished until it has its outcome */
  assert_int_equal(admit(&h, "e3", "c1", 3, 3), 0);
  assert_int_equal(outcome(&h, "e3", "webhook", SK_DEAD, 1), 0);
  assert_int_equal(dlq_delete(&h, "e3", "webhook"), 0);
  assert_int_equal(dv(&h, "e3", 2)->state, PL_DS_DELETED);
  assert_int_equal(dlq_delete(&h, "e3", "webhook"), UV_ENOENT);
  assert_int_equal(outcome(&h, "e3", "cij", SK_SKIPPED, 1), 0);
  assert_false(pl_state_event(h.s, "e3")->finished);
  assert_int_equal(outcome(&h, "e3", "mqtt", SK_DELIVERED, 1), 0);
  assert_true(pl_state_event(h.s, "e3")->finished);
  st = stats(&h);
  assert_int_equal(st.live + st.dead_letters + st.pending + st.live_bytes + st.row_bytes, 0);
  assert_int_equal(st.finished, 3);
  h_free(&h);
}

/* ---------------------------------------------------------------------------------------------- */
/* Decoding errors                                                                                */
/* ---------------------------------------------------------------------------------------------- */

static void expect(struct h *h, uint8_t type, const char *text, int rc, const char *msg) {
  struct pl_state_stats before = stats(h);
  assert_int_equal(raw(h, type, text), rc);
  if (strstr(pl_state_error(h->s), msg) == NULL)
    fail_msg("error \"%s\" lacks \"%s\"", pl_state_error(h->s), msg);
  struct pl_state_stats after = stats(h);
  after.dup_admits = before.dup_admits;
  assert_memory_equal(&before, &after, sizeof(before));
}

static void test_decoding_errors(void **state) {
  (void)state;
  struct h h;
  h_init(&h, NULL);
  assert_int_equal(admit(&h, "e1", "c1", 1, 2), 0);
  expect(&h, PL_REC_ADMIT, "{\"id\":\"x\",", CSR_EPARSE, "ADMIT: malformed payload");
  expect(&h, PL_REC_CURSOR, "[1,2]", CSR_EPARSE, "CURSOR: malformed payload: not an object");
  expect(&h, PL_REC_CURSOR, "{\"csu\":\"c1\",\"type\":\"Checkout\"}", CSR_EPARSE,
         "CURSOR: missing, non-integer or out of range field \"cursor_ms\"");
  expect(&h, PL_REC_ADMIT,
         "{\"id\":\"x\",\"csu\":\"c1\",\"type\":\"T\",\"admitted_ms\":1,\"sinks\":[],\"event\":{}}",
         CSR_EPARSE, "ADMIT: missing, non-integer or out of range field \"time_ms\"");
  expect(&h, PL_REC_ADMIT,
         "{\"id\":\"x\",\"csu\":\"c1\",\"type\":\"T\",\"time_ms\":1,\"admitted_ms\":1,"
         "\"sinks\":[\"a\",\"a\"],\"event\":{}}",
         CSR_EPARSE, "names \"a\" twice");
  expect(&h, PL_REC_ADMIT,
         "{\"id\":\"x\",\"csu\":\"c1\",\"type\":\"T\",\"time_ms\":1,\"admitted_ms\":1,"
         "\"sinks\":[\"a\"],\"event\":[]}",
         CSR_EPARSE, "ADMIT: missing or non-object field \"event\"");
  expect(&h, PL_REC_ADMIT,
         "{\"id\":7,\"csu\":\"c1\",\"type\":\"T\",\"time_ms\":1,\"admitted_ms\":1,"
         "\"sinks\":[],\"event\":{}}",
         CSR_EPARSE, "ADMIT: missing or non-string field \"id\"");
  assert_false(pl_state_seen(h.s, "x"));
  expect(&h, PL_REC_OUTCOME,
         "{\"id\":\"nope\",\"sink\":\"cij\",\"outcome\":\"delivered\",\"attempts\":1,"
         "\"status\":200,\"at_ms\":1}",
         CSR_ECORRUPT, "OUTCOME: unknown id \"nope\"");
  expect(&h, PL_REC_OUTCOME,
         "{\"id\":\"e1\",\"sink\":\"webhook\",\"outcome\":\"delivered\",\"attempts\":1,"
         "\"status\":200,\"at_ms\":1}",
         CSR_ECORRUPT, "OUTCOME: the route has no sink \"webhook\"");
  expect(&h, PL_REC_OUTCOME,
         "{\"id\":\"e1\",\"sink\":\"nosuch\",\"outcome\":\"delivered\",\"attempts\":1,"
         "\"status\":200,\"at_ms\":1}",
         CSR_ECORRUPT, "no sink \"nosuch\"");
  expect(&h, PL_REC_OUTCOME,
         "{\"id\":\"e1\",\"sink\":\"cij\",\"outcome\":\"maybe\",\"attempts\":1,"
         "\"status\":200,\"at_ms\":1}",
         CSR_EPARSE, "OUTCOME: field \"outcome\" is \"maybe\"");
  expect(&h, PL_REC_OUTCOME,
         "{\"id\":\"e1\",\"sink\":\"cij\",\"outcome\":\"dead\",\"attempts\":1,\"status\":400}",
         CSR_EPARSE, "\"at_ms\"");
  expect(&h, PL_REC_OUTCOME,
         "{\"id\":\"e1\",\"sink\":\"cij\",\"outcome\":\"dead\",\"attempts\":1,\"status\":400,"
         "\"at_ms\":1,\"reason\":5}",
         CSR_EPARSE, "OUTCOME: field \"reason\" is not a string");
  expect(&h, PL_REC_ATTEMPT,
         "{\"id\":\"e1\",\"sink\":\"cij\",\"attempt\":0,\"next_ms\":1,\"status\":503}", CSR_EPARSE,
         "ATTEMPT: missing, non-integer or out of range field \"attempt\"");
  expect(&h, PL_REC_ATTEMPT, "{\"sink\":\"cij\",\"attempt\":2,\"next_ms\":1,\"status\":503}",
         CSR_EPARSE, "ATTEMPT: missing or non-string field \"id\"");
  expect(&h, PL_REC_DLQ_REPLAY, "{\"id\":\"e1\",\"sink\":\"cij\"}", CSR_EPARSE,
         "DLQ_REPLAY: missing, non-integer or out of range field \"at_ms\"");
  expect(&h, PL_REC_DLQ_DELETE, "{\"id\":\"e1\",\"sink\":\"cij\"}", UV_ENOENT,
         "is not a dead letter");
  expect(&h, PL_REC_SEEN, "{\"id\":\"e1\",\"csu\":\"c1\",\"type\":\"T\",\"time_ms\":1}", UV_EEXIST,
         "SEEN: id \"e1\"");
  expect(&h, 99, "{}", CSR_ECORRUPT, "unknown record type 99");
  expect(&h, 0, "{}", CSR_ECORRUPT, "unknown record type 0");
  expect(&h, PL_REC_ADMIT, "", CSR_EPARSE, "ADMIT: malformed payload");
  /* null reason/excerpt are accepted (as none) */
  assert_int_equal(raw(&h, PL_REC_ATTEMPT,
                       "{\"id\":\"e1\",\"sink\":\"cij\",\"attempt\":2,\"next_ms\":1,"
                       "\"status\":0,\"reason\":null,\"excerpt\":null}"),
                   0);
  /* the encoders refuse what they cannot write */
  struct pl_rec_delivery d = {.id = "e1", .sink = "cij", .outcome = SK_RETRY};
  assert_int_equal(pl_rec_outcome(&h.jw, &d), UV_EINVAL);
  assert_int_equal(pl_rec_cursor(&h.jw, NULL, "T", 1), UV_EINVAL);
  assert_string_equal(pl_rec_name(PL_REC_DLQ_DELETE), "DLQ_DELETE");
  assert_string_equal(pl_rec_name(200), "?");
  h_free(&h);
}

static void test_number_text(void **state) {
  (void)state;
  struct h h;
  h_init(&h, NULL);
  const char *row = "{\"EventTransactionId\":\"cart-1\",\"AmountPaid\":184.2200000000000000,"
                    "\"EventChannelId\":5637144592,\"Lines\":[{\"Qty\":1.0e3,\"Neg\":-0.50}],"
                    "\"Name\":\"Zo\\u00eb \\\"Q\\\"\",\"Null\":null,\"B\":true}";
  assert_int_equal(admit_row(&h, "e1", "c1", 1, 1, row), 0);
  const struct pl_state_event *ev = pl_state_event(h.s, "e1");
  assert_non_null(strstr(ev->row, "\"AmountPaid\":184.2200000000000000,"));
  assert_non_null(strstr(ev->row, "\"EventChannelId\":5637144592,"));
  assert_non_null(strstr(ev->row, "\"Qty\":1.0e3,\"Neg\":-0.50}"));
  /* one more trip through a dump's encoding is byte for byte the same */
  struct pl_rec_admit a = {"e2", "c1", "T", 1, 2, SINKS, 1, ev->row, ev->row_len};
  assert_int_equal(put(&h, PL_REC_ADMIT, pl_rec_admit(&h.jw, &a)), 0);
  const struct pl_state_event *ev2 = pl_state_event(h.s, "e2");
  assert_int_equal(ev2->row_len, ev->row_len);
  assert_memory_equal(ev2->row, ev->row, ev->row_len);
  h_free(&h);
}

/* ---------------------------------------------------------------------------------------------- */
/* Dump round trip through a real store                                                           */
/* ---------------------------------------------------------------------------------------------- */

struct env {
  uv_loop_t uv;
  struct rx_loop loop;
  char dir[64];
};

static void on_closed(void *arg) {
  (*(int *)arg)++;
}

static void store_open(struct env *e, struct h *h) {
  struct pl_store_opts o = {.dir = e->dir, .fsync = CSR_FSYNC_NONE};
  struct csr_err err;
  int rc = pl_store_open(&e->loop, &o, pl_state_replay, pl_state_dump, h->s, &h->store, &err);
  if (rc != 0)
    fail_msg("pl_store_open: %s: %s (%s)", csr_strerror(rc), err.msg, pl_state_error(h->s));
}

static void remove_dir(const char *dir) {
  char p[512];
  DIR *d = opendir(dir);
  struct dirent *de;
  while (d && (de = readdir(d)) != NULL)
    if (de->d_name[0] != '.') {
      snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
      unlink(p);
    }
  if (d)
    closedir(d);
  assert_int_equal(rmdir(dir), 0);
}

static void store_close(struct env *e, struct h *h) {
  int closed = 0;
  pl_store_close(h->store, on_closed, &closed);
  rx_loop_run(&e->loop);
  assert_int_equal(closed, 1);
  h->store = NULL;
}

static void compare_delivery(const struct pl_state_delivery *a, const struct pl_state_delivery *b) {
  assert_string_equal(a->sink, b->sink);
  assert_int_equal(a->state, b->state);
  assert_int_equal(a->attempt, b->attempt);
  assert_int_equal(a->next_ms, b->next_ms);
  assert_int_equal(a->at_ms, b->at_ms);
  assert_int_equal(a->status, b->status);
  assert_string_equal(a->reason, b->reason);
  assert_string_equal(a->excerpt, b->excerpt);
}

static void compare_event(const struct pl_state_event *a, const struct pl_state_event *b) {
  assert_non_null(b);
  assert_string_equal(a->id, b->id);
  assert_string_equal(a->csu, b->csu);
  assert_string_equal(a->type, b->type);
  assert_int_equal(a->time_ms, b->time_ms);
  assert_int_equal(a->finished, b->finished);
  if (a->finished)
    return;
  assert_int_equal(a->admitted_ms, b->admitted_ms);
  assert_int_equal(a->row_len, b->row_len);
  assert_memory_equal(a->row, b->row, a->row_len);
  assert_int_equal(a->n_sinks, b->n_sinks);
  for (size_t i = 0; i < a->n_sinks; i++)
    compare_delivery(&a->sinks[i], &b->sinks[i]);
}

static void compare(const struct h *x, const struct h *y, char (*ids)[48], size_t n_ids) {
  struct pl_state_stats a = stats(x), b = stats(y);
  assert_int_equal(a.live, b.live);
  assert_int_equal(a.finished, b.finished);
  assert_int_equal(a.dead_letters, b.dead_letters);
  assert_int_equal(a.pending, b.pending);
  assert_int_equal(a.waiting, b.waiting);
  assert_int_equal(a.row_bytes, b.row_bytes);
  assert_int_equal(a.live_bytes, b.live_bytes);
  assert_int_equal(a.cursors, b.cursors);
  const char *csu, *type;
  int64_t ms, ms2;
  for (size_t i = 0; pl_state_cursor_at(x->s, i, &csu, &type, &ms) == 0; i++) {
    assert_int_equal(pl_state_cursor(y->s, csu, type, &ms2), 0);
    assert_int_equal(ms, ms2);
  }
  const struct pl_state_event *ea = NULL, *eb = NULL;
  while ((ea = pl_state_live_next(x->s, ea)) != NULL) {
    eb = pl_state_live_next(y->s, eb);
    compare_event(ea, eb);
  }
  assert_null(pl_state_live_next(y->s, eb));
  const struct pl_state_delivery *da = NULL, *db = NULL;
  while ((da = pl_state_dlq_next(x->s, da)) != NULL) {
    db = pl_state_dlq_next(y->s, db);
    assert_non_null(db);
    assert_string_equal(da->event->id, db->event->id);
    compare_delivery(da, db);
  }
  assert_null(pl_state_dlq_next(y->s, db));
  for (size_t i = 0; i < n_ids; i++) {
    const struct pl_state_event *p = pl_state_event(x->s, ids[i]),
                                *q = pl_state_event(y->s, ids[i]);
    assert_int_equal(p != NULL, q != NULL);
    if (p)
      compare_event(p, q);
  }
}

static uint64_t rnd_state = 88172645463325252ull;
static uint64_t rnd(uint64_t n) {
  rnd_state ^= rnd_state << 13;
  rnd_state ^= rnd_state >> 7;
  rnd_state ^= rnd_state << 17;
  return rnd_state % n;
}

/* Drives one event into a random state; every state occurs. */
static void drive(struct h *h, const char *id, size_t n_sinks) {
  for (size_t k = 0; k < n_sinks; k++) {
    const char *sink = SINKS[k];
    switch (rnd(8)) {
      case 0: /* pending */
        break;
      case 1:
        assert_int_equal(attempt(h, id, sink, 2 + (unsigned)rnd(5), (int64_t)rnd(1000000)), 0);
        break;
      case 2:
        assert_int_equal(outcome(h, id, sink, SK_DEAD, 10), 0);
        break;
      case 3:
        assert_int_equal(outcome(h, id, sink, SK_DEAD, 1), 0);
        assert_int_equal(dlq_delete(h, id, sink), 0);
        break;
      case 4:
        assert_int_equal(outcome(h, id, sink, SK_DEAD, 3), 0);
        assert_int_equal(dlq_replay(h, id, sink), 0);
        if (rnd(2))
          assert_int_equal(attempt(h, id, sink, 2, 5), 0);
        break;
      case 5:
        assert_int_equal(outcome(h, id, sink, SK_SKIPPED, 1), 0);
        break;
      default:
        assert_int_equal(attempt(h, id, sink, 2, 5), 0);
        assert_int_equal(outcome(h, id, sink, SK_DELIVERED, 2), 0);
        break;
    }
  }
}

struct seen_forms {
  size_t by_hash, by_id;
};

static int count_seen(void *arg, uint8_t type, const void *payload, size_t len) {
  struct seen_forms *f = arg;
  if (type != PL_REC_SEEN)
    return 0;
  yajl_val v = csr_json_parse(payload, len, NULL, 0);
  assert_non_null(v);
  const char *h = csr_json_get_str(v, "h");
  f->by_hash += h != NULL && strlen(h) == 32;
  f->by_id += csr_json_get(v, "id") != NULL;
  csr_json_free(v);
  return 0;
}

static void test_dump_round_trip(void **state) {
  (void)state;
  enum { N = 4000 };
  struct env e;
  assert_int_equal(uv_loop_init(&e.uv), 0);
  assert_int_equal(rx_loop_init(&e.loop, &e.uv), 0);
  snprintf(e.dir, sizeof(e.dir), "/tmp/csr-state-XXXXXX");
  assert_non_null(mkdtemp(e.dir));
  struct pl_state_horizon hz[] = {{"c1", 50000}, {"c2", 200000}, {"c3", 0}};
  struct pl_state_opts opts = {hz, 3, 0};
  const char *csus[] = {"c1", "c2", "c3"};
  const char *types[] = {"Checkout", "AddCartLines"};
  char(*ids)[48] = calloc(N, sizeof(*ids));
  assert_non_null(ids);

  struct h x, y, z;
  h_init(&x, &opts);
  store_open(&e, &x);
  for (size_t i = 0; i < N; i++) {
    const char *csu = csus[i % 3];
    snprintf(ids[i], sizeof(ids[i]), "%s|DAT|%s|cart-%zu|2026-11-22T10:00:%02zu", csu, types[i % 2],
             i, i % 60);
    char row[256];
    snprintf(row, sizeof(row),
             "{\"EventTransactionId\":\"cart-%zu\",\"AmountPaid\":%zu.2200000000000000,"
             "\"EventChannelId\":5637144592,\"N\":[1,2.50,{\"x\":null}]}",
             i, i);
    size_t n_sinks = 1 + i % 3;
    struct pl_rec_admit a = {ids[i], csu,     types[i % 2], (int64_t)(i * 100), (int64_t)i,
                             SINKS,  n_sinks, row,          strlen(row)};
    assert_int_equal(put(&x, PL_REC_ADMIT, pl_rec_admit(&x.jw, &a)), 0);
    drive(&x, ids[i], n_sinks);
  }
  for (size_t c = 0; c < 3; c++)
    for (size_t t = 0; t < 2; t++)
      assert_int_equal(cursor(&x, csus[c], types[t], (int64_t)(N * 50 + c * 1000)), 0);
  struct pl_state_stats st = stats(&x);
  print_message("    %llu live, %llu finished, %llu dead letters, %llu pending, %llu waiting\n",
                (unsigned long long)st.live, (unsigned long long)st.finished,
                (unsigned long long)st.dead_letters, (unsigned long long)st.pending,
                (unsigned long long)st.waiting);
  assert_true(st.live > 100 && st.finished > 100 && st.dead_letters > 100 && st.pending > 100 &&
              st.waiting > 100);
  store_close(&e, &x);

  /* the raw log replays into an equal state */
  h_init(&y, &opts);
  store_open(&e, &y);
  compare(&x, &y, ids, N);
  /* expiry is not logged: run it on both, then compact and replay the dump */
  size_t gone = pl_state_expire(x.s);
  assert_int_equal(pl_state_expire(y.s), gone);
  assert_true(gone > 100);
  compare(&x, &y, ids, N);
  assert_int_equal(pl_store_compact(y.store), 0);
  rx_loop_run(&e.loop);
  assert_int_equal(pl_store_stats(y.store)->compactions, 1);
  /* a record after the compaction lands in the new file too */
  assert_int_equal(admit(&x, "late", "c1", 1, 2), 0);
  assert_int_equal(admit(&y, "late", "c1", 1, 2), 0);
  store_close(&e, &y);
  /* the dump names every finished id by its hash, never by its text */
  struct seen_forms forms = {0, 0};
  assert_int_equal(pl_store_read(e.dir, count_seen, &forms, NULL, NULL), 0);
  assert_int_equal(forms.by_id, 0);
  assert_int_equal(forms.by_hash, stats(&y).finished);
  assert_true(forms.by_hash > 100);

  h_init(&z, &opts);
  store_open(&e, &z);
  compare(&x, &z, ids, N);
  compare(&y, &z, ids, N);
  assert_int_equal(stats(&z).dup_admits, 0);
  store_close(&e, &z);

  h_free(&x);
  h_free(&y);
  h_free(&z);
  free(ids);
  assert_int_equal(rx_loop_close(&e.loop), 0);
  remove_dir(e.dir);
}

struct type_counts {
  size_t n[16];
};

static int count_types(void *arg, uint8_t type, const void *payload, size_t len) {
  ((struct type_counts *)arg)->n[type & 15]++;
  return 0;
}

/* The state of `h` holds the ingress's jobs j1 (done), j2 (pending) and the mapping of b@. */
static void check_jobs(const struct h *h) {
  struct cs_jobs *j = pl_state_jobs(h->s);
  const struct cs_job *x = cs_jobs_find(j, "j1");
  assert_non_null(x);
  assert_int_equal(x->state, CS_JOB_DONE);
  assert_string_equal(x->account, "C1");
  assert_string_equal(x->request, "{\"email\":\"Ann@Example.com\",\"n\":1.50}");
  x = cs_jobs_pending_next(j, NULL);
  assert_non_null(x);
  assert_string_equal(x->id, "j2");
  assert_null(cs_jobs_pending_next(j, x));
  assert_string_equal(cs_jobs_account(j, "ann@example.com"), "C1");
  assert_string_equal(cs_jobs_account(j, "B@EXAMPLE.COM"), "C2");
  assert_non_null(pl_state_event(h->s, "e1"));
}

/* The ingress's records share the AOF: the state hands them to its job model on apply and on the
 * replay of pl_store_open, and its dump ends with the job model's, so they survive compaction. */
static void test_jobs_in_store(void **state) {
  const char *req = "{\"email\":\"Ann@Example.com\",\"n\":1.50}";
  struct cs_rec_job_end end = {"j1", CS_JOB_DONE, "C1", true, 201, NULL, 1, 9};
  struct env e;
  struct h x, y;
  assert_int_equal(uv_loop_init(&e.uv), 0);
  assert_int_equal(rx_loop_init(&e.loop, &e.uv), 0);
  snprintf(e.dir, sizeof(e.dir), "/tmp/csr-state-XXXXXX");
  assert_non_null(mkdtemp(e.dir));
  assert_string_equal(pl_rec_name(PL_REC_JOB), "JOB");
  assert_string_equal(pl_rec_name(PL_REC_JOB_END), "JOB_END");
  assert_string_equal(pl_rec_name(PL_REC_CUSTOMER), "CUSTOMER");
  assert_string_equal(pl_rec_name(PL_REC_CUSTOMER + 1), "?");

  h_init(&x, NULL);
  store_open(&e, &x);
  assert_int_equal(admit(&x, "e1", "c1", 1000, 1), 0);
  assert_int_equal(
      put(&x, PL_REC_JOB, cs_rec_job(&x.jw, "j1", "Ann@Example.com", 5, req, strlen(req))), 0);
  assert_int_equal(
      put(&x, PL_REC_JOB, cs_rec_job(&x.jw, "j2", "b@example.com", 6, req, strlen(req))), 0);
  assert_int_equal(put(&x, PL_REC_CUSTOMER, cs_rec_customer(&x.jw, "b@example.com", "C2")), 0);
  assert_int_equal(put(&x, PL_REC_JOB_END, cs_rec_job_end(&x.jw, &end)), 0);
  check_jobs(&x);
  /* a refusal is the job model's, with its message */
  assert_int_equal(put(&x, PL_REC_JOB_END, cs_rec_job_end(&x.jw, &end)), CSR_ECORRUPT);
  assert_non_null(strstr(pl_state_error(x.s), "JOB_END"));
  assert_non_null(strstr(pl_state_error(x.s), "\"j1\""));
  assert_int_equal(raw(&x, PL_REC_CUSTOMER + 1, "{}"), CSR_ECORRUPT);
  assert_non_null(strstr(pl_state_error(x.s), "unknown record type 11"));
  store_close(&e, &x);
  h_free(&x);

  /* replayed on open; compacted; replayed again from the dump */
  h_init(&y, NULL);
  store_open(&e, &y);
  check_jobs(&y);
  assert_int_equal(pl_store_compact(y.store), 0);
  rx_loop_run(&e.loop);
  assert_int_equal(pl_store_stats(y.store)->compactions, 1);
  store_close(&e, &y);
  h_free(&y);
  struct type_counts c = {{0}};
  assert_int_equal(pl_store_read(e.dir, count_types, &c, NULL, NULL), 0);
  assert_int_equal(c.n[PL_REC_ADMIT], 1);
  assert_int_equal(c.n[PL_REC_JOB], 2);
  assert_int_equal(c.n[PL_REC_JOB_END], 1);
  assert_int_equal(c.n[PL_REC_CUSTOMER], 1); /* b@'s; a@'s comes with j1's JOB_END */
  h_init(&y, NULL);
  store_open(&e, &y);
  check_jobs(&y);
  store_close(&e, &y);
  h_free(&y);

  assert_int_equal(rx_loop_close(&e.loop), 0);
  remove_dir(e.dir);
}

/* ---------------------------------------------------------------------------------------------- */
/* Memory                                                                                         */
/* ---------------------------------------------------------------------------------------------- */

static void test_memory_cycle(void **state) {
  (void)state;
  enum { N = 100000 };
  struct pl_state_horizon hz[] = {{"c1", 1000}};
  struct pl_state_opts opts = {hz, 1, 0};
  struct h h;
  h_init(&h, &opts);
  char id[48];
  for (int i = 0; i < N; i++) {
    snprintf(id, sizeof(id), "c1|DAT|Checkout|cart-%d|t", i);
    assert_int_equal(admit(&h, id, "c1", i, 2), 0);
    assert_int_equal(attempt(&h, id, "cij", 2, i), 0);
    if (i % 10 == 0) {
      assert_int_equal(outcome(&h, id, "mqtt", SK_DEAD, 1), 0);
      assert_int_equal(dlq_replay(&h, id, "mqtt"), 0);
    }
    assert_int_equal(outcome(&h, id, "cij", SK_DELIVERED, 2), 0);
    assert_int_equal(outcome(&h, id, "mqtt", SK_SKIPPED, 1), 0);
  }
  struct pl_state_stats st = stats(&h);
  assert_int_equal(st.live, 0);
  assert_int_equal(st.live_bytes, 0);
  assert_int_equal(st.row_bytes, 0);
  assert_int_equal(st.pending + st.waiting + st.dead_letters, 0);
  assert_int_equal(st.finished, N);
  /* what a finished id costs (about 240 bytes when it kept its whole entry) */
  print_message("    %d finished ids hold %llu bytes: %.1f bytes per id\n", N,
                (unsigned long long)st.seen_bytes, (double)st.seen_bytes / N);
  assert_true(st.seen_bytes < 80ull * N);
  /* half of them expire; every id is checked (the table's deletions keep the others findable) */
  assert_int_equal(cursor(&h, "c1", "Checkout", N / 2 + 1000), 0);
  assert_int_equal(pl_state_expire(h.s), N / 2);
  for (int i = 0; i < N; i++) {
    snprintf(id, sizeof(id), "c1|DAT|Checkout|cart-%d|t", i);
    assert_int_equal(pl_state_seen(h.s, id), i >= N / 2);
  }
  assert_int_equal(cursor(&h, "c1", "Checkout", N + 1000), 0);
  assert_int_equal(pl_state_expire(h.s), N / 2);
  st = stats(&h);
  assert_int_equal(st.finished, 0);
  assert_false(pl_state_seen(h.s, id));
  h_free(&h);
}

/* ---------------------------------------------------------------------------------------------- */
/* Finished ids                                                                                   */
/* ---------------------------------------------------------------------------------------------- */

static void test_finished_id(void **state) {
  (void)state;
  struct h h;
  h_init(&h, NULL);
  char id[64];
  snprintf(id, sizeof(id), "%s", "c1|DAT|Checkout|cart-9|2026-11-22T10:00:00");
  assert_int_equal(admit(&h, id, "c1", 7000, 1), 0);
  assert_int_equal(outcome(&h, id, "cij", SK_DELIVERED, 1), 0);
  /* still in the dedupe set: a duplicate, and found by both queries */
  assert_true(pl_state_seen(h.s, id));
  assert_int_equal(admit(&h, id, "c1", 7000, 2), UV_EEXIST);
  assert_non_null(strstr(pl_state_error(h.s), "is already in the dedupe set"));
  assert_int_equal(stats(&h).dup_admits, 1);
  const struct pl_state_event *ev = pl_state_event(h.s, id);
  assert_non_null(ev);
  assert_true(ev->finished);
  assert_string_equal(ev->id, id);
  assert_ptr_not_equal(ev->id, id);
  assert_string_equal(ev->csu, "c1");
  assert_string_equal(ev->type, "Checkout");
  assert_int_equal(ev->time_ms, 7000);
  assert_int_equal(ev->admitted_ms, 0);
  assert_null(ev->row);
  assert_int_equal(ev->row_len, 0);
  assert_int_equal(ev->n_sinks, 0);
  assert_null(ev->sinks);
  /* the view keeps its own copy of the id */
  id[0] = 'X';
  assert_string_equal(ev->id, "c1|DAT|Checkout|cart-9|2026-11-22T10:00:00");
  assert_false(pl_state_seen(h.s, id));
  assert_null(pl_state_event(h.s, id));
  id[0] = 'c';
  /* records for it are damage, and change nothing */
  assert_int_equal(attempt(&h, id, "cij", 2, 1), CSR_ECORRUPT);
  assert_non_null(strstr(pl_state_error(h.s), "already finished"));
  assert_int_equal(dlq_replay(&h, id, "cij"), CSR_ECORRUPT);
  struct pl_state_stats st = stats(&h);
  assert_int_equal(st.finished, 1);
  assert_int_equal(st.live + st.live_bytes + st.row_bytes + st.pending, 0);
  assert_true(st.seen_bytes > 0);
  assert_false(pl_state_seen(h.s, "c1|nope"));
  assert_null(pl_state_event(h.s, "c1|nope"));
  /* a live entry beside it is the event's own */
  assert_int_equal(admit(&h, "live", "c2", 1, 1), 0);
  assert_false(pl_state_event(h.s, "live")->finished);
  assert_true(pl_state_event(h.s, id)->finished);
  h_free(&h);
}

/* Expiry drops a finished id once its time is below cursor - horizon, and not a moment before. */
static void test_expiry_bound(void **state) {
  (void)state;
  struct pl_state_horizon hz[] = {{"c1", 1000}};
  struct pl_state_opts opts = {hz, 1, 0};
  struct h h;
  h_init(&h, &opts);
  assert_int_equal(admit(&h, "a", "c1", 5000, 0), 0);
  assert_int_equal(admit(&h, "b", "c1", 5000, 1), 0);
  assert_int_equal(outcome(&h, "b", "cij", SK_DELIVERED, 1), 0);
  assert_int_equal(raw(&h, PL_REC_SEEN,
                       "{\"id\":\"c\",\"csu\":\"c1\",\"type\":\"Checkout\","
                       "\"time_ms\":5000}"),
                   0);
  assert_int_equal(admit(&h, "d", "c1", 5001, 0), 0);
  assert_int_equal(raw(&h, PL_REC_SEEN,
                       "{\"id\":\"o\",\"csu\":\"c1\",\"type\":\"Other\","
                       "\"time_ms\":0}"),
                   0);
  assert_int_equal(stats(&h).finished, 5);
  assert_int_equal(cursor(&h, "c1", "Checkout", 5999), 0); /* bound 4999 */
  assert_int_equal(pl_state_expire(h.s), 0);
  assert_int_equal(cursor(&h, "c1", "Checkout", 6000), 0); /* bound 5000: 5000 is not below */
  assert_int_equal(pl_state_expire(h.s), 0);
  assert_true(pl_state_seen(h.s, "a") && pl_state_seen(h.s, "b") && pl_state_seen(h.s, "c"));
  assert_int_equal(cursor(&h, "c1", "Checkout", 6001), 0); /* bound 5001 */
  assert_int_equal(pl_state_expire(h.s), 3);
  assert_false(pl_state_seen(h.s, "a") || pl_state_seen(h.s, "b") || pl_state_seen(h.s, "c"));
  assert_null(pl_state_event(h.s, "b"));
  assert_true(pl_state_seen(h.s, "d"));
  assert_true(pl_state_seen(h.s, "o")); /* another type, no cursor */
  struct pl_state_stats st = stats(&h);
  assert_int_equal(st.finished, 2);
  assert_int_equal(st.expired, 3);
  /* an expired id is admitted again, and expires again */
  assert_int_equal(admit(&h, "a", "c1", 5000, 0), 0);
  assert_int_equal(pl_state_expire(h.s), 1);
  assert_int_equal(cursor(&h, "c1", "Checkout", 6002), 0);
  assert_int_equal(pl_state_expire(h.s), 1);
  assert_false(pl_state_seen(h.s, "d"));
  assert_int_equal(stats(&h).finished, 1);
  h_free(&h);
}

static void hash_hex(const char *id, char out[33]) {
  uint64_t hh[2];
  pl__seen_hash(id, strlen(id), hh);
  snprintf(out, 33, "%016" PRIx64 "%016" PRIx64, hh[0], hh[1]);
}

static void expect_text(struct h *h, const char *want) {
  const char *text;
  size_t len;
  assert_int_equal(csr_jw_finish(&h->jw, &text, &len), 0);
  assert_int_equal(len, strlen(want));
  assert_memory_equal(text, want, len);
  csr_jw_reset(&h->jw);
}

static void test_seen_forms(void **state) {
  (void)state;
  struct h h;
  char hex[33], rec[256];
  h_init(&h, NULL);
  /* the form of files written before: the id is hashed on apply */
  const char *old = "{\"id\":\"c1|old\",\"csu\":\"c1\",\"type\":\"Checkout\",\"time_ms\":5}";
  assert_int_equal(pl_state_replay(h.s, PL_REC_SEEN, old, strlen(old)), 0);
  assert_true(pl_state_seen(h.s, "c1|old"));
  const struct pl_state_event *ev = pl_state_event(h.s, "c1|old");
  assert_true(ev->finished);
  assert_string_equal(ev->csu, "c1");
  assert_string_equal(ev->type, "Checkout");
  assert_int_equal(ev->time_ms, 5);
  assert_int_equal(admit(&h, "c1|old", "c1", 5, 1), UV_EEXIST);
  assert_int_equal(pl_state_replay(h.s, PL_REC_SEEN, old, strlen(old)), UV_EEXIST);
  /* the same id by hash is the same entry */
  hash_hex("c1|old", hex);
  snprintf(rec, sizeof(rec), "{\"h\":\"%s\",\"csu\":\"c1\",\"type\":\"Checkout\",\"time_ms\":5}",
           hex);
  assert_int_equal(raw(&h, PL_REC_SEEN, rec), UV_EEXIST);
  assert_non_null(strstr(pl_state_error(h.s), hex));
  /* a new id by hash, as dumps write it, is found by its text */
  uint64_t hh[2];
  pl__seen_hash("c2|new", 6, hh);
  assert_int_equal(
      put(&h, PL_REC_SEEN, pl_rec_seen_hash(&h.jw, hh[0], hh[1], "c2", "AddCartLines", -7)), 0);
  assert_true(pl_state_seen(h.s, "c2|new"));
  ev = pl_state_event(h.s, "c2|new");
  assert_string_equal(ev->id, "c2|new");
  assert_string_equal(ev->csu, "c2");
  assert_string_equal(ev->type, "AddCartLines");
  assert_int_equal(ev->time_ms, -7);
  assert_int_equal(admit(&h, "c2|new", "c2", 1, 0), UV_EEXIST);
  /* SEEN by hash of an id that is live: the id stays one entry once it finishes */
  assert_int_equal(admit(&h, "c3|live", "c3", 9, 1), 0);
  pl__seen_hash("c3|live", 7, hh);
  assert_int_equal(put(&h, PL_REC_SEEN, pl_rec_seen_hash(&h.jw, hh[0], hh[1], "c3", "T", 9)), 0);
  assert_int_equal(stats(&h).finished, 3);
  assert_int_equal(outcome(&h, "c3|live", "cij", SK_DELIVERED, 1), 0);
  assert_int_equal(stats(&h).finished, 3);
  assert_int_equal(stats(&h).live, 0);
  /* the record's text: 32 lowercase digits, h1 first, leading zeros kept */
  assert_int_equal(
      pl_rec_seen_hash(&h.jw, 0x0123456789abcdefull, 0xfedcba9876543210ull, "c", "t", 1), 0);
  expect_text(&h, "{\"h\":\"0123456789abcdeffedcba9876543210\",\"csu\":\"c\",\"type\":\"t\","
                  "\"time_ms\":1}");
  assert_int_equal(pl_rec_seen_hash(&h.jw, 0, 1, "c", "t", -1), 0);
  expect_text(&h, "{\"h\":\"00000000000000000000000000000001\",\"csu\":\"c\",\"type\":\"t\","
                  "\"time_ms\":-1}");
  assert_int_equal(pl_rec_seen_hash(&h.jw, 1, 2, NULL, "t", 1), UV_EINVAL);
  assert_int_equal(pl_rec_seen_hash(NULL, 1, 2, "c", "t", 1), UV_EINVAL);
  h_free(&h);
}

static void test_seen_malformed(void **state) {
  (void)state;
  struct h h;
  char rec[256];
  h_init(&h, NULL);
  assert_int_equal(admit(&h, "e1", "c1", 1, 0), 0); /* the set is not empty */
  static const char *const bad[] = {
      "0123456789abcdef0123456789abcde",   /* 31 digits */
      "0123456789abcdef0123456789abcdef0", /* 33 */
      "",
      "0123456789abcdeg0123456789abcdef", /* not hex */
      "0123456789ABCDEF0123456789abcdef", /* upper case */
      " 123456789abcdef0123456789abcdef",
      "0x23456789abcdef0123456789abcdef",
      "-123456789abcdef0123456789abcdef",
      "0123456789abcdef\\u00003456789abcdef",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    snprintf(rec, sizeof(rec), "{\"h\":\"%s\",\"csu\":\"c1\",\"type\":\"T\",\"time_ms\":1}",
             bad[i]);
    expect(&h, PL_REC_SEEN, rec, CSR_EPARSE, "SEEN: field \"h\" is not 32 lowercase hex digits");
  }
  const char *ok = "0123456789abcdef0123456789abcdef";
  snprintf(rec, sizeof(rec), "{\"h\":7,\"csu\":\"c1\",\"type\":\"T\",\"time_ms\":1}");
  expect(&h, PL_REC_SEEN, rec, CSR_EPARSE, "SEEN: missing or non-string field \"h\"");
  snprintf(rec, sizeof(rec), "{\"h\":null,\"csu\":\"c1\",\"type\":\"T\",\"time_ms\":1}");
  expect(&h, PL_REC_SEEN, rec, CSR_EPARSE, "SEEN: missing or non-string field \"h\"");
  snprintf(rec, sizeof(rec),
           "{\"id\":\"x\",\"h\":\"%s\",\"csu\":\"c1\",\"type\":\"T\",\"time_ms\":1}", ok);
  expect(&h, PL_REC_SEEN, rec, CSR_EPARSE,
         "SEEN: needs exactly one of the fields \"id\" and \"h\"");
  expect(&h, PL_REC_SEEN, "{\"csu\":\"c1\",\"type\":\"T\",\"time_ms\":1}", CSR_EPARSE,
         "SEEN: needs exactly one");
  snprintf(rec, sizeof(rec), "{\"h\":\"%s\",\"type\":\"T\",\"time_ms\":1}", ok);
  expect(&h, PL_REC_SEEN, rec, CSR_EPARSE, "SEEN: missing or non-string field \"csu\"");
  snprintf(rec, sizeof(rec), "{\"h\":\"%s\",\"csu\":\"c1\",\"type\":\"T\",\"time_ms\":\"1\"}", ok);
  expect(&h, PL_REC_SEEN, rec, CSR_EPARSE, "field \"time_ms\"");
  assert_int_equal(stats(&h).finished, 1);
  /* the well-formed one applies */
  snprintf(rec, sizeof(rec), "{\"h\":\"%s\",\"csu\":\"c1\",\"type\":\"T\",\"time_ms\":1}", ok);
  assert_int_equal(raw(&h, PL_REC_SEEN, rec), 0);
  assert_int_equal(stats(&h).finished, 2);
  h_free(&h);
}

/* SipHash-2-4-128 against the reference implementation's vectors (key 00..0f, message 00..len-1),
 * and the key the state uses, pinned: dumps carry these hashes, so it can never change. */
static void test_siphash(void **state) {
  (void)state;
  static const struct {
    size_t len;
    const char *hex;
  } want[] = {
      {0, "a3817f04ba25a8e66df67214c7550293"},  {1, "da87c1d86b99af44347659119b22fc45"},
      {7, "a1f1ebbed8dbc153c0b84aa61ff08239"},  {8, "3b62a9ba6258f5610f83e264f31497b4"},
      {15, "5493e99933b0a8117e08ec0f97cfc3d9"}, {16, "6ee2a4ca67b054bbfd3315bf85230577"},
      {63, "5150d1772f50834a503e069a973fbd7c"},
  };
  uint8_t key[16], msg[64];
  for (int i = 0; i < 16; i++)
    key[i] = (uint8_t)i;
  for (int i = 0; i < 64; i++)
    msg[i] = (uint8_t)i;
  for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
    uint64_t h[2];
    char got[33];
    pl__siphash128(key, msg, want[i].len, h);
    for (int b = 0; b < 16; b++) /* the reference's output bytes, h[0] then h[1] little-endian */
      snprintf(got + 2 * b, 3, "%02x", (unsigned)(uint8_t)(h[b / 8] >> (8 * (b % 8))));
    assert_string_equal(got, want[i].hex);
  }
  char hex[33];
  hash_hex("c1|DAT|Checkout|cart-1|2026-11-22T10:00:00", hex);
  assert_string_equal(hex, PINNED_HASH);
}

/* ---------------------------------------------------------------------------------------------- */
/* The finished ids' table, directly                                                              */
/* ---------------------------------------------------------------------------------------------- */

static uint64_t rnd64(void) {
  rnd(2);
  return rnd_state;
}

static uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* Bytes per id while the set grows from 10,000 to 300,000 ids, at every thousand. */
static void test_seen_bytes_per_id(void **state) {
  (void)state;
  struct pl__seen t;
  struct pl__seen_heap hp = {NULL, 0, 0};
  pl__seen_init(&t);
  double best = 1e9, worst = 0;
  for (uint32_t i = 0; i < 300000; i++) {
    char id[64];
    uint64_t h[2];
    int n = snprintf(id, sizeof(id), "c1|DAT|Checkout|cart-%u|2026-11-22T10:00:00", i);
    pl__seen_hash(id, (size_t)n, h);
    assert_int_equal(pl__seen_reserve(&t, &hp), 0);
    assert_true(pl__seen_add(&t, &hp, 0, h, i));
    if (t.n >= 10000 && t.n % 1000 == 0) {
      double b = (double)(pl__seen_bytes(&t) + pl__seen_heap_bytes(&hp)) / (double)t.n;
      best = b < best ? b : best;
      worst = b > worst ? b : worst;
    }
  }
  print_message("    bytes per finished id, 10,000 to 300,000 ids: %.1f to %.1f\n", best, worst);
  assert_true(worst < 80);
  pl__seen_heap_free(&hp);
  pl__seen_free(&t);
}

struct ref {
  uint64_t h1, h2;
  int64_t time_ms;
  uint32_t lane;
  bool present;
};

enum { LANES = 4, OPS = 200000, PHASE = 40000 };

struct model {
  struct pl__seen t;
  struct pl__seen_heap heaps[LANES];
  const struct pl__seen_heap *hp[LANES];
  struct ref *ref;
  size_t n_ref, present;
  int64_t bound[LANES];
};

/* A new key. Most are uniform; some crowd the table's last home slot (their clusters wrap around
 * to slot 0), some its first, and some share an existing key's h1 (so the record is compared). */
static void new_key(const struct model *m, size_t idx, uint64_t *h1, uint64_t *h2) {
  uint64_t r = rnd64();
  unsigned kind = (unsigned)rnd(100);
  *h2 = splitmix(idx); /* a bijection: every key is distinct */
  if (kind < 3)
    *h1 = (uint64_t)(0xffffffffu - (uint32_t)(r >> 59)) << 32 | (r & 0xffffffffu);
  else if (kind < 6)
    *h1 = (uint64_t)(uint32_t)(r >> 59) << 32 | (r & 0xffffffffu);
  else if (kind < 9 && m->n_ref > 0)
    *h1 = m->ref[rnd(m->n_ref)].h1;
  else
    *h1 = r;
}

static void model_check_key(const struct model *m, const struct ref *e) {
  uint64_t h[2] = {e->h1, e->h2};
  const struct pl__seen_rec *r = pl__seen_find(&m->t, h);
  assert_int_equal(r != NULL, e->present);
  if (r) {
    assert_int_equal(r->time_ms, e->time_ms);
    assert_int_equal(r->lane, e->lane);
  }
}

static void model_insert(struct model *m, struct ref *e, bool fresh) {
  uint64_t h[2] = {e->h1, e->h2};
  uint32_t lane = (uint32_t)rnd(LANES);
  int64_t t = m->bound[lane] + (int64_t)rnd(100000) - 500; /* a few below the bound already */
  assert_int_equal(pl__seen_reserve(&m->t, &m->heaps[lane]), 0);
  bool added = pl__seen_add(&m->t, &m->heaps[lane], lane, h, t);
  assert_int_equal(added, !e->present);
  if (added) {
    e->time_ms = t;
    e->lane = lane;
    e->present = true;
    m->present++;
  }
  (void)fresh;
}

static void model_expire(struct model *m, bool shrinking) {
  uint32_t lane = (uint32_t)rnd(LANES);
  m->bound[lane] += (int64_t)rnd(shrinking ? 30000 : 200);
  size_t want = 0;
  for (size_t i = 0; i < m->n_ref; i++) {
    struct ref *e = &m->ref[i];
    if (e->present && e->lane == lane && e->time_ms < m->bound[lane]) {
      e->present = false;
      want++;
    }
  }
  assert_int_equal(pl__seen_expire(&m->t, &m->heaps[lane], m->bound[lane]), want);
  m->present -= want;
  pl__seen_shrink(&m->t);
}

static void model_verify(const struct model *m) {
  const char *why = pl__seen_check(&m->t, m->hp, LANES);
  if (why)
    fail_msg("the finished ids' set is broken: %s", why);
  for (size_t i = 0; i < m->n_ref; i++)
    model_check_key(m, &m->ref[i]);
}

/* Backward-shift deletion is the riskiest code: 200,000 random inserts (new keys and keys held or
 * expired), lookups and expiries, through growth and shrinking, against a plain array. */
static void test_seen_random(void **state) {
  (void)state;
  struct model *m = calloc(1, sizeof(*m));
  assert_non_null(m);
  pl__seen_init(&m->t);
  for (int i = 0; i < LANES; i++)
    m->hp[i] = &m->heaps[i];
  m->ref = calloc(OPS, sizeof(*m->ref));
  assert_non_null(m->ref);
  rnd_state = 0x5eed5eed12345678ull;
  size_t max_n = 0, max_cap = 0, min_cap_after = SIZE_MAX, expiries = 0;
  for (size_t op = 0; op < OPS; op++) {
    bool shrinking = (op / PHASE) % 2 == 1;
    unsigned r = (unsigned)rnd(100);
    if (r < (shrinking ? 10u : 60u)) {
      struct ref *e = &m->ref[m->n_ref];
      new_key(m, m->n_ref, &e->h1, &e->h2);
      m->n_ref++;
      model_insert(m, e, true);
    } else if (r < 70 && m->n_ref > 0) {
      model_insert(m, &m->ref[rnd(m->n_ref)], false); /* held: refused; expired: back again */
    } else if (r < (shrinking ? 94u : 98u) && m->n_ref > 0) {
      model_check_key(m, &m->ref[rnd(m->n_ref)]);
    } else {
      model_expire(m, shrinking);
      expiries++;
    }
    assert_int_equal(m->t.n, m->present);
    max_n = m->t.n > max_n ? m->t.n : max_n;
    max_cap = m->t.cap > max_cap ? m->t.cap : max_cap;
    if (shrinking && op % PHASE == PHASE - 1)
      min_cap_after = m->t.cap < min_cap_after ? m->t.cap : min_cap_after;
    if (op % 2000 == 1999 || op % PHASE == PHASE - 1)
      model_verify(m);
  }
  model_verify(m);
  print_message("    %zu keys, %zu expiries; at most %zu held in %zu slots, %zu slots after a "
                "shrinking phase\n",
                m->n_ref, expiries, max_n, max_cap, min_cap_after);
  assert_true(max_n > 10000 && min_cap_after < max_cap / 4);
  for (int i = 0; i < LANES; i++)
    pl__seen_heap_free(&m->heaps[i]);
  pl__seen_free(&m->t);
  free(m->ref);
  free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_admit_attempt_outcome), cmocka_unit_test(test_dup_admit),
      cmocka_unit_test(test_admit_from_fields),     cmocka_unit_test(test_deliver_from_fields),
      cmocka_unit_test(test_dedupe_horizon),        cmocka_unit_test(test_dlq),
      cmocka_unit_test(test_decoding_errors),       cmocka_unit_test(test_number_text),
      cmocka_unit_test(test_dump_round_trip),       cmocka_unit_test(test_jobs_in_store),
      cmocka_unit_test(test_memory_cycle),          cmocka_unit_test(test_finished_id),
      cmocka_unit_test(test_expiry_bound),          cmocka_unit_test(test_seen_forms),
      cmocka_unit_test(test_seen_malformed),        cmocka_unit_test(test_siphash),
      cmocka_unit_test(test_seen_bytes_per_id),     cmocka_unit_test(test_seen_random),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
