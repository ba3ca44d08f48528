/* The customer sync ingress end to end (SPEC section 5, issue 6): a real csusim as Commerce, the
 * csurelay process with an ingress section, every outcome read from the ingress's answers AND
 * csusim's ledger (customers created/updated, and the request counts of the customer endpoints).
 *
 *   test_upsert    no or wrong token → 401; each invalid field, an oversized, non-JSON or
 *                  truncated body → 400/413 naming it, and nothing sent to Commerce; a new email
 *                  → 200 created; the same email in another case → 200 updated, same account;
 *                  20 concurrent posts for one new email → one customer; a create Commerce
 *                  refuses (no lastName) → 422 with csusim's message, and GET says failed.
 *   test_retry     Commerce answers 503 to searches and creates for a while: 202 + Location,
 *                  GET pending, then done after the outage, one customer.
 *   test_crash     kill -9 right after a 202 while Commerce fails: the restarted relay resumes
 *                  the job from the AOF and it completes, one customer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>
#include <cmocka.h>

#include "ittest.h"

#define TOKEN      "it-ingress-token"
#define TOKEN_ENV  "CSR_IT_INGRESS_TOKEN"
#define AUTH       "Authorization: Bearer " TOKEN
#define CONCURRENT 20

static const char OUTAGE[] = "endpoints:\n"
                             "  customer_search: {error_rate: 1.0, errors: [503]}\n"
                             "  customer_create: {error_rate: 1.0, errors: [503]}\n";

/* ---------------------------------------------------------------------------------------------- */
/* Helpers                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

/* csusim, then the relay with an ingress on an ephemeral port and a bearer token; sync_wait_ms
 * is stretched by CSR_IT_SLOW. */
static void start_world(struct it *t, const char *name, long sync_wait_ms, const struct it_cfg *c) {
  it_setup(t, name);
  assert_int_equal(setenv(TOKEN_ENV, TOKEN, 1), 0);
  it_sim_start(t, &(struct it_sim_opts){.csus = 1, .rate = 0, .seed = 7});
  it_config_write(t, c);
  FILE *f = fopen(t->cfg, "a");
  assert_non_null(f);
  fprintf(f, "ingress: {listen: \"127.0.0.1:0\", token_env: %s, csu: csu0, sync_wait_ms: %ld}\n",
          TOKEN_ENV, it_slow(t, sync_wait_ms));
  assert_int_equal(fclose(f), 0);
  it_relay_start(t);
  it_ingress_wait(t);
}

static long post(struct it *t, const char *auth, const char *body, struct it_resp *r) {
  char url[128];
  snprintf(url, sizeof(url), "%s/v1/customers", t->ingress_url);
  const char *hdrs[] = {"Content-Type: application/json", auth, NULL}; /* auth NULL: none */
  return it_http_hdrs(t, "POST", url, hdrs, body, r);
}

static long get_job(struct it *t, const char *id, struct it_resp *r) {
  char url[160];
  snprintf(url, sizeof(url), "%s/v1/customers/jobs/%s", t->ingress_url, id);
  const char *hdrs[] = {AUTH, NULL};
  return it_http_hdrs(t, "GET", url, hdrs, NULL, r);
}

/* Requests csusim counted on its Commerce customer endpoints, every status. */
static int64_t commerce_calls(struct it *t) {
  yajl_val l = it_sim_json(t, "/ledger");
  yajl_val req = csr_json_get(l, "requests");
  int64_t n = 0;
  for (size_t i = 0; YAJL_IS_OBJECT(req) && i < req->u.object.len; i++) {
    if (strncmp(req->u.object.keys[i], "customer_", 9) != 0)
      continue;
    yajl_val by = req->u.object.values[i];
    for (size_t j = 0; YAJL_IS_OBJECT(by) && j < by->u.object.len; j++)
      n += strtoll(csr_json_num_text(by->u.object.values[j]), NULL, 10);
  }
  csr_json_free(l);
  return n;
}

static int64_t ledger_int(struct it *t, const char *path) {
  yajl_val l = it_sim_json(t, "/ledger");
  int64_t v = it_int_or(l, path, 0);
  csr_json_free(l);
  return v;
}

/* A 400 (or 413) whose body names `field` (NULL: only the status and error are checked). */
static void expect_refused(struct it *t, const char *body, long status, const char *error,
                           const char *field) {
  struct it_resp r;
  long got = post(t, AUTH, body, &r);
  if (got != status)
    fail_msg("%.120s: status %ld, expected %ld; body %.300s", body, got, status,
             r.body ? r.body : "");
  if (error != NULL) {
    assert_non_null(r.json);
    assert_string_equal(csr_json_get_str(r.json, "error"), error);
  }
  bool named = field == NULL;
  yajl_val fields = csr_json_get(r.json, "fields");
  for (size_t i = 0; !named && i < csr_json_len(fields); i++) {
    const char *f = csr_json_get_str(csr_json_at(fields, i), "field");
    const char *m = csr_json_get_str(csr_json_at(fields, i), "message");
    named = f != NULL && strcmp(f, field) == 0 && m != NULL && *m != '\0';
  }
  if (!named)
    fail_msg("%.120s: no error naming '%s' in %.300s", body, field, r.body ? r.body : "");
  it_resp_free(&r);
}

/* POST `body` and expect 200 {accountNumber, created}; the account goes to `account`. */
static bool upsert(struct it *t, const char *body, char *account, size_t cap) {
  struct it_resp r;
  long status = post(t, AUTH, body, &r);
  if (status != 200 || r.json == NULL)
    fail_msg("POST %.120s: status %ld, body %.300s", body, status, r.body ? r.body : "");
  const char *acct = csr_json_get_str(r.json, "accountNumber");
  yajl_val created = csr_json_get(r.json, "created");
  assert_non_null(acct);
  assert_true(*acct != '\0');
  assert_true(YAJL_IS_TRUE(created) || YAJL_IS_FALSE(created));
  snprintf(account, cap, "%s", acct);
  bool was_created = YAJL_IS_TRUE(created);
  it_resp_free(&r);
  return was_created;
}

/* Polls GET /v1/customers/jobs/{id} until its status is `want` (bounded); returns the answer. */
static yajl_val wait_job(struct it *t, const char *id, const char *want, long deadline_ms) {
  int64_t end = it_mono_ms() + it_slow(t, deadline_ms);
  for (;;) {
    struct it_resp r;
    long status = get_job(t, id, &r);
    const char *st = csr_json_get_str(r.json, "status");
    if (status == 200 && st != NULL && strcmp(st, want) == 0) {
      yajl_val v = r.json;
      r.json = NULL;
      it_resp_free(&r);
      return v;
    }
    if (it_mono_ms() > end)
      fail_msg("job %s: still %ld %.300s after %ld ms", id, status, r.body ? r.body : "",
               it_slow(t, deadline_ms));
    it_resp_free(&r);
    it_sleep_ms(100);
  }
}

/* ---------------------------------------------------------------------------------------------- */
/* A POST that answers 202: its Location header is kept */
/* ---------------------------------------------------------------------------------------------- */

struct sink_buf {
  char *data;
  size_t len;
};

static size_t on_data(char *p, size_t size, size_t n, void *arg) {
  struct sink_buf *b = arg;
  size_t len = size * n;
  char *grown = realloc(b->data, b->len + len + 1);
  if (grown == NULL)
    return 0;
  memcpy(grown + b->len, p, len);
  b->data = grown;
  b->len += len;
  b->data[b->len] = '\0';
  return len;
}

/* POSTs and returns the status; `location` gets the Location header ("" when none) and `id` the
 * body's jobId. */
static long post_accepted(struct it *t, const char *body, char *location, size_t lcap, char *id,
                          size_t icap) {
  char url[128];
  snprintf(url, sizeof(url), "%s/v1/customers", t->ingress_url);
  struct sink_buf head = {0}, resp = {0};
  CURL *c = curl_easy_init();
  assert_non_null(c);
  struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
  h = curl_slist_append(h, AUTH);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, it_slow(t, 15000));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_data);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &head);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
  long status = 0;
  if (curl_easy_perform(c) == CURLE_OK)
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  location[0] = id[0] = '\0';
  const char *loc = head.data ? strcasestr(head.data, "\r\nLocation: ") : NULL;
  if (loc != NULL)
    snprintf(location, lcap, "%.*s", (int)strcspn(loc + 12, "\r\n"), loc + 12);
  yajl_val doc = resp.data ? csr_json_parse(resp.data, resp.len, NULL, 0) : NULL;
  const char *jid = csr_json_get_str(doc, "jobId");
  snprintf(id, icap, "%s", jid ? jid : "");
  fprintf(stderr, "[%s] POST -> %ld %s (Location %s)\n", t->name, status,
          resp.data ? resp.data : "", location);
  csr_json_free(doc);
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  free(head.data);
  free(resp.data);
  return status;
}

/* ---------------------------------------------------------------------------------------------- */
/* Concurrent posts (curl multi)                                                                  */
/* ---------------------------------------------------------------------------------------------- */

static void post_concurrently(struct it *t, const char *body, int n, long *status,
                              struct sink_buf *out) {
  char url[128];
  snprintf(url, sizeof(url), "%s/v1/customers", t->ingress_url);
  CURLM *m = curl_multi_init();
  CURL *e[CONCURRENT];
  struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
  h = curl_slist_append(h, AUTH);
  for (int i = 0; i < n; i++) {
    e[i] = curl_easy_init();
    assert_non_null(e[i]);
    memset(&out[i], 0, sizeof(out[i]));
    curl_easy_setopt(e[i], CURLOPT_URL, url);
    curl_easy_setopt(e[i], CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e[i], CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e[i], CURLOPT_TIMEOUT_MS, it_slow(t, 30000));
    curl_easy_setopt(e[i], CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e[i], CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e[i], CURLOPT_WRITEDATA, &out[i]);
    curl_multi_add_handle(m, e[i]);
  }
  int running = n;
  while (running > 0) { /* every transfer has its own timeout */
    curl_multi_perform(m, &running);
    if (running > 0)
      curl_multi_poll(m, NULL, 0, 100, NULL);
  }
  for (int i = 0; i < n; i++) {
    status[i] = 0;
    curl_easy_getinfo(e[i], CURLINFO_RESPONSE_CODE, &status[i]);
    curl_multi_remove_handle(m, e[i]);
    curl_easy_cleanup(e[i]);
  }
  curl_slist_free_all(h);
  curl_multi_cleanup(m);
}

/* ---------------------------------------------------------------------------------------------- */
/* Tests                                                                                          */
/* ---------------------------------------------------------------------------------------------- */

static void check_auth(struct it *t) {
  struct it_resp r;
  const char *body = "{\"email\":\"auth@example.com\",\"lastName\":\"Auth\"}";
  assert_int_equal(post(t, NULL, body, &r), 401);
  assert_string_equal(csr_json_get_str(r.json, "error"), "unauthorized");
  it_resp_free(&r);
  assert_int_equal(post(t, "Authorization: Bearer it-ingress-tokeX", body, &r), 401);
  it_resp_free(&r);
  assert_int_equal(post(t, "Authorization: Bearer " TOKEN "x", body, &r), 401);
  it_resp_free(&r);
  char url[160];
  snprintf(url, sizeof(url), "%s/v1/customers/jobs/%032d", t->ingress_url, 0);
  assert_int_equal(it_http(t, "GET", url, NULL, &r), 401);
  it_resp_free(&r);
}

static void check_validation(struct it *t) {
  static const struct {
    const char *body, *field;
  } bad[] = {
      {"{\"email\":\"not-an-email\",\"lastName\":\"X\"}", "email"},
      {"{\"lastName\":\"X\"}", "email"},
      {"{\"email\":\"v@example.com\",\"phone\":\"0613 555 1111\"}", "phone"},
      {"{\"email\":\"v@example.com\",\"currency\":\"XYZ\"}", "currency"},
      {"{\"email\":\"v@example.com\",\"currency\":\"usd\"}", "currency"},
      {"{\"email\":\"v@example.com\",\"address\":{\"country\":\"US\"}}", "address.country"},
      {"{\"email\":\"v@example.com\",\"address\":{\"country\":\"XXX\"}}", "address.country"},
      {"{\"email\":\"v@example.com\",\"language\":\"english-please\"}", "language"},
      {"{\"email\":\"v@example.com\",\"optIn\":\"yes\"}", "optIn"},
      {"{\"email\":\"v@example.com\",\"firstName\":42}", "firstName"},
      {"{\"email\":\"v@example.com\",\"address\":\"Main Street 1\"}", "address"},
      {"{\"email\":\"v@example.com\",\"customerGroup\":\"much-too-long-group\"}", "customerGroup"},
      {"{\"email\":\"v@example.com\",\"lastname\":\"Typo\"}", "lastname"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    expect_refused(t, bad[i].body, 400, "invalid_request", bad[i].field);
  /* Every failing field is named, not just the first. */
  expect_refused(t, "{\"email\":\"v@example.com\",\"phone\":\"1\",\"currency\":\"XYZ\"}", 400,
                 "invalid_request", "phone");
  expect_refused(t, "{\"email\":\"v@example.com\",\"phone\":\"1\",\"currency\":\"XYZ\"}", 400,
                 "invalid_request", "currency");
  expect_refused(t, "not json at all", 400, "invalid_json", NULL);
  expect_refused(t, "{\"email\":\"v@example.com\",\"lastName\":\"Trunc", 400, "invalid_json", NULL);
  expect_refused(t, "[{\"email\":\"v@example.com\"}]", 400, "invalid_json", NULL);
  size_t big = 70 * 1024;
  char *body = malloc(big + 64);
  assert_non_null(body);
  int n = snprintf(body, 64, "{\"email\":\"v@example.com\",\"firstName\":\"");
  memset(body + n, 'a', big);
  snprintf(body + n + big, 8, "\"}");
  expect_refused(t, body, 413, NULL, NULL);
  free(body);
  assert_int_equal(commerce_calls(t), 0);
  assert_int_equal(it_metric(t, "csurelay_ingress_invalid_total"), 18);
}

static void check_concurrent(struct it *t) {
  const char *body = "{\"email\":\"Many.Posts@example.com\",\"firstName\":\"Many\","
                     "\"lastName\":\"Posts\",\"phone\":\"+4520304050\"}";
  long status[CONCURRENT];
  struct sink_buf out[CONCURRENT];
  post_concurrently(t, body, CONCURRENT, status, out);
  int created = 0;
  char first[64] = "";
  for (int i = 0; i < CONCURRENT; i++) {
    yajl_val doc = out[i].data ? csr_json_parse(out[i].data, out[i].len, NULL, 0) : NULL;
    const char *acct = csr_json_get_str(doc, "accountNumber");
    if (status[i] != 200 || acct == NULL)
      fail_msg("concurrent post %d: %ld %s", i, status[i], out[i].data ? out[i].data : "");
    if (first[0] == '\0')
      snprintf(first, sizeof(first), "%s", acct);
    assert_string_equal(acct, first);
    created += YAJL_IS_TRUE(csr_json_get(doc, "created"));
    csr_json_free(doc);
    free(out[i].data);
  }
  fprintf(stderr, "[%s] %d concurrent posts: account %s, created:true %d\n", t->name, CONCURRENT,
          first, created);
  assert_int_equal(created, 1);
}

static void test_upsert(void **state) {
  struct it *t = *state;
  start_world(t, "ingress_upsert", 10000, &(struct it_cfg){0});
  check_auth(t);
  check_validation(t);

  char a1[64], a2[64];
  assert_true(upsert(t,
                     "{\"email\":\"Ada.Lovelace@example.com\",\"firstName\":\"Ada\","
                     "\"lastName\":\"Lovelace\",\"phone\":\"+442071234567\",\"optIn\":true,"
                     "\"language\":\"en-GB\",\"currency\":\"GBP\",\"address\":{\"street\":"
                     "\"12 St James's Square\",\"city\":\"London\",\"zip\":\"SW1Y 4JH\","
                     "\"country\":\"GBR\"}}",
                     a1, sizeof(a1)));
  assert_false(upsert(t, "{\"email\":\"ADA.LOVELACE@example.COM\",\"firstName\":\"Augusta\"}", a2,
                      sizeof(a2)));
  assert_string_equal(a1, a2);
  assert_int_equal(ledger_int(t, "customers.created"), 1);
  assert_int_equal(ledger_int(t, "customers.updated"), 1);
  assert_int_equal(ledger_int(t, "customers.emails"), 1);

  check_concurrent(t);
  assert_int_equal(ledger_int(t, "customers.created"), 2);
  assert_int_equal(ledger_int(t, "customers.updated"), 1 + CONCURRENT - 1);
  assert_int_equal(ledger_int(t, "customers.emails"), 2);

  /* csusim requires LastName on a create: Commerce's 400 fails the job with its message. */
  struct it_resp r;
  assert_int_equal(
      post(t, AUTH, "{\"email\":\"no.last.name@example.com\",\"firstName\":\"N\"}", &r), 422);
  assert_string_equal(csr_json_get_str(r.json, "error"), "commerce_rejected");
  assert_int_equal(it_int(r.json, "status"), 400);
  assert_string_equal(csr_json_get_str(r.json, "message"), "A value is required for LastName.");
  char id[64];
  snprintf(id, sizeof(id), "%s", csr_json_get_str(r.json, "jobId"));
  it_resp_free(&r);
  yajl_val job = wait_job(t, id, "failed", 1000);
  assert_int_equal(it_int(job, "status_code"), 400);
  assert_string_equal(csr_json_get_str(job, "message"), "A value is required for LastName.");
  assert_true(YAJL_IS_NULL(csr_json_get(job, "accountNumber")));
  csr_json_free(job);
  assert_int_equal(ledger_int(t, "requests.customer_create.400"), 1);
  assert_int_equal(get_job(t, "0123456789abcdef0123456789abcdef", &r), 404);
  it_resp_free(&r);

  assert_int_equal(it_metric(t, "csurelay_ingress_customers_total{result=\"created\"}"), 2);
  assert_int_equal(it_metric(t, "csurelay_ingress_customers_total{result=\"updated\"}"), 20);
  assert_int_equal(it_metric(t, "csurelay_ingress_customers_total{result=\"failed\"}"), 1);
  assert_int_equal(it_metric(t, "csurelay_ingress_requests_total{code=\"401\"}"), 4);
  assert_int_equal(it_metric(t, "csurelay_ingress_job_seconds_count"), 23);
  yajl_val st = it_admin_json(t, "/v1/status");
  assert_int_equal(it_int(st, "ingress.port"), t->ingress_port);
  assert_int_equal(it_int(st, "ingress.accepted"), 23);
  assert_int_equal(it_int(st, "ingress.running"), 0);
  csr_json_free(st);
  assert_int_equal(it_relay_stop(t, 15000, NULL), 0);
  it_pass(t);
}

static void test_retry(void **state) {
  struct it *t = *state;
  struct it_cfg c = {.retry_base_ms = 200, .retry_cap_ms = 800, .retry_max_attempts = 60};
  start_world(t, "ingress_retry", 300, &c);
  it_sim_faults(t, OUTAGE);
  char location[160], id[64];
  long status = post_accepted(t, "{\"email\":\"Outage@example.com\",\"lastName\":\"Outage\"}",
                              location, sizeof(location), id, sizeof(id));
  assert_int_equal(status, 202);
  assert_int_equal(strlen(id), 32);
  char want[160];
  snprintf(want, sizeof(want), "/v1/customers/jobs/%s", id);
  assert_string_equal(location, want);
  yajl_val job = wait_job(t, id, "pending", 1000);
  assert_true(YAJL_IS_NULL(csr_json_get(job, "endedAt")));
  csr_json_free(job);
  it_sleep_ms(2000);
  assert_true(ledger_int(t, "requests.customer_search.503") >= 2);
  assert_int_equal(ledger_int(t, "customers.created"), 0);
  it_sim_faults(t, "");
  job = wait_job(t, id, "done", 10000);
  assert_true(YAJL_IS_TRUE(csr_json_get(job, "created")));
  assert_true(it_int(job, "attempts") >= 3);
  const char *acct = csr_json_get_str(job, "accountNumber");
  assert_non_null(acct);
  assert_true(*acct != '\0');
  csr_json_free(job);
  assert_int_equal(ledger_int(t, "customers.created"), 1);
  assert_int_equal(ledger_int(t, "customers.emails"), 1);
  assert_true(it_metric(t, "csurelay_ingress_retries_total") >= 2);
  assert_int_equal(it_metric(t, "csurelay_ingress_customers_total{result=\"created\"}"), 1);
  assert_int_equal(it_relay_stop(t, 15000, NULL), 0);
  it_pass(t);
}

static void test_crash(void **state) {
  struct it *t = *state;
  struct it_cfg c = {
      .fsync = "always", .retry_base_ms = 200, .retry_cap_ms = 800, .retry_max_attempts = 60};
  start_world(t, "ingress_crash", 200, &c);
  it_sim_faults(t, OUTAGE);
  char location[160], id[64];
  assert_int_equal(post_accepted(t, "{\"email\":\"crash.test@example.com\",\"lastName\":\"Crash\"}",
                                 location, sizeof(location), id, sizeof(id)),
                   202);
  it_relay_kill(t);
  assert_int_equal(ledger_int(t, "customers.created"), 0);
  it_sim_faults(t, "");
  it_relay_start(t);
  it_ingress_wait(t);
  yajl_val job = wait_job(t, id, "done", 10000);
  assert_true(YAJL_IS_TRUE(csr_json_get(job, "created")));
  csr_json_free(job);
  assert_int_equal(ledger_int(t, "customers.created"), 1);
  assert_int_equal(ledger_int(t, "customers.emails"), 1);
  assert_int_equal(it_relay_stop(t, 15000, NULL), 0);
  it_pass(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_upsert, it_cm_setup, it_cm_teardown),
      cmocka_unit_test_setup_teardown(test_retry, it_cm_setup, it_cm_teardown),
      cmocka_unit_test_setup_teardown(test_crash, it_cm_setup, it_cm_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
