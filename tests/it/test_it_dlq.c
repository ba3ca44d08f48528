/* The dead-letter queue end to end (SPEC sections 3 and 6): the webhook answers 503 to every
 * request while 10 scripted Checkouts and 10 AddCartLines go through a relay whose retry policy is
 * {base_ms: 50, cap_ms: 200, max_attempts: 3}. Then
 *   - the trigger delivers the 10 Checkouts (the webhook's failure does not hold them up);
 *   - all 20 webhook deliveries are in GET /v1/dlq with reason "max_attempts: http_503", status
 *     503 and attempts 3, and csusim counted exactly 3 x 20 webhook 503s;
 *   - DELETE /v1/dlq/{id} removes one ({"deleted":1}; the event is finished), an unknown id is 404;
 *   - the queue and the deletion survive a restart (SIGTERM, exit 0, same state directory);
 *   - after healing, POST /v1/dlq/replay by id ({"replayed":1}) and by sink ({"replayed":18})
 *     delivers those 19 to the webhook, once each; the deleted one never arrives; the queue is
 *     empty. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ittest.h"

#define CARTS 10
#define DEAD  (2 * CARTS)

/* Cart i: one AddCartLines at +1.0 s and its Checkout at +1.2 s, on CSU 0, each with an email. */
static char *script(void) {
  size_t cap = 8192, n = 0;
  char *s = malloc(cap);
  assert_non_null(s);
  n += (size_t)snprintf(s + n, cap - n, "[");
  for (int i = 0; i < CARTS; i++)
    n += (size_t)snprintf(
        s + n, cap - n,
        "%s{\"EventType\": \"AddCartLines\", \"EventTransactionId\": \"DLQ-%02d\", "
        "\"offset_ms\": %d, \"commit_after_ms\": 1000},\n"
        "{\"EventType\": \"Checkout\", \"EventTransactionId\": \"DLQ-%02d\", \"offset_ms\": %d, "
        "\"commit_after_ms\": 1200, \"ReceiptEmail\": \"dlq%02d@example.com\"}\n",
        i ? "," : "", i, 1000 + i, i, 1200 + i, i);
  snprintf(s + n, cap - n, "]\n");
  return s;
}

static int64_t dlq_total(struct it *t) {
  yajl_val q = it_admin_json(t, "/v1/dlq");
  int64_t n = it_int(q, "total");
  csr_json_free(q);
  return n;
}

/* Polls GET /v1/dlq until it holds `n` items (bounded). */
static void wait_dlq(struct it *t, int64_t n, long deadline_ms) {
  int64_t end = it_mono_ms() + it_slow(t, deadline_ms);
  int64_t have;
  while ((have = dlq_total(t)) != n) {
    if (it_mono_ms() > end)
      fail_msg("/v1/dlq holds %lld dead letters, not %lld, after %ld ms", (long long)have,
               (long long)n, it_slow(t, deadline_ms));
    it_sleep_ms(100);
  }
}

/* POST or DELETE on the admin API; asserts the status and, when `key` is given, its count. */
static void admin_call(struct it *t, const char *method, const char *path, const char *body,
                       long want_status, const char *key, int64_t want) {
  char url[1024];
  snprintf(url, sizeof(url), "%s%s", t->admin_url, path);
  struct it_resp r;
  it_http(t, method, url, body, &r);
  fprintf(stderr, "[dlq] %s %s %s -> %ld %s\n", method, path, body ? body : "", r.status,
          r.body ? r.body : "");
  assert_int_equal(r.status, want_status);
  if (key != NULL) {
    assert_non_null(r.json);
    assert_int_equal(it_int(r.json, key), want);
  }
  it_resp_free(&r);
}

static void test_dlq(void **state) {
  struct it *t = *state;
  it_setup(t, "dlq");
  char *events = script();
  it_sim_start(t,
               &(struct it_sim_opts){.csus = 1,
                                     .rate = 0,
                                     .seed = 7,
                                     .events_json = events,
                                     .faults_yaml = "endpoints:\n"
                                                    "  webhook: {error_rate: 1.0, errors: [503]}\n"
                                                    "dataverse: {max_requests: 1000000, "
                                                    "window_s: 1, max_concurrent: 1000}\n"});
  free(events);
  it_config_write(
      t, &(struct it_cfg){.retry_base_ms = 50, .retry_cap_ms = 200, .retry_max_attempts = 3});
  it_relay_start(t);
  it_wait_delivered(t, CARTS, 0, 30000);
  wait_dlq(t, DEAD, 30000);

  yajl_val q = it_admin_json(t, "/v1/dlq?limit=100");
  yajl_val items = csr_json_get(q, "items");
  assert_int_equal(csr_json_len(items), DEAD);
  char first[256], second[256];
  for (size_t i = 0; i < DEAD; i++) {
    yajl_val item = csr_json_at(items, i);
    assert_string_equal(csr_json_get_str(item, "sink"), "audit");
    assert_string_equal(csr_json_get_str(item, "reason"), "max_attempts: http_503");
    assert_int_equal(it_int(item, "status"), 503);
    assert_int_equal(it_int(item, "attempts"), 3);
    assert_non_null(csr_json_get_str(item, "dead_at"));
  }
  snprintf(first, sizeof(first), "%s", csr_json_get_str(csr_json_at(items, 0), "id"));
  snprintf(second, sizeof(second), "%s", csr_json_get_str(csr_json_at(items, 1), "id"));
  fprintf(stderr, "[dlq] first dead letter: %s\n", first);
  csr_json_free(q);

  yajl_val l = it_sim_json(t, "/ledger");
  assert_int_equal(it_int_or(l, "requests.webhook.503", 0), 3 * DEAD);
  assert_int_equal(it_int(l, "trigger.unique"), CARTS);
  csr_json_free(l);

  /* The event view shows the same: its webhook delivery dead after 3 attempts. */
  char esc2[600];
  yajl_val ev = it_admin_json(t, "/v1/events/%s", it_escape(second, esc2, sizeof(esc2)));
  assert_false(YAJL_IS_TRUE(csr_json_get(ev, "finished")));
  yajl_val dels = csr_json_get(ev, "deliveries");
  bool seen = false;
  for (size_t i = 0; i < csr_json_len(dels); i++) {
    yajl_val del = csr_json_at(dels, i);
    if (strcmp(csr_json_get_str(del, "sink"), "audit") != 0)
      continue;
    seen = true;
    assert_string_equal(csr_json_get_str(del, "state"), "dead");
    assert_int_equal(it_int(del, "attempts"), 3);
    assert_int_equal(it_int(del, "status"), 503);
    assert_string_equal(csr_json_get_str(del, "reason"), "max_attempts: http_503");
  }
  assert_true(seen);
  csr_json_free(ev);

  /* Delete one; an unknown id is 404. The event is finished once its last delivery is decided. */
  char path[700], esc[600];
  snprintf(path, sizeof(path), "/v1/dlq/%s", it_escape(first, esc, sizeof(esc)));
  admin_call(t, "DELETE", path, NULL, 200, "deleted", 1);
  admin_call(t, "DELETE", path, NULL, 404, NULL, 0);
  admin_call(t, "DELETE", "/v1/dlq/csu0%7Cusrt%7CCheckout%7CNOPE%7C2020-01-01T00%3A00%3A00Z", NULL,
             404, NULL, 0);
  assert_int_equal(dlq_total(t), DEAD - 1);
  ev = it_admin_json(t, "/v1/events/%s", esc);
  assert_true(YAJL_IS_TRUE(csr_json_get(ev, "finished")));
  csr_json_free(ev);

  /* Dead letters and the deletion are durable: they survive a restart on the same state. */
  assert_int_equal(it_relay_stop(t, 15000, NULL), 0);
  it_relay_start(t);
  assert_int_equal(dlq_total(t), DEAD - 1);
  ev = it_admin_json(t, "/v1/events/%s", esc);
  assert_true(YAJL_IS_TRUE(csr_json_get(ev, "finished")));
  csr_json_free(ev);

  /* Heal, then replay one by id and the rest by sink. */
  it_sim_faults(t, "");
  char body[400];
  snprintf(body, sizeof(body), "{\"id\": \"%s\"}", second);
  admin_call(t, "POST", "/v1/dlq/replay", body, 200, "replayed", 1);
  admin_call(t, "POST", "/v1/dlq/replay", "{\"sink\": \"audit\"}", 200, "replayed", DEAD - 2);
  assert_int_equal(dlq_total(t), 0);
  it_wait_delivered(t, CARTS, DEAD - 1, 30000);
  assert_int_equal(dlq_total(t), 0);
  assert_int_equal(it_relay_stop(t, 15000, NULL), 0);

  struct it_diff d;
  it_diff(t, "webhook:audit", NULL, 0, &d);
  it_diff_print("webhook:audit", &d);
  assert_int_equal(d.expected, DEAD);
  assert_int_equal(d.delivered, DEAD - 1);
  assert_int_equal(d.duplicated, 0);
  assert_int_equal(d.missing, 1);
  assert_string_equal(csr_json_str(csr_json_at(csr_json_get(d.doc, "missing"), 0)), first);
  it_diff_free(&d);
  it_pass(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_dlq, it_cm_setup, it_cm_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
