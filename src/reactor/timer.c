/* Timers on the monotonic clock: the callback returns its next delay (Redis ae style), delays as
 * futures for retries, and the jittered backoff they wait on. */
#include "internal.h"

static void on_timer(uv_timer_t *handle) {
  struct rx_timer *timer = RX_CONTAINER_OF(handle, struct rx_timer, _uv);
  uint64_t next = timer->_cb(timer);
  /* The callback may have stopped, restarted or closed the timer itself; respect that. */
  if (next == RX_TIMER_STOP || uv_is_closing((uv_handle_t *)handle) || uv_is_active((uv_handle_t *)handle))
    return;
  uv_timer_start(handle, on_timer, next, 0);
}

int rx_timer_init(struct rx_timer *timer, struct rx_loop *loop) {
  *timer = (struct rx_timer){.loop = loop};
  return uv_timer_init(loop->uv, &timer->_uv);
}

int rx_timer_start(struct rx_timer *timer, rx_timer_cb cb, uint64_t delay_ms) {
  if (cb == NULL || delay_ms == RX_TIMER_STOP)
    return UV_EINVAL;
  timer->_cb = cb;
  return uv_timer_start(&timer->_uv, on_timer, delay_ms, 0);
}

void rx_timer_stop(struct rx_timer *timer) {
  uv_timer_stop(&timer->_uv);
}

int rx_timer_active(const struct rx_timer *timer) {
  return uv_is_active((const uv_handle_t *)&timer->_uv);
}

static void on_timer_closed(uv_handle_t *handle) {
  struct rx_timer *timer = RX_CONTAINER_OF(handle, struct rx_timer, _uv);
  if (timer->_close_cb)
    timer->_close_cb(timer);
}

void rx_timer_close(struct rx_timer *timer, rx_timer_close_cb cb) {
  timer->_close_cb = cb;
  uv_close((uv_handle_t *)&timer->_uv, on_timer_closed);
}

void rx_timer_unref(struct rx_timer *timer) {
  uv_unref((uv_handle_t *)&timer->_uv);
}

static uint64_t on_delay_elapsed(struct rx_timer *timer) {
  struct rx_delay *delay = RX_CONTAINER_OF(timer, struct rx_delay, _timer);
  rx_fut_resolve(&delay->fut, 0);
  return RX_TIMER_STOP;
}

int rx_delay_init(struct rx_delay *delay, struct rx_loop *loop) {
  delay->fut = (struct rx_fut){.loop = loop};
  return rx_timer_init(&delay->_timer, loop);
}

int rx_delay_start(struct rx_delay *delay, uint64_t delay_ms, rx_fut_cb cb) {
  if (cb == NULL)
    return UV_EINVAL;
  if (rx_fut_pending(&delay->fut))
    return UV_EBUSY;
  int rc = rx_timer_start(&delay->_timer, on_delay_elapsed, delay_ms);
  if (rc == 0)
    rx_fut_init(&delay->fut, delay->_timer.loop, cb);
  return rc;
}

void rx_delay_cancel(struct rx_delay *delay) {
  rx_timer_stop(&delay->_timer);
  rx_fut_resolve(&delay->fut, UV_ECANCELED);
}

void rx_delay_close(struct rx_delay *delay, rx_timer_close_cb cb) {
  rx_delay_cancel(delay);
  rx_timer_close(&delay->_timer, cb);
}

uint64_t rx_rand64(uint64_t *state) {
  uint64_t x = *state ? *state : 0x9E3779B97F4A7C15ull;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545F4914F6CDD1Dull;
}

uint64_t rx_backoff_ms(unsigned attempt, uint64_t base_ms, uint64_t cap_ms, uint64_t *rng) {
  /* Full jitter (AWS architecture blog): sleep = random(0, min(cap, base * 2^attempt)). */
  uint64_t ceiling = cap_ms;
  if (attempt < 63 && base_ms <= (cap_ms >> attempt))
    ceiling = base_ms << attempt;
  return ceiling == 0 ? 0 : rx_rand64(rng) % (ceiling + 1);
}
