/* SIGTERM under load drains (SPEC section 8): csusim generates 300 events/s on 4 CSUs, and the
 * trigger and the webhook take 50-150 ms to answer (always well below the timeout, so no answer is
 * ever lost), which keeps deliveries in flight. Once /v1/status shows deliveries in flight,
 * SIGTERM must end the relay with exit code 0 within limits.http_timeout_ms (2 s)
 * plus the drain's margin (1 s) plus a few seconds for closing. A drained stop leaves nothing in
 * flight, so the next run on the same state completes everything committed before its start with
 * no duplicate delivery of any event at all. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ittest.h"

#define HTTP_TIMEOUT_MS 2000

static const char *const SINKS[] = {"trigger", "webhook:audit", NULL};

static const char FAULTS[] =
    "endpoints:\n"
    "  trigger: {latency_ms: 50, latency_jitter_ms: 100}\n"
    "  webhook: {latency_ms: 50, latency_jitter_ms: 100}\n"
    "dataverse: {max_requests: 1000000, window_s: 1, max_concurrent: 1000}\n";

/* The "pipeline drained" line of the first run, for the report. */
static void print_drained(const struct it *t) {
  char path[600], line[4096];
  snprintf(path, sizeof(path), "%s/relay-1.log", t->dir);
  FILE *f = fopen(path, "r");
  while (f != NULL && fgets(line, sizeof(line), f) != NULL)
    if (strstr(line, "\"msg\":\"pipeline drained\"") != NULL)
      fprintf(stderr, "[drain] %s", line);
  if (f != NULL)
    fclose(f);
}

static void test_drain(void **state) {
  struct it *t = *state;
  it_setup(t, "drain");
  it_sim_start(t, &(struct it_sim_opts){.csus = 4, .rate = 300, .seed = 51, .faults_yaml = FAULTS});
  it_config_write(t,
                  &(struct it_cfg){.http_timeout_ms = HTTP_TIMEOUT_MS, .hook_max_in_flight = 64});
  it_relay_start(t);
  it_wait_delivered(t, 100, 500, 30000);
  int64_t live, in_flight, end = it_mono_ms() + it_slow(t, 10000);
  do {
    yajl_val st = it_admin_json(t, "/v1/status");
    live = it_int(st, "state.live");
    in_flight = 0;
    yajl_val sinks = csr_json_get(st, "sinks");
    for (size_t i = 0; i < csr_json_len(sinks); i++)
      in_flight += it_int(csr_json_at(sinks, i), "in_flight");
    csr_json_free(st);
    if (in_flight < 8)
      it_sleep_ms(20);
  } while (in_flight < 8 && it_mono_ms() < end);
  fprintf(stderr, "[drain] at SIGTERM: %lld live events, %lld deliveries in flight\n",
          (long long)live, (long long)in_flight);
  assert_true(in_flight >= 8);

  long took;
  assert_int_equal(it_relay_stop(t, HTTP_TIMEOUT_MS + 1000 + 3000, &took), 0);
  fprintf(stderr, "[drain] exit 0 %ld ms after SIGTERM\n", took);
  print_drained(t);

  int64_t cutoff = it_wall_ms();
  it_relay_start(t);
  it_wait_complete(t, SINKS, cutoff, 60000);
  assert_int_equal(it_relay_stop(t, HTTP_TIMEOUT_MS + 1000 + 3000, NULL), 0);

  yajl_val l = it_sim_json(t, "/ledger");
  fprintf(stderr, "[drain] generated %lld; duplicates: trigger %lld, webhook %lld\n",
          (long long)it_int(l, "generated.total"), (long long)it_int(l, "trigger.duplicates"),
          (long long)it_int(l, "webhook.audit.duplicates"));
  assert_int_equal(it_int(l, "trigger.duplicates"), 0);
  assert_int_equal(it_int(l, "webhook.audit.duplicates"), 0);
  assert_int_equal(it_int(l, "trigger.unknown"), 0);
  assert_int_equal(it_int(l, "webhook.audit.unknown"), 0);
  csr_json_free(l);
  for (size_t i = 0; SINKS[i]; i++) {
    struct it_diff d;
    it_diff(t, SINKS[i], NULL, cutoff, &d);
    it_diff_print(SINKS[i], &d);
    assert_int_equal(d.missing, 0);
    assert_int_equal(d.duplicated, 0);
    it_diff_free(&d);
  }
  it_pass(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_drain, it_cm_setup, it_cm_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
