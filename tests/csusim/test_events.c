/* events.c: generation under a seed, carts, guests, late commits, same-time bursts, tie order, the
 * stale cache and scripted events. The stores are driven directly on a virtual clock (no loop), so
 * every assertion is exact; a last case runs the generator on the real loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "csu_internal.h"
#include "csurelay/timefmt.h"
#include "simtest.h"

#define T0 1721824109000LL /* 2024-07-24T12:28:29Z */

struct fx {
  struct sim sim;
  struct sim_csus *c;
  struct sim_event_faults knobs;
};

static void fx_init(struct fx *f, unsigned csus, double rate, uint64_t seed) {
  memset(f, 0, sizeof(*f));
  sim_opts_default(&f->sim.opts);
  f->sim.opts.csus = csus;
  f->sim.opts.rate = rate;
  f->sim.opts.seed = seed;
  snprintf(f->sim.base_url, sizeof(f->sim.base_url), "http://127.0.0.1:1");
  assert_int_equal(sim_csus_create(&f->sim, &f->c), 0);
  f->knobs = *sim_faults_events(NULL);
  f->c->knobs = &f->knobs;
}

static void fx_free(struct fx *f) {
  sim_csus_destroy(f->c);
}

/* Advances the generator clock from `from` to `to` (inclusive) in steps of `step` ms. */
static void run(struct fx *f, int64_t from, int64_t to, int64_t step) {
  for (int64_t t = from; t <= to; t += step)
    sim__advance(f->c, t);
}

/* One CSU, no rate: only same-time bursts of `n` carts every 2 s, run to T0 + 3.5 s, so one burst
 * of AddCartLines stands at T0 + 2 s and its Checkouts at T0 + 3 s. */
static void fx_burst(struct fx *f, unsigned n) {
  fx_init(f, 1, 0, 5);
  f->knobs.same_time_every_s = 2;
  f->knobs.same_time_burst = n;
  sim__begin(f->c, T0);
  sim__advance(f->c, T0 + 3500);
}

static const char *str(const struct sim__csu *u, uint32_t off) {
  return sim__str(&u->pool, off);
}

static void assert_sorted(const struct sim__store *s) {
  for (size_t i = 1; i < s->n; i++)
    assert_true(s->ev[i - 1].time_ms <= s->ev[i].time_ms);
}

static void assert_same_event(const struct sim__csu *a, const struct sim__ev *x,
                              const struct sim__csu *b, const struct sim__ev *y) {
  assert_int_equal(x->time_ms, y->time_ms);
  assert_int_equal(x->channel_id, y->channel_id);
  assert_string_equal(str(a, x->txn), str(b, y->txn));
  assert_string_equal(str(a, x->customer), str(b, y->customer));
  assert_string_equal(str(a, x->terminal), str(b, y->terminal));
  assert_string_equal(str(a, x->staff), str(b, y->staff));
  assert_string_equal(str(a, x->data), str(b, y->data));
}

/* Same seed and start: identical stores, however the clock was stepped. Another seed differs. */
static void test_determinism(void **state) {
  (void)state;
  struct fx a, b, d;
  fx_init(&a, 2, 400, 7);
  fx_init(&b, 2, 400, 7);
  fx_init(&d, 2, 400, 8);
  sim__begin(a.c, T0);
  sim__begin(b.c, T0);
  sim__begin(d.c, T0);
  run(&a, T0, T0 + 20000, 10);
  run(&b, T0, T0 + 20000, 777);
  sim__advance(b.c, T0 + 20000);
  sim__advance(d.c, T0 + 20000);
  for (unsigned i = 0; i < 2; i++)
    for (int type = 0; type < 2; type++) {
      const struct sim__store *x = &a.c->csu[i].st[type], *y = &b.c->csu[i].st[type];
      assert_true(x->n > 500);
      assert_int_equal(x->n, y->n);
      for (size_t k = 0; k < x->n; k++)
        assert_same_event(&a.c->csu[i], &x->ev[k], &b.c->csu[i], &y->ev[k]);
    }
  const struct sim__store *x = &a.c->csu[0].st[SIM_CHECKOUT], *z = &d.c->csu[0].st[SIM_CHECKOUT];
  bool differs = x->n != z->n;
  for (size_t k = 0; !differs && k < x->n; k++)
    differs = strcmp(str(&a.c->csu[0], x->ev[k].txn), str(&d.c->csu[0], z->ev[k].txn)) != 0 ||
              strcmp(str(&a.c->csu[0], x->ev[k].data), str(&d.c->csu[0], z->ev[k].data)) != 0;
  assert_true(differs);
  fx_free(&a);
  fx_free(&b);
  fx_free(&d);
}

static void event_of(const struct sim__csu *u, const struct sim__ev *e, int type,
                     struct sim_event *out) {
  memset(out, 0, sizeof(*out));
  out->csu = u->index;
  out->type = (enum sim_event_type)type;
  snprintf(out->txn, sizeof(out->txn), "%s", str(u, e->txn));
  out->time_ms = e->time_ms;
  csr_time_format(e->time_ms, out->time_text, sizeof(out->time_text));
  snprintf(out->data_area, sizeof(out->data_area), "%s", str(u, e->area));
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every event id is unique within a CSU's stores. */
static void assert_unique_ids(const struct sim__csu *u) {
  size_t n = u->st[0].n + u->st[1].n, k = 0;
  char **ids = calloc(n, sizeof(*ids));
  assert_non_null(ids);
  for (int type = 0; type < 2; type++)
    for (size_t i = 0; i < u->st[type].n; i++) {
      struct sim_event ev;
      event_of(u, &u->st[type].ev[i], type, &ev);
      ids[k] = malloc(256);
      sim_event_id(&ev, ids[k++], 256);
    }
  qsort(ids, n, sizeof(*ids), cmp_str);
  for (size_t i = 1; i < n; i++)
    assert_string_not_equal(ids[i - 1], ids[i]);
  for (size_t i = 0; i < n; i++)
    free(ids[i]);
  free(ids);
}

/* For each Checkout: 1-4 AddCartLines of the same cart before it, at distinct times, with the same
 * customer, channel, terminal and staff; EventData an array of ItemIds, or {} for Checkout. */
static void assert_cart(const struct sim__csu *u, const struct sim__ev *co) {
  const struct sim__store *adds = &u->st[SIM_ADDCARTLINES];
  unsigned lines = 0;
  assert_string_equal(str(u, co->data), "{}");
  for (size_t i = 0; i < adds->n; i++) {
    const struct sim__ev *e = &adds->ev[i];
    if (e->txn != co->txn)
      continue;
    lines++;
    assert_true(e->time_ms < co->time_ms);
    assert_int_equal(e->customer, co->customer);
    assert_int_equal(e->channel_id, co->channel_id);
    assert_int_equal(e->terminal, co->terminal);
    assert_int_equal(e->staff, co->staff);
    yajl_val items = csr_json_parse(str(u, e->data), strlen(str(u, e->data)), NULL, 0);
    assert_true(YAJL_IS_ARRAY(items));
    assert_true(csr_json_len(items) >= 1 && csr_json_len(items) <= 2);
    assert_non_null(csr_json_str(csr_json_at(items, 0)));
    csr_json_free(items);
  }
  assert_true(lines >= 1 && lines <= 4);
}

static void test_carts(void **state) {
  (void)state;
  struct fx f;
  fx_init(&f, 1, 350, 3);
  sim__begin(f.c, T0);
  run(&f, T0, T0 + 60000, 15);
  struct sim__csu *u = &f.c->csu[0];
  const struct sim__store *co = &u->st[SIM_CHECKOUT];
  size_t total = u->st[0].n + u->st[1].n, guests = 0, online = 0, checked = 0;
  /* 350 events/s for 60 s, less the carts still open at the end */
  assert_true(total > 17000 && total < 22000);
  assert_sorted(&u->st[0]);
  assert_sorted(co);
  for (size_t i = 0; i < co->n; i++) {
    const struct sim__ev *e = &co->ev[i];
    const char *term = str(u, e->terminal), *txn = str(u, e->txn);
    guests += str(u, e->customer)[0] == '\0';
    if (term[0] == '\0') { /* online: no terminal, no staff */
      online++;
      assert_int_equal(e->channel_id, SIM_FIRST_CHANNEL_ID + 2);
      assert_string_equal(str(u, e->staff), "");
      assert_non_null(strstr(txn, "HOUSTON-WEB-"));
    } else {
      assert_true(strlen(term) <= 10 && strlen(str(u, e->staff)) == 6);
      assert_non_null(strstr(txn, term));
    }
    assert_string_equal(str(u, e->area), "usrt");
    assert_non_null(sim__cart_find(u, txn));
    if (i % 40 == 0 && checked++ < 60)
      assert_cart(u, e);
  }
  double share = (double)guests / (double)co->n;
  assert_true(share > 0.16 && share < 0.24);
  assert_true(online > co->n / 10 && online < co->n / 3);
  assert_unique_ids(u);
  fx_free(&f);
}

/* Late commits keep their EventDateTime: at T only events committed by T are visible; 5 s later the
 * late ones sit among older events, in time order. */
static void test_late_commits(void **state) {
  (void)state;
  struct fx f;
  fx_init(&f, 1, 500, 11);
  f.knobs.late_commit_rate = 0.3;
  f.knobs.late_commit_max_s = 4;
  sim__begin(f.c, T0);
  const int64_t t1 = T0 + 20000;
  run(&f, T0, t1, 10);
  struct sim__csu *u = &f.c->csu[0];
  size_t before = sim__store_upper(&u->st[SIM_CHECKOUT], t1);
  assert_int_equal(before, u->st[SIM_CHECKOUT].n);
  size_t pending_old = 0;
  for (size_t i = 0; i < u->npend; i++) {
    assert_true(u->pend[i].commit_ms > t1);
    pending_old += u->pend[i].ev.time_ms <= t1 && u->pend[i].type == SIM_CHECKOUT;
  }
  assert_true(pending_old > 10);
  run(&f, t1, t1 + 5000, 10);
  assert_sorted(&u->st[SIM_CHECKOUT]);
  assert_sorted(&u->st[SIM_ADDCARTLINES]);
  assert_int_equal(sim__store_upper(&u->st[SIM_CHECKOUT], t1), before + pending_old);
  fx_free(&f);

  fx_init(&f, 1, 500, 11); /* no late commits: everything up to T is visible at T */
  sim__begin(f.c, T0);
  run(&f, T0, t1, 10);
  for (size_t i = 0; i < f.c->csu[0].npend; i++)
    assert_true(f.c->csu[0].pend[i].ev.time_ms > t1);
  fx_free(&f);
}

/* Parses a page written by sim__write_page into its transaction ids (comma-joined). */
static size_t page(struct fx *f, struct sim__query *q, char *ids, size_t len, int64_t *count) {
  struct csr_jw jw;
  const char *text;
  size_t n;
  assert_int_equal(csr_jw_init(&jw), 0);
  size_t rows = sim__write_page(f->c, &f->c->csu[0], q, &jw);
  assert_int_equal(csr_jw_finish(&jw, &text, &n), 0);
  yajl_val doc = csr_json_parse(text, n, NULL, 0);
  assert_non_null(doc);
  yajl_val v = csr_json_get(doc, "value");
  assert_int_equal(csr_json_len(v), rows);
  ids[0] = '\0';
  for (size_t i = 0; i < rows; i++) {
    strncat(ids, csr_json_get_str(csr_json_at(v, i), "EventTransactionId"), len - strlen(ids) - 2);
    strcat(ids, ",");
  }
  *count = -1;
  if (csr_json_get(doc, "@odata.count"))
    assert_int_equal(csr_json_get_int(doc, "@odata.count", count), 0);
  csr_json_free(doc);
  csr_jw_free(&jw);
  return rows;
}

/* Every 2 s a burst of 300 carts: 300 AddCartLines at one time, their Checkouts 1 s later. */
static void test_burst_and_ties(void **state) {
  (void)state;
  struct fx f;
  fx_burst(&f, 300);
  struct sim__csu *u = &f.c->csu[0];
  assert_int_equal(u->st[SIM_ADDCARTLINES].n, 300);
  assert_int_equal(u->st[SIM_CHECKOUT].n, 300);
  for (size_t i = 0; i < 300; i++) {
    assert_int_equal(u->st[SIM_ADDCARTLINES].ev[i].time_ms, T0 + 2000);
    assert_int_equal(u->st[SIM_CHECKOUT].ev[i].time_ms, T0 + 3000);
  }
  assert_unique_ids(u);
  static char a[40000], b[40000], c2[40000];
  int64_t count;
  struct sim__query q = {
      .type = SIM_CHECKOUT, .from_ms = T0, .to_ms = T0 + 4000, .top = 250, .count = true};
  /* stable: two queries give one order; pages split the tie group 250 + 50 */
  assert_int_equal(page(&f, &q, a, sizeof(a), &count), 250);
  assert_int_equal(count, 300);
  assert_int_equal(page(&f, &q, b, sizeof(b), &count), 250);
  assert_string_equal(a, b);
  q.skip = 250;
  assert_int_equal(page(&f, &q, c2, sizeof(c2), &count), 50);
  /* unstable: each query draws a new order of the tie group */
  q.shuffle = true;
  q.skip = 0;
  q.top = 300;
  page(&f, &q, a, sizeof(a), &count);
  page(&f, &q, b, sizeof(b), &count);
  assert_string_not_equal(a, b);
  assert_int_equal(strlen(a), strlen(b)); /* same ids, other order */
  q.top = 250;
  page(&f, &q, a, sizeof(a), &count);
  q.skip = 250;
  page(&f, &q, c2, sizeof(c2), &count);
  fx_free(&f);
}

/* Search bounds: From exclusive, To inclusive, both whole seconds (the caller truncates). */
static void test_bounds(void **state) {
  (void)state;
  struct fx f;
  fx_burst(&f, 3); /* Checkouts at T0 + 3000 */
  char ids[4096];
  int64_t count;
  struct sim__query q = {.type = SIM_CHECKOUT,
                         .from_ms = T0 + 3000,
                         .to_ms = T0 + 4000,
                         .top = SIZE_MAX,
                         .count = true};
  assert_int_equal(page(&f, &q, ids, sizeof(ids), &count), 0);
  assert_int_equal(count, 0);
  q.from_ms = T0 + 2000;
  q.to_ms = T0 + 3000;
  assert_int_equal(page(&f, &q, ids, sizeof(ids), &count), 3);
  q.type = 2; /* an EventType no row has */
  assert_int_equal(page(&f, &q, ids, sizeof(ids), &count), 0);
  q.type = -1; /* GetAll: both types, by time */
  q.from_ms = INT64_MIN;
  q.to_ms = INT64_MAX;
  q.skip = 2;
  assert_int_equal(page(&f, &q, ids, sizeof(ids), &count), 4);
  assert_int_equal(count, 6);
  fx_free(&f);
}

/* The stale cache answers the same key within the TTL; another window or an expired entry misses.
 */
static void test_stale_cache(void **state) {
  (void)state;
  struct fx f;
  fx_init(&f, 2, 0, 5);
  f.knobs.stale_cache = true;
  f.knobs.stale_cache_ttl_s = 60;
  sim__begin(f.c, T0);
  struct sim__query q = {.type = SIM_CHECKOUT, .from_ms = T0, .to_ms = T0 + 4000, .top = 250};
  size_t len = 0;
  assert_null(sim__cache_get(f.c, 0, "Checkout", &q, &len));
  sim__cache_put(f.c, 0, "Checkout", &q, "{\"value\":[1]}", 13);
  const char *hit = sim__cache_get(f.c, 0, "Checkout", &q, &len);
  assert_non_null(hit);
  assert_int_equal(len, 13);
  assert_memory_equal(hit, "{\"value\":[1]}", 13);
  assert_null(sim__cache_get(f.c, 1, "Checkout", &q, &len));     /* other CSU */
  assert_null(sim__cache_get(f.c, 0, "AddCartLines", &q, &len)); /* other type */
  q.skip = 250;
  assert_null(sim__cache_get(f.c, 0, "Checkout", &q, &len));
  q.skip = 0;
  sim__advance(f.c, T0 + 59999);
  assert_non_null(sim__cache_get(f.c, 0, "Checkout", &q, &len));
  sim__advance(f.c, T0 + 60000);
  assert_null(sim__cache_get(f.c, 0, "Checkout", &q, &len));
  fx_free(&f);
}

/* A fixture of two CSUs with `text` loaded as its --events FILE, which is gone again after; returns
 * what sim_csus_load_events() returned and leaves the file's name in `path`. */
static int fx_script(struct fx *f, const char *text, char *why, size_t len, char *path,
                     size_t plen) {
  char tmp[] = "/tmp/test_events_XXXXXX";
  int fd = mkstemp(tmp);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  snprintf(path, plen, "%s", tmp);
  fx_init(f, 2, 0, 1);
  int rc = sim_csus_load_events(f->c, tmp, why, len);
  unlink(tmp);
  return rc;
}

static const char GOOD[] =
    "[{\"csu\":1,\"EventType\":\"AddCartLines\",\"EventTransactionId\":\"S-1\","
    "\"EventDateTime\":\"2024-07-24T14:17:02.16Z\",\"EventData\":\"[\\\"81143\\\"]\","
    "\"EventTerminalId\":\"SEATTLE-3\",\"EventStaffId\":\"000168\",\"EventCustomerId\":\"011001\"},"
    "{\"csu\":1,\"EventType\":\"Checkout\",\"EventTransactionId\":\"S-1\","
    "\"EventDateTime\":\"2024-07-24T14:17:05Z\",\"EventChannelId\":5637145593,"
    "\"EventCustomerId\":\"011001\",\"commit_after_ms\":1500,\"ReceiptEmail\":\"r@example.com\"},"
    "{\"EventType\":\"Checkout\",\"EventTransactionId\":\"G-1\",\"offset_ms\":-2000}]";

static void test_script_good(void **state) {
  (void)state;
  struct fx f;
  char why[256] = "", path[64];
  assert_int_equal(fx_script(&f, GOOD, why, sizeof(why), path, sizeof(path)), 0);
  sim__begin(f.c, T0);
  sim__advance(f.c, T0);
  struct sim__csu *u1 = &f.c->csu[1], *u0 = &f.c->csu[0];
  assert_int_equal(u1->st[SIM_ADDCARTLINES].n, 1);
  assert_int_equal(u1->st[SIM_CHECKOUT].n, 0); /* committed 1.5 s after start */
  assert_null(sim__cart_find(u1, "S-1"));
  const struct sim__ev *e = &u1->st[SIM_ADDCARTLINES].ev[0];
  assert_int_equal(e->time_ms, 1721830622160LL);
  assert_string_equal(str(u1, e->data), "[\"81143\"]");
  assert_int_equal(e->channel_id, SIM_FIRST_CHANNEL_ID + 1000);
  assert_string_equal(str(u1, e->area), "usrt");
  assert_int_equal(u0->st[SIM_CHECKOUT].n, 1);
  assert_int_equal(u0->st[SIM_CHECKOUT].ev[0].time_ms, T0 - 2000);
  assert_string_equal(str(u0, u0->st[SIM_CHECKOUT].ev[0].customer), "");
  sim__advance(f.c, T0 + 1500);
  assert_int_equal(u1->st[SIM_CHECKOUT].n, 1);
  const struct sim__cart *k = sim__cart_find(u1, "S-1");
  assert_non_null(k);
  assert_int_equal(k->channel, 1);
  struct sim__order_sum sum;
  sim__order_summary(f.c, u1, k, &sum);
  assert_string_equal(sum.email, "r@example.com");
  fx_free(&f);
}

static void assert_bad_script(const char *text, const char *reason) {
  struct fx f;
  char why[256] = "", path[64];
  assert_true(fx_script(&f, text, why, sizeof(why), path, sizeof(path)) < 0);
  if (strstr(why, reason) == NULL)
    fail_msg("\"%s\" lacks \"%s\"", why, reason);
  assert_non_null(strstr(why, path));
  fx_free(&f);
}

static void test_script_bad(void **state) {
  (void)state;
  assert_bad_script("{}", "not a JSON array");
  assert_bad_script("[{\"EventType\":", "--events");
  assert_bad_script("[{\"EventType\":\"Checkout\",\"EventTransactionId\":\"a\",\"offset_ms\":0,"
                    "\"colour\":1}]",
                    "event 0: unknown member \"colour\"");
  assert_bad_script("[{\"EventType\":\"Refund\",\"EventTransactionId\":\"a\",\"offset_ms\":0}]",
                    "EventType must be");
  assert_bad_script("[{\"EventType\":\"Checkout\",\"offset_ms\":0}]", "EventTransactionId");
  assert_bad_script("[{\"EventType\":\"Checkout\",\"EventTransactionId\":\"a\"}]",
                    "needs EventDateTime or offset_ms");
  assert_bad_script("[{\"EventType\":\"Checkout\",\"EventTransactionId\":\"a\","
                    "\"EventDateTime\":\"yesterday\"}]",
                    "not an ISO-8601");
  assert_bad_script("[{\"csu\":2,\"EventType\":\"Checkout\",\"EventTransactionId\":\"a\","
                    "\"offset_ms\":0}]",
                    "csu 2 is not one of the 2 CSUs");
  assert_bad_script("[{\"EventType\":\"Checkout\",\"EventTransactionId\":\"a\",\"offset_ms\":0,"
                    "\"EventTerminalId\":\"HOUSTON-123\"}]",
                    "EventTerminalId must be a string of at most 10");
  assert_bad_script("[{\"EventType\":\"Checkout\",\"EventTransactionId\":\"a\",\"offset_ms\":5},"
                    "{\"EventType\":\"Checkout\",\"EventTransactionId\":\"a\",\"offset_ms\":5}]",
                    "share the primary key");
  struct fx f;
  char why[256] = "";
  fx_init(&f, 1, 0, 1);
  assert_true(sim_csus_load_events(f.c, "/nonexistent/events.json", why, sizeof(why)) < 0);
  assert_non_null(strstr(why, "No such file"));
  fx_free(&f);
}

/* On the real loop: a 2000 events/s generator over 1.5 s through sim_start, visible by GetAll. */
static void test_generator_on_loop(void **state) {
  (void)state;
  struct st t;
  st_start(&t, 2, 2000, NULL);
  st_run_ms(&t, 1500);
  size_t n = 0;
  for (unsigned i = 0; i < 2; i++) {
    struct sim__csu *u = &t.sim.csus->csu[i];
    n += u->st[0].n + u->st[1].n;
    assert_sorted(&u->st[0]);
    assert_sorted(&u->st[1]);
  }
  assert_true(n > 700 && n < 3500);
  struct sim_ledger_counts lc;
  sim_ledger_counts(t.sim.ledger, &lc);
  assert_int_equal(lc.generated, n);
  st_stop(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_determinism),
      cmocka_unit_test(test_carts),
      cmocka_unit_test(test_late_commits),
      cmocka_unit_test(test_burst_and_ties),
      cmocka_unit_test(test_bounds),
      cmocka_unit_test(test_stale_cache),
      cmocka_unit_test(test_script_good),
      cmocka_unit_test(test_script_bad),
      cmocka_unit_test(test_generator_on_loop),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
