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
#include "csurelay/config.h"
#include "csurelay/log.h"
#include "csurelay/metrics.h"
#include "csurelay/reactor.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

struct app {
  uv_loop_t uv;
  struct rx_loop loop;
  struct csr_config *cfg;
  struct csr_metrics metrics;
  struct csr_admin admin;
  struct csr_series *reloads;
  struct csr_series *reload_failures;
  int stopping;
};

static void usage(FILE *out) {
  fprintf(out, "usage: csurelay run -c FILE      run the relay\n"
               "       csurelay check -c FILE    validate a configuration and exit\n"
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

/* Settings that live in handles already bound (listen addresses) need a restart; the rest applies
 * at once. The pipeline's settings join here as its stages arrive. */
static int reload(void *arg, char *why, size_t len) {
  struct app *app = arg;
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
  csr_config_destroy(app->cfg);
  app->cfg = next;
  app->reloads->value++;
  CSR_LOG(CSR_INFO, "configuration reloaded", CSR_KS("path", next->path));
  return 0;
}

static void on_sighup(struct rx_loop *loop) {
  char why[1024];
  (void)reload(loop->data, why, sizeof(why));
}

static void on_stop(struct rx_loop *loop, int signum) {
  struct app *app = loop->data;
  if (app->stopping)
    return;
  app->stopping = 1;
  CSR_LOG(CSR_INFO, "stopping", CSR_KS("signal", signum == SIGTERM ? "SIGTERM" : "SIGINT"));
  /* Closing the last handle lets rx_loop_run() return; in-flight work drains as it completes. */
  csr_admin_close(&app->admin, NULL);
}

static int register_metrics(struct app *app) {
  struct csr_family *reloads = csr_metrics_family(
      &app->metrics, "csurelay_config_reloads_total", "Configuration reloads by result.",
      CSR_COUNTER, NULL, 0);
  app->reloads = reloads ? csr_metrics_series(reloads, "result", "ok", NULL) : NULL;
  app->reload_failures = reloads ? csr_metrics_series(reloads, "result", "rejected", NULL) : NULL;
  return app->reloads && app->reload_failures ? 0 : UV_ENOMEM;
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
  csr_metrics_init(&app.metrics);
  int rc = start(&app);
  if (rc == 0) {
    CSR_LOG(CSR_INFO, "csurelay running", CSR_KS("version", CSR_VERSION),
            CSR_KS("config", app.cfg->path), CSR_KS("admin_host", app.cfg->admin.listen.host),
            CSR_KI("admin_port", app.admin.server.port));
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
