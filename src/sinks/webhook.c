/* The webhook sink (SPEC section 4): POST url with the message body (sk_encode_message),
 * Content-Type: application/json, Idempotency-Key: <event id> and, when configured,
 * Authorization: <auth_header>. The answer is classified by sk_classify_http; a 2xx delivers.
 *
 * Each delivery owns a struct wh_req (the key header behind it) and its body, taken from the
 * writer that built it rather than copied (17 KB at 10,000 deliveries a second), linked into the
 * sink's list of started deliveries so close can cancel them; it is freed on completion, before
 * done() runs. A body that cannot be built is SK_DEAD ("encode"), reported through the delivery's
 * own future so done() is never called from inside deliver().
 *
 * Readiness: after READY_FAILURES transport failures in a row (no HTTP answer at all: refused,
 * reset, timeout) the sink reports not ready; any HTTP answer makes it ready again. Cancels do not
 * count. A cancel that races with an answer already received reports that answer, not "cancelled":
 * the receiver has it, and saying otherwise would cause a duplicate.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/sink.h"

#define KEY_HEADER     "Idempotency-Key: "
#define AUTH_HEADER    "Authorization: "
#define READY_FAILURES 5

struct wh_req {
  struct rx_http_req req;
  struct rx_fut fail; /* completes a delivery whose body could not be built */
  struct wh_sink *w;
  struct sk_delivery *d;
  struct wh_req *prev, *next;
  int started;   /* req is with the HTTP client */
  int cancelled; /* cancel() was called */
  char *body;    /* taken from the sink's writer (csr_jw_take) */
  char key[];    /* the Idempotency-Key line */
};

struct wh_sink {
  struct sk_sink base;
  struct csr_jw jw; /* encodes each body, which the wh_req then takes */
  char *auth_line;  /* "Authorization: ..." or NULL */
  struct wh_req *active;
  unsigned transport_failures; /* in a row */
  char last_failure[sizeof(((struct sk_delivery *)0)->reason)];
  int closing;
  void (*close_cb)(struct sk_sink *sink);
  struct rx_fut close_fut;
};

static int has_ctl(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f)
      return 1;
  return 0;
}

static void link_req(struct wh_sink *w, struct wh_req *r) {
  r->prev = NULL;
  r->next = w->active;
  if (w->active)
    w->active->prev = r;
  w->active = r;
}

static void unlink_req(struct wh_sink *w, struct wh_req *r) {
  if (r->prev)
    r->prev->next = r->next;
  else
    w->active = r->next;
  if (r->next)
    r->next->prev = r->prev;
  r->prev = r->next = NULL;
}

static void maybe_closed(struct wh_sink *w) {
  if (w->closing && w->active == NULL && rx_fut_pending(&w->close_fut))
    rx_fut_resolve(&w->close_fut, 0);
}

static void count_transport(struct wh_sink *w, const struct sk_delivery *d, int result) {
  if (result == 0) {
    w->transport_failures = 0;
  } else if (result != UV_ECANCELED) {
    w->transport_failures++;
    snprintf(w->last_failure, sizeof(w->last_failure), "%s", d->reason);
  }
}

/* Unlinks and frees `r`, then reports `d`; the sink may be closing but is still alive. */
static void finish(struct wh_sink *w, struct wh_req *r, struct sk_delivery *d) {
  unlink_req(w, r);
  if (r->started)
    rx_http_req_cleanup(&r->req);
  free(r->body);
  free(r);
  d->_sink_state = NULL;
  d->done(d);
  maybe_closed(w);
}

static void on_answer(struct rx_fut *fut) {
  struct wh_req *r = RX_CONTAINER_OF(fut, struct wh_req, req.fut);
  sk_classify_http(&r->req, r->d);
  count_transport(r->w, r->d, fut->result);
  finish(r->w, r, r->d);
}

static void on_encode_failed(struct rx_fut *fut) {
  struct wh_req *r = RX_CONTAINER_OF(fut, struct wh_req, fail);
  struct sk_delivery *d = r->d;
  d->status = 0;
  d->retry_after_ms = -1;
  if (r->cancelled) {
    d->outcome = SK_RETRY;
    snprintf(d->reason, sizeof(d->reason), "cancelled");
    snprintf(d->excerpt, sizeof(d->excerpt), "%s", csr_strerror(UV_ECANCELED));
  } else {
    d->outcome = SK_DEAD;
    snprintf(d->reason, sizeof(d->reason), "encode");
    snprintf(d->excerpt, sizeof(d->excerpt),
             "the event cannot be encoded (no id, an id with control characters, or no event "
             "object)");
  }
  finish(r->w, r, d);
}

/* Builds the body with w->jw and takes it; CSR_EPARSE when it cannot be built (or the id cannot
 * be a header), -ENOMEM when memory ran out. */
static int encode_body(struct wh_sink *w, const struct sk_delivery *d, char **body, size_t *len) {
  csr_jw_reset(&w->jw);
  int rc = sk_encode_message(d->event, &w->jw);
  if (rc == 0 && has_ctl(d->event->id))
    rc = CSR_EPARSE; /* a CR or LF in the id would split the header */
  if (rc == 0)
    rc = csr_jw_take(&w->jw, body, len);
  return rc < 0 && rc != -ENOMEM ? CSR_EPARSE : rc;
}

static int start_post(struct wh_sink *w, struct wh_req *r, size_t body_len) {
  const struct csr_sink_conf *conf = w->base.conf;
  uint64_t timeout = conf->timeout_ms ? conf->timeout_ms : w->base.env->default_timeout_ms;
  rx_http_req_init(&r->req);
  r->req.data = r;
  r->req.method = "POST";
  r->req.url = conf->url;
  r->req.body = r->body;
  r->req.body_len = body_len;
  r->req.timeout_ms = timeout > (uint64_t)LONG_MAX ? LONG_MAX : (long)timeout;
  int rc = rx_http_req_header(&r->req, "Content-Type: application/json");
  if (rc == 0)
    rc = rx_http_req_header(&r->req, r->key);
  if (rc == 0 && w->auth_line)
    rc = rx_http_req_header(&r->req, w->auth_line);
  if (rc == 0)
    rc = rx_http_start(w->base.env->http, &r->req, on_answer);
  if (rc < 0) {
    rx_http_req_cleanup(&r->req);
    return rc;
  }
  r->started = 1;
  return 0;
}

static struct wh_req *req_alloc(struct wh_sink *w, struct sk_delivery *d, size_t key_len) {
  struct wh_req *r = calloc(1, sizeof(*r) + key_len);
  if (r == NULL)
    return NULL;
  r->w = w;
  r->d = d;
  return r;
}

static int deliver_encode_failed(struct wh_sink *w, struct sk_delivery *d, int why) {
  struct wh_req *r = req_alloc(w, d, 0);
  if (r == NULL)
    return -ENOMEM;
  rx_fut_init(&r->fail, w->base.env->loop, on_encode_failed);
  rx_fut_resolve(&r->fail, why);
  link_req(w, r);
  d->_sink_state = r;
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* ops */
/* ---------------------------------------------------------------------------------------------- */

static int webhook_init(struct sk_sink *sink, struct csr_err *err) {
  struct wh_sink *w = (struct wh_sink *)sink;
  const struct csr_sink_conf *conf = sink->conf;
  const char *name = conf->name ? conf->name : "";
  if (conf->url == NULL ||
      (strncmp(conf->url, "http://", 7) != 0 && strncmp(conf->url, "https://", 8) != 0))
    return csr_err_set(err, NULL, conf->line, "url",
                       "webhook sink '%s': an http:// or https:// url "
                       "is required",
                       name);
  if (sink->env->http == NULL)
    return csr_err_set(err, NULL, conf->line, "", "webhook sink '%s': no HTTP client", name);
  if (conf->auth_header && has_ctl(conf->auth_header))
    return csr_err_set(err, NULL, conf->line, "auth_header_env",
                       "webhook sink '%s': the Authorization value holds a control character",
                       name);
  if (conf->auth_header) {
    size_t n = strlen(AUTH_HEADER) + strlen(conf->auth_header) + 1;
    w->auth_line = malloc(n);
    if (w->auth_line == NULL)
      return csr_err_set(err, NULL, conf->line, "", "webhook sink '%s': out of memory", name);
    snprintf(w->auth_line, n, AUTH_HEADER "%s", conf->auth_header);
  }
  if (csr_jw_init(&w->jw) != 0) {
    free(w->auth_line);
    return csr_err_set(err, NULL, conf->line, "", "webhook sink '%s': out of memory", name);
  }
  return 0;
}

static int webhook_deliver(struct sk_sink *sink, struct sk_delivery *d) {
  struct wh_sink *w = (struct wh_sink *)sink;
  if (w->closing)
    return -ECANCELED;
  char *body;
  size_t len;
  int rc = encode_body(w, d, &body, &len);
  if (rc == -ENOMEM)
    return rc;
  if (rc < 0)
    return deliver_encode_failed(w, d, rc);
  size_t key_len = strlen(KEY_HEADER) + strlen(d->event->id);
  struct wh_req *r = req_alloc(w, d, key_len + 1);
  if (r == NULL) {
    free(body);
    return -ENOMEM;
  }
  r->body = body;
  snprintf(r->key, key_len + 1, KEY_HEADER "%s", d->event->id);
  rc = start_post(w, r, len);
  if (rc < 0) {
    free(r->body);
    free(r);
    return rc;
  }
  link_req(w, r);
  d->_sink_state = r;
  return 0;
}

static void webhook_cancel(struct sk_sink *sink, struct sk_delivery *d) {
  struct wh_req *r = d ? d->_sink_state : NULL;
  if (r == NULL || r->cancelled)
    return;
  r->cancelled = 1;
  if (r->started)
    rx_http_cancel(&r->req); /* deferred: on_answer runs later with UV_ECANCELED */
}

static int webhook_encode(struct sk_sink *sink, const struct sk_delivery *d, struct csr_jw *jw) {
  if (d == NULL)
    return -EINVAL;
  return sk_encode_message(d->event, jw);
}

static int webhook_ready(struct sk_sink *sink, char *why, size_t len) {
  struct wh_sink *w = (struct wh_sink *)sink;
  if (w->closing) {
    snprintf(why, len, "closing");
    return -ECANCELED;
  }
  if (w->transport_failures >= READY_FAILURES) {
    snprintf(why, len, "%u transport failures in a row (last: %s)", w->transport_failures,
             w->last_failure);
    return CSR_ETRANSPORT;
  }
  return 0;
}

static void on_close_fut(struct rx_fut *fut) {
  struct wh_sink *w = RX_CONTAINER_OF(fut, struct wh_sink, close_fut);
  csr_jw_free(&w->jw);
  free(w->auth_line);
  w->auth_line = NULL;
  w->close_cb(&w->base);
}

static void webhook_close(struct sk_sink *sink, void (*cb)(struct sk_sink *sink)) {
  struct wh_sink *w = (struct wh_sink *)sink;
  if (w->closing)
    return;
  w->closing = 1;
  w->close_cb = cb;
  rx_fut_init(&w->close_fut, sink->env->loop, on_close_fut);
  for (struct wh_req *r = w->active; r; r = r->next)
    webhook_cancel(sink, r->d);
  maybe_closed(w);
}

const struct sk_ops sk_webhook_ops = {
    .name = "webhook",
    .description = "POSTs each event as JSON with an Idempotency-Key (SPEC section 4)",
    .size = sizeof(struct wh_sink),
    .init = webhook_init,
    .deliver = webhook_deliver,
    .cancel = webhook_cancel,
    .encode = webhook_encode,
    .ready = webhook_ready,
    .close = webhook_close,
};
