/* csusim's command line (issue 3; scripts, the bench and other teams' tests rely on it exactly):
 *
 *   csusim --listen 127.0.0.1:PORT [--csus N] [--rate EVENTS_PER_S] [--seed S]
 *          [--client-secret S] [--faults FILE] [--events FILE]
 *   csusim ... --print-config [--state-dir DIR] [--admin-listen ADDR] [--mqtt URL]
 *
 * Once listening it prints one line to stdout, "csusim listening on http://HOST:PORT", so a script
 * started with port 0 learns the port. SIGTERM/SIGINT stop it.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/config.h"
#include "csurelay/log.h"
#include "sim.h"

struct app {
  uv_loop_t uv;
  struct rx_loop loop;
  struct sim sim;
  int stopping;
};

static void usage(FILE *out) {
  fprintf(out,
          "usage: csusim --listen 127.0.0.1:PORT [--csus N] [--rate EVENTS_PER_S] [--seed S]\n"
          "              [--client-secret S] [--faults FILE] [--events FILE]\n"
          "       csusim ... --print-config [--state-dir DIR] [--admin-listen ADDR] [--mqtt URL]\n"
          "\n"
          "  --rate is events per second in total, split evenly across the CSUs.\n"
          "  --print-config prints a csurelay configuration for this csusim and exits;\n"
          "  the relay reads the client secret from the CSUSIM_CLIENT_SECRET variable.\n");
}

static int parse_listen(const char *text, struct sim_opts *o) {
  struct csr_listen l;
  if (csr_listen_parse(text, &l) < 0)
    return -1;
  snprintf(o->host, sizeof(o->host), "%s", l.host);
  o->port = l.port;
  free(l.host);
  return 0;
}

static int parse_number(const char *text, double min, double max, double *out) {
  char *end;
  double v = strtod(text, &end);
  if (end == text || *end != '\0' || v < min || v > max)
    return -1;
  *out = v;
  return 0;
}

/* Returns 0, or -1 after printing what was wrong. */
static int parse_args(int argc, char **argv, struct sim_opts *o) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    double num;
    int takes_value = strcmp(a, "--print-config") != 0;
    if (takes_value && v == NULL) {
      fprintf(stderr, "csusim: %s needs a value\n", a);
      return -1;
    }
    if (strcmp(a, "--listen") == 0 && parse_listen(v, o) == 0) {
    } else if (strcmp(a, "--csus") == 0 && parse_number(v, 1, 1000, &num) == 0) {
      o->csus = (unsigned)num;
    } else if (strcmp(a, "--rate") == 0 && parse_number(v, 0, 1e7, &num) == 0) {
      o->rate = num;
    } else if (strcmp(a, "--seed") == 0 && parse_number(v, 0, 1e18, &num) == 0) {
      o->seed = (uint64_t)num;
    } else if (strcmp(a, "--client-secret") == 0 && *v) {
      o->client_secret = v;
    } else if (strcmp(a, "--faults") == 0) {
      o->faults_path = v;
    } else if (strcmp(a, "--events") == 0) {
      o->events_path = v;
    } else if (strcmp(a, "--state-dir") == 0) {
      o->state_dir = v;
    } else if (strcmp(a, "--admin-listen") == 0) {
      o->admin_listen = v;
    } else if (strcmp(a, "--mqtt") == 0) {
      o->mqtt_broker = v;
    } else if (strcmp(a, "--print-config") == 0) {
      o->print_config = true;
    } else {
      fprintf(stderr, "csusim: bad argument '%s'%s%s\n", a, v && takes_value ? " " : "",
              v && takes_value ? v : "");
      return -1;
    }
    i += takes_value;
  }
  return 0;
}

static void print_csu(const struct sim_opts *o, const char *base, unsigned i) {
  printf(
      "  - {name: csu%u, url: \"%s/csu%u/\", oun: \"%u\", identity: commerce,\n"
      "     event_types: [Checkout, AddCartLines], poll_interval_ms: 1000, page_size: 250,\n"
      "     overlap_s: 10, settle_ms: 2000, sweep_s: 900, sweep_every_s: 300, start_from: -1h}\n",
      i, base, i, SIM_FIRST_OUN + i);
}

/* A complete csurelay configuration (SPEC section 7) for this csusim: every CSU polled for both
 * event types, Checkout enriched and sent to the Journeys trigger and the audit webhook,
 * AddCartLines to the webhook (and mqtt when a broker is given). */
static void print_config(const struct sim_opts *o) {
  char base[96];
  snprintf(base, sizeof(base), "http://%s:%d", o->host, o->port);
  printf("# csurelay configuration for csusim at %s (csusim --print-config).\n"
         "# The relay reads the client secret from CSUSIM_CLIENT_SECRET: export it with the value\n"
         "# given to csusim --client-secret (default \"%s\").\n",
         base, SIM_DEFAULT_SECRET);
  printf("state: {dir: \"%s\", fsync: batch, fsync_interval_ms: 5}\n",
         o->state_dir ? o->state_dir : "./var");
  printf("admin: {listen: \"%s\"}\n", o->admin_listen ? o->admin_listen : "127.0.0.1:8686");
  printf("identities:\n");
  const char *names[] = {"commerce", "dataverse"},
             *scopes[] = {SIM_COMMERCE_SCOPE, SIM_DATAVERSE_SCOPE};
  for (int i = 0; i < 2; i++)
    printf("  %s: {authority: \"%s\", tenant: csusim.onmicrosoft.com, client_id: %s,\n"
           "    client_secret_env: CSUSIM_CLIENT_SECRET, scope: \"%s\"}\n",
           names[i], base, SIM_CLIENT_ID, scopes[i]);
  printf("csus:\n");
  for (unsigned i = 0; i < o->csus; i++)
    print_csu(o, base, i);
  printf("sinks:\n"
         "  - {name: journeys, type: cij, dataverse_url: \"%s/dataverse/\", identity: dataverse,\n"
         "     max_in_flight: 16, rate_per_s: 40}\n"
         "  - {name: audit, type: webhook, url: \"%s/hooks/audit\"}\n",
         base, base);
  if (o->mqtt_broker)
    printf("  - {name: stores, type: mqtt, broker: \"%s\", client_id: csurelay-csusim,\n"
           "     topic: \"commerce/{csu}/{channel}/{type}\", qos: 1}\n",
           o->mqtt_broker);
  const char *stores = o->mqtt_broker ? ", {sink: stores}" : "";
  printf("routes:\n"
         "  - event_type: Checkout\n"
         "    enrich: [order, customer]\n"
         "    deliver: [{sink: journeys, trigger: %s}, {sink: audit}%s]\n"
         "  - event_type: AddCartLines\n"
         "    enrich: [customer]\n"
         "    deliver: [{sink: audit}%s]\n",
         SIM_DEFAULT_TRIGGER, stores, stores);
}

static void on_stopped(struct sim *sim) {}

static void on_signal(struct rx_loop *loop, int signum) {
  struct app *app = loop->data;
  if (app->stopping++)
    return;
  CSR_LOG(CSR_INFO, "csusim stopping");
  sim_stop(&app->sim, on_stopped);
}

static int run(const struct sim_opts *o) {
  struct app app = {0};
  char why[512] = "";
  if (uv_loop_init(&app.uv) < 0 || rx_loop_init(&app.loop, &app.uv) < 0)
    return 1;
  app.loop.data = &app;
  int rc = rx_loop_signals_start(&app.loop, on_signal, NULL);
  if (rc == 0)
    rc = sim_start(&app.sim, &app.loop, o, why, sizeof(why));
  if (rc < 0) {
    fprintf(stderr, "csusim: %s\n", why[0] ? why : csr_strerror(rc));
    rx_loop_close(&app.loop);
    return 1;
  }
  printf("csusim listening on %s\n", app.sim.base_url);
  fflush(stdout);
  CSR_LOG(CSR_INFO, "csusim running", CSR_KS("url", app.sim.base_url), CSR_KI("csus", o->csus),
          CSR_KD("rate", o->rate), CSR_KI("seed", (int64_t)o->seed));
  rx_loop_run(&app.loop);
  rc = rx_loop_close(&app.loop);
  return rc < 0 ? 1 : 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  struct sim_opts o;
  sim_opts_default(&o);
  if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
    usage(stdout);
    return 0;
  }
  if (parse_args(argc, argv, &o) < 0) {
    usage(stderr);
    return 2;
  }
  if (!csr_host_is_loopback(o.host)) {
    fprintf(stderr, "csusim: --listen must be a loopback address, not %s\n", o.host);
    return 2;
  }
  if (o.print_config) {
    if (o.port == 0) {
      fprintf(stderr, "csusim: --print-config needs the --listen port the relay will use\n");
      return 2;
    }
    print_config(&o);
    return 0;
  }
  return run(&o);
}
