/* The customer sync ingress's runtime (csurelay/ingress.h, "The listener and the job runner"),
 * shared by its three files:
 *   ingress.c         the listener: auth, POST /v1/customers, GET /v1/customers/jobs/{id}, the
 *                     requests waiting for their job, open, stop, metrics and stats;
 *   ingress_run.c     the jobs at run time: one FIFO per email, the scheduler, the JOB_END
 *                     records, the resume of pending jobs at open;
 *   ingress_upsert.c  one attempt of a job (the scheduler's sink): token, SearchByFields, then
 *                     PATCH or POST Customers, classified by the sinks' rules.
 *
 * A job the runtime works on has a `struct cs_run` (the job's `run`), from its POST (or its resume)
 * until its JOB_END is durable. The run keeps its own copies of what it needs: the state's views
 * are only valid until the next apply or expire. */
#ifndef CSURELAY_INGRESS_INTERNAL_H
#define CSURELAY_INGRESS_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "csurelay/ingress.h"
#include "csurelay/pipeline.h"

#define CS_JOB_ID_LEN    32  /* hex characters of a job id */
#define CS_ACCOUNT_MAX   128 /* an AccountNumber (digits, or an async customer's GUID) */

struct cs_run;
struct cs_equeue;

/** A POST waiting for its job (at most sync_wait_ms, or until its JOB is durable). */
struct cs_waiter {
  struct rx_http_request *req;
  struct cs_run *run;
  uint64_t deadline_ms; /* loop time */
  bool expired;         /* sync_wait_ms passed before the JOB was durable: 202 once it is */
  struct cs_waiter *prev, *next; /* the ingress's deadline list (FIFO = deadline order) */
  struct cs_waiter *rnext;       /* the run's waiters */
};

enum cs_run_phase {
  CS_RUN_ACCEPTING, /* its JOB is appended, not yet durable */
  CS_RUN_QUEUED,    /* durable, waiting behind an earlier job of its email */
  CS_RUN_RUNNING,   /* submitted to the scheduler */
  CS_RUN_ENDING,    /* its JOB_END is appended, not yet durable */
  CS_RUN_STUCK,     /* a record failed (admission stopped): it waits for the next start */
};

enum cs_call { CS_CALL_SEARCH, CS_CALL_PATCH, CS_CALL_CREATE };

/** One attempt in flight (ingress_upsert.c). */
struct cs_attempt {
  enum cs_call call;
  bool in_token;  /* waiting for the token cache, else for the HTTP answer */
  bool refreshed; /* this attempt's one token refresh after a 401 is spent */
  bool patch_404; /* this attempt went back to the search once after a 404 */
  bool cancelled;
  struct pl_token_req tok;
  struct rx_http_req http;
  bool http_started;
  char *token; /* the token the call carries, to invalidate exactly that one after a 401 */
  char *url;   /* PATCH: Customers('...'); else one of the ingress's */
  char *body;
  char account[CS_ACCOUNT_MAX]; /* the customer this attempt works on, "" before it knows */
};

struct cs_run {
  struct cs_ingress *g;
  char id[CS_JOB_ID_LEN + 1];
  char *email; /* as given */
  char *key;   /* cs_email_key */
  struct cs_customer cust;
  bool has_cust;       /* cust is filled (a stored request that no longer parses has none) */
  int64_t accepted_ms; /* wall clock */
  enum cs_run_phase phase;
  struct cs_equeue *q;
  struct cs_run *qnext;       /* the next job of the email */
  struct cs_run *prev, *next; /* every run of the ingress */
  struct cs_waiter *waiters;
  struct rx_fut durable; /* the JOB's, then the JOB_END's */
  /* scheduling: it.data = it.delivery_data = this, it.event = &ske (ske.id = id) */
  struct sk_event ske;
  struct pl_sched_item it;
  unsigned attempts; /* started so far */
  bool skip_mapping; /* a PATCH of the mapped account answered 404: search from now on */
  struct cs_attempt a;
  /* the outcome, copied before the JOB_END is written */
  enum cs_job_state outcome;
  bool created;
  int status;
  char account[CS_ACCOUNT_MAX];
  char message[256];
};

/** The jobs of one email (cs_email_key): the head runs, the others wait. */
struct cs_equeue {
  char *key;
  struct cs_equeue *hnext;
  struct cs_run *head, *tail;
};

/** The scheduler's sink (ingress_upsert.c): deliver() runs one attempt of a run. */
struct cs_usink {
  struct sk_sink base;
  struct csr_sink_conf conf;
  struct cs_ingress *g;
};

struct cs_ingress_metrics {
  struct csr_family *requests; /* by code */
  struct {
    int code;
    struct csr_series *s;
  } codes[12];
  struct csr_series *invalid, *created, *updated, *failed, *retries, *running, *queued;
  struct csr_series *job_seconds;
};

struct cs_ingress {
  struct rx_loop *loop;
  const struct csr_config *cfg;
  struct rx_http *http;
  struct pl_tokens *tokens;
  struct pl_admit *admit;
  struct pl_state *state;
  struct cs_jobs *jobs;
  struct csr_metrics *metrics;
  char *token; /* the ingress token, NULL = no auth */
  struct rx_http_server srv;
  bool srv_init;
  /* the runner */
  struct cs_usink sink;
  struct pl_sched *sched;
  char *search_url, *create_url;
  uint64_t timeout_ms;
  struct cs_run *runs;
  size_t n_runs;
  struct cs_equeue **buckets;
  size_t n_buckets, n_queues;
  /* waiting requests */
  struct cs_waiter *wait_head, *wait_tail;
  struct rx_timer wait_timer, expire_timer;
  bool wait_timer_init, expire_timer_init;
  struct csr_jw jw;
  bool jw_init;
  struct cs_ingress_stats st;
  struct cs_ingress_metrics m;
  /* stop */
  bool closing;
  unsigned parts;       /* handles and the scheduler not yet closed */
  unsigned durable_out; /* records whose durable future has not completed */
  void (*stop_cb)(void *arg);
  void *stop_arg;
};

/* ingress.c */
/** The job ended and its JOB_END is durable (or the run is stuck): answer its waiters. */
void cs__ingress_answer_run(struct cs_run *run);
/** The run's JOB is durable (result 0) or failed to be: answer what must not wait longer. */
void cs__ingress_run_accepted(struct cs_run *run, int result);
/** Refreshes the gauges (jobs running and queued). */
void cs__ingress_gauges(struct cs_ingress *g);
/** A stop part (a handle, the scheduler, a durable future) finished: free once all have. */
void cs__ingress_part_done(struct cs_ingress *g);

/* ingress_run.c */
/** A run for job `id` (copies everything); NULL when out of memory. `cust` is moved in. */
struct cs_run *cs__run_create(struct cs_ingress *g, const char *id, const char *email,
                              int64_t accepted_ms, struct cs_customer *cust);
/** Unlinks and frees a run that holds nothing in flight. */
void cs__run_free(struct cs_run *run);
/** Appends and applies the JOB of `run` with its durable future. 0, or < 0 when refused. */
CSR_NODISCARD int cs__run_accept(struct cs_run *run);
/** Creates the scheduler over the ingress's sink. */
CSR_NODISCARD int cs__runner_create(struct cs_ingress *g);
/** Takes every pending job of the state (after a restart). */
void cs__runner_resume(struct cs_ingress *g);
/** Frees the email queues (at the end of stop). */
void cs__runner_free(struct cs_ingress *g);

/* ingress_upsert.c */
void cs__usink_init(struct cs_ingress *g);
/** The sink's deliver(), exposed for the scheduler's item setup (d->data is the run). */
extern const struct sk_ops cs__usink_ops;

#endif
