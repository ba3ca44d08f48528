/* Futures: never synchronous, exactly one completion, FIFO order, chains, joins. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "csurelay/reactor.h"

struct stage {
  struct rx_fut fut;
  int calls;
  int result;
  int order;
};

static int order_counter;

static void on_stage(struct rx_fut *fut) {
  struct stage *st = RX_CONTAINER_OF(fut, struct stage, fut);
  st->calls++;
  st->result = fut->result;
  st->order = ++order_counter;
}

static void loop_setup(uv_loop_t *uv, struct rx_loop *loop) {
  assert_int_equal(uv_loop_init(uv), 0);
  assert_int_equal(rx_loop_init(loop, uv), 0);
  order_counter = 0;
}

static void test_resolve_is_never_synchronous(void **state) {
  uv_loop_t uv;
  struct rx_loop loop;
  struct stage st = {0};
  loop_setup(&uv, &loop);
  rx_fut_init(&st.fut, &loop, on_stage);
  assert_true(rx_fut_pending(&st.fut));
  assert_int_equal(rx_fut_resolve(&st.fut, -5), 0);
  assert_int_equal(st.calls, 0); /* queued, not called */
  assert_int_equal(rx_fut_resolve(&st.fut, 0), UV_EALREADY);
  rx_loop_run(&loop);
  assert_int_equal(st.calls, 1);
  assert_int_equal(st.result, -5); /* the first resolution wins */
  assert_false(rx_fut_pending(&st.fut));
  assert_int_equal(rx_fut_resolve(&st.fut, 0), UV_EALREADY); /* idle: ignored */
  assert_int_equal(rx_loop_close(&loop), 0);
  assert_int_equal(st.calls, 1);
}

static void test_fifo_order(void **state) {
  uv_loop_t uv;
  struct rx_loop loop;
  struct stage st[5] = {0};
  loop_setup(&uv, &loop);
  for (int i = 0; i < 5; i++)
    rx_fut_init(&st[i].fut, &loop, on_stage);
  for (int i = 4; i >= 0; i--)
    rx_fut_resolve(&st[i].fut, i);
  rx_loop_run(&loop);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(st[i].calls, 1);
    assert_int_equal(st[i].order, 5 - i);
    assert_int_equal(st[i].result, i);
  }
  assert_int_equal(loop.futures_run, 5);
  assert_int_equal(rx_loop_close(&loop), 0);
}

/* One event's stages: each callback re-arms the same future for the next stage. */
struct chain {
  struct rx_fut fut;
  int stage;
  int seen[4];
};

static void on_chain(struct rx_fut *fut) {
  struct chain *c = RX_CONTAINER_OF(fut, struct chain, fut);
  c->seen[c->stage] = fut->result;
  if (++c->stage < 4) {
    rx_fut_init(fut, fut->loop, on_chain);
    rx_fut_resolve(fut, c->stage * 10);
  }
}

static void test_chain_of_stages(void **state) {
  uv_loop_t uv;
  struct rx_loop loop;
  struct chain c = {0};
  loop_setup(&uv, &loop);
  rx_fut_init(&c.fut, &loop, on_chain);
  rx_fut_resolve(&c.fut, 0);
  rx_loop_run(&loop);
  assert_int_equal(c.stage, 4);
  assert_int_equal(c.seen[1], 10);
  assert_int_equal(c.seen[3], 30);
  assert_int_equal(rx_loop_close(&loop), 0);
}

struct join_test {
  struct rx_join join;
  int calls;
  int result;
};

static void on_join(struct rx_fut *fut) {
  struct join_test *jt = RX_CONTAINER_OF(fut, struct join_test, join.fut);
  jt->calls++;
  jt->result = fut->result;
}

static void test_join_waits_for_all_children(void **state) {
  uv_loop_t uv;
  struct rx_loop loop;
  struct join_test jt = {0};
  loop_setup(&uv, &loop);
  rx_join_init(&jt.join, &loop, on_join);
  rx_join_add(&jt.join);
  rx_join_add(&jt.join);
  rx_join_add(&jt.join);
  rx_join_done(&jt.join, 0);
  rx_join_done(&jt.join, UV_ETIMEDOUT);
  rx_join_seal(&jt.join);
  rx_loop_run(&loop);
  assert_int_equal(jt.calls, 0); /* one child still out */
  rx_join_done(&jt.join, UV_ECONNRESET);
  rx_loop_run(&loop);
  assert_int_equal(jt.calls, 1);
  assert_int_equal(jt.result, UV_ETIMEDOUT); /* the first error */
  assert_int_equal(rx_loop_close(&loop), 0);
}

static void test_join_sealed_empty_resolves(void **state) {
  uv_loop_t uv;
  struct rx_loop loop;
  struct join_test jt = {0};
  loop_setup(&uv, &loop);
  rx_join_init(&jt.join, &loop, on_join);
  rx_join_seal(&jt.join);
  rx_loop_run(&loop);
  assert_int_equal(jt.calls, 1);
  assert_int_equal(jt.result, 0);
  assert_int_equal(rx_loop_close(&loop), 0);
}

/* A future resolved but never drained by a run still completes when the loop closes. */
static void test_close_drains_ready_list(void **state) {
  uv_loop_t uv;
  struct rx_loop loop;
  struct stage st = {0};
  loop_setup(&uv, &loop);
  rx_fut_init(&st.fut, &loop, on_stage);
  rx_fut_resolve(&st.fut, UV_ECANCELED);
  assert_int_equal(rx_loop_close(&loop), 0);
  assert_int_equal(st.calls, 1);
  assert_int_equal(st.result, UV_ECANCELED);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_resolve_is_never_synchronous),
      cmocka_unit_test(test_fifo_order),
      cmocka_unit_test(test_chain_of_stages),
      cmocka_unit_test(test_join_waits_for_all_children),
      cmocka_unit_test(test_join_sealed_empty_resolves),
      cmocka_unit_test(test_close_drains_ready_list),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
