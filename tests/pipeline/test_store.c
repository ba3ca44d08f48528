/* The state store: round trip, fsync policies, close, torn tails, damage in the middle, compaction
 * (manual, automatic, with appends racing it, abandoned by close), refusals, write and fsync
 * errors, kill -9 of a child appending with fsync=always, one store per directory (the lock), and
 * the read-only replay beside a running store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "csurelay/pipeline.h"
#include "pipeline/internal.h"
#include "store_crasher.h"

/* ---------------------------------------------------------------------------------------------- */
/* Fixtures */
/* ---------------------------------------------------------------------------------------------- */

struct env {
  uv_loop_t uv;
  struct rx_loop loop;
  char dir[64];
  char path[128];
};

static void env_setup(struct env *e) {
  assert_int_equal(uv_loop_init(&e->uv), 0);
  assert_int_equal(rx_loop_init(&e->loop, &e->uv), 0);
  snprintf(e->dir, sizeof(e->dir), "/tmp/csr-store-XXXXXX");
  assert_non_null(mkdtemp(e->dir));
  snprintf(e->path, sizeof(e->path), "%s/" PL__AOF_NAME, e->dir);
}

static void rm_tree(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL)
    return;
  struct dirent *de;
  char p[1024];
  while ((de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
      continue;
    snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
    if (unlink(p) != 0 && errno == EISDIR)
      rm_tree(p);
  }
  closedir(d);
  rmdir(dir);
}

static void env_teardown(struct env *e) {
  assert_int_equal(rx_loop_close(&e->loop), 0);
  rm_tree(e->dir);
}

static uint64_t file_size(const char *path) {
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  return (uint64_t)st.st_size;
}

/* The number of entries in dir whose name starts with prefix (the first one's path in out). */
static int count_prefixed(const char *dir, const char *prefix, char *out, size_t out_len) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL)
    if (strncmp(de->d_name, prefix, strlen(prefix)) == 0 && n++ == 0 && out &&
        (size_t)snprintf(out, out_len, "%s/%s", dir, de->d_name) >= out_len)
      fail_msg("path too long");
  closedir(d);
  return n;
}

/* What replay saw, and the owner's state for a dump. */
struct rec {
  uint8_t type;
  size_t len;
  uint8_t *data;
};

struct owner {
  struct rec *r;
  size_t n, cap;
  long fail_at; /* replay refuses the record with this index (-1: never) */
  /* the keyed model of the compaction tests */
  bool keyed;
  uint64_t vals[100];
  bool has[100];
  uint64_t updates;
  uint64_t dumped_at;
  int dumps;
};

static void owner_reset(struct owner *o) {
  for (size_t i = 0; i < o->n; i++)
    free(o->r[i].data);
  free(o->r);
  bool keyed = o->keyed;
  *o = (struct owner){.fail_at = -1, .keyed = keyed};
}

static void owner_push(struct owner *o, uint8_t type, const void *p, size_t len) {
  if (o->n == o->cap) {
    o->cap = o->cap ? o->cap * 2 : 64;
    o->r = realloc(o->r, o->cap * sizeof(*o->r));
    assert_non_null(o->r);
  }
  struct rec *r = &o->r[o->n++];
  r->type = type;
  r->len = len;
  r->data = malloc(len ? len : 1);
  assert_non_null(r->data);
  if (len)
    memcpy(r->data, p, len);
}

static void keyed_apply(struct owner *o, const uint8_t *p) {
  uint32_t k;
  uint64_t v;
  memcpy(&k, p, 4);
  memcpy(&v, p + 4, 8);
  assert_true(k < 100);
  o->vals[k] = v;
  o->has[k] = true;
}

static int on_replay(void *arg, uint8_t type, const void *p, size_t len) {
  struct owner *o = arg;
  if (o->fail_at >= 0 && (size_t)o->fail_at == o->n)
    return UV_EPROTO;
  owner_push(o, type, p, len);
  if (o->keyed) {
    assert_int_equal(len, 12);
    keyed_apply(o, p);
  }
  return 0;
}

/* The live state: every replayed record (unkeyed), or the latest value of each key. */
static int on_dump(void *arg, struct pl_store_emitter *e) {
  struct owner *o = arg;
  o->dumps++;
  o->dumped_at = o->updates;
  for (size_t i = 0; !o->keyed && i < o->n; i++) {
    int rc = pl_store_emit(e, o->r[i].type, o->r[i].data, o->r[i].len);
    if (rc < 0)
      return rc;
  }
  for (uint32_t k = 0; o->keyed && k < 100; k++) {
    if (!o->has[k])
      continue;
    uint8_t p[12];
    memcpy(p, &k, 4);
    memcpy(p + 4, &o->vals[k], 8);
    int rc = pl_store_emit(e, 1, p, sizeof(p));
    if (rc < 0)
      return rc;
  }
  return 0;
}

/* Record `seq`: type and size vary (0 to ~5000 bytes, a few larger), bytes derived from seq. */
static size_t payload(uint8_t *buf, uint64_t seq, uint8_t *type) {
  size_t len = (size_t)((seq * 7919) % 5000);
  if (seq % 97 == 13)
    len = 60000 + seq;
  if (seq % 11 == 5)
    len = 0;
  for (size_t i = 0; i < len; i++)
    buf[i] = (uint8_t)(seq * 31 + i);
  *type = (uint8_t)(seq % 7 + 1);
  return len;
}

static void check_rec(const struct rec *r, uint64_t seq) {
  static uint8_t buf[70000];
  uint8_t type;
  size_t len = payload(buf, seq, &type);
  assert_int_equal(r->type, type);
  assert_int_equal(r->len, len);
  assert_memory_equal(r->data, buf, len);
}

static uint64_t rec_bytes(uint64_t seq) {
  static uint8_t buf[70000];
  uint8_t type;
  return PL__REC_HDR_BYTES + payload(buf, seq, &type);
}

struct req {
  struct rx_fut fut;
  int fired;
  int result;
};

static int fired_total;

static void on_durable(struct rx_fut *fut) {
  struct req *r = RX_CONTAINER_OF(fut, struct req, fut);
  r->fired++;
  r->result = fut->result;
  fired_total++;
}

static void append_seq_cb(struct pl_store *s, uint64_t seq, struct req *r, rx_fut_cb cb) {
  static uint8_t buf[70000];
  uint8_t type;
  size_t len = payload(buf, seq, &type);
  if (r)
    *r = (struct req){0};
  assert_int_equal(pl_store_append(s, type, buf, len, r ? &r->fut : NULL, cb), 0);
}

static void append_seq(struct pl_store *s, uint64_t seq, struct req *r) {
  append_seq_cb(s, seq, r, on_durable);
}

static struct pl_store_opts opts_for(struct env *e, enum csr_fsync fsync) {
  return (struct pl_store_opts){.dir = e->dir, .fsync = fsync};
}

static struct pl_store *open_ok(struct env *e, const struct pl_store_opts *opts, struct owner *o,
                                struct csr_err *err) {
  struct pl_store *s = NULL;
  struct csr_err local;
  owner_reset(o);
  int rc = pl_store_open(&e->loop, opts, on_replay, on_dump, o, &s, err ? err : &local);
  if (rc != 0)
    fail_msg("pl_store_open: %s: %s", csr_strerror(rc), (err ? err : &local)->msg);
  return s;
}

static void on_closed(void *arg) {
  (*(int *)arg)++;
}

static void close_run(struct env *e, struct pl_store *s) {
  int closed = 0;
  pl_store_close(s, on_closed, &closed);
  assert_int_equal(closed, 0); /* never synchronous */
  rx_loop_run(&e->loop);
  assert_int_equal(closed, 1);
}

/* Writes records 0..n-1 (every one awaited) and closes. */
static void write_records(struct env *e, uint64_t n) {
  struct owner o = {.fail_at = -1};
  struct pl_store_opts opts = opts_for(e, CSR_FSYNC_BATCH);
  struct pl_store *s = open_ok(e, &opts, &o, NULL);
  struct req *reqs = calloc(n, sizeof(*reqs));
  fired_total = 0;
  for (uint64_t i = 0; i < n; i++)
    append_seq(s, i, &reqs[i]);
  rx_loop_run(&e->loop);
  assert_int_equal(fired_total, n);
  for (uint64_t i = 0; i < n; i++)
    assert_int_equal(reqs[i].result, 0);
  close_run(e, s);
  free(reqs);
  owner_reset(&o);
}

/* ---------------------------------------------------------------------------------------------- */
/* CRC, round trip, policies, close */
/* ---------------------------------------------------------------------------------------------- */

static void test_crc32c(void **state) {
  assert_int_equal(pl__crc32c(0, "123456789", 9), 0xE3069283u);
  assert_int_equal(pl__crc32c_sw(0, "123456789", 9), 0xE3069283u);
  assert_int_equal(pl__crc32c(0, "", 0), 0);
  static uint8_t buf[4096];
  uint64_t rng = 42;
  for (size_t i = 0; i < sizeof(buf); i++)
    buf[i] = (uint8_t)rx_rand64(&rng);
  for (int i = 0; i < 200; i++) {
    size_t off = rx_rand64(&rng) % 64, len = rx_rand64(&rng) % (sizeof(buf) - 64);
    uint32_t hw = pl__crc32c(0, buf + off, len);
    assert_int_equal(hw, pl__crc32c_sw(0, buf + off, len));
    /* incremental == one shot */
    size_t cut = len / 3;
    assert_int_equal(pl__crc32c(pl__crc32c(0, buf + off, cut), buf + off + cut, len - cut), hw);
  }
}

static void test_round_trip(void **state) {
  struct env e;
  env_setup(&e);
  enum { N = 600 };
  struct owner o = {.fail_at = -1};
  struct pl_store_opts opts = opts_for(&e, CSR_FSYNC_BATCH);
  struct pl_store *s = open_ok(&e, &opts, &o, NULL);
  assert_int_equal(o.n, 0);
  assert_true(pl_store_stats(s)->healthy);
  assert_int_equal(pl_store_stats(s)->file_bytes, PL__AOF_HDR_BYTES);
  static struct req reqs[N];
  fired_total = 0;
  uint64_t bytes = 0;
  for (uint64_t i = 0; i < N; i++) {
    /* every third append does not ask to be told */
    append_seq(s, i, i % 3 == 2 ? NULL : &reqs[i]);
    bytes += rec_bytes(i);
  }
  assert_int_equal(fired_total, 0);
  assert_int_equal(reqs[0].fired, 0);
  assert_true(rx_fut_pending(&reqs[0].fut));
  assert_int_equal(pl_store_stats(s)->pending, N);
  rx_loop_run(&e.loop);
  for (uint64_t i = 0; i < N; i++) {
    assert_int_equal(reqs[i].fired, i % 3 == 2 ? 0 : 1);
    assert_int_equal(reqs[i].result, 0);
  }
  const struct pl_store_stats *st = pl_store_stats(s);
  assert_int_equal(st->appends, N);
  assert_int_equal(st->bytes_appended, bytes);
  assert_int_equal(st->file_bytes, PL__AOF_HDR_BYTES + bytes);
  assert_int_equal(st->pending, 0);
  assert_int_equal(st->flushes, 1);
  assert_int_equal(st->fsyncs, 1);
  close_run(&e, s);
  assert_int_equal(file_size(e.path), PL__AOF_HDR_BYTES + bytes);

  s = open_ok(&e, &opts, &o, NULL);
  assert_int_equal(o.n, N);
  for (uint64_t i = 0; i < N; i++)
    check_rec(&o.r[i], i);
  st = pl_store_stats(s);
  assert_int_equal(st->records_replayed, N);
  assert_int_equal(st->torn_tails + st->corrupt_regions, 0);
  assert_true(st->healthy);
  close_run(&e, s);
  owner_reset(&o);
  env_teardown(&e);
}

/* Appends chained from durability callbacks (a stage that appends when the last one is durable),
 * plus a producer timer: each policy completes them all, exactly once, with 0. */
struct chain {
  struct pl_store *store;
  struct req reqs[400];
  uint64_t next;
  struct rx_timer timer;
  int ticks;
};

static void on_chain(struct rx_fut *fut) {
  on_durable(fut);
  struct chain *c = fut->data;
  if (c->next < 200) {
    struct req *r = &c->reqs[c->next];
    append_seq_cb(c->store, c->next++, r, on_chain);
    r->fut.data = c;
  }
}

static uint64_t on_chain_tick(struct rx_timer *timer) {
  struct chain *c = timer->data;
  for (int i = 0; i < 10; i++)
    append_seq(c->store, 200 + (uint64_t)c->ticks * 10 + (uint64_t)i,
               &c->reqs[200 + c->ticks * 10 + i]);
  return ++c->ticks < 20 ? 1 : RX_TIMER_STOP;
}

static void run_policy(enum csr_fsync policy) {
  struct env e;
  env_setup(&e);
  struct owner o = {.fail_at = -1};
  struct pl_store_opts opts = opts_for(&e, policy);
  struct chain *c = calloc(1, sizeof(*c));
  c->store = open_ok(&e, &opts, &o, NULL);
  fired_total = 0;
  for (int i = 0; i < 4; i++) {
    append_seq_cb(c->store, c->next, &c->reqs[c->next], on_chain);
    c->reqs[c->next++].fut.data = c;
  }
  assert_int_equal(rx_timer_init(&c->timer, &e.loop), 0);
  c->timer.data = c;
  assert_int_equal(rx_timer_start(&c->timer, on_chain_tick, 1), 0);
  rx_loop_run(&e.loop);
  assert_int_equal(fired_total, 400);
  for (int i = 0; i < 400; i++) {
    assert_int_equal(c->reqs[i].fired, 1);
    assert_int_equal(c->reqs[i].result, 0);
  }
  const struct pl_store_stats *st = pl_store_stats(c->store);
  assert_int_equal(st->appends, 400);
  assert_int_equal(st->pending, 0);
  if (policy == CSR_FSYNC_NONE)
    assert_int_equal(st->fsyncs, 0);
  else
    assert_true(st->fsyncs >= 1 && st->fsyncs <= st->flushes);
  print_message("    %s: %llu appends, %llu flushes, %llu fsyncs\n",
                policy == CSR_FSYNC_ALWAYS  ? "always"
                : policy == CSR_FSYNC_BATCH ? "batch"
                                            : "none",
                (unsigned long long)st->appends, (unsigned long long)st->flushes,
                (unsigned long long)st->fsyncs);
  rx_timer_close(&c->timer, NULL);
  close_run(&e, c->store);
  c->store = open_ok(&e, &opts, &o, NULL);
  assert_int_equal(o.n, 400);
  close_run(&e, c->store);
  owner_reset(&o);
  free(c);
  env_teardown(&e);
}

static void test_fsync_always(void **state) {
  run_policy(CSR_FSYNC_ALWAYS);
}

static void test_fsync_batch(void **state) {
  run_policy(CSR_FSYNC_BATCH);
}

static void test_fsync_none(void **state) {
  run_policy(CSR_FSYNC_NONE);
}

/* Batch, with the interval over: the fsync starts in the loop turn that wrote the record, right
 * after the write, so the append is durable within that one turn. From a 0 ms timer it started
 * only in the next turn, after that turn's poll phase: in a burst of Search pages, 10-15 ms of
 * parsing later. Then, within the interval, the next fsync waits for it. */
static void test_fsync_batch_starts_after_write(void **state) {
  struct env e;
  env_setup(&e);
  struct owner o = {.fail_at = -1};
  struct pl_store_opts opts = opts_for(&e, CSR_FSYNC_BATCH);
  opts.fsync_interval_ms = 50;
  struct pl_store *s = open_ok(&e, &opts, &o, NULL);
  uv_sleep(60); /* whatever open synced, the interval is over */
  uv_update_time(&e.uv);
  struct req a, b;
  fired_total = 0;
  append_seq(s, 0, &a);
  uv_run(&e.uv, UV_RUN_ONCE);
  assert_int_equal(a.fired, 1);
  assert_int_equal(a.result, 0);
  assert_int_equal(pl_store_stats(s)->fsyncs, 1);
  /* within the interval: written in the next turn, synced only once the batch timer fires */
  uint64_t t0 = uv_hrtime();
  append_seq(s, 1, &b);
  uv_run(&e.uv, UV_RUN_ONCE);
  assert_int_equal(b.fired, 0);
  while (!b.fired)
    uv_run(&e.uv, UV_RUN_ONCE);
  assert_int_equal(b.result, 0);
  assert_true(uv_hrtime() - t0 >= 40 * 1000000ull);
  assert_int_equal(pl_store_stats(s)->fsyncs, 2);
  close_run(&e, s);
  owner_reset(&o);
  env_teardown(&e);
}

/* Batch under a steady trickle: one append per ms for 200 ms is coalesced into a few fsyncs. */
static uint64_t on_trickle(struct rx_timer *timer) {
  struct chain *c = timer->data;
  append_seq(c->store, (uint64_t)c->ticks, &c->reqs[c->ticks]);
  return ++c->ticks < 200 ? 1 : RX_TIMER_STOP;
}

static void test_fsync_batch_trickle(void **state) {
  struct env e;
  env_setup(&e);
  struct owner o = {.fail_at = -1};
  struct pl_store_opts opts = opts_for(&e, CSR_FSYNC_BATCH);
  opts.fsync_interval_ms = 20;
  struct chain *c = calloc(1, sizeof(*c));
  c->store = open_ok(&e, &opts, &o, NULL);
  fired_total = 0;
  assert_int_equal(rx_timer_init(&c->timer, &e.loop), 0);
  c->timer.data = c;
  assert_int_equal(rx_timer_start(&c->timer, on_trickle, 1), 0);
  uint64_t t0 = rx_now_ms(&e.loop);
  rx_loop_run(&e.loop);
  uint64_t elapsed = rx_now_ms(&e.loop) - t0;
  const struct pl_store_stats *st = pl_store_stats(c->store);
  assert_int_equal(fired_total, 200);
  assert_true(st->flushes >= 100); /* one write per turn that appended */
  /* coalesced: fsyncs start at most once per interval, whatever the append rate */
  assert_true(st->fsyncs >= 2 && st->fsyncs <= elapsed / 20 + 1);
  print_message("    batch 20 ms: %llu appends over %llu ms, %llu flushes, %llu fsyncs\n",
                (unsigned long long)st->appends, (unsigned long long)elapsed,
                (unsigned long long)st->flushes, (unsigned long long)st->fsyncs);
  rx_timer_close(&c->timer, NULL);
  close_run(&e, c->store);
  owner_reset(&o);
  free(c);
  env_teardown(&e);
}

/* Close right after appending: the appends are written, fsynced and completed, then the store is
 * freed. */
static void test_close_completes_pending(void **state) {
  enum csr_fsync policies[] = {CSR_FSYNC_ALWAYS, CSR_FSYNC_BATCH, CSR_FSYNC_NONE};
  for (int p = 0; p < 3; p++) {
    struct env e;
    env_setup(&e);
    struct owner o = {.fail_at = -1};
    struct pl_store_opts opts = opts_for(&e, policies[p]);
    struct pl_store *s = open_ok(&e, &opts, &o, NULL);
    struct req reqs[50];
    fired_total = 0;
    for (int i = 0; i < 50; i++)
      append_seq(s, (uint64_t)i, &reqs[i]);
    close_run(&e, s);
    assert_int_equal(fired_total, 50);
    for (int i = 0; i < 50; i++)
      assert_int_equal(reqs[i].result, 0);
    s = open_ok(&e, &opts, &o, NULL);
    assert_int_equal(o.n, 50);
    for (int i = 0; i < 50; i++)
      check_rec(&o.r[i], (uint64_t)i);
    close_run(&e, s);
    owner_reset(&o);
    env_teardown(&e);
  }
}

/* ---------------------------------------------------------------------------------------------- */
/* Open: fresh directories, foreign files, leftovers, refused replay */
/* ---------------------------------------------------------------------------------------------- */

static void test_open_creates_dirs_and_removes_leftover(void **state) {
  struct env e;
  env_setup(&e);
  char nested[160], tmp[200];
  snprintf(nested, sizeof(nested), "%s/a/b", e.dir);
  struct owner o = {.fail_at = -1};
  struct pl_store_opts opts = {.dir = nested, .fsync = CSR_FSYNC_ALWAYS};
  struct pl_store *s = open_ok(&e, &opts, &o, NULL);
  append_seq(s, 1, NULL);
  close_run(&e, s);
  /* a rewrite that crashed left its temp file: open removes it and keeps the state */
  snprintf(tmp, sizeof(tmp), "%s/" PL__AOF_NAME ".rewrite", nested);
  FILE *f = fopen(tmp, "w");
  assert_non_null(f);
  fputs("half a rewrite", f);
  fclose(f);
  s = open_ok(&e, &opts, &o, NULL);
  assert_int_equal(access(tmp, F_OK), -1);
  assert_int_equal(o.n, 1);
  check_rec(&o.r[0], 1);
  close_run(&e, s);
  owner_reset(&o);
  env_teardown(&e);
}

static void test_open_refuses_foreign_file(void **state) {
  struct env e;
  env_setup(&e);
  const char *texts[] = {"this is not an append-only file, but it is long enough", "short"};
  for (int i = 0; i < 2; i++) {
    FILE *f = fopen(e.path, "w");
    assert_non_null(f);
    fputs(texts[i], f);
    fclose(f);
    struct owner o = {.fail_at = -1};
    struct pl_store_opts opts = opts_for(&e, CSR_FSYNC_ALWAYS);
    struct pl_store *s = NULL;
    struct csr_err err;
    assert_int_equal(pl_store_open(&e.loop, &opts, on_replay, on_dump, &o, &s, &err), CSR_ECORRUPT);
    assert_null(s);
    assert_non_null(strstr(err.msg, "not a csurelay AOF"));
    assert_int_equal(file_size(e.path), strlen(texts[i])); /* untouched */
  }
  env_teardown(&e);
}

static void test_open_replay_refusal(void **state) {
  struct env e;
  env_setup(&e);
  write_records(&e, 10);
  struct owner o = {.fail_at = -1};
  struct pl_store_opts opts = opts_for(&e, CSR_FSYNC_ALWAYS);
  struct pl_store *s = NULL;
  struct csr_err err;
  owner_reset(&o);
  o.fail_at = 4;
  assert_int_equal(pl_store_open(&e.loop, &opts, on_replay, on_dump, &o, &s, &err), UV_EPROTO);
  assert_null(s);
  assert_int_equal(o.n, 4);
  char want[64];
  snprintf(want, sizeof(want), "offset %llu",
           (unsigned long long)(PL__AOF_HDR_BYTES + rec_bytes(0) + rec_bytes(1) + rec_bytes(2) +
                                rec_bytes(3)));
  assert_non_null(strstr(err.msg, want));
  owner_reset(&o);
  struct pl_store_opts bad = {0};
  assert_int_equal(pl_store_open(&e.loop, &bad, on_replay, on_dump, &o, &s, &err), UV_EINVAL);
  env_teardown(&e);
}

/* ---------------------------------------------------------------------------------------------- */
/* Torn tails */
/* ---------------------------------------------------------------------------------------------- */

/* Reopens a file whose last `torn` bytes are not a record: all `intact` records replay, the tail is
 * cut and counted, and appending goes on after it. */
static void check_torn(struct env *e, uint64_t intact, uint64_t torn) {
  uint64_t good = file_size(e->path) - torn;
  struct owner o = {.fail_at = -1};
  struct pl_store_opts opts = opts_for(e, CSR_FSYNC_ALWAYS);
  struct csr_err err;
  struct pl_store *s = open_ok(e, &opts, &o, &err);
  assert_int_equal(o.n, intact);
  for (uint64_t i = 0; i < intact; i++)
    check_rec(&o.r[i], i);
  const struct pl_store_stats *st = pl_store_stats(s);
  assert_int_equal(st->torn_tails, 1);
  assert_int_equal(st->torn_bytes, torn);
  assert_int_equal(st->corrupt_regions, 0);
  assert_true(st->healthy);
  assert_non_null(strstr(err.msg, "torn tail"));
  assert_int_equal(file_size(e->path), good);
  assert_int_equal(st->file_bytes, good);
  struct req r;
  append_seq(s, intact, &r);
  rx_loop_run(&e->loop);
  assert_int_equal(r.result, 0);
  close_run(e, s);
  s = open_ok(e, &opts, &o, &err);
  assert_int_equal(o.n, intact + 1);
  check_rec(&o.r[intact], intact);
  assert_int_equal(pl_store_stats(s)->torn_tails, 0);
  assert_string_equal(err.msg, "");
  close_run(e, s);
  owner_reset(&o);
}

static void test_torn_tail_mid_payload(void **state) {
  struct env e;
  env_setup(&e);
  write_records(&e, 20);
  uint64_t size = file_size(e.path);
  assert_true(rec_bytes(19) > 30);
  assert_int_equal(truncate(e.path, (off_t)(size - 7)), 0);
  check_torn(&e, 19, rec_bytes(19) - 7);
  env_teardown(&e);
}

static void test_torn_tail_mid_header(void **state) {
  struct env e;
  env_setup(&e);
  write_records(&e, 20);
  uint64_t size = file_size(e.path);
  assert_int_equal(truncate(e.path, (off_t)(size - rec_bytes(19) + 5)), 0);
  check_torn(&e, 19, 5);
  env_teardown(&e);
}

static void test_torn_tail_garbage(void **state) {
  struct env e;
  env_setup(&e);
  write_records(&e, 20);
  /* garbage after the last record, starting with what looks like a record header */
  uint8_t junk[300];
  uint64_t rng = 7;
  for (size_t i = 0; i < sizeof(junk); i++)
    junk[i] = (uint8_t)rx_rand64(&rng);
  junk[0] = PL__REC_MARK0;
  junk[1] = PL__REC_MARK1;
  pl__put32(junk + 4, 100);
  int fd = open(e.path, O_WRONLY | O_APPEND);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, junk, sizeof(junk)), sizeof(junk));
  close(fd);
  check_torn(&e, 20, sizeof(junk));
  env_teardown(&e);
}

/* ---------------------------------------------------------------------------------------------- */
/* Damage in the middle */
/* ---------------------------------------------------------------------------------------------- */

static uint8_t *slurp(const char *path, uint64_t *len) {
  *len = file_size(path);
  uint8_t *p = malloc(*len);
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  assert_int_equal(read(fd, p, *len), (ssize_t)*len);
  close(fd);
  return p;
}

/* Flips the byte `at` bytes into record k of n: every other record replays, the region is exactly
 * record k, a copy is kept, the store is unhealthy until a compaction rewrites it. */
/* Flips the byte `at` bytes into record k of the file; returns the record's offset. */
static uint64_t damage_record(struct env *e, uint64_t k, uint64_t at) {
  uint64_t off = PL__AOF_HDR_BYTES;
  for (uint64_t i = 0; i < k; i++)
    off += rec_bytes(i);
  assert_true(at < rec_bytes(k));
  int fd = open(e->path, O_RDWR);
  uint8_t b;
  assert_int_equal(pread(fd, &b, 1, (off_t)(off + at)), 1);
  b ^= 0x40;
  assert_int_equal(pwrite(fd, &b, 1, (off_t)(off + at)), 1);
  close(fd);
  return off;
}

/* The one copy beside the file holds the damaged file as it was. */
static void check_damage_copy(struct env *e, const uint8_t *damaged, uint64_t len) {
  char copy[400];
  assert_int_equal(count_prefixed(e->dir, PL__AOF_NAME ".corrupt-", copy, sizeof(copy)), 1);
  uint64_t copy_len;
  uint8_t *copied = slurp(copy, &copy_len);
  assert_int_equal(copy_len, len);
  assert_memory_equal(copied, damaged, len);
  free(copied);
}

/* Appends record n (the owner keeps it too), compacts, and checks the store is healthy again. */
static void heal(struct env *e, struct pl_store *s, struct owner *o, uint64_t n) {
  static uint8_t buf[70000];
  uint8_t type;
  size_t len = payload(buf, n, &type);
  owner_push(o, type, buf, len); /* the owner's state: what it replayed and appended */
  struct req r;
  append_seq(s, n, &r);
  rx_loop_run(&e->loop);
  assert_int_equal(r.result, 0); /* appends still work while unhealthy */
  assert_int_equal(pl_store_compact(s), 0);
  rx_loop_run(&e->loop);
  const struct pl_store_stats *st = pl_store_stats(s);
  assert_int_equal(st->compactions, 1);
  assert_true(st->healthy);
  assert_string_equal(st->health_reason, "");
}

/* Damages record K of N: every other record replays, the region is exactly record K, a copy is
 * kept, the store is unhealthy until a compaction rewrites it, and then it reopens clean. */
static void corrupt_case(uint64_t at) {
  enum { N = 30, K = 12 };
  struct env e;
  env_setup(&e);
  write_records(&e, N);
  uint64_t off = damage_record(&e, K, at), damaged_len;
  uint8_t *damaged = slurp(e.path, &damaged_len);
  struct owner o = {.fail_at = -1};
  struct pl_store_opts opts = opts_for(&e, CSR_FSYNC_ALWAYS);
  struct csr_err err;
  struct pl_store *s = open_ok(&e, &opts, &o, &err);
  assert_int_equal(o.n, N - 1);
  for (uint64_t i = 0; i < N - 1; i++)
    check_rec(&o.r[i], i < K ? i : i + 1);
  const struct pl_store_stats *st = pl_store_stats(s);
  assert_int_equal(st->corrupt_regions, 1);
  assert_int_equal(st->corrupt_bytes, rec_bytes(K));
  assert_int_equal(st->torn_tails, 0);
  assert_int_equal(st->records_replayed, N - 1);
  assert_false(st->healthy);
  char want[64];
  snprintf(want, sizeof(want), "first at offset %llu", (unsigned long long)off);
  assert_non_null(strstr(st->health_reason, want));
  assert_non_null(strstr(err.msg, want));
  check_damage_copy(&e, damaged, damaged_len);
  free(damaged);
  assert_int_equal(file_size(e.path), damaged_len); /* nothing rewritten yet */
  heal(&e, s, &o, N);
  close_run(&e, s);

  s = open_ok(&e, &opts, &o, &err);
  assert_int_equal(o.n, N);
  for (uint64_t i = 0; i < N; i++)
    check_rec(&o.r[i], i < K ? i : i + 1);
  assert_int_equal(pl_store_stats(s)->corrupt_regions, 0);
  assert_true(pl_store_stats(s)->healthy);
  assert_string_equal(err.msg, "");
  close_run(&e, s);
  owner_reset(&o);
  env_teardown(&e);
}

static void test_corrupt_payload(void **state) {
  corrupt_case(PL__REC_HDR_BYTES + 10);
}

static void test_corrupt_length(void **state) {
  corrupt_case(5);
}

static void test_corrupt_marker(void **state) {
  corrupt_case(0);
}

/* ---------------------------------------------------------------------------------------------- */
/* Compaction */
/* ---------------------------------------------------------------------------------------------- */

struct racer {
  struct owner *owner;
  struct pl_store *store;
  uv_idle_t idle;
  uint64_t by_state[4]; /* appends made in each compaction state */
  int after;            /* appends still to make once the compaction is done */
  int failed;
};

static void keyed_update(struct owner *o, struct pl_store *s, uint64_t i, struct rx_fut *fut) {
  uint32_t k = (uint32_t)(i % 100);
  uint64_t v = i * 1000003;
  uint8_t p[12];
  memcpy(p, &k, 4);
  memcpy(p + 4, &v, 8);
  assert_int_equal(pl_store_append(s, 1, p, sizeof(p), fut, on_durable), 0);
  o->vals[k] = v;
  o->has[k] = true;
  o->updates++;
}

static struct req racer_req;

/* Every loop turn while the compaction runs (the idle handle keeps the loop spinning): one
 * update, so some land in each phase (at most 300 in each). */
static void on_race(uv_idle_t *idle) {
  struct racer *r = idle->data;
  enum pl__compact_state cs = r->store->cpt.state;
  if (cs == PL__CPT_IDLE && r->after-- <= 0) {
    uv_idle_stop(idle);
    return;
  }
  if (r->by_state[cs] < 300) {
    r->by_state[cs]++;
    keyed_update(r->owner, r->store, r->owner->updates, NULL);
  }
}

static void check_keyed_reopen(struct env *e, const struct pl_store_opts *opts, struct owner *o,
                               uint64_t records) {
  struct owner back = {.fail_at = -1, .keyed = true};
  struct pl_store *s = open_ok(e, opts, &back, NULL);
  assert_int_equal(back.n, records);
  assert_memory_equal(back.vals, o->vals, sizeof(o->vals));
  assert_memory_equal(back.has, o->has, sizeof(o->has));
  assert_int_equal(file_size(e->path), PL__AOF_HDR_BYTES + records * (PL__REC_HDR_BYTES + 12));
  assert_int_equal(count_prefixed(e->dir, PL__AOF_NAME ".rewrite", NULL, 0), 0);
  close_run(e, s);
  owner_reset(&back);
}

static void test_compact_with_racing_appends(void **state) {
  struct env e;
  env_setup(&e);
  struct owner o = {.fail_at = -1, .keyed = true};
  struct pl_store_opts opts = opts_for(&e, CSR_FSYNC_ALWAYS);
  struct pl_store *s = open_ok(&e, &opts, &o, NULL);
  for (uint64_t i = 0; i < 10000; i++)
    keyed_update(&o, s, i, NULL);
  rx_loop_run(&e.loop);
  uint64_t history = pl_store_stats(s)->file_bytes;
  assert_int_equal(history, PL__AOF_HDR_BYTES + 10000 * 24);

  assert_int_equal(pl_store_compact(s), 0);
  assert_int_equal(o.dumps, 1);
  assert_int_equal(o.dumped_at, 10000);
  assert_int_equal(pl_store_compact(s), UV_EBUSY);
  /* appended while the rewrite runs, some of them awaited */
  fired_total = 0;
  keyed_update(&o, s, o.updates, &racer_req.fut);
  for (int i = 0; i < 499; i++)
    keyed_update(&o, s, o.updates, NULL);
  struct racer r = {.owner = &o, .store = s, .after = 50};
  assert_int_equal(uv_idle_init(&e.uv, &r.idle), 0);
  r.idle.data = &r;
  assert_int_equal(uv_idle_start(&r.idle, on_race), 0);
  rx_loop_run(&e.loop);
  assert_int_equal(fired_total, 1);
  assert_int_equal(racer_req.result, 0);
  const struct pl_store_stats *st = pl_store_stats(s);
  assert_int_equal(st->compactions, 1);
  assert_int_equal(st->compact_failures, 0);
  assert_true(r.by_state[PL__CPT_REWRITE] > 0);
  assert_true(r.by_state[PL__CPT_COMMIT] > 0);
  print_message("    appends during rewrite %llu, wait %llu, commit %llu\n",
                (unsigned long long)r.by_state[PL__CPT_REWRITE],
                (unsigned long long)r.by_state[PL__CPT_WAIT],
                (unsigned long long)r.by_state[PL__CPT_COMMIT]);
  uint64_t live = 100 + o.updates - o.dumped_at;
  assert_int_equal(st->file_bytes, PL__AOF_HDR_BYTES + live * 24);
  assert_true(st->file_bytes < history / 4);
  assert_int_equal(st->pending, 0);
  uv_close((uv_handle_t *)&r.idle, NULL);
  close_run(&e, s);
  check_keyed_reopen(&e, &opts, &o, live);
  owner_reset(&o);
  env_teardown(&e);
}

/* 10,000 updates of 100 keys, 100 per millisecond. */
struct keyed_producer {
  struct owner *owner;
  struct pl_store *store;
  struct rx_timer timer;
  int ticks;
};

static uint64_t on_keyed_tick(struct rx_timer *timer) {
  struct keyed_producer *p = timer->data;
  for (int i = 0; i < 100; i++)
    keyed_update(p->owner, p->store, p->owner->updates, NULL);
  return ++p->ticks < 100 ? 1 : RX_TIMER_STOP;
}

static void test_compact_automatic(void **state) {
  struct env e;
  env_setup(&e);
  struct owner o = {.fail_at = -1, .keyed = true};
  struct pl_store_opts opts = opts_for(&e, CSR_FSYNC_BATCH);
  opts.compact_min_bytes = 16 << 10;
  opts.compact_ratio = 2.0;
  struct keyed_producer p = {.owner = &o};
  p.store = open_ok(&e, &opts, &o, NULL);
  struct pl_store *s = p.store;
  assert_int_equal(rx_timer_init(&p.timer, &e.loop), 0);
  p.timer.data = &p;
  assert_int_equal(rx_timer_start(&p.timer, on_keyed_tick, 1), 0);
  rx_loop_run(&e.loop);
  rx_timer_close(&p.timer, NULL);
  const struct pl_store_stats *st = pl_store_stats(s);
  assert_true(st->compactions >= 3);
  assert_int_equal(st->compactions, (uint64_t)o.dumps);
  uint64_t live = 100 + o.updates - o.dumped_at;
  assert_int_equal(st->file_bytes, PL__AOF_HDR_BYTES + live * 24);
  print_message("    %llu compactions, file %llu bytes (history %llu)\n",
                (unsigned long long)st->compactions, (unsigned long long)st->file_bytes,
                (unsigned long long)(10000 * 24));
  close_run(&e, s);
  check_keyed_reopen(&e, &opts, &o, live);
  owner_reset(&o);
  env_teardown(&e);
}

/* A dump several times PL__DUMP_CHUNK is written in pieces while it is built: the rewrite holds
 * about one piece in memory, and the new file has every record, in order. */
static void test_compact_dump_in_pieces(void **state) {
  struct env e;
  env_setup(&e);
  write_records(&e, 1500);
  struct owner o = {.fail_at = -1};
  struct pl_store_opts opts = opts_for(&e, CSR_FSYNC_BATCH);
  struct pl_store *s = open_ok(&e, &opts, &o, NULL);
  assert_int_equal(o.n, 1500);
  uint64_t before = pl_store_stats(s)->file_bytes;
  assert_true(before > 4 * PL__DUMP_CHUNK);
  assert_int_equal(pl_store_compact(s), 0);
  /* what is still in memory: the last piece, in a buffer that never held the whole dump */
  assert_true(s->cpt.dump.len < PL__DUMP_CHUNK);
  assert_true(s->cpt.dump.cap <= 2 * PL__DUMP_CHUNK + 70000);
  rx_loop_run(&e.loop);
  const struct pl_store_stats *st = pl_store_stats(s);
  assert_int_equal(st->compactions, 1);
  assert_int_equal(st->compact_failures, 0);
  assert_int_equal(st->file_bytes, before); /* the same records, rewritten */
  close_run(&e, s);
  owner_reset(&o);
  s = open_ok(&e, &opts, &o, NULL);
  assert_int_equal(o.n, 1500);
  for (uint64_t i = 0; i < 1500; i++)
    check_rec(&o.r[i], i);
  assert_int_equal(count_prefixed(e.dir, PL__AOF_NAME ".rewrite", NULL, 0), 0);
  close_run(&e, s);
  owner_reset(&o);
  env_teardown(&e);
}

static int on_dump_fail(void *arg, struct pl_store_emitter *e) {
  return UV_ENOMEM;
}

static void test_compact_abandoned(void **state) {
  struct env e;
  env_setup(&e);
  write_records(&e, 40);
  struct owner o = {.fail_at = -1};
  struct pl_store_opts opts = opts_for(&e, CSR_FSYNC_ALWAYS);
  /* a dump that fails abandons the compaction before it starts */
  struct pl_store *s = NULL;
  struct csr_err err;
  owner_reset(&o);
  assert_int_equal(pl_store_open(&e.loop, &opts, on_replay, on_dump_fail, &o, &s, &err), 0);
  assert_int_equal(pl_store_compact(s), UV_ENOMEM);
  assert_int_equal(pl_store_stats(s)->compact_failures, 1);
  assert_non_null(strstr(pl_store_stats(s)->compact_error, "dump"));
  close_run(&e, s);
  /* close while the rewrite runs: the old file stays, the temp file goes */
  s = open_ok(&e, &opts, &o, NULL);
  size_t replayed = o.n;
  o.n = 5; /* a dump that would lose records if it were committed */
  assert_int_equal(pl_store_compact(s), 0);
  close_run(&e, s);
  o.n = replayed;
  assert_int_equal(count_prefixed(e.dir, PL__AOF_NAME ".rewrite", NULL, 0), 0);
  owner_reset(&o);
  s = open_ok(&e, &opts, &o, NULL);
  assert_int_equal(o.n, 40);
  assert_int_equal(pl_store_stats(s)->compactions, 0);
  close_run(&e, s);
  owner_reset(&o);
  env_teardown(&e);
}

/* A rewrite that cannot start (the temp file's name is taken by a directory) fails at once and is
 * dropped: the old file stays the state, with everything appended after, and the store stays
 * healthy. */
static void test_compact_fails_cleanly(void **state) {
  struct env e;
  env_setup(&e);
  write_records(&e, 20);
  struct owner o = {.fail_at = -1};
  struct pl_store_opts opts = opts_for(&e, CSR_FSYNC_ALWAYS);
  struct pl_store *s = open_ok(&e, &opts, &o, NULL);
  char tmp[200];
  snprintf(tmp, sizeof(tmp), "%s.rewrite", e.path);
  assert_int_equal(mkdir(tmp, 0700), 0);
  assert_int_equal(pl_store_compact(s), UV_EISDIR);
  struct req r[5];
  fired_total = 0;
  for (int i = 0; i < 5; i++)
    append_seq(s, 20 + (uint64_t)i, &r[i]);
  rx_loop_run(&e.loop);
  assert_int_equal(fired_total, 5);
  for (int i = 0; i < 5; i++)
    assert_int_equal(r[i].result, 0);
  const struct pl_store_stats *st = pl_store_stats(s);
  assert_int_equal(st->compactions, 0);
  assert_int_equal(st->compact_failures, 1);
  assert_non_null(strstr(st->compact_error, "create the temp file"));
  assert_true(st->healthy);
  close_run(&e, s);
  assert_int_equal(rmdir(tmp), 0);
  s = open_ok(&e, &opts, &o, NULL);
  assert_int_equal(o.n, 25);
  for (uint64_t i = 0; i < 25; i++)
    check_rec(&o.r[i], i);
  close_run(&e, s);
  owner_reset(&o);
  env_teardown(&e);
}

/* ---------------------------------------------------------------------------------------------- */
/* Refusals and errors */
/* ---------------------------------------------------------------------------------------------- */

static void test_refusals(void **state) {
  struct env e;
  env_setup(&e);
  struct owner o = {.fail_at = -1};
  struct pl_store_opts opts = opts_for(&e, CSR_FSYNC_BATCH);
  opts.max_record_bytes = 1000;
  struct pl_store *s = NULL;
  struct csr_err err;
  owner_reset(&o);
  assert_int_equal(pl_store_open(&e.loop, &opts, on_replay, NULL, &o, &s, &err), 0);
  static uint8_t big[1001];
  struct req r[4] = {0};
  fired_total = 0;
  assert_int_equal(pl_store_append(s, 1, big, 1001, &r[0].fut, on_durable), UV_E2BIG);
  assert_false(rx_fut_pending(&r[0].fut));
  assert_int_equal(pl_store_append(s, 1, NULL, 3, &r[0].fut, on_durable), UV_EINVAL);
  assert_int_equal(pl_store_append(s, 1, big, 3, &r[0].fut, NULL), UV_EINVAL);
  assert_false(rx_fut_pending(&r[0].fut));
  assert_int_equal(pl_store_compact(s), UV_EINVAL); /* no dump callback */
  assert_int_equal(pl_store_append(s, 1, big, 1000, &r[1].fut, on_durable), 0);
  int closed = 0;
  pl_store_close(s, on_closed, &closed);
  assert_int_equal(pl_store_append(s, 1, big, 10, &r[2].fut, on_durable), UV_ECANCELED);
  assert_false(rx_fut_pending(&r[2].fut));
  rx_loop_run(&e.loop);
  assert_int_equal(closed, 1);
  assert_int_equal(fired_total, 1);
  assert_int_equal(r[1].fired, 1);
  assert_int_equal(r[1].result, 0);
  assert_int_equal(r[2].fired, 0);
  assert_int_equal(file_size(e.path), PL__AOF_HDR_BYTES + PL__REC_HDR_BYTES + 1000);
  env_teardown(&e);
}

static void test_write_error(void **state) {
  struct env e;
  env_setup(&e);
  struct owner o = {.fail_at = -1};
  struct pl_store_opts opts = opts_for(&e, CSR_FSYNC_ALWAYS);
  struct pl_store *s = open_ok(&e, &opts, &o, NULL);
  struct req r[10];
  fired_total = 0;
  for (int i = 0; i < 5; i++)
    append_seq(s, (uint64_t)i, &r[i]);
  rx_loop_run(&e.loop);
  uint64_t before = pl_store_stats(s)->file_bytes;
  pl__store_fail_next_write(s, UV_ENOSPC);
  for (int i = 5; i < 8; i++)
    append_seq(s, (uint64_t)i, &r[i]);
  rx_loop_run(&e.loop);
  for (int i = 0; i < 8; i++) {
    assert_int_equal(r[i].fired, 1);
    assert_int_equal(r[i].result, i < 5 ? 0 : UV_ENOSPC);
  }
  const struct pl_store_stats *st = pl_store_stats(s);
  assert_false(st->healthy);
  assert_non_null(strstr(st->health_reason, csr_strerror(UV_ENOSPC)));
  assert_non_null(strstr(st->health_reason, "3 appends failed"));
  assert_int_equal(st->file_bytes, before);
  assert_int_equal(file_size(e.path), before); /* the half write was cut off again */
  for (int i = 8; i < 10; i++)
    append_seq(s, (uint64_t)i, &r[i]);
  rx_loop_run(&e.loop);
  assert_int_equal(r[8].result, 0);
  assert_int_equal(r[9].result, 0);
  close_run(&e, s);

  s = open_ok(&e, &opts, &o, NULL);
  assert_int_equal(o.n, 7);
  for (int i = 0; i < 7; i++)
    check_rec(&o.r[i], (uint64_t)(i < 5 ? i : i + 3));
  st = pl_store_stats(s);
  assert_int_equal(st->torn_tails + st->corrupt_regions, 0);
  assert_true(st->healthy);
  close_run(&e, s);
  owner_reset(&o);
  env_teardown(&e);
}

static void test_fsync_error(void **state) {
  struct env e;
  env_setup(&e);
  struct owner o = {.fail_at = -1};
  struct pl_store_opts opts = opts_for(&e, CSR_FSYNC_ALWAYS);
  struct pl_store *s = open_ok(&e, &opts, &o, NULL);
  struct req r[5];
  pl__store_fail_next_fsync(s, UV_EIO);
  fired_total = 0;
  for (int i = 0; i < 3; i++)
    append_seq(s, (uint64_t)i, &r[i]);
  rx_loop_run(&e.loop);
  for (int i = 0; i < 3; i++)
    assert_int_equal(r[i].result, UV_EIO);
  const struct pl_store_stats *st = pl_store_stats(s);
  assert_false(st->healthy);
  assert_non_null(strstr(st->health_reason, "fsync"));
  for (int i = 3; i < 5; i++)
    append_seq(s, (uint64_t)i, &r[i]);
  rx_loop_run(&e.loop);
  assert_int_equal(r[3].result, 0);
  assert_int_equal(r[4].result, 0);
  assert_false(st->healthy); /* a later fsync does not vouch for the failed one */
  /* the owner's state is the five records; the rewrite makes the store healthy again */
  for (uint64_t i = 0; i < 5; i++) {
    static uint8_t buf[70000];
    uint8_t type;
    size_t len = payload(buf, i, &type);
    owner_push(&o, type, buf, len);
  }
  assert_int_equal(pl_store_compact(s), 0);
  rx_loop_run(&e.loop);
  assert_true(st->healthy);
  assert_int_equal(st->compactions, 1);
  close_run(&e, s);
  s = open_ok(&e, &opts, &o, NULL);
  assert_int_equal(o.n, 5);
  for (uint64_t i = 0; i < 5; i++)
    check_rec(&o.r[i], i);
  close_run(&e, s);
  owner_reset(&o);
  env_teardown(&e);
}

/* ---------------------------------------------------------------------------------------------- */
/* kill -9 */
/* ---------------------------------------------------------------------------------------------- */

/* Replays the crasher's file: seqs must run 0, 1, 2... (a snapshot stands for those below it), each
 * record with its exact contents. Returns how many seqs are present. */
static uint64_t crasher_check(const struct owner *o) {
  static uint8_t buf[8 + CRASHER_MAX_FILL];
  uint64_t next = 0;
  for (size_t i = 0; i < o->n; i++) {
    const struct rec *r = &o->r[i];
    uint64_t v;
    assert_true(r->len >= 8);
    memcpy(&v, r->data, 8);
    if (r->type == CRASHER_SNAPSHOT) {
      assert_int_equal(i, 0);
      next = v;
      continue;
    }
    assert_int_equal(r->type, CRASHER_RECORD);
    assert_int_equal(v, next);
    size_t len = crasher_fill(buf, v);
    assert_int_equal(r->len, len);
    assert_memory_equal(r->data, buf, len);
    next++;
  }
  return next;
}

/* Reads "<seq>\n" lines, raising *max1 past the largest seq; returns read(2)'s result. */
static ssize_t read_durable(int fd, char *carry, size_t *carry_len, uint64_t *max1,
                            uint64_t *count) {
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof(buf));
  for (ssize_t i = 0; i < n; i++) {
    if (buf[i] != '\n') {
      assert_true(*carry_len < 31);
      carry[(*carry_len)++] = buf[i];
      continue;
    }
    carry[*carry_len] = '\0';
    uint64_t seq = strtoull(carry, NULL, 10);
    if (seq + 1 > *max1)
      *max1 = seq + 1;
    (*count)++;
    *carry_len = 0;
  }
  return n;
}

static pid_t spawn_crasher(const char *bin, const char *dir, uint64_t seed, int *out_fd) {
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  char seed_text[32];
  snprintf(seed_text, sizeof(seed_text), "%llu", (unsigned long long)seed);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    execl(bin, bin, dir, seed_text, (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  *out_fd = fds[0];
  return pid;
}

/* ctest names the child; run by hand, it sits next to this binary. */
static void find_crasher(char *bin, size_t len) {
  const char *env_bin = getenv("CSR_STORE_CRASHER");
  if (env_bin) {
    snprintf(bin, len, "%s", env_bin);
  } else {
    ssize_t n = readlink("/proc/self/exe", bin, len - 32);
    assert_true(n > 0);
    bin[n] = '\0';
    snprintf(strrchr(bin, '/') + 1, 32, "store_crasher");
  }
  if (access(bin, X_OK) != 0)
    fail_msg("no store_crasher at %s (CSR_STORE_CRASHER)", bin);
}

/* Runs the child until kill_after_ms, kills it, and reads every report it made; returns the
 * largest seq reported durable + 1 (0 when none) and counts the reports in *count. */
static uint64_t kill_round(const char *bin, const char *dir, uint64_t seed, uint64_t kill_after_ms,
                           uint64_t *count) {
  int fd;
  pid_t pid = spawn_crasher(bin, dir, seed, &fd);
  uint64_t t0 = uv_hrtime() / 1000000, max1 = 0;
  char carry[32];
  size_t carry_len = 0;
  for (;;) {
    uint64_t now = uv_hrtime() / 1000000;
    if (now - t0 >= kill_after_ms)
      break;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, (int)(kill_after_ms - (now - t0))) > 0)
      read_durable(fd, carry, &carry_len, &max1, count);
  }
  assert_int_equal(kill(pid, SIGKILL), 0);
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  while (read_durable(fd, carry, &carry_len, &max1, count) > 0) /* to EOF: the child is gone */
    ;
  close(fd);
  return max1;
}

static void test_kill9(void **state) {
  char bin[4096];
  find_crasher(bin, sizeof(bin));
  const char *seed_env = getenv("CSR_STORE_SEED");
  uint64_t rng = seed_env ? strtoull(seed_env, NULL, 0) : 0x5eed5eedull;
  print_message("    seed 0x%llx (CSR_STORE_SEED)\n", (unsigned long long)rng);
  struct env e;
  env_setup(&e);
  struct owner o = {.fail_at = -1};
  struct pl_store_opts opts = opts_for(&e, CSR_FSYNC_ALWAYS);
  uint64_t total_durable = 0, torn = 0, compacted = 0, present = 0;
  for (int round = 0; round < 10; round++) {
    uint64_t seed = rx_rand64(&rng), count = 0;
    uint64_t max1 = kill_round(bin, e.dir, seed, 50 + rx_rand64(&rng) % 250, &count);
    struct pl_store *s = open_ok(&e, &opts, &o, NULL);
    const struct pl_store_stats *st = pl_store_stats(s);
    uint64_t have = crasher_check(&o);
    assert_true(have >= max1);    /* every record reported durable is there */
    assert_true(have >= present); /* and nothing present before was lost */
    assert_int_equal(st->corrupt_regions, 0);
    assert_true(st->torn_tails <= 1); /* at most the record being written when killed */
    assert_true(st->healthy);
    assert_int_equal(st->file_bytes, file_size(e.path));
    assert_int_equal(count_prefixed(e.dir, PL__AOF_NAME ".rewrite", NULL, 0), 0);
    torn += st->torn_tails;
    compacted += o.n > 0 && o.r[0].type == CRASHER_SNAPSHOT;
    total_durable += count;
    present = have;
    close_run(&e, s);
  }
  print_message("    10 kills: %llu records reported durable, %llu present, %llu torn tails cut, "
                "%llu reopens after a compaction\n",
                (unsigned long long)total_durable, (unsigned long long)present,
                (unsigned long long)torn, (unsigned long long)compacted);
  assert_true(total_durable > 0);
  owner_reset(&o);
  env_teardown(&e);
}

/* ---------------------------------------------------------------------------------------------- */
/* One store per directory; read-only replay */
/* ---------------------------------------------------------------------------------------------- */

/* Entries of dir (names joined), to show that a read created or removed nothing. */
static void list_dir(const char *dir, char *out, size_t len) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  out[0] = '\0';
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    size_t used = strlen(out);
    snprintf(out + used, len - used, "%s/", de->d_name);
  }
  closedir(d);
}

static void test_lock_second_open(void **state) {
  struct env e;
  env_setup(&e);
  struct owner o = {.fail_at = -1}, o2 = {.fail_at = -1};
  struct pl_store_opts opts = opts_for(&e, CSR_FSYNC_ALWAYS);
  struct pl_store *s = open_ok(&e, &opts, &o, NULL);
  append_seq(s, 0, NULL);
  rx_loop_run(&e.loop);
  uint64_t size = file_size(e.path);
  /* a second open (another OFD, as another process would have) is refused, naming the holder */
  struct pl_store *s2 = NULL;
  struct csr_err err;
  assert_int_equal(pl_store_open(&e.loop, &opts, on_replay, on_dump, &o2, &s2, &err), UV_EBUSY);
  assert_null(s2);
  assert_int_equal(o2.n, 0); /* nothing replayed */
  char want[256];
  snprintf(want, sizeof(want), "state dir %s is in use by another csurelay (pid %ld)", e.dir,
           (long)getpid());
  assert_string_equal(err.msg, want);
  assert_int_equal(file_size(e.path), size);
  /* the holder is unharmed */
  struct req r;
  append_seq(s, 1, &r);
  rx_loop_run(&e.loop);
  assert_int_equal(r.result, 0);
  close_run(&e, s);
  /* closed: the next open works and sees both records */
  s = open_ok(&e, &opts, &o, NULL);
  assert_int_equal(o.n, 2);
  check_rec(&o.r[1], 1);
  close_run(&e, s);
  owner_reset(&o);
  env_teardown(&e);
}

/* A copy of the file and the directory's names, to compare after a read. */
struct snap {
  uint8_t *bytes;
  uint64_t len;
  char names[1024];
};

static void snap_take(struct env *e, struct snap *sn) {
  sn->bytes = slurp(e->path, &sn->len);
  list_dir(e->dir, sn->names, sizeof(sn->names));
}

static void snap_same(struct env *e, struct snap *sn) {
  uint64_t len;
  uint8_t *now = slurp(e->path, &len);
  assert_int_equal(len, sn->len);
  assert_memory_equal(now, sn->bytes, len);
  char names[1024];
  list_dir(e->dir, names, sizeof(names));
  assert_string_equal(names, sn->names);
  free(now);
  free(sn->bytes);
}

static void test_read_torn_tail(void **state) {
  struct env e;
  env_setup(&e);
  write_records(&e, 20);
  uint64_t size = file_size(e.path);
  assert_int_equal(truncate(e.path, (off_t)(size - 7)), 0);
  struct snap sn;
  snap_take(&e, &sn);
  for (int round = 0; round < 2; round++) { /* twice: the first changed nothing */
    struct owner o = {.fail_at = -1};
    struct pl_store_stats st;
    struct csr_err err;
    assert_int_equal(pl_store_read(e.dir, on_replay, &o, &st, &err), 0);
    assert_int_equal(o.n, 19);
    for (uint64_t i = 0; i < 19; i++)
      check_rec(&o.r[i], i);
    assert_int_equal(st.records_replayed, 19);
    assert_int_equal(st.torn_tails, 1);
    assert_int_equal(st.torn_bytes, rec_bytes(19) - 7);
    assert_int_equal(st.corrupt_regions, 0);
    assert_int_equal(st.file_bytes, size - 7);
    assert_true(st.healthy);
    assert_non_null(strstr(err.msg, "torn tail"));
    assert_non_null(strstr(err.msg, "left as is"));
    owner_reset(&o);
  }
  snap_same(&e, &sn);
  env_teardown(&e);
}

static void test_read_damage(void **state) {
  enum { N = 30, K = 12 };
  struct env e;
  env_setup(&e);
  write_records(&e, N);
  uint64_t off = damage_record(&e, K, PL__REC_HDR_BYTES + 10);
  struct snap sn;
  snap_take(&e, &sn);
  struct owner o = {.fail_at = -1};
  struct pl_store_stats st;
  struct csr_err err;
  assert_int_equal(pl_store_read(e.dir, on_replay, &o, &st, &err), 0);
  assert_int_equal(o.n, N - 1);
  for (uint64_t i = 0; i < N - 1; i++)
    check_rec(&o.r[i], i < K ? i : i + 1);
  assert_int_equal(st.corrupt_regions, 1);
  assert_int_equal(st.corrupt_bytes, rec_bytes(K));
  assert_int_equal(st.torn_tails, 0);
  assert_false(st.healthy);
  char want[64];
  snprintf(want, sizeof(want), "first at offset %llu", (unsigned long long)off);
  assert_non_null(strstr(st.health_reason, want));
  assert_null(strstr(st.health_reason, "copy kept"));
  assert_non_null(strstr(err.msg, want));
  snap_same(&e, &sn); /* no copy, no repair */
  owner_reset(&o);
  /* a replay refusal stops the read with its error */
  o.fail_at = 3;
  assert_int_equal(pl_store_read(e.dir, on_replay, &o, &st, &err), UV_EPROTO);
  assert_int_equal(o.n, 3);
  assert_non_null(strstr(err.msg, "replay refused"));
  owner_reset(&o);
  env_teardown(&e);
}

static void test_read_refusals(void **state) {
  struct env e;
  env_setup(&e);
  struct owner o = {.fail_at = -1};
  struct pl_store_stats st;
  struct csr_err err;
  char missing[160];
  snprintf(missing, sizeof(missing), "%s/none", e.dir);
  assert_int_equal(pl_store_read(missing, on_replay, &o, &st, &err), UV_ENOENT);
  assert_int_equal(access(missing, F_OK), -1); /* not created */
  assert_int_equal(pl_store_read(e.dir, on_replay, &o, &st, &err), UV_ENOENT);
  assert_int_equal(access(e.path, F_OK), -1);
  assert_int_equal(pl_store_read(NULL, on_replay, &o, &st, &err), UV_EINVAL);
  assert_int_equal(pl_store_read(e.dir, NULL, &o, &st, &err), UV_EINVAL);
  FILE *f = fopen(e.path, "w");
  assert_non_null(f);
  fputs("this is not an append-only file, but it is long enough", f);
  fclose(f);
  assert_int_equal(pl_store_read(e.dir, on_replay, &o, NULL, &err), CSR_ECORRUPT);
  assert_non_null(strstr(err.msg, "not a csurelay AOF"));
  assert_int_equal(truncate(e.path, 0), 0);
  assert_int_equal(pl_store_read(e.dir, on_replay, &o, &st, &err), 0); /* empty: nothing */
  assert_int_equal(st.records_replayed, 0);
  assert_int_equal(o.n, 0);
  env_teardown(&e);
}

static void test_read_beside_open_store(void **state) {
  struct env e;
  env_setup(&e);
  struct owner o = {.fail_at = -1}, r = {.fail_at = -1};
  struct pl_store_opts opts = opts_for(&e, CSR_FSYNC_ALWAYS);
  struct pl_store *s = open_ok(&e, &opts, &o, NULL);
  static uint8_t buf[70000];
  for (uint64_t i = 0; i < 12; i++) { /* the owner keeps them too, for the compaction's dump */
    uint8_t type;
    size_t len = payload(buf, i, &type);
    owner_push(&o, type, buf, len);
  }
  for (uint64_t i = 0; i < 10; i++)
    append_seq(s, i, NULL);
  rx_loop_run(&e.loop);
  /* two more appended but not yet written (the loop has not turned): the read sees the 10 */
  append_seq(s, 10, NULL);
  append_seq(s, 11, NULL);
  struct pl_store_stats st;
  struct csr_err err;
  assert_int_equal(pl_store_read(e.dir, on_replay, &r, &st, &err), 0);
  assert_int_equal(r.n, 10);
  for (uint64_t i = 0; i < 10; i++)
    check_rec(&r.r[i], i);
  assert_int_equal(st.torn_tails, 0);
  assert_string_equal(err.msg, "");
  rx_loop_run(&e.loop);
  owner_reset(&r);
  assert_int_equal(pl_store_read(e.dir, on_replay, &r, &st, &err), 0);
  assert_int_equal(r.n, 12);
  assert_int_equal(st.file_bytes, pl_store_stats(s)->file_bytes);
  /* and after a compaction renamed a new file over the old one */
  assert_int_equal(pl_store_compact(s), 0);
  rx_loop_run(&e.loop);
  owner_reset(&r);
  assert_int_equal(pl_store_read(e.dir, on_replay, &r, &st, &err), 0);
  assert_int_equal(r.n, 12);
  for (uint64_t i = 0; i < 12; i++)
    check_rec(&r.r[i], i);
  close_run(&e, s);
  owner_reset(&r);
  owner_reset(&o);
  env_teardown(&e);
}

/* Another process holds the store (the crasher, appending and compacting): open is refused naming
 * its pid, reads see consistent, growing prefixes, and once it is killed open works. */
static void test_lock_other_process(void **state) {
  char bin[4096];
  find_crasher(bin, sizeof(bin));
  struct env e;
  env_setup(&e);
  int fd;
  pid_t pid = spawn_crasher(bin, e.dir, 0x10c4, &fd);
  char carry[32];
  size_t carry_len = 0;
  uint64_t max1 = 0, count = 0;
  while (count < 50) /* it has opened the store and made records durable */
    assert_true(read_durable(fd, carry, &carry_len, &max1, &count) > 0);
  struct owner o = {.fail_at = -1};
  struct pl_store_opts opts = opts_for(&e, CSR_FSYNC_ALWAYS);
  struct pl_store *s = NULL;
  struct csr_err err;
  assert_int_equal(pl_store_open(&e.loop, &opts, on_replay, on_dump, &o, &s, &err), UV_EBUSY);
  char want[64];
  snprintf(want, sizeof(want), "(pid %ld)", (long)pid);
  assert_non_null(strstr(err.msg, want));
  uint64_t have = 0;
  for (int i = 0; i < 20; i++) {
    owner_reset(&o);
    uint64_t durable = max1;
    struct pl_store_stats st;
    assert_int_equal(pl_store_read(e.dir, on_replay, &o, &st, &err), 0);
    assert_int_equal(st.corrupt_regions, 0);
    uint64_t now = crasher_check(&o);
    assert_true(now >= durable); /* everything reported durable before the read */
    assert_true(now >= have);
    have = now;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 10) > 0)
      read_durable(fd, carry, &carry_len, &max1, &count);
  }
  assert_int_equal(kill(pid, SIGKILL), 0);
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  close(fd);
  s = open_ok(&e, &opts, &o, NULL);
  assert_true(crasher_check(&o) >= have);
  close_run(&e, s);
  owner_reset(&o);
  env_teardown(&e);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_crc32c),
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_fsync_always),
      cmocka_unit_test(test_fsync_batch),
      cmocka_unit_test(test_fsync_none),
      cmocka_unit_test(test_fsync_batch_starts_after_write),
      cmocka_unit_test(test_fsync_batch_trickle),
      cmocka_unit_test(test_close_completes_pending),
      cmocka_unit_test(test_open_creates_dirs_and_removes_leftover),
      cmocka_unit_test(test_open_refuses_foreign_file),
      cmocka_unit_test(test_open_replay_refusal),
      cmocka_unit_test(test_torn_tail_mid_payload),
      cmocka_unit_test(test_torn_tail_mid_header),
      cmocka_unit_test(test_torn_tail_garbage),
      cmocka_unit_test(test_corrupt_payload),
      cmocka_unit_test(test_corrupt_length),
      cmocka_unit_test(test_corrupt_marker),
      cmocka_unit_test(test_compact_with_racing_appends),
      cmocka_unit_test(test_compact_automatic),
      cmocka_unit_test(test_compact_dump_in_pieces),
      cmocka_unit_test(test_compact_abandoned),
      cmocka_unit_test(test_compact_fails_cleanly),
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_write_error),
      cmocka_unit_test(test_fsync_error),
      cmocka_unit_test(test_kill9),
      cmocka_unit_test(test_lock_second_open),
      cmocka_unit_test(test_read_torn_tail),
      cmocka_unit_test(test_read_damage),
      cmocka_unit_test(test_read_refusals),
      cmocka_unit_test(test_read_beside_open_store),
      cmocka_unit_test(test_lock_other_process),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
