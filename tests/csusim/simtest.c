/* The in-process csusim harness: the sim and an HTTP client share one loop; a call runs the loop
 * until its answer arrives or a deadline passes, so tests read like a plain client session. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "simtest.h"

void st_start_opts(struct st *t, const struct sim_opts *opts) {
  char why[512] = "";
  memset(t, 0, sizeof(*t));
  assert_int_equal(uv_loop_init(&t->uv), 0);
  assert_int_equal(rx_loop_init(&t->loop, &t->uv), 0);
  struct rx_http_opts hopts = {.max_per_host = 16, .timeout_ms = 10000};
  assert_int_equal(rx_http_init(&t->http, &t->loop, &hopts), 0);
  struct sim_opts o = *opts;
  snprintf(o.host, sizeof(o.host), "127.0.0.1");
  o.port = 0;
  int rc = sim_start(&t->sim, &t->loop, &o, why, sizeof(why));
  if (rc < 0)
    fail_msg("sim_start: %s (%s)", why, csr_strerror(rc));
}

void st_start(struct st *t, unsigned csus, double rate, const char *faults_yaml) {
  struct sim_opts o;
  sim_opts_default(&o);
  o.csus = csus;
  o.rate = rate;
  o.faults_yaml = faults_yaml;
  st_start_opts(t, &o);
}

static int stopped;

static void on_sim_stopped(struct sim *sim) {
  stopped++;
}

static void on_http_closed(struct rx_http *http) {
  stopped++;
}

void st_stop(struct st *t) {
  stopped = 0;
  sim_stop(&t->sim, on_sim_stopped);
  rx_http_close(&t->http, on_http_closed);
  rx_loop_run(&t->loop);
  assert_int_equal(stopped, 2);
  assert_int_equal(rx_loop_close(&t->loop), 0);
}

struct call {
  struct rx_http_req req;
  int done;
};

static void on_call_done(struct rx_fut *fut) {
  RX_CONTAINER_OF(fut, struct call, req.fut)->done = 1;
}

static uint64_t on_guard(struct rx_timer *timer) {
  *(int *)timer->data = 1;
  return RX_TIMER_STOP;
}

/* Runs the loop until *flag is set or `ms` passed; returns whether the flag was set. */
static int run_until(struct st *t, int *flag, uint64_t ms) {
  struct rx_timer guard;
  int expired = 0;
  assert_int_equal(rx_timer_init(&guard, &t->loop), 0);
  guard.data = &expired;
  assert_int_equal(rx_timer_start(&guard, on_guard, ms), 0);
  while (!*flag && !expired)
    uv_run(&t->uv, UV_RUN_ONCE);
  rx_timer_close(&guard, NULL);
  uv_run(&t->uv, UV_RUN_NOWAIT); /* let the guard's close callback run */
  return *flag;
}

static void copy_response(const struct rx_http_req *req, struct st_resp *out) {
  out->result = req->fut.result;
  out->status = req->status;
  out->len = req->resp_len;
  out->body = malloc(req->resp_len + 1);
  assert_non_null(out->body);
  memcpy(out->body, req->resp_body ? req->resp_body : "", req->resp_len);
  out->body[req->resp_len] = '\0';
  out->retry_after_ms = req->retry_after_ms;
  out->odata_entity_id = req->odata_entity_id ? strdup(req->odata_entity_id) : NULL;
  out->location = req->location ? strdup(req->location) : NULL;
  out->json = out->len ? csr_json_parse(out->body, out->len, NULL, 0) : NULL;
}

/* One call with an explicit body type (JSON for st_call, a form for the token endpoint). */
static int do_call(struct st *t, const char *method, const char *path, const char *const *headers,
                   const char *body, const char *body_type, long timeout_ms, struct st_resp *out) {
  char url[1024], type[128];
  struct call c = {0};
  memset(out, 0, sizeof(*out));
  snprintf(url, sizeof(url), "%s%s", t->sim.base_url, path);
  rx_http_req_init(&c.req);
  c.req.method = method;
  c.req.url = url;
  c.req.body = body;
  c.req.body_len = body ? strlen(body) : 0;
  c.req.timeout_ms = timeout_ms ? timeout_ms : 10000;
  snprintf(type, sizeof(type), "Content-Type: %s", body_type);
  if (body)
    assert_int_equal(rx_http_req_header(&c.req, type), 0);
  for (size_t i = 0; headers && headers[i]; i++)
    assert_int_equal(rx_http_req_header(&c.req, headers[i]), 0);
  assert_int_equal(rx_http_start(&t->http, &c.req, on_call_done), 0);
  /* The client's own timeout fires first; the guard only catches a stuck loop. */
  if (!run_until(t, &c.done, (uint64_t)c.req.timeout_ms + 5000)) {
    rx_http_cancel(&c.req);
    run_until(t, &c.done, 5000);
    fail_msg("call %s %s did not complete", method, path);
  }
  copy_response(&c.req, out);
  rx_http_req_cleanup(&c.req);
  return out->result;
}

int st_call(struct st *t, const char *method, const char *path, const char *const *headers,
            const char *body, long timeout_ms, struct st_resp *out) {
  return do_call(t, method, path, headers, body, "application/json", timeout_ms, out);
}

void st_resp_free(struct st_resp *r) {
  free(r->body);
  free(r->odata_entity_id);
  free(r->location);
  csr_json_free(r->json);
  memset(r, 0, sizeof(*r));
}

const char *st_token(struct st *t, enum sim_audience aud) {
  char *slot = t->tokens[aud];
  if (slot[0])
    return slot;
  char body[512];
  snprintf(body, sizeof(body),
           "client_id=%s&client_secret=%s&grant_type=client_credentials&scope=%s", SIM_CLIENT_ID,
           t->sim.opts.client_secret,
           aud == SIM_AUD_COMMERCE ? "api%3A%2F%2Fcommerce%2F.default"
                                   : "api%3A%2F%2Fdataverse%2F.default");
  struct st_resp r;
  do_call(t, "POST", "/csusim.onmicrosoft.com/oauth2/v2.0/token", NULL, body,
          "application/x-www-form-urlencoded", 0, &r);
  assert_int_equal(r.status, 200);
  const char *tok = csr_json_get_str(r.json, "access_token");
  assert_non_null(tok);
  assert_true(strlen(tok) < sizeof(t->tokens[0]));
  snprintf(slot, sizeof(t->tokens[0]), "%s", tok);
  st_resp_free(&r);
  return slot;
}

const char *st_auth(struct st *t, enum sim_audience aud) {
  static char line[2][600];
  snprintf(line[aud], sizeof(line[aud]), "Authorization: Bearer %s", st_token(t, aud));
  return line[aud];
}

void st_run_ms(struct st *t, uint64_t ms) {
  int never = 0;
  run_until(t, &never, ms);
}

static void raw_thread(void *arg) {
  struct st_raw *x = arg;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)x->port)};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
      write(fd, x->request, strlen(x->request)) == (ssize_t)strlen(x->request)) {
    ssize_t n;
    while (x->len + 1 < sizeof(x->resp) &&
           (n = read(fd, x->resp + x->len, sizeof(x->resp) - 1 - x->len)) > 0)
      x->len += (size_t)n;
  }
  x->resp[x->len] = '\0';
  if (fd >= 0)
    close(fd);
  __atomic_store_n(&x->done, 1, __ATOMIC_RELEASE);
  uv_async_send(&x->wake);
}

void st_raw_call(struct st *t, int port, const char *request, struct st_raw *x) {
  memset(x, 0, sizeof(*x));
  x->port = port;
  x->request = request;
  assert_int_equal(uv_async_init(&t->uv, &x->wake, NULL), 0);
  uv_thread_t th;
  assert_int_equal(uv_thread_create(&th, raw_thread, x), 0);
  while (!__atomic_load_n(&x->done, __ATOMIC_ACQUIRE))
    uv_run(&t->uv, UV_RUN_ONCE);
  uv_thread_join(&th);
  uv_close((uv_handle_t *)&x->wake, NULL);
  uv_run(&t->uv, UV_RUN_NOWAIT);
}

int st_raw_status(const struct st_raw *x) {
  return x->len > 12 ? atoi(x->resp + 9) : 0;
}

const char *st_raw_header(const struct st_raw *x, const char *name, char *buf, size_t cap) {
  size_t n = strlen(name);
  buf[0] = '\0';
  for (const char *p = strstr(x->resp, "\r\n"); p && p[2] != '\r'; p = strstr(p + 2, "\r\n"))
    if (strncasecmp(p + 2, name, n) == 0 && p[2 + n] == ':') {
      snprintf(buf, cap, "%.*s", (int)strcspn(p + 3 + n + 1, "\r"), p + 3 + n + 1);
      break;
    }
  return buf;
}
