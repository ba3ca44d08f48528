/* The JSON views of the state (src/state_json.c): a state built by applying records, each view
 * rendered and parsed back: delivery states and their fields, times, number text in rows, a
 * finished event, dead-letter paging, the summary's counts, cursors and customer sync jobs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/pipeline.h"
#include "csurelay/timefmt.h"
#include "state_json.h"

/* ---------------------------------------------------------------------------------------------- */
/* Fixture: a state built from records                                                            */
/* ---------------------------------------------------------------------------------------------- */

struct fx {
  struct pl_state *s;
  struct csr_jw jw;
  int64_t t0; /* 2026-11-22T10:00:00Z */
};

static void put(struct fx *f, uint8_t type, int enc) {
  const char *text;
  size_t len;
  assert_int_equal(enc, 0);
  assert_int_equal(csr_jw_finish(&f->jw, &text, &len), 0);
  int rc = pl_state_apply(f->s, type, text, len);
  if (rc != 0)
    fail_msg("apply %s: %s", pl_rec_name(type), pl_state_error(f->s));
  csr_jw_reset(&f->jw);
}

static void admit(struct fx *f, const char *id, const char *csu, int64_t t,
                  const char *const *sinks, size_t n) {
  char text[256];
  snprintf(text, sizeof(text),
           "{\"EventTransactionId\":\"%s\",\"AmountPaid\":184.2200000000000000,"
           "\"EventChannelId\":5637144592,\"ReceiptEmail\":\"ann@example.com\"}",
           id);
  struct pl_rec_admit a = {id, csu, "Checkout", t, t + 1500, sinks, n, text, strlen(text)};
  put(f, PL_REC_ADMIT, pl_rec_admit(&f->jw, &a));
}

static void attempt(struct fx *f, const char *id, const char *sink, unsigned next,
                    int64_t next_ms) {
  struct pl_rec_delivery d = {.id = id,
                              .sink = sink,
                              .attempt = next,
                              .next_ms = next_ms,
                              .status = 503,
                              .reason = "http_503",
                              .excerpt = "Service Unavailable"};
  put(f, PL_REC_ATTEMPT, pl_rec_attempt(&f->jw, &d));
}

static void outcome(struct fx *f, const char *id, const char *sink, enum sk_outcome o,
                    unsigned attempts, int64_t at_ms) {
  struct pl_rec_delivery d = {.id = id,
                              .sink = sink,
                              .outcome = o,
                              .attempt = attempts,
                              .at_ms = at_ms,
                              .status = o == SK_DEAD        ? 400
                                        : o == SK_DELIVERED ? 200
                                                            : 0,
                              .reason = o == SK_DEAD      ? "http_400"
                                        : o == SK_SKIPPED ? "no_email"
                                                          : NULL,
                              .excerpt = o == SK_DEAD ? "{\"error\":\"bad\"}" : NULL};
  put(f, PL_REC_OUTCOME, pl_rec_outcome(&f->jw, &d));
}

static const char *const THREE[] = {"cij", "mqtt", "webhook"};
static const char *const CIJ_WEBHOOK[] = {"cij", "webhook"};
static const char *const CIJ_MQTT[] = {"cij", "mqtt"};

/*
 * A  live: cij pending, mqtt waiting (attempt 3), webhook delivered
 * B  parked: cij dead (the first dead letter), webhook skipped
 * C  parked: cij dead
 * D  finished: cij delivered
 * E  live: cij dead then deleted, webhook pending
 * F  live: cij dead (the third dead letter), mqtt waiting
 */
static void fx_build(struct fx *f) {
  memset(f, 0, sizeof(*f));
  assert_int_equal(pl_state_create(NULL, &f->s), 0);
  assert_int_equal(csr_jw_init(&f->jw), 0);
  assert_int_equal(csr_time_parse("2026-11-22T10:00:00Z", &f->t0), 0);
  int64_t t = f->t0;
  put(f, PL_REC_CURSOR, pl_rec_cursor(&f->jw, "c1", "Checkout", t + 60000));
  put(f, PL_REC_CURSOR, pl_rec_cursor(&f->jw, "c2", "AddCartLines", t + 30250));
  admit(f, "A", "c1", t + 5007, THREE, 3);
  attempt(f, "A", "mqtt", 3, t + 99000);
  outcome(f, "A", "webhook", SK_DELIVERED, 1, t + 7000);
  admit(f, "B", "c1", t + 6000, CIJ_WEBHOOK, 2);
  outcome(f, "B", "cij", SK_DEAD, 10, t + 8000);
  outcome(f, "B", "webhook", SK_SKIPPED, 1, t + 8001);
  admit(f, "C", "c2", t + 6500, THREE, 1);
  outcome(f, "C", "cij", SK_DEAD, 1, t + 9000);
  admit(f, "D", "c2", t + 7000, THREE, 1);
  outcome(f, "D", "cij", SK_DELIVERED, 2, t + 9500);
  admit(f, "E", "c1", t + 7100, CIJ_WEBHOOK, 2);
  outcome(f, "E", "cij", SK_DEAD, 4, t + 9600);
  put(f, PL_REC_DLQ_DELETE, pl_rec_dlq_delete(&f->jw, "E", "cij"));
  admit(f, "F", "c1", t + 7200, CIJ_MQTT, 2);
  outcome(f, "F", "cij", SK_DEAD, 2, t + 9700);
  attempt(f, "F", "mqtt", 2, t + 12000);
}

static void fx_free(struct fx *f) {
  pl_state_destroy(f->s);
  csr_jw_free(&f->jw);
}

/* What the writer holds, parsed (the caller frees it). */
static yajl_val parsed(struct fx *f) {
  const char *text;
  size_t len;
  assert_int_equal(csr_jw_finish(&f->jw, &text, &len), 0);
  char err[128];
  yajl_val v = csr_json_parse(text, len, err, sizeof(err));
  if (v == NULL)
    fail_msg("%s in %.*s", err, (int)len, text);
  csr_jw_reset(&f->jw);
  return v;
}

static yajl_val event_view(struct fx *f, const char *id, bool with_row) {
  const struct pl_state_event *ev = pl_state_event(f->s, id);
  assert_non_null(ev);
  assert_int_equal(csr_state_json_event(&f->jw, ev, with_row), 0);
  return parsed(f);
}

static int64_t get_int(yajl_val obj, const char *key) {
  int64_t v;
  if (csr_json_get_int(obj, key, &v) != 0)
    fail_msg("no integer \"%s\"", key);
  return v;
}

static bool is_null(yajl_val obj, const char *key) {
  yajl_val v = csr_json_get(obj, key);
  return v != NULL && YAJL_IS_NULL(v);
}

/* The delivery of `sink` in an event view. */
static yajl_val delivery(yajl_val ev, const char *sink) {
  yajl_val ds = csr_json_get(ev, "deliveries");
  for (size_t i = 0; i < csr_json_len(ds); i++)
    if (strcmp(csr_json_get_str(csr_json_at(ds, i), "sink"), sink) == 0)
      return csr_json_at(ds, i);
  fail_msg("no delivery for %s", sink);
  return NULL;
}

/* ---------------------------------------------------------------------------------------------- */
/* Event                                                                                          */
/* ---------------------------------------------------------------------------------------------- */

static void test_event_live(void **state) {
  struct fx f;
  fx_build(&f);
  yajl_val v = event_view(&f, "A", true);
  assert_string_equal(csr_json_get_str(v, "id"), "A");
  assert_string_equal(csr_json_get_str(v, "csu"), "c1");
  assert_string_equal(csr_json_get_str(v, "type"), "Checkout");
  assert_string_equal(csr_json_get_str(v, "event_time"), "2026-11-22T10:00:05.007Z");
  assert_string_equal(csr_json_get_str(v, "admitted_at"), "2026-11-22T10:00:06.507Z");
  assert_true(YAJL_IS_FALSE(csr_json_get(v, "finished")));
  /* the row as stored: number text kept, strings as they were */
  yajl_val row = csr_json_get(v, "event");
  assert_non_null(row);
  assert_string_equal(csr_json_num_text(csr_json_get(row, "AmountPaid")), "184.2200000000000000");
  assert_string_equal(csr_json_num_text(csr_json_get(row, "EventChannelId")), "5637144592");
  assert_string_equal(csr_json_get_str(row, "ReceiptEmail"), "ann@example.com");
  /* deliveries in the route's order, each with its state's fields */
  yajl_val ds = csr_json_get(v, "deliveries");
  assert_int_equal(csr_json_len(ds), 3);
  assert_string_equal(csr_json_get_str(csr_json_at(ds, 0), "sink"), "cij");
  assert_string_equal(csr_json_get_str(csr_json_at(ds, 2), "sink"), "webhook");
  yajl_val d = delivery(v, "cij");
  assert_string_equal(csr_json_get_str(d, "state"), "pending");
  assert_int_equal(get_int(d, "attempt"), 1);
  assert_true(is_null(d, "status") && is_null(d, "reason") && is_null(d, "excerpt"));
  assert_null(csr_json_get(d, "attempts"));
  assert_null(csr_json_get(d, "next_attempt_at"));
  d = delivery(v, "mqtt");
  assert_string_equal(csr_json_get_str(d, "state"), "waiting");
  assert_int_equal(get_int(d, "attempt"), 3);
  assert_string_equal(csr_json_get_str(d, "next_attempt_at"), "2026-11-22T10:01:39.000Z");
  assert_int_equal(get_int(d, "status"), 503);
  assert_string_equal(csr_json_get_str(d, "reason"), "http_503");
  assert_string_equal(csr_json_get_str(d, "excerpt"), "Service Unavailable");
  assert_null(csr_json_get(d, "decided_at"));
  d = delivery(v, "webhook");
  assert_string_equal(csr_json_get_str(d, "state"), "delivered");
  assert_int_equal(get_int(d, "attempts"), 1);
  assert_string_equal(csr_json_get_str(d, "decided_at"), "2026-11-22T10:00:07.000Z");
  assert_int_equal(get_int(d, "status"), 200);
  assert_null(csr_json_get(d, "attempt"));
  csr_json_free(v);

  /* without the row */
  v = event_view(&f, "A", false);
  assert_null(csr_json_get(v, "event"));
  assert_int_equal(csr_json_len(csr_json_get(v, "deliveries")), 3);
  csr_json_free(v);
  fx_free(&f);
}

static void test_event_final_states(void **state) {
  struct fx f;
  fx_build(&f);
  yajl_val v = event_view(&f, "B", true);
  yajl_val d = delivery(v, "cij");
  assert_string_equal(csr_json_get_str(d, "state"), "dead");
  assert_int_equal(get_int(d, "attempts"), 10);
  assert_string_equal(csr_json_get_str(d, "decided_at"), "2026-11-22T10:00:08.000Z");
  assert_int_equal(get_int(d, "status"), 400);
  assert_string_equal(csr_json_get_str(d, "reason"), "http_400");
  assert_string_equal(csr_json_get_str(d, "excerpt"), "{\"error\":\"bad\"}");
  d = delivery(v, "webhook");
  assert_string_equal(csr_json_get_str(d, "state"), "skipped");
  assert_string_equal(csr_json_get_str(d, "reason"), "no_email");
  assert_true(is_null(d, "status"));
  assert_non_null(csr_json_get(v, "event")); /* a parked event keeps its row */
  csr_json_free(v);
  v = event_view(&f, "E", true);
  d = delivery(v, "cij");
  assert_string_equal(csr_json_get_str(d, "state"), "deleted");
  assert_int_equal(get_int(d, "attempts"), 4);
  assert_string_equal(csr_json_get_str(delivery(v, "webhook"), "state"), "pending");
  csr_json_free(v);
  fx_free(&f);
}

static void test_event_finished(void **state) {
  struct fx f;
  fx_build(&f);
  yajl_val v = event_view(&f, "D", true);
  assert_string_equal(csr_json_get_str(v, "id"), "D");
  assert_string_equal(csr_json_get_str(v, "csu"), "c2");
  assert_string_equal(csr_json_get_str(v, "event_time"), "2026-11-22T10:00:07.000Z");
  assert_true(YAJL_IS_TRUE(csr_json_get(v, "finished")));
  assert_null(csr_json_get(v, "event"));
  assert_null(csr_json_get(v, "deliveries"));
  csr_json_free(v);
  /* an id known only from a compacted file (SEEN): no admission time */
  put(&f, PL_REC_SEEN, pl_rec_seen(&f.jw, "S", "c1", "Checkout", -1));
  v = event_view(&f, "S", true);
  assert_true(is_null(v, "admitted_at"));
  assert_string_equal(csr_json_get_str(v, "event_time"), "1969-12-31T23:59:59.999Z");
  csr_json_free(v);
  assert_int_equal(csr_state_json_event(&f.jw, NULL, true), UV_EINVAL);
  assert_int_equal(csr_state_json_event(NULL, pl_state_event(f.s, "D"), true), UV_EINVAL);
  fx_free(&f);
}

/* ---------------------------------------------------------------------------------------------- */
/* Dead letters                                                                                   */
/* ---------------------------------------------------------------------------------------------- */

static yajl_val dlq_view(struct fx *f, size_t offset, size_t limit) {
  assert_int_equal(csr_state_json_dlq(&f->jw, f->s, offset, limit), 0);
  return parsed(f);
}

/* The ids of the page's items, joined with ','. */
static void page_ids(yajl_val v, char *out, size_t len) {
  yajl_val items = csr_json_get(v, "items");
  assert_true(items != NULL && YAJL_IS_ARRAY(items));
  out[0] = '\0';
  for (size_t i = 0; i < csr_json_len(items); i++) {
    size_t used = strlen(out);
    snprintf(out + used, len - used, "%s%s", i ? "," : "",
             csr_json_get_str(csr_json_at(items, i), "id"));
  }
}

static void test_dlq(void **state) {
  struct fx f;
  fx_build(&f);
  yajl_val v = dlq_view(&f, 0, 100);
  assert_int_equal(get_int(v, "total"), 3);
  assert_int_equal(get_int(v, "offset"), 0);
  char ids[64];
  page_ids(v, ids, sizeof(ids));
  assert_string_equal(ids, "B,C,F"); /* oldest first; E's was deleted */
  yajl_val it = csr_json_at(csr_json_get(v, "items"), 0);
  assert_string_equal(csr_json_get_str(it, "sink"), "cij");
  assert_string_equal(csr_json_get_str(it, "csu"), "c1");
  assert_string_equal(csr_json_get_str(it, "type"), "Checkout");
  assert_string_equal(csr_json_get_str(it, "event_time"), "2026-11-22T10:00:06.000Z");
  assert_int_equal(get_int(it, "attempts"), 10);
  assert_int_equal(get_int(it, "status"), 400);
  assert_string_equal(csr_json_get_str(it, "reason"), "http_400");
  assert_string_equal(csr_json_get_str(it, "excerpt"), "{\"error\":\"bad\"}");
  assert_string_equal(csr_json_get_str(it, "dead_at"), "2026-11-22T10:00:08.000Z");
  assert_null(csr_json_get(it, "event")); /* no row in the list */
  csr_json_free(v);

  struct {
    size_t offset, limit;
    const char *ids;
  } pages[] = {{0, 1, "B"}, {1, 1, "C"}, {1, 2, "C,F"}, {2, 5, "F"},
               {3, 5, ""},  {9, 1, ""},  {0, 0, ""},    {1, SIZE_MAX, "C,F"}};
  for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
    v = dlq_view(&f, pages[i].offset, pages[i].limit);
    assert_int_equal(get_int(v, "total"), 3);
    assert_int_equal(get_int(v, "offset"), (int64_t)pages[i].offset);
    page_ids(v, ids, sizeof(ids));
    assert_string_equal(ids, pages[i].ids);
    csr_json_free(v);
  }

  /* a replayed dead letter leaves the queue; a new one joins at the end */
  put(&f, PL_REC_DLQ_REPLAY, pl_rec_dlq_replay(&f.jw, "B", "cij", f.t0 + 20000));
  outcome(&f, "A", "cij", SK_DEAD, 10, f.t0 + 30000);
  v = dlq_view(&f, 0, 10);
  assert_int_equal(get_int(v, "total"), 3);
  page_ids(v, ids, sizeof(ids));
  assert_string_equal(ids, "C,F,A");
  csr_json_free(v);
  assert_int_equal(csr_state_json_dlq(&f.jw, NULL, 0, 1), UV_EINVAL);
  fx_free(&f);
}

/* ---------------------------------------------------------------------------------------------- */
/* Summary                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

static void test_summary(void **state) {
  struct fx f;
  fx_build(&f);
  int64_t now = f.t0 + 60000 + 90500;
  assert_int_equal(csr_state_json_summary(&f.jw, f.s, now), 0);
  yajl_val v = parsed(&f);
  assert_int_equal(get_int(v, "live"), 5);
  assert_int_equal(get_int(v, "finished"), 1);
  assert_int_equal(get_int(v, "parked"), 2);
  assert_int_equal(get_int(v, "dead_letters"), 3);
  assert_int_equal(get_int(v, "pending"), 2);
  assert_int_equal(get_int(v, "waiting"), 2);
  struct pl_state_stats st;
  pl_state_stats(f.s, &st);
  assert_int_equal(get_int(v, "row_bytes"), (int64_t)st.row_bytes);
  assert_int_equal(get_int(v, "live_bytes"), (int64_t)st.live_bytes);
  assert_true(st.row_bytes > 0 && st.live_bytes > st.row_bytes);
  yajl_val cs = csr_json_get(v, "cursors");
  assert_int_equal(csr_json_len(cs), 2);
  yajl_val c = csr_json_at(cs, 0);
  assert_string_equal(csr_json_get_str(c, "csu"), "c1");
  assert_string_equal(csr_json_get_str(c, "type"), "Checkout");
  assert_string_equal(csr_json_get_str(c, "cursor"), "2026-11-22T10:01:00.000Z");
  assert_int_equal(get_int(c, "lag_s"), 90);
  c = csr_json_at(cs, 1);
  assert_string_equal(csr_json_get_str(c, "csu"), "c2");
  assert_string_equal(csr_json_get_str(c, "type"), "AddCartLines");
  assert_string_equal(csr_json_get_str(c, "cursor"), "2026-11-22T10:00:30.250Z");
  assert_int_equal(get_int(c, "lag_s"), 120);
  csr_json_free(v);
  /* a cursor ahead of the clock lags 0, not a negative number */
  assert_int_equal(csr_state_json_summary(&f.jw, f.s, f.t0), 0);
  v = parsed(&f);
  assert_int_equal(get_int(csr_json_at(csr_json_get(v, "cursors"), 0), "lag_s"), 0);
  csr_json_free(v);
  fx_free(&f);

  /* an empty state */
  struct pl_state *s;
  struct csr_jw jw;
  assert_int_equal(pl_state_create(NULL, &s), 0);
  assert_int_equal(csr_jw_init(&jw), 0);
  assert_int_equal(csr_state_json_summary(&jw, s, 0), 0);
  const char *text;
  size_t len;
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
  assert_string_equal(text, "{\"live\":0,\"finished\":0,\"parked\":0,\"dead_letters\":0,"
                            "\"pending\":0,\"waiting\":0,\"row_bytes\":0,\"live_bytes\":0,"
                            "\"cursors\":[],\"jobs\":{\"pending\":0,\"ended\":0,\"accounts\":0}}");
  /* the customer sync jobs the state holds */
  const char *job = "{\"id\":\"j1\",\"email\":\"a@b.co\",\"at_ms\":1,\"req\":{}}";
  const char *map = "{\"email\":\"a@b.co\",\"account\":\"C1\"}";
  assert_int_equal(pl_state_apply(s, PL_REC_JOB, job, strlen(job)), 0);
  assert_int_equal(pl_state_apply(s, PL_REC_CUSTOMER, map, strlen(map)), 0);
  csr_jw_reset(&jw);
  assert_int_equal(csr_state_json_summary(&jw, s, 0), 0);
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
  assert_non_null(strstr(text, ",\"jobs\":{\"pending\":1,\"ended\":0,\"accounts\":1}}"));
  csr_jw_free(&jw);
  pl_state_destroy(s);
}

static void test_time(void **state) {
  char buf[CSR_TIME_BUF];
  assert_int_equal(csr_state_json_time(0, buf, sizeof(buf)), 24);
  assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
  assert_int_equal(csr_state_json_time(-1, buf, sizeof(buf)), 24);
  assert_string_equal(buf, "1969-12-31T23:59:59.999Z");
  int64_t ms;
  assert_int_equal(csr_time_parse("9999-12-31T23:59:59.5Z", &ms), 0);
  assert_int_equal(csr_state_json_time(ms, buf, sizeof(buf)), 24);
  assert_string_equal(buf, "9999-12-31T23:59:59.500Z");
  assert_int_equal(csr_state_json_time(ms + 1000, buf, sizeof(buf)), 0); /* year 10000 */
  assert_string_equal(buf, "");
  assert_int_equal(csr_state_json_time(0, buf, 24), 0); /* no room for the NUL */
  assert_string_equal(buf, "");
}

/* The views compose: each is one value, so a caller can put several in one document. */
static void test_views_compose(void **state) {
  struct fx f;
  fx_build(&f);
  csr_jw_obj(&f.jw);
  csr_jw_key(&f.jw, "summary");
  assert_int_equal(csr_state_json_summary(&f.jw, f.s, f.t0), 0);
  csr_jw_key(&f.jw, "dlq");
  assert_int_equal(csr_state_json_dlq(&f.jw, f.s, 0, 2), 0);
  csr_jw_key(&f.jw, "event");
  assert_int_equal(csr_state_json_event(&f.jw, pl_state_event(f.s, "C"), true), 0);
  csr_jw_obj_end(&f.jw);
  yajl_val v = parsed(&f);
  assert_int_equal(get_int(csr_json_get(v, "summary"), "live"), 5);
  assert_int_equal(csr_json_len(csr_json_path(v, "dlq.items")), 2);
  assert_string_equal(csr_json_get_str(csr_json_get(v, "event"), "id"), "C");
  csr_json_free(v);
  fx_free(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_event_live),     cmocka_unit_test(test_event_final_states),
      cmocka_unit_test(test_event_finished), cmocka_unit_test(test_dlq),
      cmocka_unit_test(test_summary),        cmocka_unit_test(test_views_compose),
      cmocka_unit_test(test_time),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
