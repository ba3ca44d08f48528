/* The loop wrapper: the futures' ready list, signals, and an orderly close. */
#include <signal.h>
#include <time.h>

#include "internal.h"

static const int stop_signals[] = {SIGTERM, SIGINT, SIGHUP};

static void on_check(uv_check_t *check) {
  rx__fut_drain(RX_CONTAINER_OF(check, struct rx_loop, _check));
}

static void on_signal(uv_signal_t *sig, int signum) {
  struct rx_loop *loop = sig->data;
  if (signum == SIGHUP) {
    if (loop->_on_reload)
      loop->_on_reload(loop);
  } else if (loop->_on_stop) {
    loop->_on_stop(loop, signum);
  }
}

int rx_loop_init(struct rx_loop *loop, uv_loop_t *uv) {
  if (uv == NULL)
    return UV_EINVAL;
  *loop = (struct rx_loop){.uv = uv};
  int rc = uv_check_init(uv, &loop->_check);
  if (rc < 0)
    return rc;
  rc = uv_idle_init(uv, &loop->_idle);
  if (rc < 0) {
    uv_close((uv_handle_t *)&loop->_check, NULL);
    return rc;
  }
  /* The check handle must not keep the loop alive by itself. The idle handle does, but it is active
   * only while futures wait on the ready list, so queued completions always get to run. */
  uv_check_start(&loop->_check, on_check);
  uv_unref((uv_handle_t *)&loop->_check);
  return 0;
}

int rx_loop_signals_start(struct rx_loop *loop, rx_stop_cb on_stop, rx_reload_cb on_reload) {
  loop->_on_stop = on_stop;
  loop->_on_reload = on_reload;
  if (loop->_signals_on)
    return 0;
  for (size_t i = 0; i < 3; i++) {
    int rc = uv_signal_init(loop->uv, &loop->_sig[i]);
    if (rc == 0)
      rc = uv_signal_start(&loop->_sig[i], on_signal, stop_signals[i]);
    if (rc < 0) {
      for (size_t j = 0; j <= i; j++)
        uv_close((uv_handle_t *)&loop->_sig[j], NULL);
      return rc;
    }
    loop->_sig[i].data = loop;
    uv_unref((uv_handle_t *)&loop->_sig[i]);
  }
  loop->_signals_on = 1;
  return 0;
}

int rx_loop_run(struct rx_loop *loop) {
  return uv_run(loop->uv, UV_RUN_DEFAULT);
}

int rx_loop_close(struct rx_loop *loop) {
  /* Futures resolved during shutdown still deserve their callbacks. */
  rx__fut_drain(loop);
  if (loop->_signals_on) {
    for (size_t i = 0; i < 3; i++)
      uv_close((uv_handle_t *)&loop->_sig[i], NULL);
    loop->_signals_on = 0;
  }
  uv_close((uv_handle_t *)&loop->_check, NULL);
  uv_close((uv_handle_t *)&loop->_idle, NULL);
  uv_run(loop->uv, UV_RUN_DEFAULT);
  return uv_loop_close(loop->uv);
}

uint64_t rx_now_ms(const struct rx_loop *loop) {
  return uv_now(loop->uv);
}

int64_t rx_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
