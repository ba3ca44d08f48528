/* kill -9 under load, 20 times in a row, then a torn AOF tail and a final clean run (issue 4).
 *
 * csusim generates 300 events/s on 4 CSUs all along. Each round starts `csurelay run` on the same
 * state directory (fsync: batch) and SIGKILLs it at a seeded moment 0.3-1.5 s after the start, so
 * the kills land during replay, polling, admission, enrichment and deliveries alike. After the last
 * kill the test appends a partial record to the AOF (the sync marker 0xFE 0xA7, a header that
 * promises 64 bytes, and 5 of them), as a crash in the middle of a write leaves it. The final run
 * must start, report that torn tail (store.torn_tails == 1 in /v1/status), and deliver every event
 * committed before its start to every sink of its route.
 *
 * Duplicates: admission is durable before delivery and each outcome is appended as soon as the
 * answer is in, so after a kill only the deliveries that were in flight at that moment (sent, and
 * possibly received, with no outcome written yet) are made again. A sink holds at most its
 * max_in_flight deliveries at once, so the honest bound is, per sink, max_in_flight x kills (32 x
 * 20 = 640 for each of the trigger and the webhook), and their sum for both (1280). The test
 * asserts both and prints the actual counts. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "ittest.h"

#define ROUNDS        20
#define MAX_IN_FLIGHT 32 /* both sinks */
#define SEED          20261122ULL

static const char *const SINKS[] = {"trigger", "webhook:audit", NULL};

static uint64_t next_rand(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* A record cut short: marker, type 1, flags 0, length 64 (little endian), then 5 bytes of it. */
static void tear_aof(struct it *t) {
  char path[600];
  snprintf(path, sizeof(path), "%s/csurelay.aof", t->state);
  int fd = open(path, O_WRONLY | O_APPEND);
  assert_true(fd >= 0);
  static const unsigned char partial[] = {0xFE, 0xA7, 0x01, 0x00, 0x40, 0x00, 0x00,
                                          0x00, '{',  '"',  'i',  'd',  '"'};
  assert_int_equal(write(fd, partial, sizeof(partial)), (ssize_t)sizeof(partial));
  assert_int_equal(close(fd), 0);
}

/* Whether round `n`'s relay got as far as running before its kill (for the report only). */
static bool reached_running(const struct it *t, unsigned n) {
  char path[600], line[4096];
  snprintf(path, sizeof(path), "%s/relay-%u.log", t->dir, n);
  FILE *f = fopen(path, "r");
  bool yes = false;
  while (f != NULL && !yes && fgets(line, sizeof(line), f) != NULL)
    yes = strstr(line, "\"msg\":\"csurelay running\"") != NULL;
  if (f != NULL)
    fclose(f);
  return yes;
}

static void test_crash(void **state) {
  struct it *t = *state;
  it_setup(t, "crash");
  it_sim_start(t, &(struct it_sim_opts){.csus = 4,
                                        .rate = 300,
                                        .seed = 31,
                                        .faults_yaml = "dataverse: {max_requests: 10000000, "
                                                       "window_s: 1, max_concurrent: 1000}\n"});
  it_config_write(t, &(struct it_cfg){.fsync = "batch",
                                      .cij_max_in_flight = MAX_IN_FLIGHT,
                                      .hook_max_in_flight = MAX_IN_FLIGHT});

  uint64_t rng = SEED;
  unsigned running = 0;
  for (unsigned round = 1; round <= ROUNDS; round++) {
    long after = 300 + (long)(next_rand(&rng) % 1201);
    it_relay_spawn(t);
    it_sleep_ms(it_slow(t, after));
    it_relay_kill(t);
    running += reached_running(t, t->relay_runs);
  }
  struct it_diff a, b;
  it_diff(t, "trigger", NULL, 0, &a);
  it_diff(t, "webhook:audit", NULL, 0, &b);
  fprintf(stderr,
          "[crash] %u kills (seed %llu), %u of them after the relay was running; so far %lld "
          "triggers and %lld webhook deliveries\n",
          ROUNDS, (unsigned long long)SEED, running, (long long)a.delivered,
          (long long)b.delivered);
  assert_true(a.delivered > 0 && b.delivered > 0); /* the rounds did work between the kills */
  it_diff_free(&a);
  it_diff_free(&b);

  tear_aof(t);
  int64_t cutoff = it_wall_ms();
  it_relay_start(t);
  yajl_val st = it_admin_json(t, "/v1/status");
  fprintf(stderr, "[crash] final start: torn_tails %lld, records replayed %lld, live %lld\n",
          (long long)it_int(st, "store.torn_tails"),
          (long long)it_int(st, "store.records_replayed"), (long long)it_int(st, "state.live"));
  assert_int_equal(it_int(st, "store.torn_tails"), 1);
  assert_true(YAJL_IS_TRUE(csr_json_path(st, "store.healthy")));
  csr_json_free(st);

  it_wait_complete(t, SINKS, cutoff, 120000);
  assert_int_equal(it_relay_stop(t, 15000, NULL), 0);

  yajl_val l = it_sim_json(t, "/ledger");
  int64_t dt = it_int(l, "trigger.duplicates"), dw = it_int(l, "webhook.audit.duplicates");
  int64_t bound = (int64_t)MAX_IN_FLIGHT * ROUNDS;
  fprintf(stderr,
          "[crash] generated %lld; duplicates: trigger %lld, webhook %lld, total %lld; bound %lld "
          "per sink, %lld in all\n",
          (long long)it_int(l, "generated.total"), (long long)dt, (long long)dw,
          (long long)(dt + dw), (long long)bound, (long long)(2 * bound));
  assert_true(dt <= bound);
  assert_true(dw <= bound);
  assert_true(dt + dw <= 2 * bound);
  assert_int_equal(it_int(l, "trigger.unknown"), 0);
  assert_int_equal(it_int(l, "trigger.mismatched"), 0);
  assert_int_equal(it_int(l, "webhook.audit.unknown"), 0);
  assert_int_equal(it_int(l, "webhook.audit.mismatched"), 0);
  csr_json_free(l);
  for (size_t i = 0; SINKS[i]; i++) {
    struct it_diff d;
    it_diff(t, SINKS[i], NULL, cutoff, &d);
    it_diff_print(SINKS[i], &d);
    assert_int_equal(d.missing, 0);
    assert_int_equal(d.unexpected, 0);
    it_diff_free(&d);
  }
  it_pass(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_crash, it_cm_setup, it_cm_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
