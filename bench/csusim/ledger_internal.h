/* csusim's ledger inside: shared by ledger.c (the records: events, deliveries, contacts, customers,
 * requests, and the diff) and ledger_http.c (the /ledger endpoints and the receiver /hooks/{name}).
 * Not part of sim.h: nothing else needs it. */
#ifndef CSUSIM_LEDGER_INTERNAL_H
#define CSUSIM_LEDGER_INTERNAL_H

#include "sim.h"

#define SIM_LEDGER_ID_MAX 192 /* an event id: csu{i}|area|type|txn(44)|time(~30) fits easily */
#define SIM_LEDGER_AREAS  32  /* distinct EventDataAreaIds */
#define SIM_LEDGER_SINKS  32  /* the trigger and up to 31 webhook receivers */
#define SIM_LEDGER_LIST_CAP                                                                        \
  100                        /* ids listed per list in /ledger/diff (the counts are always exact) */
#define SIM_LEDGER_STATS 512 /* (endpoint, status) pairs */

struct sim__chunk;  /* ledger.c */
struct sim__slot;   /* ledger.c */
struct sim__emailc; /* ledger.c */

struct sim__arena {
  struct sim__chunk *head;
};

struct sim__tab {
  struct sim__slot *s;
  size_t mask, used;
};

/* One generated event; its id is rebuilt from csu, area, type and tail. */
struct sim__rec {
  const char *tail; /* "txn", or "txn|time" when the time text is not csr_time_format's */
  const char *co;   /* Checkout: "binding\0email\0amount"; NULL otherwise */
  int64_t time_ms;
  int64_t commit_ms;
  uint32_t csu;
  uint8_t type;
  uint8_t area;
  uint8_t canon; /* the EventDateTime text is csr_time_format(time_ms): not stored */
};

enum { SIM_NOTE_UNKNOWN, SIM_NOTE_MISMATCH };

struct sim__note {
  const char *id;     /* the event id, or the unmatched key as received */
  const char *detail; /* what differed, or the trigger name; may be NULL */
};

struct sim__sink {
  char name[64];
  int64_t *first;  /* per record: wall ms of the first receipt */
  uint32_t *count; /* per record: receipts */
  uint64_t received, unique, unknown, mismatched, rejected;
  struct sim__note notes[2][SIM_LEDGER_LIST_CAP]; /* the first unknown keys and mismatches */
  unsigned nnotes[2];
};

struct sim__emails {
  struct sim__emailc *items;
  size_t n, cap;
  struct sim__tab tab;
};

struct sim__reqstat {
  char endpoint[24];
  int status;
  uint64_t n;
};

struct sim_ledger {
  struct sim *sim;
  struct sim__rec *recs;
  size_t n, cap;
  struct sim__tab ids, bindings;
  struct sim__arena arena;
  char areas[SIM_LEDGER_AREAS][8];
  unsigned nareas;
  uint64_t by_type[2];                      /* indexed by type == SIM_CHECKOUT */
  uint64_t repeated;                        /* an id generated twice (kept once) */
  uint64_t dropped;                         /* not recorded: out of memory or too many data areas */
  struct sim__sink sinks[SIM_LEDGER_SINKS]; /* [0] is the trigger */
  unsigned nsinks;
  struct sim__emails contacts, customer_emails;
  uint64_t contacts_created, duplicate_emails, customers[2];
  struct sim__reqstat stats[SIM_LEDGER_STATS];
  unsigned nstats;
};

/* One diff: the filters in, the counts and the first listed ids out. */
struct sim__walk {
  /* in */
  const struct sim__sink *k; /* NULL: a receiver that never got anything */
  bool trigger;
  int type;
  int64_t from_ms;  /* records committed at or after (0: from the start) ... */
  int64_t until_ms; /* ... and before (0: up to now) */
  /* out */
  struct sim_ledger_diff d;
  int64_t *lat;
  uint32_t missing[SIM_LEDGER_LIST_CAP], dup[SIM_LEDGER_LIST_CAP];
  unsigned nmissing, ndup;
};

/* ledger.c */

/** "Checkout" or "AddCartLines". */
const char *sim__type_name(unsigned type);
/** The record's event id into `buf`; returns its length (as snprintf). */
size_t sim__rec_id(const struct sim_ledger *l, const struct sim__rec *r, char *buf, size_t len);
/** The EventDateTime text; `buf` holds CSR_TIME_BUF bytes for a canonical one. */
const char *sim__rec_time(const struct sim__rec *r, char *buf);
/** A Checkout's receipt email and amount ("" for other events). */
const char *sim__co_email(const struct sim__rec *r);
const char *sim__co_amount(const struct sim__rec *r);
/** The webhook receiver `name` (never the trigger at [0]), created when `create`; NULL if none. */
struct sim__sink *sim__hook_sink(struct sim_ledger *l, const char *name, bool create);
/** One accepted webhook delivery of event `id` (EventDetails in `details`) at `now_ms`. */
void sim__record_webhook(struct sim_ledger *l, struct sim__sink *k, const char *id,
                         yajl_val details, int64_t now_ms);
/**
 * Runs the diff for `sink` ("trigger" or "webhook:<name>") with w's filters; w->lat is allocated
 * (the caller frees it). -EINVAL on a bad sink name, -ENOMEM.
 */
int sim__ledger_walk(const struct sim_ledger *l, const char *sink, struct sim__walk *w);

#endif
