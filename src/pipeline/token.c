/* The OAuth2 token cache, one per identity (SPEC §3 "Tokens"; dynamics-api.md §1).
 *
 * A cache holds at most one token, at most one fetch in flight, and a backoff timer that runs after
 * a failed fetch. Requests that find no usable token wait on one list and all get the outcome of
 * the next fetch; a token inside its refresh margin is still served while one background refresh
 * runs. Waiters that arrive during a backoff join the fetch that follows it rather than failing at
 * once: the token endpoint being down says nothing about when a caller gives up, which is the
 * caller's business (pl_tokens_cancel).
 *
 * Why the token text is refcounted: a request's callback runs later in the loop turn, after other
 * callbacks may have invalidated or replaced the token. Each completed request holds a reference
 * until its callback returns, so `req->token` stays valid exactly that long, and a replaced token
 * is wiped and freed as soon as nobody holds it.
 *
 * Expiry is judged on both clocks, whichever says "expired" first: the monotonic one ignores
 * wall-clock steps, the wall one keeps counting through a suspend. The lifetime starts when the
 * request was sent, not when the answer came, so the cache never outlives the token.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "csurelay/json.h"
#include "csurelay/log.h"
#include "csurelay/pipeline.h"

#define BACKOFF_BASE_MS    500
#define BACKOFF_CAP_MS     30000
#define BACKOFF_FLOOR_MS   250    /* a full-jitter draw near 0 must not hammer the endpoint */
#define RETRY_AFTER_MAX_MS 300000 /* Retry-After is honoured up to 5 minutes */
#define MARGIN_MAX_MS      300000 /* refresh when 5 minutes or 10% of the lifetime remain, */
#define MARGIN_MIN_MS      3000   /* but at least 3 s before expiry, and at most half the life */
#define FETCH_TIMEOUT_MS   10000
#define TOKEN_MAX_BYTES    65536    /* Entra tokens are 1-4 KB; anything far larger is not one */
#define EXPIRES_MAX_S      31622400 /* one year: a longer lifetime is a malformed answer */

/* A token's text with its reference count: the cache holds one, each completing request one. */
struct tok {
  unsigned refs;
  size_t len;
  char text[];
};

enum freshness { TOK_NONE, TOK_FRESH, TOK_STALE /* inside the refresh margin */ };

struct pl_tokens {
  struct rx_loop *loop;
  struct rx_http *http;
  char *name;   /* the identity's name, for logs */
  char *url;    /* token_url */
  char *secret; /* kept only to make sure no error text ever carries it */
  char *body;   /* the form, secret included; wiped on destroy */
  size_t body_len;
  /* the cached token */
  struct tok *cur;
  uint64_t exp_mono, refresh_mono;
  int64_t exp_wall, refresh_wall;
  /* the fetch */
  struct rx_http_req req;
  bool fetching;
  uint64_t sent_mono;
  int64_t sent_wall;
  /* failures */
  struct rx_timer backoff;
  unsigned attempt; /* consecutive failed fetches */
  uint64_t rng;
  /* waiters, oldest first */
  struct pl_token_req *head, *tail;
  uint64_t nwaiters;
  struct pl_token_stats stats;
  /* destroy */
  bool closing;
  unsigned close_pending;
  void (*close_cb)(void *arg);
  void *close_arg;
};

static void start_fetch(struct pl_tokens *t);

/* ---------------------------------------------------------------------------------------------- */
/* Helpers */
/* ---------------------------------------------------------------------------------------------- */

static uint64_t mono_ms(void) {
  return uv_hrtime() / 1000000;
}

/* memset that the compiler may not drop: secrets and tokens leave no copy in freed memory. */
static void wipe(void *p, size_t len) {
  volatile unsigned char *v = p;
  while (len--)
    *v++ = 0;
}

static void free_secret(char *s) {
  if (s != NULL) {
    wipe(s, strlen(s));
    free(s);
  }
}

static struct tok *tok_new(const char *text, size_t len) {
  struct tok *k = malloc(sizeof(*k) + len + 1);
  if (k == NULL)
    return NULL;
  k->refs = 1;
  k->len = len;
  memcpy(k->text, text, len);
  k->text[len] = '\0';
  return k;
}

static void tok_unref(struct tok *k) {
  if (k != NULL && --k->refs == 0) {
    wipe(k->text, k->len);
    free(k);
  }
}

static bool unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

/* application/x-www-form-urlencoded: unreserved bytes as they are, space as '+', the rest %XX. */
static char *form_escape(char *out, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (unreserved(c)) {
      *out++ = (char)c;
    } else if (c == ' ') {
      *out++ = '+';
    } else {
      *out++ = '%';
      *out++ = hex[c >> 4];
      *out++ = hex[c & 15];
    }
  }
  return out;
}

static char *build_form(const struct csr_identity *id, size_t *len) {
  static const char *const names[] = {"&client_id=", "&client_secret=", "&scope="};
  const char *values[] = {id->client_id, id->secret, id->scope};
  size_t cap = sizeof("grant_type=client_credentials");
  for (int i = 0; i < 3; i++)
    cap += strlen(names[i]) + 3 * strlen(values[i]);
  char *body = malloc(cap), *p = body;
  if (body == NULL)
    return NULL;
  p += sprintf(p, "grant_type=client_credentials");
  for (int i = 0; i < 3; i++) {
    p += sprintf(p, "%s", names[i]);
    p = form_escape(p, values[i]);
  }
  *p = '\0';
  *len = (size_t)(p - body);
  return body;
}

/* ---------------------------------------------------------------------------------------------- */
/* Waiters */
/* ---------------------------------------------------------------------------------------------- */

static void link_waiter(struct pl_tokens *t, struct pl_token_req *req) {
  req->_cache = t;
  req->_next = NULL;
  req->_prev = t->tail;
  if (t->tail)
    t->tail->_next = req;
  else
    t->head = req;
  t->tail = req;
  if (++t->nwaiters > t->stats.waiters_max)
    t->stats.waiters_max = t->nwaiters;
}

static void unlink_waiter(struct pl_tokens *t, struct pl_token_req *req) {
  if (req->_prev)
    req->_prev->_next = req->_next;
  else
    t->head = req->_next;
  if (req->_next)
    req->_next->_prev = req->_prev;
  else
    t->tail = req->_prev;
  req->_cache = NULL;
  req->_next = req->_prev = NULL;
  t->nwaiters--;
}

/* Runs from the loop's ready list: hands the token to the caller for the callback's duration. */
static void on_req_fired(struct rx_fut *fut) {
  struct pl_token_req *req = RX_CONTAINER_OF(fut, struct pl_token_req, fut);
  struct tok *k = req->_tok;
  rx_fut_cb cb = req->_cb;
  req->_tok = NULL;
  req->token = k != NULL ? k->text : NULL;
  /* The callback may free or re-arm req: nothing below touches it. */
  cb(fut);
  tok_unref(k);
}

/* Completes `req` (unlinking it if it waits) with `k` on success; never calls back synchronously.
 */
static void complete(struct pl_tokens *t, struct pl_token_req *req, struct tok *k, int result) {
  if (req->_cache != NULL)
    unlink_waiter(t, req);
  if (result == 0 && k != NULL) {
    k->refs++;
    req->_tok = k;
  }
  rx_fut_resolve(&req->fut, result);
}

static void complete_all(struct pl_tokens *t, int result) {
  while (t->head)
    complete(t, t->head, result == 0 ? t->cur : NULL, result);
}

/* ---------------------------------------------------------------------------------------------- */
/* The cached token */
/* ---------------------------------------------------------------------------------------------- */

static void drop_token(struct pl_tokens *t) {
  tok_unref(t->cur);
  t->cur = NULL;
  t->stats.expires_at_ms = 0;
}

static enum freshness freshness(struct pl_tokens *t) {
  if (t->cur == NULL)
    return TOK_NONE;
  uint64_t mono = mono_ms();
  int64_t wall = rx_wall_ms();
  if (mono >= t->exp_mono || wall >= t->exp_wall) {
    drop_token(t);
    return TOK_NONE;
  }
  return mono >= t->refresh_mono || wall >= t->refresh_wall ? TOK_STALE : TOK_FRESH;
}

static int install(struct pl_tokens *t, const char *text, size_t len, int64_t life_s) {
  struct tok *k = tok_new(text, len);
  if (k == NULL)
    return -ENOMEM;
  tok_unref(t->cur);
  t->cur = k;
  uint64_t life = (uint64_t)life_s * 1000, margin = life / 10;
  margin = margin > MARGIN_MAX_MS ? MARGIN_MAX_MS : margin;
  margin = margin < MARGIN_MIN_MS ? MARGIN_MIN_MS : margin;
  margin = margin > life / 2 ? life / 2 : margin;
  t->exp_mono = t->sent_mono + life;
  t->refresh_mono = t->exp_mono - margin;
  t->exp_wall = t->sent_wall + (int64_t)life;
  t->refresh_wall = t->exp_wall - (int64_t)margin;
  t->stats.expires_at_ms = t->exp_wall;
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Reading the answer */
/* ---------------------------------------------------------------------------------------------- */

/* expires_in: a JSON number (v2.0) or a numeric string (v1), whole seconds in [1, a year]. */
static int read_expires(yajl_val v, int64_t *out) {
  const char *s = csr_json_num_text(v);
  int64_t x = 0;
  size_t n = 0;
  if (s == NULL)
    s = csr_json_str(v);
  if (s == NULL)
    return CSR_EPARSE;
  for (; s[n]; n++) {
    if (s[n] < '0' || s[n] > '9' || n >= 9)
      return CSR_EPARSE;
    x = x * 10 + (s[n] - '0');
  }
  if (n == 0 || x < 1 || x > EXPIRES_MAX_S)
    return CSR_EPARSE;
  *out = x;
  return 0;
}

/* The token goes into an Authorization header: visible ASCII only, so no header injection. */
static bool token_ok(const char *s, size_t len) {
  if (len == 0 || len > TOKEN_MAX_BYTES)
    return false;
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
      return false;
  return true;
}

/* A 2xx answer: the token and its lifetime, or CSR_EPARSE with the reason in last_error. */
static int take_token(struct pl_tokens *t) {
  yajl_val doc = csr_json_parse(t->req.resp_body, t->req.resp_len, NULL, 0);
  const char *why = NULL, *type = csr_json_get_str(doc, "token_type");
  const char *text = csr_json_get_str(doc, "access_token");
  int64_t life = 0;
  int rc = CSR_EPARSE;
  if (doc == NULL)
    why = "the answer is not JSON";
  else if (text == NULL || !token_ok(text, strlen(text)))
    why = "no usable access_token";
  else if (read_expires(csr_json_get(doc, "expires_in"), &life) < 0)
    why = "no valid expires_in";
  else if (csr_json_get(doc, "token_type") != NULL && (type == NULL || strcasecmp(type, "Bearer")))
    why = "token_type is not Bearer";
  else if ((rc = install(t, text, strlen(text), life)) < 0)
    why = "out of memory";
  if (why != NULL)
    snprintf(t->stats.last_error, sizeof(t->stats.last_error), "HTTP %ld: %s", t->req.status, why);
  else if (rc == 0)
    CSR_LOG(CSR_DEBUG, "token acquired", CSR_KS("identity", t->name), CSR_KI("expires_in_s", life),
            CSR_KI("waiters", t->nwaiters));
  csr_json_free(doc);
  return rc;
}

/* The OAuth `error` as a short code: [A-Za-z0-9_.-] only, so nothing else the server echoes. */
static void copy_code(const char *in, char *out, size_t cap) {
  size_t n = 0;
  for (; in != NULL && in[n] && n + 1 < cap; n++) {
    unsigned char c = (unsigned char)in[n];
    if (!unreserved(c) || c == '~')
      break;
    out[n] = (char)c;
  }
  out[n] = '\0';
}

/* "AADSTS7000215" from error_codes[0], else from the description's leading "AADSTSnnnn:" (digits
 * only: the rest of the description may echo client input). */
static void aadsts(yajl_val doc, char *out, size_t cap) {
  const char *num = csr_json_num_text(csr_json_at(csr_json_get(doc, "error_codes"), 0));
  const char *desc = csr_json_get_str(doc, "error_description");
  const char *at = desc != NULL ? strstr(desc, "AADSTS") : NULL;
  char digits[16];
  size_t n = 0;
  if (num == NULL && at != NULL)
    num = at + 6;
  for (; num != NULL && num[n] >= '0' && num[n] <= '9' && n + 1 < sizeof(digits); n++)
    digits[n] = num[n];
  digits[n] = '\0';
  if (n > 0)
    snprintf(out, cap, "AADSTS%s", digits);
  else if (cap > 0)
    out[0] = '\0';
}

/* A non-2xx answer: "invalid_client (AADSTS7000215), HTTP 401", or "HTTP 503". */
static int take_refusal(struct pl_tokens *t) {
  yajl_val doc = csr_json_parse(t->req.resp_body, t->req.resp_len, NULL, 0);
  char code[64], aad[24];
  copy_code(csr_json_get_str(doc, "error"), code, sizeof(code));
  aadsts(doc, aad, sizeof(aad));
  char *e = t->stats.last_error;
  size_t cap = sizeof(t->stats.last_error);
  if (code[0] && aad[0])
    snprintf(e, cap, "%s (%s), HTTP %ld", code, aad, t->req.status);
  else if (code[0])
    snprintf(e, cap, "%s, HTTP %ld", code, t->req.status);
  else
    snprintf(e, cap, "HTTP %ld", t->req.status);
  csr_json_free(doc);
  return CSR_ESTATUS;
}

/* ---------------------------------------------------------------------------------------------- */
/* Fetching */
/* ---------------------------------------------------------------------------------------------- */

static uint64_t on_backoff(struct rx_timer *timer) {
  struct pl_tokens *t = timer->data;
  /* A stale token with nobody waiting refreshes on the next get instead. */
  if (t->head != NULL && !t->closing)
    start_fetch(t);
  return RX_TIMER_STOP;
}

/* Full jitter from 500 ms doubling to 30 s, never under the floor nor under Retry-After. */
static uint64_t backoff_delay(struct pl_tokens *t, long retry_after_ms) {
  uint64_t delay = rx_backoff_ms(t->attempt, BACKOFF_BASE_MS, BACKOFF_CAP_MS, &t->rng);
  if (t->attempt < 32)
    t->attempt++;
  if (delay < BACKOFF_FLOOR_MS)
    delay = BACKOFF_FLOOR_MS;
  if (retry_after_ms > 0) {
    uint64_t ra = (uint64_t)retry_after_ms;
    ra = ra > RETRY_AFTER_MAX_MS ? RETRY_AFTER_MAX_MS : ra;
    delay = ra > delay ? ra : delay;
  }
  return delay;
}

/* Every waiter gets `rc`; the next fetch waits for the backoff. */
static void fail_fetch(struct pl_tokens *t, int rc, long retry_after_ms) {
  t->stats.failures++;
  /* Defence in depth: the codes kept above cannot carry the secret, and this makes sure. */
  if (t->secret[0] != '\0' && strstr(t->stats.last_error, t->secret) != NULL)
    snprintf(t->stats.last_error, sizeof(t->stats.last_error), "(withheld: held the secret)");
  uint64_t delay = backoff_delay(t, retry_after_ms);
  /* If the timer cannot start, the next get fetches at once: degraded, never stuck. */
  int trc = rx_timer_start(&t->backoff, on_backoff, delay);
  CSR_LOG(CSR_WARN, "token request failed", CSR_KS("identity", t->name),
          CSR_KS("reason", t->stats.last_error), CSR_KI("attempt", t->attempt),
          CSR_KI("retry_in_ms", trc == 0 ? (int64_t)delay : 0), CSR_KI("waiters", t->nwaiters));
  complete_all(t, rc);
}

static void close_step(struct pl_tokens *t) {
  if (--t->close_pending > 0)
    return;
  void (*cb)(void *arg) = t->close_cb;
  void *arg = t->close_arg;
  drop_token(t);
  free(t->name);
  free(t->url);
  free_secret(t->secret);
  wipe(t->body, t->body_len);
  free(t->body);
  free(t);
  if (cb)
    cb(arg);
}

static void on_fetch_done(struct rx_fut *fut) {
  struct pl_tokens *t = RX_CONTAINER_OF(fut, struct pl_tokens, req.fut);
  int rc = fut->result;
  long retry_after_ms = t->req.retry_after_ms;
  t->fetching = false;
  if (t->closing) {
    rx_http_req_cleanup(&t->req);
    close_step(t);
    return;
  }
  if (rc < 0)
    snprintf(t->stats.last_error, sizeof(t->stats.last_error), "transport: %s", csr_strerror(rc));
  else if (t->req.status >= 200 && t->req.status < 300)
    rc = take_token(t);
  else
    rc = take_refusal(t);
  if (t->req.resp_body != NULL)
    wipe(t->req.resp_body, t->req.resp_len); /* it may hold the token: leave no copy behind */
  rx_http_req_cleanup(&t->req);
  if (rc < 0) {
    fail_fetch(t, rc, retry_after_ms);
    return;
  }
  if (t->attempt > 0)
    CSR_LOG(CSR_INFO, "token endpoint recovered", CSR_KS("identity", t->name),
            CSR_KI("failed_attempts", t->attempt));
  t->attempt = 0;
  complete_all(t, 0);
}

static void start_fetch(struct pl_tokens *t) {
  rx_http_req_init(&t->req);
  t->req.method = "POST";
  t->req.url = t->url;
  t->req.body = t->body;
  t->req.body_len = t->body_len;
  t->req.timeout_ms = FETCH_TIMEOUT_MS;
  t->sent_mono = mono_ms();
  t->sent_wall = rx_wall_ms();
  int rc = rx_http_req_header(&t->req, "Content-Type: application/x-www-form-urlencoded");
  if (rc == 0)
    rc = rx_http_req_header(&t->req, "Accept: application/json");
  if (rc == 0)
    rc = rx_http_start(t->http, &t->req, on_fetch_done);
  if (rc < 0) {
    rx_http_req_cleanup(&t->req);
    snprintf(t->stats.last_error, sizeof(t->stats.last_error), "not sent: %s", csr_strerror(rc));
    fail_fetch(t, rc, -1);
    return;
  }
  t->fetching = true;
  t->stats.fetches++;
}

/* ---------------------------------------------------------------------------------------------- */
/* Public */
/* ---------------------------------------------------------------------------------------------- */

int pl_tokens_create(struct rx_loop *loop, struct rx_http *http,
                     const struct csr_identity *identity, struct pl_tokens **out) {
  if (loop == NULL || http == NULL || identity == NULL || out == NULL ||
      identity->token_url == NULL || identity->client_id == NULL || identity->secret == NULL ||
      identity->scope == NULL)
    return -EINVAL;
  struct pl_tokens *t = calloc(1, sizeof(*t));
  if (t == NULL)
    return -ENOMEM;
  t->loop = loop;
  t->http = http;
  t->name = strdup(identity->name != NULL ? identity->name : "");
  t->url = strdup(identity->token_url);
  t->secret = strdup(identity->secret);
  t->body = build_form(identity, &t->body_len);
  t->rng = (mono_ms() ^ (uint64_t)rx_wall_ms() ^ (uint64_t)(uintptr_t)t) | 1;
  int rc = t->name && t->url && t->secret && t->body ? 0 : -ENOMEM;
  if (rc == 0)
    rc = rx_timer_init(&t->backoff, loop);
  if (rc < 0) {
    free(t->name);
    free(t->url);
    free_secret(t->secret);
    free_secret(t->body);
    free(t);
    return rc;
  }
  t->backoff.data = t;
  *out = t;
  return 0;
}

int pl_tokens_get(struct pl_tokens *t, struct pl_token_req *req, rx_fut_cb cb) {
  if (t == NULL || req == NULL || cb == NULL)
    return -EINVAL;
  if (t->closing)
    return UV_ECANCELED;
  req->token = NULL;
  req->_cache = NULL;
  req->_next = req->_prev = NULL;
  req->_cb = cb;
  req->_tok = NULL;
  rx_fut_init(&req->fut, t->loop, on_req_fired);
  enum freshness fr = freshness(t);
  bool idle = !t->fetching && !rx_timer_active(&t->backoff);
  if (fr == TOK_NONE) {
    link_waiter(t, req);
    if (idle)
      start_fetch(t);
    return 0;
  }
  /* Inside the margin the cached token is still served, with one refresh behind it. */
  if (fr == TOK_STALE && idle)
    start_fetch(t);
  complete(t, req, t->cur, 0);
  return 0;
}

void pl_tokens_cancel(struct pl_token_req *req) {
  if (req != NULL && req->_cache != NULL)
    complete(req->_cache, req, NULL, UV_ECANCELED);
}

void pl_tokens_invalidate(struct pl_tokens *t, const char *token) {
  /* Only the token the resource refused: an older one means another request already refreshed. */
  if (t == NULL || token == NULL || t->cur == NULL || strcmp(t->cur->text, token) != 0)
    return;
  drop_token(t);
  t->stats.invalidations++;
  CSR_LOG(CSR_INFO, "token invalidated by a 401", CSR_KS("identity", t->name));
}

const struct pl_token_stats *pl_tokens_stats(const struct pl_tokens *t) {
  return &t->stats;
}

static void on_backoff_closed(struct rx_timer *timer) {
  close_step(timer->data);
}

void pl_tokens_destroy(struct pl_tokens *t, void (*cb)(void *arg), void *arg) {
  if (t == NULL || t->closing)
    return;
  t->closing = true;
  t->close_cb = cb;
  t->close_arg = arg;
  complete_all(t, UV_ECANCELED);
  t->close_pending = 1 + (t->fetching ? 1 : 0);
  if (t->fetching)
    rx_http_cancel(&t->req);
  rx_timer_close(&t->backoff, on_backoff_closed);
}
