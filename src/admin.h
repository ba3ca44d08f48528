/* The admin API (SPEC section 6) on the reactor's HTTP server: /healthz, /readyz, /metrics and
 * POST /v1/reload. Later stages add their routes (status, events, dead letters) here. */
#ifndef CSURELAY_ADMIN_H
#define CSURELAY_ADMIN_H

#include "csurelay/config.h"
#include "csurelay/metrics.h"
#include "csurelay/reactor.h"

/** A readiness check: returns 0 when ready, or writes a short reason into `why` and returns < 0. */
typedef int (*csr_ready_fn)(void *arg, char *why, size_t len);

/** Applies a new configuration; on failure writes the reason into `why` and returns < 0. */
typedef int (*csr_reload_fn)(void *arg, char *why, size_t len);

#define CSR_ADMIN_MAX_CHECKS 16

struct csr_admin {
  /* read-only */
  struct rx_http_server server;
  struct csr_metrics *metrics;
  /* private */
  char *_token; /* NULL: no auth */
  struct {
    csr_ready_fn fn;
    void *arg;
  } _checks[CSR_ADMIN_MAX_CHECKS];
  unsigned _nchecks;
  csr_reload_fn _reload;
  void *_reload_arg;
  uint64_t _started_ms;
  struct csr_series *_requests;
  struct csr_series *_conns;
  struct csr_series *_uptime;
  void (*_close_cb)(struct csr_admin *admin);
};

/** Starts serving on `listen` (port 0 = ephemeral; see admin->server.port). `token` may be NULL. */
CSR_NODISCARD int csr_admin_start(struct csr_admin *admin, struct rx_loop *loop,
                                  struct csr_metrics *metrics, const struct csr_listen *listen,
                                  const char *token);

/** Replaces the bearer token (NULL disables auth). -ENOMEM on failure, the old token then stays. */
CSR_NODISCARD int csr_admin_set_token(struct csr_admin *admin, const char *token);

/** Adds a readiness check consulted by /readyz. -ENOSPC past CSR_ADMIN_MAX_CHECKS. */
CSR_NODISCARD int csr_admin_ready_check(struct csr_admin *admin, csr_ready_fn fn, void *arg);

/** True when `req` may proceed; otherwise answers 401 and returns false (the request is done). */
int csr_admin_authorized(struct csr_admin *admin, struct rx_http_request *req);

/** Sets the hook POST /v1/reload calls (SIGHUP calls the same hook from main). */
void csr_admin_on_reload(struct csr_admin *admin, csr_reload_fn fn, void *arg);

/** Stops the server; `cb` fires once the admin may be freed. */
void csr_admin_close(struct csr_admin *admin, void (*cb)(struct csr_admin *admin));

#endif
