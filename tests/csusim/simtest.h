/* In-process csusim for tests: a loop, a sim on an ephemeral loopback port, a blocking-style HTTP
 * call that runs the loop until the answer arrives (bounded), and a raw HTTP/1.1 exchange for tests
 * that read response headers the client does not keep. */
#ifndef CSUSIM_SIMTEST_H
#define CSUSIM_SIMTEST_H

#include "sim.h"

struct st {
  uv_loop_t uv;
  struct rx_loop loop;
  struct sim sim;
  struct rx_http http;
  char tokens[2][512]; /* cached per audience */
};

/** A finished call. `json` is the parsed body when it is JSON, else NULL. */
struct st_resp {
  int result; /* 0, or the transport error (UV_ETIMEDOUT, UV_ECONNRESET, ...) */
  long status;
  char *body;
  size_t len;
  long retry_after_ms;
  char *odata_entity_id;
  char *location;
  yajl_val json;
};

/** Starts a sim with `csus` CSUs, `rate` events/s in total, and a fault plan (YAML or NULL). */
void st_start(struct st *t, unsigned csus, double rate, const char *faults_yaml);
/** Same with full options (opts->port/host are forced to loopback:0). */
void st_start_opts(struct st *t, const struct sim_opts *opts);
/** Stops everything and asserts the loop closed clean. */
void st_stop(struct st *t);

/**
 * One HTTP call to the sim, run to completion (at most `timeout_ms`, 0 = 10 s). `headers` is a
 * NULL-terminated list of "Name: value" lines or NULL; `body` NULL for none. Returns out->result.
 */
int st_call(struct st *t, const char *method, const char *path, const char *const *headers,
            const char *body, long timeout_ms, struct st_resp *out);
void st_resp_free(struct st_resp *r);

/** A valid token for `aud`, fetched from the sim's token endpoint once and cached. */
const char *st_token(struct st *t, enum sim_audience aud);
/** "Authorization: Bearer <token>" for `aud` (static buffer per audience). */
const char *st_auth(struct st *t, enum sim_audience aud);

/** Runs the loop for `ms` (lets generators produce events). */
void st_run_ms(struct st *t, uint64_t ms);

/** A raw HTTP/1.1 exchange from a thread while the loop runs here, to read any response header. */
struct st_raw {
  int port;
  const char *request;
  char resp[16384]; /* the whole answer as received, NUL-terminated */
  size_t len;
  uv_async_t wake;
  int done;
};

/**
 * Sends `request` (which should say Connection: close) to 127.0.0.1:`port` and runs the loop until
 * the answer is in `x`.
 */
void st_raw_call(struct st *t, int port, const char *request, struct st_raw *x);
/** The answer's status code, or 0 when there is no status line. */
int st_raw_status(const struct st_raw *x);
/** A header's value (up to the CR) in `buf`, or "" when absent; returns `buf`. */
const char *st_raw_header(const struct st_raw *x, const char *name, char *buf, size_t cap);

#endif
