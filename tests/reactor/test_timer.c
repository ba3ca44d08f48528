/* Timers: self-rescheduling callbacks, stop, delays as futures, cancel, backoff bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "csurelay/reactor.h"

static void loop_setup(uv_loop_t *uv, struct rx_loop *loop) {
  assert_int_equal(uv_loop_init(uv), 0);
  assert_int_equal(rx_loop_init(loop, uv), 0);
}

struct ticker {
  struct rx_timer timer;
  int ticks;
  int limit;
  int closed;
  uint64_t first_ms;
  uint64_t last_ms;
};

static uint64_t on_tick(struct rx_timer *timer) {
  struct ticker *t = RX_CONTAINER_OF(timer, struct ticker, timer);
  uint64_t now = rx_now_ms(timer->loop);
  if (t->ticks++ == 0)
    t->first_ms = now;
  t->last_ms = now;
  return t->ticks < t->limit ? 5 : RX_TIMER_STOP;
}

static void on_ticker_closed(struct rx_timer *timer) {
  RX_CONTAINER_OF(timer, struct ticker, timer)->closed++;
}

static void test_callback_returns_next_delay(void **state) {
  uv_loop_t uv;
  struct rx_loop loop;
  struct ticker t = {.limit = 4};
  loop_setup(&uv, &loop);
  assert_int_equal(rx_timer_init(&t.timer, &loop), 0);
  assert_int_equal(rx_timer_start(&t.timer, on_tick, 1), 0);
  rx_loop_run(&loop); /* returns when the timer stops itself */
  assert_int_equal(t.ticks, 4);
  assert_true(t.last_ms - t.first_ms >= 15); /* three 5 ms gaps, monotonic */
  assert_false(rx_timer_active(&t.timer));
  rx_timer_close(&t.timer, on_ticker_closed);
  assert_int_equal(rx_loop_close(&loop), 0);
  assert_int_equal(t.closed, 1);
}

static void test_start_rejects_null_callback(void **state) {
  uv_loop_t uv;
  struct rx_loop loop;
  struct ticker t = {0};
  loop_setup(&uv, &loop);
  assert_int_equal(rx_timer_init(&t.timer, &loop), 0);
  assert_int_equal(rx_timer_start(&t.timer, NULL, 1), UV_EINVAL);
  assert_int_equal(rx_timer_start(&t.timer, on_tick, RX_TIMER_STOP), UV_EINVAL);
  rx_timer_close(&t.timer, NULL);
  assert_int_equal(rx_loop_close(&loop), 0);
}

static void test_stop_prevents_callback(void **state) {
  uv_loop_t uv;
  struct rx_loop loop;
  struct ticker t = {.limit = 100};
  loop_setup(&uv, &loop);
  assert_int_equal(rx_timer_init(&t.timer, &loop), 0);
  assert_int_equal(rx_timer_start(&t.timer, on_tick, 1), 0);
  assert_true(rx_timer_active(&t.timer));
  rx_timer_stop(&t.timer);
  rx_loop_run(&loop);
  assert_int_equal(t.ticks, 0);
  rx_timer_close(&t.timer, NULL);
  assert_int_equal(rx_loop_close(&loop), 0);
}

struct waiter {
  struct rx_delay delay;
  int calls;
  int result;
  uint64_t started_ms;
  uint64_t fired_ms;
};

static void on_delay(struct rx_fut *fut) {
  struct waiter *w = RX_CONTAINER_OF(fut, struct waiter, delay.fut);
  w->calls++;
  w->result = fut->result;
  w->fired_ms = rx_now_ms(fut->loop);
}

static void test_delay_resolves_after_time(void **state) {
  uv_loop_t uv;
  struct rx_loop loop;
  struct waiter w = {0};
  loop_setup(&uv, &loop);
  assert_int_equal(rx_delay_init(&w.delay, &loop), 0);
  w.started_ms = rx_now_ms(&loop);
  assert_int_equal(rx_delay_start(&w.delay, 20, on_delay), 0);
  assert_int_equal(rx_delay_start(&w.delay, 20, on_delay), UV_EBUSY);
  rx_loop_run(&loop);
  assert_int_equal(w.calls, 1);
  assert_int_equal(w.result, 0);
  assert_true(w.fired_ms - w.started_ms >= 20);
  rx_delay_close(&w.delay, NULL);
  assert_int_equal(rx_loop_close(&loop), 0);
  assert_int_equal(w.calls, 1); /* closing an elapsed delay completes nothing again */
}

static void test_delay_cancel_completes_once(void **state) {
  uv_loop_t uv;
  struct rx_loop loop;
  struct waiter w = {0};
  loop_setup(&uv, &loop);
  assert_int_equal(rx_delay_init(&w.delay, &loop), 0);
  assert_int_equal(rx_delay_start(&w.delay, 60000, on_delay), 0);
  rx_delay_cancel(&w.delay);
  rx_delay_cancel(&w.delay);
  rx_loop_run(&loop); /* must not wait a minute: the timer is stopped */
  assert_int_equal(w.calls, 1);
  assert_int_equal(w.result, UV_ECANCELED);
  rx_delay_close(&w.delay, NULL);
  assert_int_equal(rx_loop_close(&loop), 0);
}

static void test_backoff_full_jitter_bounds(void **state) {
  uint64_t rng = 42;
  uint64_t max_seen[12] = {0};
  for (int round = 0; round < 2000; round++) {
    for (unsigned attempt = 0; attempt < 12; attempt++) {
      uint64_t ms = rx_backoff_ms(attempt, 100, 30000, &rng);
      uint64_t ceiling = 100ull << attempt;
      if (ceiling > 30000)
        ceiling = 30000;
      assert_true(ms <= ceiling);
      if (ms > max_seen[attempt])
        max_seen[attempt] = ms;
    }
  }
  /* Full jitter spreads over the whole window: the largest draw gets near each ceiling. */
  assert_true(max_seen[0] >= 90);
  assert_true(max_seen[11] >= 27000);
  assert_true(rx_backoff_ms(200, 100, 30000, &rng) <= 30000); /* no shift overflow */
  assert_int_equal(rx_backoff_ms(3, 0, 0, &rng), 0);
}

static void test_rand_is_deterministic_per_seed(void **state) {
  uint64_t a = 7, b = 7, c = 8;
  uint64_t x = rx_rand64(&a), y = rx_rand64(&b), z = rx_rand64(&c);
  assert_true(x == y);
  assert_true(x != z);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_callback_returns_next_delay),
      cmocka_unit_test(test_start_rejects_null_callback),
      cmocka_unit_test(test_stop_prevents_callback),
      cmocka_unit_test(test_delay_resolves_after_time),
      cmocka_unit_test(test_delay_cancel_completes_once),
      cmocka_unit_test(test_backoff_full_jitter_bounds),
      cmocka_unit_test(test_rand_is_deterministic_per_seed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
