/* The state model: admissions, attempts and outcomes finishing events, the dedupe horizon, the
 * dead-letter queue, refusals and decoding errors, number text in rows, a dump round trip through
 * a real store (compaction, reopen, replay, field-by-field comparison) and a 100,000-event cycle
 * that leaves nothing held. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "csurelay/pipeline.h"

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
  yajl_val row = csr_json_parse(row_text, strlen(row_text), NULL, 0);
  assert_non_null(row);
  struct pl_rec_admit a = {id, csu, "Checkout", t, t + 1000, SINKS, n_sinks, row};
  int rc = put(h, PL_REC_ADMIT, pl_rec_admit(&h->jw, &a));
  csr_json_free(row);
  return rc;
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
  yajl_val v = csr_json_parse(ev->row, ev->row_len, NULL, 0);
  assert_non_null(v);
  struct pl_rec_admit a = {"e2", "c1", "T", 1, 2, SINKS, 1, v};
  assert_int_equal(put(&h, PL_REC_ADMIT, pl_rec_admit(&h.jw, &a)), 0);
  csr_json_free(v);
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
    yajl_val v = csr_json_parse(row, strlen(row), NULL, 0);
    size_t n_sinks = 1 + i % 3;
    struct pl_rec_admit a = {ids[i],     csu,   types[i % 2], (int64_t)(i * 100),
                             (int64_t)i, SINKS, n_sinks,      v};
    assert_int_equal(put(&x, PL_REC_ADMIT, pl_rec_admit(&x.jw, &a)), 0);
    csr_json_free(v);
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
  char p[512];
  DIR *d = opendir(e.dir);
  struct dirent *de;
  while (d && (de = readdir(d)) != NULL)
    if (de->d_name[0] != '.') {
      snprintf(p, sizeof(p), "%s/%s", e.dir, de->d_name);
      unlink(p);
    }
  if (d)
    closedir(d);
  assert_int_equal(rmdir(e.dir), 0);
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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_admit_attempt_outcome), cmocka_unit_test(test_dup_admit),
      cmocka_unit_test(test_dedupe_horizon),        cmocka_unit_test(test_dlq),
      cmocka_unit_test(test_decoding_errors),       cmocka_unit_test(test_number_text),
      cmocka_unit_test(test_dump_round_trip),       cmocka_unit_test(test_memory_cycle),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
