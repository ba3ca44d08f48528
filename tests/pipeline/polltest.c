/* The poll tests' shared fixture: see polltest.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/log.h"
#include "csurelay/timefmt.h"
#include "polltest.h"

/* ---------------------------------------------------------------------------------------------- */
/* A set of strings */
/* ---------------------------------------------------------------------------------------------- */

static uint64_t hash_str(const char *s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
  return h ^ (h >> 31);
}

static char **sset_slot(const struct sset *s, const char *k) {
  size_t pos = (size_t)hash_str(k) & (s->cap - 1);
  while (s->slots[pos] != NULL && strcmp(s->slots[pos], k) != 0)
    pos = (pos + 1) & (s->cap - 1);
  return &s->slots[pos];
}

bool sset_add(struct sset *s, const char *k) {
  if ((s->n + 1) * 2 > s->cap) {
    struct sset g = {.cap = s->cap ? s->cap * 2 : 1024};
    g.slots = calloc(g.cap, sizeof(char *));
    assert_non_null(g.slots);
    for (size_t i = 0; i < s->cap; i++)
      if (s->slots[i] != NULL)
        *sset_slot(&g, s->slots[i]) = s->slots[i];
    free(s->slots);
    s->slots = g.slots;
    s->cap = g.cap;
  }
  char **slot = sset_slot(s, k);
  if (*slot != NULL)
    return false;
  *slot = strdup(k);
  assert_non_null(*slot);
  s->n++;
  return true;
}

bool sset_has(const struct sset *s, const char *k) {
  return s->cap > 0 && *sset_slot(s, k) != NULL;
}

void sset_free(struct sset *s) {
  for (size_t i = 0; i < s->cap; i++)
    free(s->slots[i]);
  free(s->slots);
  memset(s, 0, sizeof(*s));
}

/* ---------------------------------------------------------------------------------------------- */
/* The sim, the identity, its token cache and the CSUs */
/* ---------------------------------------------------------------------------------------------- */

void pt_start_sim(struct pt *p, unsigned n, double rate, const char *faults_yaml) {
  struct sim_opts o;
  sim_opts_default(&o);
  o.csus = n;
  o.rate = rate;
  o.seed = PT_SEED;
  o.faults_yaml = faults_yaml;
  st_start_opts(&p->t, &o);
}

void pt_setup(struct pt *p, const char *base_url, unsigned n, int overlap_s) {
  assert_true(n <= PT_MAX_CSUS);
  p->n = n;
  snprintf(p->token_url, sizeof(p->token_url), "%s%s", base_url, PT_TOKEN_PATH);
  p->id = (struct csr_identity){.name = "commerce",
                                .tenant = "csusim.onmicrosoft.com",
                                .client_id = SIM_CLIENT_ID,
                                .scope = SIM_COMMERCE_SCOPE,
                                .token_url = p->token_url,
                                .secret = SIM_DEFAULT_SECRET};
  assert_int_equal(pl_tokens_create(&p->t.loop, &p->t.http, &p->id, &p->tk), 0);
  p->types[0] = "AddCartLines";
  p->types[1] = "Checkout";
  for (unsigned i = 0; i < n; i++) {
    snprintf(p->names[i], sizeof(p->names[i]), "csu%u", i);
    snprintf(p->urls[i], sizeof(p->urls[i]), "%s/csu%u/", base_url, i);
    snprintf(p->ouns[i], sizeof(p->ouns[i]), "%u", SIM_FIRST_OUN + i);
    p->csus[i] = (struct csr_csu){.name = p->names[i],
                                  .url = p->urls[i],
                                  .oun = p->ouns[i],
                                  .identity_name = "commerce",
                                  .identity = &p->id,
                                  .event_types = p->types,
                                  .n_event_types = 2,
                                  .poll_interval_ms = 200,
                                  .page_size = 25,
                                  .overlap_s = overlap_s,
                                  .settle_ms = 500,
                                  .sweep_s = 0,
                                  .sweep_every_s = 300,
                                  .start_relative = true,
                                  .start_from_ms = -10000};
  }
}

struct pl_tokens *pt_tokens_for(void *arg, const struct csr_csu *csu) {
  return ((struct pt *)arg)->tk;
}

static void on_tokens_gone(void *arg) {
  ((struct pt *)arg)->tokens_gone++;
}

void pt_stop(struct pt *p) {
  p->tokens_gone = 0;
  pl_tokens_destroy(p->tk, on_tokens_gone, p);
  struct pt_guard g;
  pt_guard_start(&g, p, 5000);
  while (p->tokens_gone == 0 && !g.expired)
    uv_run(&p->t.uv, UV_RUN_ONCE);
  pt_guard_end(&g, p);
  assert_true(p->tokens_gone > 0);
  st_stop(&p->t);
  csr_log_set_writer(NULL, NULL);
  csr_log_set_level(CSR_INFO);
}

int pt_type_index(const char *type) {
  return strcmp(type, "Checkout") == 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Running the loop */
/* ---------------------------------------------------------------------------------------------- */

static uint64_t on_guard(struct rx_timer *timer) {
  *(int *)timer->data = 1;
  return RX_TIMER_STOP;
}

void pt_guard_start(struct pt_guard *g, struct pt *p, uint64_t ms) {
  g->expired = 0;
  assert_int_equal(rx_timer_init(&g->timer, &p->t.loop), 0);
  g->timer.data = &g->expired;
  assert_int_equal(rx_timer_start(&g->timer, on_guard, ms), 0);
}

void pt_guard_end(struct pt_guard *g, struct pt *p) {
  rx_timer_close(&g->timer, NULL);
  uv_run(&p->t.uv, UV_RUN_NOWAIT);
}

/* ---------------------------------------------------------------------------------------------- */
/* The ledger */
/* ---------------------------------------------------------------------------------------------- */

size_t pt_ledger_events(struct pt *p, bool commit, struct pt_lev **out) {
  size_t n = 0, cap = 0, total = 1;
  struct pt_lev *v = NULL;
  while (n < total) {
    char path[96];
    struct st_resp r;
    snprintf(path, sizeof(path), "/ledger/events?offset=%zu&limit=10000", n);
    assert_int_equal(st_call(&p->t, "GET", path, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    int64_t t;
    assert_int_equal(csr_json_get_int(r.json, "total", &t), 0);
    total = (size_t)t;
    yajl_val evs = csr_json_get(r.json, "events");
    size_t m = csr_json_len(evs);
    if (n + m > cap) {
      cap = (n + m) * 2;
      v = realloc(v, cap * sizeof(*v));
      assert_non_null(v);
    }
    for (size_t i = 0; i < m; i++, n++) {
      yajl_val e = csr_json_at(evs, i);
      int64_t csu;
      snprintf(v[n].id, sizeof(v[n].id), "%s", csr_json_get_str(e, "id"));
      assert_int_equal(csr_json_get_int(e, "csu", &csu), 0);
      v[n].csu = (unsigned)csu;
      v[n].type = pt_type_index(csr_json_get_str(e, "type"));
      assert_int_equal(csr_time_parse(csr_json_get_str(e, "time"), &v[n].time_ms), 0);
      v[n].commit_ms = 0;
      if (commit)
        assert_int_equal(csr_time_parse(csr_json_get_str(e, "committed"), &v[n].commit_ms), 0);
    }
    st_resp_free(&r);
    if (m == 0)
      break;
  }
  *out = v;
  return n;
}

void pt_ledger_last(const struct pt_lev *v, size_t n, int64_t (*last)[2]) {
  for (size_t i = 0; i < n; i++)
    if (v[i].time_ms > last[v[i].csu][v[i].type])
      last[v[i].csu][v[i].type] = v[i].time_ms;
}

uint64_t pt_search_requests(struct pt *p) {
  static const int statuses[] = {0, 200, 401, 429, 500, 503};
  uint64_t n = 0;
  for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
    n += sim_ledger_requests(p->t.sim.ledger, "search", statuses[i]);
  return n;
}

uint64_t pt_generated(struct pt *p) {
  struct sim_ledger_counts c;
  sim_ledger_counts(p->t.sim.ledger, &c);
  return c.generated;
}
