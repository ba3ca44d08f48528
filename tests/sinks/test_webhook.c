/* The webhook sink against csusim in-process (its receiver POST /hooks/{name} checks that
 * Idempotency-Key equals the body's EventId and records the delivery in the ledger), plus one
 * capture server of our own for the exact request on the wire. Each test scripts one Checkout,
 * reads its real id from GET /ledger/events, creates the sink through the registry on its own
 * rx_http, and ends by closing the sink and the client and then the sim (a clean loop close).
 * Every callback is counted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sinktest.h"

#define TXN       "HOUSTON-HOUSTON-17-1721824109286"
#define GUARD_MS  SKT_GUARD_MS
#define MAX_DELIV 8

struct fx {
  struct skt k;
  char id[256];
  char time_text[64];
  yajl_val event;
  yajl_val order;
  struct sk_event ev;
};

/* ---------------------------------------------------------------------------------------------- */
/* Fixture */
/* ---------------------------------------------------------------------------------------------- */

/* The scripted event's id and time as the sim generated them (GET /ledger/events). */
static void find_event(struct fx *fx) {
  struct st_resp r;
  skt_ledger_events(&fx->k, 1, &r);
  yajl_val first = csr_json_at(csr_json_get(r.json, "events"), 0);
  snprintf(fx->id, sizeof(fx->id), "%s", csr_json_get_str(first, "id"));
  snprintf(fx->time_text, sizeof(fx->time_text), "%s", csr_json_get_str(first, "time"));
  st_resp_free(&r);
}

/* The event object as the CSU would send it, with the sim's time text. */
static void build_event(struct fx *fx) {
  fx->event = skt_checkout_event(TXN, fx->time_text, "1002");
  static const char order[] = "{\"SalesId\":\"012345\",\"AmountPaid\":184.2200000000000000}";
  fx->order = csr_json_parse(order, strlen(order), NULL, 0);
  assert_non_null(fx->order);
  fx->ev = (struct sk_event){.id = fx->id,
                             .csu = "csu0",
                             .type = "Checkout",
                             .time_text = fx->time_text,
                             .event = fx->event,
                             .order = fx->order};
}

static void create_sink(struct fx *fx) {
  skt_create_sink(&fx->k, "webhook");
}

/* A sim with the scripted event and `faults`, and a webhook sink posting to `path` (NULL: the
 * receiver "audit"). The sink is not created when `create` is 0 (the test sets conf first). */
static struct fx *fx_start(const char *faults, const char *path, int create) {
  struct fx *fx = calloc(1, sizeof(*fx));
  assert_non_null(fx);
  static const char events[] =
      "[{\"csu\": 0, \"EventType\": \"Checkout\", \"EventTransactionId\": \"" TXN "\",\n"
      "  \"EventDateTime\": \"2024-07-24T14:17:02.16Z\", \"EventData\": \"{}\",\n"
      "  \"EventTerminalId\": \"HOUSTON-17\", \"EventStaffId\": \"000168\",\n"
      "  \"EventCustomerId\": \"1002\", \"ReceiptEmail\": \"karen@contoso.com\"}]\n";
  skt_write_events(&fx->k, "test_webhook", events, sizeof(events) - 1);
  struct sim_opts o;
  sim_opts_default(&o);
  o.faults_yaml = faults;
  skt_start(&fx->k, &o, 16, 5000);
  skt_webhook_conf(&fx->k, path, 32);
  find_event(fx);
  build_event(fx);
  if (create)
    create_sink(fx);
  return fx;
}

static void fx_stop(struct fx *fx) {
  skt_stop(&fx->k);
  csr_json_free(fx->event);
  csr_json_free(fx->order);
  free(fx);
}

static void start(struct fx *fx, struct skt_deliv *v) {
  skt_start_delivery(&fx->k, v, &fx->ev, NULL);
}

/* One delivery run to its outcome. */
static void deliver(struct fx *fx, struct skt_deliv *v) {
  skt_run_delivery(&fx->k, v, &fx->ev, NULL);
  assert_int_equal(v->done, 1);
  assert_int_equal(v->in_flight, 0);
}

/* ---------------------------------------------------------------------------------------------- */
/* Delivered, and what the receiver saw */
/* ---------------------------------------------------------------------------------------------- */

static void test_delivered(void **state) {
  struct fx *fx = fx_start(NULL, NULL, 1);
  char want[300];
  snprintf(want, sizeof(want), "csu0|usrt|Checkout|" TXN "|%s", fx->ev.time_text);
  assert_string_equal(fx->id, want);
  struct skt_deliv v;
  deliver(fx, &v);
  skt_assert_outcome(&v, SK_DELIVERED, 200, "", -1);
  assert_int_equal(fx->k.sink->delivered, 1);
  assert_int_equal(fx->k.sink->retried + fx->k.sink->dead + fx->k.sink->skipped, 0);
  /* The receiver matched Idempotency-Key to the body's EventId and to the generated event. */
  struct sim_ledger_sink_counts c;
  assert_int_equal(sim_ledger_sink_counts(fx->k.t.sim.ledger, "webhook:audit", &c), 0);
  assert_int_equal(c.received, 1);
  assert_int_equal(c.unique, 1);
  assert_int_equal(c.unknown, 0);
  assert_int_equal(c.mismatched, 0);
  assert_int_equal(c.rejected, 0);
  struct st_resp r;
  assert_int_equal(st_call(&fx->k.t, "GET", "/ledger/events", NULL, NULL, 0, &r), 0);
  yajl_val first = csr_json_at(csr_json_get(r.json, "events"), 0);
  assert_string_equal(csr_json_get_str(first, "id"), fx->id);
  int64_t n = 0;
  assert_int_equal(csr_json_get_int(csr_json_get(first, "deliveries"), "audit", &n), 0);
  assert_int_equal(n, 1);
  st_resp_free(&r);
  /* A second delivery of the same event is a duplicate to the receiver, and delivered to us. */
  deliver(fx, &v);
  skt_assert_outcome(&v, SK_DELIVERED, 200, "", -1);
  assert_int_equal(sim_ledger_sink_counts(fx->k.t.sim.ledger, "webhook:audit", &c), 0);
  assert_int_equal(c.received, 2);
  assert_int_equal(c.duplicates, 1);
  assert_int_equal(fx->k.sink->delivered, 2);
  char why[128] = "";
  assert_int_equal(fx->k.sink->ops->ready(fx->k.sink, why, sizeof(why)), 0);
  fx_stop(fx);
}

/* Our own receiver: records the request and answers with `status`. */
struct capture {
  int requests;
  int status;
  char method[8];
  char ctype[64];
  char key[300];
  char auth[64];
  char *body;
  size_t len;
};

static void on_capture(struct rx_http_request *req, void *arg) {
  struct capture *c = arg;
  c->requests++;
  snprintf(c->method, sizeof(c->method), "%s", req->method);
  skt_copy_header(req, "Content-Type", c->ctype, sizeof(c->ctype));
  skt_copy_header(req, "Idempotency-Key", c->key, sizeof(c->key));
  skt_copy_header(req, "Authorization", c->auth, sizeof(c->auth));
  free(c->body);
  c->body = malloc(req->body_len + 1);
  assert_non_null(c->body);
  memcpy(c->body, req->body, req->body_len + 1);
  c->len = req->body_len;
  rx_http_respond(req, c->status, NULL, "text/plain", "moved\n", c->status == 204 ? 0 : 6);
}

static void test_wire(void **state) {
  struct fx *fx = fx_start(NULL, NULL, 0);
  struct rx_http_server srv;
  struct capture cap = {.status = 204};
  skt_serve(&fx->k, &srv, "POST", "/in", on_capture, &cap);
  snprintf(fx->k.url, sizeof(fx->k.url), "http://127.0.0.1:%d/in", srv.port);
  fx->k.conf.auth_header = "Bearer s3cr3t";
  create_sink(fx);
  struct skt_deliv v;
  deliver(fx, &v);
  skt_assert_outcome(&v, SK_DELIVERED, 204, "", -1);
  assert_int_equal(cap.requests, 1);
  assert_string_equal(cap.method, "POST");
  assert_string_equal(cap.ctype, "application/json");
  assert_string_equal(cap.key, fx->id);
  assert_string_equal(cap.auth, "Bearer s3cr3t");
  /* The body on the wire is exactly what encode() writes. */
  struct csr_jw jw;
  const char *text;
  size_t len;
  assert_int_equal(csr_jw_init(&jw), 0);
  assert_int_equal(fx->k.sink->ops->encode(fx->k.sink, &v.d, &jw), 0);
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
  assert_int_equal(cap.len, len);
  assert_memory_equal(cap.body, text, len);
  assert_non_null(strstr(cap.body, "\"AmountPaid\":184.2200000000000000"));
  assert_non_null(strstr(cap.body, "\"EventChannelId\":5637144592"));
  assert_non_null(strstr(cap.body, "\"CustomerDetails\":null"));
  csr_jw_free(&jw);
  /* A redirect is not followed and not retried: the configured URL is wrong. */
  cap.status = 301;
  deliver(fx, &v);
  skt_assert_outcome(&v, SK_DEAD, 301, "http_301", -1);
  assert_string_equal(v.d.excerpt, "moved ");
  assert_int_equal(fx->k.sink->delivered, 1);
  assert_int_equal(fx->k.sink->dead, 1);
  free(cap.body);
  int srv_closed;
  skt_close_server(&srv, &srv_closed);
  fx_stop(fx);
  assert_int_equal(srv_closed, 1);
}

/* ---------------------------------------------------------------------------------------------- */
/* Transient and permanent failures */
/* ---------------------------------------------------------------------------------------------- */

static void test_429_retry_after(void **state) {
  struct fx *fx = fx_start("endpoints:\n  webhook:\n    error_rate: 1.0\n    errors: [429]\n"
                           "    retry_after_s: 2\n",
                           NULL, 1);
  struct skt_deliv v;
  deliver(fx, &v);
  skt_assert_outcome(&v, SK_RETRY, 429, "http_429", 2000);
  assert_int_equal(fx->k.sink->retried, 1);
  struct sim_ledger_sink_counts c;
  sim_ledger_sink_counts(fx->k.t.sim.ledger, "webhook:audit", &c);
  assert_int_equal(c.received, 0);
  fx_stop(fx);
}

static void test_5xx(void **state) {
  struct fx *fx =
      fx_start("endpoints:\n  webhook:\n    error_rate: 1.0\n    errors: [503]\n", NULL, 1);
  struct skt_deliv v;
  deliver(fx, &v);
  skt_assert_outcome(&v, SK_RETRY, 503, "http_503", -1);
  skt_set_faults(&fx->k, "endpoints:\n  webhook:\n    error_rate: 1.0\n    errors: [500]\n");
  deliver(fx, &v);
  skt_assert_outcome(&v, SK_RETRY, 500, "http_500", -1);
  assert_true(v.d.excerpt[0] != '\0');
  /* Healed: the next attempt delivers. */
  skt_set_faults(&fx->k, "");
  deliver(fx, &v);
  skt_assert_outcome(&v, SK_DELIVERED, 200, "", -1);
  assert_int_equal(fx->k.sink->retried, 2);
  assert_int_equal(fx->k.sink->delivered, 1);
  fx_stop(fx);
}

static void test_timeout(void **state) {
  struct fx *fx = fx_start("endpoints:\n  webhook:\n    timeout_rate: 1.0\n", NULL, 0);
  fx->k.conf.timeout_ms = 300;
  create_sink(fx);
  struct skt_deliv v;
  uint64_t t0 = rx_now_ms(&fx->k.t.loop);
  deliver(fx, &v);
  uint64_t took = rx_now_ms(&fx->k.t.loop) - t0;
  skt_assert_outcome(&v, SK_RETRY, 0, "timeout", -1);
  assert_true(took >= 250 && took < 3000);
  fx_stop(fx);
}

static void test_reset_and_ready(void **state) {
  struct fx *fx = fx_start("endpoints:\n  webhook:\n    reset_rate: 1.0\n", NULL, 1);
  char why[128] = "";
  struct skt_deliv v;
  for (int i = 0; i < 5; i++) {
    assert_int_equal(fx->k.sink->ops->ready(fx->k.sink, why, sizeof(why)), 0);
    deliver(fx, &v);
    skt_assert_outcome(&v, SK_RETRY, 0, "reset", -1);
  }
  /* Five transport failures in a row: not ready, with the reason. */
  assert_true(fx->k.sink->ops->ready(fx->k.sink, why, sizeof(why)) < 0);
  assert_non_null(strstr(why, "reset"));
  skt_set_faults(&fx->k, "");
  deliver(fx, &v);
  skt_assert_outcome(&v, SK_DELIVERED, 200, "", -1);
  assert_int_equal(fx->k.sink->ops->ready(fx->k.sink, why, sizeof(why)), 0);
  assert_int_equal(fx->k.sink->retried, 5);
  assert_int_equal(fx->k.sink->delivered, 1);
  fx_stop(fx);
}

static void test_refused(void **state) {
  struct fx *fx = fx_start(NULL, NULL, 0);
  /* A port nobody listens on: bind one, note it, close it. */
  uv_tcp_t tcp;
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int blen = sizeof(bound);
  assert_int_equal(uv_tcp_init(&fx->k.t.uv, &tcp), 0);
  assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &addr), 0);
  assert_int_equal(uv_tcp_bind(&tcp, (const struct sockaddr *)&addr, 0), 0);
  assert_int_equal(uv_tcp_getsockname(&tcp, (struct sockaddr *)&bound, &blen), 0);
  int port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
  uv_close((uv_handle_t *)&tcp, NULL);
  uv_run(&fx->k.t.uv, UV_RUN_NOWAIT);
  snprintf(fx->k.url, sizeof(fx->k.url), "http://127.0.0.1:%d/hooks/audit", port);
  create_sink(fx);
  struct skt_deliv v;
  deliver(fx, &v);
  skt_assert_outcome(&v, SK_RETRY, 0, "refused", -1);
  fx_stop(fx);
}

static void test_4xx_dead(void **state) {
  struct fx *fx = fx_start(NULL, "/nope", 1);
  struct skt_deliv v;
  deliver(fx, &v);
  skt_assert_outcome(&v, SK_DEAD, 404, "http_404", -1);
  assert_true(v.d.excerpt[0] != '\0');
  fx_stop(fx);
  /* A receiver's own 4xx (injected, as the real receiver refuses only what we never send). */
  fx = fx_start("endpoints:\n  webhook:\n    error_rate: 1.0\n    errors: [422]\n", NULL, 1);
  deliver(fx, &v);
  skt_assert_outcome(&v, SK_DEAD, 422, "http_422", -1);
  assert_true(v.d.excerpt[0] != '\0');
  assert_int_equal(fx->k.sink->dead, 1);
  fx_stop(fx);
}

static void test_encode_failure(void **state) {
  struct fx *fx = fx_start(NULL, NULL, 1);
  struct skt_deliv v;
  fx->ev.event = NULL; /* no event object: the body can never be built */
  deliver(fx, &v);
  skt_assert_outcome(&v, SK_DEAD, 0, "encode", -1);
  struct csr_jw jw;
  assert_int_equal(csr_jw_init(&jw), 0);
  assert_true(fx->k.sink->ops->encode(fx->k.sink, &v.d, &jw) < 0);
  csr_jw_free(&jw);
  /* An id that would split the Idempotency-Key header is refused the same way. */
  fx->ev.event = fx->event;
  fx->ev.id = "csu0|usrt|Checkout|x\r\nX-Evil: 1|t";
  deliver(fx, &v);
  skt_assert_outcome(&v, SK_DEAD, 0, "encode", -1);
  fx->ev.id = fx->id;
  assert_int_equal(fx->k.sink->dead, 2);
  struct sim_ledger_sink_counts c;
  sim_ledger_sink_counts(fx->k.t.sim.ledger, "webhook:audit", &c);
  assert_int_equal(c.received + c.rejected, 0);
  fx_stop(fx);
}

/* ---------------------------------------------------------------------------------------------- */
/* Cancel, close, limits */
/* ---------------------------------------------------------------------------------------------- */

#define SLOW "endpoints:\n  webhook:\n    latency_ms: 5000\n"

static void test_cancel(void **state) {
  struct fx *fx = fx_start(SLOW, NULL, 1);
  struct skt_deliv v;
  start(fx, &v);
  st_run_ms(&fx->k.t, 100);
  skt_cancel_in_flight(&fx->k, &v, 100);
  fx_stop(fx);
}

static void test_close_in_flight(void **state) {
  struct fx *fx = fx_start(SLOW, NULL, 0);
  fx->k.conf.max_in_flight = 3;
  create_sink(fx);
  struct skt_deliv v[MAX_DELIV];
  for (int i = 0; i < 3; i++)
    start(fx, &v[i]);
  /* The sink's limit holds even if the caller forgets to check. */
  struct skt_deliv extra = {.k = &fx->k, .d = {.event = &fx->ev, .done = skt_on_done}};
  assert_int_equal(sk_deliver(fx->k.sink, &extra.d), CSR_ELIMIT);
  assert_ptr_equal(extra.d.done, skt_on_done);
  st_run_ms(&fx->k.t, 100);
  assert_int_equal(fx->k.sink->in_flight, 3);
  sk_sink_close(fx->k.sink, skt_on_sink_closed, &fx->k);
  sk_sink_close(fx->k.sink, skt_on_sink_closed, &fx->k); /* a second close is ignored */
  assert_int_equal(sk_deliver(fx->k.sink, &extra.d), -ECANCELED);
  char why[64];
  assert_true(fx->k.sink->ops->ready(fx->k.sink, why, sizeof(why)) < 0);
  assert_true(skt_run_until(&fx->k, &fx->k.sink_closed, 1, GUARD_MS));
  st_run_ms(&fx->k.t, 50);
  assert_int_equal(fx->k.sink_closed, 1);
  /* Every done() fired once, with "cancelled", before the close callback. */
  unsigned min_in_flight = 3;
  for (int i = 0; i < 3; i++) {
    assert_int_equal(v[i].done, 1);
    skt_assert_outcome(&v[i], SK_RETRY, 0, "cancelled", -1);
    if (v[i].in_flight < min_in_flight)
      min_in_flight = v[i].in_flight;
  }
  assert_int_equal(min_in_flight, 0);
  assert_int_equal(fx->k.seq, 3);
  assert_int_equal(fx->k.close_seq, 3);
  fx_stop(fx);
}

/* Counters across mixed outcomes, and close from inside a done() callback. */
static void on_done_then_close(struct sk_delivery *d) {
  struct skt_deliv *v = RX_CONTAINER_OF(d, struct skt_deliv, d);
  struct sk_sink *sink = v->k->sink;
  v->done++;
  v->seq = ++v->k->seq;
  assert_int_equal(sink->in_flight, 0);
  assert_int_equal(sink->delivered, 1);
  assert_int_equal(sink->retried, 1);
  sk_sink_close(sink, skt_on_sink_closed, v->k);
  assert_int_equal(v->k->sink_closed, 0);
}

static void test_close_from_done(void **state) {
  struct fx *fx =
      fx_start("endpoints:\n  webhook:\n    error_rate: 1.0\n    errors: [502]\n", NULL, 1);
  struct skt_deliv v;
  deliver(fx, &v);
  skt_assert_outcome(&v, SK_RETRY, 502, "http_502", -1);
  skt_set_faults(&fx->k, "");
  memset(&v, 0, sizeof(v));
  v.k = &fx->k;
  v.d.event = &fx->ev;
  v.d.done = on_done_then_close;
  assert_int_equal(sk_deliver(fx->k.sink, &v.d), 0);
  assert_true(skt_run_until(&fx->k, &fx->k.sink_closed, 1, GUARD_MS));
  assert_int_equal(v.done, 1);
  skt_assert_outcome(&v, SK_DELIVERED, 200, "", -1);
  fx_stop(fx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_delivered),       cmocka_unit_test(test_wire),
      cmocka_unit_test(test_429_retry_after), cmocka_unit_test(test_5xx),
      cmocka_unit_test(test_timeout),         cmocka_unit_test(test_reset_and_ready),
      cmocka_unit_test(test_refused),         cmocka_unit_test(test_4xx_dead),
      cmocka_unit_test(test_encode_failure),  cmocka_unit_test(test_cancel),
      cmocka_unit_test(test_close_in_flight), cmocka_unit_test(test_close_from_done),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
