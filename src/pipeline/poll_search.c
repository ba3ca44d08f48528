/* One Search of a lane (SPEC §3): its token from the CSU's identity, the request (body, URL,
 * OUN and bearer headers), and its answer: a 401 gets one fresh token, a failure goes back to the
 * lane's backoff, a page is parsed (poll_rows.c) and handed on. poll.c decides what to search. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/log.h"
#include "csurelay/timefmt.h"
#include "poll_lane.h"

void pl__lane_release_req(struct lane *l) {
  if (l->req_live)
    rx_http_req_cleanup(&l->req);
  l->req_live = false;
}

static void on_search_done(struct rx_fut *fut);

/* "name: prefix value" (a token can be long: no fixed buffer) */
static int add_header(struct rx_http_req *req, const char *name, const char *prefix,
                      const char *value) {
  size_t cap = strlen(name) + strlen(prefix) + strlen(value) + 3;
  char *line = malloc(cap);
  if (line == NULL)
    return UV_ENOMEM;
  snprintf(line, cap, "%s: %s%s", name, prefix, value);
  int rc = rx_http_req_header(req, line);
  free(line);
  return rc;
}

static void log_search(const struct lane *l) {
  char from[CSR_TIME_BUF], to[CSR_TIME_BUF];
  csr_time_format_seconds(l->q.from_ms, from, sizeof(from));
  csr_time_format_seconds(l->q.to_ms, to, sizeof(to));
  CSR_LOG(CSR_DEBUG, "poll: search", CSR_KS("csu", l->c->conf->name), CSR_KS("type", l->type),
          CSR_KS("from", from), CSR_KS("to", to), CSR_KI("top", l->q.top),
          CSR_KI("skip", l->q.skip), CSR_KI("sweep", l->cur == WIN_SWEEP));
}

static int send_search(struct lane *l) {
  struct pl_poll *p = l->p;
  int rc = pl__search_body(&p->jw, l->type, &l->q, &l->body);
  if (rc == 0)
    rc = pl__search_url(l->c->conf->url, &l->q, &l->url);
  if (rc < 0)
    return rc;
  if (csr_log_threshold <= CSR_DEBUG)
    log_search(l);
  rx_http_req_init(&l->req);
  l->req_live = true;
  l->req.method = "POST";
  l->req.url = l->url;
  l->req.body = l->body;
  l->req.body_len = strlen(l->body);
  l->req.timeout_ms = p->opts.timeout_ms;
  if ((rc = add_header(&l->req, "OUN", "", l->c->conf->oun)) < 0 ||
      (rc = add_header(&l->req, "Authorization", "Bearer ", l->token)) < 0 ||
      (rc = rx_http_req_header(&l->req, "Content-Type: application/json")) < 0 ||
      (rc = rx_http_req_header(&l->req, "Accept: application/json")) < 0)
    return rc;
  return rx_http_start(p->http, &l->req, on_search_done);
}

/* A Search of the lane starts (its token first) or ends: the stage's count of Searches in flight
 * and of the rows they may bring (held() weighs those before each new Search). */
static void search_begins(struct lane *l) {
  l->p->inflight++;
  l->p->rows_in_flight += l->q.top;
}

static void search_ends(struct lane *l) {
  l->p->inflight--;
  l->p->rows_in_flight -= l->q.top;
}

static void on_token(struct rx_fut *fut) {
  struct lane *l = RX_CONTAINER_OF(fut, struct lane, treq.fut);
  struct pl_poll *p = l->p;
  char why[300];
  if (p->stopping) {
    search_ends(l);
    l->state = L_IDLE;
    pl__poll_stop_step(p);
    return;
  }
  int rc = fut->result;
  if (rc == 0) {
    free(l->token);
    l->token = strdup(l->treq.token);
    rc = l->token == NULL ? UV_ENOMEM : send_search(l);
    if (rc == 0) {
      l->state = L_SEARCH;
      return;
    }
    pl__lane_release_req(l);
    snprintf(why, sizeof(why), "request: %s", csr_strerror(rc));
  } else {
    const char *detail = pl_tokens_stats(l->c->tokens)->last_error;
    snprintf(why, sizeof(why), "token: %s%s%s", csr_strerror(rc), detail[0] ? ": " : "", detail);
  }
  search_ends(l);
  pl__lane_search_failed(l, why, -1);
  pl__poll_schedule(p);
}

void pl__lane_start_token(struct lane *l) {
  l->state = L_TOKEN;
  search_begins(l);
  int rc = pl_tokens_get(l->c->tokens, &l->treq, on_token);
  if (rc < 0) {
    char why[128];
    snprintf(why, sizeof(why), "token: %s", csr_strerror(rc));
    search_ends(l);
    pl__lane_search_failed(l, why, -1);
  }
}

/* Why a Search failed, from its answer; "" when it did not. */
static long classify(struct lane *l, char *why, size_t len) {
  const struct rx_http_req *r = &l->req;
  why[0] = '\0';
  if (r->fut.result < 0)
    snprintf(why, len, "%s",
             r->fut.result == UV_ETIMEDOUT ? "timeout" : csr_strerror(r->fut.result));
  else if (r->status < 200 || r->status > 299)
    snprintf(why, len, "status %ld", r->status);
  else
    return -1;
  return r->fut.result < 0 ? -1 : r->retry_after_ms;
}

static void on_search_done(struct rx_fut *fut) {
  struct lane *l = RX_CONTAINER_OF(fut, struct lane, req.fut);
  struct pl_poll *p = l->p;
  char why[200];
  search_ends(l);
  l->st.searches++;
  if (p->stopping) {
    pl__lane_release_req(l);
    l->state = L_IDLE;
    pl__poll_stop_step(p);
    return;
  }
  if (fut->result == 0 && l->req.status == 401) {
    l->st.unauthorized++;
    pl_tokens_invalidate(l->c->tokens, l->token);
    pl__lane_release_req(l);
    if (!l->retried) {
      l->retried = true;
      pl__lane_start_token(l);
      pl__poll_schedule(p);
      return;
    }
    pl__lane_search_failed(l, "status 401 with a fresh token", -1);
    pl__poll_schedule(p);
    return;
  }
  long retry_after = classify(l, why, sizeof(why));
  size_t len = 0;
  char *page = why[0] == '\0' ? rx_http_take_body(&l->req, &len) : NULL;
  if (page == NULL && why[0] == '\0')
    snprintf(why, sizeof(why), "no answer body");
  if (page != NULL &&
      pl__rows_parse(&l->rows, l->c->conf->name, &l->q, page, len, why, sizeof(why)) == 0) {
    pl__lane_release_req(l);
    l->c->failures = 0;
    pl__lane_deliver(l);
  } else {
    pl__lane_release_req(l);
    pl__lane_search_failed(l, why, retry_after);
  }
  pl__poll_schedule(p);
}
