/* The state store's file: CRC-32C, the record and header encodings, the directory lock, and the
 * scan behind both open — replay with torn tail truncation and reported, copied, skipped
 * corruption — and pl_store_read, the same replay changing nothing (the format is in internal.h).
 *
 * Open reads the file through a read-only mapping. A record is intact when its marker matches, its
 * length fits in the file and its CRC matches. At a record that is not, the reader looks for the
 * next offset where an intact record starts: if there is none, the rest is a torn tail (a crash
 * mid-write) and is cut off; if there is one, the bytes in between are a damaged region, which is
 * counted, reported and kept in a copy of the whole file made before anything is changed.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#include "internal.h"

/* ---------------------------------------------------------------------------------------------- */
/* CRC-32C */
/* ---------------------------------------------------------------------------------------------- */

static uint32_t crc_table[8][256];
static uint32_t (*crc_impl)(uint32_t, const uint8_t *, size_t);
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t n) {
  /* Slicing-by-8: eight table lookups per 8 bytes instead of one per byte. */
  while (n && ((uintptr_t)p & 7)) {
    crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    n--;
  }
  while (n >= 8) {
    uint32_t lo = crc ^ pl__get32(p), hi = pl__get32(p + 4);
    crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
          crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xff] ^
          crc_table[2][(hi >> 8) & 0xff] ^ crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--)
    crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t n) {
  uint64_t c = crc;
  while (n && ((uintptr_t)p & 7)) {
    c = _mm_crc32_u8((uint32_t)c, *p++);
    n--;
  }
  while (n >= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    p += 8;
    n -= 8;
  }
  while (n--)
    c = _mm_crc32_u8((uint32_t)c, *p++);
  return (uint32_t)c;
}
#endif

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc_table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++)
    for (int t = 1; t < 8; t++)
      crc_table[t][i] = crc_table[0][crc_table[t - 1][i] & 0xff] ^ (crc_table[t - 1][i] >> 8);
  crc_impl = crc_sw;
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("sse4.2"))
    crc_impl = crc_hw;
#endif
}

uint32_t pl__crc32c(uint32_t crc, const void *data, size_t len) {
  pthread_once(&crc_once, crc_init);
  return ~crc_impl(~crc, data, len);
}

uint32_t pl__crc32c_sw(uint32_t crc, const void *data, size_t len) {
  pthread_once(&crc_once, crc_init);
  return ~crc_sw(~crc, data, len);
}

/* ---------------------------------------------------------------------------------------------- */
/* Encodings and small file helpers */
/* ---------------------------------------------------------------------------------------------- */

void pl__rec_encode(uint8_t *dst, uint8_t type, const void *payload, uint32_t len) {
  dst[0] = PL__REC_MARK0;
  dst[1] = PL__REC_MARK1;
  dst[2] = type;
  dst[3] = 0;
  pl__put32(dst + 4, len);
  if (len)
    memcpy(dst + PL__REC_HDR_BYTES, payload, len);
  uint32_t crc = pl__crc32c(0, dst + 2, 6);
  pl__put32(dst + 8, pl__crc32c(crc, dst + PL__REC_HDR_BYTES, len));
}

void pl__hdr_encode(uint8_t *dst, uint64_t base) {
  memcpy(dst, PL__AOF_MAGIC, 8);
  pl__put32(dst + 8, PL__AOF_VERSION);
  pl__put32(dst + 12, PL__AOF_HDR_BYTES);
  pl__put64(dst + 16, base);
  pl__put32(dst + 24, 0);
  pl__put32(dst + 28, pl__crc32c(0, dst, 28));
}

int pl__write_all(int fd, const void *buf, size_t len, uint64_t off) {
  const uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = pwrite(fd, p, len, (off_t)off);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += n;
    len -= (size_t)n;
    off += (uint64_t)n;
  }
  return 0;
}

int pl__fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  int rc = fsync(fd) == 0 ? 0 : -errno;
  close(fd);
  return rc;
}

/* mkdir -p, owner-only for the directories it creates (the state holds customer data). */
static int make_dirs(const char *dir) {
  char *p = strdup(dir);
  if (p == NULL)
    return UV_ENOMEM;
  int rc = 0;
  for (char *c = p + 1;; c++) {
    if (*c != '/' && *c != '\0')
      continue;
    char saved = *c;
    *c = '\0';
    if (mkdir(p, 0700) != 0 && errno != EEXIST) {
      rc = -errno;
      break;
    }
    *c = saved;
    if (saved == '\0')
      break;
  }
  free(p);
  return rc;
}

/* A new, empty file: header into the temp file, fsync, rename, fsync the directory — so a crash
 * never leaves a file without a whole header. */
static int create_fresh(struct pl_store *s, const char **step) {
  uint8_t hdr[PL__AOF_HDR_BYTES];
  pl__hdr_encode(hdr, PL__AOF_HDR_BYTES);
  *step = "create the temp file";
  int fd = open(s->tmp_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  *step = "write the header";
  int rc = pl__write_all(fd, hdr, sizeof(hdr), 0);
  if (rc == 0 && fsync(fd) != 0) {
    *step = "fsync the new file";
    rc = -errno;
  }
  close(fd);
  if (rc == 0 && rename(s->tmp_path, s->path) != 0) {
    *step = "rename the new file";
    rc = -errno;
  }
  if (rc == 0) {
    *step = "fsync the directory";
    rc = pl__fsync_dir(s->dir);
  }
  if (rc < 0)
    unlink(s->tmp_path);
  return rc;
}

/* Scan and replay */
/* ---------------------------------------------------------------------------------------------- */

struct scan {
  const uint8_t *p;
  uint64_t size;
  bool mapped;  /* p is a mapping (else a heap copy) */
  uint64_t end; /* where intact data ends: the truncation point of a torn tail */
  uint64_t records;
  uint64_t regions;
  uint64_t region_bytes;
  uint64_t first_region; /* offset of the first damaged region */
  uint64_t first_len;
  uint64_t torn_bytes;
};

/* The length of the intact record at pos, or -1. */
static int64_t intact_at(const struct scan *sc, uint64_t pos) {
  const uint8_t *r = sc->p + pos;
  if (sc->size - pos < PL__REC_HDR_BYTES || r[0] != PL__REC_MARK0 || r[1] != PL__REC_MARK1)
    return -1;
  uint32_t len = pl__get32(r + 4);
  if (len > PL__REC_MAX_LEN || len > sc->size - pos - PL__REC_HDR_BYTES)
    return -1;
  uint32_t crc = pl__crc32c(0, r + 2, 6);
  if (pl__crc32c(crc, r + PL__REC_HDR_BYTES, len) != pl__get32(r + 8))
    return -1;
  return len;
}

/* The next offset after pos where an intact record starts, or sc->size. */
static uint64_t next_intact(const struct scan *sc, uint64_t pos) {
  for (uint64_t at = pos + 1; at < sc->size;) {
    const uint8_t *m = memchr(sc->p + at, PL__REC_MARK0, sc->size - at);
    if (m == NULL)
      break;
    at = (uint64_t)(m - sc->p);
    if (intact_at(sc, at) >= 0)
      return at;
    at++;
  }
  return sc->size;
}

static int replay_all(struct scan *sc, pl_replay_cb replay, void *arg, uint64_t *fail_at) {
  uint64_t pos = PL__AOF_HDR_BYTES;
  while (pos < sc->size) {
    int64_t len = intact_at(sc, pos);
    if (len >= 0) {
      int rc = replay(arg, sc->p[pos + 2], sc->p + pos + PL__REC_HDR_BYTES, (size_t)len);
      if (rc < 0) {
        *fail_at = pos;
        return rc;
      }
      sc->records++;
      pos += PL__REC_HDR_BYTES + (uint64_t)len;
      continue;
    }
    uint64_t next = next_intact(sc, pos);
    if (next == sc->size) {
      sc->torn_bytes = sc->size - pos;
      break;
    }
    if (sc->regions++ == 0) {
      sc->first_region = pos;
      sc->first_len = next - pos;
    }
    sc->region_bytes += next - pos;
    pos = next;
  }
  sc->end = sc->size - sc->torn_bytes;
  return 0;
}

/* {path}.corrupt-<unix time>, or with -2, -3... when that name is taken. */
static int copy_damaged(struct pl_store *s, const struct scan *sc, char *name, size_t name_len) {
  long long now = (long long)time(NULL);
  int fd = -1;
  for (int i = 1; fd < 0 && i < 100; i++) {
    if (i == 1)
      snprintf(name, name_len, "%s.corrupt-%lld", s->path, now);
    else
      snprintf(name, name_len, "%s.corrupt-%lld-%d", s->path, now, i);
    fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno != EEXIST)
      return -errno;
  }
  if (fd < 0)
    return UV_EEXIST;
  int rc = pl__write_all(fd, sc->p, sc->size, 0);
  if (rc == 0 && fsync(fd) != 0)
    rc = -errno;
  close(fd);
  if (rc == 0)
    rc = pl__fsync_dir(s->dir);
  if (rc < 0)
    unlink(name);
  return rc;
}

/* Reads up to `size` bytes into a heap copy; a file that shrank meanwhile gives what is left. */
static int read_file(int fd, uint64_t size, struct scan *sc) {
  uint8_t *buf = malloc(size);
  if (buf == NULL)
    return UV_ENOMEM;
  uint64_t off = 0;
  while (off < size) {
    ssize_t n = pread(fd, buf + off, size - off, (off_t)off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int rc = -errno;
      free(buf);
      return rc;
    }
    if (n == 0)
      break;
    off += (uint64_t)n;
  }
  sc->p = buf;
  sc->size = off;
  sc->mapped = false;
  return 0;
}

/* The whole file in memory: mapped when `may_map` and mapping works, else read. A mapping is only
 * safe while nobody can truncate the file under it (a page past the new end raises SIGBUS), which
 * holds for the store (it holds the lock) but not for a reader beside a running relay. */
static int load_file(int fd, uint64_t size, bool may_map, struct scan *sc) {
  void *p = may_map ? mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
  if (p == MAP_FAILED)
    return read_file(fd, size, sc);
  sc->p = p;
  sc->size = size;
  sc->mapped = true;
  return 0;
}

static void scan_release(struct scan *sc) {
  if (sc->p && sc->mapped)
    munmap((void *)sc->p, sc->size);
  else
    free((void *)sc->p);
  sc->p = NULL;
}

static int check_header(const uint8_t *h, uint64_t size, uint64_t *base) {
  if (size < PL__AOF_HDR_BYTES || memcmp(h, PL__AOF_MAGIC, 8) != 0 ||
      pl__crc32c(0, h, 28) != pl__get32(h + 28))
    return CSR_ECORRUPT;
  if (pl__get32(h + 8) != PL__AOF_VERSION || pl__get32(h + 12) != PL__AOF_HDR_BYTES)
    return UV_ENOTSUP;
  *base = pl__get64(h + 16);
  return 0;
}

/* Fills *err with "cannot <what>: <error>" for `file` and returns rc. */
static int load_fail(struct csr_err *err, const char *file, const char *what, int rc) {
  csr_err_set(err, file, 0, "", "cannot %s: %s", what, csr_strerror(rc));
  return rc;
}

/*
 * The one scan behind open and pl_store_read: loads `size` bytes of the file at fd, checks the
 * header and replays every intact record, counting a torn tail and damaged regions in *sc. The
 * file's bytes stay in sc (for the copy of a damaged file) until scan_release, even on failure.
 */
static int scan_file(int fd, const char *path, uint64_t size, bool may_map, pl_replay_cb replay,
                     void *arg, struct scan *sc, uint64_t *base, struct csr_err *err) {
  int rc = load_file(fd, size, may_map, sc);
  if (rc < 0)
    return load_fail(err, path, "read", rc);
  rc = check_header(sc->p, sc->size, base);
  if (rc < 0) {
    csr_err_set(err, path, 0, "", "%s",
                rc == UV_ENOTSUP ? "unsupported AOF version or header length; left untouched"
                                 : "not a csurelay AOF (bad header); left untouched");
    return rc;
  }
  uint64_t fail_at = 0;
  rc = replay_all(sc, replay, arg, &fail_at);
  if (rc < 0)
    csr_err_set(err, path, 0, "", "replay refused the record at offset %llu: %s",
                (unsigned long long)fail_at, csr_strerror(rc));
  return rc;
}

/*
 * What a scan found, into stats and, in words, into stats->health_reason (damaged regions only: a
 * torn tail is the normal trace of a crash) and *err. `copy` names the copy the store kept and
 * means the store repaired the file; NULL is a reader that changed nothing.
 */
static void report_scan(const char *path, const struct scan *sc, const char *copy,
                        struct pl_store_stats *st, struct csr_err *err) {
  st->records_replayed = sc->records;
  st->torn_tails = sc->torn_bytes ? 1 : 0;
  st->torn_bytes = sc->torn_bytes;
  st->corrupt_regions = sc->regions;
  st->corrupt_bytes = sc->region_bytes;
  char torn[128] = "";
  if (sc->torn_bytes)
    snprintf(torn, sizeof(torn), "torn tail of %llu bytes at offset %llu %s",
             (unsigned long long)sc->torn_bytes, (unsigned long long)sc->end,
             copy ? "truncated" : "(left as is)");
  if (sc->regions == 0) {
    if (torn[0])
      csr_err_set(err, path, 0, "", "%s", torn);
    return;
  }
  snprintf(st->health_reason, sizeof(st->health_reason),
           "AOF damaged: %llu bytes in %llu region(s) skipped, the first at offset %llu (%llu "
           "bytes); %llu intact records replayed%s%s",
           (unsigned long long)sc->region_bytes, (unsigned long long)sc->regions,
           (unsigned long long)sc->first_region, (unsigned long long)sc->first_len,
           (unsigned long long)sc->records, copy ? "; copy kept in " : "", copy ? copy : "");
  st->healthy = false;
  csr_err_set(err, path, 0, "", "%s%s%s", st->health_reason, torn[0] ? "; " : "", torn);
}

/* Replays an existing file, copies it if damaged, cuts a torn tail. fd is open. */
static int load_existing(struct pl_store *s, uint64_t size, pl_replay_cb replay, void *arg,
                         struct csr_err *err) {
  struct scan sc = {0};
  char copy[4200] = "";
  int rc = scan_file(s->fd, s->path, size, true, replay, arg, &sc, &s->base, err);
  if (rc == 0 && sc.regions && (rc = copy_damaged(s, &sc, copy, sizeof(copy))) < 0)
    csr_err_set(err, s->path, 0, "", "damaged AOF, and the copy before repair failed: %s",
                csr_strerror(rc));
  scan_release(&sc);
  if (rc < 0)
    return rc;
  if (sc.torn_bytes && ftruncate(s->fd, (off_t)sc.end) != 0)
    return load_fail(err, s->path, "truncate the torn tail", -errno);
  s->written = sc.end;
  report_scan(s->path, &sc, copy, &s->stats, err);
  return 0;
}

/*
 * One running store per directory: an exclusive flock on {dir}/csurelay.lock, held until the
 * store is freed. A file of its own because the AOF is replaced by every compaction's rename; the
 * kernel drops the lock with the process, so a kill -9 leaves nothing stale. The holder writes its
 * pid there so the next one can name it.
 */
static int lock_busy(struct pl_store *s, int fd, struct csr_err *err) {
  char text[32] = "";
  ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
  long pid = n > 0 ? strtol(text, NULL, 10) : 0;
  char who[48] = "pid unknown"; /* the holder locks first, then writes its pid */
  if (pid > 0)
    snprintf(who, sizeof(who), "pid %ld", pid);
  csr_err_set(err, "", 0, "", "state dir %s is in use by another csurelay (%s)", s->dir, who);
  return UV_EBUSY;
}

static int lock_dir(struct pl_store *s, struct csr_err *err) {
  char *path = pl__join(s->dir, "/" PL__LOCK_NAME);
  if (path == NULL)
    return UV_ENOMEM;
  char text[32];
  int len = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
  int rc = 0, fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    rc = load_fail(err, path, "open the lock file", -errno);
  else if (flock(fd, LOCK_EX | LOCK_NB) != 0)
    rc = errno == EWOULDBLOCK ? lock_busy(s, fd, err) : load_fail(err, path, "lock", -errno);
  else if (ftruncate(fd, 0) != 0)
    rc = load_fail(err, path, "write the lock file", -errno);
  else if ((rc = pl__write_all(fd, text, (size_t)len, 0)) < 0)
    load_fail(err, path, "write the lock file", rc);
  free(path);
  if (rc < 0 && fd >= 0)
    close(fd);
  if (rc == 0)
    s->lock_fd = fd;
  return rc;
}

int pl__store_load(struct pl_store *s, pl_replay_cb replay, void *arg, struct csr_err *err) {
  int rc = make_dirs(s->dir);
  if (rc < 0)
    return load_fail(err, s->dir, "create the state directory", rc);
  rc = lock_dir(s, err);
  if (rc < 0)
    return rc;
  /* A leftover of a rewrite or creation that crashed: never committed, so never the state. */
  if (unlink(s->tmp_path) != 0 && errno != ENOENT)
    return load_fail(err, s->tmp_path, "remove the leftover temp file", -errno);
  struct stat st;
  bool missing = stat(s->path, &st) != 0;
  if (missing && errno != ENOENT)
    return load_fail(err, s->path, "stat", -errno);
  if (missing || st.st_size == 0) {
    const char *step;
    rc = create_fresh(s, &step);
    if (rc < 0)
      return load_fail(err, s->path, step, rc);
  }
  s->fd = open(s->path, O_RDWR | O_CLOEXEC);
  if (s->fd < 0 || fstat(s->fd, &st) != 0)
    return load_fail(err, s->path, "open", -errno);
  rc = load_existing(s, (uint64_t)st.st_size, replay, arg, err);
  if (rc < 0)
    return rc;
  /* Whatever a killed predecessor left in the page cache is made durable before anyone acts on
   * it (and a truncation before anything is appended after it). */
  if (fsync(s->fd) != 0)
    return load_fail(err, s->path, "fsync", -errno);
  s->synced = s->written;
  if (s->base < PL__AOF_HDR_BYTES)
    s->base = PL__AOF_HDR_BYTES;
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Read-only replay */
/* ---------------------------------------------------------------------------------------------- */

int pl_store_read(const char *dir, pl_replay_cb replay, void *arg, struct pl_store_stats *stats,
                  struct csr_err *err) {
  struct pl_store_stats local;
  if (stats == NULL)
    stats = &local;
  *stats = (struct pl_store_stats){.healthy = true};
  if (err)
    *err = (struct csr_err){0};
  if (dir == NULL || dir[0] == '\0' || replay == NULL) {
    csr_err_set(err, "", 0, "state.dir", "pl_store_read: missing argument");
    return UV_EINVAL;
  }
  char *path = pl__join(dir, "/" PL__AOF_NAME);
  if (path == NULL)
    return UV_ENOMEM;
  /* No lock: the relay only ever appends, truncates a failed write back off, or renames a
   * complete file over this one, so the bytes read are a prefix of some complete file and the
   * scan keeps the intact records of it (a record being written counts as a torn tail). */
  struct stat st;
  int rc = 0, fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &st) != 0)
    rc = load_fail(err, path, "open", -errno);
  if (rc == 0 && st.st_size > 0) {
    struct scan sc = {0};
    uint64_t base;
    rc = scan_file(fd, path, (uint64_t)st.st_size, false, replay, arg, &sc, &base, err);
    scan_release(&sc);
    stats->file_bytes = sc.size;
    if (rc == 0)
      report_scan(path, &sc, NULL, stats, err);
  }
  if (fd >= 0)
    close(fd);
  free(path);
  return rc;
}
