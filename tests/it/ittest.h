/* End-to-end test fixture (tests/it/): real csusim and csurelay processes on ephemeral loopback
 * ports, outcomes read only through csusim's ledger (/ledger, /ledger/diff, /ledger/events) and the
 * relay's admin API (/v1/status, /v1/events/{id}, /v1/dlq, /readyz, /metrics).
 *
 * Every wait is bounded: a helper that waits takes a deadline and fails the test (cmocka) when it
 * passes, after printing what it saw. Children get PR_SET_PDEATHSIG, so a test killed by ctest's
 * TIMEOUT takes them along. Each child writes its stdout and stderr to a file in the test's
 * scratch directory; a failed test keeps the directory and prints the tails of the logs.
 *
 * Binaries: CSR_BIN (csurelay) and CSR_SIM_BIN (csusim), set by tests/CMakeLists.txt.
 * CSR_IT_SLOW (a number, default 1) stretches every deadline, for the sanitizer build.
 */
#ifndef CSR_ITTEST_H
#define CSR_ITTEST_H

#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "csurelay/json.h"

#define IT_SECRET  "csusim-secret"
#define IT_TRIGGER "msdynmkt_csucheckouteventtrigger_144841371"

/** A child process and its log. */
struct it_proc {
  pid_t pid; /* 0 when not running */
  char log[512];
};

/** What csusim is started with. */
struct it_sim_opts {
  unsigned csus;           /* default 1 */
  double rate;             /* events/s in total; 0 = none */
  uint64_t seed;           /* default 1 */
  const char *faults_yaml; /* written to faults.yaml and passed as --faults; NULL = none */
  const char *events_json; /* written to events.json and passed as --events; NULL = none */
};

/** The relay's configuration (it_config_write); zeros take the defaults named here. */
struct it_cfg {
  const char *fsync;           /* "batch" */
  unsigned max_live_events;    /* 20000 */
  unsigned http_timeout_ms;    /* 5000 */
  unsigned retry_base_ms;      /* 200 */
  unsigned retry_cap_ms;       /* 2000 */
  unsigned retry_max_attempts; /* 10 */
  unsigned poll_interval_ms;   /* 500 */
  unsigned page_size;          /* 250 */
  unsigned overlap_s;          /* 10 */
  unsigned settle_ms;          /* 2000 */
  unsigned sweep_s;            /* 900 */
  unsigned sweep_every_s;      /* 300 */
  unsigned cij_max_in_flight;  /* 32 (SPEC: at most 52) */
  unsigned cij_rate_per_s;     /* 2000 */
  unsigned hook_max_in_flight; /* 32 */
  const char *journeys_extra;  /* appended inside the journeys delivery's flow mapping, e.g.
                                  "fields: {...}"; NULL = the default mapping */
};

/** One test's world. */
struct it {
  char name[64];
  char dir[256];   /* scratch directory */
  char state[512]; /* the relay's state.dir (dir/state) */
  char cfg[512];   /* dir/csurelay.yaml */
  struct it_proc sim, relay;
  unsigned csus;
  int sim_port, admin_port;
  char sim_url[64];    /* http://127.0.0.1:PORT */
  char admin_url[64];  /* http://127.0.0.1:PORT of the running relay */
  unsigned relay_runs; /* relay starts so far (logs relay-1.log, relay-2.log, ...) */
  double slow;         /* CSR_IT_SLOW */
  bool passed;         /* it_pass(): the scratch directory is removed at teardown */
  void *curl;
  /* mosquitto (it_broker_start): stopped at teardown, its log's tail printed on a failure */
  struct it_proc broker;
  int mqtt_port;        /* 0 until it_broker_start */
  char mqtt_url[64];    /* tcp://127.0.0.1:PORT */
  unsigned broker_runs; /* broker starts so far (logs mosquitto-1.log, ...) */
  /* the customer sync ingress of the running relay (it_ingress_wait) */
  int ingress_port;
  char ingress_url[64]; /* http://127.0.0.1:PORT */
};

/** One answer. `json` is the parsed body when it parses, else NULL. Free with it_resp_free. */
struct it_resp {
  long status; /* 0 when the request failed (connect, timeout) */
  char *body;
  size_t len;
  yajl_val json;
};

/** /ledger/diff for one sink, parsed. Free with it_diff_free. */
struct it_diff {
  int64_t expected, delivered, missing, duplicated, skipped_no_email, unexpected, unknown,
      mismatched;
  yajl_val doc;
};

/* ---------------------------------------------------------------------------------------------- */
/* Lifetime */
/* ---------------------------------------------------------------------------------------------- */

/** Creates the scratch directory and the HTTP client. */
void it_setup(struct it *t, const char *name);
/** Kills what still runs (relay SIGKILL, csusim SIGTERM), prints log tails unless it_pass() was
 * called, removes the scratch directory if it was. */
void it_teardown(struct it *t);
/** Marks the test as passed (call last). */
void it_pass(struct it *t);

/** cmocka setup/teardown wrappers: *state is a calloc'd struct it named after the test. */
int it_cm_setup(void **state);
int it_cm_teardown(void **state);

/* ---------------------------------------------------------------------------------------------- */
/* Processes */
/* ---------------------------------------------------------------------------------------------- */

/** Starts csusim on 127.0.0.1:0 and waits for its "listening on" line (sets sim_port, sim_url). */
void it_sim_start(struct it *t, const struct it_sim_opts *o);
/** Writes t->cfg for the running csusim (t->csus CSUs, cij + webhook "audit", the default routes).
 */
void it_config_write(struct it *t, const struct it_cfg *c);
/** Starts `csurelay run -c t->cfg` and waits until its admin API answers /healthz. */
void it_relay_start(struct it *t);
/** Starts the relay without waiting for anything (crash rounds kill it at any moment). */
void it_relay_spawn(struct it *t);
/** Waits for the running relay's "ingress listening" log line (its port may be ephemeral); sets
 * ingress_port and ingress_url. */
void it_ingress_wait(struct it *t);
/** SIGTERM, then waits up to `within_ms` (stretched by CSR_IT_SLOW) for the exit; returns the exit
 * code, fails the test on a timeout or a signal. *took_ms (may be NULL) gets the time it took. */
int it_relay_stop(struct it *t, long within_ms, long *took_ms);
/** SIGKILL and reap. */
void it_relay_kill(struct it *t);

/* ---------------------------------------------------------------------------------------------- */
/* HTTP and JSON */
/* ---------------------------------------------------------------------------------------------- */

/** One request (`body` NULL = none; JSON content type when given) to a full URL. */
long it_http(struct it *t, const char *method, const char *url, const char *body,
             struct it_resp *out);
void it_resp_free(struct it_resp *r);
/** GET sim_url + path (printf-style); asserts 200 and a JSON body; caller frees with csr_json_free.
 */
yajl_val it_sim_json(struct it *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Same on the relay's admin API. */
yajl_val it_admin_json(struct it *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** The value of one series in the relay's GET /metrics, e.g.
 * `csurelay_delivered_total{sink="audit"}` (asserts it is there). */
double it_metric(struct it *t, const char *series);
/** POST sim_url/sim/faults with a YAML body (replaces the plan; "" heals the endpoints). */
void it_sim_faults(struct it *t, const char *yaml);
/** The integer at a dotted path (asserts it is there). */
int64_t it_int(yajl_val v, const char *path);
/** The integer at a dotted path, or `dflt` when absent. */
int64_t it_int_or(yajl_val v, const char *path, int64_t dflt);
/** Percent-encodes `s` into `buf` (RFC 3986 unreserved kept). */
const char *it_escape(const char *s, char *buf, size_t len);

/* ---------------------------------------------------------------------------------------------- */
/* Ledger */
/* ---------------------------------------------------------------------------------------------- */

/** GET /ledger/diff?sink=..[&type=..][&until_ms=..] (type NULL = any, until_ms 0 = no limit). */
void it_diff(struct it *t, const char *sink, const char *type, int64_t until_ms, struct it_diff *d);
void it_diff_free(struct it_diff *d);
/** Prints a diff's counts and its first missing and duplicated ids. */
void it_diff_print(const char *sink, const struct it_diff *d);
/**
 * Polls the diffs of `sinks` (NULL-terminated) every 250 ms until none has a missing event
 * committed before `until_ms`, or `deadline_ms` (stretched by CSR_IT_SLOW) passes; then prints the
 * diffs, asks the relay about a missing event, and fails the test.
 */
void it_wait_complete(struct it *t, const char *const *sinks, int64_t until_ms, long deadline_ms);
/** Calls `fn` for every event in /ledger/events (paged), in the ledger's order. */
void it_ledger_each(struct it *t, void (*fn)(yajl_val ev, void *arg), void *arg);
/** An instant's text (ISO-8601) in wall ms; asserts it parses. */
int64_t it_time_ms(const char *text);
/** Waits (bounded) until the trigger and webhook:audit diffs have delivered >= n_* events. */
void it_wait_delivered(struct it *t, int64_t n_trigger, int64_t n_hook, long deadline_ms);

/* ---------------------------------------------------------------------------------------------- */
/* mosquitto and csusim's own configuration */
/* ---------------------------------------------------------------------------------------------- */

/**
 * Starts /usr/sbin/mosquitto on a free loopback port (found by binding 127.0.0.1:0) with
 * dir/mosquitto.conf: `listener PORT 127.0.0.1`, `allow_anonymous true`, `persistence` as given
 * (its file in the scratch directory; mosquitto writes it when SIGTERM stops it, so sessions and
 * their queued messages survive a restart), and no cap on queued messages (mosquitto's default of
 * 1000 per client would drop QoS 1 messages under load). Waits until it accepts connections; sets
 * mqtt_port and mqtt_url.
 */
void it_broker_start(struct it *t, bool persist);
/** SIGTERM and wait (bounded) for the exit. */
void it_broker_stop(struct it *t);
/** Starts mosquitto again with the same configuration, on the same port (retried while the port is
 * not free yet), and waits until it accepts connections. */
void it_broker_restart(struct it *t);
/** Writes t->cfg with `csusim --print-config` for the running csusim: t->csus CSUs, state in
 * t->state, admin on 127.0.0.1:0, and its mqtt sink `stores` when `mqtt_url` is not NULL. */
void it_config_print(struct it *t, const char *mqtt_url);
/** Replaces the one occurrence of `from` in t->cfg by `to` (fails when there is not exactly one).
 */
void it_config_edit(struct it *t, const char *from, const char *to);
/** A request with extra header lines (NULL-terminated, may be NULL); `body` is sent as given. */
long it_http_hdrs(struct it *t, const char *method, const char *url, const char *const *headers,
                  const char *body, struct it_resp *out);

/* ---------------------------------------------------------------------------------------------- */
/* Time */
/* ---------------------------------------------------------------------------------------------- */

int64_t it_wall_ms(void);
int64_t it_mono_ms(void);
void it_sleep_ms(long ms);
/** `ms` stretched by CSR_IT_SLOW. */
long it_slow(const struct it *t, long ms);

#endif
