/* The enrichment fetcher (src/pipeline/enrich.c) against csusim in-process: URL building (golden),
 * an order with its money text intact, a cart id with a quote, 30 coalesced fetches on one GET,
 * the customer cache (hits from the loop, TTL, LRU by entries and by bytes), not-found orders and
 * customers (a guest never asks), faults classified (429 + Retry-After, 503, malformed, timeout,
 * 400, 401 twice), a token revoked mid-run, no token cache and a refused token, the per-CSU
 * in-flight bound seen from the sim, the adaptive window (it grows, shrinks, halves on 429), cancel
 * inside a coalesced fetch, and destroy with fetches in flight. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "csurelay/pipeline.h"
#include "jsontest.h"
#include "simtest.h"

#define CART_CUST  "HOUSTON-HOUSTON-1-1001" /* a Checkout by customer 001001 */
#define CART_GUEST "HOUSTON-HOUSTON-1-1002" /* a guest Checkout */
#define CART_LINES "HOUSTON-HOUSTON-1-1003" /* AddCartLines only: no order */
#define CART_QUOTE "O'NEIL-HOUSTON-7"
#define BULK       50 /* Checkouts BULK-00 .. BULK-49 */
#define CUST_A     "001001"
#define CUST_B     "001002"
#define CUST_C     "001003"

static char events_path[64];

/* ---------------------------------------------------------------------------------------------- */
/* Fixture */
/* ---------------------------------------------------------------------------------------------- */

struct fx {
  struct st t;
  char token_url[256];
  char csu_url[256];
  struct csr_identity id;
  struct csr_csu csu;
  struct pl_tokens *tk;
  struct pl_enrich *en;
};

struct w {
  struct pl_fetch req;
  unsigned calls;
  int result;
};

static void on_done(struct rx_fut *fut) {
  struct w *w = RX_CONTAINER_OF(fut, struct w, req.fut);
  w->calls++;
  w->result = fut->result;
}

static struct pl_tokens *lookup(void *arg, const char *identity) {
  struct fx *f = arg;
  return strcmp(identity, "commerce") == 0 ? f->tk : NULL;
}

static int write_events(void) {
  snprintf(events_path, sizeof(events_path), "/tmp/test_enrich_XXXXXX");
  int fd = mkstemp(events_path);
  FILE *out = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (out == NULL)
    return -1;
  fprintf(out, "[{\"EventType\": \"Checkout\", \"EventTransactionId\": \"" CART_CUST "\", "
               "\"offset_ms\": -5000, \"EventCustomerId\": \"" CUST_A "\"},\n"
               " {\"EventType\": \"Checkout\", \"EventTransactionId\": \"" CART_GUEST "\", "
               "\"offset_ms\": -4000},\n"
               " {\"EventType\": \"AddCartLines\", \"EventTransactionId\": \"" CART_LINES "\", "
               "\"offset_ms\": -3000, \"EventCustomerId\": \"" CUST_B "\"},\n"
               " {\"EventType\": \"Checkout\", \"EventTransactionId\": \"" CART_QUOTE "\", "
               "\"offset_ms\": -2000, \"EventCustomerId\": \"" CUST_C "\"}");
  for (int i = 0; i < BULK; i++)
    fprintf(out,
            ",\n {\"EventType\": \"Checkout\", \"EventTransactionId\": \"BULK-%02d\", "
            "\"offset_ms\": -1000}",
            i);
  fprintf(out, "]\n");
  return fclose(out) == 0 ? 0 : -1;
}

static int group_setup(void **state) {
  return write_events();
}

static int group_teardown(void **state) {
  unlink(events_path);
  return 0;
}

static struct fx *fx_start(const char *faults, const struct pl_enrich_opts *opts) {
  struct fx *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  struct sim_opts o;
  sim_opts_default(&o);
  o.faults_yaml = faults;
  o.events_path = events_path;
  st_start_opts(&f->t, &o);
  snprintf(f->token_url, sizeof(f->token_url), "%s/csusim.onmicrosoft.com/oauth2/v2.0/token",
           f->t.sim.base_url);
  snprintf(f->csu_url, sizeof(f->csu_url), "%s/csu0/", f->t.sim.base_url);
  f->id = (struct csr_identity){.name = "commerce",
                                .tenant = "csusim.onmicrosoft.com",
                                .client_id = SIM_CLIENT_ID,
                                .scope = SIM_COMMERCE_SCOPE,
                                .token_url = f->token_url,
                                .secret = SIM_DEFAULT_SECRET};
  f->csu = (struct csr_csu){.name = "houston",
                            .url = f->csu_url,
                            .oun = "128",
                            .identity_name = "commerce",
                            .identity = &f->id};
  assert_int_equal(pl_tokens_create(&f->t.loop, &f->t.http, &f->id, &f->tk), 0);
  assert_int_equal(pl_enrich_create(&f->t.loop, &f->t.http, &f->csu, 1, lookup, f, opts, &f->en),
                   0);
  return f;
}

static uint64_t on_guard(struct rx_timer *timer) {
  *(int *)timer->data = 1;
  return RX_TIMER_STOP;
}

/* Runs the loop until every one of `n` waiters completed, or `ms` passed. */
static bool wait_all(struct fx *f, struct w *w, size_t n, uint64_t ms) {
  struct rx_timer guard;
  int expired = 0;
  assert_int_equal(rx_timer_init(&guard, &f->t.loop), 0);
  guard.data = &expired;
  assert_int_equal(rx_timer_start(&guard, on_guard, ms), 0);
  size_t done = 0;
  while (!expired) {
    done = 0;
    for (size_t i = 0; i < n; i++)
      done += w[i].calls > 0;
    if (done == n)
      break;
    uv_run(&f->t.uv, UV_RUN_ONCE);
  }
  rx_timer_close(&guard, NULL);
  uv_run(&f->t.uv, UV_RUN_NOWAIT);
  return done == n;
}

static void on_flag(void *arg) {
  (*(int *)arg)++;
}

static void run_until_flag(struct fx *f, int *flag) {
  for (int i = 0; i < 100000 && !*flag; i++)
    uv_run(&f->t.uv, UV_RUN_ONCE);
  assert_int_equal(*flag, 1);
}

static void destroy_enrich(struct fx *f) {
  int done = 0;
  pl_enrich_destroy(f->en, on_flag, &done);
  f->en = NULL;
  run_until_flag(f, &done);
}

static void fx_stop(struct fx *f) {
  if (f->en != NULL)
    destroy_enrich(f);
  int done = 0;
  pl_tokens_destroy(f->tk, on_flag, &done);
  run_until_flag(f, &done);
  st_stop(&f->t);
  free(f);
}

static uint64_t sim_count(struct fx *f, const char *endpoint, int status) {
  return sim_ledger_requests(f->t.sim.ledger, endpoint, status);
}

/* One fetch run to completion. */
static void fetch1(struct fx *f, enum pl_fetch_kind kind, const char *id, struct w *w) {
  memset(w, 0, sizeof(*w));
  int rc = kind == PL_FETCH_ORDER ? pl_enrich_order(f->en, &f->csu, id, &w->req, on_done)
                                  : pl_enrich_customer(f->en, &f->csu, id, &w->req, on_done);
  assert_int_equal(rc, 0);
  assert_int_equal(w->calls, 0); /* never synchronous */
  assert_true(wait_all(f, w, 1, 15000));
  assert_int_equal(w->calls, 1);
  assert_int_equal(w->result, 0);
}

/* A fetched document's text as a tree (the enricher keeps text only); free with csr_json_free. */
static yajl_val doc_tree(const struct pl_fetch *req) {
  assert_non_null(req->doc_json);
  yajl_val v = csr_json_parse(req->doc_json, req->doc_json_len, NULL, 0);
  assert_non_null(v);
  return v;
}

/* Asserts that the fetched document's member `key` is the string `want`. */
static void assert_doc_str(const struct pl_fetch *req, const char *key, const char *want) {
  yajl_val doc = doc_tree(req);
  assert_string_equal(csr_json_get_str(doc, key), want);
  csr_json_free(doc);
}

/* ---------------------------------------------------------------------------------------------- */
/* URLs */
/* ---------------------------------------------------------------------------------------------- */

#define ORDER_FN                                                                                   \
  "Commerce/SalesOrders/GetSalesOrderDetailsByTransactionId(transactionId=@p1,"                    \
  "searchLocationValue=1)?@p1="

static void test_urls(void **state) {
  char buf[512];
  const char *want = "https://h.example.com/" ORDER_FN "'HOUSTON-HOUSTON-2-16'&api-version=7.3";
  assert_int_equal(pl_enrich_url("https://h.example.com/", PL_FETCH_ORDER, "HOUSTON-HOUSTON-2-16",
                                 buf, sizeof(buf)),
                   (int)strlen(want));
  assert_string_equal(buf, want);
  /* No doubled slash, with or without the configured one (W-F9). */
  assert_true(pl_enrich_url("https://h.example.com", PL_FETCH_ORDER, "HOUSTON-HOUSTON-2-16", buf,
                            sizeof(buf)) > 0);
  assert_string_equal(buf, want);
  assert_true(pl_enrich_url("https://h.example.com/rs//", PL_FETCH_CUSTOMER, "001001", buf,
                            sizeof(buf)) > 0);
  assert_string_equal(buf, "https://h.example.com/rs/Commerce/Customers('001001')?api-version=7.3");
  /* Quotes doubled inside the literal, then everything but unreserved characters encoded. */
  assert_true(pl_enrich_url("http://h/", PL_FETCH_ORDER, "O'Neil 7/é&#'", buf, sizeof(buf)) > 0);
  assert_string_equal(buf, "http://h/" ORDER_FN
                           "'O%27%27Neil%207%2F%C3%A9%26%23%27%27'&api-version=7.3");
  assert_true(pl_enrich_url("http://h/", PL_FETCH_CUSTOMER, "a'b", buf, sizeof(buf)) > 0);
  assert_string_equal(buf, "http://h/Commerce/Customers('a%27%27b')?api-version=7.3");
  /* Guests have no customer: Customers('') cannot even be spelled. */
  assert_int_equal(pl_enrich_url("http://h/", PL_FETCH_CUSTOMER, "", buf, sizeof(buf)), -EINVAL);
  assert_int_equal(pl_enrich_url("http://h/", PL_FETCH_ORDER, "x", buf, 20), -E2BIG);
}

/* ---------------------------------------------------------------------------------------------- */
/* Orders */
/* ---------------------------------------------------------------------------------------------- */

static void test_order_exact_document(void **state) {
  struct fx *f = fx_start(NULL, NULL);
  struct w w;
  fetch1(f, PL_FETCH_ORDER, CART_CUST, &w);
  assert_int_equal(w.req.outcome, PL_FETCH_OK);
  assert_int_equal(w.req.status, 200);
  assert_string_equal(w.req.reason, "");
  yajl_val doc = doc_tree(&w.req);
  assert_true(YAJL_IS_OBJECT(doc));
  assert_string_equal(csr_json_get_str(doc, "Id"), CART_CUST);
  assert_string_equal(csr_json_get_str(doc, "CustomerId"), CUST_A);
  assert_int_equal(sim_count(f, "order", 200), 1);

  /* The same GET by hand: the fetched document is the sim's, number texts and all. */
  char path[512], oun[] = "OUN: 128";
  snprintf(path, sizeof(path), "/csu0/" ORDER_FN "'%s'&api-version=7.3", CART_CUST);
  const char *h[] = {oun, st_auth(&f->t, SIM_AUD_COMMERCE), NULL};
  struct st_resp r;
  assert_int_equal(st_call(&f->t, "GET", path, h, NULL, 0, &r), 0);
  assert_int_equal(r.status, 200);
  char *mine = jt_text(doc), *theirs = jt_text(r.json);
  assert_string_equal(mine, theirs);
  free(mine);
  free(theirs);
  char *paid = strdup(csr_json_num_text(csr_json_get(doc, "AmountPaid")));
  assert_non_null(paid);
  assert_string_equal(paid, csr_json_num_text(csr_json_get(r.json, "AmountPaid")));
  assert_true(strlen(strchr(paid, '.')) == 17); /* 16 decimals, as the CSU writes money */
  assert_non_null(strstr(r.body, paid));
  st_resp_free(&r);
  csr_json_free(doc);

  const struct pl_enrich_stats *s = pl_enrich_stats(f->en);
  assert_int_equal(s->requests, 1);
  assert_int_equal(s->ok, 1);
  assert_int_equal(s->in_flight, 0);
  /* A document outlives the fetcher until released. */
  destroy_enrich(f);
  doc = doc_tree(&w.req);
  assert_string_equal(csr_json_num_text(csr_json_get(doc, "AmountPaid")), paid);
  csr_json_free(doc);
  free(paid);
  pl_fetch_release(&w.req);
  assert_null(w.req.doc_json);
  assert_int_equal(w.req.doc_json_len, 0);
  pl_fetch_release(&w.req); /* twice is harmless */
  fx_stop(f);
}

static void test_order_quote_in_cart_id(void **state) {
  struct fx *f = fx_start(NULL, NULL);
  struct w w;
  fetch1(f, PL_FETCH_ORDER, CART_QUOTE, &w);
  assert_int_equal(w.req.outcome, PL_FETCH_OK);
  yajl_val doc = doc_tree(&w.req);
  assert_string_equal(csr_json_get_str(doc, "Id"), CART_QUOTE);
  assert_string_equal(csr_json_get_str(doc, "CustomerId"), CUST_C);
  csr_json_free(doc);
  pl_fetch_release(&w.req);
  assert_int_equal(sim_count(f, "order", 200), 1);
  fx_stop(f);
}

#define COALESCED 30

static void test_order_coalesced(void **state) {
  struct fx *f = fx_start(NULL, NULL);
  struct w *w = calloc(COALESCED, sizeof(*w));
  assert_non_null(w);
  for (int i = 0; i < COALESCED; i++)
    assert_int_equal(pl_enrich_order(f->en, &f->csu, CART_CUST, &w[i].req, on_done), 0);
  assert_int_equal(pl_enrich_order(f->en, &f->csu, CART_CUST, &w[0].req, on_done), -EBUSY);
  assert_true(wait_all(f, w, COALESCED, 15000));
  for (int i = 0; i < COALESCED; i++) {
    assert_int_equal(w[i].calls, 1);
    assert_int_equal(w[i].result, 0);
    assert_int_equal(w[i].req.outcome, PL_FETCH_OK);
    assert_ptr_equal(w[i].req.doc_json, w[0].req.doc_json); /* one shared document */
  }
  assert_int_equal(sim_count(f, "order", 200), 1);
  const struct pl_enrich_stats *s = pl_enrich_stats(f->en);
  assert_int_equal(s->requests, 1);
  assert_int_equal(s->fetches, COALESCED);
  assert_int_equal(s->coalesced, COALESCED - 1);
  assert_int_equal(s->ok, COALESCED);
  for (int i = 0; i < COALESCED; i++)
    pl_fetch_release(&w[i].req);
  /* Over: the next fetch of the cart is a GET of its own (orders are not cached). */
  struct w again;
  fetch1(f, PL_FETCH_ORDER, CART_CUST, &again);
  assert_int_equal(sim_count(f, "order", 200), 2);
  pl_fetch_release(&again.req);
  free(w);
  fx_stop(f);
}

static void test_not_found(void **state) {
  struct fx *f = fx_start(NULL, NULL);
  struct w w;
  fetch1(f, PL_FETCH_ORDER, "NO-SUCH-CART", &w);
  assert_int_equal(w.req.outcome, PL_FETCH_NOT_FOUND);
  assert_int_equal(w.req.status, 404);
  assert_null(w.req.doc_json);
  assert_string_equal(w.req.reason, "http_404");
  assert_non_null(strstr(w.req.excerpt, "ObjectNotFound"));
  pl_fetch_release(&w.req); /* drops the error texts too */
  assert_string_equal(w.req.reason, "");
  assert_string_equal(w.req.excerpt, "");
  /* An AddCartLines cart has no order (W-F10): not found, for the pipeline to judge. */
  fetch1(f, PL_FETCH_ORDER, CART_LINES, &w);
  assert_int_equal(w.req.outcome, PL_FETCH_NOT_FOUND);
  pl_fetch_release(&w.req);
  fetch1(f, PL_FETCH_CUSTOMER, "999999", &w);
  assert_int_equal(w.req.outcome, PL_FETCH_NOT_FOUND);
  assert_non_null(strstr(w.req.excerpt, "CustomerNotFound"));
  pl_fetch_release(&w.req);
  /* A guest's order says so; its customer is never asked for. */
  fetch1(f, PL_FETCH_ORDER, CART_GUEST, &w);
  assert_int_equal(w.req.outcome, PL_FETCH_OK);
  assert_doc_str(&w.req, "CustomerId", "");
  pl_fetch_release(&w.req);
  memset(&w, 0, sizeof(w));
  assert_int_equal(pl_enrich_customer(f->en, &f->csu, "", &w.req, on_done), -EINVAL);
  assert_int_equal(pl_enrich_order(f->en, &f->csu, NULL, &w.req, on_done), -EINVAL);
  struct csr_csu other = {.name = "elsewhere", .url = "http://127.0.0.1:1/"};
  assert_int_equal(pl_enrich_order(f->en, &other, CART_CUST, &w.req, on_done), -EINVAL);
  assert_null(pl_enrich_csu_stats(f->en, &other));
  assert_int_equal(sim_count(f, "customer_get", 404), 1);
  assert_int_equal(sim_count(f, "customer_get", 200), 0);
  assert_int_equal(pl_enrich_stats(f->en)->not_found, 3);
  fx_stop(f);
}

/* ---------------------------------------------------------------------------------------------- */
/* The customer cache */
/* ---------------------------------------------------------------------------------------------- */

static void test_customer_cache_ttl(void **state) {
  struct pl_enrich_opts o = {.customer_ttl_ms = 300};
  struct fx *f = fx_start(NULL, &o);
  struct w a, b, c;
  fetch1(f, PL_FETCH_CUSTOMER, CUST_A, &a);
  assert_int_equal(a.req.outcome, PL_FETCH_OK);
  assert_doc_str(&a.req, "AccountNumber", CUST_A);
  fetch1(f, PL_FETCH_CUSTOMER, CUST_A, &b); /* asserts the hit still completed from the loop */
  assert_int_equal(b.req.outcome, PL_FETCH_OK);
  assert_ptr_equal(b.req.doc_json, a.req.doc_json);
  assert_int_equal(sim_count(f, "customer_get", 200), 1);
  const struct pl_enrich_stats *s = pl_enrich_stats(f->en);
  assert_int_equal(s->cache_hits, 1);
  assert_int_equal(s->cache_misses, 1);
  assert_int_equal(s->cache_entries, 1);
  assert_true(s->cache_bytes > 1000);
  /* Released by both waiters, the document lives on in the cache. */
  pl_fetch_release(&a.req);
  pl_fetch_release(&b.req);
  st_run_ms(&f->t, 400);
  fetch1(f, PL_FETCH_CUSTOMER, CUST_A, &c);
  assert_int_equal(c.req.outcome, PL_FETCH_OK);
  assert_int_equal(sim_count(f, "customer_get", 200), 2);
  assert_int_equal(s->cache_expired, 1);
  assert_int_equal(s->cache_hits, 1);
  assert_int_equal(s->cache_misses, 2);
  pl_fetch_release(&c.req);
  fx_stop(f);
}

static void fetch_customer(struct fx *f, const char *id) {
  struct w w;
  fetch1(f, PL_FETCH_CUSTOMER, id, &w);
  assert_int_equal(w.req.outcome, PL_FETCH_OK);
  assert_doc_str(&w.req, "AccountNumber", id);
  pl_fetch_release(&w.req);
}

static void test_customer_cache_lru(void **state) {
  struct pl_enrich_opts o = {.cache_max_entries = 2};
  struct fx *f = fx_start(NULL, &o);
  const struct pl_enrich_stats *s = pl_enrich_stats(f->en);
  fetch_customer(f, CUST_A);
  fetch_customer(f, CUST_B);
  fetch_customer(f, CUST_C); /* evicts A */
  assert_int_equal(s->cache_evictions, 1);
  fetch_customer(f, CUST_B); /* a hit: B is now the most recent */
  assert_int_equal(sim_count(f, "customer_get", 200), 3);
  fetch_customer(f, CUST_A); /* a miss; evicts C, not B */
  assert_int_equal(sim_count(f, "customer_get", 200), 4);
  fetch_customer(f, CUST_B);
  assert_int_equal(sim_count(f, "customer_get", 200), 4);
  fetch_customer(f, CUST_C);
  assert_int_equal(sim_count(f, "customer_get", 200), 5);
  assert_int_equal(s->cache_evictions, 3);
  assert_int_equal(s->cache_entries, 2);
  assert_int_equal(s->cache_hits, 2);
  fx_stop(f);

  /* A byte budget below one customer caches nothing. */
  struct pl_enrich_opts tiny = {.cache_max_bytes = 100};
  f = fx_start(NULL, &tiny);
  fetch_customer(f, CUST_A);
  fetch_customer(f, CUST_A);
  assert_int_equal(sim_count(f, "customer_get", 200), 2);
  assert_int_equal(pl_enrich_stats(f->en)->cache_entries, 0);
  fx_stop(f);
}

/* ---------------------------------------------------------------------------------------------- */
/* Faults */
/* ---------------------------------------------------------------------------------------------- */

/* One fetch against a sim with `faults`; checks outcome, status and reason. */
static void fault_case(const char *faults, const struct pl_enrich_opts *opts,
                       enum pl_fetch_kind kind, const char *id, enum pl_fetch_outcome outcome,
                       int status, const char *reason, struct w *w) {
  struct fx *f = fx_start(faults, opts);
  fetch1(f, kind, id, w);
  assert_int_equal(w->req.outcome, outcome);
  assert_int_equal(w->req.status, status);
  assert_string_equal(w->req.reason, reason);
  assert_null(w->req.doc_json);
  assert_int_equal(pl_enrich_stats(f->en)->requests, 1);
  fx_stop(f);
}

static void test_faults(void **state) {
  struct w w;
  fault_case("endpoints:\n  order: {error_rate: 1.0, errors: [429], retry_after_s: 2}\n", NULL,
             PL_FETCH_ORDER, CART_CUST, PL_FETCH_RETRY, 429, "http_429", &w);
  assert_int_equal(w.req.retry_after_ms, 2000);
  pl_fetch_release(&w.req);
  fault_case("endpoints:\n  order: {error_rate: 1.0, errors: [503]}\n", NULL, PL_FETCH_ORDER,
             CART_CUST, PL_FETCH_RETRY, 503, "http_503", &w);
  assert_int_equal(w.req.retry_after_ms, -1);
  pl_fetch_release(&w.req);
  fault_case("endpoints:\n  customer_get: {malformed_rate: 1.0}\n", NULL, PL_FETCH_CUSTOMER, CUST_A,
             PL_FETCH_RETRY, 200, "malformed", &w);
  assert_non_null(strstr(w.req.excerpt, "not a JSON object"));
  pl_fetch_release(&w.req);
  struct pl_enrich_opts quick = {.timeout_ms = 300};
  fault_case("endpoints:\n  order: {timeout_rate: 1.0}\n", &quick, PL_FETCH_ORDER, CART_CUST,
             PL_FETCH_RETRY, 0, "timeout", &w);
  pl_fetch_release(&w.req);
  fault_case("endpoints:\n  customer_get: {error_rate: 1.0, errors: [400]}\n", NULL,
             PL_FETCH_CUSTOMER, CUST_A, PL_FETCH_DEAD, 400, "http_400", &w);
  assert_non_null(strstr(w.req.excerpt, "ErrorResourceId"));
  pl_fetch_release(&w.req);
}

static void test_401_twice_retries(void **state) {
  struct fx *f = fx_start("endpoints:\n  order: {error_rate: 1.0, errors: [401]}\n", NULL);
  struct w w;
  fetch1(f, PL_FETCH_ORDER, CART_CUST, &w);
  assert_int_equal(w.req.outcome, PL_FETCH_RETRY);
  assert_int_equal(w.req.status, 401);
  assert_string_equal(w.req.reason, "http_401");
  pl_fetch_release(&w.req);
  assert_int_equal(pl_enrich_stats(f->en)->requests, 2);
  assert_int_equal(pl_enrich_stats(f->en)->token_refreshes, 1);
  assert_int_equal(pl_tokens_stats(f->tk)->fetches, 2);
  fx_stop(f);
}

static void test_token_revoked(void **state) {
  struct fx *f = fx_start("tokens: {revoke_at_s: 1}\n", NULL);
  struct w w;
  fetch1(f, PL_FETCH_ORDER, CART_CUST, &w);
  assert_int_equal(w.req.outcome, PL_FETCH_OK);
  pl_fetch_release(&w.req);
  st_run_ms(&f->t, 1200);
  fetch1(f, PL_FETCH_CUSTOMER, CUST_A, &w);
  assert_int_equal(w.req.outcome, PL_FETCH_OK);
  pl_fetch_release(&w.req);
  assert_int_equal(sim_count(f, "customer_get", 401), 1);
  assert_int_equal(sim_count(f, "customer_get", 200), 1);
  assert_int_equal(pl_tokens_stats(f->tk)->fetches, 2);
  assert_int_equal(pl_tokens_stats(f->tk)->invalidations, 1);
  assert_int_equal(pl_enrich_stats(f->en)->token_refreshes, 1);
  assert_int_equal(pl_enrich_stats(f->en)->requests, 3);
  fx_stop(f);
}

static struct pl_tokens *given(void *arg, const char *identity) {
  return arg;
}

/* A fetcher of our own over the fixture's sim, whose lookup answers `tokens` for any identity. */
static void one_fetch_with(struct fx *f, struct pl_tokens *tokens, struct w *w) {
  struct pl_enrich *en;
  int done = 0;
  assert_int_equal(pl_enrich_create(&f->t.loop, &f->t.http, &f->csu, 1, given, tokens, NULL, &en),
                   0);
  memset(w, 0, sizeof(*w));
  assert_int_equal(pl_enrich_order(en, &f->csu, CART_CUST, &w->req, on_done), 0);
  assert_true(wait_all(f, w, 1, 15000));
  assert_int_equal(w->result, 0);
  assert_null(w->req.doc_json);
  assert_int_equal(pl_enrich_stats(en)->requests, 0);
  pl_enrich_destroy(en, on_flag, &done);
  run_until_flag(f, &done);
}

static void test_token_failures(void **state) {
  struct fx *f = fx_start(NULL, NULL);
  struct w w;
  one_fetch_with(f, NULL, &w); /* no token cache for the identity: a configuration error */
  assert_int_equal(w.req.outcome, PL_FETCH_DEAD);
  assert_string_equal(w.req.reason, "no_identity");
  pl_fetch_release(&w.req);
  struct csr_identity wrong = f->id;
  struct pl_tokens *tk;
  int done = 0;
  wrong.secret = "not-the-secret";
  assert_int_equal(pl_tokens_create(&f->t.loop, &f->t.http, &wrong, &tk), 0);
  one_fetch_with(f, tk, &w); /* the token endpoint says no: transient for the event */
  assert_int_equal(w.req.outcome, PL_FETCH_RETRY);
  assert_string_equal(w.req.reason, "token");
  assert_non_null(strstr(w.req.excerpt, "invalid_client"));
  assert_null(strstr(w.req.excerpt, "not-the-secret"));
  pl_fetch_release(&w.req);
  pl_tokens_destroy(tk, on_flag, &done);
  run_until_flag(f, &done);
  assert_int_equal(sim_count(f, "order", 200) + sim_count(f, "order", 401), 0);
  fx_stop(f);
}

/* ---------------------------------------------------------------------------------------------- */
/* The per-CSU bound, cancel, destroy */
/* ---------------------------------------------------------------------------------------------- */

struct sampler {
  struct rx_timer timer;
  struct sim *sim;
  unsigned max_held;
};

static uint64_t on_sample(struct rx_timer *timer) {
  struct sampler *s = RX_CONTAINER_OF(timer, struct sampler, timer);
  unsigned n = 0;
  for (struct sim_req *r = s->sim->_held; r != NULL; r = r->_next)
    n += strcmp(r->endpoint, "order") == 0;
  if (n > s->max_held)
    s->max_held = n;
  return 1;
}

/* Asks for every BULK order at once; the waiters are the caller's to free. */
static struct w *start_bulk(struct fx *f) {
  struct w *w = calloc(BULK, sizeof(*w));
  assert_non_null(w);
  char cart[24];
  for (int i = 0; i < BULK; i++) {
    snprintf(cart, sizeof(cart), "BULK-%02d", i);
    assert_int_equal(pl_enrich_order(f->en, &f->csu, cart, &w[i].req, on_done), 0);
  }
  return w;
}

static void test_in_flight_bound(void **state) {
  struct pl_enrich_opts o = {.max_in_flight = 4};
  struct fx *f = fx_start("endpoints:\n  order: {latency_ms: 30}\n", &o);
  struct sampler smp = {.sim = &f->t.sim};
  assert_int_equal(rx_timer_init(&smp.timer, &f->t.loop), 0);
  assert_int_equal(rx_timer_start(&smp.timer, on_sample, 1), 0);
  struct w *w = start_bulk(f);
  char cart[24];
  const struct pl_enrich_csu_stats *cs = pl_enrich_csu_stats(f->en, &f->csu);
  assert_non_null(cs);
  assert_int_equal(cs->in_flight, 4);
  assert_int_equal(cs->queued, BULK - 4);
  assert_true(wait_all(f, w, BULK, 30000));
  rx_timer_close(&smp.timer, NULL);
  for (int i = 0; i < BULK; i++) {
    snprintf(cart, sizeof(cart), "BULK-%02d", i);
    assert_int_equal(w[i].req.outcome, PL_FETCH_OK);
    assert_doc_str(&w[i].req, "Id", cart);
    pl_fetch_release(&w[i].req);
  }
  assert_int_equal(smp.max_held, 4); /* seen at the sim: never more, and the bound is used */
  assert_int_equal(cs->in_flight_max, 4);
  assert_int_equal(cs->in_flight, 0);
  assert_int_equal(cs->queued, 0);
  assert_int_equal(cs->requests, BULK);
  assert_int_equal(sim_count(f, "order", 200), BULK);
  free(w);
  fx_stop(f);
}

/* Fetches every BULK order at once and waits for them; each must come back OK when `ok`. */
static void fetch_bulk(struct fx *f, bool ok) {
  struct w *w = start_bulk(f);
  assert_true(wait_all(f, w, BULK, 30000));
  for (int i = 0; i < BULK; i++) {
    if (ok)
      assert_int_equal(w[i].req.outcome, PL_FETCH_OK);
    pl_fetch_release(&w[i].req);
  }
  free(w);
}

/* Fetches bulks until the CSU's window is `want`: the bulks it took, or -1 when four (~200
 * answers, a dozen rounds of adjustment) have not got it there. */
static int bulks_to_window(struct fx *f, const struct pl_enrich_csu_stats *cs, unsigned want) {
  int i = 0;
  for (; i < 4 && cs->window != want; i++)
    fetch_bulk(f, true);
  return cs->window == want ? i : -1;
}

static void set_order_latency(struct fx *f, const char *yaml) {
  struct st_resp r;
  assert_int_equal(st_call(&f->t, "POST", "/sim/faults", NULL, yaml, 0, &r), 0);
  assert_int_equal(r.status, 200);
  st_resp_free(&r);
}

/* A CSU that answers as fast under load as without (a steady 20 ms) gets more GETs at once, up to
 * the ceiling, seen at the sim: doubling from 8 at first (slow start), within one bulk of 50. When
 * its round trips grow ten times, the window falls back to its floor, and slow start is over: when
 * they are short again, the window grows by an eighth per round, which takes more than one bulk
 * from 4 to 16 (doubling would take 12 answers). */
static void test_window_adapts(void **state) {
  struct pl_enrich_opts o = {.max_in_flight = 16};
  struct fx *f = fx_start("endpoints:\n  order: {latency_ms: 20}\n", &o);
  const struct pl_enrich_csu_stats *cs = pl_enrich_csu_stats(f->en, &f->csu);
  assert_non_null(cs);
  assert_int_equal(cs->window, 8); /* where it starts */
  struct sampler smp = {.sim = &f->t.sim};
  assert_int_equal(rx_timer_init(&smp.timer, &f->t.loop), 0);
  assert_int_equal(rx_timer_start(&smp.timer, on_sample, 1), 0);
  fetch_bulk(f, true);
  assert_int_equal(cs->window, 16);
  fetch_bulk(f, true); /* a bulk with the full window */
  assert_int_equal(cs->window, 16);
  assert_int_equal(cs->in_flight_max, 16);
  assert_int_equal(smp.max_held, 16);

  set_order_latency(f, "endpoints:\n  order: {latency_ms: 200}\n");
  assert_in_range(bulks_to_window(f, cs, 4), 1, 4);
  set_order_latency(f, "endpoints:\n  order: {latency_ms: 20}\n");
  assert_in_range(bulks_to_window(f, cs, 16), 2, 4);
  rx_timer_close(&smp.timer, NULL);
  assert_int_equal(cs->in_flight, 0);
  fx_stop(f);
}

/* Round trips that jitter (30-90 ms, uniform) but do not queue still grow the window: a round's
 * shortest is near the floor of the jitter. Judged per answer instead, more than a third of them
 * would read as a queue at 12 in flight and the window would shrink. */
static void test_window_grows_through_jitter(void **state) {
  struct pl_enrich_opts o = {.max_in_flight = 16};
  struct fx *f = fx_start("endpoints:\n  order: {latency_ms: 30, latency_jitter_ms: 60}\n", &o);
  const struct pl_enrich_csu_stats *cs = pl_enrich_csu_stats(f->en, &f->csu);
  assert_non_null(cs);
  assert_in_range(bulks_to_window(f, cs, 16), 0, 4);
  fx_stop(f);
}

/* 429s halve the window at once, whatever the round trips say. */
static void test_window_halves_on_429(void **state) {
  struct fx *f = fx_start("endpoints:\n  order: {error_rate: 1.0, errors: [429], retry_after_s: 0, "
                          "latency_ms: 5}\n",
                          NULL);
  const struct pl_enrich_csu_stats *cs = pl_enrich_csu_stats(f->en, &f->csu);
  assert_non_null(cs);
  assert_int_equal(cs->window, 8);
  fetch_bulk(f, false);
  assert_int_equal(cs->window, 4);
  assert_int_equal(sim_count(f, "order", 429), BULK);
  fx_stop(f);
}

static void test_cancel_coalesced(void **state) {
  struct fx *f = fx_start("endpoints:\n  order: {latency_ms: 100}\n", NULL);
  struct w w[5], lone[2];
  memset(w, 0, sizeof(w));
  memset(lone, 0, sizeof(lone));
  for (int i = 0; i < 5; i++)
    assert_int_equal(pl_enrich_order(f->en, &f->csu, CART_CUST, &w[i].req, on_done), 0);
  for (int i = 0; i < 2; i++)
    assert_int_equal(pl_enrich_order(f->en, &f->csu, CART_QUOTE, &lone[i].req, on_done), 0);
  st_run_ms(&f->t, 30); /* the GETs are at the sim, in their latency */
  pl_fetch_cancel(&w[1].req);
  assert_int_equal(w[1].calls, 0); /* from the loop, never from cancel */
  pl_fetch_cancel(&w[1].req);      /* twice is one completion */
  pl_fetch_cancel(&lone[0].req);
  pl_fetch_cancel(&lone[1].req); /* the last waiter: the GET itself is cancelled */
  assert_true(wait_all(f, w, 5, 15000));
  assert_true(wait_all(f, lone, 2, 15000));
  for (int i = 0; i < 5; i++) {
    assert_int_equal(w[i].calls, 1);
    if (i == 1) {
      assert_int_equal(w[i].result, UV_ECANCELED);
      assert_null(w[i].req.doc_json);
      continue;
    }
    assert_int_equal(w[i].result, 0);
    assert_int_equal(w[i].req.outcome, PL_FETCH_OK);
    assert_ptr_equal(w[i].req.doc_json, w[0].req.doc_json);
  }
  pl_fetch_cancel(&w[0].req); /* after completion: nothing happens */
  st_run_ms(&f->t, 20);
  assert_int_equal(w[0].calls, 1);
  assert_int_equal(w[0].req.outcome, PL_FETCH_OK);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(lone[i].calls, 1);
    assert_int_equal(lone[i].result, UV_ECANCELED);
  }
  for (int i = 0; i < 5; i++)
    pl_fetch_release(&w[i].req);
  const struct pl_enrich_stats *s = pl_enrich_stats(f->en);
  assert_int_equal(s->cancelled, 3);
  assert_int_equal(s->ok, 4);
  assert_int_equal(s->in_flight, 0);
  /* A fresh fetch of the cancelled cart starts a GET of its own, and works. */
  struct w again;
  fetch1(f, PL_FETCH_ORDER, CART_QUOTE, &again);
  assert_int_equal(again.req.outcome, PL_FETCH_OK);
  pl_fetch_release(&again.req);
  fx_stop(f);
}

static void test_destroy_in_flight(void **state) {
  struct pl_enrich_opts o = {.max_in_flight = 2};
  struct fx *f = fx_start("endpoints:\n  order: {latency_ms: 300}\n"
                          "  customer_get: {latency_ms: 300}\n",
                          &o);
  struct w w[9];
  memset(w, 0, sizeof(w));
  const char *carts[] = {CART_CUST, CART_CUST, CART_CUST, "BULK-00", "BULK-01", "BULK-02"};
  for (int i = 0; i < 6; i++)
    assert_int_equal(pl_enrich_order(f->en, &f->csu, carts[i], &w[i].req, on_done), 0);
  for (int i = 6; i < 9; i++)
    assert_int_equal(pl_enrich_customer(f->en, &f->csu, CUST_A, &w[i].req, on_done), 0);
  st_run_ms(&f->t, 50); /* two GETs at the sim, the rest queued */
  assert_int_equal(pl_enrich_csu_stats(f->en, &f->csu)->in_flight, 2);
  int done = 0;
  pl_enrich_destroy(f->en, on_flag, &done);
  struct w late = {0};
  assert_int_equal(pl_enrich_order(f->en, &f->csu, CART_CUST, &late.req, on_done), -ECANCELED);
  pl_enrich_destroy(f->en, on_flag, &done); /* ignored */
  f->en = NULL;
  run_until_flag(f, &done);
  for (int i = 0; i < 9; i++) {
    assert_int_equal(w[i].calls, 1);
    assert_int_equal(w[i].result, UV_ECANCELED);
    assert_null(w[i].req.doc_json);
  }
  assert_int_equal(late.calls, 0);
  fx_stop(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_urls),
      cmocka_unit_test(test_order_exact_document),
      cmocka_unit_test(test_order_quote_in_cart_id),
      cmocka_unit_test(test_order_coalesced),
      cmocka_unit_test(test_not_found),
      cmocka_unit_test(test_customer_cache_ttl),
      cmocka_unit_test(test_customer_cache_lru),
      cmocka_unit_test(test_faults),
      cmocka_unit_test(test_401_twice_retries),
      cmocka_unit_test(test_token_revoked),
      cmocka_unit_test(test_token_failures),
      cmocka_unit_test(test_in_flight_bound),
      cmocka_unit_test(test_window_adapts),
      cmocka_unit_test(test_window_grows_through_jitter),
      cmocka_unit_test(test_window_halves_on_429),
      cmocka_unit_test(test_cancel_coalesced),
      cmocka_unit_test(test_destroy_in_flight),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
