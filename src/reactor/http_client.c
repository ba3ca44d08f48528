/* The HTTP client: a libcurl multi handle driven by the libuv loop, shaped like curl's
 * docs/examples/multi-uv.c.
 *
 * One uv_timer_t per rx_http carries curl's timeout; one struct rx_http_sock per curl socket
 * carries the uv_poll_t that watches it. curl calls on_curl_timer and on_curl_socket only to change
 * what we watch; libuv calls on_uv_timer and on_poll, which kick curl_multi_socket_action and then
 * drain the finished transfers.
 *
 * A kept-alive connection's watcher lives as long as its socket, not as long as one transfer. curl
 * says CURL_POLL_REMOVE each time a transfer leaves a connection in its cache, and each
 * uv_poll_start() is an epoll_ctl DEL plus an ADD: opening, re-arming and closing a watcher per
 * request cost six epoll_ctl calls and an ioctl, 11 % of the relay's time at 5,000 ev/s. So the
 * sockets curl opens go through on_open_socket/on_close_socket, their watchers are kept in
 * http->_socks by fd until curl closes them, a REMOVE leaves an idle connection watched for
 * readability (what its next transfer wants anyway), and a watcher is re-armed only when the
 * events curl wants change. No libcurl call is ever made from inside a libcurl callback
 * (besides curl_multi_assign, which the socket callback is meant to use), and no user callback runs
 * from one: every completion goes through the request's future, i.e. the loop's ready list.
 *
 * curl_global_init() runs once, from the first rx_http_init(). It is not thread safe, which is
 * fine: csurelay is single-threaded and creates its clients on the loop thread.
 * curl_global_cleanup() is never called; the process exit releases it.
 *
 * CURLcode is converted to csurelay errors only here (map_curl_code); the raw code stays in
 * req->curl_code for the log.
 */
#include <assert.h>
#include <curl/curl.h>
#include <limits.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define DEFAULT_MAX_PER_HOST    8
#define DEFAULT_MAX_TOTAL       256
#define DEFAULT_CONNECT_TIMEOUT 5000
#define DEFAULT_TIMEOUT         10000
#define DEFAULT_MAX_RESPONSE    (16u * 1024 * 1024)
#define RETRY_AFTER_MAX_S       (24L * 3600) /* a longer hint is nonsense; clamp it */

/* One per socket curl asks us to watch; the poll handle comes first so a uv_handle_t* is one. */
struct rx_http_sock {
  uv_poll_t poll;
  curl_socket_t fd;
  struct rx_http *http;
  int events; /* UV_READABLE | UV_WRITABLE being watched now */
  bool idle;  /* curl has no transfer on it (CURL_POLL_REMOVE) */
  bool kept;  /* in http->_socks: closed by on_close_socket, not by a REMOVE */
  bool closed;
};

/* The slot of a socket curl opened through on_open_socket that has no watcher yet. */
static struct rx_http_sock OPENED;

static int curl_ready;

/* ---------------------------------------------------------------------------------------------- */
/* Completion */
/* ---------------------------------------------------------------------------------------------- */

static int map_curl_code(CURLcode code, int overflow) {
  switch (code) {
    case CURLE_OK:
      return 0;
    case CURLE_WRITE_ERROR:
      /* Our write callback refuses data only at the ceiling. */
      return overflow ? UV_E2BIG : CSR_ETRANSPORT;
    case CURLE_OPERATION_TIMEDOUT:
      return UV_ETIMEDOUT;
    case CURLE_COULDNT_CONNECT:
      return UV_ECONNREFUSED;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
      return UV_ECONNRESET;
    case CURLE_COULDNT_RESOLVE_HOST:
      return UV_EAI_NONAME;
    default:
      return CSR_ETRANSPORT;
  }
}

static char *header_dup(CURL *easy, const char *name) {
  struct curl_header *h;
  if (curl_easy_header(easy, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
    return NULL;
  return strdup(h->value);
}

/* Retry-After is either delta-seconds or an HTTP-date (RFC 9110 10.2.3); -1 when absent or bad. */
static long parse_retry_after(const char *value) {
  if (value == NULL || *value == '\0')
    return -1;
  if (value[0] >= '0' && value[0] <= '9') {
    char *end;
    long s = strtol(value, &end, 10);
    while (*end == ' ' || *end == '\t')
      end++;
    if (*end != '\0')
      return -1;
    return (s > RETRY_AFTER_MAX_S ? RETRY_AFTER_MAX_S : s) * 1000;
  }
  time_t at = curl_getdate(value, NULL);
  if (at == (time_t)-1)
    return -1;
  int64_t ms = (int64_t)at * 1000 - rx_wall_ms();
  if (ms < 0)
    return 0;
  return ms > RETRY_AFTER_MAX_S * 1000 ? RETRY_AFTER_MAX_S * 1000 : (long)ms;
}

/* What we keep from a finished transfer; must run before the easy handle goes away. */
static void capture_response(struct rx_http_req *req) {
  CURL *easy = req->_easy;
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &req->status);
  struct curl_header *h;
  if (curl_easy_header(easy, "Retry-After", 0, CURLH_HEADER, -1, &h) == CURLHE_OK)
    req->retry_after_ms = parse_retry_after(h->value);
  req->odata_entity_id = header_dup(easy, "OData-EntityId");
  req->location = header_dup(easy, "Location");
}

static void unlink_cancel(struct rx_http *http, struct rx_http_req *req) {
  for (struct rx_http_req **p = &http->_cancelled; *p; p = &(*p)->_next_cancel) {
    if (*p == req) {
      *p = req->_next_cancel;
      break;
    }
  }
  req->_next_cancel = NULL;
  req->_cancel_queued = 0;
}

/* A finished handle goes back to the pool, reset to curl's defaults, while there is room:
 * curl_easy_init and cleanup per request cost more than a reset. */
static void release_easy(struct rx_http *http, CURL *easy) {
  if (http->_pooled < RX_HTTP_POOL && !http->_closing) {
    curl_easy_reset(easy);
    http->_pool[http->_pooled++] = easy;
  } else {
    curl_easy_cleanup(easy);
  }
}

/* Detaches `req` from curl and from the client, then queues its completion. Never call it from
 * inside a libcurl callback (it removes the easy handle). */
static void finish(struct rx_http_req *req, int result) {
  struct rx_http *http = req->_http;
  if (req->_cancel_queued) {
    /* Cancelled and finished in the same turn: the caller asked to cancel, so report that. */
    unlink_cancel(http, req);
    result = UV_ECANCELED;
  }
  /* Count connections for every outcome: a cancelled transfer may have opened one too. */
  long conns = 0;
  if (curl_easy_getinfo(req->_easy, CURLINFO_NUM_CONNECTS, &conns) == CURLE_OK && conns > 0)
    http->new_conns += (uint64_t)conns;
  curl_multi_remove_handle(http->_multi, req->_easy);
  release_easy(http, req->_easy);
  req->_easy = NULL;
  if (req->_prev_active)
    req->_prev_active->_next_active = req->_next_active;
  else
    http->_active_head = req->_next_active;
  if (req->_next_active)
    req->_next_active->_prev_active = req->_prev_active;
  req->_prev_active = req->_next_active = NULL;
  http->active--;
  http->completed++;
  rx_fut_resolve(&req->fut, result);
}

/* Handles every transfer curl reports as done; call after each curl_multi_socket_action. */
static void drain_done(struct rx_http *http) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(http->_multi, &left))) {
    if (msg->msg != CURLMSG_DONE)
      continue;
    /* Copy out what we need: the message is invalid once the handle is removed. */
    CURL *easy = msg->easy_handle;
    CURLcode code = msg->data.result;
    char *priv = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
    struct rx_http_req *req = (struct rx_http_req *)priv;
    req->curl_code = (int)code;
    capture_response(req);
    finish(req, map_curl_code(code, req->_overflow));
  }
}

/* ---------------------------------------------------------------------------------------------- */
/* libuv → curl */
/* ---------------------------------------------------------------------------------------------- */

static void on_uv_timer(uv_timer_t *timer) {
  struct rx_http *http = RX_CONTAINER_OF(timer, struct rx_http, _timer);
  int running;
  curl_multi_socket_action(http->_multi, CURL_SOCKET_TIMEOUT, 0, &running);
  drain_done(http);
}

static void on_poll(uv_poll_t *poll, int status, int events) {
  struct rx_http_sock *sock = (struct rx_http_sock *)poll;
  /* socket_action may close this very socket (CURL_POLL_REMOVE); read what we need first. */
  struct rx_http *http = sock->http;
  curl_socket_t fd = sock->fd;
  if (sock->idle) {
    /* The server closed (or wrote to) a connection in curl's cache: stop watching it; curl sees
     * the state of the socket when it next picks the connection, and closes it then. */
    uv_poll_stop(poll);
    sock->events = 0;
    return;
  }
  int flags = 0;
  /* An error on the socket must reach curl, or it would wait for a readiness that never comes. */
  if (status < 0)
    flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE)
    flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE)
    flags |= CURL_CSELECT_OUT;
  int running;
  curl_multi_socket_action(http->_multi, fd, flags, &running);
  drain_done(http);
}

/* ---------------------------------------------------------------------------------------------- */
/* curl → libuv (no libcurl calls in here) */
/* ---------------------------------------------------------------------------------------------- */

static void maybe_finish_close(struct rx_http *http) {
  /* The cancel future may still sit on the ready list; it touches http, so wait for it too. */
  if (http->_closing != 1 || http->_open_handles > 0 || rx_fut_pending(&http->_cancel_fut))
    return;
  http->_closing = 2;
  if (http->_close_cb)
    http->_close_cb(http); /* may free http: nothing after this */
}

static void on_handle_closed(uv_handle_t *handle) {
  struct rx_http *http = handle->data;
  if (handle->type == UV_POLL)
    free(handle); /* the uv_poll_t is the first member of struct rx_http_sock */
  http->_open_handles--;
  maybe_finish_close(http);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
  struct rx_http *http = userp;
  if (timeout_ms < 0) {
    uv_timer_stop(&http->_timer);
    return 0;
  }
  /* 0 means "now", but curl must not be re-entered from here: let the loop call back in 1 ms. */
  uint64_t delay = timeout_ms == 0 ? 1 : (uint64_t)timeout_ms;
  return uv_timer_start(&http->_timer, on_uv_timer, delay, 0) < 0 ? -1 : 0;
}

static struct rx_http_sock *sock_open(struct rx_http *http, curl_socket_t fd) {
  struct rx_http_sock *sock = calloc(1, sizeof(*sock));
  if (sock == NULL)
    return NULL;
  if (uv_poll_init_socket(http->loop->uv, &sock->poll, fd) < 0) {
    free(sock);
    return NULL;
  }
  sock->fd = fd;
  sock->http = http;
  sock->poll.data = http;
  http->_open_handles++;
  return sock;
}

static void sock_close(struct rx_http_sock *sock) {
  sock->closed = true;
  uv_poll_stop(&sock->poll);
  uv_close((uv_handle_t *)&sock->poll, on_handle_closed);
}

/* The slot of fd if curl opened it through on_open_socket (OPENED or its watcher), else NULL. */
static struct rx_http_sock **kept_slot(struct rx_http *http, curl_socket_t fd) {
  if (fd < 0 || (size_t)fd >= http->_n_socks || http->_socks[fd] == NULL)
    return NULL;
  return &http->_socks[fd];
}

/* Sockets curl opens for its connections: their fds get a slot for a watcher that outlives the
 * transfer (and curl will close them through on_close_socket, which frees it). */
static curl_socket_t on_open_socket(void *userp, curlsocktype purpose, struct curl_sockaddr *addr) {
  struct rx_http *http = userp;
  curl_socket_t fd = socket(addr->family, addr->socktype, addr->protocol);
  if (fd < 0)
    return CURL_SOCKET_BAD;
  if ((size_t)fd < http->_n_socks) {
    http->_socks[fd] = &OPENED;
    return fd;
  }
  size_t n = http->_n_socks ? http->_n_socks : 64;
  while (n <= (size_t)fd)
    n *= 2;
  struct rx_http_sock **socks = realloc(http->_socks, n * sizeof(*socks));
  if (socks == NULL) {
    close(fd);
    return CURL_SOCKET_BAD;
  }
  memset(socks + http->_n_socks, 0, (n - http->_n_socks) * sizeof(*socks));
  http->_socks = socks;
  http->_n_socks = n;
  http->_socks[fd] = &OPENED;
  return fd;
}

static int on_close_socket(void *userp, curl_socket_t fd) {
  struct rx_http *http = userp;
  struct rx_http_sock **slot = kept_slot(http, fd);
  if (slot != NULL) {
    if (*slot != &OPENED)
      sock_close(*slot); /* before close(): the poll's epoll entry goes with the fd it names */
    *slot = NULL;
  }
  return close(fd);
}

/* The watcher for fd: curl's note on the socket, else the kept one, else a new one. */
static struct rx_http_sock *sock_for(struct rx_http *http, curl_socket_t fd, void *socketp) {
  struct rx_http_sock *sock = socketp;
  struct rx_http_sock **slot = kept_slot(http, fd);
  if (sock == NULL && slot != NULL && *slot != &OPENED)
    sock = *slot;
  if (sock == NULL) {
    sock = sock_open(http, fd);
    if (sock != NULL && slot != NULL) {
      sock->kept = true;
      *slot = sock;
    }
  }
  if (sock != NULL)
    curl_multi_assign(http->_multi, fd, sock);
  return sock;
}

/* An idle connection's watcher does not keep the loop alive; a transfer's does. */
static int watch(struct rx_http_sock *sock, int events, bool idle) {
  if (idle != sock->idle) {
    sock->idle = idle;
    if (idle)
      uv_unref((uv_handle_t *)&sock->poll);
    else
      uv_ref((uv_handle_t *)&sock->poll);
  }
  if (events == sock->events)
    return 0;
  int rc = events ? uv_poll_start(&sock->poll, events, on_poll) : uv_poll_stop(&sock->poll);
  sock->events = rc < 0 ? 0 : events;
  return rc;
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  struct rx_http *http = userp;
  if (what == CURL_POLL_REMOVE) {
    struct rx_http_sock *sock = socketp;
    if (sock == NULL || sock->closed)
      return 0;
    curl_multi_assign(http->_multi, fd, NULL);
    if (!sock->kept) {
      sock_close(sock);
      return 0;
    }
    return watch(sock, UV_READABLE, true) < 0 ? -1 : 0;
  }
  struct rx_http_sock *sock = sock_for(http, fd, socketp);
  if (sock == NULL || sock->closed)
    return -1; /* curl fails the transfers on this socket */
  int events = 0;
  if (what & CURL_POLL_IN)
    events |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    events |= UV_WRITABLE;
  return watch(sock, events, false) < 0 ? -1 : 0;
}

/* The response body, into a buffer with a ceiling (curl's dynbuf idea). */
static size_t on_curl_write(char *data, size_t size, size_t nmemb, void *userp) {
  struct rx_http_req *req = userp;
  size_t n = size * nmemb;
  size_t max = req->_http->opts.max_response_bytes;
  if (n > max - req->resp_len) {
    req->_overflow = 1;
    return 0; /* curl aborts with CURLE_WRITE_ERROR */
  }
  size_t need = req->resp_len + n + 1;
  if (need > req->_cap) {
    size_t cap = req->_cap * 2;
    if (cap < need)
      cap = need;
    /* The first piece of a body with a Content-Length sizes the buffer once: growing a 100 KB
     * Search page by doubling copied it about twice over (1.5 % of the loop at 8,000 ev/s). */
    curl_off_t length = -1;
    if (req->resp_len == 0 &&
        curl_easy_getinfo(req->_easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length) == CURLE_OK &&
        length > 0 && (uint64_t)length < max && (size_t)length + 1 > cap)
      cap = (size_t)length + 1;
    if (cap > max + 1)
      cap = max + 1;
    char *p = realloc(req->resp_body, cap);
    if (p == NULL)
      return 0; /* CURLE_WRITE_ERROR without overflow: CSR_ETRANSPORT */
    req->resp_body = p;
    req->_cap = cap;
  }
  memcpy(req->resp_body + req->resp_len, data, n);
  req->resp_len += n;
  req->resp_body[req->resp_len] = '\0';
  return n;
}

/* ---------------------------------------------------------------------------------------------- */
/* Cancel and close */
/* ---------------------------------------------------------------------------------------------- */

/* Runs from the ready list, so never inside a libcurl callback. */
static void on_cancels(struct rx_fut *fut) {
  struct rx_http *http = RX_CONTAINER_OF(fut, struct rx_http, _cancel_fut);
  while (http->_cancelled) {
    struct rx_http_req *req = http->_cancelled;
    /* finish() sees the queued flag, unlinks the req and reports UV_ECANCELED. */
    finish(req, UV_ECANCELED);
  }
  if (http->_closing)
    maybe_finish_close(http);
}

void rx_http_cancel(struct rx_http_req *req) {
  struct rx_http *http = req->_http;
  if (http == NULL || req->_easy == NULL || req->_cancel_queued)
    return; /* never started, already finished, or already on its way out */
  req->_cancel_queued = 1;
  req->_next_cancel = http->_cancelled;
  http->_cancelled = req;
  if (!rx_fut_pending(&http->_cancel_fut)) {
    rx_fut_init(&http->_cancel_fut, http->loop, on_cancels);
    rx_fut_resolve(&http->_cancel_fut, 0);
  }
}

void rx_http_close(struct rx_http *http, void (*cb)(struct rx_http *http)) {
  if (http->_closing)
    return;
  http->_closing = 1;
  http->_close_cb = cb;
  /* Cancel everything now: rx_http_close is never called from inside a libcurl callback. */
  while (http->_active_head) {
    struct rx_http_req *req = http->_active_head;
    finish(req, UV_ECANCELED);
  }
  /* curl_multi_cleanup may still call on_curl_socket (CURL_POLL_REMOVE for cached connections),
   * so the polls close from there; only then close the timer. */
  curl_multi_cleanup(http->_multi);
  http->_multi = NULL;
  for (size_t fd = 0; fd < http->_n_socks; fd++) /* none left: curl closed its connections */
    if (http->_socks[fd] != NULL && http->_socks[fd] != &OPENED)
      sock_close(http->_socks[fd]);
  free(http->_socks);
  http->_socks = NULL;
  http->_n_socks = 0;
  while (http->_pooled > 0)
    curl_easy_cleanup(http->_pool[--http->_pooled]);
  uv_close((uv_handle_t *)&http->_timer, on_handle_closed);
}

/* ---------------------------------------------------------------------------------------------- */
/* Setup and requests */
/* ---------------------------------------------------------------------------------------------- */

static struct rx_http_opts opts_with_defaults(const struct rx_http_opts *in) {
  struct rx_http_opts o = in ? *in : (struct rx_http_opts){0};
  if (o.max_per_host == 0)
    o.max_per_host = DEFAULT_MAX_PER_HOST;
  if (o.max_total == 0)
    o.max_total = DEFAULT_MAX_TOTAL;
  if (o.connect_timeout_ms <= 0)
    o.connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT;
  if (o.timeout_ms <= 0)
    o.timeout_ms = DEFAULT_TIMEOUT;
  if (o.max_response_bytes == 0)
    o.max_response_bytes = DEFAULT_MAX_RESPONSE;
  return o;
}

int rx_http_init(struct rx_http *http, struct rx_loop *loop, const struct rx_http_opts *opts) {
  if (loop == NULL)
    return UV_EINVAL;
  if (!curl_ready) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
      return CSR_ETRANSPORT;
    curl_ready = 1;
  }
  *http = (struct rx_http){.loop = loop, .opts = opts_with_defaults(opts)};
  CURLM *multi = curl_multi_init();
  if (multi == NULL)
    return UV_ENOMEM;
  int rc = uv_timer_init(loop->uv, &http->_timer);
  if (rc < 0) {
    curl_multi_cleanup(multi);
    return rc;
  }
  http->_timer.data = http;
  http->_open_handles = 1;
  http->_multi = multi;
  curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
  curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, http);
  curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(multi, CURLMOPT_TIMERDATA, http);
  curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)http->opts.max_per_host);
  curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)http->opts.max_total);
  /* Keep idle connections for every host we may talk to (the cache defaults to 4x handles). */
  curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)http->opts.max_total);
  return 0;
}

void rx_http_req_init(struct rx_http_req *req) {
  *req = (struct rx_http_req){.retry_after_ms = -1};
}

int rx_http_req_header(struct rx_http_req *req, const char *line) {
  if (line == NULL)
    return UV_EINVAL;
  struct curl_slist *list = curl_slist_append(req->_headers, line);
  if (list == NULL)
    return UV_ENOMEM;
  req->_headers = list;
  return 0;
}

static void set_method(CURL *easy, const struct rx_http_req *req) {
  const char *m = req->method;
  if (req->body || (m && strcmp(m, "POST") == 0)) {
    /* POSTFIELDS with an explicit size: binary-safe, and "" gives Content-Length: 0. */
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body ? req->body : "");
  }
  if (m == NULL || strcmp(m, "GET") == 0 || strcmp(m, "POST") == 0)
    return;
  if (strcmp(m, "HEAD") == 0)
    curl_easy_setopt(easy, CURLOPT_NOBODY, 1L); /* a custom HEAD would wait for a body */
  else
    curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, m);
}

static CURL *easy_for(struct rx_http *http, struct rx_http_req *req) {
  CURL *easy = http->_pooled > 0 ? http->_pool[--http->_pooled] : curl_easy_init();
  if (easy == NULL)
    return NULL;
  long timeout = req->timeout_ms > 0 ? req->timeout_ms : http->opts.timeout_ms;
  curl_easy_setopt(easy, CURLOPT_URL, req->url);
  curl_easy_setopt(easy, CURLOPT_PRIVATE, (char *)req);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_curl_write);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, req);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, timeout);
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, http->opts.connect_timeout_ms);
  curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  /* The relay talks only to the URLs it was configured with: ignore *_proxy from the
   * environment. */
  curl_easy_setopt(easy, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, req->_headers);
  curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
  curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, http);
  curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
  curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, http);
  set_method(easy, req);
  return easy;
}

int rx_http_start(struct rx_http *http, struct rx_http_req *req, rx_fut_cb cb) {
  if (req->url == NULL || cb == NULL || (req->body == NULL && req->body_len > 0))
    return UV_EINVAL;
  if (http->_closing)
    return UV_ECANCELED;
  if (req->_easy)
    return UV_EBUSY;
  /* An empty "Expect:" stops curl from waiting for 100-continue before a POST body. */
  int rc = rx_http_req_header(req, "Expect:");
  if (rc < 0)
    return rc;
  char *body = malloc(1);
  CURL *easy = body ? easy_for(http, req) : NULL;
  if (easy == NULL) {
    free(body);
    return UV_ENOMEM;
  }
  body[0] = '\0';
  /* Leftovers of an earlier run of this req (rx_http_req_cleanup is the documented way). */
  free(req->resp_body);
  free(req->odata_entity_id);
  free(req->location);
  req->odata_entity_id = req->location = NULL;
  req->resp_body = body;
  req->resp_len = 0;
  req->_cap = 1;
  req->_overflow = 0;
  req->status = 0;
  req->retry_after_ms = -1;
  req->curl_code = 0;
  req->_http = http;
  req->_easy = easy;
  if (curl_multi_add_handle(http->_multi, easy) != CURLM_OK) {
    curl_easy_cleanup(easy);
    req->_easy = NULL;
    return UV_ENOMEM;
  }
  rx_fut_init(&req->fut, http->loop, cb);
  req->_prev_active = NULL;
  req->_next_active = http->_active_head;
  if (http->_active_head)
    http->_active_head->_prev_active = req;
  http->_active_head = req;
  http->active++;
  return 0;
}

char *rx_http_take_body(struct rx_http_req *req, size_t *len) {
  assert(req->_easy == NULL && "rx_http_take_body on an active request");
  char *body = req->resp_body;
  *len = req->resp_len;
  req->resp_body = NULL;
  req->resp_len = req->_cap = 0;
  return body;
}

void rx_http_req_cleanup(struct rx_http_req *req) {
  assert(req->_easy == NULL && "rx_http_req_cleanup on an active request");
  free(req->resp_body);
  free(req->odata_entity_id);
  free(req->location);
  curl_slist_free_all(req->_headers);
  req->resp_body = req->odata_entity_id = req->location = NULL;
  req->_headers = NULL;
  req->resp_len = req->_cap = 0;
}
