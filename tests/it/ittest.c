/* The end-to-end fixture (ittest.h): processes, HTTP through libcurl easy, the ledger's diffs. */
#include "ittest.h"
#include "brokerport.h"

#include "csurelay/timefmt.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#define LOG_TAIL_BYTES 6000

/* ---------------------------------------------------------------------------------------------- */
/* Time */
/* ---------------------------------------------------------------------------------------------- */

static int64_t clock_ms(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t it_wall_ms(void) {
  return clock_ms(CLOCK_REALTIME);
}

int64_t it_mono_ms(void) {
  return clock_ms(CLOCK_MONOTONIC);
}

void it_sleep_ms(long ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

long it_slow(const struct it *t, long ms) {
  return (long)((double)ms * t->slow);
}

/* ---------------------------------------------------------------------------------------------- */
/* Files */
/* ---------------------------------------------------------------------------------------------- */

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  assert_int_equal(fputs(text, f) >= 0, 1);
  assert_int_equal(fclose(f), 0);
}

/* The whole file, NUL-terminated (caller frees); NULL when it cannot be read. */
static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return NULL;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  for (size_t got; buf != NULL && (got = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
    n += got;
    if (cap - n - 1 == 0) {
      char *grown = realloc(buf, cap * 2);
      if (grown == NULL) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = grown;
      cap *= 2;
    }
  }
  fclose(f);
  if (buf != NULL)
    buf[n] = '\0';
  if (len != NULL)
    *len = n;
  return buf;
}

static void print_tail(const char *path) {
  size_t len;
  char *text = read_file(path, &len);
  if (text == NULL)
    return;
  const char *from = len > LOG_TAIL_BYTES ? text + len - LOG_TAIL_BYTES : text;
  fprintf(stderr, "---- last %zu bytes of %s ----\n%s\n---- end of %s ----\n",
          len - (size_t)(from - text), path, from, path);
  free(text);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  return remove(path);
}

/* ---------------------------------------------------------------------------------------------- */
/* Lifetime */
/* ---------------------------------------------------------------------------------------------- */

static const char *relay_bin(void) {
  const char *b = getenv("CSR_BIN");
  return b ? b : "./csurelay";
}

static const char *sim_bin(void) {
  const char *b = getenv("CSR_SIM_BIN");
  return b ? b : "./csusim";
}

void it_setup(struct it *t, const char *name) {
  memset(t, 0, sizeof(*t));
  snprintf(t->name, sizeof(t->name), "%s", name);
  const char *slow = getenv("CSR_IT_SLOW");
  t->slow = slow && atof(slow) >= 1 ? atof(slow) : 1.0;
  const char *tmp = getenv("CSR_IT_TMP");
  snprintf(t->dir, sizeof(t->dir), "%s/csr-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", name);
  assert_non_null(mkdtemp(t->dir));
  snprintf(t->state, sizeof(t->state), "%s/state", t->dir);
  snprintf(t->cfg, sizeof(t->cfg), "%s/csurelay.yaml", t->dir);
  assert_int_equal(setenv("CSUSIM_CLIENT_SECRET", IT_SECRET, 1), 0);
  assert_int_equal(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
  t->curl = curl_easy_init();
  assert_non_null(t->curl);
  fprintf(stderr, "[%s] scratch directory %s (CSR_IT_SLOW=%.1f)\n", name, t->dir, t->slow);
}

void it_pass(struct it *t) {
  t->passed = true;
}

static void reap(struct it_proc *p, int sig, long wait_ms) {
  if (p->pid <= 0)
    return;
  kill(p->pid, sig);
  int64_t end = it_mono_ms() + wait_ms;
  int status;
  while (waitpid(p->pid, &status, WNOHANG) == 0) {
    if (it_mono_ms() > end) {
      kill(p->pid, SIGKILL);
      waitpid(p->pid, &status, 0);
      break;
    }
    it_sleep_ms(10);
  }
  p->pid = 0;
}

void it_teardown(struct it *t) {
  reap(&t->relay, SIGKILL, 5000);
  reap(&t->sim, SIGTERM, 5000);
  reap(&t->broker, SIGTERM, 5000);
  if (!t->passed) {
    print_tail(t->sim.log);
    print_tail(t->relay.log);
    if (t->broker_runs > 0)
      print_tail(t->broker.log);
    fprintf(stderr, "[%s] failed: logs, config and state kept in %s\n", t->name, t->dir);
  } else if (getenv("CSR_IT_KEEP") == NULL) {
    nftw(t->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  }
  if (t->curl != NULL)
    curl_easy_cleanup(t->curl);
  t->curl = NULL;
}

int it_cm_setup(void **state) {
  struct it *t = calloc(1, sizeof(*t));
  assert_non_null(t);
  *state = t;
  return 0;
}

int it_cm_teardown(void **state) {
  struct it *t = *state;
  if (t != NULL && t->curl != NULL)
    it_teardown(t);
  free(t);
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Processes */
/* ---------------------------------------------------------------------------------------------- */

static void spawn(struct it_proc *p, char *const argv[]) {
  pid_t parent = getpid();
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    /* Dies with the test, even when ctest's TIMEOUT kills the test with SIGKILL. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
      _exit(126);
    int fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || null < 0 || dup2(null, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
      _exit(125);
    execv(argv[0], argv);
    _exit(127);
  }
  p->pid = pid;
}

/* Fails the test, with the log's tail, when `p` has exited. */
static void assert_alive(struct it_proc *p, const char *what) {
  int status;
  if (p->pid > 0 && waitpid(p->pid, &status, WNOHANG) == p->pid) {
    p->pid = 0;
    print_tail(p->log);
    fail_msg("%s exited early (status 0x%x)", what, status);
  }
}

/* Waits until `needle` is in p's log; returns the text from the needle on (caller frees). */
static char *wait_log(struct it *t, struct it_proc *p, const char *what, const char *needle,
                      long deadline_ms) {
  int64_t end = it_mono_ms() + it_slow(t, deadline_ms);
  for (;;) {
    char *text = read_file(p->log, NULL);
    const char *at = text ? strstr(text, needle) : NULL;
    if (at != NULL) {
      char *copy = strdup(at);
      free(text);
      assert_non_null(copy);
      return copy;
    }
    free(text);
    assert_alive(p, what);
    if (it_mono_ms() > end) {
      print_tail(p->log);
      fail_msg("%s: no '%s' in its log within %ld ms", what, needle, it_slow(t, deadline_ms));
    }
    it_sleep_ms(20);
  }
}

void it_sim_start(struct it *t, const struct it_sim_opts *o) {
  char csus[16], rate[32], seed[32], faults[512], events[512];
  t->csus = o->csus ? o->csus : 1;
  snprintf(csus, sizeof(csus), "%u", t->csus);
  snprintf(rate, sizeof(rate), "%g", o->rate);
  snprintf(seed, sizeof(seed), "%llu", (unsigned long long)(o->seed ? o->seed : 1));
  char *argv[16] = {(char *)sim_bin(), "--listen", "127.0.0.1:0", "--csus", csus,
                    "--rate",          rate,       "--seed",      seed};
  int n = 9;
  if (o->faults_yaml != NULL) {
    snprintf(faults, sizeof(faults), "%s/faults.yaml", t->dir);
    write_file(faults, o->faults_yaml);
    argv[n++] = "--faults";
    argv[n++] = faults;
  }
  if (o->events_json != NULL) {
    snprintf(events, sizeof(events), "%s/events.json", t->dir);
    write_file(events, o->events_json);
    argv[n++] = "--events";
    argv[n++] = events;
  }
  argv[n] = NULL;
  snprintf(t->sim.log, sizeof(t->sim.log), "%s/csusim.log", t->dir);
  spawn(&t->sim, argv);
  char *line = wait_log(t, &t->sim, "csusim", "csusim listening on http://127.0.0.1:", 10000);
  t->sim_port = atoi(line + strlen("csusim listening on http://127.0.0.1:"));
  free(line);
  assert_true(t->sim_port > 0);
  snprintf(t->sim_url, sizeof(t->sim_url), "http://127.0.0.1:%d", t->sim_port);
}

#define DEF(v, d) ((v) ? (v) : (d))

void it_config_write(struct it *t, const struct it_cfg *c) {
  FILE *f = fopen(t->cfg, "w");
  assert_non_null(f);
  const char *u = t->sim_url;
  fprintf(f,
          "# %s: written by tests/it/ittest.c for csusim at %s\n"
          "log: {level: info}\n"
          "state: {dir: \"%s\", fsync: %s, fsync_interval_ms: 5}\n"
          "admin: {listen: \"127.0.0.1:0\"}\n"
          "limits: {max_live_events: %u, http_timeout_ms: %u}\n"
          "retry: {base_ms: %u, cap_ms: %u, max_attempts: %u}\n"
          "identities:\n",
          t->name, u, t->state, DEF(c->fsync, "batch"), DEF(c->max_live_events, 20000),
          DEF(c->http_timeout_ms, 5000), DEF(c->retry_base_ms, 200), DEF(c->retry_cap_ms, 2000),
          DEF(c->retry_max_attempts, 10));
  fprintf(f,
          "  commerce: {authority: \"%s\", tenant: csusim.onmicrosoft.com, client_id: csurelay,\n"
          "    client_secret_env: CSUSIM_CLIENT_SECRET, scope: \"api://commerce/.default\"}\n"
          "  dataverse: {authority: \"%s\", tenant: csusim.onmicrosoft.com, client_id: csurelay,\n"
          "    client_secret_env: CSUSIM_CLIENT_SECRET, scope: \"api://dataverse/.default\"}\n"
          "csus:\n",
          u, u);
  for (unsigned i = 0; i < t->csus; i++)
    fprintf(f,
            "  - {name: csu%u, url: \"%s/csu%u/\", oun: \"%u\", identity: commerce,\n"
            "     event_types: [Checkout, AddCartLines], poll_interval_ms: %u, page_size: %u,\n"
            "     overlap_s: %u, settle_ms: %u, sweep_s: %u, sweep_every_s: %u, start_from: -1h}\n",
            i, u, i, 128 + i, DEF(c->poll_interval_ms, 500), DEF(c->page_size, 250),
            DEF(c->overlap_s, 10), DEF(c->settle_ms, 2000), DEF(c->sweep_s, 900),
            DEF(c->sweep_every_s, 300));
  fprintf(f,
          "sinks:\n"
          "  - {name: journeys, type: cij, dataverse_url: \"%s/dataverse/\", identity: dataverse,\n"
          "     max_in_flight: %u, rate_per_s: %u}\n"
          "  - {name: audit, type: webhook, url: \"%s/hooks/audit\", max_in_flight: %u}\n"
          "routes:\n"
          "  - event_type: Checkout\n"
          "    enrich: [order, customer]\n"
          "    deliver:\n"
          "      - {sink: journeys, trigger: %s%s%s}\n"
          "      - {sink: audit}\n"
          "  - event_type: AddCartLines\n"
          "    enrich: [customer]\n"
          "    deliver: [{sink: audit}]\n",
          u, DEF(c->cij_max_in_flight, 32), DEF(c->cij_rate_per_s, 2000), u,
          DEF(c->hook_max_in_flight, 32), IT_TRIGGER, c->journeys_extra ? ", " : "",
          c->journeys_extra ? c->journeys_extra : "");
  assert_int_equal(fclose(f), 0);
}

void it_relay_spawn(struct it *t) {
  assert_int_equal(t->relay.pid, 0);
  t->relay_runs++;
  snprintf(t->relay.log, sizeof(t->relay.log), "%s/relay-%u.log", t->dir, t->relay_runs);
  char *argv[] = {(char *)relay_bin(), "run", "-c", t->cfg, NULL};
  spawn(&t->relay, argv);
  t->admin_port = 0;
  t->admin_url[0] = '\0';
  t->ingress_port = 0;
  t->ingress_url[0] = '\0';
}

void it_relay_start(struct it *t) {
  it_relay_spawn(t);
  char *line = wait_log(t, &t->relay, "csurelay", "\"msg\":\"csurelay running\"", 20000);
  const char *port = strstr(line, "\"admin_port\":");
  assert_non_null(port);
  t->admin_port = atoi(port + strlen("\"admin_port\":"));
  /* jemalloc (release builds) purges on its own thread, off the loop; glibc (sanitizers) inline */
  bool jemalloc = strstr(line, "\"allocator\":\"jemalloc\"") != NULL;
  assert_non_null(strstr(line, jemalloc ? "\"heap_purge\":\"background thread\""
                                        : "\"heap_purge\":\"inline\""));
  free(line);
  assert_true(t->admin_port > 0);
  snprintf(t->admin_url, sizeof(t->admin_url), "http://127.0.0.1:%d", t->admin_port);
  char url[128];
  snprintf(url, sizeof(url), "%s/healthz", t->admin_url);
  struct it_resp r;
  if (it_http(t, "GET", url, NULL, &r) != 200)
    fail_msg("GET %s: status %ld", url, r.status);
  it_resp_free(&r);
}

void it_ingress_wait(struct it *t) {
  char *line = wait_log(t, &t->relay, "csurelay", "\"msg\":\"ingress listening\"", 20000);
  const char *port = strstr(line, "\"port\":");
  assert_non_null(port);
  t->ingress_port = atoi(port + strlen("\"port\":"));
  free(line);
  assert_true(t->ingress_port > 0);
  snprintf(t->ingress_url, sizeof(t->ingress_url), "http://127.0.0.1:%d", t->ingress_port);
}

int it_relay_stop(struct it *t, long within_ms, long *took_ms) {
  assert_true(t->relay.pid > 0);
  int64_t start = it_mono_ms(), end = start + it_slow(t, within_ms);
  assert_int_equal(kill(t->relay.pid, SIGTERM), 0);
  int status;
  pid_t r;
  while ((r = waitpid(t->relay.pid, &status, WNOHANG)) == 0) {
    if (it_mono_ms() > end) {
      print_tail(t->relay.log);
      fail_msg("csurelay did not exit within %ld ms of SIGTERM", it_slow(t, within_ms));
    }
    it_sleep_ms(10);
  }
  assert_int_equal(r, t->relay.pid);
  t->relay.pid = 0;
  if (took_ms != NULL)
    *took_ms = (long)(it_mono_ms() - start);
  if (!WIFEXITED(status)) {
    print_tail(t->relay.log);
    fail_msg("csurelay died of signal %d after SIGTERM", WTERMSIG(status));
  }
  return WEXITSTATUS(status);
}

void it_relay_kill(struct it *t) {
  assert_true(t->relay.pid > 0);
  assert_int_equal(kill(t->relay.pid, SIGKILL), 0);
  int status;
  assert_int_equal(waitpid(t->relay.pid, &status, 0), t->relay.pid);
  t->relay.pid = 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* HTTP and JSON */
/* ---------------------------------------------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t n, void *arg) {
  struct it_resp *r = arg;
  size_t len = size * n;
  char *grown = realloc(r->body, r->len + len + 1);
  if (grown == NULL)
    return 0;
  r->body = grown;
  memcpy(r->body + r->len, data, len);
  r->len += len;
  r->body[r->len] = '\0';
  return len;
}

long it_http(struct it *t, const char *method, const char *url, const char *body,
             struct it_resp *out) {
  memset(out, 0, sizeof(*out));
  CURL *c = t->curl;
  curl_easy_reset(c);
  struct curl_slist *hdrs = NULL;
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, it_slow(t, 15000));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
  if (body != NULL) {
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
  } else if (strcmp(method, "POST") == 0) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, 0L);
  } else if (strcmp(method, "GET") != 0) {
    curl_easy_setopt(c, CURLOPT_NOBODY, 0L);
  }
  CURLcode rc = curl_easy_perform(c);
  curl_slist_free_all(hdrs);
  if (rc == CURLE_OK)
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
  if (out->body != NULL)
    out->json = csr_json_parse(out->body, out->len, NULL, 0);
  return out->status;
}

void it_resp_free(struct it_resp *r) {
  csr_json_free(r->json);
  free(r->body);
  memset(r, 0, sizeof(*r));
}

static yajl_val get_json(struct it *t, const char *base, const char *fmt, va_list ap) {
  char path[2048], url[2200];
  vsnprintf(path, sizeof(path), fmt, ap);
  snprintf(url, sizeof(url), "%s%s", base, path);
  struct it_resp r;
  it_http(t, "GET", url, NULL, &r);
  if (r.status != 200 || r.json == NULL)
    fail_msg("GET %s: status %ld, body %.400s", url, r.status, r.body ? r.body : "(none)");
  yajl_val v = r.json;
  r.json = NULL;
  it_resp_free(&r);
  return v;
}

yajl_val it_sim_json(struct it *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  yajl_val v = get_json(t, t->sim_url, fmt, ap);
  va_end(ap);
  return v;
}

yajl_val it_admin_json(struct it *t, const char *fmt, ...) {
  assert_true(t->admin_url[0] != '\0');
  va_list ap;
  va_start(ap, fmt);
  yajl_val v = get_json(t, t->admin_url, fmt, ap);
  va_end(ap);
  return v;
}

double it_metric(struct it *t, const char *series) {
  char url[128];
  snprintf(url, sizeof(url), "%s/metrics", t->admin_url);
  struct it_resp r;
  if (it_http(t, "GET", url, NULL, &r) != 200)
    fail_msg("GET %s: status %ld", url, r.status);
  size_t n = strlen(series);
  for (const char *line = r.body; line != NULL && *line; line = strchr(line, '\n')) {
    line += *line == '\n';
    if (strncmp(line, series, n) == 0 && line[n] == ' ') {
      double v = strtod(line + n + 1, NULL);
      it_resp_free(&r);
      return v;
    }
  }
  it_resp_free(&r);
  fail_msg("no series %s in /metrics", series);
  return 0;
}

void it_sim_faults(struct it *t, const char *yaml) {
  char url[128];
  snprintf(url, sizeof(url), "%s/sim/faults", t->sim_url);
  struct it_resp r;
  memset(&r, 0, sizeof(r));
  CURL *c = t->curl;
  curl_easy_reset(c);
  struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/yaml");
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, it_slow(t, 10000));
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, yaml);
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(yaml));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
  CURLcode rc = curl_easy_perform(c);
  curl_slist_free_all(hdrs);
  if (rc == CURLE_OK)
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  if (r.status != 200)
    fail_msg("POST /sim/faults: status %ld (%s), body %.400s", r.status, curl_easy_strerror(rc),
             r.body ? r.body : "(none)");
  it_resp_free(&r);
}

int64_t it_int_or(yajl_val v, const char *path, int64_t dflt) {
  yajl_val x = csr_json_path(v, path);
  const char *text = csr_json_num_text(x);
  return text ? strtoll(text, NULL, 10) : dflt;
}

int64_t it_int(yajl_val v, const char *path) {
  const char *text = csr_json_num_text(csr_json_path(v, path));
  if (text == NULL)
    fail_msg("no integer at '%s'", path);
  return strtoll(text, NULL, 10);
}

const char *it_escape(const char *s, char *buf, size_t len) {
  static const char hex[] = "0123456789ABCDEF";
  size_t n = 0;
  for (; *s && n + 4 < len; s++) {
    unsigned char ch = (unsigned char)*s;
    if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
        ch == '-' || ch == '_' || ch == '.' || ch == '~') {
      buf[n++] = (char)ch;
    } else {
      buf[n++] = '%';
      buf[n++] = hex[ch >> 4];
      buf[n++] = hex[ch & 15];
    }
  }
  assert_true(*s == '\0');
  buf[n] = '\0';
  return buf;
}

/* ---------------------------------------------------------------------------------------------- */
/* Ledger */
/* ---------------------------------------------------------------------------------------------- */

void it_diff(struct it *t, const char *sink, const char *type, int64_t until_ms,
             struct it_diff *d) {
  char q[256], esc[128];
  int n = snprintf(q, sizeof(q), "/ledger/diff?sink=%s", it_escape(sink, esc, sizeof(esc)));
  if (type != NULL)
    n += snprintf(q + n, sizeof(q) - (size_t)n, "&type=%s", type);
  if (until_ms > 0)
    snprintf(q + n, sizeof(q) - (size_t)n, "&until_ms=%lld", (long long)until_ms);
  memset(d, 0, sizeof(*d));
  d->doc = it_sim_json(t, "%s", q);
  d->expected = it_int(d->doc, "expected");
  d->delivered = it_int(d->doc, "delivered");
  d->missing = it_int(d->doc, "missing_count");
  d->duplicated = it_int(d->doc, "duplicated_count");
  d->skipped_no_email = it_int(d->doc, "skipped_no_email");
  d->unexpected = it_int(d->doc, "unexpected");
  d->unknown = it_int(d->doc, "unknown");
  d->mismatched = it_int(d->doc, "mismatched");
}

void it_diff_free(struct it_diff *d) {
  csr_json_free(d->doc);
  d->doc = NULL;
}

void it_diff_print(const char *sink, const struct it_diff *d) {
  fprintf(stderr,
          "  %-15s expected %lld delivered %lld missing %lld duplicated %lld no_email %lld "
          "unexpected %lld unknown %lld mismatched %lld\n",
          sink, (long long)d->expected, (long long)d->delivered, (long long)d->missing,
          (long long)d->duplicated, (long long)d->skipped_no_email, (long long)d->unexpected,
          (long long)d->unknown, (long long)d->mismatched);
  yajl_val miss = csr_json_get(d->doc, "missing"), dup = csr_json_get(d->doc, "duplicated");
  for (size_t i = 0; i < csr_json_len(miss) && i < 5; i++)
    fprintf(stderr, "    missing %s\n", csr_json_str(csr_json_at(miss, i)));
  for (size_t i = 0; i < csr_json_len(dup) && i < 5; i++)
    fprintf(stderr, "    duplicated %s x%lld\n", csr_json_get_str(csr_json_at(dup, i), "id"),
            (long long)it_int_or(csr_json_at(dup, i), "count", 0));
  yajl_val mm = csr_json_get(d->doc, "mismatches");
  for (size_t i = 0; i < csr_json_len(mm) && i < 5; i++)
    fprintf(stderr, "    mismatch %s: %s\n", csr_json_get_str(csr_json_at(mm, i), "id"),
            csr_json_get_str(csr_json_at(mm, i), "detail"));
}

/* What the relay says about a missing event (diagnostics only: any answer is printed). */
static void ask_relay(struct it *t, const char *id) {
  if (t->admin_url[0] == '\0' || id == NULL)
    return;
  char url[1024], esc[768];
  snprintf(url, sizeof(url), "%s/v1/events/%s", t->admin_url, it_escape(id, esc, sizeof(esc)));
  struct it_resp r;
  it_http(t, "GET", url, NULL, &r);
  fprintf(stderr, "  relay on %s: %ld %.1500s\n", id, r.status, r.body ? r.body : "");
  it_resp_free(&r);
  snprintf(url, sizeof(url), "%s/v1/status", t->admin_url);
  it_http(t, "GET", url, NULL, &r);
  fprintf(stderr, "  relay status: %ld %.3000s\n", r.status, r.body ? r.body : "");
  it_resp_free(&r);
}

void it_wait_complete(struct it *t, const char *const *sinks, int64_t until_ms, long deadline_ms) {
  int64_t start = it_mono_ms(), end = start + it_slow(t, deadline_ms);
  for (;;) {
    bool done = true, late = it_mono_ms() > end;
    for (size_t i = 0; sinks[i] != NULL && (done || late); i++) {
      struct it_diff d;
      it_diff(t, sinks[i], NULL, until_ms, &d);
      if (d.missing > 0 || d.expected == 0)
        done = false;
      if (late) {
        it_diff_print(sinks[i], &d);
        if (d.missing > 0)
          ask_relay(t, csr_json_str(csr_json_at(csr_json_get(d.doc, "missing"), 0)));
      }
      it_diff_free(&d);
    }
    if (done) {
      fprintf(stderr, "[%s] ledger complete up to the cutoff after %lld ms\n", t->name,
              (long long)(it_mono_ms() - start));
      return;
    }
    if (late)
      fail_msg("events committed before the cutoff still missing after %ld ms",
               it_slow(t, deadline_ms));
    if (t->relay.pid > 0)
      assert_alive(&t->relay, "csurelay");
    it_sleep_ms(250);
  }
}

void it_ledger_each(struct it *t, void (*fn)(yajl_val ev, void *arg), void *arg) {
  for (int64_t offset = 0;;) {
    yajl_val page = it_sim_json(t, "/ledger/events?offset=%lld&limit=5000", (long long)offset);
    yajl_val evs = csr_json_get(page, "events");
    size_t n = csr_json_len(evs);
    for (size_t i = 0; i < n; i++)
      fn(csr_json_at(evs, i), arg);
    int64_t total = it_int(page, "total");
    csr_json_free(page);
    offset += (int64_t)n;
    if (n == 0 || offset >= total)
      return;
  }
}

int64_t it_time_ms(const char *text) {
  int64_t ms = 0;
  if (text == NULL || csr_time_parse(text, &ms) != 0)
    fail_msg("not an instant: %s", text ? text : "(null)");
  return ms;
}

void it_wait_delivered(struct it *t, int64_t n_trigger, int64_t n_hook, long deadline_ms) {
  int64_t end = it_mono_ms() + it_slow(t, deadline_ms);
  for (;;) {
    struct it_diff a, b;
    it_diff(t, "trigger", NULL, 0, &a);
    it_diff(t, "webhook:audit", NULL, 0, &b);
    bool done = a.delivered >= n_trigger && b.delivered >= n_hook;
    if (!done && it_mono_ms() > end) {
      it_diff_print("trigger", &a);
      it_diff_print("webhook:audit", &b);
      it_diff_free(&a);
      it_diff_free(&b);
      fail_msg("fewer than %lld trigger / %lld webhook deliveries after %ld ms",
               (long long)n_trigger, (long long)n_hook, it_slow(t, deadline_ms));
    }
    it_diff_free(&a);
    it_diff_free(&b);
    if (done)
      return;
    if (t->relay.pid > 0)
      assert_alive(&t->relay, "csurelay");
    it_sleep_ms(200);
  }
}

/* ---------------------------------------------------------------------------------------------- */
/* mosquitto and csusim's own configuration */
/* ---------------------------------------------------------------------------------------------- */

#define MOSQUITTO "/usr/sbin/mosquitto"

/* Spawns mosquitto with dir/mosquitto.conf; true once its port accepts connections, false when it
 * exited first (the port was taken) or did not open it within 5 s (stretched). */
static bool broker_spawn(struct it *t) {
  char conf[600];
  snprintf(conf, sizeof(conf), "%s/mosquitto.conf", t->dir);
  t->broker_runs++;
  snprintf(t->broker.log, sizeof(t->broker.log), "%s/mosquitto-%u.log", t->dir, t->broker_runs);
  char *argv[] = {MOSQUITTO, "-c", conf, NULL};
  spawn(&t->broker, argv);
  int64_t end = it_mono_ms() + it_slow(t, 5000);
  int status;
  while (it_mono_ms() < end) {
    if (waitpid(t->broker.pid, &status, WNOHANG) == t->broker.pid) {
      t->broker.pid = 0;
      return false;
    }
    /* Ours, not another listener's: a mosquitto that cannot bind exits right after trying. */
    if (tp_port_accepts(t->mqtt_port)) {
      it_sleep_ms(50);
      if (waitpid(t->broker.pid, &status, WNOHANG) != t->broker.pid)
        return true;
      t->broker.pid = 0;
      return false;
    }
    it_sleep_ms(20);
  }
  reap(&t->broker, SIGKILL, 1000);
  return false;
}

void it_broker_start(struct it *t, bool persist) {
  assert_int_equal(t->broker.pid, 0);
  char conf[600];
  snprintf(conf, sizeof(conf), "%s/mosquitto.conf", t->dir);
  for (int tries = 0; tries < 5; tries++) {
    t->mqtt_port = tp_broker_port();
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f,
            "listener %d 127.0.0.1\nallow_anonymous true\npersistence %s\n"
            "persistence_location %s/\nmax_queued_messages 0\nlog_type error\nlog_type warning\n"
            "log_type notice\nlog_type information\nlog_dest stderr\n",
            t->mqtt_port, persist ? "true" : "false", t->dir);
    if (geteuid() == 0)
      fprintf(f, "user root\n"); /* else mosquitto drops to 'mosquitto', which cannot write here */
    assert_int_equal(fclose(f), 0);
    if (broker_spawn(t)) {
      snprintf(t->mqtt_url, sizeof(t->mqtt_url), "tcp://127.0.0.1:%d", t->mqtt_port);
      fprintf(stderr, "[%s] mosquitto on %s (persistence %s)\n", t->name, t->mqtt_url,
              persist ? "true" : "false");
      return;
    }
  }
  print_tail(t->broker.log);
  fail_msg("mosquitto did not start");
}

void it_broker_stop(struct it *t) {
  assert_true(t->broker.pid > 0);
  assert_int_equal(kill(t->broker.pid, SIGTERM), 0);
  int64_t end = it_mono_ms() + it_slow(t, 10000);
  int status;
  pid_t r;
  while ((r = waitpid(t->broker.pid, &status, WNOHANG)) == 0) {
    if (it_mono_ms() > end) {
      print_tail(t->broker.log);
      fail_msg("mosquitto did not exit within %ld ms of SIGTERM", it_slow(t, 10000));
    }
    it_sleep_ms(10);
  }
  t->broker.pid = 0;
}

void it_broker_restart(struct it *t) {
  assert_true(t->mqtt_port > 0);
  int64_t end = it_mono_ms() + it_slow(t, 15000);
  while (!broker_spawn(t)) {
    if (it_mono_ms() > end) {
      print_tail(t->broker.log);
      fail_msg("mosquitto did not start again on port %d", t->mqtt_port);
    }
    it_sleep_ms(100);
  }
}

void it_config_print(struct it *t, const char *mqtt_url) {
  char listen[64], csus[16], admin[] = "127.0.0.1:0";
  snprintf(listen, sizeof(listen), "127.0.0.1:%d", t->sim_port);
  snprintf(csus, sizeof(csus), "%u", t->csus);
  char *argv[16] = {(char *)sim_bin(), "--listen",    listen,   "--csus",         csus,
                    "--print-config",  "--state-dir", t->state, "--admin-listen", admin};
  int n = 10;
  if (mqtt_url != NULL) {
    argv[n++] = "--mqtt";
    argv[n++] = (char *)mqtt_url;
  }
  argv[n] = NULL;
  struct it_proc p = {0};
  snprintf(p.log, sizeof(p.log), "%s", t->cfg);
  spawn(&p, argv);
  int status;
  assert_int_equal(waitpid(p.pid, &status, 0), p.pid);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    print_tail(t->cfg);
    fail_msg("csusim --print-config failed (status 0x%x)", status);
  }
}

void it_config_edit(struct it *t, const char *from, const char *to) {
  char *text = read_file(t->cfg, NULL);
  assert_non_null(text);
  char *at = strstr(text, from);
  if (at == NULL || strstr(at + 1, from) != NULL) {
    print_tail(t->cfg);
    fail_msg("'%s' is not in %s exactly once", from, t->cfg);
  }
  FILE *f = fopen(t->cfg, "w");
  assert_non_null(f);
  fprintf(f, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
  assert_int_equal(fclose(f), 0);
  free(text);
}

long it_http_hdrs(struct it *t, const char *method, const char *url, const char *const *headers,
                  const char *body, struct it_resp *out) {
  memset(out, 0, sizeof(*out));
  CURL *c = t->curl;
  curl_easy_reset(c);
  struct curl_slist *hdrs = NULL;
  for (size_t i = 0; headers != NULL && headers[i] != NULL; i++)
    hdrs = curl_slist_append(hdrs, headers[i]);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, it_slow(t, 15000));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
  if (body != NULL) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
  }
  CURLcode rc = curl_easy_perform(c);
  curl_slist_free_all(hdrs);
  if (rc == CURLE_OK)
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
  if (out->body != NULL)
    out->json = csr_json_parse(out->body, out->len, NULL, 0);
  return out->status;
}
