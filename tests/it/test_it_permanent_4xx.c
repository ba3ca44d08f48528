/* A permanent 4xx goes straight to the dead-letter queue (SPEC section 3 "Retries"): the Checkout
 * route gives the journeys delivery its own `fields` map, which leaves out msdynmkt_salesid, a
 * required parameter of the checkout trigger (reference section 6.1), so csusim's Dataverse
 * answers 400 "The required parameter 'msdynmkt_salesid' is missing ...". For 10 scripted
 * Checkouts (each with an email) and 5 AddCartLines:
 *   - each Checkout's journeys delivery is in /v1/dlq with status 400, reason "http_400",
 *     attempts 1 (no retry: csusim saw exactly 10 trigger calls, all 400) and an excerpt that
 *     carries csusim's message; the trigger ledger received nothing;
 *   - the webhook deliveries of the same events (and of the AddCartLines) are all delivered once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ittest.h"

#define CHECKOUTS 10
#define LINES     5

/* The default mapping (SPEC section 4) without msdynmkt_salesid. */
static const char FIELDS[] =
    "fields: {msdynmkt_amountpaid: OrderDetails.AmountPaid,\n"
    "        msdynmkt_bindingid: OrderDetails.InternalTransactionId,\n"
    "        msdynmkt_channelreferenceid: OrderDetails.ChannelReferenceId,\n"
    "        msdynmkt_createddatetime: OrderDetails.CreatedDateTime,\n"
    "        msdynmkt_currencycode: OrderDetails.CurrencyCode, msdynmkt_name: OrderDetails.Name,\n"
    "        msdynmkt_receiptemail: OrderDetails.ReceiptEmail,\n"
    "        msdynmkt_signaltimestamp: $event_time, msdynmkt_signalingestiontimestamp: $now,\n"
    "        msdynmkt_signaluserauthid: $contact_id, msdynmkt_profileid: $contact_id}";

static char *script(void) {
  size_t cap = 8192, n = 0;
  char *s = malloc(cap);
  assert_non_null(s);
  n += (size_t)snprintf(s + n, cap - n, "[");
  for (int i = 0; i < CHECKOUTS; i++)
    n += (size_t)snprintf(s + n, cap - n,
                          "%s{\"EventType\": \"Checkout\", \"EventTransactionId\": \"P4-%02d\", "
                          "\"offset_ms\": 1000, \"commit_after_ms\": 1000, "
                          "\"ReceiptEmail\": \"p4-%02d@example.com\"}\n",
                          i ? "," : "", i, i);
  for (int i = 0; i < LINES; i++)
    n +=
        (size_t)snprintf(s + n, cap - n,
                         ",{\"EventType\": \"AddCartLines\", \"EventTransactionId\": \"P4-L%02d\", "
                         "\"offset_ms\": 900, \"commit_after_ms\": 900}\n",
                         i);
  snprintf(s + n, cap - n, "]\n");
  return s;
}

static void test_permanent_4xx(void **state) {
  struct it *t = *state;
  it_setup(t, "permanent_4xx");
  char *events = script();
  it_sim_start(t, &(struct it_sim_opts){.csus = 1,
                                        .rate = 0,
                                        .seed = 9,
                                        .events_json = events,
                                        .faults_yaml = "dataverse: {max_requests: 1000000, "
                                                       "window_s: 1, max_concurrent: 1000}\n"});
  free(events);
  it_config_write(t, &(struct it_cfg){.journeys_extra = FIELDS});
  it_relay_start(t);
  it_wait_delivered(t, 0, CHECKOUTS + LINES, 30000);

  /* The webhook is done; the dead letters follow at once (no backoff for a permanent answer). */
  int64_t end = it_mono_ms() + it_slow(t, 20000);
  yajl_val q;
  for (;;) {
    q = it_admin_json(t, "/v1/dlq?limit=100");
    if (it_int(q, "total") >= CHECKOUTS || it_mono_ms() > end)
      break;
    csr_json_free(q);
    it_sleep_ms(100);
  }
  yajl_val items = csr_json_get(q, "items");
  fprintf(stderr, "[permanent_4xx] %lld dead letters; the first: %s / %s / %s\n",
          (long long)it_int(q, "total"), csr_json_get_str(csr_json_at(items, 0), "id"),
          csr_json_get_str(csr_json_at(items, 0), "reason"),
          csr_json_get_str(csr_json_at(items, 0), "excerpt"));
  assert_int_equal(it_int(q, "total"), CHECKOUTS);
  for (size_t i = 0; i < CHECKOUTS; i++) {
    yajl_val item = csr_json_at(items, i);
    assert_string_equal(csr_json_get_str(item, "sink"), "journeys");
    assert_string_equal(csr_json_get_str(item, "type"), "Checkout");
    assert_string_equal(csr_json_get_str(item, "reason"), "http_400");
    assert_int_equal(it_int(item, "status"), 400);
    assert_int_equal(it_int(item, "attempts"), 1);
    const char *excerpt = csr_json_get_str(item, "excerpt");
    assert_non_null(excerpt);
    assert_non_null(strstr(excerpt, "The required parameter 'msdynmkt_salesid' is missing"));
  }
  csr_json_free(q);
  assert_int_equal(it_relay_stop(t, 15000, NULL), 0);

  yajl_val l = it_sim_json(t, "/ledger");
  assert_int_equal(it_int_or(l, "requests.trigger.400", 0), CHECKOUTS);
  assert_int_equal(it_int(l, "trigger.received"), 0);
  csr_json_free(l);
  struct it_diff d;
  it_diff(t, "webhook:audit", NULL, 0, &d);
  it_diff_print("webhook:audit", &d);
  assert_int_equal(d.expected, CHECKOUTS + LINES);
  assert_int_equal(d.delivered, CHECKOUTS + LINES);
  assert_int_equal(d.duplicated, 0);
  it_diff_free(&d);
  it_pass(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_permanent_4xx, it_cm_setup, it_cm_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
