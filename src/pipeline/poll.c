/* The poll stage (SPEC §3; the design is in pipeline.h, "Poll stage"): one lane per (CSU, event
 * type), Searches started round-robin under one bound, the page handed to the admitter and its
 * answer, backoff, sweeps, stats and stop. What the next Search of a window is comes from
 * poll_window.c; sending it (token, request, answer) from poll_search.c.
 *
 * A lane is IDLE (maybe with a window under way), TOKEN (waiting for its token), SEARCH (the
 * request in flight) or PAGE (the admitter holds its page). One timer wakes the dispatcher at the
 * earliest moment any idle lane could start; completions dispatch directly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/log.h"
#include "poll_lane.h"

#define DEFAULT_MAX_SEARCHES 4
#define DEFAULT_WIDE_TOP     1000
#define DEFAULT_MAX_PASSES   32
#define DEFAULT_BACKOFF_BASE 500
#define DEFAULT_BACKOFF_CAP  30000
#define MAX_BACKOFF_EXP      20 /* base * 2^20 is past any sane cap already */
#define NEVER                UINT64_MAX

static void finish_stop(struct pl_poll *p);

/* ---------------------------------------------------------------------------------------------- */
/* Small helpers */
/* ---------------------------------------------------------------------------------------------- */

/* The CSU's poll_interval_ms and sweep_every_s (in ms), with their defaults for 0. */
static uint64_t interval_ms(const struct csr_csu *cf) {
  return cf->poll_interval_ms ? cf->poll_interval_ms : 1000;
}

static uint64_t sweep_every_ms(const struct csr_csu *cf) {
  return (cf->sweep_every_s ? cf->sweep_every_s : 1) * 1000;
}

static uint64_t max_u64(uint64_t a, uint64_t b) {
  return a > b ? a : b;
}

/* The keyset $top of each kind of window. Regular windows page with page_size. The re-reading
 * windows (overlap, sweep) take an earlier window's To, so their (From, To) may be one a regular
 * window's keyset already sent, which the CSU would answer from its cache (W-C3): each pages with
 * a $top of its own next to page_size (below it, never asking for more than configured, unless
 * page_size is too small for that). Dense passes use none of the three (pass_top). */
static unsigned keyset_top(unsigned page_size, int win) {
  unsigned k = win == WIN_OVERLAP ? 1 : win == WIN_SWEEP ? 2 : 0;
  return page_size > 2 ? page_size - k : page_size + k;
}

/* The paging of window `win` of the lane. */
static struct pl__paging paging(const struct lane *l, int win) {
  const struct pl_poll *p = l->p;
  unsigned size = l->c->conf->page_size ? l->c->conf->page_size : 250;
  unsigned a = keyset_top(size, WIN_REGULAR), b = keyset_top(size, WIN_SWEEP);
  return (struct pl__paging){.page_size = keyset_top(size, win),
                             .wide_top = p->opts.wide_top,
                             .max_passes = p->opts.max_passes,
                             .keyset_lo = a < b ? a : b,
                             .keyset_hi = a < b ? b : a,
                             .kind = (unsigned)win,
                             .kinds = N_WINDOWS};
}

static uint64_t backoff(struct pl_poll *p, unsigned failures) {
  unsigned exp = failures < MAX_BACKOFF_EXP ? failures : MAX_BACKOFF_EXP;
  return rx_backoff_ms(exp, p->opts.backoff_base_ms, p->opts.backoff_cap_ms, &p->rng);
}

static void set_error(struct lane *l, const char *why) {
  snprintf(l->st.last_error, sizeof(l->st.last_error), "%s", why);
}

/* To of a window started at wall time `wall`: now - settle, whole seconds. */
static int64_t settled_to(const struct lane *l, int64_t wall) {
  return pl__floor_s(wall - (int64_t)l->c->conf->settle_ms);
}

/* From of the next regular window: the cursor. The overlap behind it has a window of its own. */
static int64_t regular_from(const struct lane *l) {
  return pl__floor_s(l->cursor_ms);
}

/* Where re-reading starts: cursor - overlap_s, or the cursor of a lane still at start_from. */
static int64_t reread_from(const struct lane *l) {
  int64_t overlap = l->fresh ? 0 : (int64_t)l->c->conf->overlap_s * 1000;
  return pl__floor_s(l->cursor_ms - overlap);
}

/* The monotonic time at which settled_to() will exceed `after_ms`. */
static uint64_t when_to_passes(const struct lane *l, int64_t after_ms, uint64_t now, int64_t wall) {
  if (after_ms == INT64_MIN)
    return now; /* no window yet */
  int64_t at = pl__floor_s(after_ms) + 1000 + (int64_t)l->c->conf->settle_ms;
  return at > wall ? now + (uint64_t)(at - wall) : now;
}

static int64_t max_i64(int64_t a, int64_t b) {
  return a > b ? a : b;
}

/* ---------------------------------------------------------------------------------------------- */
/* Failures and the cursor */
/* ---------------------------------------------------------------------------------------------- */

static void report_cursor(struct lane *l);

/* Drops the lane's current window (it starts over later); a sweep is begun again for the same due
 * time. The caller reports the cursor last (report_cursor), which a dropped sweep may have held
 * back. */
static void abandon_window(struct lane *l) {
  if (l->cur == WIN_SWEEP) /* a dropped overlap window is not redone: the next one covers it */
    l->next_sweep = l->sweep_due_ms;
  pl__win_end(&l->win[l->cur]);
}

/* A Search failed: the CSU backs off, the window starts over. */
void pl__lane_search_failed(struct lane *l, const char *why, long retry_after_ms) {
  struct pl_poll *p = l->p;
  struct csu *c = l->c;
  uint64_t delay = backoff(p, c->failures);
  if (retry_after_ms > 0 && (uint64_t)retry_after_ms > delay)
    delay = (uint64_t)retry_after_ms;
  c->failures++;
  c->backoff_until = max_u64(c->backoff_until, rx_now_ms(p->loop) + delay);
  l->st.errors++;
  set_error(l, why);
  abandon_window(l);
  l->state = L_IDLE;
  CSR_LOG(CSR_WARN, "poll: search failed", CSR_KS("csu", c->conf->name), CSR_KS("type", l->type),
          CSR_KS("reason", why), CSR_KI("failures", c->failures), CSR_KI("backoff_ms", delay));
  report_cursor(l);
}

/* The window cannot go on (the admitter failed a page, a dense second stayed incomplete): this
 * lane alone backs off. */
static void lane_failed(struct lane *l, const char *why) {
  struct pl_poll *p = l->p;
  uint64_t delay = backoff(p, l->failures);
  l->failures++;
  l->retry_at = rx_now_ms(p->loop) + delay;
  set_error(l, why);
  abandon_window(l);
  CSR_LOG(CSR_WARN, "poll: window failed", CSR_KS("csu", l->c->conf->name), CSR_KS("type", l->type),
          CSR_KS("reason", why), CSR_KI("backoff_ms", delay));
  report_cursor(l);
}

/* Gives the admitter the cursor, except while a sweep of the lane is under way. The admitter
 * expires the dedupe set's ids below cursor - max(overlap, sweep), and a sweep reads from where it
 * began (now - sweep_s), page after page, while regular windows go on moving the cursor: a lane
 * catching up on a backlog can move it more than sweep_s past the sweep's next page, whose rows
 * would then be admitted a second time (measured: 12,552 of 60,000 Checkouts after a 60 s cij
 * outage). Held back, the cursor cannot expire anything a running sweep may still read; it is
 * reported when the sweep ends. A cursor reported late only means more re-reading after a crash.
 * An overlap window re-reads (its To - overlap_s, its To] behind the cursor: while it runs, its To
 * is reported instead, which keeps every id it reads and makes a restart re-read its span. Held
 * back altogether, the cursor would never be reported, since each overlap window follows another.
 */
static void report_cursor(struct lane *l) {
  struct pl_poll *p = l->p;
  int64_t cursor = l->cursor_ms;
  const struct pl__win *overlap = &l->win[WIN_OVERLAP];
  if (overlap->active && overlap->to_ms < cursor)
    cursor = overlap->to_ms;
  if (l->win[WIN_SWEEP].active || cursor <= l->reported_ms || p->stopping ||
      p->ops.on_cursor == NULL)
    return;
  l->reported_ms = cursor;
  p->ops.on_cursor(p->arg, l->c->conf, l->type, cursor);
}

static void move_cursor(struct lane *l, int64_t mark) {
  if (mark <= l->cursor_ms)
    return;
  l->cursor_ms = mark;
  l->fresh = false;
  report_cursor(l);
}

/* ---------------------------------------------------------------------------------------------- */
/* The page */
/* ---------------------------------------------------------------------------------------------- */

static void drop_page(struct lane *l) {
  pl__rows_clear(&l->rows);
  l->page.n = 0;
}

/* The admitter's answer (or an empty page): the window's next step. */
static void after_page(struct lane *l, int result) {
  struct pl__win *w = &l->win[l->cur];
  bool regular = l->cur == WIN_REGULAR;
  int64_t mark = INT64_MIN;
  const char *why = "";
  l->state = L_IDLE;
  if (result < 0) {
    char msg[128];
    snprintf(msg, sizeof(msg), "admitter: %s", csr_strerror(result));
    l->st.admit_failures++;
    drop_page(l);
    lane_failed(l, msg);
    return;
  }
  l->failures = 0;
  struct pl__paging pg = paging(l, l->cur);
  bool was_dense = w->dense;
  unsigned pass = w->pass;
  enum pl__step step = pl__win_advance(w, &pg, &l->q, l->rows.ev, l->rows.n, &mark, &why);
  if (step == PL__STEP_NEXT && w->dense && (!was_dense || w->pass != pass)) {
    l->st.dense_seconds += !was_dense;
    l->st.dense_passes++;
  }
  drop_page(l);
  if (step == PL__STEP_FAIL) {
    l->st.errors++;
    lane_failed(l, why);
    return;
  }
  if (step == PL__STEP_DONE) {
    l->st.sweeps += l->cur == WIN_SWEEP;
    l->st.windows += regular;
    l->st.overlaps += l->cur == WIN_OVERLAP;
    pl__win_end(w);
  }
  /* Last: the admitter may stop us from inside. Only regular windows move the cursor; a sweep's
   * or an overlap's end reports what it held back. */
  if (regular && mark != INT64_MIN)
    move_cursor(l, mark);
  else if (!regular && step == PL__STEP_DONE)
    report_cursor(l);
}

static void on_page_done(struct rx_fut *fut) {
  struct lane *l = RX_CONTAINER_OF(fut, struct lane, done);
  struct pl_poll *p = l->p;
  if (p->stopping) {
    drop_page(l);
    l->state = L_IDLE;
    pl__poll_stop_step(p);
    return;
  }
  after_page(l, fut->result);
  pl__poll_schedule(p);
}

void pl_poll_page_done(struct pl_poll_page *page, int result) {
  struct lane *l = page != NULL ? page->_lane : NULL;
  if (l == NULL || l->state != L_PAGE || rx_fut_pending(&l->done))
    return;
  rx_fut_init(&l->done, l->p->loop, on_page_done);
  rx_fut_resolve(&l->done, result);
}

/* Hands a parsed page over, or steps past an empty one. */
void pl__lane_deliver(struct lane *l) {
  struct pl_poll *p = l->p;
  l->page = (struct pl_poll_page){.csu = l->c->conf,
                                  .type = l->type,
                                  .sweep = l->cur == WIN_SWEEP,
                                  .from_ms = l->q.from_ms,
                                  .to_ms = l->q.to_ms,
                                  .n = l->rows.n,
                                  .events = l->rows.ev,
                                  ._lane = l};
  if (l->page.n == 0) {
    after_page(l, 0);
    return;
  }
  l->state = L_PAGE;
  l->st.pages++;
  l->st.events += l->page.n;
  p->ops.on_page(p->arg, &l->page);
}

/* ---------------------------------------------------------------------------------------------- */
/* Dispatch */
/* ---------------------------------------------------------------------------------------------- */

/*
 * When the next regular window may start. Search takes whole seconds, so an event is in a window
 * only once its second has ended (on the settled clock, wall - settle_ms). Windows therefore start
 * just after such a boundary: one poll_interval_ms later, moved back to the boundary it passes.
 * An event then waits at most about poll_interval_ms (plus settle_ms) for its window, instead of
 * up to a second more when the ticks fall just before the boundaries.
 */
static uint64_t next_regular(const struct csr_csu *cf, uint64_t now, int64_t wall) {
  enum { PAST_BOUNDARY_MS = 5 };
  uint64_t iv = interval_ms(cf);
  int64_t settled = wall - (int64_t)cf->settle_ms;
  uint64_t into = (uint64_t)(settled - pl__floor_s(settled)); /* ms past the last boundary */
  uint64_t period = iv < 1000 ? iv : 1000;
  uint64_t early = (into + iv) % period; /* how far past a boundary the plain tick would land */
  uint64_t delay = iv - early + PAST_BOUNDARY_MS;
  return now + (delay > iv + PAST_BOUNDARY_MS ? iv : delay);
}

/* With each regular window (cursor, To], the overlap behind it, (cursor - overlap_s, cursor], is
 * re-read by a window of its own. Its To is an earlier window's To, but its From is new with every
 * cursor and its $top is its own (keyset_top), so it repeats no query. Each cursor gets one overlap
 * window, begun once, so a regular window that starts over (a failed page) does not send it again,
 * and one that fails is not redone (the next covers all but its oldest second). While one is still
 * paging, the next regular window starts without another. */
static void begin_overlap(struct lane *l) {
  int64_t from = reread_from(l), to = regular_from(l);
  if (!l->win[WIN_OVERLAP].active && from < to && to > l->overlap_to) {
    pl__win_begin(&l->win[WIN_OVERLAP], true, from, to);
    l->overlap_to = to;
  }
}

/* Whether a sweep may begin once due: each takes the To of the last regular window, one it has
 * not swept to before (a sweep begun again after a failed page would otherwise repeat its first
 * query, the stale cache's answer). */
static bool sweep_ready(const struct lane *l) {
  return l->c->conf->sweep_s > 0 && !l->win[WIN_SWEEP].active && l->last_to_ms > l->sweep_to;
}

/*
 * A due sweep reads (due - sweep_s, To of the last window]: what the regular windows read since,
 * it leaves to them, and its $top is its own (keyset_top). Skipped when the next overlap window
 * reads all of it anyway. Sweeps are due every sweep_every_s from the last due time, not from
 * when the last one began, and each reads sweep_s back from its due time: a sweep begins later
 * than due (re-reads wait for the quiet half, a dropped sweep starts over), and counted from the
 * begin those delays added up, leaving rows committed up to sweep_s - sweep_every_s late unread.
 * Never below the reported cursor - sweep_s: the admitter may have expired those ids (see
 * report_cursor).
 */
static void begin_sweep(struct lane *l, uint64_t now, int64_t wall) {
  const struct csr_csu *cf = l->c->conf;
  uint64_t due = l->next_sweep, every = sweep_every_ms(cf);
  int64_t back = (int64_t)cf->sweep_s * 1000;
  int64_t from = pl__floor_s(max_i64(wall - (int64_t)(now - due) - back, l->reported_ms - back));
  l->sweep_due_ms = due;
  l->next_sweep = due + every > now ? due + every : now + every;
  if (from < reread_from(l) && from < l->last_to_ms) {
    pl__win_begin(&l->win[WIN_SWEEP], true, from, l->last_to_ms);
    l->sweep_to = l->last_to_ms;
  }
}

/*
 * Which window the lane would search now (beginning one if it is due), or -1.
 *
 * New events first: each second's rows arrive together at the boundary, and an event at the start
 * of a second has already waited a whole poll interval. Re-reads (the overlap, the sweep), which
 * only find late commits, hold their pages back until half a poll interval after the last regular
 * window began (quiet_at), when that second's burst is mostly admitted and delivered, oldest first.
 * Measured at 5,000 ev/s on 32 lanes with overlap_s 3 and sweep_s 60: the re-read rows were seven
 * times the new ones, and each new second's rows waited behind them.
 */
static int lane_pick(struct lane *l, uint64_t now, int64_t wall) {
  const struct csr_csu *cf = l->c->conf;
  if (l->state != L_IDLE || l->retry_at > now)
    return -1;
  if (l->win[WIN_REGULAR].active)
    return WIN_REGULAR;
  int64_t to = settled_to(l, wall);
  if (now >= l->next_poll && to > l->cursor_ms && to > l->last_to_ms) {
    begin_overlap(l);
    pl__win_begin(&l->win[WIN_REGULAR], false, regular_from(l), to);
    l->last_to_ms = to;
    l->next_poll = next_regular(cf, now, wall);
    l->quiet_at = now + interval_ms(cf) / 2;
    return WIN_REGULAR;
  }
  if (now < l->quiet_at)
    return -1;
  if (now >= l->next_sweep && sweep_ready(l))
    begin_sweep(l, now, wall);
  bool overlap = l->win[WIN_OVERLAP].active, sweep = l->win[WIN_SWEEP].active;
  if (overlap && sweep) { /* in turn: an overlap window begins with every regular one */
    l->sweep_turn = !l->sweep_turn;
    return l->sweep_turn ? WIN_SWEEP : WIN_OVERLAP;
  }
  return overlap ? WIN_OVERLAP : sweep ? WIN_SWEEP : -1;
}

/* The earliest monotonic time the idle lane could start a Search, or NEVER. */
static uint64_t lane_wake(const struct lane *l, uint64_t now, int64_t wall) {
  if (l->state != L_IDLE)
    return NEVER;
  uint64_t gate = max_u64(max_u64(l->retry_at, l->c->backoff_until), now);
  if (l->win[WIN_REGULAR].active)
    return gate;
  uint64_t regular = max_u64(max_u64(gate, l->next_poll),
                             when_to_passes(l, max_i64(l->cursor_ms, l->last_to_ms), now, wall));
  uint64_t reread = NEVER;
  if (l->win[WIN_OVERLAP].active || l->win[WIN_SWEEP].active)
    reread = max_u64(gate, l->quiet_at);
  else if (sweep_ready(l))
    reread = max_u64(max_u64(gate, l->quiet_at), l->next_sweep);
  return reread < regular ? reread : regular;
}

/* Points the idle lane at window `win` and its next query (l->q), before held() weighs it. */
static void aim(struct lane *l, int win) {
  l->cur = win;
  struct pl__paging pg = paging(l, win);
  pl__win_query(&l->win[win], &pg, &l->q);
}

/* Sends the query aim() set up. */
static void start_search(struct lane *l) {
  l->retried = false;
  pl__lane_start_token(l);
}

/* Whether the admitter has no room for what the Searches in flight may bring (a page is admitted
 * whole when it comes) plus `next_rows` (the $top of the Search about to start, or 0). Asked before
 * each Search rather than once per dispatch: at 10,000 ev/s, 32 Searches of 250 new rows each,
 * started together, took the heap to 127 MB under a mark of 80 when only the heap already in use
 * was weighed. */
static bool held(struct pl_poll *p, uint64_t next_rows) {
  if (p->ops.full == NULL)
    return false;
  p->held_full = p->ops.full(p->arg, p->rows_in_flight + next_rows) != 0;
  return p->held_full;
}

/* One Search per CSU per round, CSUs in turn from where the last round stopped. */
static void start_ready(struct pl_poll *p, uint64_t now, int64_t wall) {
  bool progress = true;
  unsigned max = p->opts.max_searches;
  while (progress && p->inflight < max && !p->stopping) {
    progress = false;
    size_t first = p->rr;
    for (size_t k = 0; k < p->n_csus && p->inflight < max; k++) {
      size_t ci = (first + k) % p->n_csus;
      struct csu *c = &p->csus[ci];
      if (c->backoff_until > now)
        continue;
      for (size_t j = 0; j < c->n_lanes; j++) {
        size_t li = (c->rr + j) % c->n_lanes;
        int win = lane_pick(&c->lanes[li], now, wall);
        if (win < 0)
          continue;
        struct lane *l = &c->lanes[li];
        aim(l, win);
        if (held(p, l->q.top))
          return; /* the picked window stays begun: the next dispatch picks it again */
        c->rr = (li + 1) % c->n_lanes;
        p->rr = (ci + 1) % p->n_csus;
        start_search(l);
        progress = true;
        break;
      }
    }
  }
}

/* Starts what can start; returns the delay until the next wake-up, or NEVER. */
static uint64_t dispatch(struct pl_poll *p) {
  uint64_t now = rx_now_ms(p->loop);
  int64_t wall = rx_wall_ms();
  if (p->inflight >= p->opts.max_searches)
    return NEVER; /* a completion dispatches again */
  if (held(p, 0))
    return p->min_interval; /* the next tick looks again, or pl_poll_resume() */
  if (p->stopping)
    return NEVER;
  start_ready(p, now, wall);
  if (p->held_full)
    return p->stopping ? NEVER : p->min_interval;
  if (p->inflight >= p->opts.max_searches)
    return NEVER;
  uint64_t wake = NEVER;
  for (size_t i = 0; i < p->n_lanes; i++) {
    uint64_t at = lane_wake(&p->lanes[i], now, wall);
    wake = at < wake ? at : wake;
  }
  if (wake == NEVER)
    return NEVER;
  return wake > now ? wake - now : 1; /* a lane that could start would have: no busy loop */
}

static uint64_t on_wake(struct rx_timer *timer) {
  pl__poll_schedule(timer->data);
  return RX_TIMER_STOP;
}

void pl__poll_schedule(struct pl_poll *p) {
  if (p->stopping || !p->started)
    return;
  uint64_t delay = dispatch(p);
  if (p->stopping)
    return; /* stopped from inside ops->full() */
  if (delay == NEVER)
    rx_timer_stop(&p->wake);
  else if (rx_timer_start(&p->wake, on_wake, delay) < 0)
    CSR_LOG(CSR_ERROR, "poll: cannot arm the timer");
}

/* ---------------------------------------------------------------------------------------------- */
/* Public API */
/* ---------------------------------------------------------------------------------------------- */

static void apply_defaults(struct pl_poll_opts *o) {
  if (o->max_searches == 0)
    o->max_searches = DEFAULT_MAX_SEARCHES;
  if (o->wide_top == 0)
    o->wide_top = DEFAULT_WIDE_TOP;
  if (o->max_passes == 0)
    o->max_passes = DEFAULT_MAX_PASSES;
  if (o->backoff_base_ms == 0)
    o->backoff_base_ms = DEFAULT_BACKOFF_BASE;
  if (o->backoff_cap_ms == 0)
    o->backoff_cap_ms = DEFAULT_BACKOFF_CAP;
  if (o->seed == 0)
    o->seed = uv_hrtime() | 1;
}

static int make_lanes(struct pl_poll *p, const struct csr_csu *csus, pl_poll_tokens_fn tokens,
                      void *tokens_arg) {
  size_t n = 0;
  for (size_t i = 0; i < p->n_csus; i++) {
    if (csus[i].n_event_types == 0 || csus[i].name == NULL || csus[i].url == NULL ||
        csus[i].oun == NULL)
      return UV_EINVAL;
    n += csus[i].n_event_types;
  }
  p->csus = calloc(p->n_csus, sizeof(*p->csus));
  p->lanes = calloc(n, sizeof(*p->lanes));
  if (p->csus == NULL || p->lanes == NULL)
    return UV_ENOMEM;
  p->n_lanes = n;
  p->min_interval = NEVER;
  struct lane *l = p->lanes;
  for (size_t i = 0; i < p->n_csus; i++) {
    struct csu *c = &p->csus[i];
    c->conf = &csus[i];
    c->tokens = tokens(tokens_arg, &csus[i]);
    if (c->tokens == NULL)
      return UV_EINVAL;
    c->lanes = l;
    c->n_lanes = csus[i].n_event_types;
    uint64_t iv = interval_ms(&csus[i]);
    p->min_interval = iv < p->min_interval ? iv : p->min_interval;
    for (size_t j = 0; j < c->n_lanes; j++, l++) {
      l->p = p;
      l->c = c;
      l->type = csus[i].event_types[j];
      l->last_to_ms = INT64_MIN;
      l->overlap_to = INT64_MIN;
      l->sweep_to = INT64_MIN;
      l->st.csu = csus[i].name;
      l->st.type = l->type;
    }
  }
  return 0;
}

static void free_poll(struct pl_poll *p) {
  for (size_t i = 0; p->lanes != NULL && i < p->n_lanes; i++) {
    struct lane *l = &p->lanes[i];
    for (int w = 0; w < N_WINDOWS; w++)
      pl__win_end(&l->win[w]);
    pl__lane_release_req(l);
    pl__rows_free(&l->rows);
    free(l->token);
    free(l->url);
    free(l->body);
  }
  free(p->lanes);
  free(p->csus);
  free(p);
}

int pl_poll_create(struct rx_loop *loop, struct rx_http *http, const struct csr_csu *csus,
                   size_t n_csus, pl_poll_tokens_fn tokens, void *tokens_arg,
                   const struct pl_poll_opts *opts, const struct pl_poll_ops *ops, void *arg,
                   struct pl_poll **out) {
  if (loop == NULL || http == NULL || csus == NULL || n_csus == 0 || tokens == NULL ||
      ops == NULL || ops->on_page == NULL || out == NULL)
    return UV_EINVAL;
  struct pl_poll *p = calloc(1, sizeof(*p));
  if (p == NULL)
    return UV_ENOMEM;
  p->loop = loop;
  p->http = http;
  p->ops = *ops;
  p->arg = arg;
  if (opts != NULL)
    p->opts = *opts;
  apply_defaults(&p->opts);
  p->rng = p->opts.seed;
  p->n_csus = n_csus;
  int rc = make_lanes(p, csus, tokens, tokens_arg);
  if (rc == 0)
    rc = csr_jw_init(&p->jw);
  else
    free_poll(p);
  if (rc < 0)
    return rc == UV_EINVAL || rc == UV_ENOMEM ? rc : UV_ENOMEM;
  /* the timer last: an initialised handle must be closed, never just freed */
  if ((rc = rx_timer_init(&p->wake, loop)) < 0) {
    csr_jw_free(&p->jw);
    free_poll(p);
    return rc;
  }
  p->wake.data = p;
  *out = p;
  return 0;
}

int pl_poll_set_cursor(struct pl_poll *p, const char *csu_name, const char *type,
                       int64_t cursor_ms) {
  if (p == NULL || csu_name == NULL || type == NULL)
    return UV_EINVAL;
  if (p->started || p->stopping)
    return UV_EBUSY;
  for (size_t i = 0; i < p->n_lanes; i++) {
    struct lane *l = &p->lanes[i];
    if (strcmp(l->c->conf->name, csu_name) != 0 || strcmp(l->type, type) != 0)
      continue;
    if (!l->cursor_set || cursor_ms > l->cursor_ms)
      l->cursor_ms = cursor_ms;
    l->cursor_set = true;
    return 0;
  }
  return UV_ENOENT;
}

/* Lane i of n sweeps first (i + 1) / n of sweep_every_s after the start, then every sweep_every_s:
 * lanes that all swept at once read sweep_s of rows each at the same moment (at 5,000 ev/s on 32
 * lanes with sweep_s 60, 300,000 rows), from every CSU at once. */
static uint64_t first_sweep_ms(const struct csr_csu *cf, size_t i, size_t n) {
  return sweep_every_ms(cf) * (i + 1) / n;
}

int pl_poll_start(struct pl_poll *p) {
  if (p == NULL)
    return UV_EINVAL;
  if (p->stopping)
    return UV_ECANCELED;
  if (p->started)
    return UV_EALREADY;
  uint64_t now = rx_now_ms(p->loop);
  int64_t wall = rx_wall_ms();
  for (size_t i = 0; i < p->n_lanes; i++) {
    struct lane *l = &p->lanes[i];
    const struct csr_csu *cf = l->c->conf;
    if (!l->cursor_set)
      l->cursor_ms = cf->start_relative ? wall + cf->start_from_ms : cf->start_from_ms;
    l->fresh = !l->cursor_set;
    l->reported_ms = l->cursor_ms; /* the admitter has it (replayed) or needs none (start) */
    l->next_poll = now;
    l->next_sweep = now + first_sweep_ms(cf, i, p->n_lanes);
  }
  p->started = true;
  return rx_timer_start(&p->wake, on_wake, 0);
}

/* Only a dispatch that stopped at full() waits for this: the callers (every finished event) need
 * not know whether the stage is held, and an unheld stage keeps its timer as it is. */
void pl_poll_resume(struct pl_poll *p) {
  if (p != NULL && p->started && !p->stopping && p->held_full &&
      rx_timer_start(&p->wake, on_wake, 0) < 0)
    CSR_LOG(CSR_ERROR, "poll: cannot arm the timer");
}

size_t pl_poll_lanes(const struct pl_poll *p) {
  return p != NULL ? p->n_lanes : 0;
}

int pl_poll_stats(const struct pl_poll *p, size_t i, struct pl_poll_stats *out) {
  if (p == NULL || out == NULL || i >= p->n_lanes)
    return UV_EINVAL;
  const struct lane *l = &p->lanes[i];
  uint64_t now = rx_now_ms(p->loop);
  uint64_t until = max_u64(l->retry_at, l->c->backoff_until);
  *out = l->st;
  out->cursor_ms = l->cursor_ms;
  out->cursor_lag_s = (double)(rx_wall_ms() - l->cursor_ms) / 1000.0;
  out->backing_off = until > now;
  out->backoff_left_ms = until > now ? until - now : 0;
  out->csu_failures = l->c->failures;
  return 0;
}

void pl__poll_stop_step(struct pl_poll *p) {
  if (--p->pending == 0)
    finish_stop(p);
}

static void on_wake_closed(struct rx_timer *timer) {
  pl__poll_stop_step(timer->data);
}

static void finish_stop(struct pl_poll *p) {
  void (*cb)(void *) = p->stop_cb;
  void *arg = p->stop_arg;
  csr_jw_free(&p->jw);
  free_poll(p);
  if (cb != NULL)
    cb(arg);
}

void pl_poll_stop(struct pl_poll *p, void (*cb)(void *arg), void *arg) {
  if (p == NULL || p->stopping)
    return;
  p->stopping = true;
  p->stop_cb = cb;
  p->stop_arg = arg;
  p->pending = 1; /* the timer's close */
  for (size_t i = 0; i < p->n_lanes; i++) {
    struct lane *l = &p->lanes[i];
    if (l->state == L_IDLE)
      continue;
    p->pending++;
    if (l->state == L_TOKEN)
      pl_tokens_cancel(&l->treq);
    else if (l->state == L_SEARCH)
      rx_http_cancel(&l->req);
    /* L_PAGE: the admitter still answers it */
  }
  rx_timer_close(&p->wake, on_wake_closed);
}
