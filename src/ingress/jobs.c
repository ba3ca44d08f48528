/* The customer sync ingress's durable job model (ingress.h "The job model"): what the JOB, JOB_END
 * and CUSTOMER records of the AOF mean, and their encoders. Pure, like the state model that owns
 * it (state.c): no I/O, no clock. Apply decodes and checks everything, and allocates what it needs,
 * before it changes anything, so a refused record leaves the model as it was.
 *
 * Layout: a job is one allocation (the struct, then its id, email and request text); an ended one
 * adds one more for its account and message. Jobs sit in a chained hash table by id and in one of
 * two lists: pending (acceptance order) or ended (end order; expiry takes the head). The email →
 * account mapping is a second chained table, with a list from the least to the most recently set.
 * Ends and mapping sets share one sequence number, so a dump replays them in the order they
 * happened (see cs_jobs_dump). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/ingress.h"
#include "csurelay/pipeline.h"
#include "hash.h"

#define DEFAULT_RETAIN_MS (24 * 60 * 60 * 1000LL)
#define DEFAULT_MAX       100000
#define MIN_BUCKETS       64

static const char empty[] = "";

/* A job, its id, email and request right after it; `pub` first, so a cs_job * is a job *. */
struct job {
  struct cs_job pub;
  uint64_t h;     /* the id's hash */
  uint64_t seq;   /* ended: its place among ends and mapping sets */
  char *end_strs; /* ended: account then message, one allocation; NULL when both are "" */
  size_t bytes;   /* heap held (stats) */
};

/* One email's mapping: its key (cs_email_key's form), then the account, right after it. */
struct account {
  struct account *prev, *next; /* least recently set first */
  struct account *hnext;       /* hash chain */
  uint64_t h;
  uint64_t seq; /* when last set */
  const char *account;
  size_t bytes;
  char key[];
};

struct job_list {
  struct cs_job *head, *tail;
};

struct cs_jobs {
  int64_t retain_ms;
  size_t max_ended, max_accounts;
  struct cs_job **jobs; /* buckets of the id table, a power of two of them */
  size_t jobs_cap;
  struct job_list pending, ended;
  struct account **accts; /* buckets of the mapping table */
  size_t accts_cap;
  struct account *lru_head, *lru_tail;
  uint64_t seq;
  struct cs_jobs_stats st; /* bytes: the jobs' and the mappings' allocations */
  struct csr_jw jw;        /* scratch: requests at JOB, records in dumps */
  char err[256];
};

static struct job *as_job(const struct cs_job *x) {
  return (struct job *)x;
}

static char lower(char c) {
  return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* FNV-1a and a final mix (chains are picked by the low bits). `fold` hashes an email as its key. */
static uint64_t hash_str(const char *s, bool fold) {
  uint64_t h = CSR_FNV1A_BASIS;
  for (; *s; s++)
    h = csr_fnv1a_byte(h, (unsigned char)(fold ? lower(*s) : *s));
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  return h ^ (h >> 33);
}

/* An email equals a key when it is the key in any ASCII case: lookups fold as cs_email_key does
 * (ASCII only), without a copy. */
static bool key_equal(const char *key, const char *email) {
  for (; *key && *key == lower(*email); key++, email++)
    ;
  return *key == '\0' && *email == '\0';
}

static int fail(struct cs_jobs *j, int rc, uint8_t type, const char *fmt, const char *what) {
  char msg[200];
  snprintf(msg, sizeof(msg), fmt, what);
  snprintf(j->err, sizeof(j->err), "%s: %s", pl_rec_name(type), msg);
  return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* Jobs: the id table and the two lists                                                           */
/* ---------------------------------------------------------------------------------------------- */

static void list_push(struct job_list *l, struct cs_job *x) {
  x->_next = NULL;
  x->_prev = l->tail;
  if (l->tail)
    l->tail->_next = x;
  else
    l->head = x;
  l->tail = x;
}

static void list_unlink(struct job_list *l, struct cs_job *x) {
  if (x->_prev)
    x->_prev->_next = x->_next;
  else
    l->head = x->_next;
  if (x->_next)
    x->_next->_prev = x->_prev;
  else
    l->tail = x->_prev;
  x->_prev = x->_next = NULL;
}

static struct cs_job *job_find(const struct cs_jobs *j, const char *id, uint64_t h) {
  for (struct cs_job *x = j->jobs[h & (j->jobs_cap - 1)]; x; x = x->_hnext)
    if (as_job(x)->h == h && strcmp(x->id, id) == 0)
      return x;
  return NULL;
}

/* Doubles the buckets once there are as many jobs as buckets. Best effort: chains work at any
 * length, so a failed allocation costs speed, never an apply. */
static void jobs_grow(struct cs_jobs *j) {
  size_t cap = j->jobs_cap * 2;
  struct cs_job **b;
  if (j->st.pending + j->st.ended < j->jobs_cap || (b = calloc(cap, sizeof(*b))) == NULL)
    return;
  for (size_t i = 0; i < j->jobs_cap; i++)
    for (struct cs_job *x = j->jobs[i], *next; x; x = next) {
      struct cs_job **slot = &b[as_job(x)->h & (cap - 1)];
      next = x->_hnext;
      x->_hnext = *slot;
      *slot = x;
    }
  free(j->jobs);
  j->jobs = b;
  j->jobs_cap = cap;
}

static struct job *job_new(const char *id, const char *email, const char *req, size_t req_len) {
  size_t id_size = strlen(id) + 1, email_size = strlen(email) + 1;
  size_t bytes = sizeof(struct job) + id_size + email_size + req_len + 1;
  struct job *x = calloc(1, bytes);
  if (x == NULL)
    return NULL;
  char *p = (char *)(x + 1);
  x->pub.id = memcpy(p, id, id_size);
  x->pub.email = memcpy(p += id_size, email, email_size);
  x->pub.request = memcpy(p += email_size, req, req_len);
  p[req_len] = '\0';
  x->pub.request_len = req_len;
  x->pub.state = CS_JOB_PENDING;
  x->pub.account = x->pub.message = empty;
  x->bytes = bytes;
  return x;
}

static void job_add(struct cs_jobs *j, struct job *x) {
  jobs_grow(j);
  struct cs_job **slot = &j->jobs[x->h & (j->jobs_cap - 1)];
  x->pub._hnext = *slot;
  *slot = &x->pub;
  list_push(&j->pending, &x->pub);
  j->st.pending++;
  j->st.bytes += x->bytes;
}

static void job_free(struct job *x) {
  free(x->end_strs);
  free(x);
}

/* Drops an ended job (expiry). */
static void job_drop(struct cs_jobs *j, struct cs_job *x) {
  struct cs_job **p = &j->jobs[as_job(x)->h & (j->jobs_cap - 1)];
  while (*p != x)
    p = &(*p)->_hnext;
  *p = x->_hnext;
  list_unlink(&j->ended, x);
  j->st.ended--;
  j->st.bytes -= as_job(x)->bytes;
  job_free(as_job(x));
}

/* ---------------------------------------------------------------------------------------------- */
/* The mapping: email key → account, least recently set first                                     */
/* ---------------------------------------------------------------------------------------------- */

static struct account *account_find(const struct cs_jobs *j, const char *email, uint64_t h) {
  for (struct account *a = j->accts[h & (j->accts_cap - 1)]; a; a = a->hnext)
    if (a->h == h && key_equal(a->key, email))
      return a;
  return NULL;
}

/* As jobs_grow, for the mapping's buckets. */
static void accounts_grow(struct cs_jobs *j) {
  size_t cap = j->accts_cap * 2;
  struct account **b;
  if (j->st.accounts < j->accts_cap || (b = calloc(cap, sizeof(*b))) == NULL)
    return;
  for (size_t i = 0; i < j->accts_cap; i++)
    for (struct account *a = j->accts[i], *next; a; a = next) {
      struct account **slot = &b[a->h & (cap - 1)];
      next = a->hnext;
      a->hnext = *slot;
      *slot = a;
    }
  free(j->accts);
  j->accts = b;
  j->accts_cap = cap;
}

static struct account *account_new(const char *email, const char *account, uint64_t h) {
  size_t key_size = strlen(email) + 1, account_size = strlen(account) + 1;
  size_t bytes = sizeof(struct account) + key_size + account_size;
  struct account *a = calloc(1, bytes);
  if (a == NULL || cs_email_key(email, a->key, key_size) != 0) { /* it fits: same length */
    free(a);
    return NULL;
  }
  a->account = memcpy(a->key + key_size, account, account_size);
  a->h = h;
  a->bytes = bytes;
  return a;
}

static void lru_unlink(struct cs_jobs *j, struct account *a) {
  if (a->prev)
    a->prev->next = a->next;
  else
    j->lru_head = a->next;
  if (a->next)
    a->next->prev = a->prev;
  else
    j->lru_tail = a->prev;
  a->prev = a->next = NULL;
}

static void lru_push(struct cs_jobs *j, struct account *a) {
  a->next = NULL;
  a->prev = j->lru_tail;
  if (j->lru_tail)
    j->lru_tail->next = a;
  else
    j->lru_head = a;
  j->lru_tail = a;
}

static void account_add(struct cs_jobs *j, struct account *a) {
  accounts_grow(j);
  struct account **slot = &j->accts[a->h & (j->accts_cap - 1)];
  a->hnext = *slot;
  *slot = a;
  lru_push(j, a);
  j->st.accounts++;
  j->st.bytes += a->bytes;
}

static void account_drop(struct cs_jobs *j, struct account *a) {
  struct account **p = &j->accts[a->h & (j->accts_cap - 1)];
  while (*p != a)
    p = &(*p)->hnext;
  *p = a->hnext;
  lru_unlink(j, a);
  j->st.accounts--;
  j->st.bytes -= a->bytes;
  free(a);
}

/* A mapping about to be set: the email's entry, and a new one when its account changes. */
struct mapping_change {
  struct account *old, *fresh;
};

/* Allocates what the set needs; nothing changes. 0 or UV_ENOMEM. */
static int mapping_prepare(struct cs_jobs *j, const char *email, const char *account,
                           struct mapping_change *m) {
  uint64_t h = hash_str(email, true);
  m->old = account_find(j, email, h);
  m->fresh = NULL;
  if (m->old && strcmp(m->old->account, account) == 0)
    return 0;
  m->fresh = account_new(email, account, h);
  return m->fresh ? 0 : UV_ENOMEM;
}

/* Sets the mapping (the most recent now) and evicts the least recently set past max_accounts. */
static void mapping_commit(struct cs_jobs *j, const struct mapping_change *m, uint64_t seq) {
  struct account *a = m->old;
  if (m->fresh) {
    if (a)
      account_drop(j, a);
    account_add(j, a = m->fresh);
  } else {
    lru_unlink(j, a);
    lru_push(j, a);
  }
  a->seq = seq;
  while (j->st.accounts > j->max_accounts)
    account_drop(j, j->lru_head);
}

/* ---------------------------------------------------------------------------------------------- */
/* Decoding and applying                                                                          */
/* ---------------------------------------------------------------------------------------------- */

struct rec {
  uint8_t type;
  yajl_val root;
};

/* A required string; empty ones are refused too (no record has a meaningful empty one). */
static int need_str(struct cs_jobs *j, const struct rec *r, const char *key, const char **out) {
  *out = csr_json_get_str(r->root, key);
  if (*out == NULL)
    return fail(j, CSR_EPARSE, r->type, "missing or non-string field \"%s\"", key);
  if ((*out)[0] == '\0')
    return fail(j, CSR_EPARSE, r->type, "field \"%s\" is empty", key);
  return 0;
}

/* An optional string: absent or null reads as "". */
static int opt_str(struct cs_jobs *j, const struct rec *r, const char *key, const char **out) {
  yajl_val v = csr_json_get(r->root, key);
  *out = empty;
  if (v == NULL || YAJL_IS_NULL(v))
    return 0;
  if ((*out = csr_json_str(v)) == NULL)
    return fail(j, CSR_EPARSE, r->type, "field \"%s\" is not a string", key);
  return 0;
}

static int need_int(struct cs_jobs *j, const struct rec *r, const char *key, int64_t min,
                    int64_t max, int64_t *out) {
  if (csr_json_get_int(r->root, key, out) != 0 || *out < min || *out > max)
    return fail(j, CSR_EPARSE, r->type, "missing, non-integer or out of range field \"%s\"", key);
  return 0;
}

static int need_bool(struct cs_jobs *j, const struct rec *r, const char *key, bool *out) {
  yajl_val v = csr_json_get(r->root, key);
  if (!YAJL_IS_TRUE(v) && !YAJL_IS_FALSE(v))
    return fail(j, CSR_EPARSE, r->type, "missing or non-boolean field \"%s\"", key);
  *out = YAJL_IS_TRUE(v);
  return 0;
}

static int apply_job(struct cs_jobs *j, const struct rec *r) {
  const char *id, *email, *text;
  size_t len;
  int64_t at_ms;
  int rc;
  if ((rc = need_str(j, r, "id", &id)) != 0 || (rc = need_str(j, r, "email", &email)) != 0 ||
      (rc = need_int(j, r, "at_ms", INT64_MIN, INT64_MAX, &at_ms)) != 0)
    return rc;
  yajl_val req = csr_json_get(r->root, "req");
  if (req == NULL || !YAJL_IS_OBJECT(req))
    return fail(j, CSR_EPARSE, r->type, "missing or non-object field \"%s\"", "req");
  uint64_t h = hash_str(id, false);
  if (job_find(j, id, h))
    return fail(j, UV_EEXIST, r->type, "id \"%s\" is already known", id);
  /* The request is kept as compact text, re-encoded from the tree so numbers keep their text. */
  csr_jw_reset(&j->jw);
  csr_jw_value(&j->jw, req);
  if (csr_jw_finish(&j->jw, &text, &len) != 0)
    return fail(j, CSR_EPARSE, r->type, "field \"%s\" cannot be re-encoded", "req");
  struct job *x = job_new(id, email, text, len);
  if (x == NULL)
    return UV_ENOMEM;
  x->h = h;
  x->pub.accepted_ms = at_ms;
  job_add(j, x);
  return 0;
}

/* A decoded JOB_END. */
struct end {
  struct cs_job *job;
  enum cs_job_state outcome;
  const char *account, *message;
  bool created;
  int64_t status, attempts, at_ms;
};

static int decode_outcome(struct cs_jobs *j, const struct rec *r, struct end *e) {
  const char *o;
  int rc = need_str(j, r, "outcome", &o);
  if (rc != 0)
    return rc;
  if (strcmp(o, "done") == 0)
    e->outcome = CS_JOB_DONE;
  else if (strcmp(o, "failed") == 0)
    e->outcome = CS_JOB_FAILED;
  else
    return fail(j, CSR_EPARSE, r->type, "field \"outcome\" is \"%s\"", o);
  if (e->outcome == CS_JOB_DONE && e->account[0] == '\0')
    return fail(j, CSR_EPARSE, r->type, "field \"%s\" is missing or empty for a done job",
                "account");
  if (e->outcome == CS_JOB_FAILED && e->account[0] != '\0')
    return fail(j, CSR_EPARSE, r->type, "field \"%s\" is not empty for a failed job", "account");
  return 0;
}

static int decode_end(struct cs_jobs *j, const struct rec *r, struct end *e) {
  const char *id;
  int rc;
  if ((rc = need_str(j, r, "id", &id)) != 0 || (rc = opt_str(j, r, "account", &e->account)) != 0 ||
      (rc = decode_outcome(j, r, e)) != 0 || (rc = need_bool(j, r, "created", &e->created)) != 0 ||
      (rc = need_int(j, r, "status", INT_MIN, INT_MAX, &e->status)) != 0 ||
      (rc = opt_str(j, r, "message", &e->message)) != 0 ||
      (rc = need_int(j, r, "attempts", 0, UINT_MAX, &e->attempts)) != 0 ||
      (rc = need_int(j, r, "at_ms", INT64_MIN, INT64_MAX, &e->at_ms)) != 0)
    return rc;
  if ((e->job = job_find(j, id, hash_str(id, false))) == NULL)
    return fail(j, CSR_ECORRUPT, r->type, "unknown id \"%s\"", id);
  if (e->job->state != CS_JOB_PENDING)
    return fail(j, CSR_ECORRUPT, r->type, "id \"%s\" has already ended", id);
  return 0;
}

/* Account and message in one allocation (NULL when both are ""; *out NULL then too). */
static int end_strings(const struct end *e, char **out) {
  size_t a = strlen(e->account) + 1, m = strlen(e->message) + 1;
  *out = NULL;
  if (a + m == 2)
    return 0;
  if ((*out = malloc(a + m)) == NULL)
    return UV_ENOMEM;
  memcpy(*out, e->account, a);
  memcpy(*out + a, e->message, m);
  return 0;
}

static int apply_job_end(struct cs_jobs *j, const struct rec *r) {
  struct end e;
  struct mapping_change m;
  char *strs;
  int rc = decode_end(j, r, &e);
  if (rc != 0 || (rc = end_strings(&e, &strs)) != 0)
    return rc;
  if (e.outcome == CS_JOB_DONE && (rc = mapping_prepare(j, e.job->email, e.account, &m)) != 0) {
    free(strs);
    return rc;
  }
  struct job *x = as_job(e.job);
  size_t strs_bytes = strs ? strlen(e.account) + strlen(e.message) + 2 : 0;
  list_unlink(&j->pending, e.job);
  list_push(&j->ended, e.job);
  j->st.pending--;
  j->st.ended++;
  j->st.bytes += strs_bytes;
  x->bytes += strs_bytes;
  x->end_strs = strs;
  x->pub.state = e.outcome;
  x->pub.account = strs ? strs : empty;
  x->pub.message = strs ? strs + strlen(e.account) + 1 : empty;
  x->pub.created = e.outcome == CS_JOB_DONE && e.created;
  x->pub.status = (int)e.status;
  x->pub.attempts = (unsigned)e.attempts;
  x->pub.ended_ms = e.at_ms;
  x->seq = ++j->seq;
  if (e.outcome == CS_JOB_DONE) /* the email's mapping follows the job (same place in order) */
    mapping_commit(j, &m, x->seq);
  return 0;
}

static int apply_customer(struct cs_jobs *j, const struct rec *r) {
  const char *email, *account;
  struct mapping_change m;
  int rc;
  if ((rc = need_str(j, r, "email", &email)) != 0 ||
      (rc = need_str(j, r, "account", &account)) != 0 ||
      (rc = mapping_prepare(j, email, account, &m)) != 0)
    return rc;
  mapping_commit(j, &m, ++j->seq);
  return 0;
}

int cs_jobs_apply(struct cs_jobs *j, uint8_t type, const void *payload, size_t len) {
  if (j == NULL || (payload == NULL && len > 0))
    return UV_EINVAL;
  if (type != PL_REC_JOB && type != PL_REC_JOB_END && type != PL_REC_CUSTOMER) {
    snprintf(j->err, sizeof(j->err), "%s (type %u): not a job record", pl_rec_name(type),
             (unsigned)type);
    return CSR_ECORRUPT;
  }
  char why[160];
  struct rec r = {.type = type, .root = csr_json_parse(payload, len, why, sizeof(why))};
  if (r.root == NULL || !YAJL_IS_OBJECT(r.root)) {
    int rc = fail(j, CSR_EPARSE, type, "malformed payload: %s", r.root ? "not an object" : why);
    csr_json_free(r.root);
    return rc;
  }
  int rc = type == PL_REC_JOB       ? apply_job(j, &r)
           : type == PL_REC_JOB_END ? apply_job_end(j, &r)
                                    : apply_customer(j, &r);
  if (rc == UV_ENOMEM)
    fail(j, rc, type, "%s", "out of memory");
  csr_json_free(r.root);
  return rc;
}

const char *cs_jobs_error(const struct cs_jobs *j) {
  return j->err;
}

/* ---------------------------------------------------------------------------------------------- */
/* Life, queries and expiry                                                                       */
/* ---------------------------------------------------------------------------------------------- */

int cs_jobs_create(const struct cs_jobs_opts *opts, struct cs_jobs **out) {
  if (out == NULL)
    return UV_EINVAL;
  *out = NULL;
  struct cs_jobs *j = calloc(1, sizeof(*j));
  if (j == NULL)
    return UV_ENOMEM;
  j->retain_ms = opts && opts->retain_ms > 0 ? opts->retain_ms : DEFAULT_RETAIN_MS;
  j->max_ended = opts && opts->max_ended ? opts->max_ended : DEFAULT_MAX;
  j->max_accounts = opts && opts->max_accounts ? opts->max_accounts : DEFAULT_MAX;
  j->jobs = calloc(MIN_BUCKETS, sizeof(*j->jobs));
  j->accts = calloc(MIN_BUCKETS, sizeof(*j->accts));
  j->jobs_cap = j->accts_cap = MIN_BUCKETS;
  if (j->jobs == NULL || j->accts == NULL || csr_jw_init(&j->jw) != 0) {
    free(j->jobs);
    free(j->accts);
    free(j);
    return UV_ENOMEM;
  }
  *out = j;
  return 0;
}

static void free_list(struct cs_job *x) {
  for (struct cs_job *next; x; x = next) {
    next = x->_next;
    job_free(as_job(x));
  }
}

void cs_jobs_destroy(struct cs_jobs *j) {
  if (j == NULL)
    return;
  free_list(j->pending.head);
  free_list(j->ended.head);
  for (struct account *a = j->lru_head, *next; a; a = next) {
    next = a->next;
    free(a);
  }
  free(j->jobs);
  free(j->accts);
  csr_jw_free(&j->jw);
  free(j);
}

struct cs_job *cs_jobs_find(const struct cs_jobs *j, const char *id) {
  return j && id ? job_find(j, id, hash_str(id, false)) : NULL;
}

struct cs_job *cs_jobs_pending_next(const struct cs_jobs *j, const struct cs_job *prev) {
  return prev ? prev->_next : j->pending.head;
}

const char *cs_jobs_account(const struct cs_jobs *j, const char *email) {
  const struct account *a = j && email ? account_find(j, email, hash_str(email, true)) : NULL;
  return a ? a->account : NULL;
}

size_t cs_jobs_expire(struct cs_jobs *j, int64_t now_ms) {
  /* Past retain_ms: ended_ms + retain_ms <= now_ms, written so that it cannot overflow. */
  bool by_time = now_ms >= INT64_MIN + j->retain_ms;
  int64_t last_kept_end = by_time ? now_ms - j->retain_ms : 0;
  size_t dropped = 0;
  struct cs_job *x;
  while ((x = j->ended.head) != NULL &&
         (j->st.ended > j->max_ended || (by_time && x->ended_ms <= last_kept_end))) {
    job_drop(j, x);
    dropped++;
  }
  j->st.expired += dropped;
  return dropped;
}

void cs_jobs_stats(const struct cs_jobs *j, struct cs_jobs_stats *out) {
  *out = j->st;
  out->bytes += sizeof(*j) + j->jobs_cap * sizeof(*j->jobs) + j->accts_cap * sizeof(*j->accts);
}

/* ---------------------------------------------------------------------------------------------- */
/* Dump                                                                                           */
/* ---------------------------------------------------------------------------------------------- */

static int dump_job(struct cs_jobs *j, struct pl_store_emitter *e, const struct cs_job *x) {
  return pl_store_emit_jw(
      e, PL_REC_JOB, &j->jw,
      cs_rec_job(&j->jw, x->id, x->email, x->accepted_ms, x->request, x->request_len));
}

static int dump_ended(struct cs_jobs *j, struct pl_store_emitter *e, const struct cs_job *x) {
  struct cs_rec_job_end r = {x->id,     x->state,   x->account,  x->created,
                             x->status, x->message, x->attempts, x->ended_ms};
  int rc = dump_job(j, e, x);
  return rc ? rc : pl_store_emit_jw(e, PL_REC_JOB_END, &j->jw, cs_rec_job_end(&j->jw, &r));
}

/*
 * The ended jobs (end order) and the mappings (least recently set first) merged by their sequence
 * numbers, so the replay sets every mapping in the order the model did: a JOB_END done sets its
 * email's mapping, and replaying it after a later CUSTOMER would bring back an older account.
 * A mapping last set by a held job's JOB_END needs no CUSTOMER of its own. Pending jobs last.
 */
int cs_jobs_dump(struct cs_jobs *j, struct pl_store_emitter *e) {
  const struct cs_job *x = j->ended.head;
  const struct account *a = j->lru_head;
  int rc = 0;
  csr_jw_reset(&j->jw);
  while (rc == 0 && (x != NULL || a != NULL)) {
    if (x == NULL || (a != NULL && a->seq < as_job(x)->seq)) {
      rc =
          pl_store_emit_jw(e, PL_REC_CUSTOMER, &j->jw, cs_rec_customer(&j->jw, a->key, a->account));
      a = a->next;
      continue;
    }
    if (a != NULL && a->seq == as_job(x)->seq)
      a = a->next;
    rc = dump_ended(j, e, x);
    x = x->_next;
  }
  for (x = j->pending.head; rc == 0 && x != NULL; x = x->_next)
    rc = dump_job(j, e, x);
  return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* Encoders                                                                                       */
/* ---------------------------------------------------------------------------------------------- */

/* Every string a record requires is non-empty too: apply refuses empty ones. */
static bool is_set(const char *s) {
  return s != NULL && s[0] != '\0';
}

int cs_rec_job(struct csr_jw *jw, const char *id, const char *email, int64_t at_ms, const char *req,
               size_t req_len) {
  if (jw == NULL || !is_set(id) || !is_set(email) || req == NULL)
    return UV_EINVAL;
  /* Embedded through the parser: the writer has no raw insert, and a request that is not a JSON
   * object would make a record no replay accepts. */
  yajl_val v = csr_json_parse(req, req_len, NULL, 0);
  if (v == NULL || !YAJL_IS_OBJECT(v)) {
    csr_json_free(v);
    return UV_EINVAL;
  }
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "id", id);
  csr_jw_kstr(jw, "email", email);
  csr_jw_kint(jw, "at_ms", at_ms);
  csr_jw_key(jw, "req");
  csr_jw_value(jw, v);
  csr_jw_obj_end(jw);
  csr_json_free(v);
  return 0;
}

int cs_rec_job_end(struct csr_jw *jw, const struct cs_rec_job_end *e) {
  if (jw == NULL || e == NULL || !is_set(e->id))
    return UV_EINVAL;
  const char *account = e->account ? e->account : empty;
  bool done = e->outcome == CS_JOB_DONE;
  if (done ? account[0] == '\0' : e->outcome != CS_JOB_FAILED || account[0] != '\0')
    return UV_EINVAL;
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "id", e->id);
  csr_jw_kstr(jw, "outcome", done ? "done" : "failed");
  csr_jw_kstr(jw, "account", account);
  csr_jw_kbool(jw, "created", done && e->created);
  csr_jw_kint(jw, "status", e->status);
  csr_jw_kstr(jw, "message", e->message ? e->message : empty);
  csr_jw_kint(jw, "attempts", e->attempts);
  csr_jw_kint(jw, "at_ms", e->at_ms);
  csr_jw_obj_end(jw);
  return 0;
}

int cs_rec_customer(struct csr_jw *jw, const char *email, const char *account) {
  if (jw == NULL || !is_set(email) || !is_set(account))
    return UV_EINVAL;
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "email", email);
  csr_jw_kstr(jw, "account", account);
  csr_jw_obj_end(jw);
  return 0;
}
