/* The ledger: generated events stay missing until delivered; trigger calls match by binding and
 * are checked field by field; webhook deliveries match by Idempotency-Key; duplicates, unknown
 * deliveries, skipped Checkouts without an email, duplicate contacts and latency percentiles are
 * all visible, through the C accessors and through GET /ledger, /ledger/diff and /ledger/events. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "csurelay/timefmt.h"
#include "simtest.h"

#define T0 1721830622000LL /* 2024-07-24T14:17:02Z */

/* An event at T0 + `offset_ms`; Checkouts get binding "b{n}", amount "184.2200000000000000". */
static struct sim_event make_event(unsigned csu, enum sim_event_type type, unsigned n,
                                   int64_t offset_ms, const char *email) {
  struct sim_event ev;
  memset(&ev, 0, sizeof(ev));
  ev.csu = csu;
  ev.type = type;
  snprintf(ev.txn, sizeof(ev.txn), "cart-%u", n);
  ev.time_ms = T0 + offset_ms;
  csr_time_format(ev.time_ms, ev.time_text, sizeof(ev.time_text));
  ev.commit_ms = ev.time_ms + 5;
  snprintf(ev.data_area, sizeof(ev.data_area), SIM_DATA_AREA);
  if (type == SIM_CHECKOUT) {
    snprintf(ev.binding, sizeof(ev.binding), "b%u", n);
    snprintf(ev.email, sizeof(ev.email), "%s", email ? email : "");
    snprintf(ev.amount, sizeof(ev.amount), "184.2200000000000000");
  }
  return ev;
}

/* A trigger body as the relay's cij sink sends it for `ev`, with an optional wrong amount. */
static yajl_val trigger_body(const struct sim_event *ev, const char *amount) {
  char body[1024];
  snprintf(body, sizeof(body),
           "{\"msdynmkt_bindingid\":\"%s\",\"msdynmkt_amountpaid\":%s,"
           "\"msdynmkt_receiptemail\":\"%s\",\"msdynmkt_signaltimestamp\":\"%s\"}",
           ev->binding, amount ? amount : ev->amount, ev->email, ev->time_text);
  yajl_val v = csr_json_parse(body, strlen(body), NULL, 0);
  assert_non_null(v);
  return v;
}

static void deliver(struct sim_ledger *l, const struct sim_event *ev, const char *amount,
                    int64_t at_ms) {
  yajl_val v = trigger_body(ev, amount);
  sim_ledger_trigger(l, SIM_DEFAULT_TRIGGER, v, at_ms);
  csr_json_free(v);
}

static struct sim_ledger *new_ledger(void) {
  struct sim_ledger *l = NULL;
  assert_int_equal(sim_ledger_create(NULL, &l), 0);
  return l;
}

static void test_event_id(void **state) {
  struct sim_event ev = make_event(3, SIM_ADDCARTLINES, 7, 160, NULL);
  char id[256];
  sim_event_id(&ev, id, sizeof(id));
  assert_string_equal(id, "csu3|usrt|AddCartLines|cart-7|2024-07-24T14:17:02.16Z");
}

static void test_trigger_missing_until_delivered(void **state) {
  struct sim_ledger *l = new_ledger();
  struct sim_event a = make_event(0, SIM_CHECKOUT, 1, 0, "ann@example.com");
  struct sim_event guest = make_event(0, SIM_CHECKOUT, 2, 10, NULL);
  struct sim_event cart = make_event(0, SIM_ADDCARTLINES, 1, -50, NULL);
  sim_ledger_generated(l, &a);
  sim_ledger_generated(l, &guest);
  sim_ledger_generated(l, &cart);

  struct sim_ledger_diff d;
  assert_int_equal(sim_ledger_diff(l, "trigger", -1, 0, &d), 0);
  assert_int_equal(d.expected, 1);
  assert_int_equal(d.missing, 1);
  assert_int_equal(d.delivered, 0);
  assert_int_equal(d.skipped_no_email, 1);

  deliver(l, &a, NULL, a.time_ms + 250);
  assert_int_equal(sim_ledger_diff(l, "trigger", -1, 0, &d), 0);
  assert_int_equal(d.missing, 0);
  assert_int_equal(d.delivered, 1);
  assert_int_equal(d.duplicated, 0);
  assert_int_equal(d.max, 250);

  struct sim_ledger_sink_counts c;
  assert_int_equal(sim_ledger_sink_counts(l, "trigger", &c), 0);
  assert_int_equal(c.received, 1);
  assert_int_equal(c.unique, 1);
  assert_int_equal(c.mismatched, 0);

  struct sim_ledger_counts all;
  sim_ledger_counts(l, &all);
  assert_int_equal(all.generated, 3);
  assert_int_equal(all.checkout, 2);
  assert_int_equal(all.addcartlines, 1);
  sim_ledger_destroy(l);
}

static void test_trigger_duplicate_mismatch_unknown(void **state) {
  struct sim_ledger *l = new_ledger();
  struct sim_event a = make_event(1, SIM_CHECKOUT, 1, 0, "ann@example.com");
  struct sim_event b = make_event(1, SIM_CHECKOUT, 2, 0, "bob@example.com");
  struct sim_event guest = make_event(1, SIM_CHECKOUT, 3, 0, "");
  sim_ledger_generated(l, &a);
  sim_ledger_generated(l, &b);
  sim_ledger_generated(l, &guest);

  deliver(l, &a, NULL, T0 + 100);
  deliver(l, &a, NULL, T0 + 900);     /* a retry that was not needed */
  deliver(l, &b, "184.22", T0 + 100); /* digits lost on the way: a mismatch */
  deliver(l, &guest, NULL, T0 + 100); /* the relay must skip it */
  struct sim_event stray = make_event(1, SIM_CHECKOUT, 99, 0, "x@example.com");
  deliver(l, &stray, NULL, T0 + 100);

  struct sim_ledger_sink_counts c;
  assert_int_equal(sim_ledger_sink_counts(l, "trigger", &c), 0);
  assert_int_equal(c.received, 5);
  assert_int_equal(c.unique, 3);
  assert_int_equal(c.duplicates, 1);
  assert_int_equal(c.unknown, 1);
  assert_int_equal(c.mismatched, 1);

  struct sim_ledger_diff d;
  assert_int_equal(sim_ledger_diff(l, "trigger", -1, 0, &d), 0);
  assert_int_equal(d.expected, 2);
  assert_int_equal(d.delivered, 2);
  assert_int_equal(d.duplicated, 1);
  assert_int_equal(d.skipped_no_email, 1);
  assert_int_equal(d.unexpected, 1);
  assert_int_equal(d.max, 100); /* the first receipt counts, not the repeat */
  sim_ledger_destroy(l);
}

static void test_trigger_fields_compared_as_values(void **state) {
  struct sim_ledger *l = new_ledger();
  struct sim_event a = make_event(0, SIM_CHECKOUT, 1, 160, "ann@example.com");
  sim_ledger_generated(l, &a);
  /* The same instant written another way is no mismatch. */
  const char *same = "{\"msdynmkt_bindingid\":\"b1\",\"msdynmkt_amountpaid\":184.2200000000000000,"
                     "\"msdynmkt_receiptemail\":\"ann@example.com\","
                     "\"msdynmkt_signaltimestamp\":\"2024-07-24T16:17:02.1600000+02:00\"}";
  yajl_val v = csr_json_parse(same, strlen(same), NULL, 0);
  sim_ledger_trigger(l, SIM_DEFAULT_TRIGGER, v, T0);
  csr_json_free(v);
  /* Processing time instead of event time (W-L5), the amount as a string, another email. */
  const char *bad = "{\"msdynmkt_bindingid\":\"b1\",\"msdynmkt_amountpaid\":\"184.22\","
                    "\"msdynmkt_receiptemail\":\"other@example.com\","
                    "\"msdynmkt_signaltimestamp\":\"2024-07-24T14:20:00Z\"}";
  v = csr_json_parse(bad, strlen(bad), NULL, 0);
  sim_ledger_trigger(l, SIM_DEFAULT_TRIGGER, v, T0);
  csr_json_free(v);
  struct sim_ledger_sink_counts c;
  assert_int_equal(sim_ledger_sink_counts(l, "trigger", &c), 0);
  assert_int_equal(c.received, 2);
  assert_int_equal(c.mismatched, 1); /* one delivery, however many of its fields differ */
  sim_ledger_destroy(l);
}

static void test_latency_percentiles(void **state) {
  struct sim_ledger *l = new_ledger();
  for (unsigned i = 1; i <= 100; i++) {
    struct sim_event ev = make_event(0, SIM_CHECKOUT, i, i * 1000, "p@example.com");
    sim_ledger_generated(l, &ev);
    deliver(l, &ev, NULL, ev.time_ms + (int64_t)(101 - i) * 10); /* 10 .. 1000 ms */
  }
  struct sim_ledger_diff d;
  assert_int_equal(sim_ledger_diff(l, "trigger", SIM_CHECKOUT, 0, &d), 0);
  assert_int_equal(d.delivered, 100);
  assert_int_equal(d.p50, 500);
  assert_int_equal(d.p90, 900);
  assert_int_equal(d.p99, 990);
  assert_int_equal(d.max, 1000);
  sim_ledger_destroy(l);
}

static void test_diff_filters(void **state) {
  struct sim_ledger *l = new_ledger();
  for (unsigned i = 0; i < 10; i++) {
    struct sim_event ev =
        make_event(0, i % 2 ? SIM_CHECKOUT : SIM_ADDCARTLINES, i, i * 1000, "f@example.com");
    sim_ledger_generated(l, &ev);
  }
  struct sim_ledger_diff d;
  assert_int_equal(sim_ledger_diff(l, "webhook:audit", -1, 0, &d), 0);
  assert_int_equal(d.expected, 10); /* a receiver that never got anything misses everything */
  assert_int_equal(d.missing, 10);
  assert_int_equal(sim_ledger_diff(l, "webhook:audit", SIM_ADDCARTLINES, 0, &d), 0);
  assert_int_equal(d.expected, 5);
  /* Committed before T0 + 4.5 s: events 0..4, of which 1 and 3 are Checkouts. */
  assert_int_equal(sim_ledger_diff(l, "webhook:audit", -1, T0 + 4500, &d), 0);
  assert_int_equal(d.expected, 5);
  assert_int_equal(sim_ledger_diff(l, "trigger", -1, T0 + 4500, &d), 0);
  assert_int_equal(d.expected, 2);
  assert_int_equal(sim_ledger_diff(l, "trigger", SIM_ADDCARTLINES, 0, &d), 0);
  assert_int_equal(d.expected, 0);
  assert_int_equal(sim_ledger_diff(l, "mqtt", -1, 0, &d), -EINVAL);
  assert_int_equal(sim_ledger_diff(l, "webhook:", -1, 0, &d), -EINVAL);
  struct sim_ledger_sink_counts c;
  assert_int_equal(sim_ledger_sink_counts(l, "webhook:audit", &c), -ENOENT);
  sim_ledger_destroy(l);
}

static void test_contacts_customers_requests_reset(void **state) {
  struct sim_ledger *l = new_ledger();
  sim_ledger_contact(l, "Ann@Example.com", "c1");
  sim_ledger_contact(l, "ann@example.COM", "c2"); /* the same person twice: a duplicate */
  sim_ledger_contact(l, "bob@example.com", "c3");
  sim_ledger_customer(l, "ann@example.com", "C001", true);
  sim_ledger_customer(l, "ANN@example.com", "C001", false);
  sim_ledger_request(l, "search", 200);
  sim_ledger_request(l, "search", 200);
  sim_ledger_request(l, "search", 429);
  struct sim_event ev = make_event(0, SIM_ADDCARTLINES, 1, 0, NULL);
  sim_ledger_generated(l, &ev);
  sim_ledger_generated(l, &ev);

  struct sim_ledger_counts c;
  sim_ledger_counts(l, &c);
  assert_int_equal(c.contacts_created, 3);
  assert_int_equal(c.contact_emails, 2);
  assert_int_equal(c.duplicate_emails, 1);
  assert_int_equal(c.customers_created, 1);
  assert_int_equal(c.customers_updated, 1);
  assert_int_equal(c.generated, 1);
  assert_int_equal(c.repeated, 1);
  assert_int_equal(sim_ledger_requests(l, "search", 200), 2);
  assert_int_equal(sim_ledger_requests(l, "search", 429), 1);
  assert_int_equal(sim_ledger_requests(l, "order", 200), 0);

  assert_int_equal(sim_ledger_reset(l), 0);
  sim_ledger_counts(l, &c);
  assert_int_equal(c.generated, 0);
  assert_int_equal(c.contacts_created, 0);
  assert_int_equal(c.contact_emails, 0);
  assert_int_equal(sim_ledger_requests(l, "search", 200), 0);
  sim_ledger_generated(l, &ev); /* usable again after the reset */
  sim_ledger_counts(l, &c);
  assert_int_equal(c.generated, 1);
  sim_ledger_destroy(l);
}

static void test_many_events(void **state) {
  struct sim_ledger *l = new_ledger();
  for (unsigned i = 0; i < 50000; i++) {
    struct sim_event ev = make_event(i % 4, i % 3 ? SIM_ADDCARTLINES : SIM_CHECKOUT, i, i,
                                     i % 5 ? "m@example.com" : "");
    sim_ledger_generated(l, &ev);
    if (i % 7 == 0 && ev.type == SIM_CHECKOUT)
      deliver(l, &ev, NULL, ev.time_ms + 1);
  }
  struct sim_ledger_counts c;
  sim_ledger_counts(l, &c);
  assert_int_equal(c.generated, 50000);
  assert_int_equal(c.repeated, 0);
  struct sim_ledger_diff d;
  assert_int_equal(sim_ledger_diff(l, "trigger", -1, 0, &d), 0);
  /* Checkouts: i % 3 == 0 (16667), 3334 of them without an email (i % 5 == 0); delivered: also
   * i % 7 == 0, 1904 with an email and 477 without (which the relay should have skipped). */
  assert_int_equal(d.expected + d.skipped_no_email, 16667);
  assert_int_equal(d.skipped_no_email, 3334);
  assert_int_equal(d.delivered, 1904);
  assert_int_equal(d.unexpected, 477);
  sim_ledger_destroy(l);
}

/* ---------------------------------------------------------------------------------------------- */
/* Over HTTP */
/* ---------------------------------------------------------------------------------------------- */

static int64_t get_int(yajl_val obj, const char *path) {
  yajl_val v = csr_json_path(obj, path);
  assert_non_null(v);
  assert_true(YAJL_IS_INTEGER(v));
  return YAJL_GET_INTEGER(v);
}

/* GETs `path`; the answer must be 200 with a JSON body. */
static void get_ok(struct st *t, const char *path, struct st_resp *r) {
  st_call(t, "GET", path, NULL, NULL, 0, r);
  assert_int_equal(r->status, 200);
  assert_non_null(r->json);
}

/* POSTs a webhook delivery for `id` to /hooks/{name}; returns the status. */
static long post_hook(struct st *t, const char *name, const char *key, const char *id,
                      const char *details) {
  char path[128], body[1024], header[300];
  struct st_resp r;
  snprintf(path, sizeof(path), "/hooks/%s", name);
  snprintf(body, sizeof(body),
           "{\"EventId\":\"%s\",\"EventDetails\":%s,\"OrderDetails\":null,"
           "\"CustomerDetails\":null}",
           id, details);
  snprintf(header, sizeof(header), "Idempotency-Key: %s", key ? key : "");
  const char *headers[] = {header, NULL};
  st_call(t, "POST", path, key ? headers : NULL, body, 0, &r);
  long status = r.status;
  if (status == 200)
    assert_string_equal(r.body, "{}");
  st_resp_free(&r);
  return status;
}

/* A sim with one AddCartLines (delivered twice to "audit") and one Checkout (never delivered),
 * one unknown delivery and four rejected ones. */
static void webhook_fixture(struct st *t, char *id, char *co_id, size_t len) {
  st_start(t, 1, 0, NULL);
  struct sim_event ev = make_event(0, SIM_ADDCARTLINES, 1, 0, NULL);
  struct sim_event co = make_event(0, SIM_CHECKOUT, 1, 10, "ann@example.com");
  sim_ledger_generated(t->sim.ledger, &ev);
  sim_ledger_generated(t->sim.ledger, &co);
  sim_event_id(&ev, id, len);
  sim_event_id(&co, co_id, len);
  char details[512];
  snprintf(details, sizeof(details),
           "{\"EventTransactionId\":\"cart-1\",\"EventDateTime\":\"%s\",\"EventType\":"
           "\"AddCartLines\",\"EventDataAreaId\":\"usrt\"}",
           ev.time_text);
  const char *stray = "csu0|usrt|Checkout|nope|x";
  assert_int_equal(post_hook(t, "audit", id, id, details), 200);
  assert_int_equal(post_hook(t, "audit", id, id, details), 200);      /* a duplicate */
  assert_int_equal(post_hook(t, "audit", stray, stray, "{}"), 200);   /* counted unknown */
  assert_int_equal(post_hook(t, "audit", NULL, id, details), 400);    /* no key */
  assert_int_equal(post_hook(t, "audit", "other", id, details), 400); /* key != EventId */
  assert_int_equal(post_hook(t, "audit", id, id, "[]"), 400);         /* no EventDetails */
  /* not JSON after the two members the receiver reads: the whole body is checked */
  assert_int_equal(post_hook(t, "audit", id, id, "{}} x"), 400);
}

static void test_http_webhook_counts(void **state) {
  struct st t;
  char id[256], co_id[256];
  webhook_fixture(&t, id, co_id, sizeof(id));
  struct st_resp r;
  get_ok(&t, "/ledger", &r);
  assert_int_equal(get_int(r.json, "generated.total"), 2);
  assert_int_equal(get_int(r.json, "generated.Checkout"), 1);
  assert_int_equal(get_int(r.json, "generated.AddCartLines"), 1);
  yajl_val audit = csr_json_path(r.json, "webhook.audit");
  assert_int_equal(get_int(audit, "received"), 3);
  assert_int_equal(get_int(audit, "unique"), 1);
  assert_int_equal(get_int(audit, "duplicates"), 1);
  assert_int_equal(get_int(audit, "unknown"), 1);
  assert_int_equal(get_int(audit, "mismatched"), 0);
  assert_int_equal(get_int(audit, "rejected"), 4);
  assert_int_equal(get_int(r.json, "trigger.received"), 0);
  assert_int_equal(get_int(r.json, "contacts.duplicate_emails"), 0);
  assert_int_equal(get_int(r.json, "customers.created"), 0);
  assert_int_equal(get_int(r.json, "requests.webhook.200"), 3);
  assert_int_equal(get_int(r.json, "requests.webhook.400"), 4);
  st_resp_free(&r);
  st_stop(&t);
}

static void test_http_diff(void **state) {
  struct st t;
  char id[256], co_id[256];
  webhook_fixture(&t, id, co_id, sizeof(id));
  struct st_resp r;
  get_ok(&t, "/ledger/diff?sink=webhook%3Aaudit", &r);
  assert_int_equal(get_int(r.json, "expected"), 2);
  assert_int_equal(get_int(r.json, "delivered"), 1);
  assert_int_equal(get_int(r.json, "missing_count"), 1);
  assert_string_equal(csr_json_str(csr_json_at(csr_json_get(r.json, "missing"), 0)), co_id);
  yajl_val dup = csr_json_at(csr_json_get(r.json, "duplicated"), 0);
  assert_string_equal(csr_json_get_str(dup, "id"), id);
  assert_int_equal(get_int(dup, "count"), 2);
  assert_int_equal(csr_json_len(csr_json_get(r.json, "unknown_ids")), 1);
  assert_non_null(csr_json_path(r.json, "latency_ms.p99"));
  st_resp_free(&r);

  get_ok(&t, "/ledger/diff?sink=webhook:audit&type=AddCartLines", &r);
  assert_int_equal(get_int(r.json, "expected"), 1);
  assert_int_equal(get_int(r.json, "missing_count"), 0);
  st_resp_free(&r);
  get_ok(&t, "/ledger/diff?sink=trigger", &r);
  assert_int_equal(get_int(r.json, "expected"), 1);
  assert_int_equal(get_int(r.json, "missing_count"), 1);
  assert_int_equal(get_int(r.json, "skipped_no_email"), 0);
  st_resp_free(&r);
  get_ok(&t, "/ledger/diff?sink=webhook:audit&from_ms=1721830622010", &r); /* the Checkout only */
  assert_int_equal(get_int(r.json, "expected"), 1);
  assert_int_equal(get_int(r.json, "missing_count"), 1);
  st_resp_free(&r);
  const char *bad[] = {"/ledger/diff", "/ledger/diff?sink=kafka",
                       "/ledger/diff?sink=trigger&type=Refund",
                       "/ledger/diff?sink=trigger&until_ms=soon"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    st_call(&t, "GET", bad[i], NULL, NULL, 0, &r);
    assert_int_equal(r.status, 400);
    assert_non_null(csr_json_get_str(r.json, "error"));
    st_resp_free(&r);
  }
  st_stop(&t);
}

/* /ledger/receipts: one CSV row per record the diff expects, with the first receipt, the count and
 * the id; from_ms and until_ms bound the commit times. */
static void test_http_receipts(void **state) {
  struct st t;
  char id[256], co_id[256], want[512];
  const char *head = "event_ms,commit_ms,first_ms,count,id\n";
  webhook_fixture(&t, id, co_id, sizeof(id));
  struct st_resp r;
  st_call(&t, "GET", "/ledger/receipts?sink=webhook:audit", NULL, NULL, 0, &r);
  assert_int_equal(r.status, 200);
  assert_int_equal(strncmp(r.body, head, strlen(head)), 0);
  long long ev_ms, commit_ms, first_ms;
  unsigned count;
  char got_id[256];
  assert_int_equal(sscanf(r.body + strlen(head), "%lld,%lld,%lld,%u,%255[^\n]", &ev_ms, &commit_ms,
                          &first_ms, &count, got_id),
                   5);
  assert_int_equal(ev_ms, T0);
  assert_int_equal(commit_ms, T0 + 5);
  assert_true(first_ms > 0);
  assert_int_equal(count, 2); /* the AddCartLines, delivered twice */
  assert_string_equal(got_id, id);
  snprintf(want, sizeof(want), "%lld,%lld,0,0,%s\n", T0 + 10, T0 + 15, co_id);
  assert_non_null(strstr(r.body, want)); /* the Checkout, not delivered */
  st_resp_free(&r);

  st_call(&t, "GET", "/ledger/receipts?sink=trigger&type=Checkout", NULL, NULL, 0, &r);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body, want));
  st_resp_free(&r);
  st_call(&t, "GET", "/ledger/receipts?sink=webhook:nobody&from_ms=1721830622010", NULL, NULL, 0,
          &r);
  assert_int_equal(r.status, 200);
  assert_int_equal(strlen(r.body), strlen(head) + strlen(want)); /* only the Checkout, count 0 */
  st_resp_free(&r);
  st_call(&t, "GET", "/ledger/receipts?sink=trigger&until_ms=1", NULL, NULL, 0, &r);
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body, head);
  st_resp_free(&r);
  const char *bad[] = {"/ledger/receipts", "/ledger/receipts?sink=kafka",
                       "/ledger/receipts?sink=webhook:", "/ledger/receipts?sink=trigger&type=X",
                       "/ledger/receipts?sink=trigger&from_ms=x"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    st_call(&t, "GET", bad[i], NULL, NULL, 0, &r);
    assert_int_equal(r.status, 400);
    st_resp_free(&r);
  }
  st_stop(&t);
}

static void test_http_events_paging_and_reset(void **state) {
  struct st t;
  st_start(&t, 1, 0, NULL);
  for (unsigned i = 0; i < 25; i++) {
    struct sim_event ev =
        make_event(i % 2, i % 5 ? SIM_ADDCARTLINES : SIM_CHECKOUT, i, i * 10, "e@example.com");
    if (i == 24) /* a scripted event's text, kept exactly as written */
      snprintf(ev.time_text, sizeof(ev.time_text), "2024-07-24T14:17:02.2400000Z");
    sim_ledger_generated(t.sim.ledger, &ev);
  }
  struct sim_event first = make_event(0, SIM_CHECKOUT, 0, 0, "e@example.com");
  deliver(t.sim.ledger, &first, NULL, T0 + 40);

  struct st_resp r;
  get_ok(&t, "/ledger/events?offset=20&limit=10", &r);
  assert_int_equal(get_int(r.json, "total"), 25);
  yajl_val evs = csr_json_get(r.json, "events");
  assert_int_equal(csr_json_len(evs), 5);
  yajl_val e20 = csr_json_at(evs, 0);
  assert_string_equal(csr_json_get_str(e20, "type"), "Checkout");
  assert_int_equal(get_int(e20, "csu"), 0);
  assert_string_equal(csr_json_get_str(e20, "time"), "2024-07-24T14:17:02.2Z");
  assert_string_equal(csr_json_get_str(e20, "id"),
                      "csu0|usrt|Checkout|cart-20|2024-07-24T14:17:02.2Z");
  assert_string_equal(csr_json_get_str(e20, "committed"), "2024-07-24T14:17:02.205Z");
  assert_int_equal(get_int(e20, "deliveries.trigger"), 0);
  assert_string_equal(csr_json_get_str(csr_json_at(evs, 4), "id"),
                      "csu0|usrt|AddCartLines|cart-24|2024-07-24T14:17:02.2400000Z");
  assert_string_equal(csr_json_get_str(csr_json_at(evs, 4), "time"),
                      "2024-07-24T14:17:02.2400000Z");
  st_resp_free(&r);

  get_ok(&t, "/ledger/events?limit=2", &r);
  evs = csr_json_get(r.json, "events");
  assert_int_equal(csr_json_len(evs), 2);
  assert_int_equal(get_int(csr_json_at(evs, 0), "deliveries.trigger"), 1);
  st_resp_free(&r);

  st_call(&t, "GET", "/ledger/events?limit=-1", NULL, NULL, 0, &r);
  assert_int_equal(r.status, 400);
  st_resp_free(&r);

  st_call(&t, "POST", "/ledger/reset", NULL, "", 0, &r);
  assert_int_equal(r.status, 200);
  st_resp_free(&r);
  get_ok(&t, "/ledger", &r);
  assert_int_equal(get_int(r.json, "generated.total"), 0);
  assert_int_equal(get_int(r.json, "trigger.received"), 0);
  st_resp_free(&r);
  st_stop(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_event_id),
      cmocka_unit_test(test_trigger_missing_until_delivered),
      cmocka_unit_test(test_trigger_duplicate_mismatch_unknown),
      cmocka_unit_test(test_trigger_fields_compared_as_values),
      cmocka_unit_test(test_latency_percentiles),
      cmocka_unit_test(test_diff_filters),
      cmocka_unit_test(test_contacts_customers_requests_reset),
      cmocka_unit_test(test_many_events),
      cmocka_unit_test(test_http_webhook_counts),
      cmocka_unit_test(test_http_diff),
      cmocka_unit_test(test_http_receipts),
      cmocka_unit_test(test_http_events_paging_and_reset),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
