/* Admin API handlers. /healthz answers from a constant so liveness probes and load tests measure
 * the server, not the handler; everything else may need the bearer token. */
#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/log.h"

#define JSON "application/json"

static void respond_json(struct rx_http_request *req, int status, const char *body) {
  rx_http_respond(req, status, NULL, JSON, body, strlen(body));
}

/* Compares in time independent of where the first difference is, so the token cannot be guessed
 * byte by byte from response timing. */
static int token_equal(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  unsigned char diff = (unsigned char)(la != lb);
  for (size_t i = 0; i < la; i++)
    diff |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
  return diff == 0;
}

int csr_admin_authorized(struct csr_admin *admin, struct rx_http_request *req) {
  if (admin->_token == NULL)
    return 1;
  const char *auth = rx_http_header(req, "Authorization");
  if (auth && strncasecmp(auth, "Bearer ", 7) == 0 && token_equal(auth + 7, admin->_token))
    return 1;
  rx_http_respond(req, 401, "WWW-Authenticate: Bearer\r\n", JSON, "{\"error\":\"unauthorized\"}",
                  24);
  return 0;
}

static void on_healthz(struct rx_http_request *req, void *arg) {
  static const char body[] = "{\"status\":\"ok\"}";
  rx_http_respond(req, 200, NULL, JSON, body, sizeof(body) - 1);
}

static void on_readyz(struct rx_http_request *req, void *arg) {
  struct csr_admin *admin = arg;
  if (!csr_admin_authorized(admin, req))
    return;
  char body[4096], why[256];
  size_t pos = (size_t)snprintf(body, sizeof(body), "{\"ready\":false,\"reasons\":[");
  unsigned failing = 0;
  for (unsigned i = 0; i < admin->_nchecks && pos + 16 < sizeof(body); i++) {
    why[0] = '\0';
    if (admin->_checks[i].fn(admin->_checks[i].arg, why, sizeof(why)) == 0)
      continue;
    if (failing++)
      body[pos++] = ',';
    body[pos++] = '"';
    csr_json_escape(why, body, sizeof(body) - 8, &pos);
    body[pos++] = '"';
  }
  if (failing == 0) {
    respond_json(req, 200, "{\"ready\":true}");
    return;
  }
  snprintf(body + pos, sizeof(body) - pos, "]}");
  respond_json(req, 503, body);
}

static void on_metrics(struct rx_http_request *req, void *arg) {
  struct csr_admin *admin = arg;
  if (!csr_admin_authorized(admin, req))
    return;
  char *text = NULL;
  size_t len = 0;
  if (csr_metrics_render(admin->metrics, &text, &len) < 0) {
    free(text);
    respond_json(req, 500, "{\"error\":\"metrics_unavailable\"}");
    return;
  }
  rx_http_respond(req, 200, NULL, "text/plain; version=0.0.4", text, len);
  free(text);
}

static void on_reload(struct rx_http_request *req, void *arg) {
  struct csr_admin *admin = arg;
  if (!csr_admin_authorized(admin, req))
    return;
  char why[600] = "", body[800];
  if (admin->_reload == NULL) {
    respond_json(req, 503, "{\"error\":\"reload_unavailable\"}");
    return;
  }
  if (admin->_reload(admin->_reload_arg, why, sizeof(why)) == 0) {
    respond_json(req, 200, "{\"reloaded\":true}");
    return;
  }
  size_t pos = (size_t)snprintf(body, sizeof(body), "{\"error\":\"invalid_config\",\"message\":\"");
  csr_json_escape(why, body, sizeof(body) - 4, &pos);
  snprintf(body + pos, sizeof(body) - pos, "\"}");
  respond_json(req, 400, body);
}

static void collect(void *arg) {
  struct csr_admin *admin = arg;
  admin->_requests->value = (double)admin->server.requests;
  admin->_conns->value = admin->server.conns;
  admin->_uptime->value = (double)(rx_now_ms(admin->server.loop) - admin->_started_ms) / 1000.0;
}

static int register_metrics(struct csr_admin *admin, struct csr_metrics *m) {
  struct csr_family *info =
      csr_metrics_family(m, "csurelay_build_info", "Version of csurelay.", CSR_GAUGE, NULL, 0);
  struct csr_family *req =
      csr_metrics_family(m, "csurelay_admin_requests_total", "Requests answered by the admin API.",
                         CSR_COUNTER, NULL, 0);
  struct csr_family *conns = csr_metrics_family(m, "csurelay_admin_connections",
                                                "Open admin API connections.", CSR_GAUGE, NULL, 0);
  struct csr_family *up = csr_metrics_family(m, "csurelay_uptime_seconds",
                                             "Seconds since csurelay started.", CSR_GAUGE, NULL, 0);
  struct csr_series *build = info ? csr_metrics_series(info, "version", CSR_VERSION, NULL) : NULL;
  admin->_requests = req ? csr_metrics_series(req, NULL) : NULL;
  admin->_conns = conns ? csr_metrics_series(conns, NULL) : NULL;
  admin->_uptime = up ? csr_metrics_series(up, NULL) : NULL;
  if (!build || !admin->_requests || !admin->_conns || !admin->_uptime)
    return UV_ENOMEM;
  build->value = 1;
  return csr_metrics_collector(m, collect, admin);
}

static int add_routes(struct csr_admin *admin) {
  struct rx_http_server *srv = &admin->server;
  int rc = rx_http_server_route(srv, "GET", "/healthz", on_healthz, admin);
  if (rc == 0)
    rc = rx_http_server_route(srv, "GET", "/readyz", on_readyz, admin);
  if (rc == 0)
    rc = rx_http_server_route(srv, "GET", "/metrics", on_metrics, admin);
  if (rc == 0)
    rc = rx_http_server_route(srv, "POST", "/v1/reload", on_reload, admin);
  return rc;
}

int csr_admin_start(struct csr_admin *admin, struct rx_loop *loop, struct csr_metrics *metrics,
                    const struct csr_listen *listen, const char *token) {
  *admin = (struct csr_admin){.metrics = metrics, ._started_ms = rx_now_ms(loop)};
  int rc = register_metrics(admin, metrics);
  if (rc == 0)
    rc = csr_admin_set_token(admin, token);
  if (rc < 0)
    return rc;
  rc = rx_http_server_init(&admin->server, loop, NULL);
  if (rc < 0) {
    free(admin->_token);
    return rc;
  }
  admin->server.data = admin;
  rc = add_routes(admin);
  if (rc == 0)
    rc = rx_http_server_listen(&admin->server, listen->host, listen->port);
  if (rc < 0)
    csr_admin_close(admin, NULL); /* the caller owns admin; it is safe to free once closed */
  return rc;
}

int csr_admin_set_token(struct csr_admin *admin, const char *token) {
  char *copy = token ? strdup(token) : NULL;
  if (token && copy == NULL)
    return UV_ENOMEM;
  free(admin->_token);
  admin->_token = copy;
  return 0;
}

int csr_admin_ready_check(struct csr_admin *admin, csr_ready_fn fn, void *arg) {
  if (admin->_nchecks == CSR_ADMIN_MAX_CHECKS)
    return UV_ENOSPC;
  admin->_checks[admin->_nchecks].fn = fn;
  admin->_checks[admin->_nchecks].arg = arg;
  admin->_nchecks++;
  return 0;
}

void csr_admin_on_reload(struct csr_admin *admin, csr_reload_fn fn, void *arg) {
  admin->_reload = fn;
  admin->_reload_arg = arg;
}

static void on_server_closed(struct rx_http_server *srv) {
  struct csr_admin *admin = srv->data;
  free(admin->_token);
  admin->_token = NULL;
  if (admin->_close_cb)
    admin->_close_cb(admin);
}

void csr_admin_close(struct csr_admin *admin, void (*cb)(struct csr_admin *admin)) {
  admin->_close_cb = cb;
  rx_http_server_close(&admin->server, on_server_closed);
}
