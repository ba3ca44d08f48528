/* csurelay reactor — the loop, futures, timers, the HTTP client and the HTTP server.
 *
 * Everything here runs on one libuv loop thread. The caller owns the memory of every struct (as in
 * libuv): init it in place, close or cancel it, and free it only after its completion or close
 * callback has run. Functions return 0 or a negative error (see error.h); a start function that
 * returns < 0 never calls its callback.
 */
#ifndef CSURELAY_REACTOR_H
#define CSURELAY_REACTOR_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "csurelay/error.h"

/** Leads from an embedded member back to the struct that holds it. */
#define RX_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

struct rx_loop;
struct rx_fut;

/* ---------------------------------------------------------------------------------------------- */
/* Futures */
/* ---------------------------------------------------------------------------------------------- */

/** A future's completion callback. `fut->result` is 0 or a negative error (-ECANCELED on cancel).
 */
typedef void (*rx_fut_cb)(struct rx_fut *fut);

/**
 * A one-shot completion, embedded in the request that produces it (an HTTP request, an AOF append,
 * a publish) and never allocated on its own; RX_CONTAINER_OF leads back to the owner.
 *
 * Completion is never synchronous: rx_fut_resolve() only queues the future on the loop's ready
 * list, and the loop runs the callback later in the same turn (from a uv_check_t). So no callback
 * is ever re-entered by the call that started it, even when the answer was already known (a cache
 * hit). After its callback has run, a future is idle and may be armed again for the next stage.
 */
struct rx_fut {
  /* public */
  void *data;
  /* read-only */
  int result;
  struct rx_loop *loop;
  /* private */
  rx_fut_cb _cb;
  struct rx_fut *_next;
  unsigned _state;
};

/** Arms `fut` on `loop`: it is now pending, and `cb` will fire exactly once when it is resolved. */
void rx_fut_init(struct rx_fut *fut, struct rx_loop *loop, rx_fut_cb cb);

/**
 * Completes a pending future with `result`; the callback fires on the loop later in this turn.
 * Resolving a future that is not pending (already resolved, or idle) is ignored and returns
 * UV_EALREADY, so a late completion after a cancel is harmless.
 */
int rx_fut_resolve(struct rx_fut *fut, int result);

/** Non-zero while the future is armed and its callback has not yet run. */
int rx_fut_pending(const struct rx_fut *fut);

/**
 * A join: a future that resolves once every child counted into it has finished. Used where one
 * event waits for several things (its sinks, its enrichment calls). `result` is the first child
 * error, or 0.
 */
struct rx_join {
  /* public */
  struct rx_fut fut;
  /* read-only */
  unsigned pending;
  int first_error;
  /* private */
  int _sealed;
};

/** Arms the join; `cb` fires after rx_join_seal() once `pending` reaches zero. */
void rx_join_init(struct rx_join *join, struct rx_loop *loop, rx_fut_cb cb);
/** Counts one more child. Only before the last child finished after seal. */
void rx_join_add(struct rx_join *join);
/** One child finished with `result` (0 or negative). */
void rx_join_done(struct rx_join *join, int result);
/** No more children will be added; the join resolves as soon as all counted children are done. */
void rx_join_seal(struct rx_join *join);

/* ---------------------------------------------------------------------------------------------- */
/* The loop */
/* ---------------------------------------------------------------------------------------------- */

/** Called on the loop thread when SIGTERM or SIGINT arrives (start a graceful stop). */
typedef void (*rx_stop_cb)(struct rx_loop *loop, int signum);
/** Called on the loop thread when SIGHUP arrives (reload the configuration). */
typedef void (*rx_reload_cb)(struct rx_loop *loop);

struct rx_loop {
  /* public */
  void *data;
  /* read-only */
  uv_loop_t *uv;
  uint64_t futures_run; /* callbacks run from the ready list, for metrics */
  /* private */
  uv_check_t _check;
  uv_idle_t _idle;
  struct rx_fut *_ready_head;
  struct rx_fut *_ready_tail;
  uv_signal_t _sig[3];
  int _signals_on;
  rx_stop_cb _on_stop;
  rx_reload_cb _on_reload;
};

/** Wraps `uv` (which the caller owns and keeps alive). */
CSR_NODISCARD int rx_loop_init(struct rx_loop *loop, uv_loop_t *uv);

/**
 * Delivers SIGTERM/SIGINT to `on_stop` and SIGHUP to `on_reload` (either may be NULL to ignore that
 * signal). The signal handles do not keep the loop alive on their own.
 */
CSR_NODISCARD int rx_loop_signals_start(struct rx_loop *loop, rx_stop_cb on_stop,
                                        rx_reload_cb on_reload);

/** Runs the loop until nothing keeps it alive; returns uv_run's value. */
int rx_loop_run(struct rx_loop *loop);

/**
 * Closes the loop's own handles and runs `uv` until every pending close callback has run. Call it
 * after every other handle (timers, servers, HTTP clients) was closed. Returns uv_loop_close()'s
 * result: 0, or UV_EBUSY if something was left open.
 */
int rx_loop_close(struct rx_loop *loop);

/** The loop's cached monotonic time in ms (uv_now). */
uint64_t rx_now_ms(const struct rx_loop *loop);

/** Wall-clock time in ms since the Unix epoch (for event timestamps, never for timers). */
int64_t rx_wall_ms(void);

/* ---------------------------------------------------------------------------------------------- */
/* Timers */
/* ---------------------------------------------------------------------------------------------- */

#define RX_TIMER_STOP UINT64_MAX

struct rx_timer;
/** A timer decides its own future: return the next delay in ms, or RX_TIMER_STOP. */
typedef uint64_t (*rx_timer_cb)(struct rx_timer *timer);
typedef void (*rx_timer_close_cb)(struct rx_timer *timer);

/** A monotonic timer (a handle: init, start/stop, close). */
struct rx_timer {
  /* public */
  void *data;
  /* read-only */
  struct rx_loop *loop;
  /* private */
  uv_timer_t _uv;
  rx_timer_cb _cb;
  rx_timer_close_cb _close_cb;
};

CSR_NODISCARD int rx_timer_init(struct rx_timer *timer, struct rx_loop *loop);
/** (Re)starts the timer to fire `cb` after `delay_ms`. -EINVAL if cb is NULL. */
CSR_NODISCARD int rx_timer_start(struct rx_timer *timer, rx_timer_cb cb, uint64_t delay_ms);
void rx_timer_stop(struct rx_timer *timer);
/** Non-zero while the timer is started. */
int rx_timer_active(const struct rx_timer *timer);
/** Closes the handle; `cb` (may be NULL) fires once it is safe to free the timer. */
void rx_timer_close(struct rx_timer *timer, rx_timer_close_cb cb);
/** Keeps the loop from waiting on this timer alone (a periodic tick that must not block exit). */
void rx_timer_unref(struct rx_timer *timer);

/**
 * A delay as a future: `fut` resolves with 0 after `delay_ms`, or -ECANCELED on rx_delay_cancel().
 * Retries wait on these, never by blocking. The delay must be closed with rx_delay_close().
 */
struct rx_delay {
  /* public */
  struct rx_fut fut;
  /* private */
  struct rx_timer _timer;
};

CSR_NODISCARD int rx_delay_init(struct rx_delay *delay, struct rx_loop *loop);
CSR_NODISCARD int rx_delay_start(struct rx_delay *delay, uint64_t delay_ms, rx_fut_cb cb);
void rx_delay_cancel(struct rx_delay *delay);
void rx_delay_close(struct rx_delay *delay, rx_timer_close_cb cb);

/**
 * Exponential backoff with full jitter: a uniform draw from [0, min(cap, base * 2^attempt)].
 * `attempt` counts from 0. `rng` is the caller's xorshift state (any non-zero seed).
 */
uint64_t rx_backoff_ms(unsigned attempt, uint64_t base_ms, uint64_t cap_ms, uint64_t *rng);

/** xorshift64* — a fast, deterministic generator for jitter and for csusim's seeded faults. */
uint64_t rx_rand64(uint64_t *state);

/* ---------------------------------------------------------------------------------------------- */
/* HTTP client (libcurl multi driven by the loop) */
/* ---------------------------------------------------------------------------------------------- */

struct rx_http_opts {
  unsigned max_per_host;     /* connections (and so in-flight requests) per host; 0 = 8 */
  unsigned max_total;        /* connections in all; 0 = 256 */
  long connect_timeout_ms;   /* 0 = 5000 */
  long timeout_ms;           /* whole-request default; 0 = 10000 */
  size_t max_response_bytes; /* body ceiling; 0 = 16 MiB */
};

/** Easy handles kept for reuse (curl_easy_reset instead of a fresh init per request). As many as
 * the pipeline has in flight at 10,000 ev/s (Searches, enrichment, both sinks: ~250): with 64,
 * each second's burst cleaned up the handles past the pool and made new ones for the next, 0.9 %
 * of the loop. An idle handle keeps ~6 KB after its reset (libcurl 7.88). */
#define RX_HTTP_POOL 256

/** One per loop: the curl multi handle, its timer and the sockets it watches. */
struct rx_http {
  /* public */
  void *data;
  /* read-only */
  struct rx_loop *loop;
  struct rx_http_opts opts;
  unsigned active;    /* requests started and not yet completed */
  uint64_t completed; /* requests completed, any outcome */
  uint64_t new_conns; /* connections opened (connection reuse shows as completed >> new_conns) */
  /* private */
  void *_multi;
  void *_pool[RX_HTTP_POOL]; /* finished easy handles, reset, for the next requests */
  unsigned _pooled;
  uv_timer_t _timer;
  struct rx_http_req *_cancelled; /* requests whose cancel is deferred to the ready list */
  void (*_close_cb)(struct rx_http *http);
  int _closing;
  unsigned _open_handles;
  struct rx_fut _cancel_fut;        /* runs the deferred cancels from the ready list */
  struct rx_http_req *_active_head; /* every started, not yet completed request (for close) */
  struct rx_http_sock **_socks;     /* by fd: the watchers of the sockets curl opened through us */
  size_t _n_socks;
};

/**
 * One HTTP request and, after completion, its response. Set the public fields, add headers with
 * rx_http_req_header(), then rx_http_start(). `fut.result` is 0 when any HTTP response arrived
 * (check `status`), or a negative transport error: UV_ETIMEDOUT, UV_ECONNREFUSED, UV_ECONNRESET,
 * UV_E2BIG (response over the ceiling), UV_ECANCELED, CSR_ETRANSPORT (others; see `curl_code`).
 */
struct rx_http_req {
  /* public: set before start; the caller keeps `url` and `body` alive until completion */
  void *data;
  const char *method; /* NULL = GET, or POST when body is set */
  const char *url;
  const char *body;
  size_t body_len;
  long timeout_ms; /* 0 = the client's default */
  /* read-only: valid in the completion callback until rx_http_req_cleanup() */
  struct rx_fut fut;
  long status;     /* HTTP status, 0 when no response */
  char *resp_body; /* NUL-terminated (resp_len excludes the NUL); never NULL after start */
  size_t resp_len;
  long retry_after_ms;   /* from Retry-After (seconds or HTTP-date); -1 when absent */
  char *odata_entity_id; /* OData-EntityId header, or NULL */
  char *location;        /* Location header, or NULL */
  int curl_code;         /* the raw CURLcode, for diagnostics */
  /* private */
  struct rx_http *_http;
  void *_easy;
  void *_headers;
  size_t _cap;
  int _overflow;
  int _cancel_queued;
  struct rx_http_req *_next_cancel;
  struct rx_http_req *_prev_active;
  struct rx_http_req *_next_active;
};

/** Starts the client on `loop`. `opts` may be NULL for defaults. */
CSR_NODISCARD int rx_http_init(struct rx_http *http, struct rx_loop *loop,
                               const struct rx_http_opts *opts);

/**
 * Cancels every active request (each completes with UV_ECANCELED), releases curl and closes the
 * handles; `cb` (may be NULL) fires once `http` may be freed.
 */
void rx_http_close(struct rx_http *http, void (*cb)(struct rx_http *http));

/** Zeroes `req`; call before setting fields. */
void rx_http_req_init(struct rx_http_req *req);

/** Adds one request header line, "Name: value" (copied). -ENOMEM on failure. */
CSR_NODISCARD int rx_http_req_header(struct rx_http_req *req, const char *line);

/** Starts the transfer; `cb` fires exactly once via `req->fut`. -EINVAL on a missing url. */
CSR_NODISCARD int rx_http_start(struct rx_http *http, struct rx_http_req *req, rx_fut_cb cb);

/** Cancels an active request; it completes with UV_ECANCELED later this turn. Safe anywhere. */
void rx_http_cancel(struct rx_http_req *req);

/** Frees the response and the header list; the req may then be reused after rx_http_req_init(). */
void rx_http_req_cleanup(struct rx_http_req *req);

/**
 * Hands a completed req's response body to the caller, who frees it: NUL-terminated, `*len` bytes
 * before the NUL. The req keeps an empty body. For an answer that must outlive the req (a Search
 * page whose rows point into it) without copying it.
 */
char *rx_http_take_body(struct rx_http_req *req, size_t *len);

/* ---------------------------------------------------------------------------------------------- */
/* HTTP server (llhttp on libuv TCP) */
/* ---------------------------------------------------------------------------------------------- */

struct rx_http_server;
struct rx_http_request;

/**
 * A route handler. It answers with rx_http_respond(), now or later (from a timer or a completion):
 * the request stays valid until it is answered. While it waits, the connection reads no further
 * requests (pipelined requests are answered in order).
 */
typedef void (*rx_http_handler)(struct rx_http_request *req, void *arg);

struct rx_http_server_opts {
  size_t max_header_bytes;  /* request line + headers; over it: 431. 0 = 8192 */
  size_t max_body_bytes;    /* over it: 413. 0 = 1 MiB */
  unsigned max_conns;       /* more are accepted and closed at once. 0 = 1024 */
  uint64_t idle_timeout_ms; /* a connection with no complete request for this long is closed
                               (slow clients are cut off). 0 = 30000 */
};

/** A parsed request, owned by the server; valid from the handler call until it is answered. */
struct rx_http_request {
  /* read-only */
  const char *method; /* "GET", "POST", ... */
  const char *path;   /* the raw (still percent-encoded) path, without the query */
  const char *query;  /* the raw text after '?', or "" */
  const char *body;   /* NUL-terminated, may contain NULs; "" when none */
  size_t body_len;
  struct rx_http_server *server;
  void *user; /* free for the handler's own use while the request is pending */
  /* private */
  void *_conn;
};

#define RX_HTTP_MAX_ROUTES 64

struct rx_http_route {
  const char *method; /* NULL = any method */
  const char *path;   /* exact, or a prefix when it ends with '*' */
  rx_http_handler handler;
  void *arg;
};

struct rx_http_server {
  /* public */
  void *data;
  /* read-only */
  struct rx_loop *loop;
  struct rx_http_server_opts opts;
  int port;              /* the bound port, after listen */
  unsigned conns;        /* open connections */
  uint64_t requests;     /* requests answered */
  uint64_t rejected;     /* connections refused over max_conns */
  uint64_t bad_requests; /* 4xx answered by the server itself (parse errors, limits) */
  /* private */
  uv_tcp_t _listener;
  struct rx_http_route _routes[RX_HTTP_MAX_ROUTES];
  unsigned _nroutes;
  void *_conn_head;
  int _listening;
  int _closing;
  void (*_close_cb)(struct rx_http_server *srv);
  struct rx_timer _sweep; /* one idle sweep for every connection, unref'd */
  unsigned _open_handles; /* listener + sweep timer not yet closed */
};

CSR_NODISCARD int rx_http_server_init(struct rx_http_server *srv, struct rx_loop *loop,
                                      const struct rx_http_server_opts *opts);

/**
 * Adds a route; routes are tried in the order added. An unmatched path gets 404, a path matched
 * only under other methods gets 405. -ENOSPC past RX_HTTP_MAX_ROUTES.
 */
CSR_NODISCARD int rx_http_server_route(struct rx_http_server *srv, const char *method,
                                       const char *path, rx_http_handler handler, void *arg);

/** Binds and listens on host:port (port 0 picks an ephemeral port; see srv->port). */
CSR_NODISCARD int rx_http_server_listen(struct rx_http_server *srv, const char *host, int port);

/**
 * Stops listening and closes every connection. A request still pending becomes orphaned: its owner
 * must still answer (the answer is dropped) or reset it. `cb` fires once every connection is gone
 * and every pending request was released; then srv may be freed.
 */
void rx_http_server_close(struct rx_http_server *srv, void (*cb)(struct rx_http_server *srv));

/** A request header's value (case-insensitive name), or NULL. */
const char *rx_http_header(const struct rx_http_request *req, const char *name);

/**
 * Answers `req` and releases it. `headers` is NULL or extra header lines, each ending in "\r\n"
 * ("Retry-After: 2\r\n"). `content_type` may be NULL when there is no body. Safe to call after the
 * client went away (the answer is dropped).
 */
void rx_http_respond(struct rx_http_request *req, int status, const char *headers,
                     const char *content_type, const void *body, size_t body_len);

/** Releases `req` by resetting its connection (TCP RST) without an answer: fault injection. */
void rx_http_reset(struct rx_http_request *req);

/** Non-zero when the client of a pending request has gone away. */
int rx_http_request_orphaned(const struct rx_http_request *req);

#endif
