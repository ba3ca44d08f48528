/* The HTTP/1.1 server: llhttp on libuv TCP, one parser per connection.
 *
 * A connection parses until a message completes, then pauses the parser and hands the request to
 * its route. Nothing more is parsed until that answer is written, so pipelined requests are
 * answered in order and a slow handler is the backpressure. Bytes that arrive meanwhile wait,
 * unparsed, in the connection's fixed read buffer: reading goes on only so that a client that
 * leaves is noticed (its request becomes an orphan), and stops when that buffer is full.
 *
 * Every buffer is per connection and reused from request to request, so the hot path (a keep-alive
 * GET answered at once) allocates nothing: one read, one parse, one uv_try_write.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>

#include "internal.h"

enum {
  READ_BUF = 16384,  /* unparsed bytes per connection; also the read-ahead ceiling while paused */
  BUF_KEEP = 65536,  /* body and answer buffers above this are freed once the request is answered */
  LINGER_MS = 2000,  /* how long a closing connection drains the client's bytes at most */
  HEAD_SLACK = 192,  /* status line, Content-Length, Content-Type and Connection, without values */
  SWEEP_MIN_MS = 10, /* the idle sweep runs every idle_timeout/4, within these bounds */
  SWEEP_MAX_MS = 1000,
};

struct conn {
  uv_tcp_t tcp; /* first: libuv's callbacks lead back to the connection by a cast */
  llhttp_t parser;
  struct rx_http_server *srv;
  struct conn *prev;
  struct conn *next;
  struct rx_http_request req; /* the one request this connection has in flight */
  uv_write_t write_req;
  uv_write_t cont_req;
  uv_shutdown_t shut_req;
  uint64_t mark; /* accept or the last answer: the idle window starts here */
  char *wbuf;    /* the answer being written; stable until its write completes */
  size_t wcap;
  char *body; /* the request body, NUL-terminated */
  size_t body_len;
  size_t body_cap;
  char *head; /* request-target, then name\0value\0 per header; head_cap bytes at most */
  size_t head_len;
  size_t head_cap;
  size_t hdr_off;  /* where the first header name starts (after the target) */
  size_t name_off; /* the header being collected */
  size_t value_off;
  unsigned nheaders;
  size_t roff; /* unparsed bytes: rbuf[roff .. roff + rlen) */
  size_t rlen;
  int limit_status; /* 413 or 431 once a ceiling stopped the parser */
  unsigned reading : 1, pending : 1, writing : 1, continuing : 1, close_after : 1, lingering : 1,
      closing : 1, closed : 1, keep_alive : 1, in_drive : 1, expect : 1, head_only : 1;
  char rbuf[READ_BUF];
};

static void drive(struct conn *c);
static void on_conn_closed(uv_handle_t *handle);

/* ------------------------------------------------------------------------------------------ */
/* Connection lifetime                                                                          */
/* ------------------------------------------------------------------------------------------ */

static void server_maybe_closed(struct rx_http_server *srv) {
  if (srv->_closing != 1 || srv->_open_handles > 0 || srv->_conn_head != NULL)
    return;
  srv->_closing = 2; /* the callback runs once, and may free srv */
  if (srv->_close_cb)
    srv->_close_cb(srv);
}

/* A connection's memory outlives its socket while a request is pending (an orphan): both the
 * socket's close and the request's release must happen before it goes. */
static void conn_release(struct conn *c) {
  if (!c->closed || c->pending)
    return;
  struct rx_http_server *srv = c->srv;
  if (c->prev)
    c->prev->next = c->next;
  else
    srv->_conn_head = c->next;
  if (c->next)
    c->next->prev = c->prev;
  free(c->wbuf);
  free(c->body);
  free(c);
  server_maybe_closed(srv);
}

static void conn_close(struct conn *c) {
  if (c->closing)
    return;
  c->closing = 1;
  c->reading = 0;
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_conn_closed(uv_handle_t *handle) {
  struct conn *c = (struct conn *)handle;
  c->closed = 1;
  c->srv->conns--;
  conn_release(c);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  if (status < 0)
    conn_close(req->data);
}

/* Closing right after an error answer would make the kernel send RST if the client's body is still
 * arriving, and the RST can destroy the answer before the client reads it. So send FIN, read and
 * drop what still comes until the client closes, and let the sweep end it after LINGER_MS. */
static void linger(struct conn *c) {
  c->lingering = 1;
  c->roff = c->rlen = 0;
  c->mark = rx_now_ms(c->srv->loop);
  c->shut_req.data = c;
  if (uv_shutdown(&c->shut_req, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
    conn_close(c);
}

static struct conn *conn_create(struct rx_http_server *srv) {
  struct conn *c = calloc(1, sizeof(*c) + srv->opts.max_header_bytes);
  if (c == NULL)
    return NULL;
  if (uv_tcp_init(srv->loop->uv, &c->tcp) < 0) {
    free(c);
    return NULL;
  }
  c->srv = srv;
  c->head = (char *)(c + 1);
  c->head_cap = srv->opts.max_header_bytes;
  c->next = srv->_conn_head;
  if (c->next)
    c->next->prev = c;
  srv->_conn_head = c;
  srv->conns++;
  return c;
}

/* ------------------------------------------------------------------------------------------ */
/* Parser callbacks: collect the head and body under their ceilings                            */
/* ------------------------------------------------------------------------------------------ */

static int too_large(struct conn *c, int status) {
  c->limit_status = status;
  llhttp_set_error_reason(&c->parser, status == 431 ? "headers too large" : "body too large");
  return -1;
}

static int head_put(struct conn *c, const char *at, size_t len) {
  if (len > c->head_cap - c->head_len)
    return too_large(c, 431);
  memcpy(c->head + c->head_len, at, len);
  c->head_len += len;
  return 0;
}

static int on_message_begin(llhttp_t *p) {
  struct conn *c = p->data;
  c->head_len = c->hdr_off = c->name_off = c->value_off = 0;
  c->nheaders = 0;
  c->body_len = 0;
  c->expect = c->head_only = 0;
  c->limit_status = 0;
  return 0;
}

static int on_span(llhttp_t *p, const char *at, size_t len) {
  return head_put(p->data, at, len);
}

static int on_url_complete(llhttp_t *p) {
  struct conn *c = p->data;
  int rc = head_put(c, "", 1);
  c->hdr_off = c->name_off = c->head_len;
  return rc;
}

static int on_header_field_complete(llhttp_t *p) {
  struct conn *c = p->data;
  int rc = head_put(c, "", 1);
  c->value_off = c->head_len;
  return rc;
}

static int on_header_value_complete(llhttp_t *p) {
  struct conn *c = p->data;
  /* llhttp keeps trailing whitespace in a value; a header lookup should not see it. */
  while (c->head_len > c->value_off &&
         (c->head[c->head_len - 1] == ' ' || c->head[c->head_len - 1] == '\t'))
    c->head_len--;
  if (head_put(c, "", 1) < 0)
    return -1;
  const char *name = c->head + c->name_off;
  if (c->value_off - c->name_off == sizeof("expect") && strcasecmp(name, "expect") == 0 &&
      strcasecmp(c->head + c->value_off, "100-continue") == 0)
    c->expect = 1;
  c->nheaders++;
  c->name_off = c->head_len;
  return 0;
}

static void on_continue_written(uv_write_t *req, int status) {
  struct conn *c = req->data;
  c->continuing = 0;
  if (status < 0)
    conn_close(c);
}

/* The interim answer goes out before the body is read. libuv's uv_try_write refuses while writes
 * are queued, so the final answer can never overtake it. */
static void send_continue(struct conn *c) {
  static const char msg[] = "HTTP/1.1 100 Continue\r\n\r\n";
  uv_buf_t buf = uv_buf_init((char *)msg, sizeof(msg) - 1);
  int n = uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
  if (n == (int)buf.len || (n < 0 && n != UV_EAGAIN) || c->continuing)
    return; /* a failed write shows up on the read side as the client leaving */
  if (n > 0) {
    buf.base += n;
    buf.len -= (unsigned)n;
  }
  c->cont_req.data = c;
  if (uv_write(&c->cont_req, (uv_stream_t *)&c->tcp, &buf, 1, on_continue_written) == 0)
    c->continuing = 1;
}

static int on_headers_complete(llhttp_t *p) {
  struct conn *c = p->data;
  /* A declared length over the ceiling is refused before any of it is read (or invited). */
  if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->srv->opts.max_body_bytes)
    return too_large(c, 413);
  int has_body = (p->flags & F_CHUNKED) || p->content_length > 0;
  if (c->expect && has_body && p->http_major == 1 && p->http_minor >= 1)
    send_continue(c);
  return 0;
}

static int body_reserve(struct conn *c, size_t len) {
  if (len < c->body_cap)
    return 0;
  /* Doubling, up to the ceiling plus the NUL; len is already known to be within the ceiling. */
  size_t max = c->srv->opts.max_body_bytes;
  size_t cap = c->body_cap ? c->body_cap : 1024;
  while (cap <= len && cap < SIZE_MAX / 2)
    cap *= 2;
  if (cap > max && max < SIZE_MAX)
    cap = max + 1;
  char *body = realloc(c->body, cap);
  if (body == NULL)
    return UV_ENOMEM;
  c->body = body;
  c->body_cap = cap;
  return 0;
}

/* Chunked bodies have no declared length, so the ceiling is checked as the bytes arrive. */
static int on_body(llhttp_t *p, const char *at, size_t len) {
  struct conn *c = p->data;
  if (len > c->srv->opts.max_body_bytes - c->body_len)
    return too_large(c, 413);
  if (body_reserve(c, c->body_len + len) < 0) {
    c->limit_status = 503;
    return -1;
  }
  memcpy(c->body + c->body_len, at, len);
  c->body_len += len;
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  struct conn *c = p->data;
  /* Upgrades (WebSocket, CONNECT) are not served: answer the request, then close. */
  c->keep_alive = llhttp_should_keep_alive(p) && !p->upgrade;
  return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_span,
    .on_header_field = on_span,
    .on_header_value = on_span,
    .on_url_complete = on_url_complete,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ------------------------------------------------------------------------------------------ */
/* Answers                                                                                      */
/* ------------------------------------------------------------------------------------------ */

static const struct {
  int status;
  const char *reason;
  const char *error; /* the body when the server answers by itself */
} statuses[] = {
    {200, "OK", NULL},
    {201, "Created", NULL},
    {202, "Accepted", NULL},
    {204, "No Content", NULL},
    {301, "Moved Permanently", NULL},
    {302, "Found", NULL},
    {304, "Not Modified", NULL},
    {400, "Bad Request", "{\"error\":\"bad_request\"}"},
    {401, "Unauthorized", NULL},
    {403, "Forbidden", NULL},
    {404, "Not Found", "{\"error\":\"not_found\"}"},
    {405, "Method Not Allowed", "{\"error\":\"method_not_allowed\"}"},
    {408, "Request Timeout", NULL},
    {409, "Conflict", NULL},
    {413, "Payload Too Large", "{\"error\":\"payload_too_large\"}"},
    {415, "Unsupported Media Type", NULL},
    {422, "Unprocessable Content", NULL},
    {429, "Too Many Requests", NULL},
    {431, "Request Header Fields Too Large", "{\"error\":\"headers_too_large\"}"},
    {500, "Internal Server Error", NULL},
    {501, "Not Implemented", NULL},
    {502, "Bad Gateway", NULL},
    {503, "Service Unavailable", "{\"error\":\"unavailable\"}"},
    {504, "Gateway Timeout", NULL},
};

static size_t status_index(int status) {
  size_t n = sizeof(statuses) / sizeof(statuses[0]);
  for (size_t i = 0; i < n; i++) {
    if (statuses[i].status == status)
      return i;
  }
  return n;
}

static const char *reason_phrase(int status) {
  size_t i = status_index(status);
  return i < sizeof(statuses) / sizeof(statuses[0]) ? statuses[i].reason : "Unknown";
}

static char *put(char *p, const void *s, size_t len) {
  if (len > 0) /* s may be NULL when empty, which memcpy does not allow */
    memcpy(p, s, len);
  return p + len;
}

#define PUT_LIT(p, lit) put((p), (lit), sizeof(lit) - 1)

static char *put_uint(char *p, uint64_t v) {
  char tmp[20];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n)
    *p++ = tmp[--n];
  return p;
}

/* A rare big body or answer should not stay pinned to an idle keep-alive connection. */
static void trim_buffers(struct conn *c) {
  if (c->body_cap > BUF_KEEP) {
    free(c->body);
    c->body = NULL;
    c->body_cap = 0;
  }
  if (c->wcap > BUF_KEEP && !c->writing) {
    free(c->wbuf);
    c->wbuf = NULL;
    c->wcap = 0;
  }
}

static void on_written(uv_write_t *req, int status) {
  struct conn *c = req->data;
  c->writing = 0;
  if (status < 0) {
    conn_close(c);
    return;
  }
  trim_buffers(c);
  drive(c);
}

/* One write per answer: straight from the connection's buffer when the socket takes it all, else
 * queued from that same buffer, which nothing touches until on_written. */
static int write_out(struct conn *c, size_t len) {
  uv_buf_t buf = uv_buf_init(c->wbuf, (unsigned)len);
  int n = uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
  if (n >= 0 && (size_t)n == len)
    return 0;
  if (n < 0 && n != UV_EAGAIN)
    return n;
  if (n > 0) {
    buf.base += n;
    buf.len -= (unsigned)n;
  }
  c->write_req.data = c;
  int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &buf, 1, on_written);
  if (rc == 0)
    c->writing = 1;
  return rc;
}

static int send_answer(struct conn *c, int status, const char *headers, const char *ctype,
                       const void *body, size_t len) {
  size_t hlen = headers ? strlen(headers) : 0;
  size_t clen = ctype ? strlen(ctype) : 0;
  const char *reason = reason_phrase(status);
  int no_body = status == 204 || status == 304;
  size_t blen = (c->head_only || no_body) ? 0 : len;
  size_t need = HEAD_SLACK + strlen(reason) + hlen + clen + blen;
  if (need > c->wcap) {
    size_t cap = need < 1024 ? 1024 : need;
    char *w = realloc(c->wbuf, cap);
    if (w == NULL)
      return UV_ENOMEM;
    c->wbuf = w;
    c->wcap = cap;
  }
  char *p = PUT_LIT(c->wbuf, "HTTP/1.1 ");
  p = put_uint(p, (uint64_t)status);
  *p++ = ' ';
  p = put(p, reason, strlen(reason));
  if (!no_body) {
    p = PUT_LIT(p, "\r\nContent-Length: ");
    p = put_uint(p, len);
  }
  if (ctype) {
    p = PUT_LIT(p, "\r\nContent-Type: ");
    p = put(p, ctype, clen);
  }
  p = c->close_after ? PUT_LIT(p, "\r\nConnection: close\r\n")
                     : PUT_LIT(p, "\r\nConnection: keep-alive\r\n");
  p = put(p, headers, hlen);
  p = PUT_LIT(p, "\r\n");
  p = put(p, body, blen);
  return write_out(c, (size_t)(p - c->wbuf));
}

/* An answer the server writes itself (400, 404, 405, 413, 431 or 503). A 4xx counts as a bad
 * request. */
static int answer_self(struct conn *c, int status, const char *headers) {
  const char *body = statuses[status_index(status)].error;
  if (status >= 400 && status < 500)
    c->srv->bad_requests++;
  return send_answer(c, status, headers, "application/json", body, strlen(body));
}

void rx_http_respond(struct rx_http_request *req, int status, const char *headers,
                     const char *content_type, const void *body, size_t body_len) {
  struct conn *c = req->_conn;
  if (c == NULL || !c->pending)
    return;
  c->pending = 0;
  if (c->closing) {
    conn_release(c); /* an orphan: the answer has nowhere to go */
    return;
  }
  if (status < 100 || status > 999)
    status = 500;
  c->close_after = !c->keep_alive || c->srv->_closing;
  c->mark = rx_now_ms(c->srv->loop);
  if (send_answer(c, status, headers, content_type, body, body_len) < 0) {
    conn_close(c);
    return;
  }
  c->srv->requests++;
  trim_buffers(c);
  drive(c);
}

void rx_http_reset(struct rx_http_request *req) {
  struct conn *c = req->_conn;
  if (c == NULL || !c->pending)
    return;
  c->pending = 0;
  if (c->closing) {
    conn_release(c);
    return;
  }
  c->closing = 1;
  c->reading = 0;
  if (uv_tcp_close_reset(&c->tcp, on_conn_closed) < 0)
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

int rx_http_request_orphaned(const struct rx_http_request *req) {
  const struct conn *c = req->_conn;
  return c != NULL && c->closing;
}

const char *rx_http_header(const struct rx_http_request *req, const char *name) {
  const struct conn *c = req->_conn;
  if (c == NULL || name == NULL)
    return NULL;
  const char *p = c->head + c->hdr_off;
  for (unsigned i = 0; i < c->nheaders; i++) {
    const char *value = p + strlen(p) + 1;
    if (strcasecmp(p, name) == 0)
      return value;
    p = value + strlen(value) + 1;
  }
  return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Routing and the read/parse/answer cycle                                                      */
/* ------------------------------------------------------------------------------------------ */

static int path_matches(const char *route, const char *path) {
  size_t len = strlen(route);
  if (len > 0 && route[len - 1] == '*')
    return strncmp(route, path, len - 1) == 0;
  return strcmp(route, path) == 0;
}

/* The first route matching path and method. When only the path matches, `allow` collects the
 * methods that would have, for the 405's Allow header ("" when the path matched nothing). */
static const struct rx_http_route *find_route(const struct rx_http_server *srv, const char *method,
                                              const char *path, char *allow, size_t cap) {
  size_t n = 0;
  allow[0] = '\0';
  for (unsigned i = 0; i < srv->_nroutes; i++) {
    const struct rx_http_route *r = &srv->_routes[i];
    if (!path_matches(r->path, path))
      continue;
    if (r->method == NULL || strcmp(r->method, method) == 0)
      return r;
    size_t mlen = strlen(r->method);
    if (strstr(allow, r->method) == NULL && n + mlen + 3 < cap) {
      if (n > 0)
        n = (size_t)(PUT_LIT(allow + n, ", ") - allow);
      n = (size_t)(put(allow + n, r->method, mlen) - allow);
      allow[n] = '\0';
    }
  }
  return NULL;
}

static void dispatch(struct conn *c) {
  struct rx_http_request *req = &c->req;
  char *path = c->head;
  char *q = memchr(path, '?', c->hdr_off > 0 ? c->hdr_off - 1 : 0);
  if (q != NULL)
    *q = '\0';
  if (c->body != NULL)
    c->body[c->body_len] = '\0';
  *req = (struct rx_http_request){
      .method = llhttp_method_name((llhttp_method_t)c->parser.method),
      .path = c->hdr_off > 0 ? path : "",
      .query = q != NULL ? q + 1 : "",
      .body = c->body_len > 0 ? c->body : "",
      .body_len = c->body_len,
      .server = c->srv,
      ._conn = c,
  };
  c->head_only = c->parser.method == HTTP_HEAD;
  c->pending = 1;
  char allow[128];
  const struct rx_http_route *route = find_route(c->srv, req->method, req->path, allow, 100);
  if (route != NULL) {
    route->handler(req, route->arg);
    return;
  }
  c->pending = 0;
  c->close_after = !c->keep_alive;
  c->mark = rx_now_ms(c->srv->loop);
  char hdr[sizeof(allow) + 16];
  char *end = PUT_LIT(hdr, "Allow: ");
  end = put(end, allow, strlen(allow));
  *PUT_LIT(end, "\r\n") = '\0';
  if (answer_self(c, allow[0] ? 405 : 404, allow[0] ? hdr : NULL) < 0)
    conn_close(c);
  else
    c->srv->requests++;
  trim_buffers(c);
}

/* Parses what is buffered up to the end of the next message, and dispatches it. */
static void parse(struct conn *c) {
  const char *data = c->rbuf + c->roff;
  llhttp_errno_t err = llhttp_execute(&c->parser, data, c->rlen);
  if (err == HPE_OK) {
    c->roff = c->rlen = 0;
    return;
  }
  if (err == HPE_PAUSED) {
    size_t used = (size_t)(llhttp_get_error_pos(&c->parser) - data);
    c->roff += used;
    c->rlen -= used;
    llhttp_resume(&c->parser);
    dispatch(c);
    return;
  }
  /* Any other error leaves the parser dead: answer and close. */
  c->roff = c->rlen = 0;
  c->close_after = 1;
  c->head_only = 0;
  c->mark = rx_now_ms(c->srv->loop);
  if (answer_self(c, c->limit_status ? c->limit_status : 400, NULL) < 0)
    conn_close(c);
  else
    c->srv->requests++;
}

static void on_alloc(uv_handle_t *handle, size_t size, uv_buf_t *buf) {
  struct conn *c = (struct conn *)handle;
  if (c->roff > 0) {
    memmove(c->rbuf, c->rbuf + c->roff, c->rlen);
    c->roff = 0;
  }
  *buf = uv_buf_init(c->rbuf + c->rlen, (unsigned)(READ_BUF - c->rlen));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  struct conn *c = (struct conn *)stream;
  if (nread > 0) {
    if (c->lingering)
      return; /* drained and dropped */
    c->rlen += (size_t)nread;
    drive(c);
    return;
  }
  if (nread == 0 || nread == UV_ENOBUFS)
    return;
  /* EOF or an error: the client is gone. A request still being handled becomes an orphan.
   * llhttp_finish is not needed: a request never ends at EOF, so a partial one is simply dropped.
   */
  conn_close(c);
}

/* Reads whenever there is room: parsed at once when idle, held as read-ahead while paused. */
static void update_reading(struct conn *c) {
  if (c->closing)
    return;
  int want = c->rlen < READ_BUF;
  if (want && !c->reading) {
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
      conn_close(c);
      return;
    }
    c->reading = 1;
  } else if (!want && c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
}

/* Advances the connection as far as it can go. Re-entered from a handler that answers at once, it
 * returns and lets the outer call loop, so a deep pipeline never deepens the stack. */
static void drive(struct conn *c) {
  if (c->in_drive)
    return;
  c->in_drive = 1;
  while (!c->closing && !c->pending && !c->writing && !c->lingering) {
    if (c->close_after) {
      linger(c);
      break;
    }
    if (c->rlen == 0)
      break;
    parse(c);
  }
  c->in_drive = 0;
  update_reading(c);
}

/* ------------------------------------------------------------------------------------------ */
/* The server: accept, sweep, listen, close                                                     */
/* ------------------------------------------------------------------------------------------ */

static void on_rejected_closed(uv_handle_t *handle) {
  free(handle);
}

static void reject(struct rx_http_server *srv, uv_stream_t *listener) {
  /* libuv stops accepting until the pending socket is taken, so even a refusal must accept it. */
  uv_tcp_t *tcp = malloc(sizeof(*tcp));
  if (tcp == NULL || uv_tcp_init(srv->loop->uv, tcp) < 0) {
    free(tcp);
    return;
  }
  if (uv_accept(listener, (uv_stream_t *)tcp) == 0)
    srv->rejected++;
  uv_close((uv_handle_t *)tcp, on_rejected_closed);
}

static void on_connection(uv_stream_t *listener, int status) {
  struct rx_http_server *srv = RX_CONTAINER_OF(listener, struct rx_http_server, _listener);
  if (status < 0 || srv->_closing)
    return;
  struct conn *c = srv->conns < srv->opts.max_conns ? conn_create(srv) : NULL;
  if (c == NULL) {
    reject(srv, listener);
    return;
  }
  c->mark = rx_now_ms(srv->loop);
  llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
  c->parser.data = c;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0) {
    conn_close(c);
    return;
  }
  /* Answers are single small writes; Nagle would hold a pipelined second one for an ACK. */
  uv_tcp_nodelay(&c->tcp, 1);
  update_reading(c);
}

static uint64_t sweep_period(const struct rx_http_server *srv) {
  uint64_t period = srv->opts.idle_timeout_ms / 4;
  return period < SWEEP_MIN_MS ? SWEEP_MIN_MS : period > SWEEP_MAX_MS ? SWEEP_MAX_MS : period;
}

/* One timer for all connections: a connection waiting on its handler is the handler's business;
 * any other one gets idle_timeout_ms from accept or its last answer to complete a request. */
static uint64_t on_sweep(struct rx_timer *timer) {
  struct rx_http_server *srv = RX_CONTAINER_OF(timer, struct rx_http_server, _sweep);
  uint64_t now = rx_now_ms(srv->loop);
  uint64_t idle = srv->opts.idle_timeout_ms;
  uint64_t linger_ms = idle < LINGER_MS ? idle : LINGER_MS;
  for (struct conn *c = srv->_conn_head; c != NULL; c = c->next) {
    if (c->closing || c->pending)
      continue;
    if (now - c->mark >= (c->lingering ? linger_ms : idle))
      conn_close(c); /* the close completes later, so the list stays intact */
  }
  return sweep_period(srv);
}

int rx_http_server_init(struct rx_http_server *srv, struct rx_loop *loop,
                        const struct rx_http_server_opts *opts) {
  if (srv == NULL || loop == NULL)
    return UV_EINVAL;
  *srv = (struct rx_http_server){.loop = loop};
  if (opts != NULL)
    srv->opts = *opts;
  if (srv->opts.max_header_bytes == 0)
    srv->opts.max_header_bytes = 8192;
  if (srv->opts.max_body_bytes == 0)
    srv->opts.max_body_bytes = 1024 * 1024;
  if (srv->opts.max_conns == 0)
    srv->opts.max_conns = 1024;
  if (srv->opts.idle_timeout_ms == 0)
    srv->opts.idle_timeout_ms = 30000;
  /* uv_tcp_init without a domain only fills the struct; uv_timer_init never fails. Neither leaves
   * anything to unwind, so a failed init needs no close. */
  int rc = uv_tcp_init(loop->uv, &srv->_listener);
  if (rc < 0)
    return rc;
  rc = rx_timer_init(&srv->_sweep, loop);
  if (rc < 0)
    return rc;
  srv->_open_handles = 2;
  return 0;
}

int rx_http_server_route(struct rx_http_server *srv, const char *method, const char *path,
                         rx_http_handler handler, void *arg) {
  if (srv == NULL || path == NULL || handler == NULL)
    return UV_EINVAL;
  if (srv->_nroutes >= RX_HTTP_MAX_ROUTES)
    return UV_ENOSPC;
  srv->_routes[srv->_nroutes++] = (struct rx_http_route){method, path, handler, arg};
  return 0;
}

int rx_http_server_listen(struct rx_http_server *srv, const char *host, int port) {
  if (srv == NULL || host == NULL || port < 0 || port > 65535 || srv->_closing)
    return UV_EINVAL;
  if (srv->_listening)
    return UV_EALREADY;
  struct sockaddr_storage addr;
  int rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
  if (rc < 0)
    rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr);
  if (rc == 0)
    rc = uv_tcp_bind(&srv->_listener, (const struct sockaddr *)&addr, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&srv->_listener, 511, on_connection);
  int len = sizeof(addr);
  if (rc == 0)
    rc = uv_tcp_getsockname(&srv->_listener, (struct sockaddr *)&addr, &len);
  if (rc == 0)
    rc = rx_timer_start(&srv->_sweep, on_sweep, sweep_period(srv));
  if (rc < 0)
    return rc;
  rx_timer_unref(&srv->_sweep); /* idle connections keep the loop alive, not their sweep */
  srv->port = ntohs(addr.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
                                               : ((struct sockaddr_in *)&addr)->sin_port);
  srv->_listening = 1;
  return 0;
}

static void on_listener_closed(uv_handle_t *handle) {
  struct rx_http_server *srv = RX_CONTAINER_OF(handle, struct rx_http_server, _listener);
  srv->_open_handles--;
  server_maybe_closed(srv);
}

static void on_sweep_closed(struct rx_timer *timer) {
  struct rx_http_server *srv = RX_CONTAINER_OF(timer, struct rx_http_server, _sweep);
  srv->_open_handles--;
  server_maybe_closed(srv);
}

void rx_http_server_close(struct rx_http_server *srv, void (*cb)(struct rx_http_server *srv)) {
  if (srv->_closing)
    return;
  srv->_closing = 1;
  srv->_close_cb = cb;
  srv->_listening = 0;
  uv_close((uv_handle_t *)&srv->_listener, on_listener_closed);
  rx_timer_close(&srv->_sweep, on_sweep_closed);
  for (struct conn *c = srv->_conn_head; c != NULL; c = c->next)
    conn_close(c);
}
