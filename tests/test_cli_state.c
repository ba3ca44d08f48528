/* `csurelay state` (src/cli_state.c) end to end: a state directory written through the store API
 * in-process (cursors, live, parked and finished events, a dead letter), then the binary run on
 * it as a subprocess: the text and --json outputs, --dlq and --limit, a torn tail left as it is,
 * a store still open on the directory, the customer sync jobs held in the same file, and the
 * errors (no state, usage). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "csurelay/ingress.h"
#include "csurelay/pipeline.h"
#include "csurelay/timefmt.h"

/* ---------------------------------------------------------------------------------------------- */
/* Running the binary                                                                             */
/* ---------------------------------------------------------------------------------------------- */

#define OUT_MAX 65536

struct run {
  int code;
  char out[OUT_MAX];
  char err[OUT_MAX];
};

static const char *bin(void) {
  const char *b = getenv("CSR_BIN");
  return b ? b : "./csurelay";
}

static void slurp_fd(int fd, char *buf) {
  size_t len = 0;
  ssize_t n;
  lseek(fd, 0, SEEK_SET);
  while (len < OUT_MAX - 1 && (n = read(fd, buf + len, OUT_MAX - 1 - len)) > 0)
    len += (size_t)n;
  buf[len] = '\0';
  close(fd);
}

/* Runs csurelay with args (NULL-terminated), stdout and stderr into temp files. */
static void run(struct run *r, const char *arg, ...) {
  char *argv[16] = {(char *)bin()};
  int argc = 1;
  va_list ap;
  va_start(ap, arg);
  for (const char *a = arg; a != NULL && argc < 15; a = va_arg(ap, const char *))
    argv[argc++] = (char *)a;
  va_end(ap);
  argv[argc] = NULL;
  char out_name[] = "/tmp/csr-cli-out-XXXXXX", err_name[] = "/tmp/csr-cli-err-XXXXXX";
  int out = mkstemp(out_name), err = mkstemp(err_name);
  assert_true(out >= 0 && err >= 0);
  unlink(out_name);
  unlink(err_name);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(out, 1);
    dup2(err, 2);
    execv(argv[0], argv);
    _exit(127);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  r->code = WEXITSTATUS(status);
  slurp_fd(out, r->out);
  slurp_fd(err, r->err);
}

/* ---------------------------------------------------------------------------------------------- */
/* A state directory written through the store                                                    */
/* ---------------------------------------------------------------------------------------------- */

struct env {
  uv_loop_t uv;
  struct rx_loop loop;
  char dir[64];
  char aof[128];
  struct pl_state *s;
  struct pl_store *store;
  struct csr_jw jw;
  int64_t t0;
};

/* Encodes, appends and applies one record. */
static void put(struct env *e, uint8_t type, int enc) {
  const char *text;
  size_t len;
  assert_int_equal(enc, 0);
  assert_int_equal(csr_jw_finish(&e->jw, &text, &len), 0);
  assert_int_equal(pl_state_apply(e->s, type, text, len), 0);
  assert_int_equal(pl_store_append(e->store, type, text, len, NULL, NULL), 0);
  csr_jw_reset(&e->jw);
}

static const char *const SINKS[] = {"cij", "webhook"};

static void admit(struct env *e, const char *id, int64_t t, size_t n_sinks) {
  const char *text = "{\"AmountPaid\":184.2200000000000000,\"ReceiptEmail\":\"ann@example.com\"}";
  struct pl_rec_admit a = {id, "c1", "Checkout", t, t + 1000, SINKS, n_sinks, text, strlen(text)};
  put(e, PL_REC_ADMIT, pl_rec_admit(&e->jw, &a));
}

static void outcome(struct env *e, const char *id, const char *sink, enum sk_outcome o,
                    unsigned attempts) {
  struct pl_rec_delivery d = {.id = id,
                              .sink = sink,
                              .outcome = o,
                              .attempt = attempts,
                              .at_ms = e->t0 + 9000,
                              .status = o == SK_DEAD ? 400 : 200,
                              .reason = o == SK_DEAD ? "http_400" : NULL,
                              .excerpt = o == SK_DEAD ? "{\"error\":\"bad email\"}" : NULL};
  put(e, PL_REC_OUTCOME, pl_rec_outcome(&e->jw, &d));
}

static void on_closed(void *arg) {
  (*(int *)arg)++;
}

static void store_open(struct env *e) {
  struct pl_store_opts o = {.dir = e->dir, .fsync = CSR_FSYNC_ALWAYS};
  struct csr_err err;
  pl_state_destroy(e->s);
  assert_int_equal(pl_state_create(NULL, &e->s), 0);
  int rc = pl_store_open(&e->loop, &o, pl_state_replay, pl_state_dump, e->s, &e->store, &err);
  if (rc != 0)
    fail_msg("pl_store_open: %s: %s", csr_strerror(rc), err.msg);
}

static void store_close(struct env *e) {
  int closed = 0;
  pl_store_close(e->store, on_closed, &closed);
  rx_loop_run(&e->loop);
  assert_int_equal(closed, 1);
  e->store = NULL;
}

/*
 * 2 cursors; A live (cij pending, webhook delivered); B parked (cij dead: the dead letter);
 * D finished. 8 records.
 */
static void env_setup(struct env *e) {
  memset(e, 0, sizeof(*e));
  assert_int_equal(uv_loop_init(&e->uv), 0);
  assert_int_equal(rx_loop_init(&e->loop, &e->uv), 0);
  snprintf(e->dir, sizeof(e->dir), "/tmp/csr-cli-state-XXXXXX");
  assert_non_null(mkdtemp(e->dir));
  snprintf(e->aof, sizeof(e->aof), "%s/csurelay.aof", e->dir);
  assert_int_equal(csr_jw_init(&e->jw), 0);
  assert_int_equal(csr_time_parse("2026-11-22T10:00:00Z", &e->t0), 0);
  store_open(e);
  put(e, PL_REC_CURSOR, pl_rec_cursor(&e->jw, "c1", "Checkout", e->t0 + 60000));
  put(e, PL_REC_CURSOR, pl_rec_cursor(&e->jw, "c2", "AddCartLines", e->t0 + 30000));
  admit(e, "c1|DAT|Checkout|cart-1|2026-11-22T10:00:05Z", e->t0 + 5000, 2);
  outcome(e, "c1|DAT|Checkout|cart-1|2026-11-22T10:00:05Z", "webhook", SK_DELIVERED, 1);
  admit(e, "c1|DAT|Checkout|cart-2|2026-11-22T10:00:06Z", e->t0 + 6000, 1);
  outcome(e, "c1|DAT|Checkout|cart-2|2026-11-22T10:00:06Z", "cij", SK_DEAD, 10);
  admit(e, "c1|DAT|Checkout|cart-3|2026-11-22T10:00:07Z", e->t0 + 7000, 1);
  outcome(e, "c1|DAT|Checkout|cart-3|2026-11-22T10:00:07Z", "cij", SK_DELIVERED, 1);
  store_close(e);
}

static void env_teardown(struct env *e) {
  if (e->store)
    store_close(e);
  pl_state_destroy(e->s);
  csr_jw_free(&e->jw);
  assert_int_equal(rx_loop_close(&e->loop), 0);
  DIR *d = opendir(e->dir);
  struct dirent *de;
  char p[512];
  while (d && (de = readdir(d)) != NULL)
    if (de->d_name[0] != '.') {
      snprintf(p, sizeof(p), "%s/%s", e->dir, de->d_name);
      unlink(p);
    }
  if (d)
    closedir(d);
  rmdir(e->dir);
}

static off_t size_of(const char *path) {
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  return st.st_size;
}

/* ---------------------------------------------------------------------------------------------- */
/* Tests                                                                                          */
/* ---------------------------------------------------------------------------------------------- */

static struct run r; /* large: not on the stack */

static void test_text(void **state) {
  struct env e;
  env_setup(&e);
  run(&r, "state", "-d", e.dir, NULL);
  assert_int_equal(r.code, 0);
  assert_string_equal(r.err, "");
  char want[256];
  snprintf(want, sizeof(want), "%s (%lld bytes, 8 records)", e.aof, (long long)size_of(e.aof));
  assert_non_null(strstr(r.out, want));
  assert_non_null(strstr(r.out, "2 live (1 parked on dead letters), 1 finished"));
  assert_non_null(strstr(r.out, "1 pending, 0 waiting to retry, 1 dead letters"));
  assert_non_null(
      strstr(r.out, "\ncursors\n  c1           Checkout       2026-11-22T10:01:00.000Z  lag "));
  assert_non_null(strstr(r.out, "  c2           AddCartLines   2026-11-22T10:00:30.000Z  lag "));
  assert_non_null(strstr(r.out, "dead letters  1, oldest first:"));
  /* the dead letter's line: id, sink, attempts, status, reason; never the row (PII) */
  const char *line = strstr(r.out, "  c1|DAT|Checkout|cart-2|2026-11-22T10:00:06Z  cij");
  assert_non_null(line);
  assert_non_null(strstr(line, "       10    400  http_400\n"));
  assert_null(strstr(r.out, "ann@example.com"));
  assert_null(strstr(r.out, "torn tail"));

  /* --dlq: only the dead letters; --limit 0: only their count */
  run(&r, "state", "--dir", e.dir, "--dlq", NULL);
  assert_int_equal(r.code, 0);
  assert_null(strstr(r.out, "cursors"));
  assert_non_null(strstr(r.out, "cart-2"));
  char dir_opt[128];
  snprintf(dir_opt, sizeof(dir_opt), "--dir=%s", e.dir);
  run(&r, "state", dir_opt, "--dlq", "--limit", "0", NULL);
  assert_int_equal(r.code, 0);
  assert_string_equal(r.out, "dead letters  1\n");
  env_teardown(&e);
}

static void test_json(void **state) {
  struct env e;
  env_setup(&e);
  run(&r, "state", "-d", e.dir, "--json", NULL);
  assert_int_equal(r.code, 0);
  char why[128];
  yajl_val v = csr_json_parse(r.out, strlen(r.out), why, sizeof(why));
  if (v == NULL)
    fail_msg("%s: %s", why, r.out);
  yajl_val aof = csr_json_get(v, "aof");
  int64_t n;
  assert_string_equal(csr_json_get_str(aof, "path"), e.aof);
  assert_int_equal(csr_json_get_int(aof, "records_replayed", &n), 0);
  assert_int_equal(n, 8);
  assert_int_equal(csr_json_get_int(aof, "file_bytes", &n), 0);
  assert_int_equal(n, size_of(e.aof));
  assert_int_equal(csr_json_get_int(aof, "torn_tails", &n), 0);
  assert_int_equal(n, 0);
  assert_true(YAJL_IS_TRUE(csr_json_get(aof, "healthy")));
  assert_true(YAJL_IS_NULL(csr_json_get(aof, "damage")));
  yajl_val sum = csr_json_get(v, "summary");
  assert_int_equal(csr_json_get_int(sum, "live", &n), 0);
  assert_int_equal(n, 2);
  assert_int_equal(csr_json_get_int(sum, "parked", &n), 0);
  assert_int_equal(n, 1);
  assert_int_equal(csr_json_get_int(sum, "finished", &n), 0);
  assert_int_equal(n, 1);
  yajl_val cs = csr_json_get(sum, "cursors");
  assert_int_equal(csr_json_len(cs), 2);
  assert_string_equal(csr_json_get_str(csr_json_at(cs, 0), "cursor"), "2026-11-22T10:01:00.000Z");
  assert_int_equal(csr_json_get_int(csr_json_at(cs, 0), "lag_s", &n), 0);
  assert_true(n > 0); /* the cursor is in the past of the wall clock running the test */
  yajl_val dlq = csr_json_get(v, "dlq");
  assert_int_equal(csr_json_get_int(dlq, "total", &n), 0);
  assert_int_equal(n, 1);
  yajl_val it = csr_json_at(csr_json_get(dlq, "items"), 0);
  assert_string_equal(csr_json_get_str(it, "id"), "c1|DAT|Checkout|cart-2|2026-11-22T10:00:06Z");
  assert_string_equal(csr_json_get_str(it, "reason"), "http_400");
  assert_string_equal(csr_json_get_str(it, "excerpt"), "{\"error\":\"bad email\"}");
  csr_json_free(v);

  /* --dlq --json: the page alone */
  run(&r, "state", "-d", e.dir, "--json", "--dlq", "--limit", "5", NULL);
  assert_int_equal(r.code, 0);
  v = csr_json_parse(r.out, strlen(r.out), why, sizeof(why));
  assert_non_null(v);
  assert_int_equal(csr_json_get_int(v, "total", &n), 0);
  assert_int_equal(n, 1);
  assert_int_equal(csr_json_len(csr_json_get(v, "items")), 1);
  assert_null(csr_json_get(v, "summary"));
  csr_json_free(v);
  env_teardown(&e);
}

/* A torn tail is reported and left as it is; a store open on the directory does not matter. */
static void test_torn_tail_and_open_store(void **state) {
  struct env e;
  env_setup(&e);
  int fd = open(e.aof, O_WRONLY | O_APPEND);
  assert_true(fd >= 0);
  const unsigned char junk[] = {0xFE, 0xA7, 2, 0, 200, 0, 0, 0, 1, 2, 3, 4, 5};
  assert_int_equal(write(fd, junk, sizeof(junk)), sizeof(junk));
  close(fd);
  off_t size = size_of(e.aof);
  run(&r, "state", "-d", e.dir, NULL);
  assert_int_equal(r.code, 0);
  assert_non_null(strstr(r.out, "torn tail     13 bytes at the end"));
  run(&r, "state", "-d", e.dir, "--json", NULL);
  assert_int_equal(r.code, 0);
  yajl_val v = csr_json_parse(r.out, strlen(r.out), NULL, 0);
  assert_non_null(v);
  int64_t n;
  assert_int_equal(csr_json_get_int(csr_json_get(v, "aof"), "torn_bytes", &n), 0);
  assert_int_equal(n, 13);
  assert_non_null(strstr(csr_json_get_str(csr_json_get(v, "aof"), "damage"), "left as is"));
  csr_json_free(v);
  assert_int_equal(size_of(e.aof), size); /* untouched */

  /* a running store (it cut the tail at open) and one more dead letter, durable: still readable */
  store_open(&e);
  admit(&e, "c1|DAT|Checkout|cart-4|2026-11-22T10:00:08Z", e.t0 + 8000, 1);
  outcome(&e, "c1|DAT|Checkout|cart-4|2026-11-22T10:00:08Z", "cij", SK_DEAD, 3);
  rx_loop_run(&e.loop);
  run(&r, "state", "-d", e.dir, NULL);
  assert_int_equal(r.code, 0);
  assert_non_null(strstr(r.out, "dead letters  2, oldest first:"));
  assert_non_null(strstr(r.out, "cart-4"));
  assert_null(strstr(r.out, "torn tail"));
  store_close(&e);
  env_teardown(&e);
}

/* The ingress's job records replay through the state: counted in the summary, never shown (PII). */
static void test_jobs(void **state) {
  const char *req = "{\"email\":\"ann@example.com\",\"firstName\":\"Ann\"}";
  struct cs_rec_job_end done = {"j1", CS_JOB_DONE, "C000123", true, 201, NULL, 1, 0};
  struct cs_rec_job_end failed = {"j2", CS_JOB_FAILED, NULL, false, 400, "bad phone", 1, 0};
  struct env e;
  env_setup(&e);
  store_open(&e);
  put(&e, PL_REC_JOB, cs_rec_job(&e.jw, "j1", "ann@example.com", e.t0, req, strlen(req)));
  put(&e, PL_REC_JOB, cs_rec_job(&e.jw, "j2", "ann@example.com", e.t0, req, strlen(req)));
  put(&e, PL_REC_JOB, cs_rec_job(&e.jw, "j3", "ann@example.com", e.t0, req, strlen(req)));
  put(&e, PL_REC_JOB_END, cs_rec_job_end(&e.jw, &done));
  put(&e, PL_REC_JOB_END, cs_rec_job_end(&e.jw, &failed));
  put(&e, PL_REC_CUSTOMER, cs_rec_customer(&e.jw, "bob@example.com", "C000124"));
  store_close(&e);
  run(&r, "state", "-d", e.dir, NULL);
  assert_int_equal(r.code, 0);
  assert_string_equal(r.err, "");
  assert_non_null(strstr(r.out, "14 records)"));
  assert_non_null(strstr(r.out, "customer jobs 1 pending, 2 ended, 2 accounts mapped\n"));
  assert_null(strstr(r.out, "example.com"));
  run(&r, "state", "-d", e.dir, "--json", NULL);
  assert_int_equal(r.code, 0);
  yajl_val v = csr_json_parse(r.out, strlen(r.out), NULL, 0);
  assert_non_null(v);
  yajl_val jobs = csr_json_path(v, "summary.jobs");
  int64_t n;
  assert_int_equal(csr_json_get_int(jobs, "pending", &n), 0);
  assert_int_equal(n, 1);
  assert_int_equal(csr_json_get_int(jobs, "ended", &n), 0);
  assert_int_equal(n, 2);
  assert_int_equal(csr_json_get_int(jobs, "accounts", &n), 0);
  assert_int_equal(n, 2);
  csr_json_free(v);
  assert_null(strstr(r.out, "example.com"));
  env_teardown(&e);
}

static void test_errors(void **state) {
  run(&r, "state", "-d", "/nonexistent-csr-state", NULL);
  assert_int_equal(r.code, 1);
  assert_string_equal(r.err,
                      "csurelay state: no state in /nonexistent-csr-state (no csurelay.aof)\n");
  assert_int_equal(access("/nonexistent-csr-state", F_OK), -1); /* not created */
  char dir[] = "/tmp/csr-cli-empty-XXXXXX";
  assert_non_null(mkdtemp(dir));
  run(&r, "state", "-d", dir, NULL);
  assert_int_equal(r.code, 1);
  assert_non_null(strstr(r.err, "no state in"));
  /* a file that is not an AOF */
  char aof[128];
  snprintf(aof, sizeof(aof), "%s/csurelay.aof", dir);
  FILE *f = fopen(aof, "w");
  assert_non_null(f);
  fputs("this is not an append-only file, but it is long enough", f);
  fclose(f);
  run(&r, "state", "-d", dir, NULL);
  assert_int_equal(r.code, 1);
  assert_non_null(strstr(r.err, "not a csurelay AOF"));
  unlink(aof);
  rmdir(dir);

  run(&r, "state", NULL);
  assert_int_equal(r.code, 2);
  assert_non_null(strstr(r.err, "missing -d DIR"));
  run(&r, "state", "-d", NULL);
  assert_int_equal(r.code, 2);
  run(&r, "state", "-d", "/tmp", "--limit", "lots", NULL);
  assert_int_equal(r.code, 2);
  assert_non_null(strstr(r.err, "--limit wants a number"));
  run(&r, "state", "-d", "/tmp", "--frobnicate", NULL);
  assert_int_equal(r.code, 2);
  run(&r, "state", "--help", NULL);
  assert_int_equal(r.code, 0);
  assert_non_null(strstr(r.out, "usage: csurelay state -d DIR"));
  run(&r, "--help", NULL);
  assert_non_null(strstr(r.out, "csurelay state -d DIR"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_text),
      cmocka_unit_test(test_json),
      cmocka_unit_test(test_torn_tail_and_open_store),
      cmocka_unit_test(test_jobs),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
