/* Starting and stopping the emulator: every module is created, its routes registered in an order
 * where the catch-all token route comes last, and the server listens on one port. */
#include <stdio.h>
#include <string.h>

#include "csurelay/config.h"
#include "sim.h"

void sim_opts_default(struct sim_opts *opts) {
  *opts = (struct sim_opts){
      .port = 0, .csus = 1, .rate = 0, .seed = 1, .client_secret = SIM_DEFAULT_SECRET};
  snprintf(opts->host, sizeof(opts->host), "127.0.0.1");
}

uint64_t sim_elapsed_ms(const struct sim *sim) {
  return rx_now_ms(sim->loop) - sim->_started_mono_ms;
}

static void on_healthz(struct rx_http_request *req, void *arg) {
  rx_http_respond(req, 200, NULL, "application/json", "{\"status\":\"ok\"}", 15);
}

static void destroy_modules(struct sim *sim) {
  if (sim->dv)
    sim_dataverse_destroy(sim->dv);
  if (sim->csus)
    sim_csus_destroy(sim->csus);
  if (sim->entra)
    sim_entra_destroy(sim->entra);
  if (sim->ledger)
    sim_ledger_destroy(sim->ledger);
  if (sim->faults)
    sim_faults_destroy(sim->faults);
  sim->dv = NULL;
  sim->csus = NULL;
  sim->entra = NULL;
  sim->ledger = NULL;
  sim->faults = NULL;
}

static int create_modules(struct sim *sim, char *why, size_t whylen) {
  const struct sim_opts *o = &sim->opts;
  int rc = 0;
  if (o->faults_path)
    rc = sim_faults_load(o->faults_path, o->seed, &sim->faults, why, whylen);
  else if (o->faults_yaml)
    rc = sim_faults_create(o->faults_yaml, strlen(o->faults_yaml), o->seed, &sim->faults, why,
                           whylen);
  if (rc < 0)
    return rc;
  if ((rc = sim_ledger_create(sim, &sim->ledger)) < 0 ||
      (rc = sim_entra_create(sim, &sim->entra)) < 0 ||
      (rc = sim_csus_create(sim, &sim->csus)) < 0 ||
      (rc = sim_dataverse_create(sim, &sim->dv)) < 0) {
    snprintf(why, whylen, "cannot create the emulated parties: %s", csr_strerror(rc));
    return rc;
  }
  if (o->events_path)
    rc = sim_csus_load_events(sim->csus, o->events_path, why, whylen);
  return rc;
}

static int add_routes(struct sim *sim) {
  int rc = rx_http_server_route(&sim->server, "GET", "/healthz", on_healthz, sim);
  if (rc == 0)
    rc = sim_faults_routes(sim);
  if (rc == 0)
    rc = sim_ledger_routes(sim);
  if (rc == 0)
    rc = sim_csus_routes(sim);
  if (rc == 0)
    rc = sim_dataverse_routes(sim);
  if (rc == 0)
    rc = sim_entra_routes(sim); /* /{tenant}/oauth2/...: a catch-all, so it goes last */
  return rc;
}

static int listen_and_start(struct sim *sim, char *why, size_t whylen) {
  const struct rx_http_server_opts sopts = {
      .max_body_bytes = 4u << 20, .max_conns = 4096, .idle_timeout_ms = 120000};
  int rc = rx_http_server_init(&sim->server, sim->loop, &sopts);
  if (rc < 0) {
    snprintf(why, whylen, "cannot start the HTTP server: %s", csr_strerror(rc));
    return rc;
  }
  sim->server.data = sim;
  if ((rc = add_routes(sim)) < 0) {
    snprintf(why, whylen, "cannot register routes: %s", csr_strerror(rc));
    return rc;
  }
  if ((rc = rx_http_server_listen(&sim->server, sim->opts.host, sim->opts.port)) < 0) {
    snprintf(why, whylen, "cannot listen on %s:%d: %s", sim->opts.host, sim->opts.port,
             csr_strerror(rc));
    return rc;
  }
  snprintf(sim->base_url, sizeof(sim->base_url), "http://%s:%d", sim->opts.host, sim->server.port);
  if ((rc = sim_route_init(sim)) < 0 || (rc = sim_csus_start(sim->csus)) < 0)
    snprintf(why, whylen, "cannot start: %s", csr_strerror(rc));
  return rc;
}

static void on_failed_server_closed(struct rx_http_server *srv) {}

int sim_start(struct sim *sim, struct rx_loop *loop, const struct sim_opts *opts, char *why,
              size_t whylen) {
  *sim = (struct sim){.loop = loop,
                      .opts = *opts,
                      .started_wall_ms = rx_wall_ms(),
                      ._started_mono_ms = rx_now_ms(loop)};
  if (!csr_host_is_loopback(opts->host)) {
    snprintf(why, whylen, "csusim listens on loopback addresses only, not %s", opts->host);
    return UV_EINVAL;
  }
  int rc = create_modules(sim, why, whylen);
  if (rc == 0)
    rc = listen_and_start(sim, why, whylen);
  if (rc < 0) {
    /* The server (if it got that far) closes on the next loop turn; the caller runs the loop. */
    if (sim->server.loop)
      rx_http_server_close(&sim->server, on_failed_server_closed);
    if (sim->_sweep.loop)
      rx_timer_close(&sim->_sweep, NULL);
    if (sim->csus)
      sim_csus_stop(sim->csus);
    destroy_modules(sim);
  }
  return rc;
}

static void finish_stop(struct sim *sim) {
  if (--sim->_closing > 0)
    return;
  destroy_modules(sim);
  if (sim->_stop_cb)
    sim->_stop_cb(sim);
}

static void on_server_closed(struct rx_http_server *srv) {
  finish_stop(srv->data);
}

static void on_sweep_closed(struct rx_timer *timer) {
  finish_stop(RX_CONTAINER_OF(timer, struct sim, _sweep));
}

void sim_stop(struct sim *sim, void (*cb)(struct sim *sim)) {
  sim->_stop_cb = cb;
  sim->_closing = 2;
  if (sim->csus)
    sim_csus_stop(sim->csus);
  sim_route_close(sim);
  rx_timer_close(&sim->_sweep, on_sweep_closed);
  rx_http_server_close(&sim->server, on_server_closed);
}
