/* Declarations shared between the pipeline's files, not part of the public API. */
#ifndef CSURELAY_PIPELINE_INTERNAL_H
#define CSURELAY_PIPELINE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "csurelay/pipeline.h"

/* ---------------------------------------------------------------------------------------------- */
/* State store (store.c: appends, group commit, close; store_file.c: the format, open and replay; */
/* store_compact.c: the background rewrite)                                                       */
/* ---------------------------------------------------------------------------------------------- */

/*
 * File format, every integer little-endian:
 *
 *   header (32 bytes)  magic "CSRAOF\r\n" | u32 version (1) | u32 header bytes (32) |
 *                      u64 base (header + dump bytes of the rewrite that made the file) |
 *                      u32 reserved (0) | u32 CRC-32C of the 28 bytes before it
 *   record (12 + len)  u8 0xFE | u8 0xA7 (sync marker) | u8 type | u8 flags (0) | u32 len |
 *                      u32 CRC-32C of bytes 2..7 of this header followed by the payload | payload
 *
 * The CRC covers type, flags, length and payload, so a damaged length cannot pass for another
 * record's; the marker is checked byte for byte instead. 0xFE never occurs in UTF-8, so text
 * payloads (the JSON the pipeline stores) cannot contain a marker, which keeps the forward scan
 * after a damaged record cheap and free of false starts in them.
 */
#define PL__AOF_NAME      "csurelay.aof"
#define PL__LOCK_NAME     "csurelay.lock" /* flock'd by the running store; holds its pid */
#define PL__AOF_MAGIC     "CSRAOF\r\n"
#define PL__AOF_VERSION   1u
#define PL__AOF_HDR_BYTES 32u
#define PL__REC_HDR_BYTES 12u
#define PL__REC_MARK0     0xFEu
#define PL__REC_MARK1     0xA7u
/* No record is longer than this, whatever max_record_bytes says (a length past it is damage). */
#define PL__REC_MAX_LEN (1u << 30)

/** A growable byte buffer. */
struct pl__buf {
  uint8_t *data;
  size_t len;
  size_t cap;
};

/** Makes room for `more` bytes after len; UV_ENOMEM on failure. */
CSR_NODISCARD int pl__buf_reserve(struct pl__buf *b, size_t more);
void pl__buf_free(struct pl__buf *b);

/** An append waiting to become durable: it is once the file is synced up to `end`. */
struct pl__waiter {
  struct rx_fut *fut; /* NULL when the caller did not ask */
  uint64_t end;       /* file offset just past the record */
};

/** A threadpool job's own fields: written by the worker, read on the loop after completion. */
struct pl__sync_job {
  uv_work_t req;
  int fd;
  int inject; /* a fault the worker reports instead of syncing (tests) */
  int rc;
  uint64_t target;   /* the file is durable up to here once the job succeeds */
  uint64_t ns;       /* how long fdatasync took */
  uint64_t start_ms; /* loop time when it was queued */
};

enum pl__compact_state {
  PL__CPT_IDLE,
  PL__CPT_REWRITE, /* the dump is being written to the temp file; appends also go to the tail */
  PL__CPT_WAIT,    /* dump written; waiting for the running fsync before committing */
  PL__CPT_COMMIT,  /* tail write + fsync + rename + directory fsync running; flushes paused */
};

struct pl__compact {
  enum pl__compact_state state;
  uv_work_t req;
  struct pl__buf dump; /* the last piece of the dump, not yet written (REWRITE) */
  struct pl__buf tail; /* records appended since the dump (REWRITE, WAIT; moved into COMMIT) */
  bool tail_broken;    /* a tail copy failed: this rewrite cannot be committed */
  int fd;              /* the temp file (opened on the loop, before the dump) */
  int rc;              /* worker result */
  const char *step;    /* the worker's failing step, for the message */
  bool renamed;        /* COMMIT: the rename (the commit point) happened */
  uint64_t dump_end;   /* bytes of the new file without the tail */
  uint64_t dump_off;   /* where `dump` goes in the temp file (REWRITE) */
  int old_fd;          /* COMMIT: the old file, closed by the worker once renamed over */
  uint64_t old_end;    /* COMMIT: bytes of the old file when it started */
  uint64_t new_end;    /* COMMIT: bytes of the new file when it is done */
};

struct pl_store {
  struct rx_loop *loop;
  struct pl_store_opts opts; /* defaults applied; dir points at our own copy */
  char *dir;
  char *path;     /* {dir}/csurelay.aof */
  char *tmp_path; /* {dir}/csurelay.aof.rewrite: fresh files and rewrites; removed on open */
  int lock_fd;    /* {dir}/csurelay.lock, flock'd from open until the store is freed */
  pl_store_dump_cb dump;
  void *arg;

  int fd;
  uint64_t written;       /* bytes of the file written (the offset of the next write) */
  uint64_t synced;        /* bytes covered by a completed fsync */
  uint64_t base;          /* file size after the last rewrite, for the compaction ratio */
  uint64_t compact_floor; /* no automatic compaction below this (after a failed one) */
  bool needs_truncate;    /* a failed write may have left bytes past `written` */

  struct pl__buf wbuf;  /* encoded records not yet written */
  struct pl__waiter *q; /* FIFO ring of appends not yet durable, ordered by end */
  size_t q_head;
  size_t q_len;
  size_t q_cap;

  uv_prepare_t prepare; /* writes wbuf once per loop turn, before the loop blocks */
  struct rx_timer batch;
  struct pl__sync_job sync;
  bool sync_running;
  uint64_t last_sync_ms;

  struct pl__compact cpt;

  int fail_write; /* test faults, consumed by the next write / fsync */
  int fail_fsync;

  bool closing;
  bool closed_fd;
  unsigned open_handles;
  void (*close_cb)(void *arg);
  void *close_arg;

  struct pl_store_stats stats;
};

struct pl_store_emitter {
  struct pl_store *store;
  struct pl__buf *buf;
  int fd;       /* the rewrite's temp file: a buffer past PL__DUMP_CHUNK goes there at `off` */
  uint64_t off; /* where buf's first byte belongs in that file */
};

/* A dump is written out in pieces of about this size while it is built, so a rewrite holds one
 * piece in memory rather than the whole live state (60 MB of dedupe ids at 10,000 ev/s). */
#define PL__DUMP_CHUNK ((size_t)1 << 20)

/* store_file.c */
/** CRC-32C (Castagnoli): SSE4.2 when the CPU has it, else slicing-by-8. crc = 0 to start. */
uint32_t pl__crc32c(uint32_t crc, const void *data, size_t len);
/** The table-driven CRC-32C, always (tests compare it with the hardware one). */
uint32_t pl__crc32c_sw(uint32_t crc, const void *data, size_t len);
/** Encodes one record at dst (PL__REC_HDR_BYTES + len bytes). */
void pl__rec_encode(uint8_t *dst, uint8_t type, const void *payload, uint32_t len);
/** Encodes the file header at dst (PL__AOF_HDR_BYTES bytes). */
void pl__hdr_encode(uint8_t *dst, uint64_t base);
/** pwrite(2) of all `len` bytes at `off`, retrying short writes and EINTR; 0 or -errno. */
CSR_NODISCARD int pl__write_all(int fd, const void *buf, size_t len, uint64_t off);
/** fsync(2) of a directory, so a rename or a new name in it is durable; 0 or -errno. */
CSR_NODISCARD int pl__fsync_dir(const char *dir);
/**
 * Locks the directory, opens or creates the file and replays it (see pl_store_open); sets lock_fd,
 * fd, written, base, stats.
 */
CSR_NODISCARD int pl__store_load(struct pl_store *s, pl_replay_cb replay, void *arg,
                                 struct csr_err *err);

/* store.c */
/** `a` followed by `b` in a new string, or NULL when out of memory. */
char *pl__join(const char *a, const char *b);
/** Fills stats.health_reason and clears stats.healthy. */
void pl__store_unhealthy(struct pl_store *s, const char *fmt, ...) CSR_PRINTF(2, 3);
/** Resolves (and drops) every waiter whose record ends at or before `off`. */
void pl__store_resolve_upto(struct pl_store *s, uint64_t off, int result);
/** Writes wbuf now (unless a commit has paused writes); the prepare handle's job. */
void pl__store_flush(struct pl_store *s);
/** Has the prepare handle write the buffer this turn (after a commit paused writes). */
void pl__store_wake(struct pl_store *s);
/** Starts the fsync or arms the batch timer, as the policy asks, for whatever is written. */
void pl__store_kick_sync(struct pl_store *s);
/** Continues a close that waits for a job; no-op while not closing. */
void pl__store_close_step(struct pl_store *s);

/* store_compact.c */
/** After a flush: starts a compaction when the file outgrew the live state. */
void pl__compact_maybe(struct pl_store *s);
/** An append while a rewrite runs: keeps a copy of the encoded record for the new file. */
void pl__compact_keep(struct pl_store *s, const uint8_t *rec, size_t len);
/** A failed flush dropped its last `len` bytes: drop them from the kept tail too. */
void pl__compact_unkeep(struct pl_store *s, size_t len);
/** The running fsync finished: a rewrite that waited for it may commit now. */
void pl__compact_on_sync_done(struct pl_store *s);
/** Close: drops a rewrite that has not started committing (its worker is not running). */
void pl__compact_abandon(struct pl_store *s);

/* Test hooks: the next write (a real half write, then the error) or fsync fails with `err`. */
void pl__store_fail_next_write(struct pl_store *s, int err);
void pl__store_fail_next_fsync(struct pl_store *s, int err);

static inline void pl__put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

static inline void pl__put64(uint8_t *p, uint64_t v) {
  pl__put32(p, (uint32_t)v);
  pl__put32(p + 4, (uint32_t)(v >> 32));
}

static inline uint32_t pl__get32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t pl__get64(const uint8_t *p) {
  return (uint64_t)pl__get32(p) | (uint64_t)pl__get32(p + 4) << 32;
}

#endif
