/* The cij sink's two files and what they share: cij.c (the sink's ops, the trigger call and its
 * body) and cij_contacts.c (the contact cache and the single-flight contact lookup and create).
 * Nothing outside these two files includes this header. */
#ifndef CSURELAY_SINKS_CIJ_INTERNAL_H
#define CSURELAY_SINKS_CIJ_INTERNAL_H

#include "csurelay/pipeline.h"
#include "csurelay/sink.h"

#define CIJ_ID_MAX    40     /* a contact id (a GUID, 36 characters) and its NUL */
#define CIJ_CACHE_MAX 100000 /* contact ids kept (LRU): about 12 MB at most */

struct sk__cij_cache;
struct cij_flight;

/* Where a delivery is. Every wait but the token's and the trigger's is on `step`. */
enum cij_state {
  CIJ_STEP,    /* waiting on `step`: a contact flight, a cache hit, or an outcome decided at once */
  CIJ_TOKEN,   /* waiting for a token for the trigger call */
  CIJ_TRIGGER, /* the trigger call is with the HTTP client */
};

/* One delivery: one allocation, linked into the sink's list of started deliveries. */
struct cij_req {
  struct cij_sink *s;
  struct sk_delivery *d;
  struct sk_event ev;            /* d->event with its documents as trees, for this delivery only */
  struct cij_req *prev, *next;   /* the sink's started deliveries */
  struct cij_req *wprev, *wnext; /* the waiters of `flight` (intrusive) */
  struct cij_flight *flight;     /* the contact flight waited on, or NULL */
  struct rx_fut step;
  struct pl_token_req tok;
  struct rx_http_req req;
  enum cij_state state;
  int started;   /* req is with the HTTP client */
  int cancelled; /* cancel() was called */
  int refreshed; /* the trigger call's one token refresh after a 401 is spent */
  int cached;    /* the contact id came from the cache, not from this delivery's flight */
  char contact[CIJ_ID_MAX];
  char *token; /* the token the trigger call carried, for pl_tokens_invalidate */
  char *body;  /* the trigger body */
  char *email; /* the chosen email, trimmed (in text) */
  char *key;   /* the email in lower case: the cache and flight key (in text) */
  char *url;   /* the trigger's URL (in text) */
  char text[];
};

struct cij_sink {
  struct sk_sink base;
  struct pl_tokens *tokens;    /* the identity's cache, owned by the environment */
  char *api;                   /* "{dataverse_url}api/data/v9.2/" */
  char *create_url;            /* "{api}contacts?$select=contactid" */
  struct csr_jw jw;            /* scratch for bodies; copied out before any wait */
  struct sk__cij_cache *cache; /* email (lower case) → contact id */
  struct cij_req *active;      /* started deliveries */
  struct cij_flight *flights;  /* contact lookups and creates in flight, one per email */
  unsigned failures;           /* transport and token failures in a row (readiness) */
  char last_failure[sizeof(((struct sk_delivery *)0)->reason)];
  uint64_t lookups, creates, cache_hits, refreshes; /* for the log and tests' reading */
  int closing;
  void (*close_cb)(struct sk_sink *sink);
  struct rx_fut close_fut;
};

/* ---------------------------------------------------------------------------------------------- */
/* cij.c: shared by both files */
/* ---------------------------------------------------------------------------------------------- */

/** The per-call timeout: the sink's timeout_ms, else limits.http_timeout_ms. */
long sk__cij_timeout(const struct cij_sink *s);

/**
 * Adds the Dataverse headers to `req`: Accept, OData-MaxVersion, OData-Version, Authorization with
 * `token`, and Content-Type when `body` is non-zero. 0, -ENOMEM, or -EINVAL for a token with a
 * control character.
 */
int sk__cij_headers(struct rx_http_req *req, const char *token, int body);

/** Fills `d` for a token request that ended with `result` (< 0): SK_RETRY, "token" or "cancelled".
 */
void sk__cij_token_failed(struct cij_sink *s, struct sk_delivery *d, int result);

/** Counts a call's transport result for readiness (`reason` names a failure). */
void sk__cij_note(struct cij_sink *s, int result, const char *reason);

/** Resolves the close once nothing is started and no flight is left. */
void sk__cij_maybe_closed(struct cij_sink *s);

/* ---------------------------------------------------------------------------------------------- */
/* cij_contacts.c */
/* ---------------------------------------------------------------------------------------------- */

/** An empty cache that keeps at most `max` ids, dropping the least recently used. */
int sk__cij_cache_create(size_t max, struct sk__cij_cache **out);
void sk__cij_cache_destroy(struct sk__cij_cache *c);
/** The id for `key`, or NULL; `touch` marks it recently used (encode() peeks without it). */
const char *sk__cij_cache_get(struct sk__cij_cache *c, const char *key, int touch);
/** Forgets `key` (a contact the trigger no longer knows). */
void sk__cij_cache_drop(struct sk__cij_cache *c, const char *key);
/** Entries now. */
size_t sk__cij_cache_size(const struct sk__cij_cache *c);

/**
 * Makes `r` wait for the contact of r->key: joins the flight for that email, or starts one (with
 * the names of r's event for a create). `r->step` must be armed: it resolves once the flight ends,
 * with r->contact filled, or with r->d's outcome filled as the flight failed. 0, or -ENOMEM (and
 * `r` is not waiting).
 */
int sk__cij_contact_wait(struct cij_sink *s, struct cij_req *r);

/** Unlinks a waiter from its flight (a cancel); the flight goes on and caches what it finds. */
void sk__cij_contact_leave(struct cij_req *r);

/** Cancels every flight (close); each ends later with "cancelled" for any waiter left. */
void sk__cij_flights_cancel(struct cij_sink *s);

#endif
