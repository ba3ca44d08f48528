/* The state store's compaction: the owner's live state rewritten into a new file without stopping
 * the loop.
 *
 *   REWRITE  The dump (header + live records, built on the loop thread) is written to the temp
 *            file and fsynced by a worker. Appends go on to the old file as usual, and a copy of
 *            each encoded record is kept in the tail.
 *   WAIT     Only while an fsync of the old file is running: the commit must not overlap it.
 *   COMMIT   The write buffer is flushed to the old file, then a worker writes the tail after the
 *            dump, fsyncs, renames the temp file over the old one (the commit point) and fsyncs the
 *            directory. Writes pause meanwhile (appends collect in the write buffer), so nothing
 *            can reach the old file that the new one lacks.
 *
 * After the commit the new file holds everything the old one did (the dump stands for what came
 * before it, the tail for what came after), fsynced: every append written to the old file is
 * durable, and the appends made during the commit continue at new-file offsets. A crash before the
 * rename leaves the old file whole (the temp file is removed on open); after it, the new one.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "internal.h"

int pl_store_emit(struct pl_store_emitter *e, uint8_t type, const void *payload, size_t len) {
  if (e == NULL || (payload == NULL && len > 0))
    return UV_EINVAL;
  if (len > e->store->opts.max_record_bytes)
    return UV_E2BIG;
  int rc = pl__buf_reserve(e->buf, PL__REC_HDR_BYTES + len);
  if (rc < 0)
    return rc;
  pl__rec_encode(e->buf->data + e->buf->len, type, payload, (uint32_t)len);
  e->buf->len += PL__REC_HDR_BYTES + len;
  if (e->fd < 0 || e->buf->len < PL__DUMP_CHUNK)
    return 0;
  /* Into the page cache from the loop thread: no disk wait (the worker fsyncs), and the memory
   * a rewrite needs stays one piece whatever the live state's size. */
  rc = pl__write_all(e->fd, e->buf->data, e->buf->len, e->off);
  e->off += e->buf->len;
  e->buf->len = 0;
  return rc;
}

int pl_store_emit_jw(struct pl_store_emitter *e, uint8_t type, struct csr_jw *jw, int rc) {
  const char *text;
  size_t len;
  if (rc == 0)
    rc = csr_jw_finish(jw, &text, &len);
  if (rc == 0)
    rc = pl_store_emit(e, type, text, len);
  csr_jw_reset(jw);
  return rc;
}

static bool keeping(const struct pl_store *s) {
  return s->cpt.state == PL__CPT_REWRITE || s->cpt.state == PL__CPT_WAIT;
}

void pl__compact_keep(struct pl_store *s, const uint8_t *rec, size_t len) {
  struct pl__compact *c = &s->cpt;
  if (!keeping(s) || c->tail_broken)
    return;
  if (pl__buf_reserve(&c->tail, len) < 0) {
    c->tail_broken = true; /* this rewrite can no longer be committed */
    pl__buf_free(&c->tail);
    return;
  }
  memcpy(c->tail.data + c->tail.len, rec, len);
  c->tail.len += len;
}

void pl__compact_unkeep(struct pl_store *s, size_t len) {
  /* The failed flush's records are the newest appends: the tail's end, or all of it when the
   * rewrite began after some of them. */
  if (keeping(s))
    s->cpt.tail.len -= len < s->cpt.tail.len ? len : s->cpt.tail.len;
}

/* Forgets the rewrite: the temp file goes, the old file stays the state. */
static void drop(struct pl_store *s) {
  struct pl__compact *c = &s->cpt;
  if (c->fd >= 0) {
    close(c->fd);
    unlink(s->tmp_path);
  }
  c->fd = -1;
  pl__buf_free(&c->dump);
  pl__buf_free(&c->tail);
  c->state = PL__CPT_IDLE;
}

static void failed(struct pl_store *s, const char *step, int rc) {
  s->stats.compact_failures++;
  snprintf(s->stats.compact_error, sizeof(s->stats.compact_error), "%s: %s", step,
           csr_strerror(rc));
  /* The next automatic attempt waits for another compact_min_bytes of growth, so a full disk is
   * not hammered with rewrites on every flush. */
  s->compact_floor = s->written + s->opts.compact_min_bytes;
}

void pl__compact_abandon(struct pl_store *s) {
  if (keeping(s))
    drop(s);
}

static void on_commit_work(uv_work_t *req) {
  struct pl_store *s = req->data;
  struct pl__compact *c = &s->cpt;
  c->step = "write the tail";
  c->rc = pl__write_all(c->fd, c->tail.data, c->tail.len, c->new_end - c->tail.len);
  if (c->rc == 0 && fsync(c->fd) != 0) {
    c->step = "fsync the new file";
    c->rc = -errno;
  }
  if (c->rc == 0 && rename(s->tmp_path, s->path) != 0) {
    c->step = "rename the new file";
    c->rc = -errno;
  }
  if (c->rc < 0)
    return;
  c->renamed = true;
  /* The old file is unlinked now: its last close frees its blocks, which for a big file takes a
   * while (Redis closes it on a background thread for the same reason). The loop does not touch
   * the descriptor during a commit. */
  close(c->old_fd);
  c->step = "fsync the directory";
  c->rc = pl__fsync_dir(s->dir);
}

/* The new file is the state now: switch to it and move the waiters over. */
static void switch_files(struct pl_store *s) {
  struct pl__compact *c = &s->cpt;
  s->fd = c->fd; /* the worker closed the old one */
  c->fd = -1;
  /* Everything written to the old file is in the new one, fsynced. What was appended during the
   * commit sits in the write buffer and lands right after the new file's end. */
  pl__store_resolve_upto(s, c->old_end, 0);
  uint64_t shift = c->new_end - c->old_end; /* modulo 2^64: the new file is usually smaller */
  for (size_t i = 0; i < s->q_len; i++)
    s->q[(s->q_head + i) & (s->q_cap - 1)].end += shift;
  s->written = s->synced = c->new_end;
  s->base = c->dump_end;
  s->needs_truncate = false;
  s->stats.file_bytes = s->written;
  s->stats.compactions++;
  s->stats.compact_error[0] = '\0';
  s->compact_floor = 0;
  if (c->rc < 0) {
    pl__store_unhealthy(s, "AOF compaction committed but could not %s: %s", c->step,
                        csr_strerror(c->rc));
  } else {
    s->stats.healthy = true;
    s->stats.health_reason[0] = '\0';
  }
}

static void on_commit_done(uv_work_t *req, int status) {
  struct pl_store *s = req->data;
  struct pl__compact *c = &s->cpt;
  if (status < 0 && c->rc == 0)
    c->rc = status;
  if (c->renamed) {
    switch_files(s);
  } else {
    failed(s, c->step, c->rc);
  }
  drop(s);
  if (s->closing) {
    pl__store_close_step(s);
    return;
  }
  pl__store_wake(s);
  pl__store_kick_sync(s);
}

static void commit_start(struct pl_store *s) {
  struct pl__compact *c = &s->cpt;
  pl__store_flush(s);
  if (c->tail_broken) {
    failed(s, "keep the appends made during the rewrite", UV_ENOMEM);
    drop(s);
    pl__store_kick_sync(s); /* what the flush wrote still needs its fsync */
    return;
  }
  c->old_end = s->written;
  c->old_fd = s->fd;
  c->new_end += c->tail.len;
  c->state = PL__CPT_COMMIT;
  c->renamed = false;
  c->req.data = s;
  int rc = uv_queue_work(s->loop->uv, &c->req, on_commit_work, on_commit_done);
  if (rc < 0) {
    failed(s, "start the commit", rc);
    drop(s);
    pl__store_kick_sync(s);
  }
}

void pl__compact_on_sync_done(struct pl_store *s) {
  if (s->cpt.state == PL__CPT_WAIT)
    commit_start(s);
}

static void on_rewrite_work(uv_work_t *req) {
  struct pl_store *s = req->data;
  struct pl__compact *c = &s->cpt;
  c->step = "write the live state";
  c->rc = pl__write_all(c->fd, c->dump.data, c->dump.len, c->dump_off);
  if (c->rc == 0 && fsync(c->fd) != 0) {
    c->step = "fsync the live state";
    c->rc = -errno;
  }
}

static void on_rewrite_done(uv_work_t *req, int status) {
  struct pl_store *s = req->data;
  struct pl__compact *c = &s->cpt;
  if (status < 0 && c->rc == 0)
    c->rc = status;
  pl__buf_free(&c->dump);
  if (s->closing || c->rc < 0 || c->tail_broken) {
    if (!s->closing)
      failed(s, c->rc < 0 ? c->step : "keep the appends made during the rewrite",
             c->rc < 0 ? c->rc : UV_ENOMEM);
    drop(s);
    pl__store_close_step(s);
    return;
  }
  if (s->sync_running)
    c->state = PL__CPT_WAIT;
  else
    commit_start(s);
}

int pl_store_compact(struct pl_store *s) {
  if (s == NULL || s->dump == NULL)
    return UV_EINVAL;
  if (s->closing)
    return UV_ECANCELED;
  struct pl__compact *c = &s->cpt;
  if (c->state != PL__CPT_IDLE)
    return UV_EBUSY;
  int fd = open(s->tmp_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    int rc = -errno;
    failed(s, "create the temp file", rc);
    return rc;
  }
  /* The header (which records the dump's length) is written last, over this placeholder. */
  uint8_t hdr[PL__AOF_HDR_BYTES] = {0};
  struct pl_store_emitter e = {.store = s, .buf = &c->dump, .fd = fd, .off = sizeof(hdr)};
  const char *step = "dump the live state";
  int rc = pl__write_all(fd, hdr, sizeof(hdr), 0);
  if (rc == 0)
    rc = s->dump(s->arg, &e);
  uint64_t end = e.off + c->dump.len;
  pl__hdr_encode(hdr, end);
  if (rc == 0)
    rc = pl__write_all(fd, hdr, sizeof(hdr), 0);
  if (rc == 0) {
    *c = (struct pl__compact){.dump = c->dump,
                              .fd = fd,
                              .dump_off = e.off,
                              .dump_end = end,
                              .new_end = end,
                              .req.data = s};
    step = "start the rewrite";
    rc = uv_queue_work(s->loop->uv, &c->req, on_rewrite_work, on_rewrite_done);
    if (rc == 0) {
      c->state = PL__CPT_REWRITE;
      return 0;
    }
  }
  failed(s, step, rc);
  c->fd = fd;
  drop(s); /* closes and removes the temp file, frees the piece */
  return rc;
}

void pl__compact_maybe(struct pl_store *s) {
  uint64_t w = s->written;
  if (s->dump == NULL || s->closing || s->cpt.state != PL__CPT_IDLE ||
      w < s->opts.compact_min_bytes || w < s->compact_floor ||
      (double)w <= s->opts.compact_ratio * (double)s->base)
    return;
  /* A failure is in stats (compact_failures, compact_error) and pushes compact_floor up. */
  if (pl_store_compact(s) < 0)
    return;
}
