/* The sink tests' shared fixture: see sinktest.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sinktest.h"

void skt_write_events(struct skt *k, const char *prefix, const char *text, size_t len) {
  snprintf(k->events_path, sizeof(k->events_path), "/tmp/%s_XXXXXX", prefix);
  int fd = mkstemp(k->events_path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, len), (ssize_t)len);
  close(fd);
}

void skt_start(struct skt *k, const struct sim_opts *o, unsigned max_per_host,
               uint64_t timeout_ms) {
  struct sim_opts opts = *o;
  if (k->events_path[0])
    opts.events_path = k->events_path;
  st_start_opts(&k->t, &opts);
  struct rx_http_opts hopts = {.max_per_host = max_per_host};
  assert_int_equal(rx_http_init(&k->http, &k->t.loop, &hopts), 0);
  k->env = (struct sk_env){.loop = &k->t.loop, .http = &k->http, .default_timeout_ms = timeout_ms};
  k->guard_ms = SKT_GUARD_MS;
}

void skt_webhook_conf(struct skt *k, const char *path, unsigned max_in_flight) {
  snprintf(k->url, sizeof(k->url), "%s%s", k->t.sim.base_url, path ? path : "/hooks/audit");
  k->conf = (struct csr_sink_conf){.name = "audit",
                                   .type = CSR_SINK_WEBHOOK,
                                   .url = k->url,
                                   .max_in_flight = max_in_flight,
                                   .line = 1};
}

void skt_create_sink(struct skt *k, const char *type) {
  struct csr_err err;
  int rc = sk_sink_create(&k->conf, &k->env, &k->sink, &err);
  if (rc < 0) {
    char buf[1024];
    fail_msg("sk_sink_create: %s", csr_err_format(&err, buf, sizeof(buf)));
  }
  assert_int_equal(rc, 0);
  assert_ptr_equal(k->sink->ops, sk_find(type));
}

static uint64_t on_guard(struct rx_timer *timer) {
  *(int *)timer->data = 1;
  return RX_TIMER_STOP;
}

int skt_run_until(struct skt *k, const int *flag, int want, uint64_t ms) {
  struct rx_timer guard;
  int expired = 0;
  assert_int_equal(rx_timer_init(&guard, &k->t.loop), 0);
  guard.data = &expired;
  assert_int_equal(rx_timer_start(&guard, on_guard, ms), 0);
  while (*flag < want && !expired)
    uv_run(&k->t.uv, UV_RUN_ONCE);
  rx_timer_close(&guard, NULL);
  uv_run(&k->t.uv, UV_RUN_NOWAIT);
  return *flag >= want;
}

void skt_set_faults(struct skt *k, const char *yaml) {
  struct st_resp r;
  assert_int_equal(st_call(&k->t, "POST", "/sim/faults", NULL, yaml, 0, &r), 0);
  assert_int_equal(r.status, 200);
  st_resp_free(&r);
}

void skt_ledger_events(struct skt *k, size_t n, struct st_resp *r) {
  for (int tries = 0; tries < 200; tries++) {
    assert_int_equal(st_call(&k->t, "GET", "/ledger/events?limit=1000", NULL, NULL, 0, r), 0);
    assert_int_equal(r->status, 200);
    if (csr_json_len(csr_json_get(r->json, "events")) >= n)
      return;
    st_resp_free(r);
    st_run_ms(&k->t, 20);
  }
  fail_msg("the scripted events never reached the ledger");
}

yajl_val skt_checkout_event(const char *txn, const char *time_text, const char *customer) {
  char text[1024];
  snprintf(text, sizeof(text),
           "{\"EventType\":\"Checkout\",\"EventTransactionId\":\"%s\",\"EventDateTime\":\"%s\","
           "\"EventDataAreaId\":\"usrt\",\"EventData\":\"{}\",\"EventChannelId\":5637144592,"
           "\"EventTerminalId\":\"HOUSTON-17\",\"EventStaffId\":\"000168\","
           "\"EventCustomerId\":\"%s\"}",
           txn, time_text, customer);
  yajl_val v = csr_json_parse(text, strlen(text), NULL, 0);
  assert_non_null(v);
  return v;
}

void skt_on_sink_closed(void *arg) {
  struct skt *k = arg;
  k->sink_closed++;
  k->close_seq = k->seq;
}

static void on_http_closed(struct rx_http *http) {
  RX_CONTAINER_OF(http, struct skt, http)->http_closed++;
}

void skt_close_sink(struct skt *k) {
  if (k->sink == NULL || k->sink_closed != 0)
    return;
  assert_int_equal(k->sink->in_flight, 0);
  sk_sink_close(k->sink, skt_on_sink_closed, k);
  assert_int_equal(k->sink_closed, 0); /* never from inside the call */
  assert_true(skt_run_until(k, &k->sink_closed, 1, k->guard_ms));
}

void skt_stop(struct skt *k) {
  skt_close_sink(k);
  rx_http_close(&k->http, on_http_closed);
  assert_true(skt_run_until(k, &k->http_closed, 1, k->guard_ms));
  st_stop(&k->t);
  assert_int_equal(k->sink_closed, k->sink ? 1 : 0);
  assert_int_equal(k->http_closed, 1);
  if (k->events_path[0])
    unlink(k->events_path);
}

/* ---------------------------------------------------------------------------------------------- */
/* Deliveries */
/* ---------------------------------------------------------------------------------------------- */

void skt_on_done(struct sk_delivery *d) {
  struct skt_deliv *v = RX_CONTAINER_OF(d, struct skt_deliv, d);
  v->done++;
  v->seq = ++v->k->seq;
  v->in_flight = v->k->sink->in_flight;
  assert_ptr_equal(d->done, skt_on_done); /* the caller's callback is back */
}

void skt_start_delivery(struct skt *k, struct skt_deliv *v, const struct sk_event *ev,
                        const struct csr_delivery_conf *conf) {
  memset(v, 0, sizeof(*v));
  v->k = k;
  v->d.event = ev;
  v->d.conf = conf;
  v->d.attempt = 1;
  v->d.done = skt_on_done;
  assert_int_equal(sk_deliver(k->sink, &v->d), 0);
  assert_int_equal(v->done, 0); /* never synchronous */
}

void skt_run_delivery(struct skt *k, struct skt_deliv *v, const struct sk_event *ev,
                      const struct csr_delivery_conf *conf) {
  skt_start_delivery(k, v, ev, conf);
  assert_true(skt_run_until(k, &v->done, 1, k->guard_ms));
}

void skt_cancel_in_flight(struct skt *k, struct skt_deliv *v, uint64_t settle_ms) {
  assert_int_equal(v->done, 0);
  assert_int_equal(k->sink->in_flight, 1);
  k->sink->ops->cancel(k->sink, &v->d);
  k->sink->ops->cancel(k->sink, &v->d); /* twice is harmless */
  assert_int_equal(v->done, 0);
  assert_true(skt_run_until(k, &v->done, 1, k->guard_ms));
  st_run_ms(&k->t, settle_ms);
  assert_int_equal(v->done, 1);
  skt_assert_outcome(v, SK_RETRY, 0, "cancelled", -1);
  assert_int_equal(k->sink->in_flight, 0);
  assert_int_equal(k->sink->retried, 1);
}

void skt_assert_outcome(const struct skt_deliv *v, enum sk_outcome outcome, int status,
                        const char *reason, int64_t retry_after_ms) {
  if (v->d.outcome != outcome || v->d.status != status || strcmp(v->d.reason, reason) != 0 ||
      v->d.retry_after_ms != retry_after_ms)
    fail_msg("got outcome %d status %d reason '%s' retry_after %lld excerpt '%s'",
             (int)v->d.outcome, v->d.status, v->d.reason, (long long)v->d.retry_after_ms,
             v->d.excerpt);
}

/* ---------------------------------------------------------------------------------------------- */
/* A capture server of the test's own */
/* ---------------------------------------------------------------------------------------------- */

void skt_copy_header(const struct rx_http_request *req, const char *name, char *out, size_t len) {
  const char *v = rx_http_header(req, name);
  snprintf(out, len, "%s", v ? v : "(none)");
}

void skt_serve(struct skt *k, struct rx_http_server *srv, const char *method, const char *path,
               rx_http_handler handler, void *arg) {
  assert_int_equal(rx_http_server_init(srv, &k->t.loop, NULL), 0);
  assert_int_equal(rx_http_server_route(srv, method, path, handler, arg), 0);
  assert_int_equal(rx_http_server_listen(srv, "127.0.0.1", 0), 0);
}

static void on_server_closed(struct rx_http_server *srv) {
  (*(int *)srv->data)++;
}

void skt_close_server(struct rx_http_server *srv, int *closed) {
  *closed = 0;
  srv->data = closed;
  rx_http_server_close(srv, on_server_closed);
}
