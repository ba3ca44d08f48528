/* store_bench: the state store's appends per second and fsync latency, per fsync policy.
 *
 *   store_bench [DIR] [SECONDS]     (DIR defaults to /tmp; each run uses a fresh directory in it)
 *
 * Two loads per policy and payload size:
 *   max   a closed loop: an idle handle appends whenever fewer than WINDOW appends await
 *         durability, so the store runs flat out (the loop never blocks: CPU reads ~100%).
 *   rate  the relay's need: 50,000 records/s (10,000 events/s, five records each), appended on a
 *         1 ms timer; reports the latency from append to durable and the CPU it costs.
 * Every append asks for its durability future; latency is measured from the append call to the
 * future's callback.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "csurelay/pipeline.h"

#define WINDOW     20000
#define RATE       50000
#define LAT_BUCKET 10     /* µs per histogram bucket */
#define LAT_MAX    200000 /* buckets: up to 2 s */

struct slot {
  struct rx_fut fut;
  uint64_t t0;
  struct slot *next;
};

struct bench {
  uv_loop_t uv;
  struct rx_loop loop;
  char dir[512];
  struct pl_store *store;
  uv_idle_t idle;
  struct rx_timer timer;
  struct slot *slots;
  struct slot *free;
  size_t payload;
  uint8_t *buf;
  bool rate_mode;
  uint64_t start_ns, end_ns;
  uint64_t produced, done, failed;
  uint32_t *lat;
};

static void on_durable(struct rx_fut *fut) {
  struct slot *sl = RX_CONTAINER_OF(fut, struct slot, fut);
  struct bench *b = fut->data;
  uint64_t us = (uv_hrtime() - sl->t0) / 1000;
  uint64_t bucket = us / LAT_BUCKET;
  b->lat[bucket < LAT_MAX ? bucket : LAT_MAX - 1]++;
  if (fut->result == 0)
    b->done++;
  else
    b->failed++;
  sl->next = b->free;
  b->free = sl;
}

static bool append_one(struct bench *b) {
  struct slot *sl = b->free;
  if (sl == NULL)
    return false;
  b->free = sl->next;
  memcpy(b->buf, &b->produced, sizeof(b->produced));
  sl->t0 = uv_hrtime();
  sl->fut.data = b;
  if (pl_store_append(b->store, 1, b->buf, b->payload, &sl->fut, on_durable) != 0) {
    fprintf(stderr, "store_bench: append refused\n");
    exit(1);
  }
  b->produced++;
  return true;
}

static void on_idle(uv_idle_t *idle) {
  struct bench *b = idle->data;
  if (uv_hrtime() >= b->end_ns) {
    uv_idle_stop(idle);
    return;
  }
  for (int i = 0; i < 256 && append_one(b); i++)
    ;
}

static uint64_t on_tick(struct rx_timer *timer) {
  struct bench *b = timer->data;
  uint64_t now = uv_hrtime();
  if (now >= b->end_ns)
    return RX_TIMER_STOP;
  uint64_t owed = (now - b->start_ns) / 1000 * RATE / 1000000;
  while (b->produced < owed && append_one(b))
    ;
  return 1;
}

static uint64_t percentile(const uint32_t *lat, uint64_t total, double p) {
  uint64_t want = (uint64_t)((double)total * p), seen = 0;
  for (uint64_t i = 0; i < LAT_MAX; i++) {
    seen += lat[i];
    if (seen > want)
      return (i + 1) * LAT_BUCKET;
  }
  return LAT_MAX * LAT_BUCKET;
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int on_replay(void *arg, uint8_t type, const void *p, size_t len) {
  return 0;
}

static void on_closed(void *arg) {}

static const char *policy_name(enum csr_fsync f) {
  return f == CSR_FSYNC_ALWAYS ? "always" : f == CSR_FSYNC_BATCH ? "batch" : "none";
}

/* A fresh directory under parent, the store in it, and the append slots. */
static void bench_open(struct bench *b, const char *parent, enum csr_fsync policy) {
  snprintf(b->dir, sizeof(b->dir), "%s/csr-store-bench-XXXXXX", parent);
  if (mkdtemp(b->dir) == NULL) {
    perror("store_bench: mkdtemp");
    exit(1);
  }
  b->slots = calloc(WINDOW, sizeof(*b->slots));
  b->lat = calloc(LAT_MAX, sizeof(*b->lat));
  b->buf = calloc(1, b->payload);
  if (b->slots == NULL || b->lat == NULL || b->buf == NULL)
    exit(1);
  for (size_t i = 0; i < b->payload; i++)
    b->buf[i] = (uint8_t)('a' + i % 26);
  for (size_t i = 0; i < WINDOW; i++) {
    b->slots[i].next = b->free;
    b->free = &b->slots[i];
  }
  struct pl_store_opts opts = {.dir = b->dir, .fsync = policy, .fsync_interval_ms = 5};
  struct csr_err err = {0};
  if (uv_loop_init(&b->uv) != 0 || rx_loop_init(&b->loop, &b->uv) != 0 ||
      pl_store_open(&b->loop, &opts, on_replay, NULL, NULL, &b->store, &err) != 0) {
    fprintf(stderr, "store_bench: cannot open the store in %s: %s\n", b->dir, err.msg);
    exit(1);
  }
}

static void bench_close(struct bench *b) {
  pl_store_close(b->store, on_closed, NULL);
  if (b->rate_mode)
    rx_timer_close(&b->timer, NULL);
  else
    uv_close((uv_handle_t *)&b->idle, NULL);
  rx_loop_run(&b->loop);
  if (rx_loop_close(&b->loop) != 0)
    fprintf(stderr, "store_bench: the loop did not close cleanly\n");
  char path[600];
  snprintf(path, sizeof(path), "%s/csurelay.aof", b->dir);
  unlink(path);
  rmdir(b->dir);
  free(b->slots);
  free(b->lat);
  free(b->buf);
}

static void report(const struct bench *b, enum csr_fsync policy, double wall, double cpu) {
  const struct pl_store_stats *st = pl_store_stats(b->store);
  uint64_t total = b->done + b->failed;
  printf("%-6s %6zu  %-4s  %9.0f  %8.0f  %7.0f  %8.1f  %6.0f / %-6llu  %7llu / %-7llu  %4.0f%%\n",
         policy_name(policy), b->payload, b->rate_mode ? "rate" : "max", (double)b->done / wall,
         (double)st->flushes / wall, (double)st->fsyncs / wall,
         st->fsyncs ? (double)st->appends / (double)st->fsyncs : 0.0,
         st->fsyncs ? (double)st->fsync_total_us / (double)st->fsyncs : 0.0,
         (unsigned long long)st->fsync_max_us, (unsigned long long)percentile(b->lat, total, 0.50),
         (unsigned long long)percentile(b->lat, total, 0.99), 100.0 * cpu / wall);
  fflush(stdout);
  if (b->failed)
    fprintf(stderr, "store_bench: %llu appends failed\n", (unsigned long long)b->failed);
}

static void run(const char *parent, enum csr_fsync policy, size_t payload, bool rate_mode,
                double seconds) {
  struct bench b = {.payload = payload, .rate_mode = rate_mode};
  bench_open(&b, parent, policy);
  double cpu0 = cpu_seconds();
  b.start_ns = uv_hrtime();
  b.end_ns = b.start_ns + (uint64_t)(seconds * 1e9);
  if (rate_mode) {
    if (rx_timer_init(&b.timer, &b.loop) != 0 || rx_timer_start(&b.timer, on_tick, 1) != 0)
      exit(1);
    b.timer.data = &b;
  } else {
    uv_idle_init(&b.uv, &b.idle);
    b.idle.data = &b;
    uv_idle_start(&b.idle, on_idle);
  }
  rx_loop_run(&b.loop);
  report(&b, policy, (double)(uv_hrtime() - b.start_ns) / 1e9, cpu_seconds() - cpu0);
  bench_close(&b);
}

int main(int argc, char **argv) {
  const char *parent = argc > 1 ? argv[1] : "/tmp";
  double seconds = argc > 2 ? atof(argv[2]) : 3.0;
  if (seconds <= 0)
    seconds = 3.0;
  printf("store_bench: %s, %.1f s per row, window %d, rate %d records/s, batch interval 5 ms\n",
         parent, seconds, WINDOW, RATE);
  printf("policy  bytes  load  appends/s  flushes/s  fsyncs/s  recs/fsync  fsync us mean/max  "
         "durable us p50/p99  CPU\n");
  enum csr_fsync policies[] = {CSR_FSYNC_ALWAYS, CSR_FSYNC_BATCH, CSR_FSYNC_NONE};
  size_t sizes[] = {256, 2048};
  for (int p = 0; p < 3; p++)
    for (int z = 0; z < 2; z++)
      for (int r = 0; r < 2; r++)
        run(parent, policies[p], sizes[z], r == 1, seconds);
  return 0;
}
