/* The poll stage (src/pipeline/poll.c, poll_window.c) against csusim in-process. A test admitter
 * keeps the set of admitted ids (repeats counted apart), answers pages at once or later, can fail
 * pages or say it is full, and records cursors. After each scenario the set is compared with the
 * ledger's generated events: every event once, nothing unknown. Scenarios: 4 CSUs; equal
 * timestamps with an unstable tie order (one wide page, and forced $skip passes); late commits
 * inside the overlap and inside the sweep; the stale Search cache (no query ever sent twice);
 * Search faults on one CSU while the others keep up; a token revoked mid-run; backpressure; one
 * CSU at 10x the others; stop mid-flight; the API's refusals and a cursor from the store. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "csu_internal.h" /* per-CSU generator rates */
#include "csurelay/log.h"
#include "csurelay/pipeline.h"
#include "csurelay/timefmt.h"
#include "polltest.h"

#define MAX_CSUS PT_MAX_CSUS
#define MAX_HELD 16

/* ---------------------------------------------------------------------------------------------- */
/* Log capture: warnings kept as text; the Searches' keys (debug lines) checked for repeats */
/* ---------------------------------------------------------------------------------------------- */

static char logbuf[1 << 20];
static size_t loglen;
static struct sset search_keys;
static uint64_t searches_logged, repeated_keys;

static void note_search(const char *line, size_t len) {
  yajl_val j = csr_json_parse(line, len, NULL, 0);
  assert_non_null(j);
  char key[256];
  snprintf(key, sizeof(key), "%s|%s|%s|%s|%s|%s", csr_json_get_str(j, "csu"),
           csr_json_get_str(j, "type"), csr_json_get_str(j, "from"), csr_json_get_str(j, "to"),
           csr_json_num_text(csr_json_get(j, "top")), csr_json_num_text(csr_json_get(j, "skip")));
  searches_logged++;
  if (!sset_add(&search_keys, key)) {
    repeated_keys++;
    print_message("repeated Search: %s\n", key);
  }
  csr_json_free(j);
}

/* The writer's line is `len` bytes, not NUL-terminated: strstr would read on into whatever an
 * earlier, longer line left in the buffer. */
static bool has(const char *line, size_t len, const char *s) {
  return memmem(line, len, s, strlen(s)) != NULL;
}

static void capture(const char *line, size_t len, void *arg) {
  if (has(line, len, "\"msg\":\"poll: search\"")) {
    note_search(line, len);
    return;
  }
  if (has(line, len, "\"level\":\"debug\""))
    return;
  if (loglen + len + 1 < sizeof(logbuf)) {
    memcpy(logbuf + loglen, line, len);
    loglen += len;
    logbuf[loglen] = '\0';
  }
}

static void log_reset(enum csr_log_level level) {
  loglen = 0;
  logbuf[0] = '\0';
  sset_free(&search_keys);
  searches_logged = repeated_keys = 0;
  csr_log_set_writer(capture, NULL);
  csr_log_set_level(level);
}

/* ---------------------------------------------------------------------------------------------- */
/* The test admitter */
/* ---------------------------------------------------------------------------------------------- */

struct adm {
  struct sset ids;            /* admitted (answered 0) */
  uint64_t per_csu[MAX_CSUS]; /* distinct ids per CSU */
  uint64_t pages, rows, repeats, sweep_pages, first_on_sweep, failed;
  int full;
  uint64_t full_calls;
  uint64_t delay_ms;   /* answer pages this long after on_page (0: inside on_page) */
  int64_t horizon_ms;  /* > 0: a sweep page must not reach below the reported cursor - this */
  uint64_t sweep_checks;  /* sweep pages checked against horizon_ms */
  uint64_t behind_checks; /* pages of any window checked that read behind the reported cursor */
  bool hold;           /* keep pages until the test answers them */
  unsigned fail_every; /* fail every n-th page */
  struct pl_poll_page *held[MAX_HELD];
  size_t nheld;
  struct rx_timer timer;
  int64_t cursor[MAX_CSUS][2];
  uint64_t cursor_calls;
  bool stop_called;
  uint64_t after_stop; /* callbacks after pl_poll_stop() was called */
};

static unsigned csu_index(const struct csr_csu *csu) {
  unsigned i = (unsigned)atoi(csu->name + 3);
  assert_true(i < MAX_CSUS);
  return i;
}

static void admit(struct adm *a, struct pl_poll_page *page) {
  a->pages++;
  if (a->fail_every > 0 && a->pages % a->fail_every == 0) {
    a->failed++;
    pl_poll_page_done(page, UV_EIO);
    return;
  }
  a->sweep_pages += page->sweep;
  for (size_t i = 0; i < page->n; i++) {
    a->rows++;
    if (sset_add(&a->ids, page->events[i].id)) {
      a->per_csu[csu_index(page->csu)]++;
      a->first_on_sweep += page->sweep;
    } else {
      a->repeats++;
    }
  }
  pl_poll_page_done(page, 0);
}

static void answer_held(struct adm *a) {
  size_t n = a->nheld;
  a->nheld = 0;
  for (size_t i = 0; i < n; i++)
    admit(a, a->held[i]);
}

static uint64_t on_adm_timer(struct rx_timer *t) {
  answer_held(t->data);
  return RX_TIMER_STOP;
}

static void on_page(void *arg, struct pl_poll_page *page) {
  struct adm *a = arg;
  if (a->stop_called)
    a->after_stop++;
  assert_true(page->n > 0);
  for (size_t i = 0; i < page->n; i++) {
    const struct pl_poll_event *e = &page->events[i];
    assert_true(e->time_ms > page->from_ms && e->time_ms <= page->to_ms);
    /* the row's span is exactly one object of the page's text */
    assert_true(e->row_len >= 2 && e->row_json[0] == '{' && e->row_json[e->row_len - 1] == '}');
    yajl_val row = csr_json_parse(e->row_json, e->row_len, NULL, 0);
    assert_non_null(row);
    assert_string_equal(csr_json_get_str(row, "EventType"), page->type);
    csr_json_free(row);
    assert_true(strncmp(e->id, page->csu->name, strlen(page->csu->name)) == 0);
  }
  if (a->horizon_ms > 0) {
    /* The admitter expires the ids below cursor - horizon: a sweep or an overlap window reading
     * there would admit finished events a second time. */
    int64_t cursor = a->cursor[csu_index(page->csu)][pt_type_index(page->type)];
    assert_true(page->from_ms >= cursor - a->horizon_ms);
    a->sweep_checks += page->sweep;
    a->behind_checks += page->from_ms < cursor;
  }
  if (a->delay_ms == 0 && !a->hold) {
    admit(a, page);
    return;
  }
  assert_true(a->nheld < MAX_HELD);
  a->held[a->nheld++] = page;
  if (!a->hold && !rx_timer_active(&a->timer))
    assert_int_equal(rx_timer_start(&a->timer, on_adm_timer, a->delay_ms), 0);
}

static int on_full(void *arg, uint64_t rows_coming) {
  (void)rows_coming;
  struct adm *a = arg;
  if (a->stop_called)
    a->after_stop++;
  a->full_calls++;
  return a->full;
}

static void on_cursor(void *arg, const struct csr_csu *csu, const char *type, int64_t cursor_ms) {
  struct adm *a = arg;
  if (a->stop_called)
    a->after_stop++;
  int64_t *c = &a->cursor[csu_index(csu)][pt_type_index(type)];
  assert_true(cursor_ms > *c); /* only forward */
  *c = cursor_ms;
  a->cursor_calls++;
}

static const struct pl_poll_ops OPS = {.on_page = on_page, .full = on_full, .on_cursor = on_cursor};

/* ---------------------------------------------------------------------------------------------- */
/* Fixture */
/* ---------------------------------------------------------------------------------------------- */

struct fx {
  struct pt p;
  struct pl_poll_opts opts;
  struct pl_poll *poll;
  struct adm a;
  struct rx_timer sampler;
  bool sampling;
  double max_lag[MAX_CSUS];          /* cursor lag, worst lane of each CSU, while sampling */
  uint64_t max_backoff_ms[MAX_CSUS]; /* the longest backoff seen */
  int stopped;
};

static uint64_t on_sample(struct rx_timer *t) {
  struct fx *f = t->data;
  if (!f->sampling || f->poll == NULL)
    return 100;
  for (size_t i = 0; i < pl_poll_lanes(f->poll); i++) {
    struct pl_poll_stats s;
    assert_int_equal(pl_poll_stats(f->poll, i, &s), 0);
    unsigned c = (unsigned)atoi(s.csu + 3);
    if (s.cursor_lag_s > f->max_lag[c])
      f->max_lag[c] = s.cursor_lag_s;
    if (s.backoff_left_ms > f->max_backoff_ms[c])
      f->max_backoff_ms[c] = s.backoff_left_ms;
  }
  return 100;
}

static struct fx *fx_new(unsigned n, double rate, const char *faults) {
  struct fx *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  pt_start_sim(&f->p, n, rate, faults);
  pt_setup(&f->p, f->p.t.sim.base_url, n, 5);
  f->opts = (struct pl_poll_opts){
      .timeout_ms = 1000, .backoff_base_ms = 100, .backoff_cap_ms = 2000, .seed = 7};
  assert_int_equal(rx_timer_init(&f->a.timer, &f->p.t.loop), 0);
  f->a.timer.data = &f->a;
  assert_int_equal(rx_timer_init(&f->sampler, &f->p.t.loop), 0);
  f->sampler.data = f;
  assert_int_equal(rx_timer_start(&f->sampler, on_sample, 100), 0);
  return f;
}

static void fx_create(struct fx *f) {
  assert_int_equal(pl_poll_create(&f->p.t.loop, &f->p.t.http, f->p.csus, f->p.n, pt_tokens_for,
                                  &f->p, &f->opts, &OPS, &f->a, &f->poll),
                   0);
}

static void fx_poll(struct fx *f) {
  fx_create(f);
  assert_int_equal(pl_poll_start(f->poll), 0);
}

/* Runs the loop until cond(f) holds or `ms` passed; returns whether it holds. */
static bool run_until(struct fx *f, bool (*cond)(struct fx *), uint64_t ms) {
  struct pt_guard g;
  pt_guard_start(&g, &f->p, ms);
  while (!(cond != NULL && cond(f)) && !g.expired)
    uv_run(&f->p.t.uv, UV_RUN_ONCE);
  pt_guard_end(&g, &f->p);
  return cond != NULL && cond(f);
}

static void run_ms(struct fx *f, uint64_t ms) {
  run_until(f, NULL, ms);
}

static void on_stopped(void *arg) {
  ((struct fx *)arg)->stopped++;
}

static bool is_stopped(struct fx *f) {
  return f->stopped > 0;
}

static void fx_stop_poll(struct fx *f) {
  if (f->poll == NULL)
    return;
  f->a.stop_called = true;
  pl_poll_stop(f->poll, on_stopped, f);
  assert_int_equal(f->stopped, 0); /* never from inside the call */
  answer_held(&f->a);
  assert_true(run_until(f, is_stopped, 5000));
  assert_int_equal(f->stopped, 1);
  assert_int_equal(f->a.after_stop, 0);
  f->poll = NULL;
}

static void fx_free(struct fx *f) {
  fx_stop_poll(f);
  rx_timer_close(&f->a.timer, NULL);
  rx_timer_close(&f->sampler, NULL);
  pt_stop(&f->p);
  sset_free(&f->a.ids);
  free(f);
}

static struct pl_poll_stats lane_stats(struct fx *f, size_t i) {
  struct pl_poll_stats s;
  assert_int_equal(pl_poll_stats(f->poll, i, &s), 0);
  return s;
}

static bool caught_up(struct fx *f) {
  return f->a.ids.n >= pt_generated(&f->p);
}

/* ---------------------------------------------------------------------------------------------- */
/* The ledger */
/* ---------------------------------------------------------------------------------------------- */

/* Every ledger event with time_ms <= until was admitted, and every admitted id is a ledger event;
 * with until = INT64_MAX the two sets are equal. Returns the events compared. */
static size_t check_ledger(struct fx *f, int64_t until_ms) {
  struct pt_lev *v;
  size_t n = pt_ledger_events(&f->p, true, &v), expected = 0, missing = 0, unknown = 0;
  struct sset all = {0};
  for (size_t i = 0; i < n; i++) {
    sset_add(&all, v[i].id);
    if (v[i].time_ms > until_ms)
      continue;
    expected++;
    if (!sset_has(&f->a.ids, v[i].id) && missing++ < 5)
      print_message("missing: %s (committed %+lld ms)\n", v[i].id,
                    (long long)(v[i].commit_ms - v[i].time_ms));
  }
  for (size_t i = 0; i < f->a.ids.cap; i++)
    if (f->a.ids.slots[i] != NULL && !sset_has(&all, f->a.ids.slots[i]) && unknown++ < 5)
      print_message("unknown: %s\n", f->a.ids.slots[i]);
  print_message("ledger %zu, compared %zu, admitted %zu, repeats %llu, pages %llu\n", n, expected,
                f->a.ids.n, (unsigned long long)f->a.repeats, (unsigned long long)f->a.pages);
  assert_int_equal(missing, 0);
  assert_int_equal(unknown, 0);
  assert_int_equal(all.n, n); /* the ledger's ids are unique */
  if (until_ms == INT64_MAX)
    assert_int_equal(f->a.ids.n, n);
  sset_free(&all);
  free(v);
  return expected;
}

/* How many ledger events with time_ms <= until were not admitted (yet). */
static size_t missing_upto(struct fx *f, int64_t until_ms) {
  struct pt_lev *v;
  size_t n = pt_ledger_events(&f->p, true, &v), missing = 0;
  for (size_t i = 0; i < n; i++)
    missing += v[i].time_ms <= until_ms && !sset_has(&f->a.ids, v[i].id);
  free(v);
  return missing;
}

/* Runs until every ledger event up to until_ms is admitted, at most `ms`. */
static bool run_until_complete(struct fx *f, int64_t until_ms, uint64_t ms) {
  for (uint64_t waited = 0; waited < ms; waited += 250) {
    if (missing_upto(f, until_ms) == 0)
      return true;
    run_ms(f, 250);
  }
  return missing_upto(f, until_ms) == 0;
}

/* Whether every lane's cursor has been reported to the admitter as it stands. */
static bool cursors_reported(struct fx *f) {
  for (size_t i = 0; i < pl_poll_lanes(f->poll); i++) {
    struct pl_poll_stats s = lane_stats(f, i);
    if (f->a.cursor[(unsigned)atoi(s.csu + 3)][pt_type_index(s.type)] != s.cursor_ms)
      return false;
  }
  return true;
}

/* Every lane's cursor has passed its last event, and was reported to the admitter. A cursor is
 * held back while the overlap behind it is re-read (a few ms after each regular window), so the
 * check waits for a moment when none is. */
static void check_cursors(struct fx *f) {
  struct pt_lev *v;
  size_t n = pt_ledger_events(&f->p, true, &v);
  int64_t last[MAX_CSUS][2] = {{0}};
  pt_ledger_last(v, n, last);
  free(v);
  for (size_t i = 0; i < pl_poll_lanes(f->poll); i++) {
    struct pl_poll_stats s = lane_stats(f, i);
    unsigned c = (unsigned)atoi(s.csu + 3);
    int t = pt_type_index(s.type);
    assert_true(s.windows > 0);
    assert_true(s.overlaps > 0);
    assert_true(s.cursor_ms >= last[c][t]);
  }
  for (int tries = 0; tries < 100 && !cursors_reported(f); tries++)
    run_ms(f, 20);
  assert_true(cursors_reported(f));
}

/* ---------------------------------------------------------------------------------------------- */
/* Scenarios */
/* ---------------------------------------------------------------------------------------------- */

static bool cursors_past_now(struct fx *f) {
  int64_t target = rx_wall_ms() - 3000;
  for (unsigned c = 0; c < f->p.n; c++)
    for (int t = 0; t < 2; t++)
      if (f->a.cursor[c][t] < target)
        return false;
  return true;
}

/* 4 CSUs for a few seconds: every generated event is admitted once, cursors pass the last one. */
static void test_four_csus(void **state) {
  struct fx *f = fx_new(4, 200, NULL);
  log_reset(CSR_INFO);
  fx_poll(f);
  run_ms(f, 3000);
  sim_csus_stop(f->p.t.sim.csus);
  assert_true(run_until(f, caught_up, 10000));
  assert_true(run_until(f, cursors_past_now, 5000));
  check_ledger(f, INT64_MAX);
  check_cursors(f);
  for (size_t i = 0; i < pl_poll_lanes(f->poll); i++) {
    struct pl_poll_stats s = lane_stats(f, i);
    assert_int_equal(s.errors, 0);
    assert_true(s.searches >= s.pages);
    assert_true(s.cursor_lag_s < 5);
    assert_string_equal(s.last_error, "");
  }
  assert_true(f->a.pages > 0 && f->a.cursor_calls > 0);
  fx_free(f);
}

static void run_equal_timestamps(unsigned wide_top) {
  struct fx *f = fx_new(2, 20,
                        "events: {same_time_every_s: 1, same_time_burst: 60, "
                        "unstable_tie_order: true}\n");
  f->opts.wide_top = wide_top;
  fx_poll(f);
  run_ms(f, 3500);
  sim_csus_stop(f->p.t.sim.csus);
  assert_true(run_until(f, caught_up, 15000));
  check_ledger(f, INT64_MAX);
  uint64_t dense = 0, passes = 0;
  for (size_t i = 0; i < pl_poll_lanes(f->poll); i++) {
    struct pl_poll_stats s = lane_stats(f, i);
    assert_int_equal(s.errors, 0);
    dense += s.dense_seconds;
    passes += s.dense_passes;
  }
  print_message("wide_top %u: dense seconds %llu, passes %llu\n", wide_top,
                (unsigned long long)dense, (unsigned long long)passes);
  assert_true(dense > 0);
  if (wide_top != 0)
    assert_true(passes > dense); /* a second of 60 rows cannot be proven in one pass of 24 */
  fx_free(f);
}

/* Bursts of 60 events with one EventDateTime straddle pages of 25, in a new order per query. */
static void test_equal_timestamps(void **state) {
  run_equal_timestamps(0);  /* a wide page takes the whole second at once */
  run_equal_timestamps(25); /* forced: $skip passes until every id of the second is seen */
}

/* Late commits (up to 12 s after their EventDateTime): the overlap (5 s) takes the short ones,
 * the sweep (30 s every 2 s) the others. Events up to a cut are compared once all of them have
 * had time to commit. */
static void test_late_commits(void **state) {
  struct fx *f = fx_new(2, 100, "events: {late_commit_rate: 0.05, late_commit_max_s: 12}\n");
  for (unsigned i = 0; i < 2; i++) {
    f->p.csus[i].sweep_s = 30;
    f->p.csus[i].sweep_every_s = 2;
  }
  f->a.horizon_ms = 30000; /* no sweep page below what the admitter may have expired */
  fx_poll(f);
  run_ms(f, 3000);
  int64_t cut = rx_wall_ms();
  run_ms(f, 12000 + 500); /* every event up to the cut has committed */
  assert_true(run_until_complete(f, cut, 8000));
  struct pt_lev *v;
  size_t n = pt_ledger_events(&f->p, true, &v), in_overlap = 0, beyond = 0;
  for (size_t i = 0; i < n; i++) {
    int64_t late = v[i].commit_ms - v[i].time_ms;
    if (v[i].time_ms > cut)
      continue;
    in_overlap += late > 1500 && late < 4500;
    beyond += late > 6500;
  }
  free(v);
  print_message("late within the overlap %zu, beyond it %zu, first seen on a sweep %llu\n",
                in_overlap, beyond, (unsigned long long)f->a.first_on_sweep);
  assert_true(in_overlap > 0 && beyond > 0);
  check_ledger(f, cut);
  assert_true(f->a.sweep_pages > 0 && f->a.sweep_checks == f->a.sweep_pages);
  assert_true(f->a.first_on_sweep > 0); /* the sweep found what the overlap could not */
  uint64_t sweeps = 0;
  for (size_t i = 0; i < pl_poll_lanes(f->poll); i++)
    sweeps += lane_stats(f, i).sweeps;
  assert_true(sweeps > 0);
  fx_free(f);
}

/* Overlap windows (pages of 24 rows over 5 s, each page answered up to 100 ms late, polls every
 * 200 ms) still running when the regular windows move the cursor: the cursor is reported as it
 * moves, but never past what a running overlap window reads (the admitter would expire ids that
 * window then admits a second time). */
static void test_overlap_holds_cursor(void **state) {
  struct fx *f = fx_new(2, 400, NULL);
  f->a.delay_ms = 100;
  f->a.horizon_ms = 5000; /* overlap_s: no overlap page below the reported cursor - overlap_s */
  fx_poll(f);
  int64_t start = rx_wall_ms();
  run_ms(f, 6000);
  uint64_t overlaps = 0;
  for (size_t i = 0; i < pl_poll_lanes(f->poll); i++) {
    struct pl_poll_stats s = lane_stats(f, i);
    overlaps += s.overlaps;
    int64_t reported = f->a.cursor[(unsigned)atoi(s.csu + 3)][pt_type_index(s.type)];
    assert_true(reported > start + 2000);
  }
  print_message("pages %llu, %llu of them behind the reported cursor; overlaps done %llu\n",
                (unsigned long long)f->a.pages, (unsigned long long)f->a.behind_checks,
                (unsigned long long)overlaps);
  assert_true(overlaps > 0);
  assert_true(f->a.behind_checks > 20);
  fx_free(f);
}

/* The CSU's 1-hour cache of non-empty pages, with late commits, equal timestamps in a new order
 * per query and an admitter that fails every 5th page (so windows are read again): no Search is
 * ever sent twice, and nothing is lost. */
static void test_stale_cache(void **state) {
  struct fx *f = fx_new(2, 100,
                        "events: {stale_cache: true, late_commit_rate: 0.05, "
                        "late_commit_max_s: 3, same_time_every_s: 2, same_time_burst: 40, "
                        "unstable_tie_order: true}\n");
  f->a.fail_every = 5;
  for (unsigned i = 0; i < 2; i++) {
    f->p.csus[i].sweep_s = 20;
    f->p.csus[i].sweep_every_s = 2;
  }
  log_reset(CSR_DEBUG);
  fx_poll(f);
  run_ms(f, 3000);
  int64_t cut = rx_wall_ms();
  run_ms(f, 3000 + 500); /* every event up to the cut has committed */
  assert_true(run_until_complete(f, cut, 10000));
  run_ms(f, 2000); /* one more sweep, over windows read before */
  csr_log_set_level(CSR_INFO);
  check_ledger(f, cut);
  print_message("searches %llu, repeated %llu, failed pages %llu\n",
                (unsigned long long)searches_logged, (unsigned long long)repeated_keys,
                (unsigned long long)f->a.failed);
  assert_true(searches_logged > 50);
  assert_int_equal(repeated_keys, 0);
  assert_true(f->a.failed > 0);
  uint64_t admit_failures = 0;
  for (size_t i = 0; i < pl_poll_lanes(f->poll); i++)
    admit_failures += lane_stats(f, i).admit_failures;
  assert_int_equal(admit_failures, f->a.failed);
  fx_free(f);
}

static uint64_t expected_csu[MAX_CSUS];

static bool others_caught_up(struct fx *f) {
  for (unsigned c = 0; c < f->p.n; c++)
    if (c != 1 && f->a.per_csu[c] < expected_csu[c])
      return false;
  return true;
}

static bool all_caught_up(struct fx *f) {
  for (unsigned c = 0; c < f->p.n; c++)
    if (f->a.per_csu[c] < expected_csu[c])
      return false;
  return true;
}

/* 429s with Retry-After, 503s, timeouts and malformed pages on CSU 1's Searches: CSU 1 backs off
 * and still gets everything; the other CSUs never wait for it. */
static void test_faults_one_csu(void **state) {
  struct fx *f = fx_new(3, 150,
                        "endpoints:\n"
                        "  search: {error_rate: 0.12, errors: [429, 503], retry_after_s: 1,\n"
                        "           timeout_rate: 0.05, malformed_rate: 0.15, csus: [1]}\n");
  f->opts.timeout_ms = 600;
  log_reset(CSR_INFO);
  fx_poll(f);
  run_ms(f, 1500);
  f->sampling = true;
  run_ms(f, 3000);
  f->sampling = false;
  sim_csus_stop(f->p.t.sim.csus);
  struct pt_lev *v;
  size_t n = pt_ledger_events(&f->p, true, &v);
  memset(expected_csu, 0, sizeof(expected_csu));
  for (size_t i = 0; i < n; i++)
    expected_csu[v[i].csu]++;
  free(v);
  assert_true(run_until(f, others_caught_up, 4000));
  assert_true(run_until(f, all_caught_up, 30000));
  check_ledger(f, INT64_MAX);
  for (size_t i = 0; i < pl_poll_lanes(f->poll); i++) {
    struct pl_poll_stats s = lane_stats(f, i);
    if (strcmp(s.csu, "csu1") == 0)
      continue;
    assert_int_equal(s.errors, 0);
  }
  uint64_t errors = lane_stats(f, 2).errors + lane_stats(f, 3).errors;
  uint64_t searches = lane_stats(f, 2).searches + lane_stats(f, 3).searches;
  print_message("csu1 searches %llu, errors %llu, worst lag csu0 %.2f csu1 %.2f csu2 %.2f, csu1 "
                "backoff %llu\n",
                (unsigned long long)searches, (unsigned long long)errors, f->max_lag[0],
                f->max_lag[1], f->max_lag[2], (unsigned long long)f->max_backoff_ms[1]);
  assert_true(errors > 3);
  assert_true(f->max_lag[0] < 4 && f->max_lag[2] < 4);
  assert_true(f->max_backoff_ms[1] > 500); /* Retry-After: 1 s at least after a 429/503 */
  assert_non_null(strstr(logbuf, "\"csu\":\"csu1\""));
  assert_non_null(strstr(logbuf, "malformed JSON"));
  assert_non_null(strstr(logbuf, "status 429"));
  assert_non_null(strstr(logbuf, "status 503"));
  assert_non_null(strstr(logbuf, "\"reason\":\"timeout\""));
  assert_null(strstr(logbuf, "\"csu\":\"csu0\""));
  fx_free(f);
}

/* Every token issued before 2 s dies then: the Searches holding it get a 401, the token is dropped
 * once, one refresh serves them all, and polling goes on. */
static void test_token_revoked(void **state) {
  struct fx *f = fx_new(2, 100, "tokens: {revoke_at_s: 2}\n");
  fx_poll(f);
  run_ms(f, 4000);
  sim_csus_stop(f->p.t.sim.csus);
  assert_true(run_until(f, caught_up, 10000));
  check_ledger(f, INT64_MAX);
  uint64_t unauthorized = 0, errors = 0;
  for (size_t i = 0; i < pl_poll_lanes(f->poll); i++) {
    unauthorized += lane_stats(f, i).unauthorized;
    errors += lane_stats(f, i).errors;
  }
  const struct pl_token_stats *ts = pl_tokens_stats(f->p.tk);
  struct sim_entra_stats es;
  sim_entra_stats(f->p.t.sim.entra, &es);
  print_message("401s %llu, invalidations %llu, fetches %llu\n", (unsigned long long)unauthorized,
                (unsigned long long)ts->invalidations, (unsigned long long)ts->fetches);
  assert_true(unauthorized >= 1);
  assert_true(es.rejected_revoked >= 1);
  assert_int_equal(ts->invalidations, 1);
  assert_int_equal(ts->fetches, 2);
  assert_int_equal(errors, 0);
  fx_free(f);
}

/* ops->full says yes for 2 s: no Search reaches the CSU meanwhile, then polling catches up. */
static void test_backpressure(void **state) {
  struct fx *f = fx_new(2, 60, NULL);
  f->a.delay_ms = 100;
  fx_poll(f);
  run_ms(f, 1500);
  f->a.full = 1;
  run_ms(f, 400); /* the Searches in flight finish, their pages are answered */
  uint64_t searches = pt_search_requests(&f->p), pages = f->a.pages, calls = f->a.full_calls;
  run_ms(f, 2000);
  assert_int_equal(pt_search_requests(&f->p), searches);
  assert_int_equal(f->a.pages, pages);
  assert_true(f->a.full_calls > calls); /* it kept asking, tick by tick */
  sim_csus_stop(f->p.t.sim.csus);
  assert_true(f->a.ids.n < pt_generated(&f->p));
  f->a.full = 0;
  pl_poll_resume(f->poll);
  assert_true(run_until(f, caught_up, 10000));
  assert_true(pt_search_requests(&f->p) > searches);
  check_ledger(f, INT64_MAX);
  fx_free(f);
}

/* CSU 0 generates 10x what the others do, with 2 Search slots and 20 ms per Search: every CSU's
 * cursor stays near now. */
static void test_round_robin(void **state) {
  struct fx *f = fx_new(4, 80, "endpoints:\n  search: {latency_ms: 20}\n");
  f->p.t.sim.csus->csu[0].rate = 200;
  f->opts.max_searches = 2;
  fx_poll(f);
  run_ms(f, 2000);
  f->sampling = true;
  run_ms(f, 4000);
  f->sampling = false;
  sim_csus_stop(f->p.t.sim.csus);
  assert_true(run_until(f, caught_up, 10000));
  check_ledger(f, INT64_MAX);
  print_message("worst lag: %.2f %.2f %.2f %.2f; csu0 %llu events, csu1 %llu\n", f->max_lag[0],
                f->max_lag[1], f->max_lag[2], f->max_lag[3], (unsigned long long)f->a.per_csu[0],
                (unsigned long long)f->a.per_csu[1]);
  assert_true(f->a.per_csu[0] > 5 * f->a.per_csu[1]);
  for (unsigned c = 0; c < 4; c++)
    assert_true(f->max_lag[c] < 4);
  fx_free(f);
}

static bool holds_page(struct fx *f) {
  return f->a.nheld > 0;
}

/* Stop with Searches in flight (300 ms each) and a page held by the admitter: the stop waits for
 * the page's answer, no callback follows the stop, and the loop closes clean. */
static void test_stop_mid_flight(void **state) {
  struct fx *f = fx_new(2, 100, "endpoints:\n  search: {latency_ms: 300}\n");
  f->a.hold = true;
  fx_poll(f);
  assert_true(run_until(f, holds_page, 5000));
  run_ms(f, 100);
  f->a.stop_called = true;
  pl_poll_stop(f->poll, on_stopped, f);
  pl_poll_stop(f->poll, on_stopped, f); /* ignored */
  run_ms(f, 500);
  assert_int_equal(f->stopped, 0); /* the admitter still holds a page */
  answer_held(&f->a);
  assert_true(run_until(f, is_stopped, 5000));
  assert_int_equal(f->stopped, 1);
  assert_int_equal(f->a.after_stop, 0);
  f->poll = NULL;
  run_ms(f, 400);
  assert_int_equal(f->stopped, 1);
  assert_int_equal(f->a.after_stop, 0);
  fx_free(f);
}

/* The API's refusals; a cursor from the store starts its lane at cursor - overlap; stop before
 * start. */
static void test_api(void **state) {
  struct fx *f = fx_new(1, 0, NULL);
  struct pl_poll *p = NULL;
  struct pl_poll_ops no_page = {0};
  assert_int_equal(pl_poll_create(&f->p.t.loop, &f->p.t.http, f->p.csus, 0, pt_tokens_for, &f->p,
                                  NULL, &OPS, &f->a, &p),
                   UV_EINVAL);
  assert_int_equal(pl_poll_create(&f->p.t.loop, &f->p.t.http, f->p.csus, 1, pt_tokens_for, &f->p,
                                  NULL, &no_page, &f->a, &p),
                   UV_EINVAL);
  /* stop before start */
  fx_create(f);
  fx_stop_poll(f);
  f->stopped = 0;
  f->a.stop_called = false;

  log_reset(CSR_DEBUG);
  fx_create(f);
  int64_t cursor = rx_wall_ms() - 3000;
  assert_int_equal(pl_poll_set_cursor(f->poll, "csu0", "Checkout", cursor - 1000), 0);
  assert_int_equal(pl_poll_set_cursor(f->poll, "csu0", "Checkout", cursor), 0);
  assert_int_equal(pl_poll_set_cursor(f->poll, "csu0", "Checkout", cursor - 2000), 0); /* kept */
  assert_int_equal(pl_poll_set_cursor(f->poll, "csu0", "Refund", cursor), UV_ENOENT);
  assert_int_equal(pl_poll_set_cursor(f->poll, "houston", "Checkout", cursor), UV_ENOENT);
  assert_int_equal(pl_poll_start(f->poll), 0);
  assert_int_equal(pl_poll_start(f->poll), UV_EALREADY);
  assert_int_equal(pl_poll_set_cursor(f->poll, "csu0", "Checkout", cursor), UV_EBUSY);
  assert_int_equal(pl_poll_lanes(f->poll), 2);
  struct pl_poll_stats s;
  assert_int_equal(pl_poll_stats(f->poll, 2, &s), UV_EINVAL);
  run_ms(f, 1500);
  char from[CSR_TIME_BUF], expect[64];
  csr_time_format_seconds(cursor - 5000, from, sizeof(from));
  snprintf(expect, sizeof(expect), "csu0|Checkout|%s|", from);
  bool found = false;
  for (size_t i = 0; i < search_keys.cap && !found; i++)
    found = search_keys.slots[i] && strncmp(search_keys.slots[i], expect, strlen(expect)) == 0;
  assert_true(found);
  s = lane_stats(f, 1);
  assert_string_equal(s.type, "Checkout");
  assert_true(s.cursor_ms > cursor); /* an empty window completes and moves it */
  assert_true(s.windows > 0 && s.pages == 0);
  fx_free(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_api),
      cmocka_unit_test(test_four_csus),
      cmocka_unit_test(test_equal_timestamps),
      cmocka_unit_test(test_late_commits),
      cmocka_unit_test(test_stale_cache),
      cmocka_unit_test(test_overlap_holds_cursor),
      cmocka_unit_test(test_faults_one_csu),
      cmocka_unit_test(test_token_revoked),
      cmocka_unit_test(test_backpressure),
      cmocka_unit_test(test_round_robin),
      cmocka_unit_test(test_stop_mid_flight),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
