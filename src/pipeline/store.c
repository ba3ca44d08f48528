/* The state store: appends into memory, one write per loop turn, fsync per policy on the
 * threadpool, futures resolved by file offset; open and close. The file format and open's replay
 * are in store_file.c, compaction in store_compact.c.
 *
 * An append encodes its record into the write buffer and queues a waiter holding the file offset
 * its record ends at. The prepare handle (Redis's beforeSleep) writes the whole buffer with one
 * pwrite before the loop blocks. A waiter resolves once the file is durable up to its offset:
 * right after the write (none), after the fsync that follows each write (always), or after the
 * next batch fsync (batch: right after the write once fsync_interval_ms has passed since the last
 * one started, else from the batch timer). At most one fsync runs; writes go on meanwhile, and an
 * fsync covers exactly the bytes written before it was queued (its target), so the waiters past
 * the target wait for the next one.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

/* A write buffer that grew past this during a spike is given back after its flush. */
#define WBUF_KEEP (16u << 20)

int pl__buf_reserve(struct pl__buf *b, size_t more) {
  if (b->cap - b->len >= more)
    return 0;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap - b->len < more) {
    if (cap > SIZE_MAX / 2)
      return UV_ENOMEM;
    cap *= 2;
  }
  uint8_t *p = realloc(b->data, cap);
  if (p == NULL)
    return UV_ENOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

void pl__buf_free(struct pl__buf *b) {
  free(b->data);
  *b = (struct pl__buf){0};
}

void pl__store_unhealthy(struct pl_store *s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->stats.health_reason, sizeof(s->stats.health_reason), fmt, ap);
  va_end(ap);
  s->stats.healthy = false;
}

/* ---------------------------------------------------------------------------------------------- */
/* Waiters: a ring ordered by end offset */
/* ---------------------------------------------------------------------------------------------- */

static struct pl__waiter *q_at(struct pl_store *s, size_t i) {
  return &s->q[(s->q_head + i) & (s->q_cap - 1)];
}

static int q_reserve(struct pl_store *s) {
  if (s->q_len < s->q_cap)
    return 0;
  size_t cap = s->q_cap ? s->q_cap * 2 : 256;
  struct pl__waiter *q = malloc(cap * sizeof(*q));
  if (q == NULL)
    return UV_ENOMEM;
  for (size_t i = 0; i < s->q_len; i++)
    q[i] = *q_at(s, i);
  free(s->q);
  s->q = q;
  s->q_cap = cap;
  s->q_head = 0;
  return 0;
}

void pl__store_resolve_upto(struct pl_store *s, uint64_t off, int result) {
  while (s->q_len > 0 && s->q[s->q_head].end <= off) {
    struct pl__waiter *w = &s->q[s->q_head];
    if (w->fut)
      rx_fut_resolve(w->fut, result);
    s->q_head = (s->q_head + 1) & (s->q_cap - 1);
    s->q_len--;
  }
  s->stats.pending = s->q_len;
}

/* Fails (and drops) the waiters past `off`, oldest first; returns how many. */
static size_t fail_after(struct pl_store *s, uint64_t off, int result) {
  size_t keep = s->q_len;
  while (keep > 0 && q_at(s, keep - 1)->end > off)
    keep--;
  for (size_t i = keep; i < s->q_len; i++)
    if (q_at(s, i)->fut)
      rx_fut_resolve(q_at(s, i)->fut, result);
  size_t failed = s->q_len - keep;
  s->q_len = keep;
  s->stats.pending = s->q_len;
  return failed;
}

/* ---------------------------------------------------------------------------------------------- */
/* Writes */
/* ---------------------------------------------------------------------------------------------- */

static void flush_failed(struct pl_store *s, int rc) {
  /* Cut a partial write back off, so the next write lands on a record boundary; if even that
   * fails, the next flush tries again first. */
  s->needs_truncate = ftruncate(s->fd, (off_t)s->written) != 0;
  pl__compact_unkeep(s, s->wbuf.len);
  size_t lost = fail_after(s, s->written, rc);
  pl__store_unhealthy(s, "AOF write of %zu bytes at offset %llu failed: %s; %zu appends failed",
                      s->wbuf.len, (unsigned long long)s->written, csr_strerror(rc), lost);
}

void pl__store_flush(struct pl_store *s) {
  if (s->wbuf.len == 0 || s->cpt.state == PL__CPT_COMMIT)
    return;
  if (s->needs_truncate)
    s->needs_truncate = ftruncate(s->fd, (off_t)s->written) != 0;
  int rc;
  if (s->fail_write) {
    rc = pl__write_all(s->fd, s->wbuf.data, s->wbuf.len / 2, s->written);
    rc = rc < 0 ? rc : s->fail_write;
    s->fail_write = 0;
  } else {
    rc = pl__write_all(s->fd, s->wbuf.data, s->wbuf.len, s->written);
  }
  if (rc < 0) {
    flush_failed(s, rc);
  } else {
    s->written += s->wbuf.len;
    s->stats.flushes++;
    s->stats.file_bytes = s->written;
  }
  s->wbuf.len = 0;
  if (s->wbuf.cap > WBUF_KEEP)
    pl__buf_free(&s->wbuf);
}

static void on_prepare(uv_prepare_t *handle) {
  struct pl_store *s = handle->data;
  uv_prepare_stop(handle);
  if (s->cpt.state == PL__CPT_COMMIT)
    return; /* the commit restarts us when it is done */
  pl__store_flush(s);
  pl__store_kick_sync(s);
  pl__compact_maybe(s);
}

void pl__store_wake(struct pl_store *s) {
  if (s->wbuf.len > 0 && !uv_is_active((uv_handle_t *)&s->prepare))
    uv_prepare_start(&s->prepare, on_prepare);
}

int pl_store_append(struct pl_store *s, uint8_t type, const void *payload, size_t len,
                    struct rx_fut *durable, rx_fut_cb cb) {
  if (s == NULL || (payload == NULL && len > 0) || (durable != NULL && cb == NULL))
    return UV_EINVAL;
  if (s->closing)
    return UV_ECANCELED;
  if (len > s->opts.max_record_bytes)
    return UV_E2BIG;
  size_t rec = PL__REC_HDR_BYTES + len;
  int rc = pl__buf_reserve(&s->wbuf, rec);
  if (rc == 0)
    rc = q_reserve(s);
  if (rc < 0)
    return rc;
  uint8_t *dst = s->wbuf.data + s->wbuf.len;
  pl__rec_encode(dst, type, payload, (uint32_t)len);
  s->wbuf.len += rec;
  *q_at(s, s->q_len++) = (struct pl__waiter){.fut = durable, .end = s->written + s->wbuf.len};
  pl__compact_keep(s, dst, rec);
  if (durable)
    rx_fut_init(durable, s->loop, cb);
  s->stats.appends++;
  s->stats.bytes_appended += rec;
  s->stats.pending = s->q_len;
  if (s->cpt.state != PL__CPT_COMMIT)
    pl__store_wake(s);
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* fsync */
/* ---------------------------------------------------------------------------------------------- */

static void on_sync_work(uv_work_t *req) {
  struct pl__sync_job *job = RX_CONTAINER_OF(req, struct pl__sync_job, req);
  uint64_t t0 = uv_hrtime();
  /* fdatasync: an append changes the size, which fdatasync does write; timestamps can wait. */
  if (job->inject)
    job->rc = job->inject;
  else
    job->rc = fdatasync(job->fd) == 0 ? 0 : -errno;
  job->ns = uv_hrtime() - t0;
}

static void on_sync_done(uv_work_t *req, int status) {
  struct pl_store *s = req->data;
  struct pl__sync_job *job = &s->sync;
  int rc = status < 0 ? status : job->rc;
  s->sync_running = false;
  uint64_t us = job->ns / 1000;
  s->stats.fsyncs++;
  s->stats.fsync_last_us = us;
  s->stats.fsync_total_us += us;
  if (us > s->stats.fsync_max_us)
    s->stats.fsync_max_us = us;
  if (rc < 0)
    pl__store_unhealthy(s, "AOF fsync up to offset %llu failed: %s",
                        (unsigned long long)job->target, csr_strerror(rc));
  /* After a failed fsync the kernel may have dropped the dirty pages: those appends are reported
   * failed, never retried into a false success (the next compaction rewrites the state). */
  if (job->target > s->synced)
    s->synced = job->target;
  pl__store_resolve_upto(s, job->target, rc);
  if (s->closing) {
    pl__store_close_step(s);
    return;
  }
  if (s->cpt.state == PL__CPT_WAIT)
    pl__compact_on_sync_done(s);
  pl__store_kick_sync(s); /* returns at once if a commit started */
}

static void start_sync(struct pl_store *s) {
  s->sync.req.data = s;
  s->sync.fd = s->fd;
  s->sync.target = s->written;
  s->sync.inject = s->fail_fsync;
  s->fail_fsync = 0;
  s->last_sync_ms = rx_now_ms(s->loop);
  int rc = uv_queue_work(s->loop->uv, &s->sync.req, on_sync_work, on_sync_done);
  if (rc < 0) {
    pl__store_unhealthy(s, "AOF fsync could not start: %s", csr_strerror(rc));
    pl__store_resolve_upto(s, s->written, rc);
    return;
  }
  s->sync_running = true;
}

static uint64_t on_batch(struct rx_timer *timer) {
  struct pl_store *s = timer->data;
  pl__store_flush(s);
  if (!s->sync_running && s->cpt.state != PL__CPT_COMMIT && s->written > s->synced)
    start_sync(s);
  return RX_TIMER_STOP; /* a completion re-arms it while appends still wait */
}

void pl__store_kick_sync(struct pl_store *s) {
  if (s->opts.fsync == CSR_FSYNC_NONE && !s->closing) {
    pl__store_resolve_upto(s, s->written, 0);
    return;
  }
  if (s->sync_running || s->cpt.state == PL__CPT_COMMIT || s->closing)
    return;
  if (s->opts.fsync == CSR_FSYNC_ALWAYS) {
    if (s->written > s->synced)
      start_sync(s);
    return;
  }
  if (s->q_len == 0 || rx_timer_active(&s->batch))
    return;
  /* Batch: the interval runs from the start of the last fsync, so a slow disk syncs back to back
   * and a fast one at most once per interval. When the interval is over and bytes are written,
   * the fsync starts now: from a 0 ms timer it would wait for the loop's next turn, after the
   * poll phase, which in a burst of Search pages parses and admits for 10-15 ms. */
  uint64_t since = rx_now_ms(s->loop) - s->last_sync_ms;
  uint64_t ivl = s->opts.fsync_interval_ms;
  if (since >= ivl && s->written > s->synced) {
    start_sync(s);
    return;
  }
  int rc = rx_timer_start(&s->batch, on_batch, since >= ivl ? 0 : ivl - since);
  if (rc < 0 && s->written > s->synced)
    start_sync(s);
}

/* ---------------------------------------------------------------------------------------------- */
/* Open, stats, close */
/* ---------------------------------------------------------------------------------------------- */

char *pl__join(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  char *p = malloc(la + lb + 1);
  if (p) {
    memcpy(p, a, la);
    memcpy(p + la, b, lb + 1);
  }
  return p;
}

static void store_free(struct pl_store *s) {
  if (s->fd >= 0 && !s->closed_fd)
    close(s->fd);
  if (s->lock_fd >= 0)
    close(s->lock_fd); /* releases the flock: the last thing a store gives back */
  pl__buf_free(&s->wbuf);
  pl__buf_free(&s->cpt.dump);
  pl__buf_free(&s->cpt.tail);
  free(s->q);
  free(s->dir);
  free(s->path);
  free(s->tmp_path);
  free(s);
}

static void apply_defaults(struct pl_store_opts *o) {
  if (o->fsync_interval_ms == 0)
    o->fsync_interval_ms = 5;
  if (o->compact_min_bytes == 0)
    o->compact_min_bytes = 64u << 20;
  if (!(o->compact_ratio > 1.0))
    o->compact_ratio = 2.0;
  if (o->max_record_bytes == 0)
    o->max_record_bytes = 4u << 20;
  if (o->max_record_bytes > PL__REC_MAX_LEN)
    o->max_record_bytes = PL__REC_MAX_LEN;
}

int pl_store_open(struct rx_loop *loop, const struct pl_store_opts *opts, pl_replay_cb replay,
                  pl_store_dump_cb dump, void *arg, struct pl_store **out, struct csr_err *err) {
  if (err)
    *err = (struct csr_err){0};
  if (loop == NULL || opts == NULL || opts->dir == NULL || opts->dir[0] == '\0' || replay == NULL ||
      out == NULL) {
    csr_err_set(err, "", 0, "state.dir", "pl_store_open: missing argument");
    return UV_EINVAL;
  }
  struct pl_store *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return UV_ENOMEM;
  *s = (struct pl_store){
      .loop = loop, .opts = *opts, .dump = dump, .arg = arg, .fd = -1, .lock_fd = -1};
  s->cpt.fd = -1;
  s->stats.healthy = true;
  apply_defaults(&s->opts);
  s->dir = strdup(opts->dir);
  s->path = s->dir ? pl__join(s->dir, "/" PL__AOF_NAME) : NULL;
  s->tmp_path = s->path ? pl__join(s->path, ".rewrite") : NULL;
  if (s->tmp_path == NULL) {
    store_free(s);
    return UV_ENOMEM;
  }
  s->opts.dir = s->dir;
  int rc = pl__store_load(s, replay, arg, err);
  if (rc < 0) {
    store_free(s);
    return rc;
  }
  s->stats.file_bytes = s->written;
  /* Neither init can fail on Unix (they only link the handle into the loop). */
  rc = uv_prepare_init(loop->uv, &s->prepare);
  if (rc == 0)
    rc = rx_timer_init(&s->batch, loop);
  if (rc < 0) {
    csr_err_set(err, s->path, 0, "", "cannot start: %s", csr_strerror(rc));
    store_free(s);
    return rc;
  }
  s->prepare.data = s;
  s->batch.data = s;
  *out = s;
  return 0;
}

const struct pl_store_stats *pl_store_stats(const struct pl_store *s) {
  return &s->stats;
}

void pl__store_fail_next_write(struct pl_store *s, int err) {
  s->fail_write = err;
}

void pl__store_fail_next_fsync(struct pl_store *s, int err) {
  s->fail_fsync = err;
}

static void on_handle_closed(struct pl_store *s) {
  if (--s->open_handles > 0)
    return;
  void (*cb)(void *) = s->close_cb;
  void *arg = s->close_arg;
  store_free(s);
  if (cb)
    cb(arg);
}

static void on_prepare_closed(uv_handle_t *handle) {
  on_handle_closed(handle->data);
}

static void on_batch_closed(struct rx_timer *timer) {
  on_handle_closed(timer->data);
}

void pl__store_close_step(struct pl_store *s) {
  if (!s->closing || s->closed_fd)
    return;
  if (s->cpt.state == PL__CPT_REWRITE || s->cpt.state == PL__CPT_COMMIT)
    return; /* its worker is running; its completion brings us back */
  if (s->cpt.state == PL__CPT_WAIT)
    pl__compact_abandon(s);
  if (s->sync_running)
    return;
  pl__store_flush(s);
  if (s->written > s->synced) {
    start_sync(s);
    if (s->sync_running)
      return;
  }
  fail_after(s, 0, UV_ECANCELED); /* none are left unless an fsync could not even start */
  close(s->fd);
  s->closed_fd = true;
  s->open_handles = 2;
  uv_close((uv_handle_t *)&s->prepare, on_prepare_closed);
  rx_timer_close(&s->batch, on_batch_closed);
}

void pl_store_close(struct pl_store *s, void (*cb)(void *arg), void *arg) {
  if (s == NULL || s->closing)
    return;
  s->closing = true;
  s->close_cb = cb;
  s->close_arg = arg;
  rx_timer_stop(&s->batch);
  pl__store_close_step(s);
}
