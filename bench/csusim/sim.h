/* csusim — an emulator of every remote party csurelay talks to (Entra ID, CSUs, Dataverse and
 * Journeys triggers, webhook receivers), with fault injection and a ledger of everything generated
 * and received. One process, one libuv loop, one HTTP port.
 *
 * Module map (one concern per file):
 *   main.c      command line, --print-config, signals
 *   sim.c       start and stop: creates every module, registers routes, listens
 *   route.c     the request gate: every endpoint passes through sim_serve(), which applies faults
 *               (latency, errors, timeouts, resets, malformed bodies) and then runs the handler;
 *               reply helpers for both error shapes
 *   text.c      percent-decoding (query strings, form bodies) and the plain JSON answers of the
 *               endpoints outside the gate (text.h)
 *   faults.c    the fault plan: parsed from --faults FILE (YAML) or POST /sim/faults, deterministic
 *               under the seed
 *   entra.c     the token endpoint and token checks for the CSU and Dataverse endpoints
 *   events.c    per-CSU event stores and generators (rate, carts, guests), late commits, equal
 *               timestamps, the Search and GetAllCommerceEvents pages
 *   events_script.c  scripted events: the --events FILE loader and its JSON format
 *   search_cache.c   the stale Search cache
 *   orders.c    deterministic realistic SalesOrders and customers
 *   csu.c       the CSU endpoints under /csu{i}/Commerce/: routing, events, last sync, OUN, orders
 *   customers.c the Customers endpoints (get, SearchByFields, create, update)
 *   dataverse.c contacts, service protection limits, the Dataverse routes (dataverse_internal.h)
 *   triggers.c  custom-trigger actions: the registry, parameter validation, the trigger handler
 *   ledger.c    the ledger's records: events, deliveries, contacts, customers, requests, the diff
 *               (ledger_internal.h)
 *   ledger_http.c  /ledger, /ledger/events, /ledger/diff, /ledger/reset, and the webhook receiver
 *               /hooks/{name}
 */
#ifndef CSUSIM_SIM_H
#define CSUSIM_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "csurelay/json.h"
#include "csurelay/reactor.h"

struct sim;
struct sim_req;
struct sim_faults;
struct sim_ledger;
struct sim_entra;
struct sim_csus;
struct sim_dataverse;

/* ---------------------------------------------------------------------------------------------- */
/* Options and the process                                                                         */
/* ---------------------------------------------------------------------------------------------- */

#define SIM_DEFAULT_SECRET    "csusim-secret"
#define SIM_CLIENT_ID         "csurelay"
#define SIM_COMMERCE_SCOPE    "api://commerce/.default"
#define SIM_DATAVERSE_SCOPE   "api://dataverse/.default" /* the sim's stand-in for {org}/.default */
#define SIM_DEFAULT_TRIGGER   "msdynmkt_csucheckouteventtrigger_144841371"
#define SIM_DATA_AREA         "usrt"
#define SIM_FIRST_OUN         128           /* csu i has OUN "128" + i */
#define SIM_FIRST_CHANNEL_ID  5637144592LL  /* channel RecordIds of csu i start here + 1000 * i */
#define SIM_CHANNELS_PER_CSU  3             /* two stores and an online channel */

struct sim_opts {
  char host[64];           /* --listen host (loopback only) */
  int port;                /* --listen port; 0 = ephemeral */
  unsigned csus;           /* --csus N, default 1 */
  double rate;             /* --rate: events/s in total, split evenly across CSUs; 0 = none */
  uint64_t seed;           /* --seed, default 1 */
  const char *client_secret; /* --client-secret, default SIM_DEFAULT_SECRET */
  const char *faults_path; /* --faults FILE or NULL */
  const char *faults_yaml; /* a plan as text (tests); used when faults_path is NULL */
  const char *events_path; /* --events FILE (scripted events) or NULL */
  bool print_config;       /* --print-config */
  const char *state_dir;   /* --print-config: state.dir, default ./var */
  const char *admin_listen; /* --print-config: admin.listen, default 127.0.0.1:8686 */
  const char *mqtt_broker; /* --print-config: adds the mqtt sink when set */
};

struct sim {
  /* read-only after start */
  struct rx_loop *loop;
  struct sim_opts opts;
  char base_url[96]; /* "http://127.0.0.1:PORT" with the bound port, no trailing slash */
  int64_t started_wall_ms;
  struct rx_http_server server;
  struct sim_faults *faults;
  struct sim_ledger *ledger;
  struct sim_entra *entra;
  struct sim_csus *csus;
  struct sim_dataverse *dv;
  uint64_t requests; /* requests that reached sim_serve */
  /* private */
  uint64_t _started_mono_ms;
  struct sim_req *_held; /* requests held by a timeout fault or a latency delay */
  struct rx_timer _sweep; /* releases held requests whose client has gone */
  unsigned _closing;      /* close callbacks still to come during sim_stop */
  void (*_stop_cb)(struct sim *sim);
};

/** Fills `opts` with the defaults (port 0 on 127.0.0.1, one CSU, no events, seed 1). */
void sim_opts_default(struct sim_opts *opts);

/**
 * Creates every module, registers the routes and listens (the bound port is in sim->base_url and
 * sim->server.port); then starts the generators. On failure returns < 0 with a reason in `why`,
 * and everything created is released.
 */
int sim_start(struct sim *sim, struct rx_loop *loop, const struct sim_opts *opts, char *why,
              size_t whylen);

/** Stops generators, releases held requests, closes the server; `cb` fires once sim may be freed. */
void sim_stop(struct sim *sim, void (*cb)(struct sim *sim));

/** Milliseconds since sim_start (for windowed faults and token revocation). */
uint64_t sim_elapsed_ms(const struct sim *sim);

/* ---------------------------------------------------------------------------------------------- */
/* route.c — the request gate and replies                                                          */
/* ---------------------------------------------------------------------------------------------- */

/** Runs once the gate lets a request through. Must end with exactly one sim_reply*() on `r`. */
typedef void (*sim_handler)(struct sim_req *r);

/** One request in flight through the gate; owned by route.c, freed by the reply. */
struct sim_req {
  /* read-only */
  struct sim *sim;
  struct rx_http_request *http;
  const char *endpoint; /* the fault-plan name, e.g. "search" */
  int csu;              /* the CSU index, or -1 */
  void *arg;            /* the handler's argument from sim_serve */
  int64_t received_ms;  /* wall clock at arrival */
  /* private */
  sim_handler _handler;
  bool _malformed;
  bool _timeout;
  bool _reset;
  bool _has_timer;
  int _status;
  uint64_t _retry_after_s;
  struct rx_timer _delay;
  struct sim_req *_prev;
  struct sim_req *_next;
};

/**
 * Endpoint names used in fault plans, one per contract: "token", "search", "getall", "lastsync",
 * "oun", "order", "customer_get", "customer_search", "customer_create", "customer_update",
 * "contacts_get", "contacts_create", "trigger", "webhook". "*" in a plan matches every endpoint.
 */

/**
 * Applies the fault plan for (`endpoint`, `csu`) to `req`, then calls `handler` (now, or after
 * injected latency) unless a fault answered for it: an error status (429 with Retry-After, 500,
 * 503, in the shape of the endpoint's party), a timeout (no answer until the client gives up), or a
 * reset. A malformed-body fault lets the handler run and corrupts its 2xx JSON in sim_reply().
 * Every request is counted in sim->requests and, per endpoint, in the ledger's stats.
 */
void sim_serve(struct sim *sim, struct rx_http_request *req, const char *endpoint, int csu,
               sim_handler handler, void *arg);

/** Answers and frees `r`. `content_type` NULL means application/json. */
void sim_reply(struct sim_req *r, int status, const char *headers, const char *content_type,
               const char *body, size_t len);
/** Answers with the writer's document (application/json; odata.metadata=minimal). */
void sim_reply_jw(struct sim_req *r, int status, const char *headers, struct csr_jw *jw);
/** Commerce error shape: {"ErrorResourceId": ..., "LocalizedMessage": ..., "ExceptionType": ...}. */
void sim_reply_commerce_error(struct sim_req *r, int status, const char *resource_id,
                              const char *message, const char *exception_type);
/** Dataverse error shape: {"error":{"code":"0x...","message":"..."}}. */
void sim_reply_dataverse_error(struct sim_req *r, int status, const char *code,
                               const char *message, const char *headers);
/** Entra error shape (error, error_description with AADSTS code, error_codes, timestamp, ids). */
void sim_reply_entra_error(struct sim_req *r, int status, const char *error, int aadsts,
                           const char *description);

/** Starts/stops the gate (its pending delays and held timeouts are released on stop). */
int sim_route_init(struct sim *sim);
void sim_route_close(struct sim *sim);

/* ---------------------------------------------------------------------------------------------- */
/* faults.c — the fault plan                                                                       */
/* ---------------------------------------------------------------------------------------------- */

/** What the gate does with one request. */
struct sim_fault_decision {
  uint64_t latency_ms;
  int status;              /* 0, or the error status to answer with */
  uint64_t retry_after_s;  /* with 429/503: the Retry-After header, 0 = none */
  bool timeout;            /* hold the request without an answer */
  bool reset;              /* reset the connection */
  bool malformed;          /* corrupt the 2xx JSON body */
};

/** Event-store knobs (read by events.c). */
struct sim_event_faults {
  double late_commit_rate;       /* share of events committed late, EventDateTime in the past */
  uint64_t late_commit_max_s;    /* how far in the past, uniformly up to this */
  uint64_t same_time_every_s;    /* every N s, a burst of events with one EventDateTime; 0 = off */
  unsigned same_time_burst;      /* events in such a burst (straddles page boundaries) */
  bool unstable_tie_order;       /* equal EventDateTimes come back in a different order per query */
  bool stale_cache;              /* the CSU's 1-hour cache of non-empty Search results */
  uint64_t stale_cache_ttl_s;    /* default 3600 */
};

/** Token knobs (read by entra.c). */
struct sim_token_faults {
  uint64_t lifetime_s;    /* expires_in, default 3599 */
  int64_t revoke_at_s;    /* seconds after start when every token issued so far dies; -1 = never */
};

/** Dataverse service protection limits (read by dataverse.c). */
struct sim_dv_limits {
  unsigned max_requests;   /* per client over the window; default 6000 */
  uint64_t window_s;       /* default 300 */
  unsigned max_concurrent; /* default 52 */
  bool require_known_contact; /* trigger 400s when signaluserauthid is not a contact; default on */
};

/** Parses a plan (YAML text); on error returns CSR_ECONFIG with "line N: ..." in `why`. */
int sim_faults_create(const char *yaml, size_t len, uint64_t seed, struct sim_faults **out,
                      char *why, size_t whylen);
int sim_faults_load(const char *path, uint64_t seed, struct sim_faults **out, char *why,
                    size_t whylen);
void sim_faults_destroy(struct sim_faults *f);
/** Decides for one request; `elapsed_ms` is the time since the sim started (windowed rules). */
void sim_faults_decide(struct sim_faults *f, const char *endpoint, int csu, uint64_t elapsed_ms,
                       struct sim_fault_decision *out);
const struct sim_event_faults *sim_faults_events(const struct sim_faults *f);
const struct sim_token_faults *sim_faults_tokens(const struct sim_faults *f);
const struct sim_dv_limits *sim_faults_dv(const struct sim_faults *f);
/** Registers POST /sim/faults (replace the plan's endpoint rules at run time; body is YAML). */
int sim_faults_routes(struct sim *sim);

/* ---------------------------------------------------------------------------------------------- */
/* ledger.c                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

enum sim_event_type { SIM_ADDCARTLINES, SIM_CHECKOUT };

/** A generated event as the CSU will return it; the ledger copies what it needs. */
struct sim_event {
  unsigned csu;
  enum sim_event_type type;
  char txn[48];         /* EventTransactionId = cart id */
  int64_t time_ms;      /* EventDateTime */
  char time_text[40];   /* EventDateTime exactly as the CSU sends it */
  int64_t commit_ms;    /* wall time it became visible to Search */
  char data_area[8];
  int64_t channel_id;
  char terminal[16];
  char staff[16];
  char customer[40];    /* "" for guests */
  char data[64];        /* EventData */
  /* Checkout only: what the order will say, so deliveries can be matched and checked */
  char binding[40];     /* the order's InternalTransactionId (trigger msdynmkt_bindingid) */
  char email[96];       /* the email the cij sink should use; "" when none (skipped(no_email)) */
  char amount[40];      /* AmountPaid as text */
};

/** The relay's event id for `ev` (SPEC section 3): csu|area|type|txn|time, csu as "csu{i}". */
void sim_event_id(const struct sim_event *ev, char *buf, size_t len);

int sim_ledger_create(struct sim *sim, struct sim_ledger **out);
void sim_ledger_destroy(struct sim_ledger *l);
/** Registers GET /ledger, GET /ledger/events, GET /ledger/diff, POST /ledger/reset, POST /hooks/{name}. */
int sim_ledger_routes(struct sim *sim);

void sim_ledger_generated(struct sim_ledger *l, const struct sim_event *ev);
/** A trigger call that passed validation; matched to its event by msdynmkt_bindingid. */
void sim_ledger_trigger(struct sim_ledger *l, const char *trigger, yajl_val body, int64_t now_ms);
void sim_ledger_contact(struct sim_ledger *l, const char *email, const char *contact_id);
void sim_ledger_customer(struct sim_ledger *l, const char *email, const char *account, bool created);
/** Counts one request per endpoint and answer status (for /ledger stats). */
void sim_ledger_request(struct sim_ledger *l, const char *endpoint, int status);

/* The ledger's numbers for in-process tests: the same as GET /ledger and GET /ledger/diff. */
struct sim_ledger_counts {
  uint64_t generated, checkout, addcartlines;
  uint64_t repeated; /* an event id generated twice (recorded once) */
  uint64_t dropped;  /* events not recorded (out of memory) */
  uint64_t contacts_created, contact_emails, duplicate_emails;
  uint64_t customers_created, customers_updated;
};
struct sim_ledger_sink_counts {
  uint64_t received;   /* deliveries accepted, matched or not */
  uint64_t unique;     /* events delivered at least once */
  uint64_t duplicates; /* deliveries beyond the first per event */
  uint64_t unknown;    /* deliveries that match no generated event */
  uint64_t mismatched; /* matched deliveries whose fields differ from the event */
  uint64_t rejected;   /* webhook: refused with 400 (no Idempotency-Key, bad body) */
};
struct sim_ledger_diff {
  uint64_t expected, delivered, missing, duplicated;
  uint64_t skipped_no_email; /* trigger: Checkouts without an email, which must not arrive */
  uint64_t unexpected;       /* trigger: such Checkouts that arrived anyway */
  int64_t p50, p90, p99, max; /* ms from EventDateTime to the first receipt; 0 when none */
};
void sim_ledger_counts(const struct sim_ledger *l, struct sim_ledger_counts *out);
/** `sink` is "trigger" or "webhook:<name>"; -ENOENT (and zeros) when it never received anything. */
int sim_ledger_sink_counts(const struct sim_ledger *l, const char *sink,
                           struct sim_ledger_sink_counts *out);
/**
 * Generated versus delivered for `sink` ("trigger" or "webhook:<name>"), over events of `type`
 * (-1 = any) committed before `until_ms` (wall ms; 0 = no limit). -EINVAL on a bad sink name,
 * -ENOMEM.
 */
int sim_ledger_diff(const struct sim_ledger *l, const char *sink, int type, int64_t until_ms,
                    struct sim_ledger_diff *out);
/** Requests answered for `endpoint` with `status` (0 = reset or timed out). */
uint64_t sim_ledger_requests(const struct sim_ledger *l, const char *endpoint, int status);
/** Forgets everything (POST /ledger/reset). */
int sim_ledger_reset(struct sim_ledger *l);

/* ---------------------------------------------------------------------------------------------- */
/* entra.c                                                                                         */
/* ---------------------------------------------------------------------------------------------- */

enum sim_audience { SIM_AUD_COMMERCE, SIM_AUD_DATAVERSE };

int sim_entra_create(struct sim *sim, struct sim_entra **out);
void sim_entra_destroy(struct sim_entra *e);
/**
 * Registers POST /{tenant}/oauth2/v2.0/token (and the v1 /{tenant}/oauth2/token). The tenant is any
 * path segment, so this is a catch-all route (every other path gets 404 from it): call it after
 * every other module's routes.
 */
int sim_entra_routes(struct sim *sim);
/**
 * Checks the request's Authorization (Bearer, or id_token for the CSU) for `aud`. Returns 0 when
 * valid; otherwise answers 401 in the party's error shape itself and returns < 0 (r is then gone).
 */
int sim_entra_check(struct sim_req *r, enum sim_audience aud);

/** Counters of the token endpoint and the token checks (for tests). */
struct sim_entra_stats {
  uint64_t issued;            /* tokens issued, v1 and v2 */
  uint64_t refused;           /* token requests answered with an Entra error */
  uint64_t accepted;          /* sim_entra_check() passes */
  uint64_t rejected;          /* sim_entra_check() 401s: the sum of the five below */
  uint64_t rejected_missing;  /* no Authorization, or a scheme the party does not take */
  uint64_t rejected_invalid;  /* malformed, forged or altered */
  uint64_t rejected_audience; /* a token for the other resource */
  uint64_t rejected_expired;
  uint64_t rejected_revoked;  /* issued before sim_token_faults.revoke_at_s, checked after it */
};
void sim_entra_stats(const struct sim_entra *e, struct sim_entra_stats *out);

/* ---------------------------------------------------------------------------------------------- */
/* events.c, orders.c, csu.c                                                                       */
/* ---------------------------------------------------------------------------------------------- */

int sim_csus_create(struct sim *sim, struct sim_csus **out);
void sim_csus_destroy(struct sim_csus *c);
/** Loads scripted events (--events FILE) into the stores; < 0 with a reason in `why`. */
int sim_csus_load_events(struct sim_csus *c, const char *path, char *why, size_t whylen);
/** Registers /csu* routes. */
int sim_csus_routes(struct sim *sim);
/** Starts the generators (after the server listens); stop them before closing the loop. */
int sim_csus_start(struct sim_csus *c);
void sim_csus_stop(struct sim_csus *c);

/* ---------------------------------------------------------------------------------------------- */
/* dataverse.c                                                                                     */
/* ---------------------------------------------------------------------------------------------- */

int sim_dataverse_create(struct sim *sim, struct sim_dataverse **out);
void sim_dataverse_destroy(struct sim_dataverse *d);
/** Registers /dataverse/api/data/v9.2/... routes. */
int sim_dataverse_routes(struct sim *sim);

/** Custom API parameter types (customapirequestparameter.type, dynamics-api.md section 4.2). */
enum sim_param_type {
  SIM_PT_BOOLEAN = 0,
  SIM_PT_DATETIME = 1, /* an ISO-8601 string with a zone */
  SIM_PT_DECIMAL = 2,  /* a JSON number; a numeric string is not one */
  SIM_PT_ENTITY = 3,
  SIM_PT_ENTITYCOLLECTION = 4,
  SIM_PT_ENTITYREFERENCE = 5,
  SIM_PT_FLOAT = 6,
  SIM_PT_INTEGER = 7,
  SIM_PT_MONEY = 8,
  SIM_PT_PICKLIST = 9,
  SIM_PT_STRING = 10,
  SIM_PT_STRINGARRAY = 11,
  SIM_PT_GUID = 12,
};

/** One declared parameter of a custom-trigger action. */
struct sim_trigger_param {
  const char *name; /* uniquename, e.g. "msdynmkt_amountpaid" */
  enum sim_param_type type;
  bool optional; /* isoptional: may be absent or null */
};

/**
 * Registers (or replaces) the unbound action `name` with its parameter list (copied). The default
 * SIM_DEFAULT_TRIGGER is registered at create. -EINVAL on a bad name, -E2BIG over 29 parameters,
 * -ENOMEM.
 */
int sim_dataverse_register_trigger(struct sim_dataverse *d, const char *name,
                                   const struct sim_trigger_param *params, size_t n);

/** Counters for tests. */
struct sim_dataverse_stats {
  uint64_t contacts;              /* contacts stored */
  uint64_t contacts_created;      /* POST contacts that succeeded */
  uint64_t lookups;               /* GET contacts with $filter answered 200 */
  uint64_t triggers_accepted;     /* trigger calls answered 204 */
  uint64_t triggers_rejected;     /* trigger calls refused by validation (4xx) */
  uint64_t throttled_requests;    /* 429 0x80072322: over max_requests in the window */
  uint64_t throttled_concurrency; /* 429 0x80072326: over max_concurrent at arrival */
  unsigned inflight;              /* Dataverse requests arrived and not yet answered, now */
  unsigned inflight_max;          /* the most admitted requests ever in flight at once */
};
void sim_dataverse_stats(const struct sim_dataverse *d, struct sim_dataverse_stats *out);

#endif
