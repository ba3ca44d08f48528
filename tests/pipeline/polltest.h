/* The poll tests' shared fixture (test_poll, test_admit): an in-process csusim (simtest.h) with a
 * fixed seed, the hand-built "commerce" identity and its token cache, n CSUs on the sim with the
 * two event types, a bounded loop run, the sim's ledger of generated events, and a set of strings
 * for the ids a test saw. A test embeds `struct pt` in its fixture. */
#ifndef PIPELINE_POLLTEST_H
#define PIPELINE_POLLTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "csurelay/pipeline.h"
#include "simtest.h"

#define PT_MAX_CSUS   4
#define PT_SEED       42
#define PT_TOKEN_PATH "/csusim.onmicrosoft.com/oauth2/v2.0/token"

/* ---------------------------------------------------------------------------------------------- */
/* A set of strings */
/* ---------------------------------------------------------------------------------------------- */

struct sset {
  char **slots;
  size_t cap, n;
};

/** Adds a copy of `k`; true when it was new. */
bool sset_add(struct sset *s, const char *k);
bool sset_has(const struct sset *s, const char *k);
void sset_free(struct sset *s);

/* ---------------------------------------------------------------------------------------------- */
/* The sim, the identity, its token cache and the CSUs */
/* ---------------------------------------------------------------------------------------------- */

struct pt {
  struct st t;
  struct csr_identity id;
  char token_url[256];
  struct pl_tokens *tk;
  struct csr_csu csus[PT_MAX_CSUS];
  char names[PT_MAX_CSUS][16], urls[PT_MAX_CSUS][160], ouns[PT_MAX_CSUS][8];
  char *types[2]; /* "AddCartLines", "Checkout" */
  unsigned n;
  int tokens_gone;
};

/** Starts the sim: `n` CSUs, `rate` events/s in total, seed PT_SEED, a fault plan (YAML or NULL).
 */
void pt_start_sim(struct pt *p, unsigned n, double rate, const char *faults_yaml);

/**
 * The identity (token endpoint at `base_url`) and its token cache on p->t's loop and client, and
 * `n` CSUs csu0.. at base_url/csuN/ polling both types every 200 ms, pages of 25, `overlap_s`.
 */
void pt_setup(struct pt *p, const char *base_url, unsigned n, int overlap_s);

/** The token cache of every CSU (a pl_poll_create tokens_for; `arg` is the struct pt). */
struct pl_tokens *pt_tokens_for(void *arg, const struct csr_csu *csu);

/** Destroys the token cache (waiting at most 5 s for it), stops the sim, resets the log. */
void pt_stop(struct pt *p);

/** 1 for "Checkout", 0 for the other type. */
int pt_type_index(const char *type);

/* ---------------------------------------------------------------------------------------------- */
/* Running the loop */
/* ---------------------------------------------------------------------------------------------- */

/** A timer that sets `expired` after its time: bounds a loop run. */
struct pt_guard {
  struct rx_timer timer;
  int expired;
};

void pt_guard_start(struct pt_guard *g, struct pt *p, uint64_t ms);
/** Closes the guard and runs the loop once without waiting. */
void pt_guard_end(struct pt_guard *g, struct pt *p);

/* ---------------------------------------------------------------------------------------------- */
/* The ledger */
/* ---------------------------------------------------------------------------------------------- */

struct pt_lev {
  char id[192];
  unsigned csu;
  int type;
  int64_t time_ms, commit_ms; /* commit_ms only when asked for */
};

/** Every generated event (GET /ledger/events, paged), with its commit time when `commit`. */
size_t pt_ledger_events(struct pt *p, bool commit, struct pt_lev **out);

/** last[csu][type]: the latest event time of each lane among `v` (last zeroed by the caller). */
void pt_ledger_last(const struct pt_lev *v, size_t n, int64_t (*last)[2]);

/** The Search requests the sim answered, of any status. */
uint64_t pt_search_requests(struct pt *p);

/** The events the sim generated so far. */
uint64_t pt_generated(struct pt *p);

#endif
