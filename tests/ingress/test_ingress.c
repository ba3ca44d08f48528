/* The ingress's listener and runner in process (src/ingress/ingress.c, ingress_run.c,
 * ingress_upsert.c) against an in-process csusim, for the paths the end-to-end test cannot reach:
 *
 *   test_stale_mapping   the state maps an email to an account Commerce no longer has: the PATCH
 *                        answers 404, the attempt searches, finds nothing and creates (one PATCH
 *                        404, one search, one create; the new account replaces the mapping).
 *   test_stop_and_resume a job in flight when the ingress stops: its waiting POST gets 202, the
 *                        job stays pending in the state, and a new ingress on the same state
 *                        resumes and finishes it; a GET of a pending job shows it pending.
 *   test_open_errors     bad arguments, and a port in use named in the error.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <cmocka.h>

#include "csurelay/ingress.h"
#include "csurelay/pipeline.h"
#include "simtest.h"

struct fx {
  struct st t;
  char dir[64];
  struct csr_config *cfg;
  struct pl_admit *admit;
  struct pl_tokens *tokens;
  struct cs_ingress *g;
  int stopped;
};

/* ---------------------------------------------------------------------------------------------- */
/* Fixture                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

static struct csr_config *load_config(struct fx *f, unsigned sync_wait_ms, int port) {
  char yaml[2048];
  const char *u = f->t.sim.base_url;
  snprintf(yaml, sizeof(yaml),
           "state: {dir: \"%s\", fsync: batch, fsync_interval_ms: 5}\n"
           "retry: {base_ms: 50, cap_ms: 200, max_attempts: 50}\n"
           "limits: {http_timeout_ms: 5000}\n"
           "identities:\n"
           "  commerce: {authority: \"%s\", tenant: csusim.onmicrosoft.com, client_id: csurelay,\n"
           "    client_secret_env: CSUSIM_CLIENT_SECRET, scope: \"api://commerce/.default\"}\n"
           "csus:\n"
           "  - {name: csu0, url: \"%s/csu0/\", oun: \"128\", identity: commerce,\n"
           "     event_types: [Checkout]}\n"
           "ingress: {listen: \"127.0.0.1:%d\", csu: csu0, sync_wait_ms: %u}\n",
           f->dir, u, u, port, sync_wait_ms);
  struct csr_err err;
  struct csr_config *cfg = NULL;
  if (csr_config_parse("test.yaml", yaml, strlen(yaml), &cfg, &err) < 0) {
    char why[1024];
    fail_msg("config: %s", csr_err_format(&err, why, sizeof(why)));
  }
  return cfg;
}

static struct fx *fx_new(unsigned sync_wait_ms) {
  struct fx *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  assert_int_equal(setenv("CSUSIM_CLIENT_SECRET", "csusim-secret", 1), 0);
  st_start(&f->t, 1, 0, NULL);
  snprintf(f->dir, sizeof(f->dir), "/tmp/csr-ingress-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  f->cfg = load_config(f, sync_wait_ms, 0);
  struct csr_err err;
  if (pl_admit_open(&f->t.loop, f->cfg, NULL, &(struct pl_admit_ops){0}, NULL, &f->admit, &err) < 0)
    fail_msg("pl_admit_open: %s", err.msg);
  assert_int_equal(pl_tokens_create(&f->t.loop, &f->t.http, f->cfg->csus[0].identity, &f->tokens),
                   0);
  return f;
}

static int open_ingress_with(struct fx *f, const struct csr_config *cfg, struct csr_err *err) {
  struct cs_ingress_deps deps = {
      .loop = &f->t.loop, .cfg = cfg, .http = &f->t.http, .tokens = f->tokens, .admit = f->admit};
  return cs_ingress_open(&deps, &f->g, err);
}

static int open_ingress(struct fx *f, struct csr_err *err) {
  return open_ingress_with(f, f->cfg, err);
}

static void on_stopped(void *arg) {
  ((struct fx *)arg)->stopped++;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  return remove(path);
}

static void fx_free(struct fx *f) {
  f->stopped = 0;
  int want = 2;
  if (f->g != NULL) {
    cs_ingress_stop(f->g, on_stopped, f);
    want++;
  }
  pl_admit_close(f->admit, on_stopped, f);
  pl_tokens_destroy(f->tokens, on_stopped, f);
  while (f->stopped < want)
    uv_run(&f->t.uv, UV_RUN_ONCE);
  st_stop(&f->t);
  csr_config_destroy(f->cfg);
  nftw(f->dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
  free(f);
}

/* ---------------------------------------------------------------------------------------------- */
/* Calls to the ingress on the shared loop                                                        */
/* ---------------------------------------------------------------------------------------------- */

struct call {
  struct rx_http_req req;
  char url[128];
  int done;
};

static void on_call(struct rx_fut *fut) {
  RX_CONTAINER_OF(fut, struct call, req.fut)->done = 1;
}

static void call_start(struct fx *f, struct call *c, const char *method, const char *path,
                       const char *body) {
  memset(c, 0, sizeof(*c));
  snprintf(c->url, sizeof(c->url), "http://127.0.0.1:%d%s", cs_ingress_port(f->g), path);
  rx_http_req_init(&c->req);
  c->req.method = method;
  c->req.url = c->url;
  c->req.body = body;
  c->req.body_len = body ? strlen(body) : 0;
  c->req.timeout_ms = 10000;
  assert_int_equal(rx_http_start(&f->t.http, &c->req, on_call), 0);
}

/* Runs the loop until `c` is answered (bounded by its own timeout). */
static yajl_val call_wait(struct fx *f, struct call *c, long want_status) {
  while (!c->done)
    uv_run(&f->t.uv, UV_RUN_ONCE);
  assert_int_equal(c->req.fut.result, 0);
  if (c->req.status != want_status)
    fail_msg("%s: %ld %s", c->url, c->req.status, c->req.resp_body);
  yajl_val doc = csr_json_parse(c->req.resp_body, c->req.resp_len, NULL, 0);
  assert_non_null(doc);
  return doc;
}

static int64_t ledger(struct fx *f, const char *path) {
  struct st_resp r;
  assert_int_equal(st_call(&f->t, "GET", "/ledger", NULL, NULL, 0, &r), 0);
  const char *text = csr_json_num_text(csr_json_path(r.json, path));
  int64_t v = text ? strtoll(text, NULL, 10) : 0;
  st_resp_free(&r);
  return v;
}

/* ---------------------------------------------------------------------------------------------- */
/* Tests                                                                                          */
/* ---------------------------------------------------------------------------------------------- */

static void test_stale_mapping(void **state) {
  struct fx *f = fx_new(5000);
  /* A mapping to an account csusim never had: the customer was "deleted or merged". */
  struct csr_jw jw;
  const char *text;
  size_t len;
  assert_int_equal(csr_jw_init(&jw), 0);
  assert_int_equal(cs_rec_customer(&jw, "Gone@Example.com", "999999"), 0);
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
  assert_int_equal(
      pl_store_append(pl_admit_store(f->admit), PL_REC_CUSTOMER, text, len, NULL, NULL), 0);
  assert_int_equal(pl_state_apply(pl_admit_state(f->admit), PL_REC_CUSTOMER, text, len), 0);
  csr_jw_free(&jw);
  struct csr_err err = {0};
  assert_int_equal(open_ingress(f, &err), 0);

  struct call c;
  call_start(f, &c, "POST", "/v1/customers", "{\"email\":\"gone@example.com\",\"lastName\":\"G\"}");
  yajl_val doc = call_wait(f, &c, 200);
  const char *acct = csr_json_get_str(doc, "accountNumber");
  assert_non_null(acct);
  assert_string_not_equal(acct, "999999");
  assert_true(YAJL_IS_TRUE(csr_json_get(doc, "created")));
  assert_string_equal(cs_jobs_account(pl_state_jobs(pl_admit_state(f->admit)), "GONE@example.com"),
                      acct);
  csr_json_free(doc);
  rx_http_req_cleanup(&c.req);
  assert_int_equal(ledger(f, "requests.customer_update.404"), 1);
  assert_int_equal(ledger(f, "requests.customer_search.200"), 1);
  assert_int_equal(ledger(f, "requests.customer_create.201"), 1);
  assert_int_equal(ledger(f, "customers.created"), 1);
  struct cs_ingress_stats st;
  cs_ingress_stats(f->g, &st);
  assert_int_equal(st.accepted, 1);
  assert_int_equal(st.created, 1);
  assert_int_equal(st.searches, 1);
  assert_int_equal(st.retries, 0);
  assert_int_equal(st.answered_sync, 1);
  fx_free(f);
}

static void test_stop_and_resume(void **state) {
  struct fx *f = fx_new(5000);
  struct csr_err err = {0};
  assert_int_equal(open_ingress(f, &err), 0);
  /* Searches hang for 3 s: the job is in flight when the ingress stops. */
  struct st_resp r;
  const char *hdr[] = {"Content-Type: application/yaml", NULL};
  assert_int_equal(st_call(&f->t, "POST", "/sim/faults", hdr,
                           "endpoints:\n  customer_search: {latency_ms: 3000}\n", 0, &r),
                   0);
  assert_int_equal(r.status, 200);
  st_resp_free(&r);

  struct call c;
  call_start(f, &c, "POST", "/v1/customers", "{\"email\":\"stop@example.com\",\"lastName\":\"S\"}");
  struct cs_ingress_stats st = {0};
  while (st.running == 0 || st.searches == 0) {
    uv_run(&f->t.uv, UV_RUN_ONCE);
    cs_ingress_stats(f->g, &st);
  }
  f->stopped = 0;
  cs_ingress_stop(f->g, on_stopped, f);
  f->g = NULL;
  yajl_val doc = call_wait(f, &c, 202);
  char id[40];
  snprintf(id, sizeof(id), "%s", csr_json_get_str(doc, "jobId"));
  csr_json_free(doc);
  rx_http_req_cleanup(&c.req);
  while (f->stopped == 0)
    uv_run(&f->t.uv, UV_RUN_ONCE);
  struct cs_jobs *jobs = pl_state_jobs(pl_admit_state(f->admit));
  assert_non_null(cs_jobs_find(jobs, id));
  assert_int_equal(cs_jobs_find(jobs, id)->state, CS_JOB_PENDING);
  assert_null(cs_jobs_find(jobs, id)->run);

  /* A new ingress on the same state resumes the job; a GET shows it pending, then done. */
  assert_int_equal(open_ingress(f, &err), 0);
  char path[96];
  snprintf(path, sizeof(path), "/v1/customers/jobs/%s", id);
  call_start(f, &c, "GET", path, NULL);
  doc = call_wait(f, &c, 200);
  assert_string_equal(csr_json_get_str(doc, "status"), "pending");
  assert_true(YAJL_IS_NULL(csr_json_get(doc, "endedAt")));
  csr_json_free(doc);
  rx_http_req_cleanup(&c.req);
  while (cs_jobs_find(jobs, id)->state == CS_JOB_PENDING)
    uv_run(&f->t.uv, UV_RUN_ONCE);
  assert_int_equal(cs_jobs_find(jobs, id)->state, CS_JOB_DONE);
  assert_true(cs_jobs_find(jobs, id)->created);
  call_start(f, &c, "GET", path, NULL);
  doc = call_wait(f, &c, 200);
  assert_string_equal(csr_json_get_str(doc, "status"), "done");
  assert_true(YAJL_IS_TRUE(csr_json_get(doc, "created")));
  csr_json_free(doc);
  rx_http_req_cleanup(&c.req);
  assert_int_equal(ledger(f, "customers.created"), 1);
  fx_free(f);
}

static void test_open_errors(void **state) {
  struct fx *f = fx_new(100);
  struct cs_ingress *g = NULL;
  struct csr_err err = {0};
  assert_int_equal(cs_ingress_open(NULL, &g, &err), UV_EINVAL);
  struct cs_ingress_deps deps = {.loop = &f->t.loop, .cfg = f->cfg, .http = &f->t.http};
  assert_int_equal(cs_ingress_open(&deps, &g, &err), UV_EINVAL); /* no tokens, no admitter */
  assert_null(g);
  assert_int_equal(open_ingress(f, &err), 0);
  /* A second ingress on the port the first holds. */
  struct cs_ingress *first = f->g;
  struct csr_config *taken = load_config(f, 100, cs_ingress_port(first));
  f->g = NULL;
  memset(&err, 0, sizeof(err));
  assert_int_equal(open_ingress_with(f, taken, &err), UV_EADDRINUSE);
  assert_null(f->g);
  assert_string_equal(err.key, "ingress.listen");
  assert_non_null(strstr(err.msg, "cannot listen on 127.0.0.1:"));
  f->g = first;
  uv_run(&f->t.uv, UV_RUN_NOWAIT); /* the failed one frees itself from the loop */
  fx_free(f);
  csr_config_destroy(taken);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stale_mapping),
      cmocka_unit_test(test_stop_and_resume),
      cmocka_unit_test(test_open_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
