/* The customer sync jobs at run time (ingress.h, "Running a job"): records, per-email order and
 * the scheduler.
 *
 * A run's life: its JOB is appended (durable future) and applied at once, like an ADMIT, so the
 * state's order is the log's; once durable it joins its email's FIFO. The head of a FIFO is
 * submitted to the scheduler (at most CS_INGRESS_MAX_IN_FLIGHT attempts at once over all emails,
 * full-jitter backoff, Retry-After and max_attempts from cfg->retry); the others wait, so a second
 * job for a new email runs only after the first has created the customer and set the mapping.
 * A final outcome becomes a JOB_END, appended (durable) and applied at once; once durable the
 * waiting requests are answered and the email's next job starts.
 *
 * A record the store refuses, or one that does not apply after its append, stops admission
 * (pl_admit_fail: memory and log disagree, see pipeline.h); the run is then stuck until the next
 * start, which replays what is durable and resumes the pending jobs from the state.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/log.h"
#include "csurelay/metrics.h"
#include "ingress_internal.h"
#include "hash.h"

#define MAX_PREFIX "max_attempts: "

/* ---------------------------------------------------------------------------------------------- */
/* Phases and the email queues                                                                    */
/* ---------------------------------------------------------------------------------------------- */

static void set_phase(struct cs_run *run, enum cs_run_phase phase) {
  struct cs_ingress *g = run->g;
  if (run->phase == CS_RUN_RUNNING)
    g->st.running--;
  else if (run->phase == CS_RUN_QUEUED)
    g->st.queued--;
  run->phase = phase;
  if (phase == CS_RUN_RUNNING)
    g->st.running++;
  else if (phase == CS_RUN_QUEUED)
    g->st.queued++;
  cs__ingress_gauges(g);
}

static uint64_t hash_key(const char *s) {
  return csr_strhash(CSR_FNV1A_BASIS, s);
}

static int grow(struct cs_ingress *g) {
  size_t n = g->n_buckets ? g->n_buckets * 2 : 64;
  struct cs_equeue **b = calloc(n, sizeof(*b));
  if (b == NULL)
    return UV_ENOMEM;
  for (size_t i = 0; i < g->n_buckets; i++)
    for (struct cs_equeue *q = g->buckets[i], *next; q != NULL; q = next) {
      next = q->hnext;
      size_t j = hash_key(q->key) & (n - 1);
      q->hnext = b[j];
      b[j] = q;
    }
  free(g->buckets);
  g->buckets = b;
  g->n_buckets = n;
  return 0;
}

/* The queue of `key`, created when absent; NULL when out of memory. */
static struct cs_equeue *queue_get(struct cs_ingress *g, const char *key) {
  if (g->n_queues >= g->n_buckets && grow(g) < 0 && g->n_buckets == 0)
    return NULL;
  size_t i = hash_key(key) & (g->n_buckets - 1);
  for (struct cs_equeue *q = g->buckets[i]; q != NULL; q = q->hnext)
    if (strcmp(q->key, key) == 0)
      return q;
  struct cs_equeue *q = calloc(1, sizeof(*q));
  if (q == NULL || (q->key = strdup(key)) == NULL) {
    free(q);
    return NULL;
  }
  q->hnext = g->buckets[i];
  g->buckets[i] = q;
  g->n_queues++;
  return q;
}

static void queue_drop(struct cs_ingress *g, struct cs_equeue *q) {
  struct cs_equeue **p = &g->buckets[hash_key(q->key) & (g->n_buckets - 1)];
  while (*p != q)
    p = &(*p)->hnext;
  *p = q->hnext;
  g->n_queues--;
  free(q->key);
  free(q);
}

void cs__runner_free(struct cs_ingress *g) {
  for (size_t i = 0; i < g->n_buckets; i++)
    for (struct cs_equeue *q = g->buckets[i], *next; q != NULL; q = next) {
      next = q->hnext;
      free(q->key);
      free(q);
    }
  free(g->buckets);
  g->buckets = NULL;
  g->n_buckets = g->n_queues = 0;
}

/* The run is the head of its email's queue: attempts start. */
static void submit(struct cs_run *run) {
  set_phase(run, CS_RUN_RUNNING);
  int rc = pl_sched_submit(run->g->sched, &run->it);
  if (rc < 0) { /* closing: the job stays pending in the AOF */
    set_phase(run, CS_RUN_QUEUED);
    if (rc != UV_ECANCELED)
      CSR_LOG(CSR_ERROR, "ingress: a job cannot be scheduled; it waits for the next start",
              CSR_KS("job_id", run->id), CSR_KERR(rc));
  }
}

/* Joins the email's FIFO; the head starts at once. */
static void enqueue(struct cs_run *run) {
  struct cs_equeue *q = queue_get(run->g, run->key);
  if (q == NULL) {
    CSR_LOG(CSR_ERROR, "ingress: out of memory; the job waits for the next start",
            CSR_KS("job_id", run->id));
    set_phase(run, CS_RUN_STUCK);
    return;
  }
  run->q = q;
  if (q->tail)
    q->tail->qnext = run;
  else
    q->head = run;
  q->tail = run;
  if (q->head == run)
    submit(run);
  else
    set_phase(run, CS_RUN_QUEUED);
}

/* The run leaves its queue (it ended); the email's next job starts unless the ingress stops. */
static void dequeue(struct cs_run *run) {
  struct cs_ingress *g = run->g;
  struct cs_equeue *q = run->q;
  if (q == NULL)
    return;
  run->q = NULL;
  q->head = run->qnext;
  run->qnext = NULL;
  if (q->head == NULL) {
    queue_drop(g, q);
    return;
  }
  if (!g->closing)
    submit(q->head);
}

/* ---------------------------------------------------------------------------------------------- */
/* Runs                                                                                           */
/* ---------------------------------------------------------------------------------------------- */

struct cs_run *cs__run_create(struct cs_ingress *g, const char *id, const char *email,
                              int64_t accepted_ms, struct cs_customer *cust) {
  size_t n = strlen(email) + 1;
  struct cs_run *run = calloc(1, sizeof(*run));
  if (run == NULL)
    return NULL;
  run->email = malloc(n);
  run->key = malloc(n);
  if (run->email == NULL || run->key == NULL || cs_email_key(email, run->key, n) < 0) {
    free(run->email);
    free(run->key);
    free(run);
    return NULL;
  }
  memcpy(run->email, email, n);
  snprintf(run->id, sizeof(run->id), "%s", id);
  run->g = g;
  run->accepted_ms = accepted_ms;
  if (cust != NULL) {
    run->cust = *cust;
    memset(cust, 0, sizeof(*cust)); /* moved: the run frees it */
    run->has_cust = true;
  }
  run->ske.id = run->id;
  run->it.data = run;
  run->it.delivery_data = run;
  run->it.event = &run->ske;
  run->next = g->runs;
  if (g->runs)
    g->runs->prev = run;
  g->runs = run;
  g->n_runs++;
  return run;
}

void cs__run_free(struct cs_run *run) {
  struct cs_ingress *g = run->g;
  set_phase(run, CS_RUN_STUCK); /* leaves the gauges */
  struct cs_job *job = cs_jobs_find(g->jobs, run->id);
  if (job != NULL && job->run == run)
    job->run = NULL;
  if (run->prev)
    run->prev->next = run->next;
  else
    g->runs = run->next;
  if (run->next)
    run->next->prev = run->prev;
  g->n_runs--;
  if (run->has_cust)
    cs_customer_free(&run->cust);
  free(run->email);
  free(run->key);
  free(run);
}

/* Encodes the record in g->jw, appends it with the run's durable future and applies it.
 * < 0: refused, nothing changed. 1: appended, but the apply failed (admission has stopped). */
static int commit(struct cs_run *run, uint8_t type, rx_fut_cb on_durable) {
  struct cs_ingress *g = run->g;
  const char *text;
  size_t len;
  int rc = csr_jw_finish(&g->jw, &text, &len);
  if (rc == 0)
    rc = pl_store_append(pl_admit_store(g->admit), type, text, len, &run->durable, on_durable);
  if (rc < 0) {
    csr_jw_reset(&g->jw);
    CSR_LOG(CSR_ERROR, "ingress: the store refused a record", CSR_KS("record", pl_rec_name(type)),
            CSR_KS("job_id", run->id), CSR_KERR(rc));
    return rc;
  }
  g->durable_out++;
  rc = pl_state_apply(g->state, type, text, len);
  csr_jw_reset(&g->jw);
  if (rc < 0) {
    CSR_LOG(CSR_ERROR, "ingress: a record did not apply after its append",
            CSR_KS("record", pl_rec_name(type)), CSR_KS("job_id", run->id),
            CSR_KS("reason", pl_state_error(g->state)));
    pl_admit_fail(g->admit, rc, pl_rec_name(type), run->id);
    return 1;
  }
  return 0;
}

static void on_job_durable(struct rx_fut *fut) {
  struct cs_run *run = RX_CONTAINER_OF(fut, struct cs_run, durable);
  struct cs_ingress *g = run->g;
  g->durable_out--;
  int result = fut->result;
  if (result < 0) {
    CSR_LOG(CSR_ERROR, "ingress: a JOB did not become durable", CSR_KS("job_id", run->id),
            CSR_KERR(result));
    pl_admit_fail(g->admit, result, "JOB", run->id);
    set_phase(run, CS_RUN_STUCK);
  } else if (run->phase == CS_RUN_ACCEPTING && !g->closing) {
    enqueue(run);
  }
  cs__ingress_run_accepted(run, result);
  cs__ingress_part_done(g);
}

int cs__run_accept(struct cs_run *run) {
  struct cs_ingress *g = run->g;
  struct csr_jw *jw = &g->jw;
  const char *text;
  size_t len;
  csr_jw_reset(jw);
  int rc = cs_customer_encode(&run->cust, jw);
  if (rc == 0)
    rc = csr_jw_finish(jw, &text, &len);
  char *req = rc == 0 ? malloc(len + 1) : NULL;
  if (rc == 0 && req == NULL)
    rc = UV_ENOMEM;
  if (rc == 0)
    memcpy(req, text, len + 1);
  csr_jw_reset(jw);
  if (rc == 0)
    rc = cs_rec_job(jw, run->id, run->email, run->accepted_ms, req, len);
  if (rc < 0) {
    free(req);
    csr_jw_reset(jw);
    return rc;
  }
  rc = commit(run, PL_REC_JOB, on_job_durable);
  free(req);
  if (rc < 0)
    return rc;
  run->phase = CS_RUN_ACCEPTING;
  if (rc == 1) {
    set_phase(run, CS_RUN_STUCK);
    return 0; /* the future still completes; the waiter is answered 503 then */
  }
  struct cs_job *job = cs_jobs_find(g->jobs, run->id);
  if (job != NULL)
    job->run = run;
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Outcomes                                                                                       */
/* ---------------------------------------------------------------------------------------------- */

static void count_end(struct cs_run *run) {
  struct cs_ingress *g = run->g;
  struct csr_series *s;
  if (run->outcome == CS_JOB_DONE) {
    run->created ? g->st.created++ : g->st.updated++;
    s = run->created ? g->m.created : g->m.updated;
  } else {
    g->st.failed++;
    s = g->m.failed;
  }
  if (s != NULL)
    s->value++;
  if (g->m.job_seconds != NULL)
    csr_series_observe(g->m.job_seconds, (double)(rx_wall_ms() - run->accepted_ms) / 1000.0);
}

static void on_end_durable(struct rx_fut *fut) {
  struct cs_run *run = RX_CONTAINER_OF(fut, struct cs_run, durable);
  struct cs_ingress *g = run->g;
  g->durable_out--;
  if (fut->result < 0) {
    /* The customer is written in Commerce; a restart replays the job, whose search finds it. */
    CSR_LOG(CSR_ERROR, "ingress: a JOB_END did not become durable", CSR_KS("job_id", run->id),
            CSR_KERR(fut->result));
    pl_admit_fail(g->admit, fut->result, "JOB_END", run->id);
  }
  count_end(run);
  cs__ingress_answer_run(run);
  dequeue(run);
  cs__run_free(run);
  cs__ingress_part_done(g);
}

/* Writes the JOB_END of the run's outcome (already in run). */
static void end_job(struct cs_run *run, unsigned attempts) {
  struct cs_ingress *g = run->g;
  struct cs_rec_job_end e = {
      .id = run->id,
      .outcome = run->outcome,
      .account = run->outcome == CS_JOB_DONE ? run->account : NULL,
      .created = run->outcome == CS_JOB_DONE && run->created,
      .status = run->status,
      .message = run->outcome == CS_JOB_FAILED ? run->message : NULL,
      .attempts = attempts,
      .at_ms = rx_wall_ms(),
  };
  csr_jw_reset(&g->jw);
  int rc = cs_rec_job_end(&g->jw, &e);
  if (rc < 0)
    csr_jw_reset(&g->jw);
  else
    rc = commit(run, PL_REC_JOB_END, on_end_durable);
  if (rc == 0) {
    set_phase(run, CS_RUN_ENDING);
    return;
  }
  if (rc < 0) /* nothing was appended: memory keeps the job pending, the log too */
    pl_admit_fail(g->admit, rc, "JOB_END", run->id);
  set_phase(run, rc == 1 ? CS_RUN_ENDING : CS_RUN_STUCK);
  if (rc < 0)
    cs__ingress_answer_run(run); /* 202: the job is durable and resumes at the next start */
}

/* The failed job's message: Commerce's (or the excerpt); "max_attempts: <reason>: <excerpt>". */
static void failure_message(struct cs_run *run, const struct sk_delivery *d) {
  if (strncmp(d->reason, MAX_PREFIX, strlen(MAX_PREFIX)) == 0)
    snprintf(run->message, sizeof(run->message), "%.63s%s%.190s", d->reason,
             d->excerpt[0] ? ": " : "", d->excerpt);
  else
    snprintf(run->message, sizeof(run->message), "%s", d->excerpt[0] ? d->excerpt : d->reason);
}

static void on_final(void *arg, struct pl_sched_item *it) {
  struct cs_run *run = it->data;
  const struct sk_delivery *d = it->d;
  run->status = d->status;
  if (it->outcome == SK_DELIVERED) {
    run->outcome = CS_JOB_DONE;
    snprintf(run->account, sizeof(run->account), "%s", run->a.account);
    CSR_LOG(CSR_DEBUG, "ingress: job done", CSR_KS("job_id", run->id),
            CSR_KS("result", run->created ? "created" : "updated"),
            CSR_KI("attempts", it->attempt));
  } else {
    run->outcome = CS_JOB_FAILED;
    run->created = false;
    failure_message(run, d);
    CSR_LOG(CSR_WARN, "ingress: job failed", CSR_KS("job_id", run->id), CSR_KS("reason", d->reason),
            CSR_KI("status", d->status), CSR_KI("attempts", it->attempt));
  }
  end_job(run, it->attempt);
}

static void on_attempt(void *arg, struct pl_sched_item *it) {
  struct cs_ingress *g = arg;
  struct cs_run *run = it->data;
  g->st.retries++;
  if (g->m.retries != NULL)
    g->m.retries->value++;
  CSR_LOG(CSR_INFO, "ingress: attempt failed; retrying", CSR_KS("job_id", run->id),
          CSR_KS("reason", it->d->reason), CSR_KI("status", it->d->status),
          CSR_KI("next_attempt", it->attempt),
          CSR_KI("in_ms", it->next_wall_ms > 0 ? it->next_wall_ms - rx_wall_ms() : 0));
}

/* Back without an outcome: at stop (the job stays pending in the AOF), or when the scheduler had
 * no room to wait (try again now). */
static void on_cancelled(void *arg, struct pl_sched_item *it) {
  struct cs_ingress *g = arg;
  struct cs_run *run = it->data;
  set_phase(run, CS_RUN_QUEUED);
  if (!g->closing)
    submit(run);
}

int cs__runner_create(struct cs_ingress *g) {
  static const struct pl_sched_ops ops = {
      .on_final = on_final, .on_attempt = on_attempt, .on_cancelled = on_cancelled};
  struct pl_sched_opts so = {.base_ms = g->cfg->retry.base_ms,
                             .cap_ms = g->cfg->retry.cap_ms,
                             .max_attempts = g->cfg->retry.max_attempts};
  cs__usink_init(g);
  return pl_sched_create(g->loop, &g->sink.base, &so, &ops, g, &g->sched);
}

/* ---------------------------------------------------------------------------------------------- */
/* Resume                                                                                         */
/* ---------------------------------------------------------------------------------------------- */

/* A stored request that no longer validates (the rules changed) fails its job at once. */
static void fail_unreadable(struct cs_run *run, const struct cs_field_errors *errs) {
  run->outcome = CS_JOB_FAILED;
  snprintf(run->message, sizeof(run->message), "the stored request no longer validates: %s%s%s",
           errs->n ? errs->e[0].field : "", errs->n && errs->e[0].field[0] ? " " : "",
           errs->n ? errs->e[0].message : "");
  CSR_LOG(CSR_WARN, "ingress: a pending job's request no longer validates; failing it",
          CSR_KS("job_id", run->id));
  end_job(run, 0);
}

static void resume_job(struct cs_ingress *g, const struct cs_job *job) {
  struct cs_customer cust;
  struct cs_field_errors errs;
  memset(&cust, 0, sizeof(cust));
  memset(&errs, 0, sizeof(errs));
  int rc = cs_customer_parse(job->request, job->request_len, &cust, &errs);
  if (rc == UV_ENOMEM) {
    CSR_LOG(CSR_ERROR, "ingress: out of memory; the job waits for the next start",
            CSR_KS("job_id", job->id));
    return;
  }
  struct cs_run *run =
      cs__run_create(g, job->id, job->email, job->accepted_ms, rc == 0 ? &cust : NULL);
  if (run == NULL) {
    if (rc == 0)
      cs_customer_free(&cust);
    CSR_LOG(CSR_ERROR, "ingress: out of memory; the job waits for the next start",
            CSR_KS("job_id", job->id));
    return;
  }
  run->phase = CS_RUN_ACCEPTING;
  ((struct cs_job *)job)->run = run;
  if (rc < 0)
    fail_unreadable(run, &errs);
  else
    enqueue(run);
}

void cs__runner_resume(struct cs_ingress *g) {
  size_t n = 0;
  /* A failed resume writes a JOB_END, which takes its job off the pending list: find the next
   * one first. */
  const struct cs_job *job = cs_jobs_pending_next(g->jobs, NULL);
  while (job != NULL) {
    const struct cs_job *next = cs_jobs_pending_next(g->jobs, job);
    if (job->run == NULL) {
      resume_job(g, job);
      n++;
    }
    job = next;
  }
  if (n > 0)
    CSR_LOG(CSR_INFO, "ingress: resuming pending jobs", CSR_KI("jobs", (int64_t)n));
}
