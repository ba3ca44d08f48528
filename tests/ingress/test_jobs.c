/* The customer sync job model (src/ingress/jobs.c): JOB, JOB_END and CUSTOMER applied, found and
 * listed; the pending order; ended jobs expiring by time and by count; the email → account
 * mapping (any case, the least recently set evicted); every refused record naming itself and
 * changing nothing; the encoders' refusals; dumps written by a real store's compaction replaying
 * into an equal model; and 100,000 jobs against a plain reference model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "csurelay/ingress.h"
#include "csurelay/pipeline.h"

/* ---------------------------------------------------------------------------------------------- */
/* Fixtures: encode a record with the cs_rec_* encoders and apply it                              */
/* ---------------------------------------------------------------------------------------------- */

static struct csr_jw jw; /* the tests' encoder (group setup) */

/* Applies what jw holds (enc: the encoder's answer); returns apply's answer. */
static int put(struct cs_jobs *j, uint8_t type, int enc) {
  const char *text;
  size_t len;
  assert_int_equal(enc, 0);
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
  int rc = cs_jobs_apply(j, type, text, len);
  csr_jw_reset(&jw);
  return rc;
}

static int raw(struct cs_jobs *j, uint8_t type, const char *text) {
  return cs_jobs_apply(j, type, text, strlen(text));
}

static int job(struct cs_jobs *j, const char *id, const char *email, int64_t at, const char *req) {
  return put(j, PL_REC_JOB, cs_rec_job(&jw, id, email, at, req, strlen(req)));
}

static int done(struct cs_jobs *j, const char *id, const char *account, bool created, int64_t at) {
  struct cs_rec_job_end e = {id, CS_JOB_DONE, account, created, created ? 201 : 200, NULL, 1, at};
  return put(j, PL_REC_JOB_END, cs_rec_job_end(&jw, &e));
}

static int failed(struct cs_jobs *j, const char *id, int status, const char *message,
                  unsigned attempts, int64_t at) {
  struct cs_rec_job_end e = {id, CS_JOB_FAILED, NULL, false, status, message, attempts, at};
  return put(j, PL_REC_JOB_END, cs_rec_job_end(&jw, &e));
}

static int customer(struct cs_jobs *j, const char *email, const char *account) {
  return put(j, PL_REC_CUSTOMER, cs_rec_customer(&jw, email, account));
}

static struct cs_jobs *create(int64_t retain_ms, size_t max_ended, size_t max_accounts) {
  struct cs_jobs_opts o = {retain_ms, max_ended, max_accounts};
  struct cs_jobs *j;
  assert_int_equal(cs_jobs_create(&o, &j), 0);
  return j;
}

static struct cs_jobs_stats stats(const struct cs_jobs *j) {
  struct cs_jobs_stats st;
  cs_jobs_stats(j, &st);
  return st;
}

/* The pending ids in order, joined by commas. */
static const char *pending_ids(const struct cs_jobs *j) {
  static char buf[1024];
  size_t n = 0;
  buf[0] = '\0';
  for (const struct cs_job *x = NULL; (x = cs_jobs_pending_next(j, x)) != NULL;)
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s", n ? "," : "", x->id);
  return buf;
}

#define REQ "{\"email\":\"Ann@Example.com\",\"firstName\":\"Ann\",\"optIn\":true}"

/* ---------------------------------------------------------------------------------------------- */
/* Dumps through a real store                                                                     */
/* ---------------------------------------------------------------------------------------------- */

struct loop {
  uv_loop_t uv;
  struct rx_loop loop;
  char dir[64];
};

static void loop_open(struct loop *l) {
  assert_int_equal(uv_loop_init(&l->uv), 0);
  assert_int_equal(rx_loop_init(&l->loop, &l->uv), 0);
  snprintf(l->dir, sizeof(l->dir), "/tmp/csr-jobs-XXXXXX");
  assert_non_null(mkdtemp(l->dir));
}

static void loop_close(struct loop *l) {
  assert_int_equal(rx_loop_close(&l->loop), 0);
  DIR *d = opendir(l->dir);
  struct dirent *de;
  char p[512];
  while (d && (de = readdir(d)) != NULL)
    if (de->d_name[0] != '.') {
      snprintf(p, sizeof(p), "%s/%s", l->dir, de->d_name);
      unlink(p);
    }
  if (d)
    closedir(d);
  assert_int_equal(rmdir(l->dir), 0);
}

static int refuse_replay(void *arg, uint8_t type, const void *payload, size_t len) {
  return UV_EPROTO; /* the directory is new: nothing to replay */
}

static int on_dump(void *arg, struct pl_store_emitter *e) {
  return cs_jobs_dump(arg, e);
}

static void on_closed(void *arg) {
  (*(int *)arg)++;
}

/* The AOF in l->dir becomes the dump of `j`: a store's compaction writes it. */
static void write_dump(struct loop *l, struct cs_jobs *j) {
  struct pl_store_opts o = {.dir = l->dir, .fsync = CSR_FSYNC_NONE};
  struct pl_store *s;
  struct csr_err err;
  int closed = 0;
  assert_int_equal(pl_store_open(&l->loop, &o, refuse_replay, on_dump, j, &s, &err), 0);
  assert_int_equal(pl_store_compact(s), 0);
  rx_loop_run(&l->loop);
  assert_int_equal(pl_store_stats(s)->compactions, 1);
  pl_store_close(s, on_closed, &closed);
  rx_loop_run(&l->loop);
  assert_int_equal(closed, 1);
}

struct text {
  char *buf;
  size_t len, cap;
};

static int collect(void *arg, uint8_t type, const void *payload, size_t len) {
  struct text *t = arg;
  size_t need = t->len + len + 16;
  if (need > t->cap) {
    t->cap = need * 2;
    t->buf = realloc(t->buf, t->cap);
    assert_non_null(t->buf);
  }
  t->len += (size_t)snprintf(t->buf + t->len, t->cap - t->len, "%s %.*s\n", pl_rec_name(type),
                             (int)len, (const char *)payload);
  return 0;
}

/* The dump of `j` as text, one "TYPE payload" line per record (free it). */
static char *dump_text(struct cs_jobs *j) {
  struct loop l;
  struct text t = {calloc(1, 1), 0, 1};
  loop_open(&l);
  write_dump(&l, j);
  assert_int_equal(pl_store_read(l.dir, collect, &t, NULL, NULL), 0);
  loop_close(&l);
  return t.buf;
}

static int replay_into(void *arg, uint8_t type, const void *payload, size_t len) {
  int rc = cs_jobs_apply(arg, type, payload, len);
  if (rc != 0)
    print_message("replay: %s\n", cs_jobs_error(arg));
  return rc;
}

/* A fresh model with options `o`, rebuilt by replaying the dump of `j` from a store's file. */
static struct cs_jobs *replayed(struct cs_jobs *j, const struct cs_jobs_opts *o) {
  struct loop l;
  struct cs_jobs *fresh;
  loop_open(&l);
  write_dump(&l, j);
  assert_int_equal(cs_jobs_create(o, &fresh), 0);
  assert_int_equal(pl_store_read(l.dir, replay_into, fresh, NULL, NULL), 0);
  loop_close(&l);
  return fresh;
}

static void compare_job(const struct cs_job *a, const struct cs_job *b) {
  assert_non_null(b);
  assert_string_equal(a->id, b->id);
  assert_string_equal(a->email, b->email);
  assert_int_equal(a->request_len, b->request_len);
  assert_memory_equal(a->request, b->request, a->request_len);
  assert_int_equal(a->request[a->request_len], '\0');
  assert_int_equal(a->accepted_ms, b->accepted_ms);
  assert_int_equal(a->state, b->state);
  assert_string_equal(a->account, b->account);
  assert_int_equal(a->created, b->created);
  assert_int_equal(a->status, b->status);
  assert_string_equal(a->message, b->message);
  assert_int_equal(a->attempts, b->attempts);
  assert_int_equal(a->ended_ms, b->ended_ms);
}

/* Equal models: counts, every listed id's fields, the pending order, every listed email's
 * account, and the same dump (which also fixes the ended order and the mapping's order). */
static void compare(struct cs_jobs *x, struct cs_jobs *y, const char *const *ids, size_t n_ids,
                    const char *const *emails, size_t n_emails) {
  struct cs_jobs_stats a = stats(x), b = stats(y);
  assert_int_equal(a.pending, b.pending);
  assert_int_equal(a.ended, b.ended);
  assert_int_equal(a.accounts, b.accounts);
  const struct cs_job *p = NULL, *q = NULL;
  while ((p = cs_jobs_pending_next(x, p)) != NULL) {
    q = cs_jobs_pending_next(y, q);
    compare_job(p, q);
  }
  assert_null(cs_jobs_pending_next(y, q));
  for (size_t i = 0; i < n_ids; i++) {
    p = cs_jobs_find(x, ids[i]);
    q = cs_jobs_find(y, ids[i]);
    assert_int_equal(p != NULL, q != NULL);
    if (p)
      compare_job(p, q);
  }
  for (size_t i = 0; i < n_emails; i++) {
    const char *u = cs_jobs_account(x, emails[i]), *v = cs_jobs_account(y, emails[i]);
    assert_int_equal(u != NULL, v != NULL);
    if (u)
      assert_string_equal(u, v);
  }
  char *dx = dump_text(x), *dy = dump_text(y);
  assert_string_equal(dx, dy);
  free(dx);
  free(dy);
}

/* ---------------------------------------------------------------------------------------------- */
/* Jobs                                                                                           */
/* ---------------------------------------------------------------------------------------------- */

static void test_apply_find(void **state) {
  struct cs_jobs *j;
  assert_int_equal(cs_jobs_create(NULL, &j), 0);
  assert_null(cs_jobs_pending_next(j, NULL));
  assert_int_equal(job(j, "j1", "Ann@Example.com", 1000, REQ), 0);
  assert_int_equal(job(j, "j2", "bob@example.com", 1001, "{\"email\":\"bob@example.com\"}"), 0);
  assert_int_equal(job(j, "j3", "ann@example.com", 1002, REQ), 0);
  assert_string_equal(pending_ids(j), "j1,j2,j3");

  struct cs_job *x = cs_jobs_find(j, "j1");
  assert_non_null(x);
  assert_string_equal(x->id, "j1");
  assert_string_equal(x->email, "Ann@Example.com"); /* as given */
  assert_string_equal(x->request, REQ);
  assert_int_equal(x->request_len, strlen(REQ));
  assert_int_equal(x->accepted_ms, 1000);
  assert_int_equal(x->state, CS_JOB_PENDING);
  assert_string_equal(x->account, "");
  assert_string_equal(x->message, "");
  assert_false(x->created);
  assert_int_equal(x->status, 0);
  assert_int_equal(x->attempts, 0);
  assert_int_equal(x->ended_ms, 0);
  assert_null(x->run);
  assert_null(cs_jobs_find(j, "j4"));
  assert_null(cs_jobs_find(j, "J1"));
  assert_null(cs_jobs_account(j, "ann@example.com"));

  /* done: out of the pending list, the mapping follows; the runtime's pointer stays valid */
  x->run = &x;
  assert_int_equal(done(j, "j1", "C000123", true, 5000), 0);
  assert_ptr_equal(cs_jobs_find(j, "j1"), x);
  assert_ptr_equal(x->run, &x);
  assert_string_equal(pending_ids(j), "j2,j3");
  assert_int_equal(x->state, CS_JOB_DONE);
  assert_string_equal(x->account, "C000123");
  assert_true(x->created);
  assert_int_equal(x->status, 201);
  assert_int_equal(x->attempts, 1);
  assert_int_equal(x->ended_ms, 5000);
  assert_string_equal(x->message, "");
  assert_string_equal(cs_jobs_account(j, "ANN@example.COM"), "C000123");

  /* failed: Commerce's message, no account, no mapping */
  assert_int_equal(failed(j, "j2", 400, "The email is not valid.", 3, 6000), 0);
  x = cs_jobs_find(j, "j2");
  assert_int_equal(x->state, CS_JOB_FAILED);
  assert_string_equal(x->account, "");
  assert_false(x->created);
  assert_int_equal(x->status, 400);
  assert_string_equal(x->message, "The email is not valid.");
  assert_int_equal(x->attempts, 3);
  assert_int_equal(x->ended_ms, 6000);
  assert_null(cs_jobs_account(j, "bob@example.com"));
  assert_string_equal(pending_ids(j), "j3");

  /* a second done job for the same email (another case) updates it: created false */
  assert_int_equal(done(j, "j3", "C000123", false, 7000), 0);
  assert_false(cs_jobs_find(j, "j3")->created);
  assert_null(cs_jobs_pending_next(j, NULL));
  struct cs_jobs_stats st = stats(j);
  assert_int_equal(st.pending, 0);
  assert_int_equal(st.ended, 3);
  assert_int_equal(st.accounts, 1);
  assert_int_equal(st.expired, 0);
  assert_true(st.bytes > 3 * sizeof(struct cs_job) + 2 * strlen(REQ));
  cs_jobs_destroy(j);
  cs_jobs_destroy(NULL);
}

/* The request is kept as compact JSON that parses back to what was sent, numbers' text kept. */
static void test_request_text(void **state) {
  struct cs_jobs *j;
  assert_int_equal(cs_jobs_create(NULL, &j), 0);
  const char *spaced = "{ \"email\" : \"a@b.co\",\n \"address\": {\"zip\": \"2100\", \"n\": 1.50},"
                       " \"optIn\": false, \"x\": null }";
  assert_int_equal(
      raw(j, PL_REC_JOB, "{\"id\":\"j1\",\"email\":\"a@b.co\",\"at_ms\":-5,\"req\":" REQ "}"), 0);
  char rec[512];
  snprintf(rec, sizeof(rec), "{\"id\":\"j2\",\"email\":\"a@b.co\",\"at_ms\":7,\"req\":%s}", spaced);
  assert_int_equal(raw(j, PL_REC_JOB, rec), 0);
  const struct cs_job *x = cs_jobs_find(j, "j2");
  assert_string_equal(x->request, "{\"email\":\"a@b.co\",\"address\":{\"zip\":\"2100\",\"n\":1.50},"
                                  "\"optIn\":false,\"x\":null}");
  assert_int_equal(x->request_len, strlen(x->request));
  assert_int_equal(cs_jobs_find(j, "j1")->accepted_ms, -5);
  /* the encoder embeds the request: what it writes applies back to the same text */
  struct cs_jobs *k;
  assert_int_equal(cs_jobs_create(NULL, &k), 0);
  assert_int_equal(job(k, "j2", "a@b.co", 7, spaced), 0);
  assert_string_equal(cs_jobs_find(k, "j2")->request, x->request);
  cs_jobs_destroy(k);
  cs_jobs_destroy(j);
}

static void test_expire_by_time(void **state) {
  struct cs_jobs *j = create(1000, 0, 0);
  char id[16];
  for (int i = 0; i < 4; i++) {
    snprintf(id, sizeof(id), "j%d", i);
    assert_int_equal(job(j, id, "a@b.co", 0, REQ), 0);
  }
  assert_int_equal(done(j, "j0", "C1", true, 100), 0);
  assert_int_equal(failed(j, "j1", 400, "bad", 1, 200), 0);
  assert_int_equal(done(j, "j2", "C1", false, 300), 0);
  /* j3 stays pending: pending jobs never expire */
  assert_int_equal(cs_jobs_expire(j, 1099), 0);
  assert_int_equal(cs_jobs_expire(j, 1100), 1); /* 1000 ms after its end */
  assert_null(cs_jobs_find(j, "j0"));
  assert_non_null(cs_jobs_find(j, "j1"));
  assert_int_equal(cs_jobs_expire(j, 1300), 2);
  assert_int_equal(cs_jobs_expire(j, INT64_MAX), 0);
  assert_non_null(cs_jobs_find(j, "j3"));
  struct cs_jobs_stats st = stats(j);
  assert_int_equal(st.ended, 0);
  assert_int_equal(st.pending, 1);
  assert_int_equal(st.expired, 3);
  /* the mapping outlives the jobs that set it; an expired id may be accepted again */
  assert_string_equal(cs_jobs_account(j, "A@B.CO"), "C1");
  assert_int_equal(job(j, "j0", "a@b.co", 2000, REQ), 0);
  assert_string_equal(pending_ids(j), "j3,j0");
  /* a clock far in the past expires nothing (no overflow) */
  assert_int_equal(done(j, "j0", "C1", false, INT64_MIN + 1), 0);
  assert_int_equal(cs_jobs_expire(j, INT64_MIN), 0);
  assert_int_equal(cs_jobs_expire(j, INT64_MIN + 1000), 0);
  assert_int_equal(cs_jobs_expire(j, INT64_MIN + 1001), 1);
  cs_jobs_destroy(j);

  /* the default keeps them 24 h */
  assert_int_equal(cs_jobs_create(NULL, &j), 0);
  assert_int_equal(job(j, "j", "a@b.co", 0, REQ), 0);
  assert_int_equal(done(j, "j", "C1", true, 0), 0);
  assert_int_equal(cs_jobs_expire(j, 86400000 - 1), 0);
  assert_int_equal(cs_jobs_expire(j, 86400000), 1);
  cs_jobs_destroy(j);
}

/* Past max_ended the oldest go first, in end order (not by their end times). */
static void test_expire_by_count(void **state) {
  struct cs_jobs *j = create(1000, 3, 0);
  char id[16];
  for (int i = 0; i < 6; i++) {
    snprintf(id, sizeof(id), "j%d", i);
    assert_int_equal(job(j, id, "a@b.co", 0, REQ), 0);
  }
  int64_t at[] = {500, 400, 300, 200, 100};
  for (int i = 0; i < 5; i++) {
    snprintf(id, sizeof(id), "j%d", i);
    assert_int_equal(failed(j, id, 503, "max_attempts: http_503", 10, at[i]), 0);
  }
  assert_int_equal(stats(j).ended, 5); /* apply never expires */
  assert_int_equal(cs_jobs_expire(j, 0), 2);
  assert_null(cs_jobs_find(j, "j0"));
  assert_null(cs_jobs_find(j, "j1"));
  assert_non_null(cs_jobs_find(j, "j2"));
  assert_int_equal(stats(j).ended, 3);
  assert_int_equal(cs_jobs_expire(j, 0), 0);
  /* by time, the head of the end order blocks: j2 (ended at 300) keeps j3 and j4 until it goes */
  assert_int_equal(cs_jobs_expire(j, 1299), 0);
  assert_int_equal(cs_jobs_expire(j, 1300), 3);
  assert_int_equal(stats(j).expired, 5);
  assert_string_equal(pending_ids(j), "j5");
  cs_jobs_destroy(j);
}

/* ---------------------------------------------------------------------------------------------- */
/* The mapping                                                                                    */
/* ---------------------------------------------------------------------------------------------- */

static void test_mapping(void **state) {
  struct cs_jobs *j = create(0, 0, 3);
  assert_int_equal(customer(j, "A@x.io", "CA"), 0);
  assert_int_equal(customer(j, "b@x.io", "CB"), 0);
  assert_int_equal(customer(j, "c@X.IO", "CC"), 0);
  assert_string_equal(cs_jobs_account(j, "a@x.io"), "CA");
  assert_string_equal(cs_jobs_account(j, "B@X.IO"), "CB");
  assert_string_equal(cs_jobs_account(j, "c@x.io"), "CC");
  assert_null(cs_jobs_account(j, "a@x.i"));
  assert_null(cs_jobs_account(j, "a@x.ioo"));
  assert_null(cs_jobs_account(j, ""));
  /* the case folding is ASCII only: these are other emails */
  assert_null(cs_jobs_account(j, "a@x.i\xc3\xb6"));
  /* a new account replaces the old one and makes the email the most recent */
  assert_int_equal(customer(j, "a@X.io", "CA2"), 0);
  assert_string_equal(cs_jobs_account(j, "A@X.IO"), "CA2");
  assert_int_equal(stats(j).accounts, 3);
  /* looking up does not refresh: b is the least recently set, and goes first */
  assert_non_null(cs_jobs_account(j, "b@x.io"));
  assert_int_equal(customer(j, "d@x.io", "CD"), 0);
  assert_null(cs_jobs_account(j, "b@x.io"));
  assert_int_equal(stats(j).accounts, 3);
  /* setting the same account again refreshes too: c stays, a goes */
  assert_int_equal(customer(j, "C@x.io", "CC"), 0);
  assert_int_equal(customer(j, "e@x.io", "CE"), 0);
  assert_null(cs_jobs_account(j, "a@x.io"));
  assert_string_equal(cs_jobs_account(j, "c@x.io"), "CC");
  /* a JOB_END done sets it like a CUSTOMER: d is the least recently set now and goes */
  assert_int_equal(job(j, "j1", "C@X.IO", 1, REQ), 0);
  assert_int_equal(done(j, "j1", "CC3", false, 2), 0);
  assert_int_equal(customer(j, "f@x.io", "CF"), 0);
  assert_null(cs_jobs_account(j, "d@x.io"));
  assert_string_equal(cs_jobs_account(j, "c@x.io"), "CC3");
  assert_string_equal(cs_jobs_account(j, "e@x.io"), "CE");
  assert_int_equal(stats(j).accounts, 3);
  cs_jobs_destroy(j);

  /* max_accounts 1 keeps only the last one */
  j = create(0, 0, 1);
  assert_int_equal(customer(j, "a@x.io", "CA"), 0);
  assert_int_equal(customer(j, "b@x.io", "CB"), 0);
  assert_null(cs_jobs_account(j, "a@x.io"));
  assert_string_equal(cs_jobs_account(j, "b@x.io"), "CB");
  cs_jobs_destroy(j);
}

/* ---------------------------------------------------------------------------------------------- */
/* Refusals                                                                                       */
/* ---------------------------------------------------------------------------------------------- */

/* The record is refused with `want`, the message names the record and `what`, and the model is
 * what it was (same counts, same dump). */
static void refused(struct cs_jobs *j, const char *before, uint8_t type, const char *text, int want,
                    const char *what) {
  struct cs_jobs_stats a = stats(j);
  int rc = raw(j, type, text);
  const char *msg = cs_jobs_error(j);
  if (rc != want || strstr(msg, pl_rec_name(type)) == NULL || strstr(msg, what) == NULL)
    fail_msg("%s %s: %s (wanted %s), \"%s\"", pl_rec_name(type), text, csr_strerror(rc),
             csr_strerror(want), msg);
  struct cs_jobs_stats b = stats(j);
  assert_int_equal(a.pending, b.pending);
  assert_int_equal(a.ended, b.ended);
  assert_int_equal(a.accounts, b.accounts);
  assert_int_equal(a.bytes, b.bytes);
  char *after = dump_text(j);
  assert_string_equal(before, after);
  free(after);
}

static void test_errors(void **state) {
  struct cs_jobs *j = create(0, 0, 0);
  assert_int_equal(job(j, "p1", "a@b.co", 1, REQ), 0);
  assert_int_equal(job(j, "e1", "a@b.co", 2, REQ), 0);
  assert_int_equal(done(j, "e1", "C1", true, 3), 0);
  assert_int_equal(customer(j, "z@b.co", "C9"), 0);
  char *before = dump_text(j);
  const char *E = "\"email\":\"a@b.co\"", *R = "\"req\":{}";
  char t[512];
#define JOB(...) (snprintf(t, sizeof(t), __VA_ARGS__), t)
  refused(j, before, PL_REC_ADMIT, "{}", CSR_ECORRUPT, "not a job record");
  refused(j, before, 11, "{}", CSR_ECORRUPT, "not a job record");
  refused(j, before, PL_REC_JOB, "{\"id\":\"x\"", CSR_EPARSE, "malformed payload");
  refused(j, before, PL_REC_JOB, "[]", CSR_EPARSE, "not an object");
  refused(j, before, PL_REC_JOB, "", CSR_EPARSE, "malformed payload");
  refused(j, before, PL_REC_JOB, JOB("{%s,\"at_ms\":1,%s}", E, R), CSR_EPARSE, "\"id\"");
  refused(j, before, PL_REC_JOB, JOB("{\"id\":5,%s,\"at_ms\":1,%s}", E, R), CSR_EPARSE, "\"id\"");
  refused(j, before, PL_REC_JOB, JOB("{\"id\":\"\",%s,\"at_ms\":1,%s}", E, R), CSR_EPARSE,
          "\"id\"");
  refused(j, before, PL_REC_JOB, JOB("{\"id\":\"x\",\"at_ms\":1,%s}", R), CSR_EPARSE, "\"email\"");
  refused(j, before, PL_REC_JOB, JOB("{\"id\":\"x\",\"email\":null,\"at_ms\":1,%s}", R), CSR_EPARSE,
          "\"email\"");
  refused(j, before, PL_REC_JOB, JOB("{\"id\":\"x\",%s,%s}", E, R), CSR_EPARSE, "\"at_ms\"");
  refused(j, before, PL_REC_JOB, JOB("{\"id\":\"x\",%s,\"at_ms\":\"1\",%s}", E, R), CSR_EPARSE,
          "\"at_ms\"");
  refused(j, before, PL_REC_JOB, JOB("{\"id\":\"x\",%s,\"at_ms\":1.5,%s}", E, R), CSR_EPARSE,
          "\"at_ms\"");
  refused(j, before, PL_REC_JOB, JOB("{\"id\":\"x\",%s,\"at_ms\":1}", E), CSR_EPARSE, "\"req\"");
  refused(j, before, PL_REC_JOB, JOB("{\"id\":\"x\",%s,\"at_ms\":1,\"req\":\"{}\"}", E), CSR_EPARSE,
          "\"req\"");
  refused(j, before, PL_REC_JOB, JOB("{\"id\":\"x\",%s,\"at_ms\":1,\"req\":[]}", E), CSR_EPARSE,
          "\"req\"");
  refused(j, before, PL_REC_JOB, JOB("{\"id\":\"p1\",%s,\"at_ms\":1,%s}", E, R), UV_EEXIST,
          "\"p1\"");
  refused(j, before, PL_REC_JOB, JOB("{\"id\":\"e1\",%s,\"at_ms\":1,%s}", E, R), UV_EEXIST,
          "\"e1\"");

  const char *F = "\"created\":false,\"status\":200,\"message\":\"\",\"attempts\":1,\"at_ms\":9";
  refused(j, before, PL_REC_JOB_END,
          JOB("{\"id\":\"nope\",\"outcome\":\"done\",\"account\":\"C2\",%s}", F), CSR_ECORRUPT,
          "unknown id \"nope\"");
  refused(j, before, PL_REC_JOB_END,
          JOB("{\"id\":\"e1\",\"outcome\":\"done\",\"account\":\"C2\",%s}", F), CSR_ECORRUPT,
          "\"e1\"");
  refused(j, before, PL_REC_JOB_END,
          JOB("{\"id\":\"p1\",\"outcome\":\"maybe\",\"account\":\"\",%s}", F), CSR_EPARSE,
          "\"outcome\"");
  refused(j, before, PL_REC_JOB_END, JOB("{\"id\":\"p1\",\"account\":\"C2\",%s}", F), CSR_EPARSE,
          "\"outcome\"");
  refused(j, before, PL_REC_JOB_END, JOB("{\"outcome\":\"done\",\"account\":\"C2\",%s}", F),
          CSR_EPARSE, "\"id\"");
  refused(j, before, PL_REC_JOB_END, JOB("{\"id\":\"p1\",\"outcome\":\"done\",%s}", F), CSR_EPARSE,
          "\"account\"");
  refused(j, before, PL_REC_JOB_END,
          JOB("{\"id\":\"p1\",\"outcome\":\"done\",\"account\":\"\",%s}", F), CSR_EPARSE,
          "\"account\"");
  refused(j, before, PL_REC_JOB_END,
          JOB("{\"id\":\"p1\",\"outcome\":\"done\",\"account\":7,%s}", F), CSR_EPARSE,
          "\"account\"");
  refused(j, before, PL_REC_JOB_END,
          JOB("{\"id\":\"p1\",\"outcome\":\"failed\",\"account\":\"C2\",%s}", F), CSR_EPARSE,
          "\"account\"");
  const char *D = "\"id\":\"p1\",\"outcome\":\"done\",\"account\":\"C2\"";
  refused(j, before, PL_REC_JOB_END,
          JOB("{%s,\"status\":200,\"message\":\"\",\"attempts\":1,\"at_ms\":9}", D), CSR_EPARSE,
          "\"created\"");
  refused(j, before, PL_REC_JOB_END,
          JOB("{%s,\"created\":1,\"status\":200,\"message\":\"\",\"attempts\":1,\"at_ms\":9}", D),
          CSR_EPARSE, "\"created\"");
  refused(j, before, PL_REC_JOB_END,
          JOB("{%s,\"created\":true,\"status\":\"200\",\"attempts\":1,\"at_ms\":9}", D), CSR_EPARSE,
          "\"status\"");
  refused(j, before, PL_REC_JOB_END,
          JOB("{%s,\"created\":true,\"status\":200,\"message\":5,\"attempts\":1,\"at_ms\":9}", D),
          CSR_EPARSE, "\"message\"");
  refused(j, before, PL_REC_JOB_END,
          JOB("{%s,\"created\":true,\"status\":200,\"attempts\":-1,\"at_ms\":9}", D), CSR_EPARSE,
          "\"attempts\"");
  refused(j, before, PL_REC_JOB_END,
          JOB("{%s,\"created\":true,\"status\":200,\"attempts\":4294967296,\"at_ms\":9}", D),
          CSR_EPARSE, "\"attempts\"");
  refused(j, before, PL_REC_JOB_END, JOB("{%s,\"created\":true,\"status\":200,\"attempts\":1}", D),
          CSR_EPARSE, "\"at_ms\"");

  refused(j, before, PL_REC_CUSTOMER, "{\"account\":\"C2\"}", CSR_EPARSE, "\"email\"");
  refused(j, before, PL_REC_CUSTOMER, "{\"email\":\"a@b.co\",\"account\":\"\"}", CSR_EPARSE,
          "\"account\"");
  refused(j, before, PL_REC_CUSTOMER, "{\"email\":\"a@b.co\",\"account\":null}", CSR_EPARSE,
          "\"account\"");
  refused(j, before, PL_REC_CUSTOMER, "{\"email\":\"\",\"account\":\"C2\"}", CSR_EPARSE,
          "\"email\"");
#undef JOB
  /* no email in any message (PII): the refusals above named fields and ids only */
  assert_int_equal(cs_jobs_apply(j, PL_REC_JOB, NULL, 1), UV_EINVAL);
  assert_int_equal(cs_jobs_apply(NULL, PL_REC_JOB, "{}", 2), UV_EINVAL);

  /* and the model still works: optional fields may be absent or null */
  assert_int_equal(raw(j, PL_REC_JOB_END,
                       "{\"id\":\"p1\",\"outcome\":\"failed\",\"account\":null,\"created\":true,"
                       "\"status\":0,\"attempts\":0,\"at_ms\":9}"),
                   0);
  const struct cs_job *x = cs_jobs_find(j, "p1");
  assert_int_equal(x->state, CS_JOB_FAILED);
  assert_false(x->created); /* only a done job created anything */
  assert_string_equal(x->message, "");
  free(before);
  cs_jobs_destroy(j);
}

static void test_encoders(void **state) {
  struct cs_rec_job_end e = {"j", CS_JOB_DONE, NULL, true, 200, NULL, 1, 5};
  assert_int_equal(cs_rec_job(&jw, NULL, "a@b.co", 1, REQ, strlen(REQ)), UV_EINVAL);
  assert_int_equal(cs_rec_job(&jw, "j", NULL, 1, REQ, strlen(REQ)), UV_EINVAL);
  assert_int_equal(cs_rec_job(&jw, "", "a@b.co", 1, REQ, strlen(REQ)), UV_EINVAL);
  assert_int_equal(cs_rec_job(&jw, "j", "", 1, REQ, strlen(REQ)), UV_EINVAL);
  assert_int_equal(cs_rec_job(&jw, "j", "a@b.co", 1, NULL, 0), UV_EINVAL);
  assert_int_equal(cs_rec_job(&jw, "j", "a@b.co", 1, "[]", 2), UV_EINVAL);
  assert_int_equal(cs_rec_job(&jw, "j", "a@b.co", 1, "{\"a\":", 5), UV_EINVAL);
  assert_int_equal(cs_rec_job(NULL, "j", "a@b.co", 1, REQ, strlen(REQ)), UV_EINVAL);
  assert_int_equal(cs_rec_job_end(&jw, &e), UV_EINVAL); /* done without an account */
  e.account = "";
  assert_int_equal(cs_rec_job_end(&jw, &e), UV_EINVAL);
  e.outcome = CS_JOB_FAILED;
  e.account = "C1";
  assert_int_equal(cs_rec_job_end(&jw, &e), UV_EINVAL); /* failed with an account */
  e.outcome = CS_JOB_PENDING;
  e.account = NULL;
  assert_int_equal(cs_rec_job_end(&jw, &e), UV_EINVAL);
  e.outcome = CS_JOB_DONE;
  e.account = "C1";
  e.id = NULL;
  assert_int_equal(cs_rec_job_end(&jw, &e), UV_EINVAL);
  e.id = "";
  assert_int_equal(cs_rec_job_end(&jw, &e), UV_EINVAL);
  assert_int_equal(cs_rec_job_end(&jw, NULL), UV_EINVAL);
  assert_int_equal(cs_rec_customer(&jw, NULL, "C1"), UV_EINVAL);
  assert_int_equal(cs_rec_customer(&jw, "a@b.co", NULL), UV_EINVAL);
  assert_int_equal(cs_rec_customer(&jw, "a@b.co", ""), UV_EINVAL);
  assert_int_equal(cs_rec_customer(&jw, "", "C1"), UV_EINVAL);
  /* nothing was written by the refusals */
  const char *text;
  size_t len;
  e.id = "j";
  e.message = "a \"quoted\" message";
  assert_int_equal(cs_rec_job_end(&jw, &e), 0);
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
  assert_string_equal(text,
                      "{\"id\":\"j\",\"outcome\":\"done\",\"account\":\"C1\",\"created\":true,"
                      "\"status\":200,\"message\":\"a \\\"quoted\\\" message\","
                      "\"attempts\":1,\"at_ms\":5}");
  csr_jw_reset(&jw);
  assert_int_equal(cs_rec_job(&jw, "j", "a@b.co", 1, "{ \"n\" : 1.50 }", 14), 0);
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
  assert_string_equal(text, "{\"id\":\"j\",\"email\":\"a@b.co\",\"at_ms\":1,\"req\":{\"n\":1.50}}");
  csr_jw_reset(&jw);
  assert_int_equal(cs_rec_customer(&jw, "a@b.co", "C1"), 0);
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
  assert_string_equal(text, "{\"email\":\"a@b.co\",\"account\":\"C1\"}");
  csr_jw_reset(&jw);
}

/* ---------------------------------------------------------------------------------------------- */
/* Dump and replay                                                                                */
/* ---------------------------------------------------------------------------------------------- */

static void test_dump_replay(void **state) {
  struct cs_jobs_opts o = {10000, 4, 3};
  struct cs_jobs *j;
  assert_int_equal(cs_jobs_create(&o, &j), 0);
  const char *ids[] = {"j0", "j1", "j2", "j3", "j4", "j5", "j6", "j7", "j8", "j9"};
  const char *emails[] = {"a@x.io", "B@x.io", "c@x.io", "d@x.io", "e@x.io", "f@x.io"};
  for (int i = 0; i < 10; i++)
    assert_int_equal(job(j, ids[i], emails[i % 6], 100 + i, REQ), 0);
  /* ends and mapping sets interleaved: a CUSTOMER after a done job's end overrides its account;
   * an email whose done job is still held was evicted from the mapping since (a@, by b@ c@ d@) */
  assert_int_equal(done(j, "j0", "CA", true, 1000), 0);
  assert_int_equal(customer(j, "b@X.IO", "CB"), 0);
  assert_int_equal(done(j, "j2", "CC", true, 1001), 0);
  assert_int_equal(failed(j, "j3", 400, "bad phone", 1, 1002), 0);
  assert_int_equal(customer(j, "d@x.io", "CD"), 0);
  assert_int_equal(done(j, "j8", "CC-old", false, 1003), 0); /* c@x.io again */
  assert_int_equal(customer(j, "C@x.io", "CC-new"), 0);
  assert_int_equal(done(j, "j1", "CB", false, 1004), 0); /* same account as the CUSTOMER's */
  assert_int_equal(failed(j, "j5", 503, "max_attempts: http_503", 10, 1005), 0);
  assert_int_equal(done(j, "j6", "CA2", false, 1006), 0); /* a@x.io, evicting d@ */
  assert_null(cs_jobs_account(j, "d@x.io"));
  assert_string_equal(cs_jobs_account(j, "c@x.io"), "CC-new");
  assert_string_equal(cs_jobs_account(j, "a@x.io"), "CA2");
  assert_int_equal(cs_jobs_expire(j, 0), 3); /* 7 ended, 4 kept: j0 j2 j3 go */
  assert_string_equal(pending_ids(j), "j4,j7,j9");

  struct cs_jobs *k = replayed(j, &o);
  compare(j, k, ids, 10, emails, 6);
  /* the model goes on the same way after the replay */
  assert_int_equal(customer(j, "e@x.io", "CE"), 0);
  assert_int_equal(customer(k, "e@x.io", "CE"), 0);
  assert_int_equal(done(j, "j4", "CE2", false, 2000), 0);
  assert_int_equal(done(k, "j4", "CE2", false, 2000), 0);
  assert_int_equal(cs_jobs_expire(j, 11003), cs_jobs_expire(k, 11003));
  compare(j, k, ids, 10, emails, 6);
  /* a dump of the replay replays the same again */
  struct cs_jobs *m = replayed(k, &o);
  compare(k, m, ids, 10, emails, 6);
  cs_jobs_destroy(m);
  cs_jobs_destroy(k);

  /* an empty model dumps nothing */
  cs_jobs_destroy(j);
  assert_int_equal(cs_jobs_create(&o, &j), 0);
  char *text = dump_text(j);
  assert_string_equal(text, "");
  free(text);
  cs_jobs_destroy(j);
}

/* ---------------------------------------------------------------------------------------------- */
/* 100,000 jobs against a plain reference                                                         */
/* ---------------------------------------------------------------------------------------------- */

enum {
  N_JOBS = 100000,
  N_EMAILS = 3000,
  MAX_ACCOUNTS = 1000,
  MAX_ENDED = 5000,
  RETAIN_MS = 40000,
};

enum ref_state { R_NONE, R_PENDING, R_DONE, R_FAILED, R_EXPIRED };

struct ref_job {
  enum ref_state state;
  char email[32]; /* as given, in a random case */
  int64_t accepted_ms, ended_ms;
  int account; /* done */
  bool created;
  int status;
  unsigned attempts;
};

struct set_log {
  int email;
  uint64_t seq;
};

struct ref {
  struct ref_job *jobs;
  size_t n_jobs;
  int *pending; /* job numbers, unordered (the order is the job number's) */
  size_t n_pending;
  int *ended; /* a FIFO of job numbers in end order */
  size_t ended_head, ended_tail;
  int account[N_EMAILS]; /* -1: none */
  uint64_t set_seq[N_EMAILS];
  struct set_log *log; /* every set in order; eviction walks it from the front */
  size_t log_head, log_tail;
  size_t n_accounts;
  uint64_t seq, expired;
};

static uint64_t rnd_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(uint64_t n) {
  rnd_state ^= rnd_state << 13;
  rnd_state ^= rnd_state >> 7;
  rnd_state ^= rnd_state << 17;
  return rnd_state % n;
}

/* user<i>@example.com with some letters in upper case. */
static void random_case_email(int i, char *buf, size_t size) {
  snprintf(buf, size, "user%d@example.com", i);
  for (char *p = buf; *p; p++)
    if (*p >= 'a' && *p <= 'z' && rnd(3) == 0)
      *p = (char)(*p - 'a' + 'A');
}

static int email_index(const char *email) {
  return atoi(email + 4);
}

static void ref_set(struct ref *r, int email, int account) {
  if (r->account[email] < 0)
    r->n_accounts++;
  r->account[email] = account;
  r->set_seq[email] = ++r->seq;
  r->log[r->log_tail++] = (struct set_log){email, r->seq};
  while (r->n_accounts > MAX_ACCOUNTS) {
    struct set_log s = r->log[r->log_head++];
    if (r->account[s.email] >= 0 && r->set_seq[s.email] == s.seq) {
      r->account[s.email] = -1;
      r->n_accounts--;
    }
  }
}

static void ref_expire(struct ref *r, int64_t now) {
  while (r->ended_head < r->ended_tail) {
    struct ref_job *x = &r->jobs[r->ended[r->ended_head]];
    if (r->ended_tail - r->ended_head <= MAX_ENDED && x->ended_ms > now - RETAIN_MS)
      break;
    x->state = R_EXPIRED;
    r->ended_head++;
    r->expired++;
  }
}

static void job_id(int i, char *buf, size_t size) {
  snprintf(buf, size, "job-%06d-%x", i, (unsigned)(i * 2654435761u));
}

static void request_of(int i, const char *email, char *buf, size_t size) {
  snprintf(buf, size, "{\"email\":\"%s\",\"firstName\":\"F%d\",\"optIn\":%s}", email, i,
           i % 2 ? "true" : "false");
}

static void check_job(const struct cs_jobs *j, const struct ref *r, int i) {
  char id[40], req[128];
  const struct ref_job *x = &r->jobs[i];
  job_id(i, id, sizeof(id));
  const struct cs_job *y = cs_jobs_find(j, id);
  if (x->state == R_NONE || x->state == R_EXPIRED) {
    assert_null(y);
    return;
  }
  assert_non_null(y);
  assert_string_equal(y->id, id);
  assert_string_equal(y->email, x->email);
  request_of(i, x->email, req, sizeof(req));
  assert_string_equal(y->request, req);
  assert_int_equal(y->request_len, strlen(req));
  assert_int_equal(y->accepted_ms, x->accepted_ms);
  assert_int_equal(y->state, x->state == R_PENDING ? CS_JOB_PENDING
                             : x->state == R_DONE  ? CS_JOB_DONE
                                                   : CS_JOB_FAILED);
  char account[16] = "";
  if (x->state == R_DONE)
    snprintf(account, sizeof(account), "C%06d", x->account);
  assert_string_equal(y->account, account);
  assert_int_equal(y->created, x->created);
  assert_int_equal(y->status, x->status);
  assert_string_equal(y->message, x->state == R_FAILED ? "Commerce said no" : "");
  assert_int_equal(y->attempts, x->attempts);
  assert_int_equal(y->ended_ms, x->state == R_PENDING ? 0 : x->ended_ms);
}

static void check_email(const struct cs_jobs *j, const struct ref *r, int e) {
  char email[32], want[16];
  random_case_email(e, email, sizeof(email));
  const char *got = cs_jobs_account(j, email);
  if (r->account[e] < 0) {
    assert_null(got);
    return;
  }
  snprintf(want, sizeof(want), "C%06d", r->account[e]);
  assert_non_null(got);
  assert_string_equal(got, want);
}

/* `replayed`: a model rebuilt from a dump, which has expired nothing itself. */
static void check_counts(const struct cs_jobs *j, const struct ref *r, bool replayed) {
  struct cs_jobs_stats st = stats(j);
  assert_int_equal(st.pending, r->n_pending);
  assert_int_equal(st.ended, r->ended_tail - r->ended_head);
  assert_int_equal(st.accounts, r->n_accounts);
  assert_int_equal(st.expired, replayed ? 0 : r->expired);
}

static void check_all(const struct cs_jobs *j, const struct ref *r, bool replayed) {
  check_counts(j, r, replayed);
  for (size_t i = 0; i < r->n_jobs; i++)
    check_job(j, r, (int)i);
  for (int e = 0; e < N_EMAILS; e++)
    check_email(j, r, e);
  /* the pending list is in acceptance order */
  const struct cs_job *y = NULL;
  char id[40];
  for (size_t i = 0; i < r->n_jobs; i++) {
    if (r->jobs[i].state != R_PENDING)
      continue;
    y = cs_jobs_pending_next(j, y);
    assert_non_null(y);
    job_id((int)i, id, sizeof(id));
    assert_string_equal(y->id, id);
  }
  assert_null(cs_jobs_pending_next(j, y));
}

static void op_new_job(struct cs_jobs *j, struct ref *r, int64_t now) {
  int i = (int)r->n_jobs++;
  struct ref_job *x = &r->jobs[i];
  char id[40], req[128];
  job_id(i, id, sizeof(id));
  random_case_email((int)rnd(N_EMAILS), x->email, sizeof(x->email));
  request_of(i, x->email, req, sizeof(req));
  assert_int_equal(job(j, id, x->email, now, req), 0);
  x->state = R_PENDING;
  x->accepted_ms = now;
  r->pending[r->n_pending++] = i;
}

static void op_end_job(struct cs_jobs *j, struct ref *r, int64_t now) {
  size_t k = (size_t)rnd(r->n_pending);
  int i = r->pending[k];
  struct ref_job *x = &r->jobs[i];
  char id[40], account[16];
  job_id(i, id, sizeof(id));
  r->pending[k] = r->pending[--r->n_pending];
  x->ended_ms = now;
  x->attempts = 1 + (unsigned)rnd(10);
  if (rnd(5) < 3) {
    x->state = R_DONE;
    x->account = (int)rnd(1000000);
    x->created = rnd(2);
    x->status = x->created ? 201 : 200;
    snprintf(account, sizeof(account), "C%06d", x->account);
    struct cs_rec_job_end e = {id,        CS_JOB_DONE, account,     x->created,
                               x->status, NULL,        x->attempts, now};
    assert_int_equal(put(j, PL_REC_JOB_END, cs_rec_job_end(&jw, &e)), 0);
    ref_set(r, email_index(x->email), x->account);
  } else {
    x->state = R_FAILED;
    x->status = 400 + (int)rnd(100);
    assert_int_equal(failed(j, id, x->status, "Commerce said no", x->attempts, now), 0);
  }
  r->ended[r->ended_tail++] = i;
}

static void op_customer(struct cs_jobs *j, struct ref *r) {
  int e = (int)rnd(N_EMAILS), account = (int)rnd(1000000);
  char email[32], acc[16];
  random_case_email(e, email, sizeof(email));
  snprintf(acc, sizeof(acc), "C%06d", account);
  assert_int_equal(customer(j, email, acc), 0);
  ref_set(r, e, account);
}

/* A JOB for a held id, or a JOB_END for one that is not pending: refused. */
static void op_refused(struct cs_jobs *j, struct ref *r, int64_t now) {
  int i = (int)rnd(r->n_jobs);
  const struct ref_job *x = &r->jobs[i];
  char id[40];
  job_id(i, id, sizeof(id));
  if (x->state != R_PENDING && rnd(2))
    assert_int_equal(failed(j, id, 500, "late", 1, now), CSR_ECORRUPT);
  else if (x->state != R_EXPIRED)
    assert_int_equal(job(j, id, x->email, now, REQ), UV_EEXIST);
}

static void op_expire(struct cs_jobs *j, struct ref *r, int64_t now) {
  uint64_t before = r->expired;
  ref_expire(r, now);
  assert_int_equal(cs_jobs_expire(j, now), r->expired - before);
}

static void test_random(void **state) {
  struct ref r = {0};
  r.jobs = calloc(N_JOBS, sizeof(*r.jobs));
  r.pending = calloc(N_JOBS, sizeof(*r.pending));
  r.ended = calloc(N_JOBS, sizeof(*r.ended));
  r.log = calloc(4 * N_JOBS, sizeof(*r.log));
  assert_true(r.jobs && r.pending && r.ended && r.log);
  memset(r.account, -1, sizeof(r.account));
  struct cs_jobs_opts o = {RETAIN_MS, MAX_ENDED, MAX_ACCOUNTS};
  struct cs_jobs *j;
  assert_int_equal(cs_jobs_create(&o, &j), 0);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int64_t now = 1700000000000;
  size_t ops = 0;
  while (r.n_jobs < N_JOBS) {
    uint64_t k = rnd(100);
    now += (int64_t)rnd(4);
    if (k < 45 || r.n_pending == 0)
      op_new_job(j, &r, now);
    else if (k < 75)
      op_end_job(j, &r, now);
    else if (k < 80)
      op_customer(j, &r);
    else if (k < 84)
      op_refused(j, &r, now);
    else if (k < 86)
      op_expire(j, &r, now);
    if (++ops % 20000 == 0) {
      check_counts(j, &r, false);
      for (int s = 0; s < 200; s++) {
        check_job(j, &r, (int)rnd(r.n_jobs));
        check_email(j, &r, (int)rnd(N_EMAILS));
      }
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  struct cs_jobs_stats st = stats(j);
  print_message(
      "    %zu ops in %.0f ms: %llu pending, %llu ended, %llu expired, %llu accounts, "
      "%llu bytes\n",
      ops, (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6,
      (unsigned long long)st.pending, (unsigned long long)st.ended, (unsigned long long)st.expired,
      (unsigned long long)st.accounts, (unsigned long long)st.bytes);
  assert_true(st.pending > 10000 && st.ended > 1000 && st.expired > 10000);
  assert_int_equal(st.accounts, MAX_ACCOUNTS);
  check_all(j, &r, false);

  /* the dump replays into an equal model */
  const char **ids = calloc(N_JOBS, sizeof(*ids)), **emails = calloc(N_EMAILS, sizeof(*emails));
  char(*id_text)[40] = calloc(N_JOBS, sizeof(*id_text)),
  (*email_text)[32] = calloc(N_EMAILS, sizeof(*email_text));
  assert_true(ids && emails && id_text && email_text);
  for (int i = 0; i < N_JOBS; i++) {
    job_id(i, id_text[i], sizeof(id_text[i]));
    ids[i] = id_text[i];
  }
  for (int e = 0; e < N_EMAILS; e++) {
    random_case_email(e, email_text[e], sizeof(email_text[e]));
    emails[e] = email_text[e];
  }
  struct cs_jobs *k = replayed(j, &o);
  compare(j, k, ids, N_JOBS, emails, N_EMAILS);
  check_all(k, &r, true);
  cs_jobs_destroy(k);
  cs_jobs_destroy(j);
  free(ids);
  free(emails);
  free(id_text);
  free(email_text);
  free(r.jobs);
  free(r.pending);
  free(r.ended);
  free(r.log);
}

static int setup(void **state) {
  return csr_jw_init(&jw);
}

static int teardown(void **state) {
  csr_jw_free(&jw);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_apply_find),     cmocka_unit_test(test_request_text),
      cmocka_unit_test(test_expire_by_time), cmocka_unit_test(test_expire_by_count),
      cmocka_unit_test(test_mapping),        cmocka_unit_test(test_errors),
      cmocka_unit_test(test_encoders),       cmocka_unit_test(test_dump_replay),
      cmocka_unit_test(test_random),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
