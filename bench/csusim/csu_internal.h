/* csusim's CSUs inside: shared by events.c (stores, generators, Search), events_script.c
 * (--events), search_cache.c (the stale Search cache), orders.c (customers and SalesOrders), csu.c
 * (the HTTP endpoints) and customers.c (the Customers endpoints). Not part of sim.h: nothing else
 * needs it, and the tests include it to drive the stores directly.
 *
 * Memory: a generated event is stored as struct sim__ev (40 bytes); its strings live once in the
 * CSU's interned string pool. A committed Checkout adds a struct sim__cart (so its order can be
 * rebuilt on demand, never stored). Bench runs generate millions of events, so nothing per event is
 * kept as JSON.
 */
#ifndef CSUSIM_CSU_INTERNAL_H
#define CSUSIM_CSU_INTERNAL_H

#include "sim.h"

#define SIM_NO_STR         UINT32_MAX   /* "no string" in a pool offset field */
#define SIM_POOL_CUSTOMERS 500          /* generated customers per CSU */
#define SIM_SEED_BURST     (1ULL << 63) /* a cart seed flag: one line, part of a same-time burst */
#define SIM_SEED_SCRIPT    (1ULL << 62) /* a cart seed flag: the cart came from --events */

/* ---------------------------------------------------------------------------------------------- */
/* A hash index: 32-bit hashes to 32-bit values, duplicates allowed; callers check the key. */
/* ---------------------------------------------------------------------------------------------- */

struct sim__htab {
  uint64_t *slots; /* (hash << 32) | (value + 1); 0 = empty */
  size_t cap;      /* a power of two, or 0 */
  size_t used;
};

struct sim__hiter {
  size_t pos;
  uint32_t hash;
};

uint32_t sim__hash(const char *s, size_t n, bool fold_case);
int sim__htab_put(struct sim__htab *h, uint32_t hash, uint32_t value);
/** Starts iterating the values stored under `hash`. */
void sim__htab_find(const struct sim__htab *h, uint32_t hash, struct sim__hiter *it);
/** The next candidate value under the hash (the caller compares keys); false when none is left. */
bool sim__htab_next(const struct sim__htab *h, struct sim__hiter *it, uint32_t *value);
void sim__htab_free(struct sim__htab *h);

/* ---------------------------------------------------------------------------------------------- */
/* Interned strings: offset 0 is "". */
/* ---------------------------------------------------------------------------------------------- */

struct sim__pool {
  char *buf;
  size_t len, cap;
  struct sim__htab idx;
};

/** The offset of `s` (length n) in the pool, adding it when new; SIM_NO_STR on ENOMEM. */
uint32_t sim__intern(struct sim__pool *p, const char *s, size_t n);
/** The offset of an existing string, or SIM_NO_STR. */
uint32_t sim__pool_lookup(const struct sim__pool *p, const char *s, size_t n);
static inline const char *sim__str(const struct sim__pool *p, uint32_t off) {
  return off == SIM_NO_STR ? "" : p->buf + off;
}

/* ---------------------------------------------------------------------------------------------- */
/* Events, carts and the per-CSU state */
/* ---------------------------------------------------------------------------------------------- */

/** One committed event. */
struct sim__ev {
  int64_t time_ms;                                     /* EventDateTime */
  int64_t channel_id;                                  /* EventChannelId */
  uint32_t txn, customer, terminal, staff, data, area; /* pool offsets */
};

/** Events of one type in EventDateTime order (equal times in commit order). */
struct sim__store {
  struct sim__ev *ev;
  size_t n, cap;
};

/** A cart whose Checkout is committed: enough to rebuild its SalesOrder. */
struct sim__cart {
  uint64_t seed;   /* the cart's draws: lines, items, tender, receipt email */
  int64_t time_ms; /* the Checkout's EventDateTime = the order's CreatedDateTime */
  int64_t channel_id;
  uint32_t txn, customer, terminal, staff;
  uint32_t receipt; /* a scripted ReceiptEmail, or SIM_NO_STR to draw one */
  int channel;      /* index of the channel in the CSU, or -1 for a foreign channel id */
};

/** A customer (generated or created through the API). */
struct sim__cust {
  char account[24], first[32], middle[24], last[40], email[96], receipt_email[96], phone[24];
  char group[12], language[8], street[48], city[32], state[8], zip[12], party[16];
  int64_t recid, party_recid, person_name_id, created_ms;
  int type; /* CustomerTypeValue: 1 person, 2 organization */
};

/** An event waiting for its commit (late commits and scripted events wait long). */
struct sim__pend {
  struct sim__ev ev;
  int64_t commit_ms; /* generator clock */
  uint64_t seq;      /* ties on commit_ms keep creation order */
  uint64_t seed;     /* the cart's seed (Checkout) */
  uint32_t receipt;  /* scripted ReceiptEmail or SIM_NO_STR */
  uint8_t type;      /* enum sim_event_type */
};

struct sim__lastsync {
  char app[24];
  int64_t *vals;
  size_t n, cap;
};

struct sim__csu {
  unsigned index;
  char oun[16];
  char store[16]; /* e.g. HOUSTON */
  int64_t channels[SIM_CHANNELS_PER_CSU];
  struct sim__pool pool;
  struct sim__store st[2]; /* by enum sim_event_type */
  /* committed Checkouts, by cart id */
  struct sim__cart *carts;
  size_t ncarts, capcarts;
  struct sim__htab cart_idx;
  /* the commit queue: a min-heap on (commit_ms, seq) */
  struct sim__pend *pend;
  size_t npend, cappend;
  uint64_t pend_seq;
  /* the generator */
  double rate;         /* events/s of this CSU */
  double next_open_ms; /* generator clock of the next cart */
  int64_t next_burst_ms;
  uint64_t rng, cart_seq, bursts;
  int64_t last_cart_no;
  uint64_t tie_rng; /* draws a new tie order per Search */
  /* customers */
  struct sim__cust *cust;
  size_t ncust, capcust;
  struct sim__htab by_account, by_email;
  uint64_t next_account;
  /* last sync watermarks per app */
  struct sim__lastsync *sync;
  size_t nsync;
};

struct sim__cache; /* the stale Search cache (search_cache.c) */

/** A scripted event, loaded by events_script.c and queued by sim__begin(). */
struct sim__script {
  struct sim__pend p;
  unsigned csu;
  bool relative;     /* time_ms is an offset from the start */
  int64_t commit_ms; /* after the start */
};

struct sim_csus {
  struct sim *sim;
  unsigned n;
  struct sim__csu *csu;
  uint64_t seed;
  struct rx_timer *timer; /* heap-allocated: freed by its close callback, after destroy maybe */
  int64_t wall0;          /* generator clock at start */
  int64_t vnow;           /* the generator clock of the last advance (tests without a loop) */
  uint64_t mono0;
  bool started;
  struct sim__cache *cache;
  const struct sim_event_faults *knobs; /* tests: overrides the fault plan's event knobs */
  struct sim__script *script;           /* scripted events, until start */
  size_t nscript;
  uint64_t committed; /* events made visible, all CSUs */
  struct csr_jw jw;   /* reused for every answer: handlers answer before they return */
};

/* ---------------------------------------------------------------------------------------------- */
/* events.c, events_script.c, search_cache.c */
/* ---------------------------------------------------------------------------------------------- */

/** The wire EventType of each enum sim_event_type: "AddCartLines", "Checkout". */
extern const char *const sim__type_names[2];

/** Milliseconds to whole seconds, rounding down (DateTime.ToString() drops the fraction); the
 * bounds INT64_MIN and INT64_MAX (no limit) stay as they are. */
static inline int64_t sim__whole_s(int64_t ms) {
  return ms == INT64_MIN || ms == INT64_MAX ? ms : (ms >= 0 ? ms / 1000 : -((999 - ms) / 1000));
}

uint64_t sim__mix(uint64_t a, uint64_t b);
int sim__events_init(struct sim__csu *u);
void sim__events_free(struct sim_csus *c);
/** The event knobs in force (tests' override, the plan's, or the defaults). */
const struct sim_event_faults *sim__knobs(const struct sim_csus *c);
/** The generator clock: wall ms derived from the loop's monotonic clock since start. */
int64_t sim__now(const struct sim_csus *c);
/**
 * Generates and commits every event due at generator time `now_ms` (the timer calls this; tests
 * call it with a virtual clock). Scripted events are committed when their time comes too.
 */
void sim__advance(struct sim_csus *c, int64_t now_ms);
/** Starts the generator clocks at `wall_ms` without a timer (tests). */
void sim__begin(struct sim_csus *c, int64_t wall_ms);
/** The committed Checkout of cart `txn`, or NULL. */
const struct sim__cart *sim__cart_find(const struct sim__csu *u, const char *txn);
/** First index in `s` whose time is > t (upper bound). */
size_t sim__store_upper(const struct sim__store *s, int64_t t);

/** A Search or GetAll page. */
struct sim__query {
  int type;         /* enum sim_event_type, or -1 for every type (GetAll) */
  int64_t from_ms;  /* exclusive, whole seconds; INT64_MIN for none */
  int64_t to_ms;    /* inclusive, whole seconds; INT64_MAX for none */
  size_t skip, top; /* top SIZE_MAX = no limit */
  bool count;       /* add @odata.count */
  bool shuffle;     /* unstable tie order */
};
/** Writes the whole OData collection for `q` on CSU `u` into `jw`; returns the rows in `value`. */
size_t sim__write_page(struct sim_csus *c, struct sim__csu *u, const struct sim__query *q,
                       struct csr_jw *jw);
/* search_cache.c */
/** The stale cache: the body cached for the key (valid until the next put), or NULL. */
const char *sim__cache_get(struct sim_csus *c, unsigned csu, const char *type,
                           const struct sim__query *q, size_t *len);
void sim__cache_put(struct sim_csus *c, unsigned csu, const char *type, const struct sim__query *q,
                    const char *body, size_t len);
void sim__cache_free(struct sim_csus *c);

/* ---------------------------------------------------------------------------------------------- */
/* orders.c */
/* ---------------------------------------------------------------------------------------------- */

int sim__customers_init(struct sim_csus *c, struct sim__csu *u);
void sim__customers_free(struct sim__csu *u);
struct sim__cust *sim__cust_find(struct sim__csu *u, const char *account);
/** Up to `max` customers whose email equals `email` ignoring case, in creation order. */
size_t sim__cust_by_email(struct sim__csu *u, const char *email, struct sim__cust **out,
                          size_t max);
/** Adds a customer (copied); indexes it. Returns it, or NULL on ENOMEM. */
struct sim__cust *sim__cust_add(struct sim__csu *u, const struct sim__cust *src);
/** Re-indexes a customer after its email changed. */
int sim__cust_reindex(struct sim__csu *u, struct sim__cust *k);
/** The next free account number for a customer created with AccountNumber "". */
void sim__cust_next_account(struct sim__csu *u, char *buf, size_t len);

/** What a generated cart looks like: drawn from its seed alone. */
struct sim__cart_plan {
  unsigned lines;       /* AddCartLines events, 1..4 */
  unsigned items[4][2]; /* catalogue indexes added by each event */
  unsigned nitems[4];   /* 1 or 2 per event */
  unsigned gaps_ms[5];  /* from the cart's opening to each event */
  int channel;          /* 0, 1 stores; 2 online */
  unsigned terminal;    /* terminal number on a store channel */
  unsigned staff;       /* staff number */
  bool guest;
  unsigned customer; /* index into the pool when not a guest */
};
void sim__cart_plan(uint64_t seed, struct sim__cart_plan *p);
/** EventData for AddCartLines number `line` of the plan, e.g. ["81143","0002"]. */
void sim__cart_data(const struct sim__cart_plan *p, unsigned line, char *buf, size_t len);

/** The order of a committed cart, as the ledger needs it. */
struct sim__order_sum {
  char binding[40]; /* InternalTransactionId */
  char email[96];   /* ReceiptEmail, else the customer's Email, else "" */
  char amount[40];  /* AmountPaid text */
};
void sim__order_summary(struct sim_csus *c, struct sim__csu *u, const struct sim__cart *k,
                        struct sim__order_sum *out);
/** Writes the SalesOrder entity (with @odata.context) for a committed cart. */
void sim__write_order(struct sim_csus *c, struct sim__csu *u, const struct sim__cart *k,
                      struct csr_jw *jw);
void sim__write_customer(struct sim_csus *c, struct sim__csu *u, const struct sim__cust *k,
                         struct csr_jw *jw);
/** One GlobalCustomer of a SearchByFields result (no envelope). */
void sim__write_global_customer(const struct sim__cust *k, struct csr_jw *jw);

/* ---------------------------------------------------------------------------------------------- */
/* csu.c: request and answer helpers of the CSU endpoints (csu.c, customers.c) */
/* ---------------------------------------------------------------------------------------------- */

#define SIM_E_INVALID      "Microsoft_Dynamics_Commerce_Runtime_InvalidRequest"
#define SIM_E_REQUIRED     "Microsoft_Dynamics_Commerce_Runtime_RequiredValueNotFound"
#define SIM_E_FORMAT       "Microsoft_Dynamics_Commerce_Runtime_InvalidFormat"
#define SIM_E_NOT_FOUND    "Microsoft_Dynamics_Commerce_Runtime_ObjectNotFound"
#define SIM_E_NO_CUSTOMER  "Microsoft_Dynamics_Commerce_Runtime_CustomerNotFound"
#define SIM_E_STORAGE      "Microsoft_Dynamics_Commerce_Runtime_CriticalStorageError"
#define SIM_E_APPLICATION  "Microsoft_Dynamics_Commerce_Runtime_ApplicationError"
#define SIM_X_VALIDATION   "DataValidationException"
#define SIM_X_STORAGE      "StorageException"
#define SIM_MAX_PATH_BYTES 1024

/**
 * The CSU of the request once the token (when `token_required`, or when one is sent) and the OUN
 * header are right, with the CSU's answer writer reset; otherwise answers 401 or 400 and returns
 * NULL.
 */
struct sim__csu *sim__csu_begin(struct sim_req *r, bool token_required);
/** The request body as a JSON object (the caller frees it); otherwise answers 400 and NULL. */
yajl_val sim__body_json(struct sim_req *r);
/** $top, $skip and $count into q; otherwise answers 400 and returns -1. */
int sim__paging(struct sim_req *r, struct sim__query *q);
/** The decoded path after "Commerce/" (in `buf`) for a request that already matched, else "". */
const char *sim__rest_of(struct sim_req *r, char *buf, size_t len);
/** An OData string literal 'it''s' into `out` as it's; false when `s` (n bytes) is not one or the
 * text does not fit in `len`. */
bool sim__unquote(const char *s, size_t n, char *out, size_t len);

/** A handler's work once the CSU and the JSON body are known; -1 when it answered an error. */
typedef int (*sim__body_fn)(struct sim_req *r, struct sim__csu *u, yajl_val doc);
/** sim__csu_begin(), then sim__body_json(), then `fn`; frees the body. */
void sim__with_body(struct sim_req *r, bool token_required, sim__body_fn fn);

/** Writes "@odata.context": "{base}/csu{i}/Commerce/$metadata#{what}" into the open object. */
void sim__jw_context(struct csr_jw *jw, const struct sim_csus *c, const struct sim__csu *u,
                     const char *what);
/** Finishes `jw` and answers it as OData JSON with `status` and `headers` (CRLF-ended lines or
 * NULL); 500 when the answer could not be written. */
void sim__reply_jw(struct sim_req *r, int status, const char *headers, struct csr_jw *jw);
/** Answers a Commerce error; returns -1. */
int sim__fail(struct sim_req *r, int status, const char *id, const char *msg, const char *type);
/** Answers 400 with `id` and a DataValidationException; returns -1. */
int sim__bad(struct sim_req *r, const char *id, const char *msg);

/* customers.c: the handlers of the Customers routes */
void sim__on_customer_get(struct sim_req *r);
void sim__on_customer_search(struct sim_req *r);
void sim__on_customer_create(struct sim_req *r);
void sim__on_customer_update(struct sim_req *r);

#endif
