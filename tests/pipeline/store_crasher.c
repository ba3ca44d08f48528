/* A child for test_store's kill -9 rounds: appends numbered records with fsync=always as fast as
 * the store takes them, and writes "<seq>\n" to stdout once each is durable. Compaction runs now
 * and then (a small compact_min_bytes), so kills also land inside rewrites.
 *
 *   store_crasher DIR SEED
 *
 * Records: type 1 = u64 seq + filler bytes derived from seq (crasher_fill); type 2 = u64 count, the
 * dump's snapshot: every seq below count. Replay continues the numbering. Exits by itself after 20
 * s so a lost parent cannot leave it running.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "csurelay/pipeline.h"
#include "store_crasher.h"

struct crasher {
  struct rx_loop loop;
  struct pl_store *store;
  struct rx_timer tick;
  uint64_t next;
  uint64_t rng;
  uint64_t started_ms;
};

struct rec_req {
  struct rx_fut fut;
  uint64_t seq;
};

static int on_replay(void *arg, uint8_t type, const void *payload, size_t len) {
  struct crasher *c = arg;
  uint64_t v;
  if (len < 8)
    return UV_EINVAL;
  memcpy(&v, payload, 8);
  c->next = type == CRASHER_SNAPSHOT ? v : v + 1;
  return 0;
}

static int on_dump(void *arg, struct pl_store_emitter *e) {
  struct crasher *c = arg;
  return pl_store_emit(e, CRASHER_SNAPSHOT, &c->next, sizeof(c->next));
}

static void on_durable(struct rx_fut *fut) {
  struct rec_req *r = RX_CONTAINER_OF(fut, struct rec_req, fut);
  if (fut->result == 0) {
    char line[32];
    int n = snprintf(line, sizeof(line), "%llu\n", (unsigned long long)r->seq);
    if (write(STDOUT_FILENO, line, (size_t)n) != n)
      exit(4);
  }
  free(r);
}

static uint64_t on_tick(struct rx_timer *timer) {
  struct crasher *c = timer->data;
  if (rx_now_ms(&c->loop) - c->started_ms > 20000)
    exit(0);
  static uint8_t buf[8 + CRASHER_MAX_FILL];
  if (pl_store_stats(c->store)->pending > 4000)
    return 1;
  unsigned batch = 1 + (unsigned)(rx_rand64(&c->rng) % 32);
  for (unsigned i = 0; i < batch; i++) {
    struct rec_req *r = malloc(sizeof(*r));
    if (r == NULL)
      exit(5);
    r->seq = c->next;
    size_t len = crasher_fill(buf, r->seq);
    if (pl_store_append(c->store, CRASHER_RECORD, buf, len, &r->fut, on_durable) < 0)
      exit(6);
    c->next++;
  }
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: store_crasher DIR SEED\n");
    return 2;
  }
  uv_loop_t uv;
  struct crasher c = {.rng = strtoull(argv[2], NULL, 0) | 1};
  if (uv_loop_init(&uv) != 0 || rx_loop_init(&c.loop, &uv) != 0)
    return 3;
  struct pl_store_opts opts = {
      .dir = argv[1],
      .fsync = CSR_FSYNC_ALWAYS,
      .compact_min_bytes = 512 << 10,
      .compact_ratio = 2.0,
  };
  struct csr_err err;
  if (pl_store_open(&c.loop, &opts, on_replay, on_dump, &c, &c.store, &err) != 0) {
    fprintf(stderr, "store_crasher: %s\n", err.msg);
    return 3;
  }
  c.started_ms = rx_now_ms(&c.loop);
  if (rx_timer_init(&c.tick, &c.loop) != 0)
    return 3;
  c.tick.data = &c;
  if (rx_timer_start(&c.tick, on_tick, 0) != 0)
    return 3;
  rx_loop_run(&c.loop);
  return 0;
}
