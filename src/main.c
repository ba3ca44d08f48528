/* csurelay's command line: run, check, --version.
 *
 * `run` owns the process: it loads the configuration, serves the admin API, reloads on SIGHUP or
 * POST /v1/reload (a bad new config is rejected and the old one keeps running), and stops on
 * SIGTERM/SIGINT by closing every handle so the loop ends on its own.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "admin_v1.h"
#include "cli_state.h"
#include "csurelay/config.h"
#include "csurelay/log.h"
#include "csurelay/metrics.h"
#include "csurelay/reactor.h"
#include "heap.h"
#include "relay.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

struct app {
  uv_loop_t uv;
  struct rx_loop loop;
  struct csr_config *cfg;
  struct csr_metrics metrics;
  struct csr_admin admin;
  struct csr_admin_v1 v1;
  struct csr_relay *relay;     /* NULL while one stops and the next opens, and at exit */
  struct csr_config *next_cfg; /* a reload's config while the old relay stops */
  struct csr_series *reloads;
  struct csr_series *reload_failures;
  int stopping;
};

/* A reload stops the old pipeline (drain, flush) and opens the new one on the same state, so
 * events in flight carry over through the AOF; what is still in flight at the deadline is
 * cancelled and delivered again by the new one. SIGTERM drains for up to one HTTP timeout. */
enum { RELOAD_DRAIN_MS = 5000 };

static uint64_t stop_drain_ms(const struct csr_config *cfg) {
  return cfg->limits.http_timeout_ms + 1000;
}

static void usage(FILE *out) {
  fprintf(out, "usage: csurelay run -c FILE      run the relay\n"
               "       csurelay check -c FILE    validate a configuration and exit\n"
               "       csurelay state -d DIR     print the durable state (offline)\n"
               "       csurelay --version        print the version\n");
}

static void apply_log_level(const struct csr_config *cfg) {
  enum csr_log_level level = CSR_INFO;
  if (cfg->log.level && csr_log_level_parse(cfg->log.level, &level) < 0)
    level = CSR_INFO; /* config validation already rejected anything else */
  csr_log_set_level(level);
}

static int load_config(const char *path, struct csr_config **cfg, char *why, size_t len) {
  struct csr_err err = {0};
  int rc = csr_config_load(path, cfg, &err);
  if (rc < 0)
    csr_err_format(&err, why, len);
  return rc;
}

static int cmd_check(const char *path) {
  struct csr_config *cfg = NULL;
  char why[1024];
  if (load_config(path, &cfg, why, sizeof(why)) < 0) {
    fprintf(stderr, "csurelay: %s\n", why);
    return EXIT_FAIL;
  }
  printf("%s: ok (%zu identities, %zu csus, %zu sinks, %zu routes%s)\n", path, cfg->n_identities,
         cfg->n_csus, cfg->n_sinks, cfg->n_routes, cfg->ingress.present ? ", ingress" : "");
  csr_config_destroy(cfg);
  return EXIT_OK;
}

static int open_relay(struct app *app, const struct csr_config *cfg) {
  struct csr_err err;
  int rc = csr_relay_open(&app->loop, cfg, &app->metrics, &app->relay, &err);
  if (rc < 0) {
    char why[1024];
    csr_err_format(&err, why, sizeof(why));
    CSR_LOG(CSR_ERROR, "cannot start the pipeline", CSR_KS("reason", why), CSR_KERR(rc));
  }
  return rc;
}

/* The old relay has stopped: open the new one, or, if it cannot start, the old one again. */
static void on_reload_stopped(void *arg) {
  struct app *app = arg;
  struct csr_config *next = app->next_cfg;
  app->next_cfg = NULL;
  if (app->stopping) { /* SIGTERM arrived meanwhile */
    csr_config_destroy(next);
    csr_admin_close(&app->admin, NULL);
    return;
  }
  if (open_relay(app, next) == 0) {
    csr_config_destroy(app->cfg);
    app->cfg = next;
    app->reloads->value++;
    CSR_LOG(CSR_INFO, "configuration reloaded", CSR_KS("path", next->path));
    return;
  }
  csr_config_destroy(next);
  app->reload_failures->value++;
  apply_log_level(app->cfg);
  if (open_relay(app, app->cfg) < 0) /* it ran a moment ago: only a vanished resource fails */
    CSR_LOG(CSR_ERROR, "the previous configuration cannot start either; pipeline stopped");
}

/* Settings that live in handles already bound (listen addresses) need a restart; the pipeline is
 * rebuilt on the new config (see RELOAD_DRAIN_MS). */
static int reload(void *arg, char *why, size_t len) {
  struct app *app = arg;
  if (app->relay == NULL) {
    snprintf(why, len, "a reload or stop is in progress");
    return UV_EBUSY;
  }
  struct csr_config *next = NULL;
  if (load_config(app->cfg->path, &next, why, len) < 0) {
    app->reload_failures->value++;
    CSR_LOG(CSR_ERROR, "reload rejected; the running configuration stays", CSR_KS("reason", why));
    return CSR_ECONFIG;
  }
  if (csr_admin_set_token(&app->admin, next->admin.token) < 0) {
    csr_config_destroy(next);
    snprintf(why, len, "out of memory");
    return UV_ENOMEM;
  }
  if (strcmp(next->admin.listen.host, app->cfg->admin.listen.host) != 0 ||
      next->admin.listen.port != app->cfg->admin.listen.port)
    CSR_LOG(CSR_WARN, "admin.listen changed; it applies at the next restart");
  apply_log_level(next);
  app->next_cfg = next;
  struct csr_relay *old = app->relay;
  app->relay = NULL;
  CSR_LOG(CSR_INFO, "reloading: draining the pipeline", CSR_KS("path", next->path));
  csr_relay_stop(old, RELOAD_DRAIN_MS, on_reload_stopped, app);
  return 0;
}

static void on_sighup(struct rx_loop *loop) {
  char why[1024];
  (void)reload(loop->data, why, sizeof(why));
}

/* The pipeline is down and the AOF flushed: closing the admin server lets the loop end. */
static void on_relay_stopped(void *arg) {
  struct app *app = arg;
  CSR_LOG(CSR_INFO, "pipeline stopped; state flushed");
  csr_admin_close(&app->admin, NULL);
}

static void on_stop(struct rx_loop *loop, int signum) {
  struct app *app = loop->data;
  if (app->stopping)
    return;
  app->stopping = 1;
  CSR_LOG(CSR_INFO, "stopping: draining the pipeline",
          CSR_KS("signal", signum == SIGTERM ? "SIGTERM" : "SIGINT"));
  if (app->relay == NULL) { /* a reload is between relays: its callback finishes the stop */
    if (app->next_cfg == NULL)
      csr_admin_close(&app->admin, NULL);
    return;
  }
  struct csr_relay *relay = app->relay;
  app->relay = NULL;
  csr_relay_stop(relay, stop_drain_ms(app->cfg), on_relay_stopped, app);
}

static void collect_relay(void *arg) {
  struct app *app = arg;
  csr_relay_collect(app->relay);
}

static int relay_ready(void *arg, char *why, size_t len) {
  struct app *app = arg;
  return csr_relay_ready(app->relay, why, len);
}

static int register_metrics(struct app *app) {
  struct csr_family *reloads =
      csr_metrics_family(&app->metrics, "csurelay_config_reloads_total",
                         "Configuration reloads by result.", CSR_COUNTER, NULL, 0);
  app->reloads = reloads ? csr_metrics_series(reloads, "result", "ok", NULL) : NULL;
  app->reload_failures = reloads ? csr_metrics_series(reloads, "result", "rejected", NULL) : NULL;
  if (!app->reloads || !app->reload_failures)
    return UV_ENOMEM;
  return csr_metrics_collector(&app->metrics, collect_relay, app);
}

static int start(struct app *app) {
  int rc = uv_loop_init(&app->uv);
  if (rc < 0)
    return rc;
  rc = rx_loop_init(&app->loop, &app->uv);
  if (rc < 0) {
    uv_loop_close(&app->uv);
    return rc;
  }
  app->loop.data = app;
  rc = register_metrics(app);
  if (rc == 0)
    rc = rx_loop_signals_start(&app->loop, on_stop, on_sighup);
  if (rc == 0)
    rc = csr_admin_start(&app->admin, &app->loop, &app->metrics, &app->cfg->admin.listen,
                         app->cfg->admin.token);
  if (rc < 0) {
    CSR_LOG(CSR_ERROR, "cannot serve the admin API", CSR_KS("host", app->cfg->admin.listen.host),
            CSR_KI("port", app->cfg->admin.listen.port), CSR_KERR(rc));
    rx_loop_close(&app->loop);
    return rc;
  }
  csr_admin_on_reload(&app->admin, reload, app);
  rc = csr_admin_ready_check(&app->admin, relay_ready, app);
  if (rc == 0)
    rc = csr_admin_v1_start(&app->v1, &app->admin, &app->relay);
  if (rc == 0)
    rc = open_relay(app, app->cfg);
  if (rc < 0) {
    csr_admin_close(&app->admin, NULL);
    rx_loop_run(&app->loop); /* lets the admin server close */
    rx_loop_close(&app->loop);
    return rc;
  }
  return 0;
}

static int cmd_run(const char *path) {
  struct app app = {0};
  char why[1024];
  if (load_config(path, &app.cfg, why, sizeof(why)) < 0) {
    fprintf(stderr, "csurelay: %s\n", why);
    return EXIT_FAIL;
  }
  apply_log_level(app.cfg);
  bool background_purge = csr_heap_purge_in_background();
  csr_metrics_init(&app.metrics);
  int rc = start(&app);
  if (rc == 0) {
    CSR_LOG(CSR_INFO, "csurelay running", CSR_KS("version", CSR_VERSION),
            CSR_KS("config", app.cfg->path), CSR_KS("admin_host", app.cfg->admin.listen.host),
            CSR_KI("admin_port", app.admin.server.port), CSR_KS("allocator", csr_heap_allocator()),
            CSR_KS("heap_purge", background_purge ? "background thread" : "inline"));
    rx_loop_run(&app.loop);
    rc = rx_loop_close(&app.loop);
    if (rc < 0)
      CSR_LOG(CSR_ERROR, "handles left open at exit", CSR_KERR(rc));
    else
      CSR_LOG(CSR_INFO, "stopped cleanly");
  }
  csr_metrics_destroy(&app.metrics);
  csr_config_destroy(app.cfg);
  return rc < 0 ? EXIT_FAIL : EXIT_OK;
}

/* Finds the value of -c/--config in argv[2..]; NULL when absent. */
static const char *config_arg(int argc, char **argv) {
  for (int i = 2; i < argc; i++) {
    if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
      return argv[i + 1];
    if (strncmp(argv[i], "--config=", 9) == 0)
      return argv[i] + 9;
  }
  return NULL;
}

int main(int argc, char **argv) {
  /* A peer that closes mid-write must cost one failed write, not the process: libuv writes with
   * write(2), which raises SIGPIPE. */
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2) {
    usage(stderr);
    return EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
    printf("csurelay %s\n", CSR_VERSION);
    return EXIT_OK;
  }
  if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
    usage(stdout);
    return EXIT_OK;
  }
  if (strcmp(cmd, "state") == 0)
    return csr_cmd_state(argc, argv);
  const char *path = config_arg(argc, argv);
  if ((strcmp(cmd, "run") == 0 || strcmp(cmd, "check") == 0) && path == NULL) {
    fprintf(stderr, "csurelay %s: missing -c FILE\n", cmd);
    usage(stderr);
    return EXIT_USAGE;
  }
  if (strcmp(cmd, "check") == 0)
    return cmd_check(path);
  if (strcmp(cmd, "run") == 0)
    return cmd_run(path);
  fprintf(stderr, "csurelay: unknown command '%s'\n", cmd);
  usage(stderr);
  return EXIT_USAGE;
}
