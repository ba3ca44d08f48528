/* The token cache (src/pipeline/token.c) against csusim's Entra endpoint in-process: one fetch
 * for many waiters, cache hits that still complete from the loop, the token working on a CSU,
 * proactive refresh inside the margin, revocation and invalidate-once, OAuth errors without the
 * secret, an outage with backoff and Retry-After then healing, expires_in as a string and malformed
 * answers (from a small server of our own), cancel and destroy with waiters. Every log line is
 * captured and checked for secrets and tokens. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "csurelay/log.h"
#include "csurelay/pipeline.h"
#include "simtest.h"

#define TOKEN_PATH "/csusim.onmicrosoft.com/oauth2/v2.0/token"
#define OUN_PATH   "/csu0/Commerce/GetOperatingUnitNumber(channelid=5637144592)"
#define SECRET     "csusim-secret"

/* ---------------------------------------------------------------------------------------------- */
/* Log capture */
/* ---------------------------------------------------------------------------------------------- */

static char logbuf[1 << 20];
static size_t loglen;

static void capture(const char *line, size_t len, void *arg) {
  if (loglen + len + 1 < sizeof(logbuf)) {
    memcpy(logbuf + loglen, line, len);
    loglen += len;
    logbuf[loglen] = '\0';
  }
}

static void assert_not_logged(const char *s) {
  assert_true(s[0] != '\0');
  if (strstr(logbuf, s) != NULL)
    fail_msg("logged: %s", s);
}

/* ---------------------------------------------------------------------------------------------- */
/* Fixture */
/* ---------------------------------------------------------------------------------------------- */

struct fx {
  struct st st;
  struct rx_http http; /* our own client, as the relay has */
  struct csr_identity id;
  char url[256];
  struct pl_tokens *tk;
};

struct waiter {
  struct pl_token_req req;
  unsigned calls;
  int result;
  uint64_t done_ms;
  char token[2048];
  struct pl_tokens *tk; /* when set, the cache's stats are copied in the callback */
  struct pl_token_stats at_cb;
};

static uint64_t mono_ms(void) {
  return uv_hrtime() / 1000000;
}

static void on_token(struct rx_fut *fut) {
  struct waiter *w = RX_CONTAINER_OF(fut, struct waiter, req.fut);
  w->calls++;
  w->result = fut->result;
  w->done_ms = mono_ms();
  if (w->tk != NULL)
    w->at_cb = *pl_tokens_stats(w->tk);
  snprintf(w->token, sizeof(w->token), "%s",
           fut->result == 0 && w->req.token != NULL ? w->req.token : "");
}

static void make_identity(struct fx *f, const char *url, const char *secret) {
  snprintf(f->url, sizeof(f->url), "%s", url);
  f->id = (struct csr_identity){.name = "commerce",
                                .tenant = "csusim.onmicrosoft.com",
                                .client_id = SIM_CLIENT_ID,
                                .scope = SIM_COMMERCE_SCOPE,
                                .token_url = f->url,
                                .secret = (char *)secret};
}

static struct fx *fx_start_opts(const struct sim_opts *o) {
  struct fx *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  st_start_opts(&f->st, o);
  assert_int_equal(rx_http_init(&f->http, &f->st.loop, NULL), 0);
  char url[256];
  snprintf(url, sizeof(url), "%s%s", f->st.sim.base_url, TOKEN_PATH);
  make_identity(f, url, SECRET);
  assert_int_equal(pl_tokens_create(&f->st.loop, &f->http, &f->id, &f->tk), 0);
  return f;
}

static struct fx *fx_start(const char *faults_yaml) {
  struct sim_opts o;
  sim_opts_default(&o);
  o.faults_yaml = faults_yaml;
  return fx_start_opts(&o);
}

static uint64_t on_guard(struct rx_timer *timer) {
  *(int *)timer->data = 1;
  return RX_TIMER_STOP;
}

/* Runs the sim's loop until cond(arg) holds or `ms` passed; returns whether it holds. */
static bool run_until(struct fx *f, bool (*cond)(struct fx *, void *), void *arg, uint64_t ms) {
  struct rx_timer guard;
  int expired = 0;
  assert_int_equal(rx_timer_init(&guard, &f->st.loop), 0);
  guard.data = &expired;
  assert_int_equal(rx_timer_start(&guard, on_guard, ms), 0);
  while (!cond(f, arg) && !expired)
    uv_run(&f->st.uv, UV_RUN_ONCE);
  rx_timer_close(&guard, NULL);
  uv_run(&f->st.uv, UV_RUN_NOWAIT);
  return cond(f, arg);
}

static bool flag_set(struct fx *f, void *arg) {
  return *(int *)arg != 0;
}

static bool waiter_done(struct fx *f, void *arg) {
  return ((struct waiter *)arg)->calls > 0;
}

static void wait_for(struct fx *f, struct waiter *w, uint64_t ms) {
  if (!run_until(f, waiter_done, w, ms))
    fail_msg("no token callback within %llu ms", (unsigned long long)ms);
  assert_int_equal(w->calls, 1);
}

/* Gets a token and waits for it; asserts the callback did not run inside pl_tokens_get. */
static void get(struct fx *f, struct waiter *w, uint64_t ms) {
  memset(w, 0, sizeof(*w));
  w->tk = f->tk;
  assert_int_equal(pl_tokens_get(f->tk, &w->req, on_token), 0);
  assert_int_equal(w->calls, 0);
  wait_for(f, w, ms);
}

static uint64_t issued(struct fx *f) {
  struct sim_entra_stats s;
  sim_entra_stats(f->st.sim.entra, &s);
  return s.issued;
}

static bool issued_reaches(struct fx *f, void *arg) {
  return issued(f) >= *(uint64_t *)arg;
}

static const struct pl_token_stats *stats(struct fx *f) {
  return pl_tokens_stats(f->tk);
}

static void on_destroyed(void *arg) {
  (*(int *)arg)++;
}

static void destroy_tokens(struct fx *f) {
  int destroyed = 0;
  pl_tokens_destroy(f->tk, on_destroyed, &destroyed);
  assert_int_equal(destroyed, 0);
  assert_true(run_until(f, flag_set, &destroyed, 10000));
  assert_int_equal(destroyed, 1);
  f->tk = NULL;
}

static int http_closed;

static void on_http_closed(struct rx_http *http) {
  http_closed++;
}

static void fx_stop(struct fx *f) {
  if (f->tk != NULL)
    destroy_tokens(f);
  http_closed = 0;
  rx_http_close(&f->http, on_http_closed);
  assert_true(run_until(f, flag_set, &http_closed, 10000));
  assert_int_equal(http_closed, 1);
  st_stop(&f->st);
  assert_not_logged(SECRET);
  free(f);
}

/* GET on the CSU with `token`; returns the status. */
static long call_csu(struct fx *f, const char *token) {
  char auth[2100];
  snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
  const char *h[] = {"OUN: 128", auth, NULL};
  struct st_resp r;
  assert_int_equal(st_call(&f->st, "GET", OUN_PATH, h, NULL, 0, &r), 0);
  long status = r.status;
  if (status == 200)
    assert_string_equal(csr_json_get_str(r.json, "value"), "128");
  st_resp_free(&r);
  return status;
}

/* ---------------------------------------------------------------------------------------------- */
/* Tests */
/* ---------------------------------------------------------------------------------------------- */

static void test_fetch_then_cache_hit(void **state) {
  struct fx *f = fx_start(NULL);
  struct waiter a, b;
  assert_int_equal(pl_tokens_get(NULL, &a.req, on_token), -EINVAL);
  assert_int_equal(pl_tokens_get(f->tk, NULL, on_token), -EINVAL);
  assert_int_equal(pl_tokens_get(f->tk, &a.req, NULL), -EINVAL);
  int64_t before = rx_wall_ms();
  get(f, &a, 10000);
  assert_int_equal(a.result, 0);
  assert_true(strlen(a.token) > 100);
  assert_int_equal(issued(f), 1);
  assert_int_equal(stats(f)->fetches, 1);
  assert_int_equal(stats(f)->failures, 0);
  assert_int_equal(stats(f)->waiters_max, 1);
  /* Expiry from when the request was sent: 3599 s after a moment inside [before, now]. */
  assert_true(stats(f)->expires_at_ms >= before + 3599000);
  assert_true(stats(f)->expires_at_ms <= rx_wall_ms() + 3599000);
  /* A hit: no fetch, and still no synchronous callback (get() asserts calls == 0 on return). */
  get(f, &b, 10000);
  assert_int_equal(b.result, 0);
  assert_string_equal(b.token, a.token);
  assert_int_equal(issued(f), 1);
  assert_int_equal(stats(f)->fetches, 1);
  assert_int_equal(stats(f)->waiters_max, 1);
  /* Cancelling a completed request does nothing. */
  pl_tokens_cancel(&b.req);
  uv_run(&f->st.uv, UV_RUN_NOWAIT);
  assert_int_equal(b.calls, 1);
  assert_not_logged(a.token);
  fx_stop(f);
}

#define CONCURRENT 50

static bool all_done(struct fx *f, void *arg) {
  struct waiter *w = arg;
  for (int i = 0; i < CONCURRENT; i++)
    if (w[i].calls == 0)
      return false;
  return true;
}

static void test_concurrent_gets_one_fetch(void **state) {
  struct fx *f = fx_start(NULL);
  struct waiter *w = calloc(CONCURRENT, sizeof(*w));
  assert_non_null(w);
  for (int i = 0; i < CONCURRENT; i++)
    assert_int_equal(pl_tokens_get(f->tk, &w[i].req, on_token), 0);
  for (int i = 0; i < CONCURRENT; i++)
    assert_int_equal(w[i].calls, 0);
  assert_true(run_until(f, all_done, w, 10000));
  assert_int_equal(issued(f), 1);
  assert_int_equal(stats(f)->fetches, 1);
  assert_int_equal(stats(f)->waiters_max, CONCURRENT);
  for (int i = 0; i < CONCURRENT; i++) {
    assert_int_equal(w[i].calls, 1);
    assert_int_equal(w[i].result, 0);
    assert_string_equal(w[i].token, w[0].token);
  }
  assert_not_logged(w[0].token);
  free(w);
  fx_stop(f);
}

static void test_token_works_on_csu(void **state) {
  struct fx *f = fx_start(NULL);
  struct waiter a;
  get(f, &a, 10000);
  assert_int_equal(a.result, 0);
  assert_int_equal(call_csu(f, a.token), 200);
  assert_int_equal(call_csu(f, "forged.token.value"), 401);
  fx_stop(f);
}

/* A 6 s token: refresh margin min(300 s, 10%) raised to the 3 s floor, i.e. fresh for 3 s, then
 * served while one background refresh runs. Checks at ~1 s and ~4.5 s leave 1.5 s either side. */
static void test_proactive_refresh(void **state) {
  struct fx *f = fx_start("tokens: {lifetime_s: 6}\n");
  struct waiter a, b, c, d;
  get(f, &a, 10000);
  assert_int_equal(a.result, 0);
  int64_t exp = stats(f)->expires_at_ms;
  assert_true(exp - rx_wall_ms() <= 6000 && exp - rx_wall_ms() > 4000);
  st_run_ms(&f->st, 1000);
  get(f, &b, 10000);
  assert_string_equal(b.token, a.token);
  assert_int_equal(stats(f)->fetches, 1);
  st_run_ms(&f->st, 3500);
  /* Inside the margin: the old token at once, with a refresh started behind it. */
  get(f, &c, 10000);
  assert_int_equal(c.result, 0);
  assert_string_equal(c.token, a.token);
  assert_int_equal(c.at_cb.fetches, 2);
  assert_true(c.at_cb.expires_at_ms == exp); /* the refresh had not landed yet */
  assert_int_equal(stats(f)->fetches, 2);
  uint64_t two = 2;
  assert_true(run_until(f, issued_reaches, &two, 10000));
  for (int i = 0; i < 100 && stats(f)->expires_at_ms == exp; i++)
    st_run_ms(&f->st, 20);
  assert_true(stats(f)->expires_at_ms > exp);
  get(f, &d, 10000);
  assert_int_equal(d.result, 0);
  assert_string_not_equal(d.token, a.token);
  assert_int_equal(stats(f)->fetches, 2);
  assert_int_equal(issued(f), 2);
  assert_int_equal(stats(f)->failures, 0);
  assert_int_equal(call_csu(f, d.token), 200);
  fx_stop(f);
}

static void test_revocation_and_invalidate_once(void **state) {
  struct fx *f = fx_start("tokens: {revoke_at_s: 2}\n");
  struct waiter a, b, c;
  get(f, &a, 10000);
  assert_int_equal(a.result, 0);
  assert_true(sim_elapsed_ms(&f->st.sim) < 2000);
  assert_int_equal(call_csu(f, a.token), 200);
  uint64_t el = sim_elapsed_ms(&f->st.sim);
  if (el < 2300)
    st_run_ms(&f->st, 2300 - el);
  assert_int_equal(call_csu(f, a.token), 401);
  pl_tokens_invalidate(f->tk, "not-the-cached-token");
  pl_tokens_invalidate(f->tk, NULL);
  assert_int_equal(stats(f)->invalidations, 0);
  pl_tokens_invalidate(f->tk, a.token);
  assert_int_equal(stats(f)->invalidations, 1);
  assert_int_equal(stats(f)->expires_at_ms, 0);
  get(f, &b, 10000);
  assert_int_equal(b.result, 0);
  assert_string_not_equal(b.token, a.token);
  assert_int_equal(issued(f), 2);
  assert_int_equal(call_csu(f, b.token), 200);
  /* A second request that was refused with the old token must not drop the new one. */
  pl_tokens_invalidate(f->tk, a.token);
  assert_int_equal(stats(f)->invalidations, 1);
  get(f, &c, 10000);
  assert_string_equal(c.token, b.token);
  assert_int_equal(stats(f)->fetches, 2);
  assert_int_equal(issued(f), 2);
  assert_not_logged(a.token);
  assert_not_logged(b.token);
  fx_stop(f);
}

static void test_wrong_secret(void **state) {
  struct sim_opts o;
  sim_opts_default(&o);
  o.client_secret = "other-secret";
  struct fx *f = fx_start_opts(&o);
  struct waiter a;
  get(f, &a, 10000);
  assert_int_equal(a.result, CSR_ESTATUS);
  assert_string_equal(a.token, "");
  assert_int_equal(stats(f)->fetches, 1);
  assert_int_equal(stats(f)->failures, 1);
  assert_int_equal(stats(f)->expires_at_ms, 0);
  const char *e = stats(f)->last_error;
  assert_non_null(strstr(e, "invalid_client"));
  assert_non_null(strstr(e, "AADSTS7000215"));
  assert_null(strstr(e, SECRET));
  assert_null(strstr(e, "other-secret"));
  assert_non_null(strstr(logbuf, "AADSTS7000215"));
  assert_not_logged("other-secret");
  fx_stop(f);
}

/* The outage: many gets from a timer while the token endpoint answers 503. (csusim's token
 * endpoint sends no Retry-After with an injected error; test_retry_after covers that header.) */
#define OUTAGE_GETS 100

struct outage {
  struct fx *f;
  struct waiter *w;
  int started;
};

static uint64_t on_outage_tick(struct rx_timer *timer) {
  struct outage *o = timer->data;
  assert_int_equal(pl_tokens_get(o->f->tk, &o->w[o->started].req, on_token), 0);
  return ++o->started < OUTAGE_GETS ? 20 : RX_TIMER_STOP;
}

static bool outage_done(struct fx *f, void *arg) {
  struct outage *o = arg;
  if (o->started < OUTAGE_GETS)
    return false;
  for (int i = 0; i < OUTAGE_GETS; i++)
    if (o->w[i].calls == 0)
      return false;
  return true;
}

static void test_outage_backoff_then_heal(void **state) {
  struct fx *f = fx_start("endpoints:\n"
                          "  token: {error_rate: 1.0, errors: [503], retry_after_s: 1}\n");
  struct waiter a, h;
  get(f, &a, 10000);
  assert_int_equal(a.result, CSR_ESTATUS);
  assert_int_equal(stats(f)->fetches, 1);
  assert_int_equal(stats(f)->failures, 1);
  assert_non_null(strstr(stats(f)->last_error, "temporarily_unavailable"));
  assert_non_null(strstr(stats(f)->last_error, "HTTP 503"));
  /* 100 gets over 2 s: they wait for the fetch after each backoff (at least its 250 ms floor),
   * so fetches stay bounded by the elapsed time, and every waiter hears exactly once. */
  struct outage o = {.f = f, .w = calloc(OUTAGE_GETS, sizeof(struct waiter))};
  assert_non_null(o.w);
  struct rx_timer tick;
  assert_int_equal(rx_timer_init(&tick, &f->st.loop), 0);
  tick.data = &o;
  uint64_t t0 = a.done_ms;
  assert_int_equal(rx_timer_start(&tick, on_outage_tick, 0), 0);
  assert_true(run_until(f, outage_done, &o, 30000));
  rx_timer_close(&tick, NULL);
  uint64_t last = 0;
  for (int i = 0; i < OUTAGE_GETS; i++) {
    assert_int_equal(o.w[i].calls, 1);
    assert_int_equal(o.w[i].result, CSR_ESTATUS);
    last = o.w[i].done_ms > last ? o.w[i].done_ms : last;
  }
  /* The get right after the failure waited for the backoff (at least its 250 ms floor). */
  assert_true(o.w[0].done_ms - t0 >= 200);
  uint64_t later = stats(f)->fetches - 1;
  assert_true(later >= 1);
  assert_true(later <= (last - t0) / 200 + 1);
  assert_int_equal(stats(f)->failures, stats(f)->fetches);
  assert_true(stats(f)->waiters_max >= 2);
  free(o.w);
  /* Heal at run time: the next get succeeds once the current backoff ends. */
  struct st_resp r;
  assert_int_equal(st_call(&f->st, "POST", "/sim/faults", NULL, "", 0, &r), 0);
  assert_int_equal(r.status, 200);
  st_resp_free(&r);
  get(f, &h, 40000);
  assert_int_equal(h.result, 0);
  assert_int_equal(issued(f), 1);
  assert_int_equal(call_csu(f, h.token), 200);
  assert_non_null(strstr(logbuf, "token endpoint recovered"));
  assert_not_logged(h.token);
  fx_stop(f);
}

/* A token endpoint of our own, for answers csusim never gives. */
struct mini {
  struct rx_http_server srv;
  char method[16];
  char ctype[128];
  char body[1024];
};

static void on_mini(struct rx_http_request *req, void *arg) {
  struct mini *m = arg;
  static const struct {
    const char *path;
    int status;
    const char *body;
  } answers[] = {
      {"/string", 200,
       "{\"token_type\":\"Bearer\",\"expires_in\":\"3599\",\"access_token\":\"abc\"}"},
      {"/number", 200, "{\"token_type\":\"bearer\",\"expires_in\":60,\"access_token\":\"n.1-_~\"}"},
      {"/notype", 200, "{\"expires_in\":60,\"access_token\":\"nt\"}"},
      {"/missing", 200, "{\"token_type\":\"Bearer\",\"access_token\":\"abc\"}"},
      {"/nonjson", 200, "<html>upstream says hello</html>"},
      {"/badexp", 200,
       "{\"token_type\":\"Bearer\",\"expires_in\":\"12abc\",\"access_token\":\"x\"}"},
      {"/zero", 200, "{\"token_type\":\"Bearer\",\"expires_in\":0,\"access_token\":\"x\"}"},
      {"/frac", 200, "{\"token_type\":\"Bearer\",\"expires_in\":1.5e3,\"access_token\":\"x\"}"},
      {"/ctl", 200,
       "{\"token_type\":\"Bearer\",\"expires_in\":60,\"access_token\":\"a\\r\\nX: y\"}"},
      {"/notoken", 200, "{\"token_type\":\"Bearer\",\"expires_in\":60}"},
      {"/mac", 200, "{\"token_type\":\"mac\",\"expires_in\":60,\"access_token\":\"x\"}"},
      {"/plain500", 500, "oops"},
      {"/busy", 503,
       "{\"error\":\"temporarily_unavailable\",\"error_codes\":[90055],\"error_description\":"
       "\"AADSTS90055: busy\"}"},
      {"/oauth400", 400,
       "{\"error\":\"invalid_scope\",\"error_description\":\"AADSTS70011: The scope s3cr3t is "
       "not valid.\"}"},
  };
  snprintf(m->method, sizeof(m->method), "%s", req->method);
  const char *ct = rx_http_header(req, "Content-Type");
  snprintf(m->ctype, sizeof(m->ctype), "%s", ct ? ct : "");
  snprintf(m->body, sizeof(m->body), "%s", req->body);
  for (size_t i = 0; i < sizeof(answers) / sizeof(answers[0]); i++)
    if (strcmp(req->path, answers[i].path) == 0) {
      rx_http_respond(req, answers[i].status,
                      answers[i].status == 503 ? "Retry-After: 1\r\n" : NULL, "application/json",
                      answers[i].body, strlen(answers[i].body));
      return;
    }
  rx_http_respond(req, 404, NULL, NULL, NULL, 0);
}

/* One cache against mini's `path`; returns the waiter's result, the token and last_error. */
static int mini_get(struct fx *f, struct mini *m, const char *path, const char *secret, char *token,
                    size_t cap, char *last_error, size_t ecap) {
  char url[256];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", m->srv.port, path);
  make_identity(f, url, secret);
  assert_int_equal(pl_tokens_create(&f->st.loop, &f->http, &f->id, &f->tk), 0);
  struct waiter w;
  get(f, &w, 10000);
  snprintf(token, cap, "%s", w.token);
  snprintf(last_error, ecap, "%s", stats(f)->last_error);
  destroy_tokens(f);
  return w.result;
}

static int srv_closed;

static void on_srv_closed(struct rx_http_server *srv) {
  srv_closed++;
}

static void mini_start(struct fx *f, struct mini *m) {
  memset(m, 0, sizeof(*m));
  assert_int_equal(rx_http_server_init(&m->srv, &f->st.loop, NULL), 0);
  assert_int_equal(rx_http_server_route(&m->srv, "POST", "/*", on_mini, m), 0);
  assert_int_equal(rx_http_server_listen(&m->srv, "127.0.0.1", 0), 0);
}

static void mini_stop(struct fx *f, struct mini *m) {
  srv_closed = 0;
  rx_http_server_close(&m->srv, on_srv_closed);
  assert_true(run_until(f, flag_set, &srv_closed, 10000));
}

static void test_answer_forms(void **state) {
  struct fx *f = fx_start(NULL);
  destroy_tokens(f);
  struct mini m;
  mini_start(f, &m);
  char tok[2048], err[256];
  /* The request: a POST form, every value escaped. */
  assert_int_equal(mini_get(f, &m, "/string", "s&e=c+r t/%~", tok, sizeof(tok), err, sizeof(err)),
                   0);
  assert_string_equal(tok, "abc");
  assert_string_equal(m.method, "POST");
  assert_string_equal(m.ctype, "application/x-www-form-urlencoded");
  assert_string_equal(m.body, "grant_type=client_credentials&client_id=csurelay"
                              "&client_secret=s%26e%3Dc%2Br+t%2F%25~"
                              "&scope=api%3A%2F%2Fcommerce%2F.default");
  assert_int_equal(mini_get(f, &m, "/number", SECRET, tok, sizeof(tok), err, sizeof(err)), 0);
  assert_string_equal(tok, "n.1-_~");
  assert_int_equal(mini_get(f, &m, "/notype", SECRET, tok, sizeof(tok), err, sizeof(err)), 0);
  assert_string_equal(tok, "nt");
  static const struct {
    const char *path;
    int result;
    const char *reason;
  } bad[] = {
      {"/missing", CSR_EPARSE, "expires_in"},
      {"/nonjson", CSR_EPARSE, "not JSON"},
      {"/badexp", CSR_EPARSE, "expires_in"},
      {"/zero", CSR_EPARSE, "expires_in"},
      {"/frac", CSR_EPARSE, "expires_in"},
      {"/ctl", CSR_EPARSE, "access_token"},
      {"/notoken", CSR_EPARSE, "access_token"},
      {"/mac", CSR_EPARSE, "token_type"},
      {"/plain500", CSR_ESTATUS, "HTTP 500"},
      {"/oauth400", CSR_ESTATUS, "invalid_scope (AADSTS70011)"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    int rc = mini_get(f, &m, bad[i].path, SECRET, tok, sizeof(tok), err, sizeof(err));
    if (rc != bad[i].result || strstr(err, bad[i].reason) == NULL)
      fail_msg("%s: %s, \"%s\"", bad[i].path, csr_strerror(rc), err);
    assert_string_equal(tok, "");
    assert_null(strstr(err, "s3cr3t"));
  }
  assert_not_logged("s3cr3t");
  assert_not_logged("s%26e");
  assert_not_logged("s&e=c");
  mini_stop(f, &m);
  fx_stop(f);
}

/* 503 with Retry-After: 1: the next fetch waits at least that long, whatever the jitter draws. */
static void test_retry_after(void **state) {
  struct fx *f = fx_start(NULL);
  destroy_tokens(f);
  struct mini m;
  mini_start(f, &m);
  char url[256];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/busy", m.srv.port);
  make_identity(f, url, SECRET);
  assert_int_equal(pl_tokens_create(&f->st.loop, &f->http, &f->id, &f->tk), 0);
  struct waiter a, b;
  get(f, &a, 10000);
  assert_int_equal(a.result, CSR_ESTATUS);
  assert_string_equal(stats(f)->last_error, "temporarily_unavailable (AADSTS90055), HTTP 503");
  get(f, &b, 10000);
  assert_int_equal(b.result, CSR_ESTATUS);
  assert_true(b.done_ms - a.done_ms >= 950);
  assert_int_equal(stats(f)->fetches, 2);
  assert_int_equal(stats(f)->failures, 2);
  destroy_tokens(f);
  mini_stop(f, &m);
  fx_stop(f);
}

static bool three_done(struct fx *f, void *arg) {
  struct waiter *w = arg;
  return w[0].calls && w[1].calls && w[2].calls;
}

static void test_cancel_and_destroy(void **state) {
  struct fx *f = fx_start("endpoints:\n  token: {latency_ms: 1500}\n");
  struct waiter a = {0}, b = {0}, w[3];
  assert_int_equal(pl_tokens_get(f->tk, &a.req, on_token), 0);
  assert_int_equal(pl_tokens_get(f->tk, &b.req, on_token), 0);
  assert_int_equal(stats(f)->waiters_max, 2);
  pl_tokens_cancel(&a.req);
  assert_int_equal(a.calls, 0); /* completes from the loop */
  pl_tokens_cancel(&a.req);
  wait_for(f, &a, 10000);
  assert_int_equal(a.result, UV_ECANCELED);
  assert_int_equal(b.calls, 0);
  pl_tokens_cancel(&a.req);
  wait_for(f, &b, 10000);
  assert_int_equal(b.result, 0);
  assert_int_equal(a.calls, 1);
  assert_int_equal(stats(f)->fetches, 1);
  /* Destroy with three waiters on a slow fetch. */
  pl_tokens_invalidate(f->tk, b.token);
  memset(w, 0, sizeof(w));
  for (int i = 0; i < 3; i++)
    assert_int_equal(pl_tokens_get(f->tk, &w[i].req, on_token), 0);
  st_run_ms(&f->st, 200);
  assert_int_equal(stats(f)->fetches, 2);
  int destroyed = 0;
  pl_tokens_destroy(f->tk, on_destroyed, &destroyed);
  f->tk = NULL;
  for (int i = 0; i < 3; i++)
    assert_int_equal(w[i].calls, 0);
  assert_true(run_until(f, three_done, w, 10000));
  assert_true(run_until(f, flag_set, &destroyed, 10000));
  for (int i = 0; i < 3; i++) {
    assert_int_equal(w[i].calls, 1);
    assert_int_equal(w[i].result, UV_ECANCELED);
  }
  assert_int_equal(destroyed, 1);
  fx_stop(f);
}

/* A callback may re-arm its own request (a 401 handler asking again). */
struct rearm {
  struct pl_token_req req;
  struct pl_tokens *tk;
  int calls;
  char first[2048];
  char second[2048];
};

static void on_rearm(struct rx_fut *fut) {
  struct rearm *r = RX_CONTAINER_OF(fut, struct rearm, req.fut);
  assert_int_equal(fut->result, 0);
  if (++r->calls == 1) {
    snprintf(r->first, sizeof(r->first), "%s", r->req.token);
    pl_tokens_invalidate(r->tk, r->req.token);
    /* Still valid here although no longer cached. */
    assert_string_equal(r->req.token, r->first);
    assert_int_equal(pl_tokens_get(r->tk, &r->req, on_rearm), 0);
  } else {
    snprintf(r->second, sizeof(r->second), "%s", r->req.token);
  }
}

static bool rearm_done(struct fx *f, void *arg) {
  return ((struct rearm *)arg)->calls >= 2;
}

static void test_rearm_from_callback(void **state) {
  struct fx *f = fx_start(NULL);
  struct rearm r = {.tk = f->tk};
  assert_int_equal(pl_tokens_get(f->tk, &r.req, on_rearm), 0);
  assert_true(run_until(f, rearm_done, &r, 10000));
  assert_int_equal(r.calls, 2);
  assert_string_not_equal(r.first, r.second);
  assert_int_equal(stats(f)->fetches, 2);
  assert_int_equal(stats(f)->invalidations, 1);
  fx_stop(f);
}

int main(void) {
  csr_log_set_writer(capture, NULL);
  csr_log_set_level(CSR_DEBUG);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fetch_then_cache_hit),
      cmocka_unit_test(test_concurrent_gets_one_fetch),
      cmocka_unit_test(test_token_works_on_csu),
      cmocka_unit_test(test_proactive_refresh),
      cmocka_unit_test(test_revocation_and_invalidate_once),
      cmocka_unit_test(test_wrong_secret),
      cmocka_unit_test(test_outage_backoff_then_heal),
      cmocka_unit_test(test_answer_forms),
      cmocka_unit_test(test_retry_after),
      cmocka_unit_test(test_cancel_and_destroy),
      cmocka_unit_test(test_rearm_from_callback),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
