/* The admin API's pipeline routes (SPEC §6): GET /v1/status, GET /v1/events/{id}, GET /v1/dlq,
 * POST /v1/dlq/replay, DELETE /v1/dlq/{id}. They read and change the running relay, which a reload
 * replaces: while none runs (between two relays) they answer 503. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin_v1.h"
#include "csurelay/log.h"
#include "state_json.h"

#define JSON "application/json"

enum { DLQ_DEFAULT_LIMIT = 100, DLQ_MAX_LIMIT = 10000 };

static void respond_jw(struct rx_http_request *req, int status, struct csr_jw *jw) {
  const char *text;
  size_t len;
  if (csr_jw_finish(jw, &text, &len) < 0) {
    static const char err[] = "{\"error\":\"internal\"}";
    rx_http_respond(req, 500, NULL, JSON, err, sizeof(err) - 1);
    return;
  }
  rx_http_respond(req, status, NULL, JSON, text, len);
}

static void respond_error(struct rx_http_request *req, int status, const char *error,
                          const char *message) {
  struct csr_jw jw;
  if (csr_jw_init(&jw) < 0) {
    rx_http_respond(req, 500, NULL, JSON, "{}", 2);
    return;
  }
  csr_jw_obj(&jw);
  csr_jw_kstr(&jw, "error", error);
  if (message)
    csr_jw_kstr(&jw, "message", message);
  csr_jw_obj_end(&jw);
  respond_jw(req, status, &jw);
  csr_jw_free(&jw);
}

/* 200 with the view, or 500 when it could not be written (out of memory). */
static void respond_view(struct rx_http_request *req, int rc, struct csr_jw *jw) {
  if (rc < 0)
    respond_error(req, 500, "internal", csr_strerror(rc));
  else
    respond_jw(req, 200, jw);
}

/* The running relay, or NULL after answering (401, or 503 between two relays). */
static struct csr_relay *relay_for(struct csr_admin_v1 *v, struct rx_http_request *req) {
  if (!csr_admin_authorized(v->admin, req))
    return NULL;
  if (*v->relay == NULL)
    respond_error(req, 503, "not_running", "the pipeline is starting, reloading or stopping");
  return *v->relay;
}

/* Percent-decodes `text` (curl's decoder); NULL on failure or an embedded NUL. Caller frees. */
static char *decode(const char *text, size_t len) {
  int out_len = 0;
  char *raw = curl_easy_unescape(NULL, text, (int)len, &out_len);
  if (raw == NULL)
    return NULL;
  char *copy = strlen(raw) == (size_t)out_len ? strdup(raw) : NULL;
  curl_free(raw);
  return copy;
}

/* The decoded value of `key` in a query string; NULL when absent. Caller frees. */
static char *query_param(const char *query, const char *key) {
  size_t klen = strlen(key);
  for (const char *p = query; p && *p;) {
    const char *end = strchr(p, '&');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len > klen && strncmp(p, key, klen) == 0 && p[klen] == '=')
      return decode(p + klen + 1, len - klen - 1);
    p = end ? end + 1 : NULL;
  }
  return NULL;
}

static size_t query_size(const char *query, const char *key, size_t dflt, size_t max) {
  char *v = query_param(query, key);
  size_t n = dflt;
  if (v != NULL && *v != '\0') {
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    if (*end == '\0')
      n = x > max ? max : (size_t)x;
  }
  free(v);
  return n;
}

/* ---------------------------------------------------------------------------------------------- */
/* Handlers                                                                                       */
/* ---------------------------------------------------------------------------------------------- */

static void on_status(struct rx_http_request *req, void *arg) {
  struct csr_relay *r = relay_for(arg, req);
  struct csr_jw jw;
  if (r == NULL || csr_jw_init(&jw) < 0)
    return;
  respond_view(req, csr_relay_status_json(r, &jw), &jw);
  csr_jw_free(&jw);
}

static void on_event(struct rx_http_request *req, void *arg) {
  struct csr_relay *r = relay_for(arg, req);
  if (r == NULL)
    return;
  const char *prefix = "/v1/events/";
  char *id = decode(req->path + strlen(prefix), strlen(req->path) - strlen(prefix));
  const struct pl_state_event *ev = id && *id ? pl_state_event(csr_relay_state(r), id) : NULL;
  struct csr_jw jw;
  if (ev == NULL)
    respond_error(req, 404, "not_found",
                  "no such event id (never admitted, or finished and expired from the dedupe set)");
  else if (csr_jw_init(&jw) == 0) {
    respond_view(req, csr_state_json_event(&jw, ev, true), &jw);
    csr_jw_free(&jw);
  }
  free(id);
}

static void on_dlq(struct rx_http_request *req, void *arg) {
  struct csr_relay *r = relay_for(arg, req);
  struct csr_jw jw;
  if (r == NULL || csr_jw_init(&jw) < 0)
    return;
  size_t offset = query_size(req->query, "offset", 0, SIZE_MAX);
  size_t limit = query_size(req->query, "limit", DLQ_DEFAULT_LIMIT, DLQ_MAX_LIMIT);
  respond_view(req, csr_state_json_dlq(&jw, csr_relay_state(r), offset, limit), &jw);
  csr_jw_free(&jw);
}

/* Answers a replay or delete: {"replayed": n} / {"deleted": n}, 404 when nothing matched. */
static void respond_count(struct rx_http_request *req, int rc, const char *key, size_t n) {
  if (rc == UV_ENOENT) {
    respond_error(req, 404, "not_found", "no dead letter matches");
    return;
  }
  if (rc < 0) {
    respond_error(req, 500, "failed", csr_strerror(rc));
    return;
  }
  char body[64];
  int len = snprintf(body, sizeof(body), "{\"%s\":%zu}", key, n);
  rx_http_respond(req, 200, NULL, JSON, body, (size_t)len);
}

/* Body: {} or nothing (every dead letter), {"id": "..."}, {"sink": "..."}, or both. */
static void on_dlq_replay(struct rx_http_request *req, void *arg) {
  struct csr_relay *r = relay_for(arg, req);
  if (r == NULL)
    return;
  yajl_val body = NULL;
  if (req->body_len > 0) {
    char err[128];
    body = csr_json_parse(req->body, req->body_len, err, sizeof(err));
    if (body == NULL || !YAJL_IS_OBJECT(body)) {
      csr_json_free(body);
      respond_error(req, 400, "invalid_request", "the body must be a JSON object");
      return;
    }
  }
  const char *id = csr_json_get_str(body, "id"), *sink = csr_json_get_str(body, "sink");
  if ((csr_json_get(body, "id") && !id) || (csr_json_get(body, "sink") && !sink)) {
    csr_json_free(body);
    respond_error(req, 400, "invalid_request", "id and sink must be strings");
    return;
  }
  size_t n = 0;
  int rc = pl_route_dlq_replay(csr_relay_route(r), id, sink, &n);
  if (rc == 0)
    CSR_LOG(CSR_INFO, "admin: dead letters replayed", CSR_KI("count", (int64_t)n),
            CSR_KS("event_id", id), CSR_KS("sink", sink));
  csr_json_free(body);
  respond_count(req, rc, "replayed", n);
}

static void on_dlq_delete(struct rx_http_request *req, void *arg) {
  struct csr_relay *r = relay_for(arg, req);
  if (r == NULL)
    return;
  const char *prefix = "/v1/dlq/";
  char *id = decode(req->path + strlen(prefix), strlen(req->path) - strlen(prefix));
  char *sink = query_param(req->query, "sink");
  size_t n = 0;
  int rc = id && *id ? pl_route_dlq_delete(csr_relay_route(r), id, sink, &n) : UV_ENOENT;
  if (rc == 0)
    CSR_LOG(CSR_INFO, "admin: dead letters deleted", CSR_KI("count", (int64_t)n),
            CSR_KS("event_id", id), CSR_KS("sink", sink));
  respond_count(req, rc, "deleted", n);
  free(id);
  free(sink);
}

int csr_admin_v1_start(struct csr_admin_v1 *v, struct csr_admin *admin, struct csr_relay **relay) {
  v->admin = admin;
  v->relay = relay;
  struct rx_http_server *srv = &admin->server;
  int rc = rx_http_server_route(srv, "GET", "/v1/status", on_status, v);
  if (rc == 0)
    rc = rx_http_server_route(srv, "GET", "/v1/events/*", on_event, v);
  if (rc == 0)
    rc = rx_http_server_route(srv, "GET", "/v1/dlq", on_dlq, v);
  if (rc == 0)
    rc = rx_http_server_route(srv, "POST", "/v1/dlq/replay", on_dlq_replay, v);
  if (rc == 0)
    rc = rx_http_server_route(srv, "DELETE", "/v1/dlq/*", on_dlq_delete, v);
  return rc;
}
