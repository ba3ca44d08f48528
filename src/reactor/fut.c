/* Futures: one-shot completions that are always delivered from the loop, never synchronously.
 *
 * rx_fut_resolve() appends to the loop's ready list and wakes the idle handle so the loop does not
 * block in poll while work is queued; the check handle drains the list once per turn.
 */
#include <assert.h>

#include "internal.h"

enum { FUT_IDLE, FUT_PENDING, FUT_QUEUED };

void rx_fut_init(struct rx_fut *fut, struct rx_loop *loop, rx_fut_cb cb) {
  assert(fut->_state != FUT_QUEUED && "re-arming a future whose callback has not run");
  fut->loop = loop;
  fut->result = 0;
  fut->_cb = cb;
  fut->_next = NULL;
  fut->_state = FUT_PENDING;
}

int rx_fut_pending(const struct rx_fut *fut) {
  return fut->_state != FUT_IDLE;
}

static void on_idle(uv_idle_t *idle) {
  /* Nothing to do: being active is the point (see rx_fut_resolve). */
}

int rx_fut_resolve(struct rx_fut *fut, int result) {
  if (fut->_state != FUT_PENDING)
    return UV_EALREADY;
  struct rx_loop *loop = fut->loop;
  fut->result = result;
  fut->_state = FUT_QUEUED;
  fut->_next = NULL;
  if (loop->_ready_tail)
    loop->_ready_tail->_next = fut;
  else
    loop->_ready_head = fut;
  loop->_ready_tail = fut;
  /* An active idle handle makes uv_run poll with a zero timeout, so the check runs this turn. */
  if (!uv_is_active((uv_handle_t *)&loop->_idle))
    uv_idle_start(&loop->_idle, on_idle);
  return 0;
}

void rx__fut_drain(struct rx_loop *loop) {
  /* Futures resolved by these callbacks join the tail and run in this same drain: a chain of
   * stages advances in one turn without re-entering any caller. */
  while (loop->_ready_head) {
    struct rx_fut *fut = loop->_ready_head;
    loop->_ready_head = fut->_next;
    if (loop->_ready_head == NULL)
      loop->_ready_tail = NULL;
    fut->_next = NULL;
    fut->_state = FUT_IDLE;
    loop->futures_run++;
    fut->_cb(fut);
  }
  uv_idle_stop(&loop->_idle);
}

static void join_maybe_resolve(struct rx_join *join) {
  if (join->_sealed && join->pending == 0)
    rx_fut_resolve(&join->fut, join->first_error);
}

void rx_join_init(struct rx_join *join, struct rx_loop *loop, rx_fut_cb cb) {
  rx_fut_init(&join->fut, loop, cb);
  join->pending = 0;
  join->first_error = 0;
  join->_sealed = 0;
}

void rx_join_add(struct rx_join *join) {
  assert(join->fut._state == FUT_PENDING);
  join->pending++;
}

void rx_join_done(struct rx_join *join, int result) {
  assert(join->pending > 0);
  if (result < 0 && join->first_error == 0)
    join->first_error = result;
  join->pending--;
  join_maybe_resolve(join);
}

void rx_join_seal(struct rx_join *join) {
  join->_sealed = 1;
  join_maybe_resolve(join);
}
