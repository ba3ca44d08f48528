/* Tests for src/reactor/http_server.c over real TCP on 127.0.0.1 (ephemeral ports).
 *
 * The server runs on the test's loop; each scenario's client runs on a helper thread with blocking
 * sockets (5 s receive timeouts, so nothing waits forever) and records the first failed check
 * instead of asserting, because cmocka's asserts must stay on the main thread. When the client is
 * done it wakes the loop, which closes the server; the test then asserts the client's verdict, the
 * server's counters and a clean rx_loop_close().
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cmocka.h>

#include "csurelay/reactor.h"

enum { CLI_BUF = 512 * 1024, MAX_CLIS = 8, GUARD_MS = 20000 };

enum hold_mode { HOLD_UNTIL_ORPHANED, HOLD_CLOSE_SERVER };

struct cli {
  int fd;
  size_t len;
  char buf[CLI_BUF];
};

struct resp {
  int status;
  char head[4096];
  size_t body_len;
  char body[CLI_BUF];
};

struct fx {
  uv_loop_t uv;
  struct rx_loop loop;
  struct rx_http_server srv;
  uv_async_t done;
  uv_timer_t guard;
  uv_timer_t hold_timer;
  uv_thread_t thread;
  void (*client)(struct fx *f);
  int port;
  /* written by the client thread, read after join */
  char fail[512];
  struct cli *clis[MAX_CLIS];
  struct resp *resp;
  long elapsed_ms[2];
  atomic_int orphan_handled;
  /* loop thread only */
  int client_done, srv_close_started, srv_closed, finished, timed_out;
  enum hold_mode hold_mode;
  struct rx_http_request *held;
  int orphaned_at_hold, orphaned_seen, order, responded_order, closed_order;
};

/* ------------------------------------------------------------------------------------------ */
/* Client side (helper thread)                                                                  */
/* ------------------------------------------------------------------------------------------ */

static void note_failure(struct fx *f, int line, const char *what) {
  if (f->fail[0] == '\0')
    snprintf(f->fail, sizeof(f->fail),
             "client check failed at line %d: %s (last status %d, body "
             "'%.60s')",
             line, what, f->resp->status, f->resp->body);
}

#define CHECK(f, cond)                                                                             \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      note_failure((f), __LINE__, #cond);                                                          \
      return;                                                                                      \
    }                                                                                              \
  } while (0)

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

/* A connected client on loopback, or NULL. Registered with f so it is closed however the client
 * function returns. */
static struct cli *cli_open(struct fx *f) {
  struct cli *c = NULL;
  for (int i = 0; i < MAX_CLIS && c == NULL; i++) {
    if (f->clis[i] == NULL)
      c = f->clis[i] = calloc(1, sizeof(*c));
  }
  if (c == NULL)
    return NULL;
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  struct timeval tv = {.tv_sec = 5};
  int one = 1;
  setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port)};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
    return NULL;
  return c;
}

/* Closes a client before the scenario ends (the rest are closed when it returns). */
static void cli_close(struct fx *f, struct cli *c) {
  for (int i = 0; i < MAX_CLIS; i++) {
    if (f->clis[i] == c)
      f->clis[i] = NULL;
  }
  if (c->fd >= 0)
    close(c->fd);
  free(c);
}

static int cli_sendn(struct cli *c, const char *data, size_t len) {
  while (len > 0) {
    ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
    if (n < 0)
      return -errno;
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

static int cli_send(struct cli *c, const char *data) {
  return cli_sendn(c, data, strlen(data));
}

static int cli_fill(struct cli *c) {
  ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
  if (n < 0)
    return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  c->len += (size_t)n;
  return (int)n;
}

/* Reads one complete response (head, then Content-Length bytes). 0, or -EPIPE on EOF first. */
static int cli_read(struct cli *c, struct resp *r) {
  memset(r->head, 0, sizeof(r->head));
  r->status = 0;
  for (;;) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (end != NULL) {
      size_t hlen = (size_t)(end - c->buf) + 4;
      if (hlen >= sizeof(r->head))
        return -E2BIG;
      memcpy(r->head, c->buf, hlen);
      const char *cl = strstr(r->head, "Content-Length: ");
      size_t blen = cl ? strtoul(cl + 16, NULL, 10) : 0;
      if (strncmp(r->head, "HTTP/1.1 ", 9) != 0 || blen >= sizeof(r->body))
        return -EPROTO;
      if (c->len >= hlen + blen) {
        r->status = atoi(r->head + 9);
        memcpy(r->body, c->buf + hlen, blen);
        r->body[blen] = '\0';
        r->body_len = blen;
        memmove(c->buf, c->buf + hlen + blen, c->len - hlen - blen);
        c->len -= hlen + blen;
        return 0;
      }
    }
    if (c->len == sizeof(c->buf))
      return -ENOBUFS;
    int n = cli_fill(c);
    if (n <= 0)
      return n == 0 ? -EPIPE : n;
  }
}

/* Reads the next response and compares it; body NULL = any body. */
static int got(struct fx *f, struct cli *c, int status, const char *body) {
  struct resp *r = f->resp;
  if (cli_read(c, r) < 0)
    return 0;
  return r->status == status && (body == NULL || strcmp(r->body, body) == 0);
}

static int has_header(struct fx *f, const char *line) {
  char want[512];
  snprintf(want, sizeof(want), "\r\n%s\r\n", line);
  return strstr(f->resp->head, want) != NULL;
}

/* What the server did next: 0 = closed (FIN), -ECONNRESET, -EAGAIN (still open after 5 s), or 1
 * when unexpected bytes came. */
static int cli_end(struct cli *c) {
  if (c->len > 0)
    return 1;
  char b[512];
  ssize_t n = recv(c->fd, b, sizeof(b), 0);
  if (n < 0)
    return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  return n == 0 ? 0 : 1;
}

static void client_main(void *arg) {
  struct fx *f = arg;
  f->client(f);
  for (int i = 0; i < MAX_CLIS; i++) {
    if (f->clis[i] != NULL) {
      if (f->clis[i]->fd >= 0)
        close(f->clis[i]->fd);
      free(f->clis[i]);
      f->clis[i] = NULL;
    }
  }
  uv_async_send(&f->done);
}

/* ------------------------------------------------------------------------------------------ */
/* Server side (loop thread): handlers and the fixture                                         */
/* ------------------------------------------------------------------------------------------ */

static void h_healthz(struct rx_http_request *req, void *arg) {
  rx_http_respond(req, 200, NULL, "text/plain", "ok", 2);
}

static void h_sync(struct rx_http_request *req, void *arg) {
  char body[256];
  int n = snprintf(body, sizeof(body), "sync:%s", req->query);
  rx_http_respond(req, 200, NULL, "text/plain", body, (size_t)n);
}

static void h_echo(struct rx_http_request *req, void *arg) {
  const char *x = rx_http_header(req, "x-test");
  char hdr[256];
  snprintf(hdr, sizeof(hdr), "X-Got: %s\r\n", x ? x : "-");
  rx_http_respond(req, 200, hdr, "application/octet-stream", req->body, req->body_len);
}

static void h_prefix(struct rx_http_request *req, void *arg) {
  char body[512];
  int n = snprintf(body, sizeof(body), "%s|%s", req->path, req->query);
  rx_http_respond(req, 200, NULL, "text/plain", body, (size_t)n);
}

static void h_any(struct rx_http_request *req, void *arg) {
  rx_http_respond(req, 200, NULL, "text/plain", req->method, strlen(req->method));
}

static void on_timer_closed(uv_handle_t *handle) {
  free(handle);
}

static void on_later(uv_timer_t *timer) {
  struct rx_http_request *req = timer->data;
  char body[256];
  int n = snprintf(body, sizeof(body), "later:%s", req->query);
  rx_http_respond(req, 200, NULL, "text/plain", body, (size_t)n);
  uv_close((uv_handle_t *)timer, on_timer_closed);
}

/* Answers 30 ms later, from a timer. */
static void h_later(struct rx_http_request *req, void *arg) {
  uv_timer_t *timer = malloc(sizeof(*timer));
  uv_timer_init(req->server->loop->uv, timer);
  timer->data = req;
  uv_timer_start(timer, on_later, 30, 0);
}

static void h_reset(struct rx_http_request *req, void *arg) {
  rx_http_reset(req);
}

/* Both the client and the server are done: close the fixture's own handles so the loop ends. */
static void maybe_finish(struct fx *f) {
  if (f->client_done && f->srv_closed && !f->finished) {
    f->finished = 1;
    uv_close((uv_handle_t *)&f->done, NULL);
    uv_close((uv_handle_t *)&f->guard, NULL);
    uv_close((uv_handle_t *)&f->hold_timer, NULL);
  }
}

static void on_srv_closed(struct rx_http_server *srv) {
  struct fx *f = RX_CONTAINER_OF(srv, struct fx, srv);
  f->srv_closed = 1;
  f->closed_order = ++f->order;
  maybe_finish(f);
}

static void close_server(struct fx *f) {
  if (f->srv_close_started)
    return;
  f->srv_close_started = 1;
  rx_http_server_close(&f->srv, on_srv_closed);
}

static void on_hold_timer(uv_timer_t *timer) {
  struct fx *f = timer->data;
  if (f->held == NULL)
    return;
  int orphaned = rx_http_request_orphaned(f->held);
  if (f->hold_mode == HOLD_UNTIL_ORPHANED && !orphaned && !f->timed_out)
    return; /* polled every 10 ms until the server notices the client left */
  f->orphaned_seen = orphaned;
  f->responded_order = ++f->order;
  rx_http_respond(f->held, 200, NULL, "text/plain", "late", 4); /* dropped: nobody to answer */
  f->held = NULL;
  uv_timer_stop(timer);
  atomic_store(&f->orphan_handled, 1);
}

/* Keeps the request. HOLD_CLOSE_SERVER closes the server from inside the handler and answers the
 * orphan 50 ms later; HOLD_UNTIL_ORPHANED answers once the client has gone. */
static void h_hold(struct rx_http_request *req, void *arg) {
  struct fx *f = arg;
  f->held = req;
  f->orphaned_at_hold = rx_http_request_orphaned(req);
  if (f->hold_mode == HOLD_CLOSE_SERVER) {
    close_server(f);
    uv_timer_start(&f->hold_timer, on_hold_timer, 50, 0);
  } else {
    uv_timer_start(&f->hold_timer, on_hold_timer, 10, 10);
  }
}

static void on_client_done(uv_async_t *async) {
  struct fx *f = async->data;
  f->client_done = 1;
  close_server(f);
  maybe_finish(f);
}

static void on_guard(uv_timer_t *timer) {
  struct fx *f = timer->data;
  f->timed_out = 1;
  close_server(f);
  on_hold_timer(&f->hold_timer);
}

static void add_routes(struct fx *f) {
  struct rx_http_server *srv = &f->srv;
  assert_int_equal(rx_http_server_route(srv, "GET", "/healthz", h_healthz, f), 0);
  assert_int_equal(rx_http_server_route(srv, "GET", "/sync", h_sync, f), 0);
  assert_int_equal(rx_http_server_route(srv, "POST", "/echo", h_echo, f), 0);
  assert_int_equal(rx_http_server_route(srv, "PUT", "/echo", h_echo, f), 0);
  assert_int_equal(rx_http_server_route(srv, "GET", "/path/*", h_prefix, f), 0);
  assert_int_equal(rx_http_server_route(srv, NULL, "/any", h_any, f), 0);
  assert_int_equal(rx_http_server_route(srv, "GET", "/later", h_later, f), 0);
  assert_int_equal(rx_http_server_route(srv, "GET", "/hold", h_hold, f), 0);
  assert_int_equal(rx_http_server_route(srv, "GET", "/reset", h_reset, f), 0);
}

static struct fx *fx_new(void) {
  struct fx *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  f->resp = calloc(1, sizeof(*f->resp));
  assert_non_null(f->resp);
  return f;
}

static void fx_free(struct fx *f) {
  free(f->resp);
  free(f);
}

/* Runs one scenario: server on 127.0.0.1:0, `client` on a thread, then a clean shutdown. */
static void fx_run(struct fx *f, const struct rx_http_server_opts *opts,
                   void (*client)(struct fx *)) {
  assert_int_equal(uv_loop_init(&f->uv), 0);
  assert_int_equal(rx_loop_init(&f->loop, &f->uv), 0);
  assert_int_equal(rx_http_server_init(&f->srv, &f->loop, opts), 0);
  add_routes(f);
  assert_int_equal(rx_http_server_listen(&f->srv, "127.0.0.1", 0), 0);
  assert_true(f->srv.port > 0);
  f->port = f->srv.port;
  assert_int_equal(uv_async_init(&f->uv, &f->done, on_client_done), 0);
  f->done.data = f;
  assert_int_equal(uv_timer_init(&f->uv, &f->guard), 0);
  f->guard.data = f;
  uv_timer_start(&f->guard, on_guard, GUARD_MS, 2000);
  assert_int_equal(uv_timer_init(&f->uv, &f->hold_timer), 0);
  f->hold_timer.data = f;
  f->client = client;
  assert_int_equal(uv_thread_create(&f->thread, client_main, f), 0);
  rx_loop_run(&f->loop);
  assert_int_equal(uv_thread_join(&f->thread), 0);
  assert_int_equal(rx_loop_close(&f->loop), 0);
  if (f->fail[0] != '\0')
    fail_msg("%s", f->fail);
  assert_false(f->timed_out);
  assert_true(f->srv_closed);
  assert_int_equal(f->srv.conns, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* Scenarios                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static void client_get(struct fx *f) {
  struct cli *c = cli_open(f);
  CHECK(f, c != NULL);
  CHECK(f, cli_send(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") == 0);
  CHECK(f, got(f, c, 200, "ok"));
  CHECK(f, strncmp(f->resp->head, "HTTP/1.1 200 OK\r\n", 17) == 0);
  CHECK(f, has_header(f, "Content-Length: 2"));
  CHECK(f, has_header(f, "Content-Type: text/plain"));
  CHECK(f, has_header(f, "Connection: keep-alive"));
}

static void test_get(void **state) {
  struct fx *f = fx_new();
  fx_run(f, NULL, client_get);
  assert_int_equal(f->srv.requests, 1);
  assert_int_equal(f->srv.bad_requests, 0);
  assert_int_equal(f->srv.rejected, 0);
  fx_free(f);
}

static void client_keepalive(struct fx *f) {
  char req[128], want[32];
  struct cli *c = cli_open(f);
  CHECK(f, c != NULL);
  for (int i = 0; i < 5; i++) {
    snprintf(req, sizeof(req), "GET /sync?n=%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
    snprintf(want, sizeof(want), "sync:n=%d", i);
    CHECK(f, cli_send(c, req) == 0);
    CHECK(f, got(f, c, 200, want));
    CHECK(f, has_header(f, "Connection: keep-alive"));
  }
  /* HTTP/1.1 asking to close: answered, then closed. */
  CHECK(f, cli_send(c, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n") == 0);
  CHECK(f, got(f, c, 200, "ok") && has_header(f, "Connection: close"));
  CHECK(f, cli_end(c) == 0);
  /* HTTP/1.0 closes by default... */
  struct cli *d = cli_open(f);
  CHECK(f, d != NULL && cli_send(d, "GET /healthz HTTP/1.0\r\n\r\n") == 0);
  CHECK(f, got(f, d, 200, "ok") && has_header(f, "Connection: close"));
  CHECK(f, cli_end(d) == 0);
  /* ...and stays open when it asks to. */
  struct cli *e = cli_open(f);
  CHECK(f, e != NULL);
  for (int i = 0; i < 2; i++) {
    CHECK(f, cli_send(e, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") == 0);
    CHECK(f, got(f, e, 200, "ok") && has_header(f, "Connection: keep-alive"));
  }
}

static void test_keepalive(void **state) {
  struct fx *f = fx_new();
  fx_run(f, NULL, client_keepalive);
  assert_int_equal(f->srv.requests, 9);
  fx_free(f);
}

static void client_pipeline(struct fx *f) {
  struct cli *c = cli_open(f);
  CHECK(f, c != NULL);
  CHECK(f, cli_send(c, "GET /sync?1 HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /later?2 HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /sync?3 HTTP/1.1\r\nHost: x\r\n\r\n"
                       "POST /echo HTTP/1.1\r\nContent-Length: 4\r\n\r\nfour"
                       "GET /later?5 HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /later?6 HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /sync?7 HTTP/1.1\r\nHost: x\r\n\r\n") == 0);
  CHECK(f, got(f, c, 200, "sync:1"));
  CHECK(f, got(f, c, 200, "later:2"));
  CHECK(f, got(f, c, 200, "sync:3"));
  CHECK(f, got(f, c, 200, "four"));
  CHECK(f, got(f, c, 200, "later:5"));
  CHECK(f, got(f, c, 200, "later:6"));
  CHECK(f, got(f, c, 200, "sync:7"));
  /* Deeper than the server's read buffer, behind a late answer: read-ahead fills, stops, resumes.
   */
  enum { DEEP = 600 };
  char *all = malloc(DEEP * 48 + 64);
  CHECK(f, all != NULL);
  size_t n = (size_t)sprintf(all, "GET /later?first HTTP/1.1\r\n\r\n");
  for (int i = 0; i < DEEP; i++)
    n += (size_t)sprintf(all + n, "GET /sync?%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
  int rc = cli_sendn(c, all, n);
  free(all);
  CHECK(f, rc == 0);
  CHECK(f, got(f, c, 200, "later:first"));
  for (int i = 0; i < DEEP; i++) {
    char want[32];
    snprintf(want, sizeof(want), "sync:%d", i);
    CHECK(f, got(f, c, 200, want));
  }
}

static void test_pipeline(void **state) {
  struct fx *f = fx_new();
  fx_run(f, NULL, client_pipeline);
  assert_int_equal(f->srv.requests, 7 + 1 + 600);
  fx_free(f);
}

static void client_split(struct fx *f) {
  static const char req[] = "POST /echo HTTP/1.1\r\nHost: x\r\nX-Test:  split value  \r\n"
                            "Content-Length: 11\r\n\r\nhello world";
  struct cli *c = cli_open(f);
  CHECK(f, c != NULL);
  for (size_t i = 0; i < sizeof(req) - 1; i++) {
    CHECK(f, cli_sendn(c, req + i, 1) == 0);
    sleep_ms(1); /* with TCP_NODELAY, each byte is its own segment and its own read */
  }
  CHECK(f, got(f, c, 200, "hello world"));
  CHECK(f, has_header(f, "X-Got: split value"));
}

static void test_split_bytes(void **state) {
  struct fx *f = fx_new();
  fx_run(f, NULL, client_split);
  assert_int_equal(f->srv.requests, 1);
  fx_free(f);
}

static void client_post(struct fx *f) {
  struct cli *c = cli_open(f);
  CHECK(f, c != NULL);
  /* Binary body with NULs, by Content-Length. */
  enum { BIN = 3000 };
  char head[128], bin[BIN];
  for (int i = 0; i < BIN; i++)
    bin[i] = (char)(i % 251);
  snprintf(head, sizeof(head), "POST /echo HTTP/1.1\r\nX-TEST: bin\r\nContent-Length: %d\r\n\r\n",
           BIN);
  CHECK(f, cli_send(c, head) == 0 && cli_sendn(c, bin, BIN) == 0);
  CHECK(f, got(f, c, 200, NULL) && f->resp->body_len == BIN);
  CHECK(f, memcmp(f->resp->body, bin, BIN) == 0 && has_header(f, "X-Got: bin"));
  /* Chunked. */
  CHECK(f, cli_send(c, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "5\r\nhello\r\n8\r\n chunked\r\n6\r\n world\r\n0\r\n\r\n") == 0);
  CHECK(f, got(f, c, 200, "hello chunked world") && has_header(f, "X-Got: -"));
  /* A body too big for one socket write either way: the answer goes out through uv_write. */
  enum { BIG = 300 * 1024 };
  char *big = malloc(BIG);
  CHECK(f, big != NULL);
  for (int i = 0; i < BIG; i++)
    big[i] = (char)('a' + i % 26);
  snprintf(head, sizeof(head), "PUT /echo HTTP/1.1\r\nContent-Length: %d\r\n\r\n", BIG);
  int ok = cli_send(c, head) == 0 && cli_sendn(c, big, BIG) == 0 && got(f, c, 200, NULL) &&
           f->resp->body_len == BIG && memcmp(f->resp->body, big, BIG) == 0;
  free(big);
  CHECK(f, ok);
  /* Still usable afterwards, and an empty POST has an empty body. */
  CHECK(f, cli_send(c, "POST /echo HTTP/1.1\r\nContent-Length: 0\r\n\r\n") == 0);
  CHECK(f, got(f, c, 200, "") && has_header(f, "Content-Length: 0"));
}

static void test_post_body(void **state) {
  struct fx *f = fx_new();
  fx_run(f, NULL, client_post);
  assert_int_equal(f->srv.requests, 4);
  assert_int_equal(f->srv.bad_requests, 0);
  fx_free(f);
}

static void client_expect(struct fx *f) {
  struct cli *c = cli_open(f);
  CHECK(f, c != NULL);
  CHECK(f, cli_send(
               c, "POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n") == 0);
  CHECK(f, cli_read(c, f->resp) == 0);
  CHECK(f, strcmp(f->resp->head, "HTTP/1.1 100 Continue\r\n\r\n") == 0);
  CHECK(f, cli_send(c, "hello") == 0);
  CHECK(f, got(f, c, 200, "hello"));
  /* Too large already: 413 at once, no invitation to send the body. */
  CHECK(f,
        cli_send(
            c, "POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n") == 0);
  CHECK(f, got(f, c, 413, "{\"error\":\"payload_too_large\"}"));
  CHECK(f, has_header(f, "Connection: close"));
  CHECK(f, cli_end(c) == 0);
}

static void test_expect_continue(void **state) {
  struct fx *f = fx_new();
  struct rx_http_server_opts opts = {.max_body_bytes = 1024};
  fx_run(f, &opts, client_expect);
  assert_int_equal(f->srv.requests, 2);
  assert_int_equal(f->srv.bad_requests, 1);
  fx_free(f);
}

static void client_headers_too_large(struct fx *f) {
  char req[4096];
  struct cli *c = cli_open(f);
  CHECK(f, c != NULL);
  /* Under the ceiling: fine. */
  snprintf(req, sizeof(req), "GET /healthz HTTP/1.1\r\nX-Pad: %0700d\r\n\r\n", 0);
  CHECK(f, cli_send(c, req) == 0 && got(f, c, 200, "ok"));
  snprintf(req, sizeof(req), "GET /healthz HTTP/1.1\r\nX-Big: %02000d\r\n\r\n", 0);
  CHECK(f, cli_send(c, req) == 0);
  CHECK(f, got(f, c, 431, "{\"error\":\"headers_too_large\"}"));
  CHECK(f, has_header(f, "Connection: close") && has_header(f, "Content-Type: application/json"));
  CHECK(f, cli_end(c) == 0);
  /* An endless request line counts too. */
  struct cli *d = cli_open(f);
  CHECK(f, d != NULL);
  snprintf(req, sizeof(req), "GET /healthz?q=%02000d HTTP/1.1\r\n\r\n", 0);
  CHECK(f, cli_send(d, req) == 0);
  CHECK(f, got(f, d, 431, NULL) && cli_end(d) == 0);
}

static void test_headers_too_large(void **state) {
  struct fx *f = fx_new();
  struct rx_http_server_opts opts = {.max_header_bytes = 1024};
  fx_run(f, &opts, client_headers_too_large);
  assert_int_equal(f->srv.requests, 3);
  assert_int_equal(f->srv.bad_requests, 2);
  fx_free(f);
}

static void client_body_too_large(struct fx *f) {
  char body[2048];
  memset(body, 'b', sizeof(body));
  struct cli *c = cli_open(f);
  CHECK(f, c != NULL);
  /* Exactly the ceiling is fine. */
  CHECK(f, cli_send(c, "POST /echo HTTP/1.1\r\nContent-Length: 1024\r\n\r\n") == 0);
  CHECK(f, cli_sendn(c, body, 1024) == 0 && got(f, c, 200, NULL) && f->resp->body_len == 1024);
  /* Declared too large, and sent anyway: the answer must survive the unread body. */
  CHECK(f, cli_send(c, "POST /echo HTTP/1.1\r\nContent-Length: 2048\r\n\r\n") == 0);
  CHECK(f, cli_sendn(c, body, sizeof(body)) == 0);
  CHECK(f, got(f, c, 413, "{\"error\":\"payload_too_large\"}") && cli_end(c) == 0);
  /* Chunked: no declared length, so it is counted as it arrives. */
  struct cli *d = cli_open(f);
  CHECK(f, d != NULL);
  CHECK(f, cli_send(d, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") == 0);
  for (int i = 0; i < 3; i++) {
    CHECK(f, cli_send(d, "1f4\r\n") == 0 && cli_sendn(d, body, 500) == 0);
    CHECK(f, cli_send(d, "\r\n") == 0);
  }
  CHECK(f, got(f, d, 413, "{\"error\":\"payload_too_large\"}") && cli_end(d) == 0);
  /* A client that reads the 413 and sends its body anyway: drained, never answered with RST. */
  struct cli *e = cli_open(f);
  CHECK(f, e != NULL && cli_send(e, "POST /echo HTTP/1.1\r\nContent-Length: 65536\r\n\r\n") == 0);
  CHECK(f, got(f, e, 413, NULL));
  for (int i = 0; i < 32; i++) {
    CHECK(f, cli_sendn(e, body, sizeof(body)) == 0);
    sleep_ms(2);
  }
  CHECK(f, cli_end(e) == 0);
}

static void test_body_too_large(void **state) {
  struct fx *f = fx_new();
  struct rx_http_server_opts opts = {.max_body_bytes = 1024};
  fx_run(f, &opts, client_body_too_large);
  assert_int_equal(f->srv.requests, 4);
  assert_int_equal(f->srv.bad_requests, 3);
  fx_free(f);
}

static void client_garbage(struct fx *f) {
  struct cli *c = cli_open(f);
  CHECK(f, c != NULL);
  CHECK(f, cli_sendn(c, "\x16\x03\x01\x02\x00garbage\r\n\r\n", 16) == 0);
  CHECK(f, got(f, c, 400, "{\"error\":\"bad_request\"}") && has_header(f, "Connection: close"));
  CHECK(f, cli_end(c) == 0);
  /* Garbage after a good request on the same connection: the good one is answered first. */
  struct cli *d = cli_open(f);
  CHECK(f, d != NULL);
  CHECK(f, cli_send(d, "GET /healthz HTTP/1.1\r\n\r\nGET / HTTP/9.9 nonsense\r\n\r\n") == 0);
  CHECK(f, got(f, d, 200, "ok") && got(f, d, 400, NULL) && cli_end(d) == 0);
}

static void test_garbage(void **state) {
  struct fx *f = fx_new();
  fx_run(f, NULL, client_garbage);
  assert_int_equal(f->srv.requests, 3);
  assert_int_equal(f->srv.bad_requests, 2);
  fx_free(f);
}

/* Smuggling shapes and other malformed heads: each gets a 400 and a closed connection. */
static const char *const malformed[] = {
    "POST /echo HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "POST /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    "POST /echo HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nNoColonHere\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nX-Bad: a\x01z\r\n\r\n",
    "GET /health\x7fz HTTP/1.1\r\n\r\n",
    "GET /healthz HTTP/1.1\r\n Folded: header\r\n\r\n",
    "\r\n\r\n\r\n\r\nNOTAMETHOD / HTTP/1.1\r\n\r\n",
};

static void client_malformed(struct fx *f) {
  for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
    struct cli *c = cli_open(f);
    CHECK(f, c != NULL && cli_send(c, malformed[i]) == 0);
    if (!got(f, c, 400, "{\"error\":\"bad_request\"}") || cli_end(c) != 0) {
      note_failure(f, __LINE__, malformed[i]);
      return;
    }
    cli_close(f, c);
  }
}

static void test_malformed(void **state) {
  struct fx *f = fx_new();
  fx_run(f, NULL, client_malformed);
  size_t n = sizeof(malformed) / sizeof(malformed[0]);
  assert_int_equal(f->srv.requests, n);
  assert_int_equal(f->srv.bad_requests, n);
  fx_free(f);
}

/* Fifty mixed requests in one stream, cut at random places: every answer intact and in order. */
static void client_random_splits(struct fx *f) {
  enum { N = 50 };
  char *all = malloc(N * 160);
  CHECK(f, all != NULL);
  size_t n = 0;
  for (int i = 0; i < N; i++) {
    if (i % 3 == 0)
      n += (size_t)sprintf(all + n, "GET /sync?%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
    else if (i % 3 == 1)
      n += (size_t)sprintf(all + n, "POST /echo HTTP/1.1\r\nContent-Length: %d\r\n\r\nbody%d",
                           i < 10 ? 5 : 6, i);
    else
      n += (size_t)sprintf(all + n,
                           "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "2\r\nch\r\n%x\r\n%d\r\n0\r\n\r\n",
                           i < 10 ? 1 : 2, i);
  }
  struct cli *c = cli_open(f);
  uint64_t rng = 0x9e3779b97f4a7c15u;
  int rc = c != NULL ? 0 : -1;
  for (size_t off = 0; rc == 0 && off < n;) {
    size_t len = 1 + rx_rand64(&rng) % 40;
    len = len > n - off ? n - off : len;
    rc = cli_sendn(c, all + off, len);
    off += len;
    if (rx_rand64(&rng) % 4 == 0)
      sleep_ms(1);
  }
  free(all);
  CHECK(f, rc == 0);
  for (int i = 0; i < N; i++) {
    char want[32];
    snprintf(want, sizeof(want), i % 3 == 0 ? "sync:%d" : i % 3 == 1 ? "body%d" : "ch%d", i);
    CHECK(f, got(f, c, 200, want));
  }
}

static void test_random_splits(void **state) {
  struct fx *f = fx_new();
  fx_run(f, NULL, client_random_splits);
  assert_int_equal(f->srv.requests, 50);
  fx_free(f);
}

static void client_routes(struct fx *f) {
  struct cli *c = cli_open(f);
  CHECK(f, c != NULL);
  CHECK(f, cli_send(c, "GET /nope HTTP/1.1\r\n\r\n") == 0);
  CHECK(f, got(f, c, 404, "{\"error\":\"not_found\"}"));
  CHECK(f, strncmp(f->resp->head, "HTTP/1.1 404 Not Found\r\n", 24) == 0);
  CHECK(f, has_header(f, "Connection: keep-alive"));
  CHECK(f, cli_send(c, "DELETE /echo HTTP/1.1\r\n\r\n") == 0);
  CHECK(f, got(f, c, 405, "{\"error\":\"method_not_allowed\"}"));
  CHECK(f, has_header(f, "Allow: POST, PUT"));
  CHECK(f, cli_send(c, "POST /healthz HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi") == 0);
  CHECK(f, got(f, c, 405, NULL) && has_header(f, "Allow: GET"));
  CHECK(f, cli_send(c, "GET /path/a/b?x=1&y HTTP/1.1\r\n\r\n") == 0);
  CHECK(f, got(f, c, 200, "/path/a/b|x=1&y"));
  CHECK(f, cli_send(c, "GET /pat HTTP/1.1\r\n\r\n") == 0);
  CHECK(f, got(f, c, 404, NULL));
  CHECK(f, cli_send(c, "PATCH /any HTTP/1.1\r\n\r\n") == 0);
  CHECK(f, got(f, c, 200, "PATCH"));
  CHECK(f, cli_send(c, "GET /healthz?probe=1 HTTP/1.1\r\n\r\n") == 0);
  CHECK(f, got(f, c, 200, "ok"));
  /* HEAD: the length of the body, without the body. */
  CHECK(f, cli_send(c, "HEAD /any HTTP/1.1\r\n\r\n") == 0);
  CHECK(f, cli_fill(c) > 0 && memmem(c->buf, c->len, "Content-Length: 4\r\n", 19) != NULL);
  CHECK(f, c->len > 4 && memcmp(c->buf + c->len - 4, "\r\n\r\n", 4) == 0);
}

static void test_routes_404_405(void **state) {
  struct fx *f = fx_new();
  fx_run(f, NULL, client_routes);
  assert_int_equal(f->srv.requests, 8);
  assert_int_equal(f->srv.bad_requests, 4);
  fx_free(f);
}

static void client_max_conns(struct fx *f) {
  struct cli *a = cli_open(f);
  struct cli *b = cli_open(f);
  CHECK(f, a != NULL && b != NULL);
  CHECK(f, cli_send(a, "GET /healthz HTTP/1.1\r\n\r\n") == 0 && got(f, a, 200, "ok"));
  CHECK(f, cli_send(b, "GET /healthz HTTP/1.1\r\n\r\n") == 0 && got(f, b, 200, "ok"));
  struct cli *c = cli_open(f);
  CHECK(f, c != NULL);
  CHECK(f, cli_end(c) == 0); /* accepted and closed at once */
  CHECK(f, cli_send(a, "GET /sync?again HTTP/1.1\r\n\r\n") == 0 && got(f, a, 200, "sync:again"));
}

static void test_max_conns(void **state) {
  struct fx *f = fx_new();
  struct rx_http_server_opts opts = {.max_conns = 2};
  fx_run(f, &opts, client_max_conns);
  assert_int_equal(f->srv.rejected, 1);
  assert_int_equal(f->srv.requests, 3);
  fx_free(f);
}

static void client_idle(struct fx *f) {
  static const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  /* Slowloris: a byte every 50 ms never completes a request inside the 300 ms window. */
  struct cli *c = cli_open(f);
  CHECK(f, c != NULL);
  long start = now_ms();
  size_t sent = 0;
  int cut = 0;
  while (!cut && sent < sizeof(req) - 1 && now_ms() - start < 5000) {
    if (cli_sendn(c, req + sent, 1) < 0) {
      cut = 1;
      break;
    }
    sent++;
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    if (poll(&pfd, 1, 50) > 0) {
      int end = cli_end(c);
      cut = end == 0 || end == -ECONNRESET;
    }
  }
  f->elapsed_ms[0] = now_ms() - start;
  CHECK(f, cut && sent < sizeof(req) - 1);
  /* An idle keep-alive connection is closed the same way, counted from its last answer. */
  struct cli *d = cli_open(f);
  CHECK(f, d != NULL && cli_send(d, req) == 0 && got(f, d, 200, "ok"));
  start = now_ms();
  CHECK(f, cli_end(d) == 0);
  f->elapsed_ms[1] = now_ms() - start;
}

static void test_idle_timeout(void **state) {
  struct fx *f = fx_new();
  struct rx_http_server_opts opts = {.idle_timeout_ms = 300};
  fx_run(f, &opts, client_idle);
  assert_in_range(f->elapsed_ms[0], 250, 2000);
  assert_in_range(f->elapsed_ms[1], 250, 2000);
  assert_int_equal(f->srv.requests, 1);
  fx_free(f);
}

static void client_orphan(struct fx *f) {
  struct cli *c = cli_open(f);
  CHECK(f, c != NULL && cli_send(c, "GET /hold HTTP/1.1\r\n\r\n") == 0);
  sleep_ms(50);
  close(c->fd);
  c->fd = -1;
  for (int i = 0; i < 300 && !atomic_load(&f->orphan_handled); i++)
    sleep_ms(10);
  CHECK(f, atomic_load(&f->orphan_handled));
  /* The server carries on. */
  struct cli *d = cli_open(f);
  CHECK(f, d != NULL && cli_send(d, "GET /healthz HTTP/1.1\r\n\r\n") == 0 && got(f, d, 200, "ok"));
}

static void test_orphan(void **state) {
  struct fx *f = fx_new();
  f->hold_mode = HOLD_UNTIL_ORPHANED;
  fx_run(f, NULL, client_orphan);
  assert_false(f->orphaned_at_hold);
  assert_true(f->orphaned_seen);
  assert_int_equal(f->srv.requests, 1); /* the dropped answer is not counted */
  fx_free(f);
}

static void client_reset(struct fx *f) {
  struct cli *c = cli_open(f);
  CHECK(f, c != NULL && cli_send(c, "GET /reset HTTP/1.1\r\n\r\n") == 0);
  CHECK(f, cli_end(c) == -ECONNRESET);
  struct cli *d = cli_open(f);
  CHECK(f, d != NULL && cli_send(d, "GET /healthz HTTP/1.1\r\n\r\n") == 0 && got(f, d, 200, "ok"));
}

static void test_reset(void **state) {
  struct fx *f = fx_new();
  fx_run(f, NULL, client_reset);
  assert_int_equal(f->srv.requests, 1);
  fx_free(f);
}

static void client_server_close(struct fx *f) {
  struct cli *a = cli_open(f);
  CHECK(f, a != NULL && cli_send(a, "GET /healthz HTTP/1.1\r\n\r\n") == 0 && got(f, a, 200, "ok"));
  struct cli *b = cli_open(f);
  CHECK(f, b != NULL && cli_send(b, "GET /hold HTTP/1.1\r\n\r\n") == 0);
  CHECK(f, cli_end(b) == 0); /* no answer: the server closed with the request pending */
  CHECK(f, cli_end(a) == 0); /* the idle keep-alive connection is closed too */
}

static void test_server_close(void **state) {
  struct fx *f = fx_new();
  f->hold_mode = HOLD_CLOSE_SERVER;
  fx_run(f, NULL, client_server_close);
  assert_true(f->orphaned_seen);
  /* The close callback waited for the orphan's release. */
  assert_int_equal(f->responded_order, 1);
  assert_int_equal(f->closed_order, 2);
  assert_int_equal(f->srv.requests, 1);
  fx_free(f);
}

static void on_api_closed(struct rx_http_server *srv) {
  (*(int *)srv->data)++;
}

static void test_api_errors(void **state) {
  uv_loop_t uv;
  struct rx_loop loop;
  struct rx_http_server srv;
  assert_int_equal(uv_loop_init(&uv), 0);
  assert_int_equal(rx_loop_init(&loop, &uv), 0);
  assert_int_equal(rx_http_server_init(&srv, &loop, NULL), 0);
  assert_int_equal(srv.opts.max_header_bytes, 8192);
  assert_int_equal(srv.opts.max_body_bytes, 1024 * 1024);
  assert_int_equal(srv.opts.max_conns, 1024);
  assert_int_equal(srv.opts.idle_timeout_ms, 30000);
  assert_int_equal(rx_http_server_route(&srv, "GET", NULL, h_healthz, NULL), UV_EINVAL);
  for (int i = 0; i < RX_HTTP_MAX_ROUTES; i++)
    assert_int_equal(rx_http_server_route(&srv, "GET", "/x", h_healthz, NULL), 0);
  assert_int_equal(rx_http_server_route(&srv, "GET", "/y", h_healthz, NULL), UV_ENOSPC);
  assert_int_equal(rx_http_server_listen(&srv, "not an address", 0), UV_EINVAL);
  assert_int_equal(rx_http_server_listen(&srv, "127.0.0.1", 70000), UV_EINVAL);
  int closed = 0;
  srv.data = &closed;
  rx_http_server_close(&srv, on_api_closed);
  rx_loop_run(&loop);
  assert_int_equal(closed, 1);
  assert_int_equal(rx_loop_close(&loop), 0);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN); /* a server writing to a vanished client must see EPIPE, not die */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_api_errors),
      cmocka_unit_test(test_get),
      cmocka_unit_test(test_keepalive),
      cmocka_unit_test(test_pipeline),
      cmocka_unit_test(test_split_bytes),
      cmocka_unit_test(test_random_splits),
      cmocka_unit_test(test_post_body),
      cmocka_unit_test(test_expect_continue),
      cmocka_unit_test(test_headers_too_large),
      cmocka_unit_test(test_body_too_large),
      cmocka_unit_test(test_garbage),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_routes_404_405),
      cmocka_unit_test(test_max_conns),
      cmocka_unit_test(test_idle_timeout),
      cmocka_unit_test(test_orphan),
      cmocka_unit_test(test_reset),
      cmocka_unit_test(test_server_close),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
