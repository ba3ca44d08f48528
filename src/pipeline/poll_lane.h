/* The poll stage's lanes, shared by poll.c (windows, pages, dispatch, the stage's life) and
 * poll_search.c (one Search: its token, request and answer). Nothing outside the stage sees them.
 */
#ifndef CSURELAY_PIPELINE_POLL_LANE_H
#define CSURELAY_PIPELINE_POLL_LANE_H

#include "poll_internal.h"

enum lane_state { L_IDLE, L_TOKEN, L_SEARCH, L_PAGE };
enum { WIN_REGULAR, WIN_SWEEP, WIN_OVERLAP, N_WINDOWS };

struct csu {
  const struct csr_csu *conf;
  struct pl_tokens *tokens;
  struct lane *lanes;
  size_t n_lanes;
  size_t rr;              /* the lane to try first next time */
  uint64_t backoff_until; /* monotonic ms */
  unsigned failures;      /* failed Searches in a row */
};

struct lane {
  struct pl_poll *p;
  struct csu *c;
  const char *type;
  enum lane_state state;
  struct pl__win win[N_WINDOWS];
  int cur; /* the window of the Search or page outstanding */
  int64_t cursor_ms;
  int64_t reported_ms;   /* the cursor last given to ops.on_cursor (see report_cursor) */
  bool cursor_set;       /* by pl_poll_set_cursor */
  bool fresh;            /* the cursor is still start_from: no overlap before it */
  int64_t last_to_ms;    /* the latest To of any window of this lane */
  int64_t overlap_to;    /* the To of the last overlap window begun (each cursor gets one) */
  uint64_t next_poll;    /* monotonic ms */
  uint64_t quiet_at;     /* monotonic ms: re-reads (overlap, sweep) wait until then (lane_pick) */
  uint64_t next_sweep;   /* monotonic ms the next sweep is due */
  uint64_t sweep_due_ms; /* the due time the running sweep serves (begin_sweep) */
  bool sweep_turn;       /* overlap and sweep both running: the sweep pages next (lane_pick) */
  int64_t sweep_to;  /* the To of the last sweep begun: the next needs a later one (sweep_ready) */
  uint64_t retry_at; /* the lane's own backoff after a failed page */
  unsigned failures;
  /* the Search */
  struct pl__query q;
  struct pl_token_req treq;
  struct rx_http_req req;
  bool req_live; /* req holds a response or headers to clean up */
  bool retried;  /* this Search already got a fresh token after a 401 */
  char *token;
  char *url;
  char *body;
  /* the page */
  struct pl_poll_page page;
  struct pl__rows rows;
  struct rx_fut done;
  struct pl_poll_stats st;
};

struct pl_poll {
  struct rx_loop *loop;
  struct rx_http *http;
  struct pl_poll_ops ops;
  void *arg;
  struct pl_poll_opts opts;
  struct csu *csus;
  size_t n_csus;
  struct lane *lanes;
  size_t n_lanes;
  struct rx_timer wake;
  struct csr_jw jw;
  unsigned inflight; /* lanes in TOKEN or SEARCH */
  uint64_t rows_in_flight; /* the $top of their queries, summed */
  size_t rr;         /* the CSU to try first next round */
  uint64_t rng;
  uint64_t min_interval;
  bool held_full; /* the last dispatch stopped at ops->full(): pl_poll_resume() has work to do */
  bool started;
  bool stopping;
  unsigned pending; /* stop: callbacks still to come */
  void (*stop_cb)(void *arg);
  void *stop_arg;
};

/* poll.c */

/** A Search failed: the CSU backs off, the window starts over (retry_after_ms < 0: none given). */
void pl__lane_search_failed(struct lane *l, const char *why, long retry_after_ms);
/** Hands the parsed page (l->rows) to the admitter, or steps past an empty one. */
void pl__lane_deliver(struct lane *l);
/** Starts what can start now and arms the wake-up for the rest. */
void pl__poll_schedule(struct pl_poll *p);
/** A callback the stop waited for came: finishes the stop after the last. */
void pl__poll_stop_step(struct pl_poll *p);

/* poll_search.c */

/** Gets the lane's token and sends the Search aimed at l->q (the lane goes TOKEN, then SEARCH). */
void pl__lane_start_token(struct lane *l);
/** Frees what the last Search's request holds. */
void pl__lane_release_req(struct lane *l);

#endif
