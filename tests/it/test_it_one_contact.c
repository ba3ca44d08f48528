/* Concurrent events for one new email create one contact (SPEC section 4 cij, step 2: lookups and
 * creations are single-flight per email). csusim plays 20 scripted Checkouts of 20 different carts,
 * 10 on each of 2 CSUs, all at one EventDateTime and all with one ReceiptEmail that no contact has
 * yet; the cij sink takes 32 deliveries in flight, so all 20 race for the contact. The ledger must
 * show one contact created for that email, no email with two contacts, and 20 triggers, each once.
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

#define CARTS 20
#define EMAIL "Pat.One-Contact@example.com"

static const char *const SINKS[] = {"trigger", "webhook:audit", NULL};

/* 20 Checkouts, carts ONE-00..ONE-19, at 1.5 s after csusim starts, visible from then on. */
static char *script(void) {
  size_t cap = 8192, n = 0;
  char *s = malloc(cap);
  assert_non_null(s);
  n += (size_t)snprintf(s + n, cap - n, "[");
  for (int i = 0; i < CARTS; i++)
    n += (size_t)snprintf(s + n, cap - n,
                          "%s{\"csu\": %d, \"EventType\": \"Checkout\", \"EventTransactionId\": "
                          "\"ONE-%02d\", \"offset_ms\": 1500, \"commit_after_ms\": 1500, "
                          "\"ReceiptEmail\": \"%s\"}\n",
                          i ? "," : "", i % 2, i, EMAIL);
  snprintf(s + n, cap - n, "]\n");
  return s;
}

static void test_one_contact(void **state) {
  struct it *t = *state;
  it_setup(t, "one_contact");
  char *events = script();
  it_sim_start(t, &(struct it_sim_opts){.csus = 2,
                                        .rate = 0,
                                        .seed = 3,
                                        .events_json = events,
                                        .faults_yaml = "dataverse: {max_requests: 1000000, "
                                                       "window_s: 1, max_concurrent: 1000}\n"});
  free(events);
  it_config_write(t, &(struct it_cfg){.cij_max_in_flight = 32});
  it_relay_start(t);
  it_wait_complete(t, SINKS, 0, 40000);
  assert_int_equal(it_relay_stop(t, 15000, NULL), 0);

  struct it_diff d;
  it_diff(t, "trigger", NULL, 0, &d);
  it_diff_print("trigger", &d);
  assert_int_equal(d.expected, CARTS);
  assert_int_equal(d.delivered, CARTS);
  assert_int_equal(d.duplicated, 0);
  assert_int_equal(d.mismatched, 0);
  it_diff_free(&d);

  yajl_val l = it_sim_json(t, "/ledger");
  int64_t created = it_int(l, "contacts.created");
  fprintf(stderr,
          "[one_contact] contacts created %lld for %lld emails (duplicate_emails %lld); lookups "
          "%lld; triggers %lld\n",
          (long long)created, (long long)it_int(l, "contacts.emails"),
          (long long)it_int(l, "contacts.duplicate_emails"),
          (long long)it_int_or(l, "requests.contacts_get.200", 0),
          (long long)it_int(l, "trigger.received"));
  assert_int_equal(it_int(l, "generated.Checkout"), CARTS);
  assert_int_equal(created, 1);
  assert_int_equal(it_int(l, "contacts.emails"), 1);
  assert_int_equal(it_int(l, "contacts.duplicate_emails"), 0);
  assert_int_equal(it_int(l, "trigger.received"), CARTS);
  assert_int_equal(it_int(l, "trigger.unique"), CARTS);
  csr_json_free(l);
  it_pass(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_one_contact, it_cm_setup, it_cm_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
