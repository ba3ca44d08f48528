/* The retry scheduler against csusim in-process: a webhook sink posting to the sim's receiver
 * /hooks/audit through its own rx_http, a scheduler on it, and events built here (the ledger counts
 * their ids as unknown, which is fine). Faults come from the sim's plan on endpoint "webhook".
 * Every callback is counted per item; each test ends by closing the scheduler, the sink, the client
 * and the sim, with a clean loop close. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/pipeline.h"
#include "sinks/sinktest.h"

#define GUARD_MS  30000
#define MAX_ITEMS 20000
#define MAX_TRIES 16

struct item {
  struct pl_sched_item it;
  struct fx *fx;
  int finals, attempts, cancels;
  unsigned tries;
  uint64_t starts[MAX_TRIES]; /* loop time each attempt started */
  uint64_t ends[MAX_TRIES];   /* loop time each attempt's answer came */
  char id[96];
  struct sk_event ev;
  struct sk_delivery last; /* the last answer, copied in the callback (the scheduler lends it) */
};

struct fx {
  struct skt k;
  struct pl_sched *sched;
  struct pl_sched_opts opts;
  yajl_val event;
  struct item *items;
  size_t n;
  int finals, attempts, cancels;
  int sched_closed;
  int closed_after; /* finals + cancels when the scheduler's close callback fired */
  unsigned max_in_flight_seen;
};

/* ---------------------------------------------------------------------------------------------- */
/* Fixture */
/* ---------------------------------------------------------------------------------------------- */

static void note_in_flight(struct fx *fx) {
  if (fx->k.sink->in_flight > fx->max_in_flight_seen)
    fx->max_in_flight_seen = fx->k.sink->in_flight;
}

static void record_try(struct item *v) {
  if (v->tries < MAX_TRIES) {
    v->starts[v->tries] = v->it.started_ms;
    v->ends[v->tries] = rx_now_ms(&v->fx->k.t.loop);
  }
  v->tries++;
}

static void on_final(void *arg, struct pl_sched_item *it) {
  struct fx *fx = arg;
  struct item *v = RX_CONTAINER_OF(it, struct item, it);
  assert_ptr_equal(v->fx, fx);
  assert_non_null(it->d);
  assert_int_equal(it->outcome, it->d->outcome);
  v->last = *it->d;
  record_try(v);
  v->finals++;
  fx->finals++;
}

static void on_attempt(void *arg, struct pl_sched_item *it) {
  struct fx *fx = arg;
  struct item *v = RX_CONTAINER_OF(it, struct item, it);
  assert_non_null(it->d);
  assert_int_equal(it->d->outcome, SK_RETRY);
  assert_true(it->next_wall_ms > 0);
  v->last = *it->d;
  record_try(v);
  v->attempts++;
  fx->attempts++;
}

static void on_cancelled(void *arg, struct pl_sched_item *it) {
  struct fx *fx = arg;
  struct item *v = RX_CONTAINER_OF(it, struct item, it);
  v->cancels++;
  fx->cancels++;
}

static const struct pl_sched_ops ops = {
    .on_final = on_final, .on_attempt = on_attempt, .on_cancelled = on_cancelled};

/* A sim with `faults`, a webhook sink to `path` (NULL: /hooks/audit) with the given limits, a
 * scheduler on it (`opts` NULL: base 100 ms, cap 1 s, seed 42) and `n` items, not yet submitted. */
static struct fx *fx_start(const char *faults, const char *path, size_t n, unsigned max_in_flight,
                           double rate, const struct pl_sched_opts *opts) {
  struct fx *fx = calloc(1, sizeof(*fx));
  assert_non_null(fx);
  struct sim_opts o;
  sim_opts_default(&o);
  o.csus = 1;
  o.rate = 0;
  o.faults_yaml = faults;
  skt_start(&fx->k, &o, 64, 10000);
  fx->k.guard_ms = GUARD_MS;
  skt_webhook_conf(&fx->k, path, max_in_flight);
  fx->k.conf.rate_per_s = rate;
  skt_create_sink(&fx->k, "webhook");
  static const char text[] =
      "{\"EventType\":\"Checkout\",\"EventTransactionId\":\"T\",\"EventDateTime\":"
      "\"2024-07-24T14:17:02.16Z\",\"EventDataAreaId\":\"usrt\",\"EventData\":\"{}\"}";
  fx->event = csr_json_parse(text, strlen(text), NULL, 0);
  assert_non_null(fx->event);
  fx->n = n;
  fx->items = calloc(n, sizeof(*fx->items));
  assert_non_null(fx->items);
  for (size_t i = 0; i < n; i++) {
    struct item *v = &fx->items[i];
    v->fx = fx;
    snprintf(v->id, sizeof(v->id), "csu0|usrt|Checkout|T-%zu|2024-07-24T14:17:02.16Z", i);
    v->ev = (struct sk_event){.id = v->id, .csu = "csu0", .type = "Checkout", .event = fx->event};
    v->it.event = &v->ev;
  }
  fx->opts = opts ? *opts : (struct pl_sched_opts){.base_ms = 100, .cap_ms = 1000, .seed = 42};
  assert_int_equal(pl_sched_create(&fx->k.t.loop, fx->k.sink, &fx->opts, &ops, fx, &fx->sched), 0);
  return fx;
}

static void on_sched_closed(void *arg) {
  struct fx *fx = arg;
  fx->sched_closed++;
  fx->closed_after = fx->finals + fx->cancels;
}

static void fx_close_sched(struct fx *fx) {
  pl_sched_close(fx->sched, on_sched_closed, fx);
  pl_sched_close(fx->sched, on_sched_closed, fx); /* a second close is ignored */
  assert_int_equal(fx->sched_closed, 0);          /* never from inside the call */
  assert_true(skt_run_until(&fx->k, &fx->sched_closed, 1, GUARD_MS));
  /* Every submitted item came back exactly once, before the close callback. */
  assert_int_equal(fx->closed_after, fx->finals + fx->cancels);
}

static void fx_stop(struct fx *fx) {
  if (fx->sched_closed == 0)
    fx_close_sched(fx);
  skt_stop(&fx->k); /* the sink, the client, the sim */
  assert_int_equal(fx->sched_closed, 1);
  assert_int_equal(fx->k.sink_closed, 1);
  for (size_t i = 0; i < fx->n; i++)
    assert_true(fx->items[i].finals + fx->items[i].cancels <= 1);
  csr_json_free(fx->event);
  free(fx->items);
  free(fx);
}

static void submit_all(struct fx *fx, size_t from, size_t to) {
  int before = fx->finals + fx->attempts + fx->cancels;
  for (size_t i = from; i < to; i++)
    assert_int_equal(pl_sched_submit(fx->sched, &fx->items[i].it), 0);
  assert_int_equal(fx->finals + fx->attempts + fx->cancels, before); /* nothing synchronous */
}

static unsigned webhook_received(struct fx *fx) {
  struct sim_ledger_sink_counts c;
  int rc = sim_ledger_sink_counts(fx->k.t.sim.ledger, "webhook:audit", &c);
  if (rc == UV_ENOENT)
    return 0; /* the receiver never saw a request */
  assert_int_equal(rc, 0);
  return (unsigned)c.received;
}

/* Samples every millisecond: the requests the sim holds (a latency fault) and the sink's count. */
struct sampler {
  struct rx_timer timer;
  struct fx *fx;
  unsigned max_held;
};

static uint64_t on_sample(struct rx_timer *timer) {
  struct sampler *sm = timer->data;
  unsigned held = 0;
  for (const struct sim_req *r = sm->fx->k.t.sim._held; r; r = r->_next)
    if (strcmp(r->endpoint, "webhook") == 0)
      held++;
  if (held > sm->max_held)
    sm->max_held = held;
  note_in_flight(sm->fx);
  return 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* Limits */
/* ---------------------------------------------------------------------------------------------- */

static void test_in_flight_bound(void **state) {
  struct fx *fx = fx_start("endpoints:\n  webhook:\n    latency_ms: 20\n", NULL, 200, 8, 0, NULL);
  struct sampler sm = {.fx = fx};
  assert_int_equal(rx_timer_init(&sm.timer, &fx->k.t.loop), 0);
  sm.timer.data = &sm;
  assert_int_equal(rx_timer_start(&sm.timer, on_sample, 1), 0);
  submit_all(fx, 0, 200);
  struct pl_sched_stats st;
  pl_sched_stats(fx->sched, &st);
  assert_int_equal(st.queued, 200);
  assert_true(skt_run_until(&fx->k, &fx->finals, 200, GUARD_MS));
  rx_timer_close(&sm.timer, NULL);
  for (size_t i = 0; i < 200; i++) {
    assert_int_equal(fx->items[i].finals, 1);
    assert_int_equal(fx->items[i].it.outcome, SK_DELIVERED);
    assert_int_equal(fx->items[i].it.attempt, 1);
  }
  assert_true(sm.max_held <= 8);
  assert_true(sm.max_held >= 4); /* the bound was actually used */
  assert_true(fx->max_in_flight_seen <= 8);
  assert_int_equal(webhook_received(fx), 200);
  pl_sched_stats(fx->sched, &st);
  assert_int_equal(st.delivered, 200);
  assert_int_equal(st.queued + st.waiting + st.in_flight + st.retried + st.dead, 0);
  assert_int_equal(st.window, 8);
  /* 200 attempts went out on at most the window's deliveries (plus one being handed back). */
  assert_true(st.loans >= 4 && st.loans <= 9);
  fx_stop(fx);
}

/* Ready items start oldest event first, whatever order they were submitted in (ties: submission
 * order). One at a time, so the order of the answers is the order of the starts. */
static void test_oldest_first(void **state) {
  enum { N = 40 };
  struct fx *fx = fx_start("endpoints:\n  webhook:\n    latency_ms: 3\n", NULL, N, 1, 0, NULL);
  for (size_t i = 0; i < N; i++) /* a permutation of 0..N-1, in steps of 10 s; two equal pairs */
    fx->items[i].ev.time_ms = 1721830622000 + (int64_t)((i * 17) % N) * 10000 - (i == 5 || i == 9);
  fx->items[9].ev.time_ms = fx->items[5].ev.time_ms; /* a tie: 5 was submitted first */
  submit_all(fx, 0, N);
  assert_true(skt_run_until(&fx->k, &fx->finals, N, GUARD_MS));
  for (size_t i = 0; i < N; i++) {
    for (size_t j = 0; j < N; j++) {
      const struct item *a = &fx->items[i], *b = &fx->items[j];
      bool a_first = a->ev.time_ms < b->ev.time_ms || (a->ev.time_ms == b->ev.time_ms && i < j);
      if (i != j && a_first && a->ends[0] > b->ends[0])
        fail_msg("item %zu (t %lld) answered after item %zu (t %lld)", i, (long long)a->ev.time_ms,
                 j, (long long)b->ev.time_ms);
    }
  }
  fx_stop(fx);
}

static void test_rate(void **state) {
  struct fx *fx = fx_start(NULL, NULL, 100, 32, 50, NULL);
  uint64_t t0 = rx_now_ms(&fx->k.t.loop);
  submit_all(fx, 0, 100);
  assert_true(skt_run_until(&fx->k, &fx->finals, 100, GUARD_MS));
  uint64_t first = UINT64_MAX, last = 0;
  for (size_t i = 0; i < 100; i++) {
    assert_int_equal(fx->items[i].it.outcome, SK_DELIVERED);
    uint64_t s = fx->items[i].it.started_ms;
    first = s < first ? s : first;
    last = s > last ? s : last;
  }
  /* A burst of 5, then 50/s: the last start is at least 95 / 50 s after the first. */
  assert_true(last - first >= 1800);
  assert_true(rx_now_ms(&fx->k.t.loop) - t0 < 10000);
  /* No second in the run started more than 50 + the burst. */
  for (uint64_t w = first; w <= last; w += 100) {
    unsigned in = 0;
    for (size_t i = 0; i < 100; i++)
      in += fx->items[i].it.started_ms >= w && fx->items[i].it.started_ms < w + 1000;
    assert_true(in <= 56);
  }
  fx_stop(fx);
}

/* ---------------------------------------------------------------------------------------------- */
/* Transient failures */
/* ---------------------------------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void test_outage(void **state) {
  struct pl_sched_opts o = {.base_ms = 100, .cap_ms = 1000, .max_attempts = 30, .seed = 9};
  struct fx *fx = fx_start("endpoints:\n  webhook:\n    error_rate: 1.0\n    errors: [503]\n"
                           "    until_s: 2\n",
                           NULL, 40, 8, 0, &o);
  uint64_t up_at = rx_now_ms(&fx->k.t.loop) + 2000 - sim_elapsed_ms(&fx->k.t.sim);
  submit_all(fx, 0, 40);
  assert_true(skt_run_until(&fx->k, &fx->finals, 40, GUARD_MS));
  uint64_t starts[40];
  for (size_t i = 0; i < 40; i++) {
    struct item *v = &fx->items[i];
    assert_int_equal(v->it.outcome, SK_DELIVERED);
    assert_true(v->it.attempt >= 2);
    assert_true(v->it.started_ms + 100 >= up_at);
    starts[i] = v->it.started_ms;
    /* Each wait honoured its draw's floor of zero and the attempts were not back to back. */
    for (unsigned k = 1; k < v->tries && k < MAX_TRIES; k++)
      assert_true(v->starts[k] >= v->ends[k - 1]);
  }
  /* No busy loop: 2 s of outage at base 100 ms doubling to 1 s is a handful of tries each. */
  assert_true(fx->attempts >= 40);
  assert_true(fx->attempts <= 40 * 12);
  struct pl_sched_stats st;
  pl_sched_stats(fx->sched, &st);
  assert_int_equal(st.retried, (uint64_t)fx->attempts);
  assert_int_equal(st.delivered, 40);
  assert_int_equal(st.pauses, 0); /* a 503 without Retry-After is the item's, not the sink's */
  /* The comeback is spread by the jitter, not one burst at the same millisecond. */
  qsort(starts, 40, sizeof(starts[0]), cmp_u64);
  unsigned distinct = 1, same = 1, most = 1;
  for (size_t i = 1; i < 40; i++) {
    same = starts[i] == starts[i - 1] ? same + 1 : 1;
    distinct += starts[i] != starts[i - 1];
    most = same > most ? same : most;
  }
  assert_true(distinct >= 15);
  assert_true(most <= 8);
  assert_true(starts[39] - starts[0] >= 100);
  fx_stop(fx);
}

static void test_pause_429(void **state) {
  struct fx *fx = fx_start("endpoints:\n  webhook:\n    error_rate: 1.0\n    errors: [429]\n"
                           "    retry_after_s: 1\n",
                           NULL, 10, 4, 0, NULL);
  submit_all(fx, 0, 1);
  assert_true(skt_run_until(&fx->k, &fx->attempts, 1, GUARD_MS));
  struct item *a = &fx->items[0];
  assert_int_equal(a->last.status, 429);
  assert_int_equal(a->last.retry_after_ms, 1000);
  assert_null(a->it.d); /* waiting for its next attempt: the delivery went back */
  uint64_t t429 = a->ends[0];
  int64_t wall = rx_wall_ms();
  struct pl_sched_stats st;
  pl_sched_stats(fx->sched, &st);
  assert_int_equal(st.pauses, 1);
  assert_true(st.paused_until_ms > wall + 800 && st.paused_until_ms <= wall + 1000);
  assert_int_equal(st.window, 1);
  assert_true(a->it.next_wall_ms >= wall + 900); /* never before Retry-After */
  skt_set_faults(&fx->k, ""); /* healed, but the sink still waits out the pause */
  submit_all(fx, 1, 10);
  st_run_ms(&fx->k.t, 500);
  assert_int_equal(fx->finals, 0);
  assert_int_equal(fx->k.sink->in_flight, 0);
  assert_int_equal(webhook_received(fx), 0);
  assert_true(skt_run_until(&fx->k, &fx->finals, 10, GUARD_MS));
  for (size_t i = 0; i < 10; i++) {
    assert_int_equal(fx->items[i].it.outcome, SK_DELIVERED);
    assert_true(fx->items[i].it.started_ms >= t429 + 995);
  }
  assert_int_equal(a->it.attempt, 2);
  pl_sched_stats(fx->sched, &st);
  assert_int_equal(st.pauses, 1);
  assert_int_equal(st.paused_until_ms, 0);
  assert_int_equal(st.window, 4); /* ramped back up one answer at a time */
  fx_stop(fx);
}

/* 429s that keep coming: the pause doubles (Retry-After stays 1 s). */
static void test_pause_grows(void **state) {
  struct pl_sched_opts o = {.base_ms = 100, .cap_ms = 5000, .max_attempts = 3, .seed = 3};
  struct fx *fx = fx_start("endpoints:\n  webhook:\n    error_rate: 1.0\n    errors: [429]\n"
                           "    retry_after_s: 1\n",
                           NULL, 1, 4, 0, &o);
  submit_all(fx, 0, 1);
  assert_true(skt_run_until(&fx->k, &fx->finals, 1, GUARD_MS));
  struct item *a = &fx->items[0];
  assert_int_equal(a->tries, 3);
  assert_true(a->starts[1] - a->ends[0] >= 995);  /* the first pause: Retry-After */
  assert_true(a->starts[2] - a->ends[1] >= 1995); /* pushed again: twice as long */
  assert_int_equal(a->it.outcome, SK_DEAD);
  assert_string_equal(a->last.reason, "max_attempts: http_429");
  struct pl_sched_stats st;
  pl_sched_stats(fx->sched, &st);
  assert_int_equal(st.pauses, 3);
  assert_int_equal(st.dead, 1);
  fx_stop(fx);
}

static void test_max_attempts(void **state) {
  struct pl_sched_opts o = {.base_ms = 300, .cap_ms = 5000, .max_attempts = 3, .seed = 7};
  struct fx *fx = fx_start("endpoints:\n  webhook:\n    error_rate: 1.0\n    errors: [503]\n", NULL,
                           1, 8, 0, &o);
  submit_all(fx, 0, 1);
  assert_true(skt_run_until(&fx->k, &fx->finals, 1, GUARD_MS));
  struct item *a = &fx->items[0];
  assert_int_equal(a->finals, 1);
  assert_int_equal(a->attempts, 2);
  assert_int_equal(a->tries, 3);
  assert_int_equal(a->it.attempt, 3);
  assert_int_equal(a->last.attempt, 3);
  assert_int_equal(a->it.outcome, SK_DEAD);
  assert_int_equal(a->last.status, 503);
  assert_string_equal(a->last.reason, "max_attempts: http_503");
  assert_true(a->last.excerpt[0] != '\0');
  /* The waits are exactly the scheduler's draws (one item, one generator, seed 7). */
  uint64_t rng = 7;
  uint64_t d1 = rx_backoff_ms(0, 300, 5000, &rng);
  uint64_t d2 = rx_backoff_ms(1, 300, 5000, &rng);
  assert_true(a->starts[1] - a->ends[0] >= d1);
  assert_true(a->starts[1] - a->ends[0] <= d1 + 200);
  assert_true(a->starts[2] - a->ends[1] >= d2);
  assert_true(a->starts[2] - a->ends[1] <= d2 + 200);
  struct pl_sched_stats st;
  pl_sched_stats(fx->sched, &st);
  assert_int_equal(st.retried, 3);
  assert_int_equal(st.dead, 1);
  assert_int_equal(st.pauses, 0);
  fx_stop(fx);
}

/* ---------------------------------------------------------------------------------------------- */
/* Permanent failures, schedules from the store */
/* ---------------------------------------------------------------------------------------------- */

static void test_permanent_404(void **state) {
  struct fx *fx = fx_start(NULL, "/nope", 1, 8, 0, NULL);
  submit_all(fx, 0, 1);
  assert_true(skt_run_until(&fx->k, &fx->finals, 1, GUARD_MS));
  struct item *a = &fx->items[0];
  assert_int_equal(a->it.outcome, SK_DEAD);
  assert_int_equal(a->it.attempt, 1);
  assert_int_equal(a->attempts, 0);
  assert_int_equal(a->last.status, 404);
  assert_string_equal(a->last.reason, "http_404");
  assert_true(a->last.excerpt[0] != '\0');
  struct pl_sched_stats st;
  pl_sched_stats(fx->sched, &st);
  assert_int_equal(st.dead, 1);
  assert_int_equal(st.retried, 0);
  fx_stop(fx);
}

static void test_submit_at(void **state) {
  struct fx *fx = fx_start(NULL, NULL, 52, 64, 0, NULL);
  uint64_t now = rx_now_ms(&fx->k.t.loop);
  int64_t wall = rx_wall_ms();
  /* A replayed attempt 4 due in 800 ms, one overdue (runs now), and 50 at shuffled times. */
  assert_int_equal(pl_sched_submit_at(fx->sched, &fx->items[0].it, 4, wall + 800), 0);
  assert_int_equal(pl_sched_submit_at(fx->sched, &fx->items[1].it, 2, wall - 5000), 0);
  assert_int_equal(pl_sched_submit_at(fx->sched, &fx->items[1].it, 2, wall), UV_EBUSY);
  assert_int_equal(pl_sched_submit_at(fx->sched, &fx->items[2].it, 0, wall), UV_EINVAL);
  uint64_t due[52] = {0};
  uint64_t rng = 5;
  for (size_t i = 2; i < 52; i++) {
    uint64_t in = 100 + rx_rand64(&rng) % 500;
    due[i] = now + in;
    assert_int_equal(pl_sched_submit_at(fx->sched, &fx->items[i].it, 1, wall + (int64_t)in), 0);
  }
  struct pl_sched_stats st;
  pl_sched_stats(fx->sched, &st);
  assert_int_equal(st.waiting, 51);
  assert_int_equal(st.queued, 1);
  assert_true(skt_run_until(&fx->k, &fx->finals, 1, GUARD_MS));
  assert_int_equal(fx->items[1].finals, 1);
  assert_int_equal(fx->items[1].last.attempt, 2);
  assert_true(skt_run_until(&fx->k, &fx->finals, 52, GUARD_MS));
  struct item *a = &fx->items[0];
  assert_int_equal(a->it.outcome, SK_DELIVERED);
  assert_int_equal(a->last.attempt, 4);
  assert_true(a->it.started_ms >= now + 795);
  for (size_t i = 2; i < 52; i++) {
    assert_int_equal(fx->items[i].it.outcome, SK_DELIVERED);
    assert_true(fx->items[i].it.started_ms + 5 >= due[i]);
  }
  /* Started in due order (the heap), within the clocks' rounding. */
  for (size_t i = 2; i < 52; i++)
    for (size_t j = 2; j < 52; j++)
      if (due[i] + 10 < due[j])
        assert_true(fx->items[i].it.started_ms <= fx->items[j].it.started_ms);
  fx_stop(fx);
}

/* ---------------------------------------------------------------------------------------------- */
/* Cancel and close */
/* ---------------------------------------------------------------------------------------------- */

static void test_close(void **state) {
  struct fx *fx = fx_start("endpoints:\n  webhook:\n    latency_ms: 5000\n", NULL, 8, 2, 0, NULL);
  int64_t wall = rx_wall_ms();
  submit_all(fx, 0, 5); /* 2 in flight, 3 queued */
  for (size_t i = 5; i < 8; i++)
    assert_int_equal(pl_sched_submit_at(fx->sched, &fx->items[i].it, 3, wall + 60000), 0);
  st_run_ms(&fx->k.t, 200);
  struct pl_sched_stats st;
  pl_sched_stats(fx->sched, &st);
  assert_int_equal(st.in_flight, 2);
  assert_int_equal(st.queued, 3);
  assert_int_equal(st.waiting, 3);
  /* One waiting item cancelled on its own: back through on_cancelled, from the loop. */
  pl_sched_cancel(&fx->items[7].it);
  pl_sched_cancel(&fx->items[7].it);
  assert_int_equal(fx->cancels, 0);
  st_run_ms(&fx->k.t, 20);
  assert_int_equal(fx->items[7].cancels, 1);
  pl_sched_stats(fx->sched, &st);
  assert_int_equal(st.waiting, 2);
  /* Close: everything comes back once, none as final; the in-flight ones are cancelled. */
  pl_sched_close(fx->sched, on_sched_closed, fx);
  assert_int_equal(pl_sched_submit(fx->sched, &fx->items[7].it), UV_ECANCELED);
  assert_int_equal(fx->cancels, 1);
  assert_true(skt_run_until(&fx->k, &fx->sched_closed, 1, GUARD_MS));
  assert_int_equal(fx->closed_after, 8);
  assert_int_equal(fx->finals, 0);
  assert_int_equal(fx->attempts, 0);
  for (size_t i = 0; i < 8; i++)
    assert_int_equal(fx->items[i].cancels, 1);
  assert_int_equal(fx->k.sink->in_flight, 0);
  assert_int_equal(fx->k.sink->retried, 2); /* the two cancelled deliveries */
  fx_stop(fx);
}

/* Tens of thousands waiting cost one heap slot each; cancel and close hand every one back. */
static void test_many_waiting(void **state) {
  struct fx *fx = fx_start(NULL, NULL, MAX_ITEMS, 8, 0, NULL);
  int64_t wall = rx_wall_ms();
  uint64_t rng = 11;
  for (size_t i = 0; i < MAX_ITEMS; i++)
    assert_int_equal(pl_sched_submit_at(fx->sched, &fx->items[i].it, 2,
                                        wall + 30000 + (int64_t)(rx_rand64(&rng) % 60000)),
                     0);
  for (size_t i = 0; i < MAX_ITEMS; i += 2)
    pl_sched_cancel(&fx->items[i].it);
  st_run_ms(&fx->k.t, 20);
  assert_int_equal(fx->cancels, MAX_ITEMS / 2);
  struct pl_sched_stats st;
  pl_sched_stats(fx->sched, &st);
  assert_int_equal(st.waiting, MAX_ITEMS / 2);
  assert_int_equal(st.in_flight + st.queued, 0);
  assert_int_equal(st.loans, 0); /* waiting items hold no delivery */
  fx_close_sched(fx);
  assert_int_equal(fx->cancels, MAX_ITEMS);
  assert_int_equal(fx->finals, 0);
  assert_int_equal(webhook_received(fx), 0);
  fx_stop(fx);
}

/* A callback may close the scheduler; the rest still come back once. */
static void on_final_close(void *arg, struct pl_sched_item *it) {
  struct fx *fx = arg;
  on_final(arg, it);
  if (fx->finals == 3)
    pl_sched_close(fx->sched, on_sched_closed, fx);
}

static void test_close_from_callback(void **state) {
  struct fx *fx = fx_start(NULL, NULL, 20, 1, 0, NULL);
  pl_sched_close(fx->sched, on_sched_closed, fx); /* an empty scheduler closes at once */
  assert_true(skt_run_until(&fx->k, &fx->sched_closed, 1, GUARD_MS));
  fx->sched_closed = 0;
  struct pl_sched_ops o = ops;
  o.on_final = on_final_close;
  assert_int_equal(pl_sched_create(&fx->k.t.loop, fx->k.sink, &fx->opts, &o, fx, &fx->sched), 0);
  submit_all(fx, 0, 20);
  assert_true(skt_run_until(&fx->k, &fx->sched_closed, 1, GUARD_MS));
  assert_int_equal(fx->finals, 3);
  assert_int_equal(fx->cancels, 17);
  assert_int_equal(fx->closed_after, 20);
  fx_stop(fx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_in_flight_bound),
      cmocka_unit_test(test_oldest_first),
      cmocka_unit_test(test_rate),
      cmocka_unit_test(test_outage),
      cmocka_unit_test(test_pause_429),
      cmocka_unit_test(test_pause_grows),
      cmocka_unit_test(test_max_attempts),
      cmocka_unit_test(test_permanent_404),
      cmocka_unit_test(test_submit_at),
      cmocka_unit_test(test_close),
      cmocka_unit_test(test_many_waiting),
      cmocka_unit_test(test_close_from_callback),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
