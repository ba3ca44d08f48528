/* The HTTP client against csurelay's own HTTP server, both on one loop, on 127.0.0.1 with an
 * ephemeral port: methods, bodies and headers, keep-alive, the per-host limit, timeouts, response
 * headers, the body ceiling, transport errors, cancel and close. Every test counts its callbacks
 * and ends with rx_loop_close() == 0. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "csurelay/reactor.h"

#define MAX_HELD    32
#define WATCHDOG_MS 20000

/* ---------------------------------------------------------------------------------------------- */
/* Fixture: a loop, a server with test routes, a client */
/* ---------------------------------------------------------------------------------------------- */

struct fx {
  uv_loop_t uv;
  struct rx_loop loop;
  struct rx_http http;
  struct rx_http_server srv;
  struct rx_timer watchdog;
  struct rx_timer tick; /* answers the /slow requests in batches */
  int tick_on;
  char base[64];
  int expect;   /* client callbacks to wait for before shutting down */
  int done;     /* client callbacks seen */
  int shutdown; /* fx_shutdown ran */
  int timed_out;
  int http_close_started;
  int http_closed;
  int srv_closed;
  int done_at_http_close;
  /* requests the handlers hold without answering */
  struct rx_http_request *held[MAX_HELD];
  unsigned nheld;
  unsigned in_server; /* /slow requests pending on the server now */
  unsigned max_in_server;
  unsigned close_client_when_held; /* rx_http_close once this many are held (0 = never) */
  struct rx_http_req *cancel_when_held;
  /* what /echo saw */
  char seen_method[16];
  char seen_body[128];
  size_t seen_body_len;
  char seen_x_test[32];
  char seen_ctype[64];
  int seen_expect;
};

struct call {
  struct rx_http_req req;
  struct fx *fx;
  char url[128];
  int calls;
  uint64_t done_ms;
};

static void fx_shutdown(struct fx *fx);

static void on_http_closed(struct rx_http *http) {
  struct fx *fx = http->data;
  fx->http_closed++;
  fx->done_at_http_close = fx->done;
}

static void on_srv_closed(struct rx_http_server *srv) {
  ((struct fx *)srv->data)->srv_closed++;
}

static void close_client(struct fx *fx) {
  if (fx->http_close_started)
    return;
  fx->http_close_started = 1;
  rx_http_close(&fx->http, on_http_closed);
}

static uint64_t on_watchdog(struct rx_timer *timer) {
  struct fx *fx = timer->data;
  print_message("watchdog: %d of %d callbacks after %d ms\n", fx->done, fx->expect, WATCHDOG_MS);
  fx->timed_out = 1;
  fx_shutdown(fx);
  return RX_TIMER_STOP;
}

static void answer_held(struct fx *fx, int status) {
  for (unsigned i = 0; i < fx->nheld; i++)
    rx_http_respond(fx->held[i], status, NULL, "text/plain", "late", 4);
  fx->nheld = 0;
}

static void fx_shutdown(struct fx *fx) {
  if (fx->shutdown)
    return;
  fx->shutdown = 1;
  close_client(fx);
  /* Requests still held are orphaned by now or about to be; answering drops them. */
  answer_held(fx, 503);
  rx_http_server_close(&fx->srv, on_srv_closed);
  rx_timer_close(&fx->watchdog, NULL);
  rx_timer_close(&fx->tick, NULL);
}

/* Handlers ------------------------------------------------------------------------------------- */

static void h_hello(struct rx_http_request *req, void *arg) {
  rx_http_respond(req, 200, NULL, "text/plain", "hello", 5);
}

static void copy_str(char *dst, size_t cap, const char *src) {
  snprintf(dst, cap, "%s", src ? src : "");
}

static void h_echo(struct rx_http_request *req, void *arg) {
  struct fx *fx = arg;
  copy_str(fx->seen_method, sizeof(fx->seen_method), req->method);
  copy_str(fx->seen_body, sizeof(fx->seen_body), req->body);
  fx->seen_body_len = req->body_len;
  copy_str(fx->seen_x_test, sizeof(fx->seen_x_test), rx_http_header(req, "X-Test"));
  copy_str(fx->seen_ctype, sizeof(fx->seen_ctype), rx_http_header(req, "Content-Type"));
  fx->seen_expect = rx_http_header(req, "Expect") != NULL;
  char out[160];
  int n = snprintf(out, sizeof(out), "%s:%zu", req->method, req->body_len);
  rx_http_respond(req, 201, NULL, "text/plain", out, (size_t)n);
}

static void hold(struct fx *fx, struct rx_http_request *req) {
  assert_true(fx->nheld < MAX_HELD);
  fx->held[fx->nheld++] = req;
}

static void h_hold(struct rx_http_request *req, void *arg) {
  struct fx *fx = arg;
  hold(fx, req);
  if (fx->cancel_when_held) {
    rx_http_cancel(fx->cancel_when_held);
    fx->cancel_when_held = NULL;
  }
  if (fx->close_client_when_held && fx->nheld == fx->close_client_when_held)
    close_client(fx);
}

static void h_slow(struct rx_http_request *req, void *arg) {
  struct fx *fx = arg;
  hold(fx, req);
  fx->in_server++;
  if (fx->in_server > fx->max_in_server)
    fx->max_in_server = fx->in_server;
}

static uint64_t on_tick(struct rx_timer *timer) {
  struct fx *fx = timer->data;
  fx->in_server -= fx->nheld;
  answer_held(fx, 200);
  return fx->shutdown ? RX_TIMER_STOP : 30;
}

static void h_429(struct rx_http_request *req, void *arg) {
  rx_http_respond(req, 429, "Retry-After: 3\r\n", NULL, NULL, 0);
}

static void respond_retry_at(struct rx_http_request *req, time_t at) {
  struct tm tm;
  char date[64], line[96];
  gmtime_r(&at, &tm);
  strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  snprintf(line, sizeof(line), "Retry-After: %s\r\n", date);
  rx_http_respond(req, 503, line, NULL, NULL, 0);
}

static void h_retry_date(struct rx_http_request *req, void *arg) {
  respond_retry_at(req, time(NULL) + 10);
}

static void h_retry_past(struct rx_http_request *req, void *arg) {
  respond_retry_at(req, time(NULL) - 3600);
}

static const char entity_id[] =
    "https://org.example/api/data/v9.2/contacts(00000000-0000-0000-0000-000000000042)";

static void h_created(struct rx_http_request *req, void *arg) {
  char headers[256];
  snprintf(headers, sizeof(headers), "OData-EntityId: %s\r\nLocation: /things/42\r\n", entity_id);
  rx_http_respond(req, 204, headers, NULL, NULL, 0);
}

static void h_big(struct rx_http_request *req, void *arg) {
  size_t n = (size_t)strtoul(req->query, NULL, 10);
  char *body = malloc(n);
  assert_non_null(body);
  memset(body, 'x', n);
  rx_http_respond(req, 200, NULL, "text/plain", body, n);
  free(body);
}

static void h_reset(struct rx_http_request *req, void *arg) {
  rx_http_reset(req);
}

/* Setup, run, teardown ------------------------------------------------------------------------- */

static uint64_t srv_idle_ms; /* the server's idle timeout for the next fx_setup (0: its default) */

static struct fx *fx_setup(const struct rx_http_opts *opts) {
  struct fx *fx = calloc(1, sizeof(*fx));
  assert_non_null(fx);
  assert_int_equal(uv_loop_init(&fx->uv), 0);
  assert_int_equal(rx_loop_init(&fx->loop, &fx->uv), 0);
  struct rx_http_server_opts sopts = {.idle_timeout_ms = srv_idle_ms};
  assert_int_equal(rx_http_server_init(&fx->srv, &fx->loop, &sopts), 0);
  fx->srv.data = fx;
  static const struct {
    const char *method, *path;
    rx_http_handler handler;
  } routes[] = {
      {"GET", "/hello", h_hello},
      {NULL, "/echo", h_echo},
      {NULL, "/hold", h_hold},
      {"GET", "/slow", h_slow},
      {"GET", "/429", h_429},
      {"GET", "/retry-date", h_retry_date},
      {"GET", "/retry-past", h_retry_past},
      {"POST", "/created", h_created},
      {"GET", "/big", h_big},
      {NULL, "/reset", h_reset},
  };
  for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
    assert_int_equal(
        rx_http_server_route(&fx->srv, routes[i].method, routes[i].path, routes[i].handler, fx), 0);
  assert_int_equal(rx_http_server_listen(&fx->srv, "127.0.0.1", 0), 0);
  assert_true(fx->srv.port > 0);
  snprintf(fx->base, sizeof(fx->base), "http://127.0.0.1:%d", fx->srv.port);
  assert_int_equal(rx_http_init(&fx->http, &fx->loop, opts), 0);
  fx->http.data = fx;
  assert_int_equal(rx_timer_init(&fx->watchdog, &fx->loop), 0);
  fx->watchdog.data = fx;
  assert_int_equal(rx_timer_start(&fx->watchdog, on_watchdog, WATCHDOG_MS), 0);
  rx_timer_unref(&fx->watchdog);
  assert_int_equal(rx_timer_init(&fx->tick, &fx->loop), 0);
  fx->tick.data = fx;
  return fx;
}

/* Runs until `expect` client callbacks have fired and everything is closed; then checks that the
 * client, the server and the loop closed clean. */
static void fx_run(struct fx *fx, int expect) {
  fx->expect = expect;
  if (fx->done >= expect)
    fx_shutdown(fx);
  rx_loop_run(&fx->loop);
  assert_false(fx->timed_out);
  assert_int_equal(fx->done, expect);
  assert_int_equal(fx->http_closed, 1);
  assert_int_equal(fx->srv_closed, 1);
  assert_int_equal(fx->http.active, 0);
  assert_int_equal(rx_loop_close(&fx->loop), 0);
}

static void on_call_done(struct rx_fut *fut) {
  struct call *c = RX_CONTAINER_OF(fut, struct call, req.fut);
  struct fx *fx = c->fx;
  uv_update_time(&fx->uv);
  c->done_ms = rx_now_ms(&fx->loop);
  c->calls++;
  if (++fx->done == fx->expect)
    fx_shutdown(fx);
}

static void call_prep(struct fx *fx, struct call *c, const char *path) {
  rx_http_req_init(&c->req);
  c->fx = fx;
  c->calls = 0;
  snprintf(c->url, sizeof(c->url), "%s%s", fx->base, path);
  c->req.url = c->url;
}

static void call_start(struct fx *fx, struct call *c, const char *path) {
  call_prep(fx, c, path);
  assert_int_equal(rx_http_start(&fx->http, &c->req, on_call_done), 0);
}

/* Each of the n calls completed once with this status and body. */
static void assert_answered(const struct call *calls, size_t n, int status, const char *body) {
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(calls[i].calls, 1);
    assert_int_equal(calls[i].req.fut.result, 0);
    assert_int_equal(calls[i].req.status, status);
    assert_string_equal(calls[i].req.resp_body, body);
  }
}

static void calls_cleanup(struct call *calls, size_t n) {
  for (size_t i = 0; i < n; i++)
    rx_http_req_cleanup(&calls[i].req);
}

/* ---------------------------------------------------------------------------------------------- */
/* Tests */
/* ---------------------------------------------------------------------------------------------- */

static void test_get_and_post(void **state) {
  struct fx *fx = fx_setup(NULL);
  struct call get, post, put;
  call_start(fx, &get, "/hello");

  static const char json[] = "{\"id\":1,\"name\":\"a\"}";
  call_prep(fx, &post, "/echo");
  post.req.body = json;
  post.req.body_len = sizeof(json) - 1;
  assert_int_equal(rx_http_req_header(&post.req, "Content-Type: application/json"), 0);
  assert_int_equal(rx_http_req_header(&post.req, "X-Test: 42"), 0);
  assert_int_equal(rx_http_start(&fx->http, &post.req, on_call_done), 0);
  fx_run(fx, 2);

  assert_int_equal(get.calls, 1);
  assert_int_equal(get.req.fut.result, 0);
  assert_int_equal(get.req.status, 200);
  assert_int_equal(get.req.resp_len, 5);
  assert_string_equal(get.req.resp_body, "hello");
  assert_int_equal(get.req.retry_after_ms, -1);
  assert_null(get.req.location);
  assert_null(get.req.odata_entity_id);
  /* The body can be taken instead of copied: the req is left empty, cleanup frees nothing twice. */
  size_t taken_len = 0;
  char *taken = rx_http_take_body(&get.req, &taken_len);
  assert_int_equal(taken_len, 5);
  assert_string_equal(taken, "hello");
  assert_null(get.req.resp_body);
  assert_int_equal(get.req.resp_len, 0);
  free(taken);

  assert_int_equal(post.calls, 1);
  assert_int_equal(post.req.fut.result, 0);
  assert_int_equal(post.req.status, 201);
  assert_string_equal(post.req.resp_body, "POST:19");
  assert_string_equal(fx->seen_method, "POST");
  assert_string_equal(fx->seen_body, json);
  assert_int_equal(fx->seen_body_len, sizeof(json) - 1);
  assert_string_equal(fx->seen_x_test, "42");
  assert_string_equal(fx->seen_ctype, "application/json");
  assert_false(fx->seen_expect);
  calls_cleanup(&get, 1);
  calls_cleanup(&post, 1);
  free(fx);

  /* A larger body with another method: no "Expect: 100-continue" stall (curl waits 1 s for it). */
  fx = fx_setup(NULL);
  size_t big_len = 256 * 1024;
  char *big = malloc(big_len);
  assert_non_null(big);
  memset(big, 'b', big_len);
  call_prep(fx, &put, "/echo");
  put.req.method = "PUT";
  put.req.body = big;
  put.req.body_len = big_len;
  uv_update_time(&fx->uv);
  uint64_t t0 = rx_now_ms(&fx->loop);
  assert_int_equal(rx_http_start(&fx->http, &put.req, on_call_done), 0);
  fx_run(fx, 1);
  assert_int_equal(put.calls, 1);
  assert_int_equal(put.req.fut.result, 0);
  assert_int_equal(put.req.status, 201);
  assert_string_equal(put.req.resp_body, "PUT:262144");
  assert_string_equal(fx->seen_method, "PUT");
  assert_int_equal(fx->seen_body_len, big_len);
  assert_false(fx->seen_expect);
  assert_true(put.done_ms - t0 < 900);
  calls_cleanup(&put, 1);
  free(big);
  free(fx);
}

static void on_seq_done(struct rx_fut *fut);

static struct call seq;
static int seq_left;
static int seq_ok;

static void seq_next(struct fx *fx) {
  call_prep(fx, &seq, "/hello");
  assert_int_equal(rx_http_start(&fx->http, &seq.req, on_seq_done), 0);
}

static void on_seq_done(struct rx_fut *fut) {
  struct fx *fx = seq.fx;
  if (fut->result == 0 && seq.req.status == 200 && strcmp(seq.req.resp_body, "hello") == 0)
    seq_ok++;
  rx_http_req_cleanup(&seq.req);
  fx->done++;
  if (--seq_left > 0)
    seq_next(fx);
  else
    fx_shutdown(fx);
}

static void test_keepalive_reuses_one_connection(void **state) {
  struct fx *fx = fx_setup(NULL);
  seq_left = 20;
  seq_ok = 0;
  seq_next(fx);
  fx_run(fx, 20);
  assert_int_equal(seq_ok, 20);
  assert_int_equal(fx->http.completed, 20);
  assert_int_equal(fx->http.new_conns, 1);
  assert_int_equal(fx->srv.requests, 20);
  free(fx);
}

/* The server closes a kept-alive connection while it sits idle in curl's cache: the client stops
 * watching it (an idle watcher must not spin on the EOF), curl finds it dead when it next looks,
 * and the next request goes out on a new connection. */
static struct call idle_calls[2];
static uv_check_t idle_check;
static unsigned idle_iterations, idle_iterations_in_pause;

static void on_idle_check(uv_check_t *check) {
  idle_iterations++;
}

static uint64_t on_idle_pause(struct rx_timer *timer) {
  struct fx *fx = timer->data;
  idle_iterations_in_pause = idle_iterations;
  uv_check_stop(&idle_check);
  uv_close((uv_handle_t *)&idle_check, NULL);
  call_start(fx, &idle_calls[1], "/hello");
  return RX_TIMER_STOP;
}

static void on_idle_first(struct rx_fut *fut) {
  on_call_done(fut);
  struct fx *fx = idle_calls[0].fx;
  idle_iterations = 0;
  assert_int_equal(uv_check_init(&fx->uv, &idle_check), 0);
  assert_int_equal(uv_check_start(&idle_check, on_idle_check), 0);
  uv_unref((uv_handle_t *)&idle_check);
  assert_int_equal(rx_timer_start(&fx->tick, on_idle_pause, 250), 0);
}

static void test_server_closes_idle_connection(void **state) {
  srv_idle_ms = 50;
  struct fx *fx = fx_setup(NULL);
  srv_idle_ms = 0;
  call_prep(fx, &idle_calls[0], "/hello");
  assert_int_equal(rx_http_start(&fx->http, &idle_calls[0].req, on_idle_first), 0);
  fx_run(fx, 2);
  assert_answered(idle_calls, 2, 200, "hello");
  assert_int_equal(fx->http.new_conns, 2);
  /* 250 ms of pause took a handful of loop iterations (the close, the timers), not one per
   * readiness report of a watcher left armed on the EOF */
  print_message("loop iterations during the pause: %u\n", idle_iterations_in_pause);
  assert_true(idle_iterations_in_pause < 50);
  calls_cleanup(idle_calls, 2);
  free(fx);
}

static void test_per_host_limit_queues_the_rest(void **state) {
  struct rx_http_opts opts = {.max_per_host = 4};
  struct fx *fx = fx_setup(&opts);
  struct call calls[20];
  assert_int_equal(rx_timer_start(&fx->tick, on_tick, 30), 0);
  for (size_t i = 0; i < 20; i++)
    call_start(fx, &calls[i], "/slow");
  assert_int_equal(fx->http.active, 20);
  fx_run(fx, 20);
  assert_answered(calls, 20, 200, "late");
  assert_int_equal(fx->max_in_server, 4);
  assert_int_equal(fx->http.new_conns, 4);
  assert_int_equal(fx->http.completed, 20);
  calls_cleanup(calls, 20);
  free(fx);
}

static void test_request_timeout(void **state) {
  struct rx_http_opts opts = {.timeout_ms = 60000};
  struct fx *fx = fx_setup(&opts);
  struct call c;
  call_prep(fx, &c, "/hold");
  c.req.timeout_ms = 300; /* overrides the client's default */
  uv_update_time(&fx->uv);
  uint64_t t0 = rx_now_ms(&fx->loop);
  assert_int_equal(rx_http_start(&fx->http, &c.req, on_call_done), 0);
  fx_run(fx, 1);
  assert_int_equal(c.calls, 1);
  assert_int_equal(c.req.fut.result, UV_ETIMEDOUT);
  assert_int_equal(c.req.curl_code, CURLE_OPERATION_TIMEDOUT);
  assert_int_equal(c.req.status, 0);
  assert_non_null(c.req.resp_body);
  assert_string_equal(c.req.resp_body, "");
  assert_true(c.done_ms - t0 >= 290);
  assert_true(c.done_ms - t0 < 2000);
  calls_cleanup(&c, 1);
  free(fx);
}

static void test_retry_after(void **state) {
  struct fx *fx = fx_setup(NULL);
  struct call secs, date, past;
  call_start(fx, &secs, "/429");
  call_start(fx, &date, "/retry-date");
  call_start(fx, &past, "/retry-past");
  fx_run(fx, 3);
  assert_int_equal(secs.req.fut.result, 0); /* any HTTP status is a response */
  assert_int_equal(secs.req.status, 429);
  assert_int_equal(secs.req.retry_after_ms, 3000);
  assert_string_equal(secs.req.resp_body, "");
  assert_int_equal(date.req.fut.result, 0);
  assert_int_equal(date.req.status, 503);
  /* now + 10 s at one-second resolution, relative to the client's clock */
  assert_in_range(date.req.retry_after_ms, 8000, 10000);
  assert_int_equal(past.req.status, 503);
  assert_int_equal(past.req.retry_after_ms, 0);
  assert_int_equal(secs.calls + date.calls + past.calls, 3);
  calls_cleanup(&secs, 1);
  calls_cleanup(&date, 1);
  calls_cleanup(&past, 1);
  free(fx);
}

static void test_entity_id_and_location(void **state) {
  struct fx *fx = fx_setup(NULL);
  struct call c;
  call_prep(fx, &c, "/created");
  c.req.method = "POST";
  assert_int_equal(rx_http_start(&fx->http, &c.req, on_call_done), 0);
  fx_run(fx, 1);
  assert_int_equal(c.calls, 1);
  assert_int_equal(c.req.fut.result, 0);
  assert_int_equal(c.req.status, 204);
  assert_non_null(c.req.odata_entity_id);
  assert_string_equal(c.req.odata_entity_id, entity_id);
  assert_non_null(c.req.location);
  assert_string_equal(c.req.location, "/things/42");
  assert_int_equal(c.req.retry_after_ms, -1);
  calls_cleanup(&c, 1);
  free(fx);
}

static void test_body_ceiling(void **state) {
  struct rx_http_opts opts = {.max_response_bytes = 1024};
  struct fx *fx = fx_setup(&opts);
  struct call at, over, far;
  call_start(fx, &at, "/big?1024");
  call_start(fx, &over, "/big?1025");
  call_start(fx, &far, "/big?200000");
  fx_run(fx, 3);
  assert_int_equal(at.req.fut.result, 0);
  assert_int_equal(at.req.status, 200);
  assert_int_equal(at.req.resp_len, 1024);
  assert_int_equal(strlen(at.req.resp_body), 1024);
  assert_int_equal(over.req.fut.result, UV_E2BIG);
  assert_int_equal(over.req.curl_code, CURLE_WRITE_ERROR);
  assert_true(over.req.resp_len <= 1024);
  assert_int_equal(strlen(over.req.resp_body), over.req.resp_len);
  assert_int_equal(far.req.fut.result, UV_E2BIG);
  assert_int_equal(at.calls + over.calls + far.calls, 3);
  calls_cleanup(&at, 1);
  calls_cleanup(&over, 1);
  calls_cleanup(&far, 1);
  free(fx);
}

static uv_tcp_t refused_spot;

static void on_refused_done(struct rx_fut *fut) {
  uv_close((uv_handle_t *)&refused_spot, NULL);
  on_call_done(fut);
}

static void test_connection_refused(void **state) {
  struct fx *fx = fx_setup(NULL);
  /* A socket bound to a loopback port but not listening: connects to it are refused, and no other
   * process can take the port while the request runs. */
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int len = sizeof(bound);
  assert_int_equal(uv_tcp_init(&fx->uv, &refused_spot), 0);
  assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &addr), 0);
  assert_int_equal(uv_tcp_bind(&refused_spot, (const struct sockaddr *)&addr, 0), 0);
  assert_int_equal(uv_tcp_getsockname(&refused_spot, (struct sockaddr *)&bound, &len), 0);
  int port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
  struct call c;
  call_prep(fx, &c, "");
  snprintf(c.url, sizeof(c.url), "http://127.0.0.1:%d/nobody", port);
  assert_int_equal(rx_http_start(&fx->http, &c.req, on_refused_done), 0);
  fx_run(fx, 1);
  assert_int_equal(c.calls, 1);
  assert_int_equal(c.req.fut.result, UV_ECONNREFUSED);
  assert_int_equal(c.req.curl_code, CURLE_COULDNT_CONNECT);
  assert_int_equal(c.req.status, 0);
  assert_string_equal(c.req.resp_body, "");
  calls_cleanup(&c, 1);
  free(fx);
}

static void test_server_reset(void **state) {
  struct fx *fx = fx_setup(NULL);
  struct call c;
  call_start(fx, &c, "/reset");
  fx_run(fx, 1);
  assert_int_equal(c.calls, 1);
  /* The RST arrives while curl waits for the response. epoll reports POLLERR, libuv hands on_poll
   * status UV_EBADF, the client passes CURL_CSELECT_ERR, and curl fails the transfer with
   * CURLE_SEND_ERROR ("select/poll returned error"), which maps to UV_ECONNRESET. */
  assert_int_equal(c.req.fut.result, UV_ECONNRESET);
  assert_int_equal(c.req.curl_code, CURLE_SEND_ERROR);
  assert_int_equal(c.req.status, 0);
  calls_cleanup(&c, 1);
  free(fx);
}

static int cancel_in_cb_calls;

static void on_done_then_cancel(struct rx_fut *fut) {
  struct call *c = RX_CONTAINER_OF(fut, struct call, req.fut);
  /* Cancelling a finished request is a no-op: no second callback. */
  rx_http_cancel(&c->req);
  rx_http_cancel(&c->req);
  cancel_in_cb_calls++;
  on_call_done(fut);
}

static void test_cancel(void **state) {
  struct fx *fx = fx_setup(NULL);
  struct call never, now, held, finished;

  /* Never started: a no-op. */
  rx_http_req_init(&never.req);
  rx_http_cancel(&never.req);

  /* Cancelled right after start, twice: one callback. */
  call_prep(fx, &now, "/hold");
  assert_int_equal(rx_http_start(&fx->http, &now.req, on_done_then_cancel), 0);
  rx_http_cancel(&now.req);
  rx_http_cancel(&now.req);
  assert_int_equal(now.calls, 0); /* never synchronous */

  /* Cancelled while the server holds it (from inside the server's handler). */
  call_prep(fx, &held, "/hold");
  fx->cancel_when_held = &held.req;
  assert_int_equal(rx_http_start(&fx->http, &held.req, on_done_then_cancel), 0);

  /* Finished normally; cancelled afterwards from its own callback. */
  call_prep(fx, &finished, "/hello");
  cancel_in_cb_calls = 0;
  assert_int_equal(rx_http_start(&fx->http, &finished.req, on_done_then_cancel), 0);

  fx_run(fx, 3);
  assert_int_equal(cancel_in_cb_calls, 3);
  assert_int_equal(now.calls, 1);
  assert_int_equal(now.req.fut.result, UV_ECANCELED);
  assert_int_equal(held.calls, 1);
  assert_int_equal(held.req.fut.result, UV_ECANCELED);
  assert_null(fx->cancel_when_held); /* the handler did run */
  assert_int_equal(finished.calls, 1);
  assert_int_equal(finished.req.fut.result, 0);
  assert_int_equal(finished.req.status, 200);
  assert_int_equal(fx->http.completed, 3);
  rx_http_req_cleanup(&never.req);
  calls_cleanup(&now, 1);
  calls_cleanup(&held, 1);
  calls_cleanup(&finished, 1);
  free(fx);
}

static void test_close_with_active_requests(void **state) {
  struct fx *fx = fx_setup(NULL);
  struct call calls[3];
  fx->close_client_when_held = 3;
  for (size_t i = 0; i < 3; i++)
    call_start(fx, &calls[i], "/hold");
  fx_run(fx, 3);
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(calls[i].calls, 1);
    assert_int_equal(calls[i].req.fut.result, UV_ECANCELED);
    assert_int_equal(calls[i].req.status, 0);
  }
  assert_int_equal(fx->done_at_http_close, 3); /* completions come before the close callback */
  assert_int_equal(fx->http.completed, 3);
  assert_int_equal(fx->http.new_conns, 3); /* each held request had its own connection */

  /* After close, starting is refused and the callback never fires. */
  struct call late;
  call_prep(fx, &late, "/hello");
  assert_int_equal(rx_http_start(&fx->http, &late.req, on_call_done), UV_ECANCELED);
  assert_int_equal(late.calls, 0);
  calls_cleanup(calls, 3);
  calls_cleanup(&late, 1);
  free(fx);
}

static void test_start_rejects_bad_arguments(void **state) {
  struct fx *fx = fx_setup(NULL);
  struct call c;
  rx_http_req_init(&c.req);
  assert_int_equal(rx_http_start(&fx->http, &c.req, on_call_done), UV_EINVAL); /* no url */
  call_prep(fx, &c, "/hello");
  assert_int_equal(rx_http_start(&fx->http, &c.req, NULL), UV_EINVAL);
  c.req.body_len = 3; /* a length without a body */
  assert_int_equal(rx_http_start(&fx->http, &c.req, on_call_done), UV_EINVAL);
  fx_run(fx, 0);
  assert_int_equal(c.calls, 0);
  calls_cleanup(&c, 1);
  free(fx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_get_and_post),
      cmocka_unit_test(test_keepalive_reuses_one_connection),
      cmocka_unit_test(test_server_closes_idle_connection),
      cmocka_unit_test(test_per_host_limit_queues_the_rest),
      cmocka_unit_test(test_request_timeout),
      cmocka_unit_test(test_retry_after),
      cmocka_unit_test(test_entity_id_and_location),
      cmocka_unit_test(test_body_ceiling),
      cmocka_unit_test(test_connection_refused),
      cmocka_unit_test(test_server_reset),
      cmocka_unit_test(test_cancel),
      cmocka_unit_test(test_close_with_active_requests),
      cmocka_unit_test(test_start_rejects_bad_arguments),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
