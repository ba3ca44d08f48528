/* csurelay pipeline — the durable state store and the token cache the stages stand on.
 *
 * The stages themselves (poll → admit → enrich → route → deliver → retry/dead-letter, SPEC §3)
 * build on these two services; their declarations join this header as they land (issue #4).
 */
#ifndef CSURELAY_PIPELINE_H
#define CSURELAY_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "csurelay/config.h"
#include "csurelay/error.h"
#include "csurelay/json.h"
#include "csurelay/reactor.h"

/* ---------------------------------------------------------------------------------------------- */
/* State store: memory + an append-only file (src/pipeline/store.c)                                */
/* ---------------------------------------------------------------------------------------------- */

/*
 * The store is a log of typed records. It does not interpret payloads: the pipeline encodes its
 * cursors, admissions, outcomes, retry schedules and dead letters, replays them on start, and hands
 * its live state back when the store compacts. What the store guarantees:
 *
 *  - Every record carries its length and a CRC-32C. A torn tail (a crash mid-write) is truncated on
 *    open and counted. A damaged record anywhere else is never skipped silently: open reports it
 *    (offset, bytes), keeps a copy of the damaged file beside it, replays every intact record around
 *    it (records carry a sync marker so the reader can find the next one), and the store stays
 *    unhealthy (stats.healthy == false, for /readyz) until the next compaction rewrites the file.
 *  - Group commit. Appends made during one loop turn are written together before the loop next
 *    blocks (a uv_prepare_t, as Redis flushes its AOF in beforeSleep). fsync follows the policy:
 *    always = every flush is fsynced before its appends complete; batch = one fsync per
 *    fsync_interval_ms covers everything written before it, appends complete after it; none =
 *    appends complete once written to the kernel. fsync runs on the libuv threadpool, never on the
 *    loop thread; writes never overlap a running fsync in a way that could reorder records.
 *  - Compaction without stopping the loop: when the file outgrows the live state (see opts), the
 *    store asks the owner to emit its live records (pl_store_dump_cb, on the loop thread, into
 *    memory), writes them to a new file off the loop thread while appends continue to the old file
 *    and are also queued for the new one, then appends that queue, fsyncs and renames the new file
 *    over the old one (and fsyncs the directory). A crash at any point leaves either the old or
 *    the new file complete.
 */

struct pl_store;

struct pl_store_opts {
  const char *dir;             /* created if missing; the file is {dir}/csurelay.aof */
  enum csr_fsync fsync;        /* always | batch | none */
  uint64_t fsync_interval_ms;  /* batch: at most this long between fsyncs (default 5) */
  uint64_t compact_min_bytes;  /* never compact below this file size (default 64 MiB) */
  double compact_ratio;        /* compact when file > ratio × size after the last rewrite (2.0) */
  size_t max_record_bytes;     /* larger appends are refused with UV_E2BIG (default 4 MiB) */
};

struct pl_store_stats {
  uint64_t file_bytes;        /* current size of the file */
  uint64_t records_replayed;  /* at open */
  uint64_t appends;           /* since open */
  uint64_t bytes_appended;
  uint64_t flushes;           /* write batches */
  uint64_t fsyncs;
  uint64_t fsync_last_us;     /* duration of the last fsync */
  uint64_t fsync_max_us;
  uint64_t fsync_total_us;    /* sum over all fsyncs (mean = total / fsyncs) */
  uint64_t torn_tails;        /* truncated at open (0 or 1 per open) */
  uint64_t torn_bytes;
  uint64_t corrupt_regions;   /* damaged regions skipped at open (reported, copy kept) */
  uint64_t corrupt_bytes;
  uint64_t compactions;
  uint64_t compact_failures;  /* rewrites abandoned (the old file stays the state) */
  uint64_t pending;           /* appends not yet durable */
  bool healthy;               /* false after corruption at open or a failed write/fsync */
  char health_reason[256];    /* why not healthy; "" when healthy */
  char compact_error[128];    /* why the last compaction failed; "" after a success */
};

/**
 * Called once per intact record, in file order, during pl_store_open or pl_store_read. Return < 0
 * to abort it.
 */
typedef int (*pl_replay_cb)(void *arg, uint8_t type, const void *payload, size_t len);

struct pl_store_emitter;
/** Emits one live record during a dump (copies it); < 0 on failure (the compaction is abandoned). */
CSR_NODISCARD int pl_store_emit(struct pl_store_emitter *e, uint8_t type, const void *payload,
                                size_t len);
/**
 * Emits the record a pl_rec_* or cs_rec_* encoder just wrote into `jw` (rc: the encoder's answer,
 * passed on when < 0) and resets `jw` for the next one, whatever happened.
 */
CSR_NODISCARD int pl_store_emit_jw(struct pl_store_emitter *e, uint8_t type, struct csr_jw *jw,
                                   int rc);
/**
 * The owner writes its whole live state through pl_store_emit; < 0 abandons the compaction. It runs
 * on the loop thread and must not call pl_store_append (records appended after it returns are kept
 * for the new file; the dump stands for everything appended before).
 */
typedef int (*pl_store_dump_cb)(void *arg, struct pl_store_emitter *e);

/**
 * Opens (or creates) the store in opts->dir and replays every intact record through `replay`
 * before returning (synchronously: the loop is not running yet). `dump` is used for compaction.
 * Damage is reported in *err's message and in stats, not as a failure, unless the file cannot be
 * read at all. Returns 0, or a negative error with `err` filled. *err is cleared first, so its
 * message is "" when the file was whole. CSR_ECORRUPT (a file that is not a csurelay AOF, left
 * untouched), the replay callback's own error, or a system error.
 *
 * One store per directory: open takes an exclusive flock(2) on {dir}/csurelay.lock (and writes
 * its pid there) before it touches anything, and holds it until the store is freed; the kernel
 * drops it if the process dies. A second open of the directory, from this process or another,
 * fails with UV_EBUSY and "state dir DIR is in use by another csurelay (pid N)" in *err.
 */
CSR_NODISCARD int pl_store_open(struct rx_loop *loop, const struct pl_store_opts *opts,
                                pl_replay_cb replay, pl_store_dump_cb dump, void *arg,
                                struct pl_store **out, struct csr_err *err);

/**
 * Replays every intact record of {dir}/csurelay.aof through `replay`, in file order, and changes
 * nothing: no lock, no directory or file created, a torn tail left as it is, no copy of a damaged
 * file. It works beside a running store (`csurelay state`): the relay only appends to the file or
 * renames a complete one over it, so what is read is a consistent prefix, and a record being
 * written counts as a torn tail. Synchronous, no loop.
 *
 * `stats` (may be NULL) is cleared, then gets file_bytes (the bytes read), records_replayed,
 * torn_tails/torn_bytes and corrupt_regions/corrupt_bytes counted as open would count them, and
 * healthy/health_reason as open would set them; the rest stays 0. *err (may be NULL) is cleared,
 * then describes any damage found, as for open. Returns 0 (an empty file replays nothing),
 * UV_ENOENT when there is no AOF (or no dir), CSR_ECORRUPT or UV_ENOTSUP for a file that is not a
 * csurelay AOF of this version, the replay callback's own error, UV_EINVAL, UV_ENOMEM or another
 * system error; with *err filled.
 */
CSR_NODISCARD int pl_store_read(const char *dir, pl_replay_cb replay, void *arg,
                                struct pl_store_stats *stats, struct csr_err *err);

/**
 * Appends a record (the payload is copied). If `durable` is not NULL it is armed with `cb` and
 * resolves once the record is durable per the fsync policy (0), or with the write/fsync error (the
 * store then turns unhealthy). Returns < 0 without arming the future when it refuses: UV_E2BIG
 * (over max_record_bytes), UV_ECANCELED (closing), UV_ENOMEM.
 */
CSR_NODISCARD int pl_store_append(struct pl_store *s, uint8_t type, const void *payload,
                                  size_t len, struct rx_fut *durable, rx_fut_cb cb);

/**
 * Starts a compaction now (tests, `csurelay state --compact` later): runs the dump callback at once,
 * then rewrites in the background. UV_EBUSY while one runs, UV_EINVAL without a dump callback,
 * UV_ECANCELED when closing, or the dump's own error. Also the way back to healthy after damage.
 */
CSR_NODISCARD int pl_store_compact(struct pl_store *s);

const struct pl_store_stats *pl_store_stats(const struct pl_store *s);

/**
 * Flushes and fsyncs whatever is pending (those futures complete), waits for a running compaction
 * to finish or abandons it cleanly, closes the file, and fires `cb` once the store is freed.
 */
void pl_store_close(struct pl_store *s, void (*cb)(void *arg), void *arg);

/* ---------------------------------------------------------------------------------------------- */
/* Token cache: OAuth2 client credentials per identity (src/pipeline/token.c)                      */
/* ---------------------------------------------------------------------------------------------- */

/*
 * One cache per identity (SPEC §3 "Tokens"): tokens are fetched from identity->token_url with the
 * client-credentials grant, cached until shortly before expiry, refreshed ahead of time, with one
 * refresh in flight at a time however many requests wait. `expires_in` may be a number or a numeric
 * string (v1 endpoints). A 401 from a resource invalidates the token it was sent with (once: a
 * stale token is not invalidated twice). Failures back off with jitter; 4xx answers with an OAuth
 * `error` are reported with their error code, never with the secret.
 */

struct pl_tokens;

struct pl_token_stats {
  uint64_t fetches;       /* token requests sent */
  uint64_t failures;      /* failed token requests */
  uint64_t waiters_max;   /* most requests waiting on one fetch */
  uint64_t invalidations; /* tokens dropped after a 401 */
  int64_t expires_at_ms;  /* wall clock expiry of the cached token, 0 when none */
  char last_error[256];   /* e.g. "invalid_client (AADSTS7000215)"; never the secret */
};

/** A request for a token; embed it where you need the token (an HTTP call's owner). */
struct pl_token_req {
  /* public */
  void *data;
  /* read-only, valid in the callback only (copy what you need) */
  struct rx_fut fut;   /* result: 0, or CSR_ESTATUS (token endpoint said no), transport errors,
                          UV_ECANCELED */
  const char *token;   /* the access token on success */
  /* private */
  struct pl_tokens *_cache; /* set while the request waits on the cache's list */
  struct pl_token_req *_next;
  struct pl_token_req *_prev;
  rx_fut_cb _cb;            /* the caller's callback (fut runs the cache's own first) */
  void *_tok;               /* the reference that keeps `token` alive until the callback returns */
};

CSR_NODISCARD int pl_tokens_create(struct rx_loop *loop, struct rx_http *http,
                                   const struct csr_identity *identity, struct pl_tokens **out);

/**
 * Gets a token: from the cache (the callback still fires from the loop, never synchronously), or
 * by joining/starting the one fetch in flight. -EINVAL on NULL arguments.
 *
 * Details (token.c): a token is served while more than its refresh margin remains (min(5 min, 10%
 * of its lifetime), at least 3 s, at most half the lifetime); inside the margin the cached token
 * is still served and one background refresh starts. With no usable token the request waits for
 * the fetch in flight, or, after a failed fetch, for the one that follows the jittered backoff
 * (500 ms doubling to 30 s, at least Retry-After): every waiter of a fetch gets its outcome. A
 * waiter has no deadline of its own; bound the wait with pl_tokens_cancel(). Results besides
 * fut's list: CSR_EPARSE when a 2xx answer holds no usable token or expires_in. `req` must not be
 * waiting already; it may be re-armed from its own callback. UV_ECANCELED once destroy began.
 */
CSR_NODISCARD int pl_tokens_get(struct pl_tokens *t, struct pl_token_req *req, rx_fut_cb cb);

/** Cancels a waiting request: it completes with UV_ECANCELED. Safe after completion (no-op). */
void pl_tokens_cancel(struct pl_token_req *req);

/** A resource answered 401 to `token`: drop it if it is still the cached one. */
void pl_tokens_invalidate(struct pl_tokens *t, const char *token);

const struct pl_token_stats *pl_tokens_stats(const struct pl_tokens *t);

/** Cancels waiters (UV_ECANCELED) and the fetch; `cb` fires once `t` is freed. */
void pl_tokens_destroy(struct pl_tokens *t, void (*cb)(void *arg), void *arg);

/* ---------------------------------------------------------------------------------------------- */
/* Enrich: the order and the customer of an event (src/pipeline/enrich.c)                         */
/* ---------------------------------------------------------------------------------------------- */

/*
 * The enrichment fetcher (SPEC §3 "Enrichment"): GETs a Checkout's SalesOrder and an event's
 * customer from the event's CSU and classifies the answer; the pipeline decides what to do next.
 *
 *   order     GET {csu.url}Commerce/SalesOrders/GetSalesOrderDetailsByTransactionId(
 *                 transactionId=@p1,searchLocationValue=1)?@p1='<cart id>'&api-version=7.3
 *   customer  GET {csu.url}Commerce/Customers('<customer id>')?api-version=7.3
 *
 * The id is an OData string literal: single quotes around it, every quote inside doubled, then
 * percent-encoded (everything but RFC 3986's unreserved characters), so `O'Neil` travels as
 * 'O%27%27Neil'. One '/' joins the CSU's URL and "Commerce" whether or not the URL ends in one.
 * Headers: OUN, Authorization: Bearer <token> (from the CSU identity's token cache), Accept.
 *
 * - Coalescing: identical concurrent GETs (same CSU, same URL) share one HTTP request and one
 *   document; a fetch that arrives while one is queued or in flight joins it.
 * - Customer cache: by (CSU, customer id), each entry for customer_ttl_ms, least recently used
 *   out first past cache_max_entries or cache_max_bytes (the documents' texts). Only
 *   OK answers are cached. Orders are never cached: a cart has one order, fetched once per
 *   Checkout, and coalescing covers concurrent duplicates.
 * - Per-CSU window: at most `window` GETs per CSU hold a slot (from the token request to the
 *   answer, a 401 retry included); further GETs wait in FIFO order. The window starts at 8 and
 *   adapts between min_in_flight and max_in_flight once per round (a window's worth of answers):
 *   it grows by an eighth (it doubles until a round first sees a queue) while a full window's
 *   shortest round trip stays near the shortest seen lately, shrinks by an eighth once even that
 *   one is longer by a queue's worth (TCP Vegas's rule), and halves on a 429 or 503. So a distant
 *   CSU gets the GETs its round trip needs, and one whose answers wait (at the CSU, or in this
 *   loop) gets fewer. The queue itself is not bounded here: it is bounded by the pipeline's
 *   live-event budget (limits.max_live_events), since each live event has at most one order and
 *   one customer fetch outstanding.
 * - Outcomes (every waiter of a GET gets the same one):
 *     PL_FETCH_OK         2xx with a JSON object: `doc`.
 *     PL_FETCH_NOT_FOUND  404 (Commerce's ObjectNotFound / CustomerNotFound). Not decided here:
 *                         an order missing right after its Checkout may be replication delay, so
 *                         the pipeline retries a few times before it gives up (and a guest's
 *                         customer is never asked for at all).
 *     PL_FETCH_RETRY      408, 429, 5xx, transport errors (reason "timeout", "reset", ...),
 *                         retry_after_ms from Retry-After; a 2xx that is not a JSON object
 *                         (reason "malformed": a truncated answer is transient); a token that
 *                         could not be had (reason "token", excerpt the token cache's error); a
 *                         second 401 in a row (reason "http_401").
 *     PL_FETCH_DEAD       any other 4xx (reason "http_<status>", excerpt the body's start).
 *   The rules are sk_classify_http's (sink.h), so fetches and deliveries are judged alike. A 401
 *   invalidates the token it was sent with and retries once inside the fetch, with a fresh one.
 * - Shared results: a document lives in a refcounted holder outside any arena. Each waiter that
 *   gets it holds a reference until pl_fetch_release(); the cache holds one while the entry
 *   lives. The document is freed when the last reference goes, even after pl_enrich_destroy().
 */

struct pl_enrich;
struct pl__enrich_doc;

struct pl_enrich_opts {
  uint64_t customer_ttl_ms; /* how long a customer stays cached; 0 = 300000 (5 min) */
  size_t cache_max_entries; /* customers cached at most; 0 = 50000 */
  size_t cache_max_bytes;   /* estimated bytes of the cached documents; 0 = 32 MiB */
  unsigned max_in_flight;   /* per CSU: the adaptive window's ceiling; 0 = 64 */
  unsigned min_in_flight;   /* per CSU: its floor; 0 = 4 (never above max_in_flight) */
  long timeout_ms;          /* per GET; 0 = the HTTP client's default */
};

enum pl_fetch_kind { PL_FETCH_ORDER, PL_FETCH_CUSTOMER };

enum pl_fetch_outcome { PL_FETCH_OK, PL_FETCH_NOT_FOUND, PL_FETCH_RETRY, PL_FETCH_DEAD };

/**
 * One fetch, embedded in the caller's memory (the event's). Zero it before the first use; it may be
 * re-armed from its own callback or after it. The callback finds it with RX_CONTAINER_OF(fut,
 * struct pl_fetch, fut).
 */
struct pl_fetch {
  /* public */
  void *data;
  /* read-only, set when the callback runs: fut.result is 0 when an outcome was decided (read
   * `outcome`), or UV_ECANCELED (pl_fetch_cancel, pl_enrich_destroy) and nothing else is set */
  struct rx_fut fut;
  const char *doc_json; /* PL_FETCH_OK: the document's text (a JSON object), until release */
  size_t doc_json_len;
  enum pl_fetch_outcome outcome;
  int status;             /* HTTP status of the answer, 0 when none */
  int64_t retry_after_ms; /* from Retry-After, -1 when absent */
  /* "" on OK; "http_404", "http_429", "timeout", "malformed", ... Like excerpt, valid until the
   * fetch is armed again or released (an event holds two fetches for as long as it lives: error
   * texts are held only when there is an error) */
  const char *reason;
  const char *excerpt; /* the start of the error body or message, valid UTF-8; "" when none */
  /* private */
  void *_flight; /* the GET it waits on, NULL when not waiting */
  struct pl_fetch *_prev, *_next;
  struct pl__enrich_doc *_doc; /* the reference behind `doc` */
  char *_texts;                /* reason and excerpt, NULL when both are "" */
};

/** Counters and gauges for /metrics (all CSUs). */
struct pl_enrich_stats {
  uint64_t fetches;         /* fetches accepted (order + customer) */
  uint64_t requests;        /* HTTP GETs sent (a 401 retry is a second one) */
  uint64_t coalesced;       /* fetches that joined a GET already queued or in flight */
  uint64_t cache_hits;      /* customer fetches answered from the cache */
  uint64_t cache_misses;    /* customer fetches that were not (expired ones included) */
  uint64_t cache_expired;   /* entries dropped at lookup because their TTL had passed */
  uint64_t cache_evictions; /* entries dropped for room (entries or bytes) */
  uint64_t token_refreshes; /* 401s answered by invalidating the token and retrying once */
  uint64_t doc_bytes;       /* bytes of the documents answered (cache hits add none) */
  /* fetch completions by outcome */
  uint64_t ok, not_found, retry, dead, cancelled;
  uint64_t in_flight;     /* gauge: GETs holding a slot, all CSUs */
  uint64_t queued;        /* gauge: GETs waiting for a slot */
  uint64_t cache_entries; /* gauge */
  uint64_t cache_bytes;   /* gauge: estimated size of the cached documents */
};

/** One CSU's share, for the per-CSU /metrics lines and for tests. */
struct pl_enrich_csu_stats {
  uint64_t requests;      /* HTTP GETs sent to this CSU */
  unsigned in_flight;     /* GETs holding a slot now */
  unsigned in_flight_max; /* the most ever held at once (never above max_in_flight) */
  unsigned window;        /* slots now: the adaptive window, min_in_flight..max_in_flight */
  unsigned queued;        /* GETs waiting for a slot now */
};

/**
 * Creates the fetcher for `csus` (copied: name, url, oun and identity name; the array need not
 * outlive the call). `tokens(tokens_arg, identity_name)` gives the token cache of a CSU's identity
 * when a GET needs a token (NULL when unknown: that GET ends PL_FETCH_DEAD, reason "no_identity");
 * it is the shape of sk_env.tokens. `http` and the caches it returns must outlive the fetcher.
 * `opts` may be NULL for the defaults. -EINVAL on a NULL argument or no CSUs, -ENOMEM.
 */
CSR_NODISCARD int pl_enrich_create(struct rx_loop *loop, struct rx_http *http,
                                   const struct csr_csu *csus, size_t n_csus,
                                   struct pl_tokens *(*tokens)(void *arg, const char *identity),
                                   void *tokens_arg, const struct pl_enrich_opts *opts,
                                   struct pl_enrich **out);

/**
 * Fetches the SalesOrder of cart `cart_id` (EventTransactionId) from `csu`, one of the CSUs given
 * at create (matched by name, so a reloaded config's struct works too). `cb` fires exactly once,
 * from the loop, with req->fut. Returns < 0 without calling `cb`: -EINVAL (NULL or empty id, an
 * id over 512 bytes, an unknown CSU), -EBUSY (req is still pending), -ECANCELED (destroy began),
 * -ENOMEM. A result `req` still held from its last use is released first.
 */
CSR_NODISCARD int pl_enrich_order(struct pl_enrich *e, const struct csr_csu *csu,
                                  const char *cart_id, struct pl_fetch *req, rx_fut_cb cb);

/**
 * Fetches customer `customer_id` (EventCustomerId, an AccountNumber) from `csu`: from the cache
 * when a live entry holds it (the callback still fires from the loop, never synchronously), else
 * by joining or starting the GET. Guests have no customer: an empty id is -EINVAL, so
 * Customers('') is never requested; skip the fetch for them. Errors as pl_enrich_order().
 */
CSR_NODISCARD int pl_enrich_customer(struct pl_enrich *e, const struct csr_csu *csu,
                                     const char *customer_id, struct pl_fetch *req, rx_fut_cb cb);

/**
 * Stops waiting: req completes with UV_ECANCELED (later, from the loop). The GET goes on for the
 * other waiters; the last one to leave cancels it. A fetch whose outcome was already decided (a
 * cache hit, a GET that just answered) completes with that outcome instead, and its result is
 * released as usual. No-op when req is not pending.
 */
void pl_fetch_cancel(struct pl_fetch *req);

/**
 * Drops req's reference to its document (doc_json becomes NULL), and its error texts (reason and
 * excerpt become ""); the document is freed when nobody else holds it and the cache does not. Safe
 * on any completed req, any number of times, and after pl_enrich_destroy().
 */
void pl_fetch_release(struct pl_fetch *req);

/**
 * Writes the URL of a fetch into buf (NUL-terminated): the exact text pl_enrich_order() or
 * pl_enrich_customer() would GET. Returns its length, -EINVAL (NULL arguments, an empty id) or
 * -E2BIG (buf too small).
 */
CSR_NODISCARD int pl_enrich_url(const char *csu_url, enum pl_fetch_kind kind, const char *id,
                                char *buf, size_t len);

const struct pl_enrich_stats *pl_enrich_stats(const struct pl_enrich *e);

/** The per-CSU share of `csu` (by name), or NULL when it is not one of the fetcher's. */
const struct pl_enrich_csu_stats *pl_enrich_csu_stats(const struct pl_enrich *e,
                                                      const struct csr_csu *csu);

/**
 * Completes every waiting fetch with UV_ECANCELED, cancels the GETs and token requests in flight,
 * empties the cache, and fires `cb` (may be NULL) from the loop once `e` is freed. Documents still
 * held by callers stay valid until released. A second call is ignored.
 */
void pl_enrich_destroy(struct pl_enrich *e, void (*cb)(void *arg), void *arg);

/* ---------------------------------------------------------------------------------------------- */
/* Poll stage: Search paging per (CSU, event type) (src/pipeline/poll.c, poll_window.c)            */
/* ---------------------------------------------------------------------------------------------- */

/*
 * The poll stage reads every CSU's events with CommerceEventsController/Search (reference §1.2-1.4)
 * and hands them to the admitter page by page. It runs one lane per (CSU, event type), since a
 * Search takes one type. It owns no event: admission and dedupe belong to the admitter, because the
 * overlap, the sweep and the paging below all re-read events on purpose. What it guarantees: once
 * a window completes, every row of it committed before the window's first Search has been on a
 * page the admitter answered with success. Rows committed later are the overlap's and the sweep's.
 *
 *   POST {csu.url}Commerce/CommerceEventsController/Search?$top=N&$skip=M&api-version=7.3
 *   OUN, Authorization: Bearer <token> (the CSU identity's cache), Content-Type: application/json
 *   {"commerceEventSearchCriteria":{"EventType":T,"EventDateTimeFrom":F,"EventDateTimeTo":To}}
 *   (dates as yyyy-MM-ddTHH:mm:ssZ; the CSU keeps rows with From < EventDateTime <= To, both
 *   truncated to whole seconds)
 *
 * Windows (SPEC §3):
 *  - Every poll_interval_ms a lane searches From = cursor - overlap_s, To = now - settle_ms, both
 *    rounded down to whole seconds, in two windows: the regular window (cursor, To] and the
 *    overlap window (cursor - overlap_s, cursor], which re-reads what earlier windows read, for
 *    late commits. Each cursor gets one overlap window, begun once with the regular window; one
 *    that fails is not redone (the next re-reads all but its oldest second), and while one still
 *    pages the next regular window starts without another. The ticks are aligned just past the
 *    whole seconds of now - settle_ms (a tick moves back to the boundary it would pass), since a
 *    window can only hold an event once its second has ended: an event waits at most about
 *    poll_interval_ms. A lane with no cursor from pl_poll_set_cursor() starts at csu.start_from
 *    without the overlap. A regular window starts only when its To is past the cursor and past
 *    every earlier window's To on the lane, so To <= From never happens.
 *  - New rows first. A lane has one page outstanding at a time. A regular window's pages go first;
 *    the re-reads (overlap, sweep) hold theirs back until half a poll interval after the regular
 *    window began, when that second's rows are mostly admitted and delivered. At 5,000 ev/s on 32
 *    lanes (overlap_s 3, sweep_s 60) the re-read rows were seven times the new ones, and each new
 *    second's rows waited behind them.
 *  - The cursor moves only over rows on regular windows' pages the admitter answered with 0. It
 *    moves to To when a window completes. Inside a long window it also moves each time the paging
 *    passes a whole second, so a backlog moves it as it goes. ops->on_cursor reports every move;
 *    while an overlap window still reads behind the cursor it reports that window's To instead,
 *    and nothing while a sweep runs (see report_cursor in poll.c).
 *  - The sweep (csu.sweep_s > 0) is due every sweep_every_s (counted from the last due time, not
 *    from when the last sweep began) as one window over (due - sweep_s, To of the lane's last
 *    regular window]: what came after, the regular windows read. From is never below the reported
 *    cursor - sweep_s. It is paged the same way and leaves the cursor alone; while an overlap
 *    window also runs, the two take pages in turn. Each sweep needs a To it has not swept to
 *    before, so one begun again (for the same due time) after a failed page waits for the next
 *    regular window.
 *    Lane i of n sweeps first (i + 1) / n of sweep_every_s after the start, so the lanes' sweeps
 *    are spread over the period instead of reading sweep_s of rows each at the same moment.
 *  - ops->full() is asked before each Search with the rows the Searches in flight and this one may
 *    bring: a page is admitted whole, so the room must be there before its Search starts.
 *
 * Paging without loss. ORDER BY EventDateTime has no tiebreaker, so $skip paging can skip or
 * repeat rows of equal time across a page boundary (W-C4). Instead:
 *  - Keyset: the lane reads (From, To] with $top = page_size and $skip 0, and a short page ends
 *    the window. A full page holds every row earlier than its latest time t. The next Search is
 *    (floor_s(t - 1 ms), To], again with $skip 0. Because From is exclusive at whole seconds, this
 *    reads t's whole second again (the admitter drops the repeats). A row at a page boundary is
 *    therefore always read by a query that starts before its second.
 *  - Dense second: a full page that lies inside one second (From, From + 1 s] gives the keyset
 *    nowhere to go. The lane then reads (From, To] with $skip, in passes. A pass ends at a short
 *    page or at a page holding a row after the second. Every page of a pass but the last is full
 *    of the second's rows, so the pass's count of such rows is the second's size when the pass
 *    ended. The lane collects their ids (as 64-bit hashes) across passes. Once it has seen as many
 *    distinct ids as the last pass counted, every row of the second has been on a page, and the
 *    keyset resumes at From + 1 s. Pass p uses $top = wide_top - p, skipping page_size, so pass 0
 *    reads a second of fewer than wide_top rows in one consistent page (such a page goes to the
 *    admitter like any other; it may hold up to wide_top rows). A second that is still incomplete
 *    after max_passes passes fails the window, which is retried later. The bound: each pass costs
 *    ceil(rows of the second / $top) Searches. If each query orders the ties afresh at random, one
 *    pass misses a given row with a probability below 1/e, so 32 passes miss it below 1e-13.
 *  - Stale cache. The CSU caches non-empty pages for 1 h under (From, To, $top, $skip) (W-C3).
 *    Every regular window of a lane gets a To later than all its earlier windows, and From only
 *    grows within a window. The re-reads take an earlier window's To: an overlap window's From
 *    (cursor - overlap_s) is new with each cursor, a sweep's To is new with each sweep, and each
 *    kind pages with a keyset $top of its own (page_size, page_size - 1, page_size - 2; above it
 *    when page_size is under 3). Dense passes count down from the wide top, each kind of window
 *    taking every third $top, and skip the three keyset ones. So the lane never sends the same
 *    query twice, and a cached answer is always the first answer to that query. A restart within
 *    the same second as the last window could repeat one query; the overlap absorbs that.
 *
 * Errors. A Search fails on a 429, a 5xx or any other non-2xx, a timeout or transport error, a
 * token that cannot be had, or a page that does not parse. A page does not parse when it is not
 * JSON, its `value` is not an array, or a row lacks a string EventDataAreaId, EventType or
 * EventTransactionId or a valid EventDateTime, or falls outside the window. A failed Search is
 * logged with the CSU and a reason, and counted. Every lane of that CSU then waits out a jittered
 * exponential backoff (at least Retry-After) while other CSUs carry on, and the window starts
 * again from its start. A 401 invalidates the token it carried and the Search is retried once
 * with a fresh one. A page the admitter fails (< 0) restarts its window after a backoff of that
 * lane alone.
 *
 * Bounds and fairness. At most max_searches Searches are in flight over all CSUs, from the token
 * wait to the answer. They start round-robin over CSUs (then over a CSU's types), so a busy CSU
 * gets one turn in each round like the others. A lane has at most one page outstanding, either in
 * flight or held by the admitter. No Search starts while ops->full() says the admitter is full.
 * No callback ever runs inside the call that caused it.
 */

struct pl_poll;

struct pl_poll_opts {
  unsigned max_searches;    /* Searches in flight over every CSU; 0 = 4 */
  long timeout_ms;          /* per Search; 0 = the HTTP client's default */
  unsigned wide_top;        /* $top of a dense second's first pass; 0 = 1000; page_size at least */
  unsigned max_passes;      /* dense passes before the window fails; 0 = 32 */
  uint64_t backoff_base_ms; /* a failing CSU waits a draw from [0, min(cap, base * 2^n)]; 0 = 500 */
  uint64_t backoff_cap_ms;  /* 0 = 30000 */
  uint64_t seed;            /* the jitter generator; 0 = from the clock */
};

/** One row of a page. */
struct pl_poll_event {
  const char *id;  /* SPEC §3: csu|EventDataAreaId|EventType|EventTransactionId|EventDateTime,
                      each field exactly as the CSU sent it */
  int64_t time_ms; /* EventDateTime, ms since the epoch */
  const char *row_json; /* the event object's text exactly as received (valid JSON) */
  size_t row_len;
};

/** A non-empty page for the admitter; everything in it is valid until pl_poll_page_done(). */
struct pl_poll_page {
  /* read-only */
  const struct csr_csu *csu;
  const char *type;       /* the lane's event type, as configured */
  bool sweep;             /* read by a sweep (the cursor does not move for it) */
  int64_t from_ms, to_ms; /* the Search's window: From < time <= To, whole seconds */
  size_t n;               /* rows, at least 1 */
  const struct pl_poll_event *events;
  /* private */
  void *_lane;
};

/** The admitter's side. `arg` is the one given to pl_poll_create(). */
struct pl_poll_ops {
  /**
   * A page of events. Answer it with pl_poll_page_done() once every event in it is durably
   * admitted or known to be a duplicate (0), or has failed (< 0). Answering from inside on_page is
   * fine. The lane's next page waits for the answer.
   */
  void (*on_page)(void *arg, struct pl_poll_page *page);
  /** Non-zero when downstream is full: no new Search starts. Asked before each Search with the
   * rows it and the Searches still in flight may bring at most (the sum of their $top): a page
   * is admitted whole, so room is needed before its Search starts. May be NULL (never full). */
  int (*full)(void *arg, uint64_t rows_coming);
  /**
   * Every event of (csu, type) up to cursor_ms has been admitted: write the cursor record. It
   * only ever grows, and may be written lazily, because the overlap covers a cursor lost in a
   * crash. May be NULL.
   */
  void (*on_cursor)(void *arg, const struct csr_csu *csu, const char *type, int64_t cursor_ms);
};

/** The token cache for a CSU's identity (asked once per CSU, at create). */
typedef struct pl_tokens *(*pl_poll_tokens_fn)(void *arg, const struct csr_csu *csu);

/** One lane's numbers, for /metrics and /v1/status. */
struct pl_poll_stats {
  const char *csu;          /* the CSU's name */
  const char *type;         /* the event type */
  uint64_t searches;        /* Search requests answered or failed (a 401 retry counts twice) */
  uint64_t pages;           /* non-empty pages handed to on_page */
  uint64_t events;          /* rows handed over, repeats included */
  uint64_t errors;          /* failed Searches and incomplete dense seconds */
  uint64_t unauthorized;    /* 401 answers */
  uint64_t admit_failures;  /* pages answered < 0 */
  uint64_t windows;         /* regular windows completed */
  uint64_t sweeps;          /* sweep windows completed */
  uint64_t overlaps;        /* overlap re-reads completed (see the window rules above) */
  uint64_t dense_seconds;   /* seconds that needed $skip passes */
  uint64_t dense_passes;    /* those passes */
  int64_t cursor_ms;        /* the cursor (start_from until the first window completes) */
  double cursor_lag_s;      /* wall clock now - cursor */
  bool backing_off;         /* the CSU or this lane waits out a backoff */
  uint64_t backoff_left_ms; /* until it ends */
  unsigned csu_failures;    /* the CSU's failed Searches in a row */
  char last_error[160];     /* "" until the first error; never a token */
};

/**
 * Creates the stage for csus[0..n_csus), one lane per configured event type. The caller keeps the
 * loop, the HTTP client, `csus` and `ops` alive until the stop callback. `tokens` is asked for each
 * CSU's token cache here. `opts` may be NULL for the defaults. Nothing runs before pl_poll_start().
 * Returns 0, UV_EINVAL (a NULL argument, no CSU, a CSU without event types or without a token
 * cache) or UV_ENOMEM.
 */
CSR_NODISCARD int pl_poll_create(struct rx_loop *loop, struct rx_http *http,
                                 const struct csr_csu *csus, size_t n_csus,
                                 pl_poll_tokens_fn tokens, void *tokens_arg,
                                 const struct pl_poll_opts *opts, const struct pl_poll_ops *ops,
                                 void *arg, struct pl_poll **out);

/**
 * Sets the cursor of (csu_name, type) from the store's replay, before pl_poll_start(). The lane
 * then starts at cursor_ms - overlap_s instead of start_from. A later call for the same lane keeps
 * the larger value. Returns 0, UV_ENOENT (no such lane), or UV_EBUSY once started.
 */
CSR_NODISCARD int pl_poll_set_cursor(struct pl_poll *p, const char *csu_name, const char *type,
                                     int64_t cursor_ms);

/** Starts polling (the first Searches go out from the loop). 0, UV_EALREADY or UV_ECANCELED. */
CSR_NODISCARD int pl_poll_start(struct pl_poll *p);

/**
 * The admitter's answer to a page: 0 when every event in it is admitted or a known duplicate,
 * < 0 when it failed. A failed page leaves the cursor where it was, and its window is read again
 * later. The page and its rows are gone once this returns. Call it exactly once per page. The
 * stage reacts from the loop, never inside this call.
 */
void pl_poll_page_done(struct pl_poll_page *page, int result);

/** The admitter has room again: pending Searches start from the loop without waiting for a tick. */
void pl_poll_resume(struct pl_poll *p);

/** The number of lanes, and one lane's numbers (i < pl_poll_lanes()); UV_EINVAL past the end. */
size_t pl_poll_lanes(const struct pl_poll *p);
CSR_NODISCARD int pl_poll_stats(const struct pl_poll *p, size_t i, struct pl_poll_stats *out);

/**
 * Stops polling. Searches and token waits in flight are cancelled and the timers close. No ops
 * callback runs once this is called. Pages the admitter still holds must still be answered with
 * pl_poll_page_done(), and their results are ignored. `cb` (may be NULL) fires from the loop once
 * all of that is done and `p` is freed. A second call is ignored.
 */
void pl_poll_stop(struct pl_poll *p, void (*cb)(void *arg), void *arg);

/* ---------------------------------------------------------------------------------------------- */
/* Retry scheduler: one per sink (src/pipeline/retry.c)                                            */
/* ---------------------------------------------------------------------------------------------- */

#include "csurelay/sink.h" /* struct sk_delivery, struct sk_sink */

/*
 * The engine side of SPEC §3 "Retries" (STYLE §5: sinks classify, the scheduler owns the timing).
 * One scheduler drives one sink; schedulers share nothing, so a stuck sink never holds up another.
 *
 * Items. A `struct pl_sched_item` lives in the caller's memory (the event's arena), zeroed before
 * its first use. The caller sets item->d.event and item->d.conf (and may use item->data and
 * item->d.data), then submits it. The scheduler owns d.done and d.attempt while it is submitted.
 *
 * Flow. A submitted item is either queued (ready: a min-heap on its event's time, so the oldest
 * event goes first and each second's burst from polling is worked oldest-first), waiting (a
 * min-heap on its due time, so
 * adding, cancelling and expiring are O(log n) and tens of thousands of waiting items cost one
 * pointer each and no scan), or in flight. One rx_timer per scheduler is armed to the earliest of:
 * the heap's first due time, the end of a pause, the next rate token. A delivery starts only when
 *  - the sink has fewer than min(conf->max_in_flight, window) deliveries in flight;
 *  - the rate allows it: conf->rate_per_s > 0 is a token bucket refilled continuously at that rate
 *    with a burst of max(1, rate_per_s / 10) tokens (a tenth of a second's worth), starting full;
 *  - the sink is not paused (below).
 *
 * Outcomes of an attempt:
 *  - SK_DELIVERED, SK_SKIPPED, SK_DEAD: final at once (a permanent 4xx goes to the dead-letter
 *    queue with its own status, reason and excerpt); ops->on_final.
 *  - SK_RETRY: if this was attempt max_attempts, final SK_DEAD with reason "max_attempts: <last
 *    reason>" (status and excerpt of the last answer kept). Otherwise the next attempt waits
 *    max(retry_after_ms, full-jitter backoff) with the backoff a uniform draw from
 *    [0, min(cap_ms, base_ms * 2^(attempt - 1))] (rx_backoff_ms), and ops->on_attempt reports the
 *    new schedule (item->attempt is the next attempt's number, item->next_wall_ms its earliest
 *    start).
 *    A start that sk_deliver refuses with an error other than CSR_ELIMIT or -ECANCELED counts as a
 *    failed attempt (reason "start", excerpt the error's name); CSR_ELIMIT (the sink's slots are
 *    held elsewhere) is asked again shortly; -ECANCELED (the sink is closing) hands the item back
 *    through on_cancelled.
 *
 * Throttling (Dataverse's rule, reference §3.8). An answer of 429, or a 503 with Retry-After,
 * pauses the whole sink: no delivery starts until the pause ends; those in flight finish normally.
 * The pause lasts Retry-After (base_ms without one). If a delivery started after the pause began is
 * throttled again, the next pause doubles (up to cap_ms, never below its Retry-After); throttled
 * answers to deliveries that were already in flight only extend the pause to their own
 * Retry-After. After a pause the in-flight window restarts at 1 and grows by one for each answer
 * that is not throttled, back to max_in_flight; a non-throttled answer also ends the doubling.
 * Together with the per-item jitter this keeps a recovering sink from a retry storm: items that
 * came due during an outage start at most `window` at a time, spread by their own draws.
 *
 * Nothing is synchronous: no callback runs inside the call that caused it, and no callback runs
 * before pl_sched_submit returns. Callbacks may submit, cancel and close freely.
 *
 * Cancel and close: every submitted item comes back exactly once, through ops->on_final (it has a
 * final outcome) or ops->on_cancelled (it has none: it stays admitted and, after a restart, replays
 * from the AOF with the schedule the pipeline recorded). A queued or waiting item that is
 * cancelled comes back through on_cancelled from the loop. An in-flight one has its delivery
 * cancelled through the sink; if the answer had already arrived and is final, on_final reports it
 * (the receiver has it), otherwise on_cancelled does. Only after its callback may the item be
 * freed or submitted again.
 */

struct pl_sched;
struct pl_sched_item;

struct pl_sched_opts {
  uint64_t base_ms;      /* retry.base_ms; 0 = 1000 */
  uint64_t cap_ms;       /* retry.cap_ms; 0 = 300000 */
  unsigned max_attempts; /* retry.max_attempts; 0 = 10 */
  uint64_t seed;         /* the jitter generator; 0 = from the clock */
};

struct pl_sched_ops {
  /**
   * The item has a final outcome (item->outcome == item->d->outcome: SK_DELIVERED, SK_SKIPPED or
   * SK_DEAD, with d->status, d->reason and d->excerpt). Required. The item is the caller's again.
   */
  void (*on_final)(void *arg, struct pl_sched_item *item);
  /**
   * An attempt ended with SK_RETRY and the item waits for attempt item->attempt, not before
   * item->next_wall_ms (record it in the store). d holds the failed attempt's answer. May be NULL.
   * (item->d is valid only during these callbacks: the scheduler lends it for one attempt.)
   */
  void (*on_attempt)(void *arg, struct pl_sched_item *item);
  /**
   * The item was cancelled (pl_sched_cancel or pl_sched_close) without a final outcome; it is the
   * caller's again. May be NULL only if the caller tracks its items by other means.
   */
  void (*on_cancelled)(void *arg, struct pl_sched_item *item);
};

struct pl_sched_item {
  /* public: set before submit */
  void *data;
  const struct sk_event *event;         /* what the sink delivers */
  const struct csr_delivery_conf *conf; /* the route's deliver entry, or NULL */
  void *delivery_data;                  /* each attempt's sk_delivery.data */
  /* read-only */
  unsigned attempt;        /* next attempt when queued/waiting, current in flight, last if final */
  int64_t next_wall_ms;    /* earliest start of the next attempt (wall clock), 0 when none */
  uint64_t started_ms;     /* when the current or last attempt started (loop time), 0 before */
  enum sk_outcome outcome; /* the final outcome, valid in on_final */
  /* The attempt's delivery (its answer: outcome, status, reason, excerpt) while in flight and
   * during on_final, on_attempt and on_cancelled; lent by the scheduler, not valid after them.
   * An item spends most of its life queued or waiting, and the answer's texts are 320 bytes:
   * lending them per attempt keeps ~10 MB off the heap at 10,000 ev/s. */
  struct sk_delivery *d;
  /* private */
  struct pl_sched *_s;
  struct pl_sched_item *_prev, *_next; /* the queue, the in-flight list or the cancelled list */
  uint64_t _due_ms;                    /* loop time, while waiting */
  uint64_t _seq;                       /* ties (due time, event time) keep arrival order */
  size_t _heap_idx;
  unsigned _state;
  int _cancel;
};

struct pl_sched_stats {
  uint64_t queued;    /* ready, waiting for a slot, a token or the end of a pause */
  uint64_t waiting;   /* in backoff, or submitted for a later time */
  uint64_t in_flight; /* deliveries of this scheduler in flight */
  uint64_t delivered; /* final outcomes ... */
  uint64_t skipped;
  uint64_t dead;           /* ... max_attempts exhausted included */
  uint64_t retried;        /* attempts that failed transiently (cancels not counted) */
  uint64_t cancelled;      /* items handed back through on_cancelled */
  uint64_t pauses;         /* sink-wide pauses begun */
  int64_t paused_until_ms; /* wall clock end of the current pause, 0 when not paused */
  unsigned window;         /* the current in-flight window (max_in_flight when not ramping) */
  uint64_t loans;          /* deliveries allocated for attempts, lent or pooled: about the window */
};

/**
 * Creates a scheduler for `sink` (which the caller keeps open until the close callback). `opts`
 * may be NULL for the defaults; `ops` is copied, `ops->on_final` is required. Returns 0,
 * UV_EINVAL or UV_ENOMEM.
 */
CSR_NODISCARD int pl_sched_create(struct rx_loop *loop, struct sk_sink *sink,
                                  const struct pl_sched_opts *opts, const struct pl_sched_ops *ops,
                                  void *arg, struct pl_sched **out);

/**
 * Submits attempt 1 now: the item joins the back of the queue. UV_EINVAL without item->event,
 * UV_EBUSY when the item is already submitted, UV_ECANCELED once closing.
 */
CSR_NODISCARD int pl_sched_submit(struct pl_sched *s, struct pl_sched_item *item);

/**
 * Submits an item replayed from the store: attempt `attempt` (>= 1), not before the wall-clock
 * time `not_before_wall_ms` (a past time queues it now). Errors as pl_sched_submit.
 */
CSR_NODISCARD int pl_sched_submit_at(struct pl_sched *s, struct pl_sched_item *item,
                                     unsigned attempt, int64_t not_before_wall_ms);

/** Cancels a submitted item (see the contract above); a no-op for an item not submitted. */
void pl_sched_cancel(struct pl_sched_item *item);

void pl_sched_stats(const struct pl_sched *s, struct pl_sched_stats *out);

/**
 * Cancels every item (each comes back once, as above), stops the timer and frees `s`; `cb` (may be
 * NULL) fires from the loop after every item's callback. The sink is left open. A second call is
 * ignored. To drain instead, wait until stats.queued + waiting + in_flight is 0 first.
 */
void pl_sched_close(struct pl_sched *s, void (*cb)(void *arg), void *arg);

/* ---------------------------------------------------------------------------------------------- */
/* State model: what the store's records mean (src/pipeline/state.c, records.c)                    */
/* ---------------------------------------------------------------------------------------------- */

/*
 * The pipeline's durable state in memory, rebuilt from the store's records (SPEC §3). Pure logic:
 * no I/O, no loop, no clock. Every mutation is a record: the pipeline encodes one (pl_rec_*),
 * appends it (pl_store_append), then applies it (pl_state_apply), and replay applies the same
 * records on open; so a mutation has exactly one code path.
 *
 * Records (the store's u8 type; the payload is compact JSON so `csurelay state` and humans can
 * read it; times are ms since the epoch; "reason"/"excerpt" may be absent or null):
 *   CURSOR      {csu, type, cursor_ms}            cursor of (csu, type); a smaller value is ignored
 *   ADMIT       {id, csu, type, time_ms, admitted_ms, sinks: [names], event: {the row}}
 *               the route's sinks are fixed at admission; the row keeps its numbers' text
 *   ATTEMPT     {id, sink, attempt, next_ms, status, reason, excerpt}
 *               a transient failure: the delivery waits for attempt `attempt` (the next one,
 *               >= 2) not before next_ms (pl_sched_item's attempt / next_wall_ms)
 *   OUTCOME     {id, sink, outcome: "delivered"|"skipped"|"dead", attempts, status, reason,
 *               excerpt, at_ms}
 *   DLQ_REPLAY  {id, sink, at_ms}  a dead delivery goes back to pending (attempt 1, error cleared)
 *   DLQ_DELETE  {id, sink}         the dead letter is dropped (the delivery stays final)
 *   SEEN        {h, csu, type, time_ms}   a finished event remembered for dedupe (dumps only):
 *               h is its id's 128-bit hash as 32 lowercase hex digits (the text of a finished
 *               id is not kept). Files written before hold {id, csu, type, time_ms} instead;
 *               both forms apply (id is hashed), a record with both or neither is CSR_EPARSE.
 *   SEEN carries the type too: the horizon is measured from the (csu, type) cursor.
 *
 * Model. Every admitted id is in the dedupe set, live or finished. A live entry (admitted, not
 * finished; a hash table by id) holds its row as compact JSON text and one delivery per sink:
 * PENDING (attempt 1, or the attempt after a DLQ replay), WAITING (a failed attempt, the next
 * due at next_ms), DELIVERED, SKIPPED, DEAD (in the dead-letter queue, row kept) or DELETED (a
 * dead letter removed by DLQ_DELETE). An event is finished when no delivery is PENDING, WAITING
 * or DEAD: its entry is freed at once and the dedupe set keeps only a 128-bit hash of the id
 * (SipHash-2-4-128 under a fixed key), its time and its (csu, type), 50-65 bytes, until
 * pl_state_expire drops it. A new id whose hash equals a remembered one's would be taken for a
 * duplicate; at n ids remembered that chance is about n / 2^128 per id (3e-32 at 10^7), which is
 * why the hash has 128 bits (state_internal.h). An ADMIT with no sinks finishes at once.
 *
 * Expiry (SPEC §3 "Dedupe set"): a finished id of (csu, type) is dropped once its time is below
 * cursor(csu, type) - horizon(csu), horizon = max(overlap_s, sweep_s). Live ids never expire;
 * a live id below the horizon goes when it finishes and pl_state_expire runs again. Finished ids
 * sit in a min-heap per (csu, type) on their time, so expiry costs O(log n) per dropped id.
 *
 * Errors of pl_state_apply (nothing changes when it fails; pl_state_error() has a message naming
 * the record type, and the field or the id):
 *   UV_EEXIST     ADMIT of an id already in the dedupe set. Possible on replay without damage: an
 *                 id that expired at run time (expiry is not logged) may be admitted again by a
 *                 sweep, and the replay has not expired the first one; pl_state_replay skips it.
 *   UV_EALREADY   ATTEMPT or OUTCOME for a delivery that already has a final outcome.
 *   UV_ENOENT     DLQ_REPLAY or DLQ_DELETE for a delivery that is not dead.
 *   CSR_EPARSE    malformed JSON, a missing field or one of the wrong type or range.
 *   CSR_ECORRUPT  an unknown record type (new types are a format version bump, never skipped),
 *                 a record for an id never admitted or already finished, or for a sink the event's
 *                 route does not have.
 *   UV_ENOMEM.
 */

enum pl_rec_type {
  PL_REC_CURSOR = 1,
  PL_REC_ADMIT = 2,
  PL_REC_ATTEMPT = 3,
  PL_REC_OUTCOME = 4,
  PL_REC_DLQ_REPLAY = 5,
  PL_REC_DLQ_DELETE = 6,
  PL_REC_SEEN = 7,
  /* The customer sync ingress's jobs (csurelay/ingress.h, "The job model"): pl_state hands these
   * to the cs_jobs it owns (pl_state_jobs), on apply, replay and dump. */
  PL_REC_JOB = 8,
  PL_REC_JOB_END = 9,
  PL_REC_CUSTOMER = 10,
};

/** "CURSOR", "ADMIT", ... or "?" (for logs and `csurelay state`). */
const char *pl_rec_name(uint8_t type);

/** The fields of an ADMIT record; the strings and the row are the caller's. */
struct pl_rec_admit {
  const char *id, *csu, *type;
  int64_t time_ms;          /* EventDateTime */
  int64_t admitted_ms;      /* wall clock of admission */
  const char *const *sinks; /* the route's sink names, distinct */
  size_t n_sinks;
  const char *row_json; /* the event object's JSON text, as received or as the state keeps it */
  size_t row_len;
};

/** The fields of an ATTEMPT or OUTCOME record (each uses the ones it lists above). */
struct pl_rec_delivery {
  const char *id, *sink;
  enum sk_outcome outcome; /* OUTCOME: SK_DELIVERED, SK_SKIPPED or SK_DEAD */
  unsigned attempt;        /* ATTEMPT: the next attempt's number; OUTCOME: attempts made */
  int64_t next_ms;         /* ATTEMPT: the next attempt's earliest start */
  int64_t at_ms;           /* OUTCOME: when it was decided */
  int status;              /* HTTP status of the deciding answer, 0 when none */
  const char *reason;      /* may be NULL */
  const char *excerpt;     /* may be NULL */
};

/*
 * Encoders: each writes one record's payload (a JSON object) into `jw`, which the caller has
 * initialised or reset; read it with csr_jw_finish(). They return 0, or UV_EINVAL for a NULL
 * string that is required (or an OUTCOME of SK_RETRY); the writer's own errors (invalid UTF-8, a
 * row that is not an object) surface from csr_jw_finish().
 */
CSR_NODISCARD int pl_rec_cursor(struct csr_jw *jw, const char *csu, const char *type,
                                int64_t cursor_ms);
CSR_NODISCARD int pl_rec_admit(struct csr_jw *jw, const struct pl_rec_admit *a);
/** Whether `a` holds everything an ADMIT needs: id, csu, type, a row and n_sinks sink names. */
bool pl_rec_admit_complete(const struct pl_rec_admit *a);
CSR_NODISCARD int pl_rec_attempt(struct csr_jw *jw, const struct pl_rec_delivery *d);
CSR_NODISCARD int pl_rec_outcome(struct csr_jw *jw, const struct pl_rec_delivery *d);
CSR_NODISCARD int pl_rec_dlq_replay(struct csr_jw *jw, const char *id, const char *sink,
                                    int64_t at_ms);
CSR_NODISCARD int pl_rec_dlq_delete(struct csr_jw *jw, const char *id, const char *sink);
CSR_NODISCARD int pl_rec_seen(struct csr_jw *jw, const char *id, const char *csu, const char *type,
                              int64_t time_ms);
/** SEEN by hash, as dumps write it: `h1` and `h2` are the id's hash (the state's, see above). */
CSR_NODISCARD int pl_rec_seen_hash(struct csr_jw *jw, uint64_t h1, uint64_t h2, const char *csu,
                                   const char *type, int64_t time_ms);

struct pl_state;
struct pl_state_event;

enum pl_dstate {
  PL_DS_PENDING, /* to be attempted (attempt says which) */
  PL_DS_WAITING, /* a transient failure; attempt `attempt` not before next_ms */
  PL_DS_DELIVERED,
  PL_DS_SKIPPED,
  PL_DS_DEAD,    /* in the dead-letter queue */
  PL_DS_DELETED, /* a dead letter deleted from the queue */
};

/** One sink's delivery of a live event. Views are valid until the next apply or expire. */
struct pl_state_delivery {
  /* read-only */
  const char *sink;
  const struct pl_state_event *event;
  enum pl_dstate state;
  unsigned attempt;    /* PENDING/WAITING: the next attempt's number; final: attempts made */
  int64_t next_ms;     /* WAITING: earliest start of the next attempt; else 0 */
  int64_t at_ms;       /* final: when decided; else 0 */
  int status;          /* the last answer's HTTP status, 0 when none */
  const char *reason;  /* the last error's reason, "" when none */
  const char *excerpt; /* the last error's excerpt, "" when none */
  /* private */
  struct pl_state_delivery *_dlq_prev, *_dlq_next;
};

/**
 * A live event, or the view of a finished id (finished = true: admitted_ms 0, no row, no sinks;
 * see pl_state_event).
 */
struct pl_state_event {
  /* read-only */
  const char *id;
  const char *csu, *type;
  int64_t time_ms;
  int64_t admitted_ms;
  bool finished;
  const char *row; /* compact JSON; NULL once finished */
  size_t row_len;
  size_t n_sinks; /* 0 once finished */
  struct pl_state_delivery *sinks;
  /* private */
  struct pl_state_event *_prev, *_next; /* the live list, in admission order */
  void *_lane;
  void *_route; /* the route stage's record of the event while it works on it, else NULL */
  size_t _open; /* deliveries PENDING, WAITING or DEAD */
  size_t _dead; /* deliveries DEAD */
};

struct pl_state_horizon {
  const char *csu;    /* the CSU's name */
  int64_t horizon_ms; /* max(overlap_s, sweep_s) * 1000 */
};

struct pl_state_opts {
  const struct pl_state_horizon *horizons; /* copied */
  size_t n_horizons;
  int64_t default_horizon_ms; /* for a CSU not listed (one removed from the config) */
};

struct pl_state_stats {
  uint64_t live;         /* events admitted and not finished (those with dead letters included) */
  uint64_t finished;     /* finished events remembered for dedupe */
  uint64_t dead_letters; /* deliveries in the dead-letter queue */
  uint64_t parked;       /* live events whose every open delivery is a dead letter: they wait
                            for the operator, not for the pipeline, so they do not count against
                            limits.max_live_events */
  uint64_t pending;      /* deliveries PENDING */
  uint64_t waiting;      /* deliveries WAITING */
  uint64_t row_bytes;    /* row text held */
  uint64_t live_bytes;   /* heap held for live events: rows, deliveries, reasons, excerpts */
  uint64_t seen_bytes;   /* heap held for the finished ids: their table, records (kept at their
                            high-water mark, free ones reused) and expiry heaps; 50-65 bytes
                            per id */
  uint64_t cursors;      /* (csu, type) pairs with a cursor */
  uint64_t expired;      /* ids dropped by pl_state_expire so far */
  uint64_t dup_admits;   /* ADMITs refused with UV_EEXIST */
};

/** Creates an empty state; `opts` may be NULL (every horizon 0). 0, UV_EINVAL or UV_ENOMEM. */
CSR_NODISCARD int pl_state_create(const struct pl_state_opts *opts, struct pl_state **out);
/** Frees everything, views included. NULL is ignored. */
void pl_state_destroy(struct pl_state *s);

/** Applies one record (see the errors above). `payload` is the caller's. */
CSR_NODISCARD int pl_state_apply(struct pl_state *s, uint8_t type, const void *payload, size_t len);
/**
 * What applying the ADMIT record pl_rec_admit() writes from `a` does, without parsing that record
 * back: the admitter appends the record and then hands the state the same fields. The state keeps
 * the row's text as given (replay keeps its compact re-encoding: the same JSON). Errors as
 * pl_state_apply's.
 */
CSR_NODISCARD int pl_state_admit(struct pl_state *s, const struct pl_rec_admit *a);
/** The same for an ATTEMPT or OUTCOME (`type`) written by pl_rec_attempt()/pl_rec_outcome(). */
CSR_NODISCARD int pl_state_deliver(struct pl_state *s, uint8_t type,
                                   const struct pl_rec_delivery *d);
/** The message of the last failed apply ("" before any): "OUTCOME: unknown id \"...\"". */
const char *pl_state_error(const struct pl_state *s);

/**
 * pl_replay_cb for pl_store_open (arg = the state): pl_state_apply, except that UV_EEXIST (an id
 * admitted twice, see above) is skipped and counted in dup_admits.
 */
CSR_NODISCARD int pl_state_replay(void *arg, uint8_t type, const void *payload, size_t len);

/**
 * pl_store_dump_cb (arg = the state): emits the fewest records that rebuild an equal state:
 * CURSORs, SEEN per finished id (by hash), per live event its ADMIT then an ATTEMPT per waiting
 * delivery and an OUTCOME per final one (plus DLQ_DELETE for deleted ones), and last the dead
 * letters' OUTCOMEs in queue order. The emitter's error, UV_ENOMEM, or CSR_EPARSE for a row that
 * no longer parses.
 */
CSR_NODISCARD int pl_state_dump(void *arg, struct pl_store_emitter *e);

/** True when `id` is in the dedupe set (live or finished). */
bool pl_state_seen(const struct pl_state *s, const char *id);
/** The cursor of (csu, type): 0, or UV_ENOENT when none was recorded. */
CSR_NODISCARD int pl_state_cursor(const struct pl_state *s, const char *csu, const char *type,
                                  int64_t *out_ms);
/**
 * The entry of `id`, or NULL. A live event's own entry, valid until the next apply or expire (the
 * record that finishes the event frees it: look the id up again after applying one); for a
 * finished id, a view built in the state's scratch memory (id a copy of `id`, its csu, type and
 * time_ms, finished = true, admitted_ms 0, no row, no sinks), valid until the next pl_state_event,
 * apply or expire. NULL also when that view cannot be built (out of memory).
 */
const struct pl_state_event *pl_state_event(const struct pl_state *s, const char *id);
/** The live events in admission order: NULL starts, NULL ends. To resubmit after replay. */
const struct pl_state_event *pl_state_live_next(const struct pl_state *s,
                                                const struct pl_state_event *prev);
/** The dead-letter queue, oldest first: NULL starts, NULL ends. */
const struct pl_state_delivery *pl_state_dlq_next(const struct pl_state *s,
                                                  const struct pl_state_delivery *prev);
/** The cursors: i-th (csu, type) pair with a cursor; UV_ENOENT past the end. */
CSR_NODISCARD int pl_state_cursor_at(const struct pl_state *s, size_t i, const char **csu,
                                     const char **type, int64_t *cursor_ms);
void pl_state_stats(const struct pl_state *s, struct pl_state_stats *out);

/** Drops the finished ids below their horizon (see above); returns how many. */
size_t pl_state_expire(struct pl_state *s);

/** The customer sync jobs held in the same AOF (records JOB, JOB_END, CUSTOMER; csurelay/ingress.h).
 * Always there; empty when no ingress ever ran. Valid until pl_state_destroy. */
struct cs_jobs;
struct cs_jobs *pl_state_jobs(struct pl_state *s);

/* ---------------------------------------------------------------------------------------------- */
/* Admit stage: the poll stage's pages into the store and the state (src/pipeline/admit.c)         */
/* ---------------------------------------------------------------------------------------------- */

/*
 * The admitter owns the store and the state model and answers the poll stage (SPEC §3, STYLE §7.4
 * "Durable first"). For every row of a page that the dedupe set does not know, it encodes an ADMIT
 * (the route's sinks, the row), appends it with a durable future, and applies it to the state at
 * once, so a second copy of the id in the same page or the next one is a duplicate right away. The
 * page is answered with 0 only once every one of its ADMITs is durable per the fsync policy; only
 * then does ops->on_admitted report the new live ids, and only then may the poll stage move the
 * cursor over them. A page of duplicates only is answered at once (from inside on_page, which the
 * poll stage allows). A cursor the poll stage reports is appended as a CURSOR without waiting (the
 * overlap covers a cursor lost in a crash; it can only follow ADMITs that are durable already) and
 * applied; then the finished ids below their horizon expire (pl_state_expire).
 *
 * Decisions:
 *  - Unrouted types. Configuration lets a CSU poll a type no route names. Such a row is admitted
 *    with no sinks: the ADMIT finishes at once, so the id is remembered for dedupe and the cursor
 *    passes it, but nothing is delivered and on_admitted is not called. Counted in `unrouted` and
 *    warned about once per (CSU, type).
 *  - A store failure is fatal for admission. Once an ADMIT fails to become durable (a write or
 *    fsync error), memory holds ids the log lacks: a retried window would find them in the dedupe
 *    set and let the cursor pass events a crash would lose, and later records about them
 *    (OUTCOMEs) would make the log unreplayable. The same holds the other way round when an apply
 *    fails after its append. So the admitter fails: that page and every later one are answered
 *    with the error, full() stays non-zero (no new Search starts), no CURSOR is written any more,
 *    and on_admitted is not called again (the route stage takes events only from on_admitted, and
 *    from pl_state_live_next() right after open). stats.healthy turns false with the reason; the
 *    operator restarts the relay, the replay rebuilds the state from what is durable, and the
 *    windows the cursors did not pass are read again.
 *  - An append the store refuses (UV_E2BIG past max_record_bytes, UV_ENOMEM) changes nothing, so
 *    it only fails its page: the rows before it in the page are admitted as usual (reported once
 *    durable), the page is answered with the error, and the poll stage reads the window again
 *    after a backoff. A row too big for the store holds its lane there (logged each time).
 *  - Backpressure: full() is non-zero while the state's live events reach
 *    cfg->limits.max_live_events (0 = no limit). Searches already in flight still deliver their
 *    pages, so the live count may pass the limit by up to max_searches pages. The stage that
 *    finishes events calls pl_poll_resume() once pl_admit_has_room() says so.
 *
 * Shutdown: stop the poll stage first (pl_poll_stop); the pages the admitter still holds are
 * answered when their records are durable, as usual. pl_admit_close() answers any held page with
 * UV_ECANCELED at once (their ADMITs may still become durable in the close's flush; the next start
 * replays them as live and its overlap reads them again as duplicates), refuses new pages with
 * UV_ECANCELED, closes the store (flush + fsync) and frees the state. No ops callback runs once
 * close is called; the poll stage must not call the admitter after the close callback.
 */

struct pl_admit;

struct pl_admit_ops {
  /** A new event is live and durably admitted (its entry is pl_state_event(state, id)). May be
   * NULL. Called right before its page is answered; `id` is valid during the call only. */
  void (*on_admitted)(void *arg, const char *id);
  /** True while the process is over its memory budget (limits.memory_mb), counting `events_coming`
   * more live events (rows of Searches in flight): admission then waits like it does at
   * max_live_events, and pl_admit_has_room() says no. May be NULL. */
  bool (*over_budget)(void *arg, uint64_t events_coming);
};

struct pl_admit_stats {
  uint64_t pages;         /* pages received */
  uint64_t rows;          /* rows received, repeats included */
  uint64_t admitted;      /* ADMITs appended for new ids (unrouted included) */
  uint64_t duplicates;    /* rows already in the dedupe set */
  uint64_t unrouted;      /* new ids of a type no route names (admitted with no sinks) */
  uint64_t page_failures; /* pages answered < 0 */
  uint64_t cursors;       /* CURSOR records appended */
  uint64_t expired;       /* dedupe ids dropped by expiry */
  uint64_t held;          /* pages waiting for their records to be durable */
  uint64_t full;          /* times full() answered non-zero */
  uint64_t live;          /* the state's live events */
  uint64_t dead_letters;  /* the state's dead-letter queue */
  bool failed;            /* admission stopped after a store failure (see above) */
  bool healthy;           /* !failed and the store is healthy: for /readyz */
  char health_reason[256]; /* "" when healthy */
  struct pl_store_stats store; /* a copy of the store's numbers */
};

/**
 * Creates the state (horizon per CSU = max(overlap_s, sweep_s) s; a CSU no longer configured gets
 * the largest) and opens the store with pl_state_replay / pl_state_dump. `store_opts` may be NULL
 * for cfg->state's dir, fsync and fsync_interval_ms. `cfg` (its csus and routes) must outlive the
 * admitter. Damage found by the replay is not a failure: it is in err->msg (which is "" when the
 * file was whole) and in stats (healthy false until a compaction). Returns 0, UV_EINVAL, UV_ENOMEM,
 * or pl_store_open's error with err->msg naming it (and the state's message when a record did not
 * apply).
 */
CSR_NODISCARD int pl_admit_open(struct rx_loop *loop, const struct csr_config *cfg,
                                const struct pl_store_opts *store_opts,
                                const struct pl_admit_ops *ops, void *arg, struct pl_admit **out,
                                struct csr_err *err);

/** The ops (and their arg, `a`) for pl_poll_create(). */
const struct pl_poll_ops *pl_admit_poll_ops(const struct pl_admit *a);

/** Seeds the poll stage's lanes with the replayed cursors (pl_poll_set_cursor), before
 * pl_poll_start(). Cursors of lanes no longer configured are skipped. 0 or the first other error. */
CSR_NODISCARD int pl_admit_cursors(struct pl_admit *a, struct pl_poll *poll);

/** True while the live events in work (live minus parked, see pl_state_stats) are below
 * limits.max_live_events, the memory budget holds (ops->over_budget) and admission has not
 * failed. */
bool pl_admit_has_room(const struct pl_admit *a);

/**
 * Stops admission for good, as a store failure does (see "A store failure is fatal" above): for
 * the stages after admission when an append of theirs is refused or an apply fails after its
 * append, since memory and log then disagree. `what` names the record ("OUTCOME"), `id` the event
 * (may be NULL). The first call wins.
 */
void pl_admit_fail(struct pl_admit *a, int rc, const char *what, const char *id);

/** The state and the store, for the stages after admission (they append and apply their own
 * records the same way: append, then apply). Valid until the close callback. */
struct pl_state *pl_admit_state(struct pl_admit *a);
struct pl_store *pl_admit_store(struct pl_admit *a);

void pl_admit_stats(const struct pl_admit *a, struct pl_admit_stats *out);

/** One CSU's share of the admissions, for the per-CSU /metrics lines. */
struct pl_admit_csu_stats {
  uint64_t admitted;   /* new ids admitted (unrouted included) */
  uint64_t duplicates; /* rows already in the dedupe set */
};
/** The i-th configured CSU's numbers (cfg->csus order); UV_EINVAL past the end. */
CSR_NODISCARD int pl_admit_csu_stats(const struct pl_admit *a, size_t i,
                                     struct pl_admit_csu_stats *out);

/** See "Shutdown" above; `cb` (may be NULL) fires from the loop once `a` is freed. A second call is
 * ignored. */
void pl_admit_close(struct pl_admit *a, void (*cb)(void *arg), void *arg);

/* ---------------------------------------------------------------------------------------------- */
/* Route stage: enrich live events and deliver them to their sinks (src/pipeline/route.c)          */
/* ---------------------------------------------------------------------------------------------- */

/*
 * The route stage takes every live event from the admitter (on_admitted as it is admitted, and
 * pl_route_resume() once after open for the replayed ones), enriches it, and hands one delivery per
 * sink of its route to that sink's retry scheduler (SPEC §3). Everything it decides is a record,
 * appended then applied like admission's: ATTEMPT when a delivery waits for a retry, OUTCOME when
 * it is final (delivered, skipped or dead). Those two are appended without waiting for
 * durability: a record lost in a crash only repeats a delivery that was in flight (at-least-once
 * with the event id as the idempotency key), or retries sooner. A refused append or a failed apply
 * stops admission (pl_admit_fail): memory and log would disagree.
 *
 * Enrichment is a delivery too. Each CSU has an "enrich" scheduler (pl_sched) with a small
 * internal sink whose deliver() runs the route's fetches (order by EventTransactionId, customer by
 * EventCustomerId; guests, with an empty id, skip the customer). So a fetch failure is retried
 * exactly like a delivery: full-jitter backoff on timers, Retry-After, retry.max_attempts, and a
 * 429 pauses that CSU's enrichment only. A 404 may be replication lag right after the event, so it
 * is retried twice (three tries) before the event goes on without that document (null in the
 * body). A permanent failure, or max_attempts, makes every open delivery of the event a dead
 * letter with reason "enrich_order: ..." or "enrich_customer: ...", so nothing is lost and a
 * DLQ replay tries again from the start. Enrichment is not recorded: after a restart it runs again.
 *
 * Deliveries. The delivery's conf is the route's deliver entry for that sink in the current config.
 * A delivery whose sink or route entry is gone (a reload removed it) becomes a dead letter at once
 * (reason "no_sink" / "no_route") instead of waiting forever; replay it after restoring the
 * config. A replayed WAITING delivery resumes at its recorded attempt and time (pl_sched_submit_at).
 * An event's enriched documents are held until its last delivery in work is final, so the memory
 * of live events is bounded by limits.max_live_events.
 *
 * Backpressure: when an event finishes or parks and pl_admit_has_room() says so, the stage calls
 * pl_poll_resume() (the poll stage set with pl_route_set_poll()).
 *
 * Stop: pl_route_drain() waits (up to its deadline) until no delivery or fetch is queued or in
 * flight, leaving the ones waiting for a retry to the next start; pl_route_close() then cancels
 * whatever is left. Cancelled deliveries keep their state in the store and replay at the next open.
 */

struct pl_route;
struct pl_poll;
struct csr_metrics;

struct pl_route_opts {
  uint64_t seed;          /* the schedulers' jitter; 0 = from the clock */
  unsigned enrich_tries;  /* fetch attempts of a 404 before going on without it; 0 = 3 */
  struct csr_metrics *metrics; /* latency histograms are observed here; may be NULL */
};

/** One sink's numbers (pl_route_sink_stats). */
struct pl_route_sink_stats {
  const char *name;
  const struct sk_sink *sink;
  struct pl_sched_stats sched;
  char ready_reason[128]; /* "" when the sink is ready */
};

struct pl_route_stats {
  uint64_t events;          /* events in the stage (being enriched or delivered) */
  uint64_t enriching;       /* of which waiting for enrichment */
  uint64_t enriched;        /* events whose enrichment completed (a counter) */
  uint64_t enrich_dead;     /* events whose enrichment failed for good */
  uint64_t enrich_missing;  /* documents given up on after 404s */
  uint64_t outcomes;        /* OUTCOME records written */
  uint64_t attempts;        /* ATTEMPT records written */
  uint64_t unroutable;      /* deliveries dead-lettered as no_sink / no_route */
  uint64_t replayed;        /* dead letters replayed */
  uint64_t deleted;         /* dead letters deleted */
};

/**
 * Creates the stage: a scheduler per sink of `cfg` (sinks[i] is the open sink of cfg->sinks[i];
 * they must outlive the stage) and an enrichment scheduler per CSU on `enrich`. `admit` gives the
 * state and the store. 0, UV_EINVAL, UV_ENOMEM.
 */
CSR_NODISCARD int pl_route_create(struct rx_loop *loop, const struct csr_config *cfg,
                                  struct pl_admit *admit, struct pl_enrich *enrich,
                                  struct sk_sink *const *sinks, const struct pl_route_opts *opts,
                                  struct pl_route **out);

/** The poll stage to resume when room frees up (NULL: none). */
void pl_route_set_poll(struct pl_route *r, struct pl_poll *poll);

/** The admitter's on_admitted (arg = the route stage). */
void pl_route_on_admitted(void *arg, const char *id);

/** Takes every live event of the state (after open): those with deliveries in work start. */
void pl_route_resume(struct pl_route *r);

/**
 * Replays dead letters: of event `id` (NULL = every event) to sink `sink` (NULL = every sink).
 * Each becomes a DLQ_REPLAY record and a fresh delivery (attempt 1, enrichment again). *count
 * (may be NULL) receives how many. 0, UV_ENOENT (nothing matched), UV_ECANCELED (stopping), or
 * the append's error (admission then stops, see above).
 */
CSR_NODISCARD int pl_route_dlq_replay(struct pl_route *r, const char *id, const char *sink,
                                      size_t *count);
/** Deletes dead letters (DLQ_DELETE), same selection and errors as replay. */
CSR_NODISCARD int pl_route_dlq_delete(struct pl_route *r, const char *id, const char *sink,
                                      size_t *count);

void pl_route_stats(const struct pl_route *r, struct pl_route_stats *out);
/** The numbers of the i-th sink (cfg order); UV_EINVAL past the end. */
CSR_NODISCARD int pl_route_sink_stats(const struct pl_route *r, size_t i,
                                      struct pl_route_sink_stats *out);

/** Calls `cb` once nothing is queued or in flight (or `deadline_ms` passed); the stage keeps
 * working meanwhile. A second drain replaces the first's callback. */
void pl_route_drain(struct pl_route *r, uint64_t deadline_ms, void (*cb)(void *arg), void *arg);

/** Cancels everything (see "Stop") and frees the stage; `cb` (may be NULL) fires from the loop.
 * The sinks, the fetcher and the admitter are left open. A second call is ignored. */
void pl_route_close(struct pl_route *r, void (*cb)(void *arg), void *arg);

#endif
