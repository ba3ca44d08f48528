/* The request gate. Every emulated endpoint calls sim_serve() once it knows which contract it is
 * serving; the gate asks the fault plan what to do with this request and then delays it, answers
 * it with an error in the right party's shape, holds it without an answer (a timeout), resets the
 * connection, or passes it to the handler (marking it for a malformed body if so drawn).
 *
 * Requests that wait (a latency delay or a held timeout) sit on sim->_held so that stopping the
 * sim can release them; a periodic sweep drops held timeouts whose client has gone away. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim.h"

#define JSON_TYPE   "application/json; odata.metadata=minimal"
#define SWEEP_MS    500
#define MAX_HOLD_MS (5 * 60 * 1000) /* a held timeout ends in a reset after this, at the latest */

enum party { PARTY_COMMERCE, PARTY_DATAVERSE, PARTY_ENTRA, PARTY_PLAIN };

static enum party party_of(const char *endpoint) {
  if (strcmp(endpoint, "token") == 0)
    return PARTY_ENTRA;
  if (strncmp(endpoint, "contacts", 8) == 0 || strcmp(endpoint, "trigger") == 0)
    return PARTY_DATAVERSE;
  if (strcmp(endpoint, "webhook") == 0)
    return PARTY_PLAIN;
  return PARTY_COMMERCE;
}

static void hold(struct sim_req *r) {
  struct sim *sim = r->sim;
  r->_prev = NULL;
  r->_next = sim->_held;
  if (sim->_held)
    sim->_held->_prev = r;
  sim->_held = r;
}

static void unhold(struct sim_req *r) {
  if (r->_prev)
    r->_prev->_next = r->_next;
  else if (r->sim->_held == r)
    r->sim->_held = r->_next;
  if (r->_next)
    r->_next->_prev = r->_prev;
  r->_prev = r->_next = NULL;
}

static void on_timer_closed(struct rx_timer *timer) {
  free(RX_CONTAINER_OF(timer, struct sim_req, _delay));
}

/* A request with a timer is freed in the timer's close callback (libuv owns the handle until then).
 */
static void release(struct sim_req *r) {
  unhold(r);
  if (r->_has_timer)
    rx_timer_close(&r->_delay, on_timer_closed);
  else
    free(r);
}

static void reset_request(struct sim_req *r) {
  sim_ledger_request(r->sim->ledger, r->endpoint, 0);
  rx_http_reset(r->http);
  release(r);
}

static void entra_error(struct sim_req *r, int status, const char *error, int aadsts,
                        const char *description, const char *headers);

/* The body an injected error carries: what each party really answers when it is overloaded or down.
 */
static void reply_injected(struct sim_req *r) {
  char headers[64] = "";
  if (r->_retry_after_s > 0)
    snprintf(headers, sizeof(headers), "Retry-After: %llu\r\n",
             (unsigned long long)r->_retry_after_s);
  int st = r->_status;
  switch (party_of(r->endpoint)) {
    case PARTY_DATAVERSE:
      if (st == 429)
        sim_reply_dataverse_error(r, st, "0x80072322",
                                  "Number of requests exceeded the limit of 6000 over time window "
                                  "of 300 seconds.",
                                  headers);
      else
        sim_reply_dataverse_error(r, st, "0x80040216", "An unexpected error occurred.", headers);
      return;
    case PARTY_ENTRA:
      entra_error(r, st, "temporarily_unavailable", 90055,
                  "The service is temporarily unavailable. Retry the request.",
                  headers[0] ? headers : NULL);
      return;
    case PARTY_PLAIN:
      sim_reply(r, st, headers[0] ? headers : NULL, NULL, "{\"error\":\"injected\"}", 20);
      return;
    case PARTY_COMMERCE:
      break;
  }
  if (headers[0] == '\0') {
    sim_reply_commerce_error(r, st, "Microsoft_Dynamics_Commerce_Runtime_CriticalStorageError",
                             "An unexpected error occurred on the server.", "CommerceException");
    return;
  }
  /* The Commerce error helper takes no extra headers; Retry-After needs the raw reply. */
  struct csr_jw jw;
  if (csr_jw_init(&jw) < 0) {
    sim_reply(r, 500, NULL, NULL, "{}", 2);
    return;
  }
  csr_jw_obj(&jw);
  csr_jw_kstr(&jw, "ErrorResourceId", "Microsoft_Dynamics_Commerce_Runtime_RequestThrottled");
  csr_jw_kstr(&jw, "LocalizedMessage", "The service is busy. Retry the request later.");
  csr_jw_kstr(&jw, "ExceptionType", "CommerceException");
  csr_jw_obj_end(&jw);
  sim_reply_jw(r, st, headers, &jw);
  csr_jw_free(&jw);
}

static void proceed(struct sim_req *r) {
  if (r->_reset)
    reset_request(r);
  else if (r->_timeout)
    hold(r); /* no answer: the sweep releases it once the client gives up */
  else if (r->_status)
    reply_injected(r);
  else
    r->_handler(r);
}

static uint64_t on_delay(struct rx_timer *timer) {
  struct sim_req *r = RX_CONTAINER_OF(timer, struct sim_req, _delay);
  unhold(r);
  proceed(r);
  return RX_TIMER_STOP;
}

static void apply_decision(struct sim_req *r, const struct sim_fault_decision *d) {
  r->_malformed = d->malformed;
  r->_timeout = d->timeout;
  r->_reset = d->reset;
  r->_status = d->status;
  r->_retry_after_s = d->retry_after_s;
}

void sim_serve(struct sim *sim, struct rx_http_request *req, const char *endpoint, int csu,
               sim_handler handler, void *arg) {
  struct sim_req *r = calloc(1, sizeof(*r));
  if (r == NULL) {
    rx_http_respond(req, 503, NULL, JSON_TYPE, "{\"error\":\"out_of_memory\"}", 25);
    return;
  }
  *r = (struct sim_req){.sim = sim,
                        .http = req,
                        .endpoint = endpoint,
                        .csu = csu,
                        .arg = arg,
                        .received_ms = rx_wall_ms(),
                        ._handler = handler};
  sim->requests++;
  struct sim_fault_decision d = {0};
  if (sim->faults)
    sim_faults_decide(sim->faults, endpoint, csu, sim_elapsed_ms(sim), &d);
  apply_decision(r, &d);
  if (d.latency_ms == 0) {
    proceed(r);
    return;
  }
  if (rx_timer_init(&r->_delay, sim->loop) < 0) {
    proceed(r); /* no timer: serve without the delay rather than fail */
    return;
  }
  r->_has_timer = true;
  hold(r);
  if (rx_timer_start(&r->_delay, on_delay, d.latency_ms) < 0) {
    unhold(r);
    proceed(r);
  }
}

void sim_reply(struct sim_req *r, int status, const char *headers, const char *content_type,
               const char *body, size_t len) {
  /* A malformed-body fault cuts a success body in half: the JSON no longer parses, the length
   * header still matches, just like a proxy that truncated an upstream answer. */
  if (r->_malformed && status >= 200 && status < 300 && len > 1)
    len /= 2;
  rx_http_respond(r->http, status, headers, content_type ? content_type : JSON_TYPE, body, len);
  sim_ledger_request(r->sim->ledger, r->endpoint, status);
  release(r);
}

void sim_reply_jw(struct sim_req *r, int status, const char *headers, struct csr_jw *jw) {
  const char *text;
  size_t len;
  if (csr_jw_finish(jw, &text, &len) < 0) {
    sim_reply(r, 500, NULL, NULL, "{\"error\":\"encoding\"}", 20);
    return;
  }
  sim_reply(r, status, headers, NULL, text, len);
}

void sim_reply_commerce_error(struct sim_req *r, int status, const char *resource_id,
                              const char *message, const char *exception_type) {
  struct csr_jw jw;
  if (csr_jw_init(&jw) < 0) {
    sim_reply(r, status, NULL, NULL, "{}", 2);
    return;
  }
  csr_jw_obj(&jw);
  csr_jw_kstr(&jw, "ErrorResourceId", resource_id);
  csr_jw_kstr(&jw, "LocalizedMessage", message);
  csr_jw_kstr(&jw, "ExceptionType", exception_type ? exception_type : "CommerceException");
  csr_jw_obj_end(&jw);
  sim_reply_jw(r, status, NULL, &jw);
  csr_jw_free(&jw);
}

void sim_reply_dataverse_error(struct sim_req *r, int status, const char *code, const char *message,
                               const char *headers) {
  struct csr_jw jw;
  if (csr_jw_init(&jw) < 0) {
    sim_reply(r, status, headers, NULL, "{}", 2);
    return;
  }
  csr_jw_obj(&jw);
  csr_jw_key(&jw, "error");
  csr_jw_obj(&jw);
  csr_jw_kstr(&jw, "code", code);
  csr_jw_kstr(&jw, "message", message);
  csr_jw_obj_end(&jw);
  csr_jw_obj_end(&jw);
  sim_reply_jw(r, status, headers, &jw);
  csr_jw_free(&jw);
}

/* Trace and correlation ids look like Entra's GUIDs and differ per answer. */
static void fake_guid(struct sim *sim, char *buf, size_t len) {
  static uint64_t n;
  uint64_t a = ++n * 0x9E3779B97F4A7C15ull ^ sim->opts.seed;
  uint64_t b = rx_rand64(&a);
  snprintf(buf, len, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(a >> 32), (unsigned)(b >> 48),
           (unsigned)(b >> 32) & 0xffff, (unsigned)(b >> 16) & 0xffff,
           (unsigned long long)(a & 0xffffffffffffull));
}

static void entra_error(struct sim_req *r, int status, const char *error, int aadsts,
                        const char *description, const char *headers) {
  char trace[40], corr[40], stamp[32], text[768];
  fake_guid(r->sim, trace, sizeof(trace));
  fake_guid(r->sim, corr, sizeof(corr));
  int64_t now = rx_wall_ms() / 1000;
  struct tm tm;
  time_t t = (time_t)now;
  gmtime_r(&t, &tm);
  strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%SZ", &tm);
  snprintf(text, sizeof(text),
           "AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s", aadsts,
           description, trace, corr, stamp);
  struct csr_jw jw;
  if (csr_jw_init(&jw) < 0) {
    sim_reply(r, status, NULL, NULL, "{}", 2);
    return;
  }
  char uri[96];
  snprintf(uri, sizeof(uri), "https://login.microsoftonline.com/error?code=%d", aadsts);
  csr_jw_obj(&jw);
  csr_jw_kstr(&jw, "error", error);
  csr_jw_kstr(&jw, "error_description", text);
  csr_jw_key(&jw, "error_codes");
  csr_jw_arr(&jw);
  csr_jw_int(&jw, aadsts);
  csr_jw_arr_end(&jw);
  csr_jw_kstr(&jw, "timestamp", stamp);
  csr_jw_kstr(&jw, "trace_id", trace);
  csr_jw_kstr(&jw, "correlation_id", corr);
  csr_jw_kstr(&jw, "error_uri", uri);
  csr_jw_obj_end(&jw);
  sim_reply_jw(r, status, headers, &jw);
  csr_jw_free(&jw);
}

void sim_reply_entra_error(struct sim_req *r, int status, const char *error, int aadsts,
                           const char *description) {
  entra_error(r, status, error, aadsts, description,
              status == 401 ? "WWW-Authenticate: Bearer\r\n" : NULL);
}

/* Held timeouts end when their client gives up (the answer would go nowhere) or, at the latest,
 * after MAX_HOLD_MS with a reset, so a forgotten client cannot pin memory forever. */
static uint64_t on_sweep(struct rx_timer *timer) {
  struct sim *sim = RX_CONTAINER_OF(timer, struct sim, _sweep);
  int64_t now = rx_wall_ms();
  for (struct sim_req *r = sim->_held, *next; r; r = next) {
    next = r->_next;
    if (!r->_timeout || (r->_has_timer && rx_timer_active(&r->_delay)))
      continue;
    if (rx_http_request_orphaned(r->http)) {
      /* The answer is dropped by the server; it only releases the request. */
      rx_http_respond(r->http, 504, NULL, NULL, NULL, 0);
      sim_ledger_request(sim->ledger, r->endpoint, 0);
      release(r);
    } else if (now - r->received_ms > MAX_HOLD_MS) {
      reset_request(r);
    }
  }
  return SWEEP_MS;
}

int sim_route_init(struct sim *sim) {
  int rc = rx_timer_init(&sim->_sweep, sim->loop);
  if (rc < 0)
    return rc;
  rx_timer_unref(&sim->_sweep);
  return rx_timer_start(&sim->_sweep, on_sweep, SWEEP_MS);
}

void sim_route_close(struct sim *sim) {
  rx_timer_stop(&sim->_sweep);
  /* Delayed and held requests die with a reset: the sim is going away. */
  while (sim->_held) {
    struct sim_req *r = sim->_held;
    if (r->_has_timer)
      rx_timer_stop(&r->_delay);
    reset_request(r);
  }
}
