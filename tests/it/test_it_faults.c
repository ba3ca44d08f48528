/* End to end through every fault csusim injects at once, then healed: nothing is lost and nothing
 * is delivered twice.
 *
 * The plan (csusim --faults, windows in seconds after csusim started):
 *   - events: bursts of 30 carts at one EventDateTime every 5 s per CSU (tie groups larger than the
 *     relay's page_size of 20, in an unstable order per query), 10 % of events committed late by up
 *     to 25 s (some within overlap_s = 10, the rest only caught by the 30 s sweep every 5 s), and
 *     the one-hour stale Search cache;
 *   - tokens live 5 s and every token issued before 9 s is revoked then; the token endpoint answers
 *     503 + Retry-After to 10 % of requests. The relay refreshes a 5 s token 2.5 s before it
 *     expires, so its tokens are issued about 2.5, 5, 7.5 and 10 s after it starts: a revocation
 *     at 8 s fell on that third refresh, and when the token came after 8 s no request ever got a
 *     401 (2 runs in 10 under ASan at d3086c6). At 9 s the token in use is the one issued at
 *     ~7.5 s, for ~1 s more;
 *   - Search: a 429 + Retry-After storm (60 %) from 6 to 9 s, then 5xx, timeouts and malformed JSON
 *     pages; order GETs: 5xx, timeouts and malformed JSON; customer and contact calls: 5xx;
 *   - the trigger: a 429 + Retry-After storm (70 %) from 10 to 13 s, then 5xx, timeouts, resets;
 *     the webhook: the same storm from 14 to 17 s, then 5xx, timeouts, resets.
 * limits.http_timeout_ms is 1000, so a held request resolves fast.
 *
 * After 22 s the test heals everything (POST /sim/faults naming the endpoints, events and tokens
 * sections, all empty) and waits until every event committed before then has reached every sink
 * of its route.
 *
 * Why duplicates must be 0: csusim's timeouts and resets fire before the receiver runs (the request
 * is never recorded), and an injected status is answered instead of the receiver; latency, the one
 * fault that would let a receiver record a request whose answer the relay gave up on, is not in the
 * plan. So every failed delivery the relay retries was never received, and without a crash there is
 * nothing else in flight to repeat. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ittest.h"

static const char *const SINKS[] = {"trigger", "webhook:audit", NULL};

static const char FAULTS[] =
    "seed: 5\n"
    "endpoints:\n"
    "  search:\n"
    "    - {error_rate: 0.6, errors: [429], retry_after_s: 1, from_s: 6, until_s: 9}\n"
    "    - {error_rate: 0.05, errors: [500, 503], timeout_rate: 0.03, malformed_rate: 0.05}\n"
    "  order: {error_rate: 0.05, errors: [500, 502, 503], timeout_rate: 0.02, "
    "malformed_rate: 0.05}\n"
    "  customer_get: {error_rate: 0.05, errors: [503], timeout_rate: 0.02}\n"
    "  contacts_get: {error_rate: 0.05, errors: [500]}\n"
    "  contacts_create: {error_rate: 0.05, errors: [503]}\n"
    "  trigger:\n"
    "    - {error_rate: 0.7, errors: [429], retry_after_s: 1, from_s: 10, until_s: 13}\n"
    "    - {error_rate: 0.05, errors: [500, 503], timeout_rate: 0.03, reset_rate: 0.01}\n"
    "  webhook:\n"
    "    - {error_rate: 0.7, errors: [429], retry_after_s: 1, from_s: 14, until_s: 17}\n"
    "    - {error_rate: 0.05, errors: [500, 503], timeout_rate: 0.03, reset_rate: 0.01}\n"
    "  token: {error_rate: 0.1, errors: [503], retry_after_s: 1}\n"
    "events: {late_commit_rate: 0.1, late_commit_max_s: 25, same_time_every_s: 5,\n"
    "         same_time_burst: 30, unstable_tie_order: true, stale_cache: true}\n"
    "tokens: {lifetime_s: 5, revoke_at_s: 9}\n"
    "dataverse: {max_requests: 1000000, window_s: 1, max_concurrent: 1000}\n";

/* Lifts every fault but the Dataverse limits (a section the body does not name stays). */
static const char HEAL[] = "events: {}\ntokens: {}\n";

#define MAX_GROUPS 4096

/* Events of one (CSU, type) at one EventDateTime. */
struct group {
  int64_t time;
  unsigned csu, type, n;
};

/* The shapes the plan promises, seen in /ledger/events before the cutoff. */
struct shapes {
  int64_t cutoff;
  int64_t late_in_overlap, late_past_overlap, events;
  struct group groups[MAX_GROUPS];
  size_t ngroups;
  unsigned biggest_tie;
};

static void on_event(yajl_val ev, void *arg) {
  struct shapes *s = arg;
  int64_t committed = it_time_ms(csr_json_get_str(ev, "committed"));
  if (committed >= s->cutoff)
    return;
  s->events++;
  int64_t time = it_time_ms(csr_json_get_str(ev, "time"));
  int64_t late = committed - time;
  s->late_in_overlap += late > 1000 && late < 10000;
  s->late_past_overlap += late > 12000;
  unsigned csu = (unsigned)it_int(ev, "csu");
  unsigned type = strcmp(csr_json_get_str(ev, "type"), "Checkout") == 0;
  size_t i = 0;
  while (i < s->ngroups &&
         !(s->groups[i].time == time && s->groups[i].csu == csu && s->groups[i].type == type))
    i++;
  if (i == s->ngroups) {
    if (s->ngroups == MAX_GROUPS)
      return; /* only big groups matter, and bursts come early */
    s->groups[s->ngroups++] = (struct group){.time = time, .csu = csu, .type = type};
  }
  if (++s->groups[i].n > s->biggest_tie)
    s->biggest_tie = s->groups[i].n;
}

static int64_t requests(yajl_val l, const char *endpoint, const char *status) {
  char path[96];
  snprintf(path, sizeof(path), "requests.%s.%s", endpoint, status);
  return it_int_or(l, path, 0);
}

static void test_faults(void **state) {
  struct it *t = *state;
  it_setup(t, "faults");
  it_sim_start(t, &(struct it_sim_opts){.csus = 3, .rate = 60, .seed = 21, .faults_yaml = FAULTS});
  it_config_write(t, &(struct it_cfg){.page_size = 20,
                                      .overlap_s = 10,
                                      .sweep_s = 30,
                                      .sweep_every_s = 5,
                                      .http_timeout_ms = 1000,
                                      .retry_base_ms = 200,
                                      .retry_cap_ms = 2000,
                                      .retry_max_attempts = 50});
  it_relay_start(t);

  it_sleep_ms(22000); /* the plan's windows end at 17 s after csusim started */
  it_sim_faults(t, HEAL);
  int64_t cutoff = it_wall_ms();
  it_wait_complete(t, SINKS, cutoff, 60000);

  yajl_val dlq = it_admin_json(t, "/v1/dlq");
  assert_int_equal(it_int(dlq, "total"), 0);
  csr_json_free(dlq);
  assert_int_equal(it_relay_stop(t, 15000, NULL), 0);

  for (size_t i = 0; SINKS[i]; i++) {
    struct it_diff d;
    it_diff(t, SINKS[i], NULL, cutoff, &d);
    it_diff_print(SINKS[i], &d);
    assert_int_equal(d.missing, 0);
    assert_int_equal(d.duplicated, 0);
    assert_int_equal(d.unknown, 0);
    assert_int_equal(d.mismatched, 0);
    assert_int_equal(d.unexpected, 0);
    it_diff_free(&d);
  }
  yajl_val l = it_sim_json(t, "/ledger");
  assert_int_equal(it_int(l, "trigger.duplicates"), 0);
  assert_int_equal(it_int(l, "webhook.audit.duplicates"), 0);
  assert_int_equal(it_int(l, "contacts.duplicate_emails"), 0);

  /* The faults happened: storms, errors, timeouts or resets (status 0), and 401s after the
   * revocation, on the endpoints the plan names. */
  int64_t s429 = requests(l, "search", "429"),
          s5xx = requests(l, "search", "500") + requests(l, "search", "503");
  int64_t t429 = requests(l, "trigger", "429"), w429 = requests(l, "webhook", "429");
  int64_t held = requests(l, "search", "0") + requests(l, "order", "0") +
                 requests(l, "trigger", "0") + requests(l, "webhook", "0");
  int64_t u401 = requests(l, "search", "401") + requests(l, "order", "401") +
                 requests(l, "customer_get", "401") + requests(l, "contacts_get", "401") +
                 requests(l, "trigger", "401");
  int64_t tok503 = requests(l, "token", "503");
  fprintf(stderr,
          "[faults] search 429 %lld 5xx %lld, trigger 429 %lld, webhook 429 %lld, timeouts and "
          "resets %lld, 401 after revocation %lld, token 503 %lld\n",
          (long long)s429, (long long)s5xx, (long long)t429, (long long)w429, (long long)held,
          (long long)u401, (long long)tok503);
  assert_true(s429 > 0 && s5xx > 0 && t429 > 0 && w429 > 0 && held > 0 && u401 > 0);
  csr_json_free(l);

  struct shapes *s = calloc(1, sizeof(*s));
  assert_non_null(s);
  s->cutoff = cutoff;
  it_ledger_each(t, on_event, s);
  fprintf(stderr,
          "[faults] %lld events before the cutoff; largest tie group %u (page_size 20); late "
          "commits within overlap %lld, past it %lld\n",
          (long long)s->events, s->biggest_tie, (long long)s->late_in_overlap,
          (long long)s->late_past_overlap);
  assert_true(s->biggest_tie > 20);
  assert_true(s->late_in_overlap > 0 && s->late_past_overlap > 0);
  free(s);
  it_pass(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_faults, it_cm_setup, it_cm_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
