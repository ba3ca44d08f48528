/* The customer sync ingress's listener (csurelay/ingress.h, "The listener and the job runner"):
 * its own HTTP server on cfg->ingress.listen, POST /v1/customers and GET /v1/customers/jobs/{id},
 * the requests that wait for their job, open and stop, metrics and stats. The jobs themselves run
 * in ingress_run.c and ingress_upsert.c.
 *
 * A POST is validated (cs_customer_parse) before anything is written or sent; a valid one becomes
 * a JOB record and waits. Waiters are created in deadline order (sync_wait_ms is one value), so
 * they sit in a FIFO with one timer armed to the head's deadline. A waiter is answered 200 or 422
 * when its job ends, 202 at its deadline (once the JOB is durable: a 202 promises the job), 503
 * when the JOB could not be stored. Logs carry job ids, never the request's personal data.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "csurelay/log.h"
#include "csurelay/metrics.h"
#include "csurelay/timefmt.h"
#include "ingress_internal.h"

#define JSON         "application/json"
#define MAX_BODY     (64 * 1024)
#define EXPIRE_MS    60000
#define POST_PATH    "/v1/customers"
#define JOB_PREFIX   "/v1/customers/jobs/"
#define BUSY_RETRY   "Retry-After: 1\r\n"
#define DEF_MAX_JOBS 20000

static const double job_bounds[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600};

/* ---------------------------------------------------------------------------------------------- */
/* Answers                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

static struct csr_series *code_series(struct cs_ingress *g, int code) {
  struct cs_ingress_metrics *m = &g->m;
  size_t n = sizeof(m->codes) / sizeof(m->codes[0]), i = 0;
  for (; i < n && m->codes[i].s != NULL; i++)
    if (m->codes[i].code == code)
      return m->codes[i].s;
  if (i == n || m->requests == NULL)
    return NULL; /* more distinct codes than slots: not counted (the ingress answers ~8) */
  char text[16];
  snprintf(text, sizeof(text), "%d", code);
  m->codes[i].code = code;
  m->codes[i].s = csr_metrics_series(m->requests, "code", text, NULL);
  return m->codes[i].s;
}

static void respond(struct cs_ingress *g, struct rx_http_request *req, int status,
                    const char *headers, const char *body, size_t len) {
  struct csr_series *s = code_series(g, status);
  if (s != NULL)
    s->value++;
  rx_http_respond(req, status, headers, JSON, body, len);
}

static void respond_text(struct cs_ingress *g, struct rx_http_request *req, int status,
                         const char *headers, const char *body) {
  respond(g, req, status, headers, body, strlen(body));
}

/* Answers with the document g->jw holds (500 when it cannot be written). */
static void respond_jw(struct cs_ingress *g, struct rx_http_request *req, int status,
                       const char *headers) {
  const char *text;
  size_t len;
  if (csr_jw_finish(&g->jw, &text, &len) < 0)
    respond_text(g, req, 500, NULL, "{\"error\":\"internal\"}");
  else
    respond(g, req, status, headers, text, len);
  csr_jw_reset(&g->jw);
}

static void respond_accepted(struct cs_ingress *g, struct rx_http_request *req, const char *id) {
  char location[96];
  snprintf(location, sizeof(location), "Location: " JOB_PREFIX "%s\r\n", id);
  csr_jw_reset(&g->jw);
  csr_jw_obj(&g->jw);
  csr_jw_kstr(&g->jw, "jobId", id);
  csr_jw_kstr(&g->jw, "status", "pending");
  csr_jw_obj_end(&g->jw);
  g->st.answered_async++;
  respond_jw(g, req, 202, location);
}

static void respond_unavailable(struct cs_ingress *g, struct rx_http_request *req) {
  respond_text(g, req, 503, BUSY_RETRY,
               "{\"error\":\"unavailable\",\"message\":\"the job could not be stored\"}");
}

/* The job's outcome: 200 {accountNumber, created} or 422 commerce_rejected. */
static void respond_outcome(struct cs_ingress *g, struct rx_http_request *req,
                            const struct cs_run *run) {
  csr_jw_reset(&g->jw);
  csr_jw_obj(&g->jw);
  if (run->outcome == CS_JOB_DONE) {
    csr_jw_kstr(&g->jw, "accountNumber", run->account);
    csr_jw_kbool(&g->jw, "created", run->created);
  } else {
    csr_jw_kstr(&g->jw, "error", "commerce_rejected");
    csr_jw_kint(&g->jw, "status", run->status);
    csr_jw_kstr(&g->jw, "message", run->message);
    csr_jw_kstr(&g->jw, "jobId", run->id);
  }
  csr_jw_obj_end(&g->jw);
  g->st.answered_sync++;
  respond_jw(g, req, run->outcome == CS_JOB_DONE ? 200 : 422, NULL);
}

/* ---------------------------------------------------------------------------------------------- */
/* Waiters                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

static void wait_unlink(struct cs_ingress *g, struct cs_waiter *w) {
  if (w->expired)
    return; /* already off the deadline list */
  if (w->prev)
    w->prev->next = w->next;
  else
    g->wait_head = w->next;
  if (w->next)
    w->next->prev = w->prev;
  else
    g->wait_tail = w->prev;
  w->prev = w->next = NULL;
}

/* Takes the waiter off every list and frees it; the caller has answered its request. */
static void waiter_drop(struct cs_ingress *g, struct cs_waiter *w) {
  wait_unlink(g, w);
  struct cs_waiter **p = &w->run->waiters;
  while (*p != NULL && *p != w)
    p = &(*p)->rnext;
  if (*p == w)
    *p = w->rnext;
  free(w);
}

static bool durable(const struct cs_run *run) {
  return run->phase != CS_RUN_ACCEPTING && run->phase != CS_RUN_STUCK;
}

static uint64_t on_wait_timer(struct rx_timer *t) {
  struct cs_ingress *g = t->data;
  uint64_t now = rx_now_ms(g->loop);
  while (g->wait_head != NULL && g->wait_head->deadline_ms <= now) {
    struct cs_waiter *w = g->wait_head;
    if (durable(w->run)) {
      respond_accepted(g, w->req, w->run->id);
      waiter_drop(g, w);
    } else { /* 202 promises a durable job: wait for the JOB (cs__ingress_run_accepted) */
      wait_unlink(g, w);
      w->expired = true;
    }
  }
  return g->wait_head ? g->wait_head->deadline_ms - now : RX_TIMER_STOP;
}

static void waiter_add(struct cs_ingress *g, struct cs_waiter *w) {
  uint64_t wait = g->cfg->ingress.sync_wait_ms;
  w->deadline_ms = rx_now_ms(g->loop) + wait;
  w->rnext = w->run->waiters;
  w->run->waiters = w;
  w->prev = g->wait_tail;
  if (g->wait_tail)
    g->wait_tail->next = w;
  else
    g->wait_head = w;
  g->wait_tail = w;
  if (g->wait_head == w && rx_timer_start(&g->wait_timer, on_wait_timer, wait) < 0)
    w->deadline_ms = 0; /* no timer: the next waiter's arming or the job's end answers it */
}

void cs__ingress_run_accepted(struct cs_run *run, int result) {
  struct cs_ingress *g = run->g;
  struct cs_waiter *w = run->waiters;
  while (w != NULL) {
    struct cs_waiter *next = w->rnext;
    if (result < 0 || run->phase == CS_RUN_STUCK) {
      respond_unavailable(g, w->req);
      waiter_drop(g, w);
    } else if (w->expired) {
      respond_accepted(g, w->req, run->id);
      waiter_drop(g, w);
    }
    w = next;
  }
}

void cs__ingress_answer_run(struct cs_run *run) {
  struct cs_ingress *g = run->g;
  while (run->waiters != NULL) {
    struct cs_waiter *w = run->waiters;
    if (run->phase == CS_RUN_STUCK)
      respond_accepted(g, w->req, run->id);
    else
      respond_outcome(g, w->req, run);
    waiter_drop(g, w);
  }
}

/* ---------------------------------------------------------------------------------------------- */
/* Requests                                                                                       */
/* ---------------------------------------------------------------------------------------------- */

/* Compares in time independent of where the first difference is (admin.c does the same), so the
 * token cannot be guessed byte by byte from response timing. */
static bool token_equal(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  unsigned char diff = (unsigned char)(la != lb);
  for (size_t i = 0; i < la; i++)
    diff |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
  return diff == 0;
}

static bool authorized(struct cs_ingress *g, struct rx_http_request *req) {
  if (g->token == NULL)
    return true;
  const char *auth = rx_http_header(req, "Authorization");
  if (auth && strncasecmp(auth, "Bearer ", 7) == 0 && token_equal(auth + 7, g->token))
    return true;
  g->st.unauthorized++;
  respond_text(g, req, 401, "WWW-Authenticate: Bearer\r\n", "{\"error\":\"unauthorized\"}");
  return false;
}

static void respond_invalid(struct cs_ingress *g, struct rx_http_request *req, int rc,
                            const struct cs_field_errors *errs) {
  g->st.invalid++;
  if (g->m.invalid != NULL)
    g->m.invalid->value++;
  csr_jw_reset(&g->jw);
  csr_jw_obj(&g->jw);
  if (rc == CSR_EPARSE) {
    csr_jw_kstr(&g->jw, "error", "invalid_json");
    csr_jw_kstr(&g->jw, "message", errs->n ? errs->e[0].message : "the body is not a JSON object");
  } else {
    csr_jw_kstr(&g->jw, "error", "invalid_request");
    csr_jw_key(&g->jw, "fields");
    csr_jw_arr(&g->jw);
    size_t n = errs->n < CS_MAX_FIELD_ERRORS ? errs->n : CS_MAX_FIELD_ERRORS;
    for (size_t i = 0; i < n; i++) {
      csr_jw_obj(&g->jw);
      csr_jw_kstr(&g->jw, "field", errs->e[i].field);
      csr_jw_kstr(&g->jw, "message", errs->e[i].message);
      csr_jw_obj_end(&g->jw);
    }
    csr_jw_arr_end(&g->jw);
  }
  csr_jw_obj_end(&g->jw);
  respond_jw(g, req, 400, NULL);
}

/* 503 while the ingress cannot take a job: stopping, admission stopped, or too many pending. */
static bool refuse_busy(struct cs_ingress *g, struct rx_http_request *req) {
  uint64_t max = g->cfg->limits.max_live_events ? g->cfg->limits.max_live_events : DEF_MAX_JOBS;
  const char *why = NULL;
  struct pl_admit_stats as;
  pl_admit_stats(g->admit, &as);
  if (g->closing)
    why = "{\"error\":\"unavailable\",\"message\":\"stopping\"}";
  else if (as.failed)
    why = "{\"error\":\"unavailable\",\"message\":\"the state store has failed\"}";
  else if (g->n_runs >= max)
    why = "{\"error\":\"busy\",\"message\":\"too many jobs pending\"}";
  if (why != NULL)
    respond_text(g, req, 503, BUSY_RETRY, why);
  return why != NULL;
}

/* 32 lowercase hex digits from the system's generator. */
static int new_job_id(char out[CS_JOB_ID_LEN + 1]) {
  static const char hex[] = "0123456789abcdef";
  unsigned char raw[CS_JOB_ID_LEN / 2];
  int rc = uv_random(NULL, NULL, raw, sizeof(raw), 0, NULL);
  if (rc < 0)
    return rc;
  for (size_t i = 0; i < sizeof(raw); i++) {
    out[2 * i] = hex[raw[i] >> 4];
    out[2 * i + 1] = hex[raw[i] & 15];
  }
  out[CS_JOB_ID_LEN] = '\0';
  return 0;
}

/* A valid request becomes a durable job; the POST waits for it (see the file comment). */
static void accept_job(struct cs_ingress *g, struct rx_http_request *req,
                       struct cs_customer *cust) {
  char id[CS_JOB_ID_LEN + 1];
  struct cs_waiter *w = calloc(1, sizeof(*w));
  int rc = w ? new_job_id(id) : UV_ENOMEM;
  struct cs_run *run = rc == 0 ? cs__run_create(g, id, cust->email, rx_wall_ms(), cust) : NULL;
  if (run == NULL) {
    cs_customer_free(cust);
  } else if ((rc = cs__run_accept(run)) < 0) {
    cs__run_free(run);
    run = NULL;
  }
  if (run == NULL) {
    free(w);
    CSR_LOG(CSR_ERROR, "ingress: a request could not become a job", CSR_KERR(rc ? rc : UV_ENOMEM));
    respond_unavailable(g, req);
    return;
  }
  g->st.accepted++;
  CSR_LOG(CSR_DEBUG, "ingress: job accepted", CSR_KS("job_id", id));
  w->req = req;
  w->run = run;
  waiter_add(g, w); /* a JOB that did not apply is STUCK: its future answers 503 */
}

static void on_post(struct rx_http_request *req, void *arg) {
  struct cs_ingress *g = arg;
  g->st.requests++;
  if (!authorized(g, req) || refuse_busy(g, req))
    return;
  struct cs_customer cust;
  struct cs_field_errors errs;
  memset(&cust, 0, sizeof(cust));
  memset(&errs, 0, sizeof(errs));
  int rc = cs_customer_parse(req->body, req->body_len, &cust, &errs);
  if (rc == CSR_EPARSE || rc == CSR_EINVALID) {
    respond_invalid(g, req, rc, &errs);
    return;
  }
  if (rc < 0) {
    respond_unavailable(g, req);
    return;
  }
  accept_job(g, req, &cust);
}

static void ktime(struct csr_jw *jw, const char *key, int64_t ms) {
  char text[CSR_TIME_BUF];
  if (ms <= 0 || csr_time_format(ms, text, sizeof(text)) == 0)
    csr_jw_kstr(jw, key, NULL);
  else
    csr_jw_kstr(jw, key, text);
}

static const char *state_name(enum cs_job_state s) {
  return s == CS_JOB_DONE ? "done" : s == CS_JOB_FAILED ? "failed" : "pending";
}

static void write_job(struct csr_jw *jw, const struct cs_job *job) {
  const struct cs_run *run = job->run;
  bool pending = job->state == CS_JOB_PENDING;
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "jobId", job->id);
  csr_jw_kstr(jw, "status", state_name(job->state));
  csr_jw_kstr(jw, "accountNumber", job->account && *job->account ? job->account : NULL);
  csr_jw_kbool(jw, "created", job->state == CS_JOB_DONE && job->created);
  csr_jw_kint(jw, "attempts", pending ? (run ? run->attempts : 0) : job->attempts);
  if (job->status != 0)
    csr_jw_kint(jw, "status_code", job->status);
  if (job->message && *job->message)
    csr_jw_kstr(jw, "message", job->message);
  ktime(jw, "acceptedAt", job->accepted_ms);
  ktime(jw, "endedAt", pending ? 0 : job->ended_ms);
  csr_jw_obj_end(jw);
}

static bool valid_id(const char *id) {
  size_t n = 0;
  for (; id[n]; n++)
    if (!((id[n] >= '0' && id[n] <= '9') || (id[n] >= 'a' && id[n] <= 'f')))
      return false;
  return n == CS_JOB_ID_LEN;
}

static void on_get_job(struct rx_http_request *req, void *arg) {
  struct cs_ingress *g = arg;
  if (!authorized(g, req))
    return;
  const char *id = req->path + strlen(JOB_PREFIX);
  const struct cs_job *job = valid_id(id) ? cs_jobs_find(g->jobs, id) : NULL;
  if (job == NULL) {
    respond_text(g, req, 404, NULL, "{\"error\":\"not_found\"}");
    return;
  }
  csr_jw_reset(&g->jw);
  write_job(&g->jw, job);
  respond_jw(g, req, 200, NULL);
}

/* ---------------------------------------------------------------------------------------------- */
/* Metrics and stats                                                                              */
/* ---------------------------------------------------------------------------------------------- */

static struct csr_series *series(struct csr_family *f, const char *k, const char *v) {
  return f == NULL ? NULL : k ? csr_metrics_series(f, k, v, NULL) : csr_metrics_series(f, NULL);
}

/* Counters are incremented in place, so they continue from their values across reloads. */
static void register_metrics(struct cs_ingress *g) {
  struct csr_metrics *mx = g->metrics;
  struct cs_ingress_metrics *m = &g->m;
  if (mx == NULL)
    return;
  m->requests = csr_metrics_family(mx, "csurelay_ingress_requests_total",
                                   "Ingress answers by HTTP status.", CSR_COUNTER, NULL, 0);
  m->invalid =
      series(csr_metrics_family(mx, "csurelay_ingress_invalid_total",
                                "Requests refused by validation (400).", CSR_COUNTER, NULL, 0),
             NULL, NULL);
  struct csr_family *cust = csr_metrics_family(mx, "csurelay_ingress_customers_total",
                                               "Jobs ended, by result.", CSR_COUNTER, NULL, 0);
  m->created = series(cust, "result", "created");
  m->updated = series(cust, "result", "updated");
  m->failed = series(cust, "result", "failed");
  m->retries =
      series(csr_metrics_family(mx, "csurelay_ingress_retries_total",
                                "Job attempts that failed transiently.", CSR_COUNTER, NULL, 0),
             NULL, NULL);
  struct csr_family *jobs = csr_metrics_family(
      mx, "csurelay_ingress_jobs",
      "Jobs in the scheduler (running) or behind their email (queued).", CSR_GAUGE, NULL, 0);
  m->running = series(jobs, "state", "running");
  m->queued = series(jobs, "state", "queued");
  m->job_seconds = series(
      csr_metrics_family(mx, "csurelay_ingress_job_seconds", "From a job's acceptance to its end.",
                         CSR_HISTOGRAM, job_bounds, sizeof(job_bounds) / sizeof(job_bounds[0])),
      NULL, NULL);
}

void cs__ingress_gauges(struct cs_ingress *g) {
  if (g->m.running != NULL)
    g->m.running->value = (double)g->st.running;
  if (g->m.queued != NULL)
    g->m.queued->value = (double)g->st.queued;
}

int cs_ingress_port(const struct cs_ingress *g) {
  return g ? g->srv.port : 0;
}

void cs_ingress_stats(const struct cs_ingress *g, struct cs_ingress_stats *out) {
  *out = g->st;
}

/* ---------------------------------------------------------------------------------------------- */
/* Open                                                                                           */
/* ---------------------------------------------------------------------------------------------- */

static uint64_t on_expire_timer(struct rx_timer *t) {
  struct cs_ingress *g = t->data;
  size_t n = cs_jobs_expire(g->jobs, rx_wall_ms());
  if (n > 0)
    CSR_LOG(CSR_DEBUG, "ingress: ended jobs expired", CSR_KI("jobs", (int64_t)n));
  return EXPIRE_MS;
}

/* {csu.url}Commerce/<path>, one '/' between them whether or not the URL ends in one. */
static char *csu_url(const char *base, const char *path) {
  size_t n = strlen(base);
  while (n > 0 && base[n - 1] == '/')
    n--;
  size_t len = n + 1 + strlen("Commerce/") + strlen(path) + 1;
  char *url = malloc(len);
  if (url != NULL)
    snprintf(url, len, "%.*s/Commerce/%s", (int)n, base, path);
  return url;
}

static int open_timers(struct cs_ingress *g) {
  int rc = rx_timer_init(&g->wait_timer, g->loop);
  if (rc < 0)
    return rc;
  g->wait_timer_init = true;
  g->wait_timer.data = g;
  if ((rc = rx_timer_init(&g->expire_timer, g->loop)) < 0)
    return rc;
  g->expire_timer_init = true;
  g->expire_timer.data = g;
  rx_timer_unref(&g->expire_timer);
  return rx_timer_start(&g->expire_timer, on_expire_timer, EXPIRE_MS);
}

static int open_server(struct cs_ingress *g, struct csr_err *err) {
  const struct csr_listen *l = &g->cfg->ingress.listen;
  struct rx_http_server_opts so = {.max_body_bytes = MAX_BODY};
  int rc = rx_http_server_init(&g->srv, g->loop, &so);
  if (rc < 0)
    return rc;
  g->srv_init = true;
  g->srv.data = g;
  rc = rx_http_server_route(&g->srv, "POST", POST_PATH, on_post, g);
  if (rc == 0)
    rc = rx_http_server_route(&g->srv, "GET", JOB_PREFIX "*", on_get_job, g);
  if (rc == 0 && (rc = rx_http_server_listen(&g->srv, l->host, l->port)) < 0)
    csr_err_set(err, g->cfg->path, 0, "ingress.listen", "cannot listen on %s:%d: %s", l->host,
                l->port, csr_strerror(rc));
  return rc;
}

static int open_parts(struct cs_ingress *g, struct csr_err *err) {
  const struct csr_config *cfg = g->cfg;
  g->search_url = csu_url(cfg->ingress.csu->url, "Customers/SearchByFields?$top=5&api-version=7.3");
  g->create_url = csu_url(cfg->ingress.csu->url, "Customers?api-version=7.3");
  if (cfg->ingress.token != NULL && (g->token = strdup(cfg->ingress.token)) == NULL)
    return UV_ENOMEM;
  if (g->search_url == NULL || g->create_url == NULL)
    return UV_ENOMEM;
  int rc = csr_jw_init(&g->jw);
  if (rc < 0)
    return rc;
  g->jw_init = true;
  register_metrics(g);
  if ((rc = cs__runner_create(g)) < 0 || (rc = open_timers(g)) < 0)
    return rc;
  return open_server(g, err);
}

int cs_ingress_open(const struct cs_ingress_deps *deps, struct cs_ingress **out,
                    struct csr_err *err) {
  if (out)
    *out = NULL;
  if (deps == NULL || out == NULL || deps->loop == NULL || deps->cfg == NULL ||
      deps->http == NULL || deps->tokens == NULL || deps->admit == NULL ||
      !deps->cfg->ingress.present || deps->cfg->ingress.csu == NULL)
    return UV_EINVAL;
  struct cs_ingress *g = calloc(1, sizeof(*g));
  if (g == NULL)
    return UV_ENOMEM;
  g->loop = deps->loop;
  g->cfg = deps->cfg;
  g->http = deps->http;
  g->tokens = deps->tokens;
  g->admit = deps->admit;
  g->state = pl_admit_state(deps->admit);
  g->jobs = pl_state_jobs(g->state);
  g->metrics = deps->metrics;
  g->timeout_ms = deps->cfg->limits.http_timeout_ms;
  int rc = open_parts(g, err);
  if (rc < 0) {
    if (err != NULL && err->msg[0] == '\0')
      csr_err_set(err, g->cfg->path, 0, "ingress", "cannot open the ingress: %s", csr_strerror(rc));
    cs_ingress_stop(g, NULL, NULL); /* handles close from the loop; g frees itself then */
    return rc;
  }
  cs__runner_resume(g);
  CSR_LOG(CSR_INFO, "ingress listening", CSR_KS("host", g->cfg->ingress.listen.host),
          CSR_KI("port", g->srv.port), CSR_KS("csu", g->cfg->ingress.csu->name),
          CSR_KS("auth", g->token ? "bearer" : "none"));
  *out = g;
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Stop                                                                                           */
/* ---------------------------------------------------------------------------------------------- */

static void free_all(struct cs_ingress *g) {
  void (*cb)(void *arg) = g->stop_cb;
  void *arg = g->stop_arg;
  while (g->runs != NULL)
    cs__run_free(g->runs);
  g->st.running = g->st.queued = 0;
  cs__ingress_gauges(g);
  cs__runner_free(g);
  if (g->jw_init)
    csr_jw_free(&g->jw);
  free(g->search_url);
  free(g->create_url);
  free(g->token);
  free(g);
  if (cb != NULL)
    cb(arg);
}

void cs__ingress_part_done(struct cs_ingress *g) {
  if (g->closing && g->parts == 0 && g->durable_out == 0)
    free_all(g);
}

static void part_closed(struct cs_ingress *g) {
  g->parts--;
  cs__ingress_part_done(g);
}

static void on_srv_closed(struct rx_http_server *srv) {
  part_closed(srv->data);
}

static void on_timer_closed(struct rx_timer *t) {
  part_closed(t->data);
}

static void on_sched_closed(void *arg) {
  struct cs_ingress *g = arg;
  g->sched = NULL;
  part_closed(g);
}

/* Every waiting request is answered before the server closes its connections. */
static void answer_all(struct cs_ingress *g) {
  for (struct cs_run *run = g->runs; run != NULL; run = run->next)
    while (run->waiters != NULL) {
      struct cs_waiter *w = run->waiters;
      if (durable(run))
        respond_accepted(g, w->req, run->id);
      else
        respond_unavailable(g, w->req);
      waiter_drop(g, w);
    }
}

void cs_ingress_stop(struct cs_ingress *g, void (*cb)(void *arg), void *arg) {
  if (g == NULL || g->closing)
    return;
  g->closing = true;
  g->stop_cb = cb;
  g->stop_arg = arg;
  g->parts = 1; /* held until every close below has started */
  answer_all(g);
  if (g->srv_init) {
    g->parts++;
    rx_http_server_close(&g->srv, on_srv_closed);
  }
  if (g->wait_timer_init) {
    g->parts++;
    rx_timer_close(&g->wait_timer, on_timer_closed);
  }
  if (g->expire_timer_init) {
    g->parts++;
    rx_timer_close(&g->expire_timer, on_timer_closed);
  }
  if (g->sched != NULL) { /* running attempts are cancelled; their jobs stay pending */
    g->parts++;
    pl_sched_close(g->sched, on_sched_closed, g);
  }
  part_closed(g);
}
