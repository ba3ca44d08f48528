/* The cij sink: Customer Insights – Journeys through the Dataverse Web API (SPEC section 4 cij),
 * replacing the sample's Logic App without its weaknesses (commerce-event-sample.md W-L1..W-L5).
 *
 * One delivery: choose the email, find the contact (cij_contacts.c: cache, then a single-flight
 * exact lookup and create per email), then POST {dataverse_url}api/data/v9.2/{trigger} with a body
 * from the route's field map, built by the JSON encoder. Every answer is classified by
 * sk_classify_http; a 401 from any call invalidates the token and repeats that call once.
 *
 * Decisions where SPEC and the references leave room:
 *   - The email is OrderDetails.ReceiptEmail when it is not blank, else CustomerDetails.Email
 *     (POS orders often have no ReceiptEmail: W-L1's silent drop). Surrounding white space is
 *     trimmed. No email at all is SK_SKIPPED "no_email", decided before any call.
 *   - msdynmkt_receiptemail carries that chosen email, not the order's field as written: the
 *     journey addresses the contact by it, and an empty ReceiptEmail beside a contact found by the
 *     customer's Email would contradict the contact it names.
 *   - The default mapping needs OrderDetails: without it (a route without `enrich: [order]`, a
 *     configuration mistake) the delivery is SK_DEAD "no_order", never a silent skip. A route's own
 *     `fields` map has no such need; a path that resolves to nothing is sent as null (Dataverse
 *     decides whether the parameter may be null; a required one answers 400 and goes dead).
 *   - Sources: EventDetails, OrderDetails, CustomerDetails followed by a dotted path (exact key
 *     case), $event_time (EventDateTime as UTC ISO-8601, to the millisecond), $now (the wall clock
 *     when the body is built, also for msdynmkt_signalingestiontimestamp), $contact_id, $event_id.
 *     Numbers are copied with their text, so AmountPaid keeps every digit.
 *   - A route with no valid trigger name is SK_DEAD "no_trigger" (config.c already requires one).
 *   - A trigger 4xx that names a contact id taken from the cache as missing (0x80040217) means the
 *     cache is stale (the contact was deleted or merged): the entry is dropped and the delivery is
 *     SK_RETRY "stale_contact", so the retry looks the contact up again. A contact found by this
 *     very delivery is not second-guessed: that answer stays dead.
 *   - Trigger answers keep sk_classify_http's reasons ("http_429"); contact calls prefix theirs
 *     ("contact_lookup: http_503"); a token that cannot be had is SK_RETRY "token".
 *   - encode() writes the trigger body with the cached contact id, or the zero GUID when none is
 *     cached; it has no I/O, but $now still reads the clock.
 *
 * Cancel and close follow the webhook sink: every started delivery completes exactly once, a cancel
 * that races with a trigger answer already received reports that answer, and close cancels every
 * delivery and contact flight and fires its callback only after all of them ended.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cij_internal.h"
#include "csurelay/log.h"
#include "csurelay/timefmt.h"

#define READY_FAILURES   5
#define PLACEHOLDER_ID   "00000000-0000-0000-0000-000000000000"
#define API_PATH         "api/data/v9.2/"
#define NOT_FOUND_CODE   "0x80040217"
#define AUTH_PREFIX      "Authorization: Bearer "
#define TRIGGER_NAME_MAX 200

struct field {
  const char *target, *source;
};

/* SPEC section 4 cij, step 4: the sample's checkout trigger. "$email" is the chosen email (not a
 * configurable source: config.c accepts only the four documented variables). */
static const struct field default_fields[] = {
    {"msdynmkt_amountpaid", "OrderDetails.AmountPaid"},
    {"msdynmkt_channelreferenceid", "OrderDetails.ChannelReferenceId"},
    {"msdynmkt_createddatetime", "OrderDetails.CreatedDateTime"},
    {"msdynmkt_currencycode", "OrderDetails.CurrencyCode"},
    {"msdynmkt_name", "OrderDetails.Name"},
    {"msdynmkt_receiptemail", "$email"},
    {"msdynmkt_salesid", "OrderDetails.SalesId"},
    {"msdynmkt_signaltimestamp", "$event_time"},
    {"msdynmkt_signalingestiontimestamp", "$now"},
    {"msdynmkt_signaluserauthid", "$contact_id"},
    {"msdynmkt_profileid", "$contact_id"},
    {"msdynmkt_bindingid", "OrderDetails.InternalTransactionId"},
};
#define NDEFAULT (sizeof(default_fields) / sizeof(default_fields[0]))

/* ---------------------------------------------------------------------------------------------- */
/* Shared with cij_contacts.c */
/* ---------------------------------------------------------------------------------------------- */

long sk__cij_timeout(const struct cij_sink *s) {
  uint64_t t =
      s->base.conf->timeout_ms ? s->base.conf->timeout_ms : s->base.env->default_timeout_ms;
  return t > (uint64_t)LONG_MAX ? LONG_MAX : (long)t;
}

static int has_ctl(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f)
      return 1;
  return 0;
}

int sk__cij_headers(struct rx_http_req *req, const char *token, int body) {
  if (token == NULL || has_ctl(token))
    return -EINVAL;
  size_t n = strlen(AUTH_PREFIX) + strlen(token) + 1;
  char *auth = malloc(n);
  if (auth == NULL)
    return -ENOMEM;
  snprintf(auth, n, AUTH_PREFIX "%s", token);
  int rc = rx_http_req_header(req, "Accept: application/json");
  if (rc == 0)
    rc = rx_http_req_header(req, "OData-MaxVersion: 4.0");
  if (rc == 0)
    rc = rx_http_req_header(req, "OData-Version: 4.0");
  if (rc == 0)
    rc = rx_http_req_header(req, auth);
  if (rc == 0 && body)
    rc = rx_http_req_header(req, "Content-Type: application/json; charset=utf-8");
  memset(auth, 0, n);
  free(auth);
  return rc;
}

void sk__cij_token_failed(struct cij_sink *s, struct sk_delivery *d, int result) {
  d->outcome = SK_RETRY;
  d->status = 0;
  d->retry_after_ms = -1;
  if (result == UV_ECANCELED) {
    snprintf(d->reason, sizeof(d->reason), "cancelled");
    snprintf(d->excerpt, sizeof(d->excerpt), "%s", csr_strerror(result));
    return;
  }
  const struct pl_token_stats *st = pl_tokens_stats(s->tokens);
  snprintf(d->reason, sizeof(d->reason), "token");
  snprintf(d->excerpt, sizeof(d->excerpt), "%s",
           st != NULL && st->last_error[0] ? st->last_error : csr_strerror(result));
  sk__cij_note(s, result, "token");
}

void sk__cij_note(struct cij_sink *s, int result, const char *reason) {
  if (result == 0) {
    s->failures = 0;
  } else if (result != UV_ECANCELED) {
    s->failures++;
    snprintf(s->last_failure, sizeof(s->last_failure), "%s", reason);
  }
}

void sk__cij_maybe_closed(struct cij_sink *s) {
  if (s->closing && s->active == NULL && s->flights == NULL && rx_fut_pending(&s->close_fut))
    rx_fut_resolve(&s->close_fut, 0);
}

/* The email in lower case (the cache and flight key: Dataverse compares without case). */
static void lower(const char *email, size_t len, char *out) {
  for (size_t i = 0; i < len; i++)
    out[i] = (char)tolower((unsigned char)email[i]);
  out[len] = '\0';
}

/* ---------------------------------------------------------------------------------------------- */
/* The email and the trigger body */
/* ---------------------------------------------------------------------------------------------- */

/* A string member that is not blank, without surrounding white space: its start and length. */
static const char *nonblank(yajl_val obj, const char *key, size_t *len) {
  const char *s = csr_json_get_str(obj, key);
  if (s == NULL)
    return NULL;
  while (isspace((unsigned char)*s))
    s++;
  size_t n = strlen(s);
  while (n > 0 && isspace((unsigned char)s[n - 1]))
    n--;
  *len = n;
  return n > 0 ? s : NULL;
}

static const char *choose_email(const struct sk_event *ev, size_t *len) {
  const char *e = nonblank(ev->order, "ReceiptEmail", len);
  return e ? e : nonblank(ev->customer, "Email", len);
}

static int uses_default(const struct sk_delivery *d) {
  return d->conf == NULL || d->conf->fields == NULL;
}

/* The members of the documents cij reads for itself: the email (step 1), and a new contact's
 * names and account number (step 3, cij_contacts.c). The mapping's come from its sources. */
static const char *const order_members[] = {"ReceiptEmail", "Name"};
static const char *const customer_members[] = {"Email", "FirstName", "LastName", "AccountNumber"};

/* Whether mapping source `source` reads member `key` of document `root`: its first step after
 * the root, or any member when it names the whole document (doc_path). */
static bool source_reads(const char *source, const char *root, const char *key, size_t len) {
  size_t n = strlen(root);
  if (source == NULL || strncmp(source, root, n) != 0 || (source[n] != '\0' && source[n] != '.'))
    return false;
  const char *step = source[n] ? source + n + 1 : source + n;
  size_t step_len = strcspn(step, ".");
  return key == NULL || step_len == 0 || (step_len == len && memcmp(step, key, len) == 0);
}

struct span {
  const char *p;
  size_t len;
};

/* Adds `name` (`len` bytes) to the distinct names in `seen` (`*n` of them, room for `max`);
 * false when it does not fit. */
static bool add_distinct(struct span *seen, size_t *n, size_t max, const char *name, size_t len) {
  for (size_t i = 0; i < *n; i++)
    if (seen[i].len == len && memcmp(seen[i].p, name, len) == 0)
      return true;
  if (*n == max)
    return false;
  seen[(*n)++] = (struct span){name, len};
  return true;
}

/* How many distinct members of document `root` delivery d reads: cij's own (`own`) and its
 * mapping's first steps; SIZE_MAX when a source reads the whole document (or too many to count). */
static size_t members_read(const struct sk_delivery *d, const char *root, const char *const *own,
                           size_t n_own) {
  struct span seen[32];
  size_t n = 0, rootlen = strlen(root);
  for (size_t i = 0; i < n_own; i++)
    if (!add_distinct(seen, &n, 32, own[i], strlen(own[i])))
      return SIZE_MAX;
  size_t fields = uses_default(d) ? NDEFAULT : d->conf->n_fields;
  for (size_t i = 0; i < fields; i++) {
    const char *src = uses_default(d) ? default_fields[i].source : d->conf->fields[i].source;
    if (!source_reads(src, root, NULL, 0))
      continue;
    const char *step = src[rootlen] ? src + rootlen + 1 : src + rootlen;
    size_t step_len = strcspn(step, ".");
    if (step_len == 0 || !add_distinct(seen, &n, 32, step, step_len))
      return SIZE_MAX;
  }
  return n;
}

/* sk_reads_fn for delivery `arg`: cij's own members and its mapping's. */
static size_t reads_member(void *arg, enum sk_doc doc, const char *key, size_t len) {
  const struct sk_delivery *d = arg;
  bool order = doc == SK_DOC_ORDER, event = doc == SK_DOC_EVENT;
  const char *root = event ? "EventDetails" : order ? "OrderDetails" : "CustomerDetails";
  const char *const *own = event ? NULL : order ? order_members : customer_members;
  size_t n_own = event ? 0 : order ? 2 : 4;
  if (key == NULL)
    return members_read(d, root, own, n_own);
  if (csr_json_key_in(key, len, own, n_own))
    return 1;
  size_t n = uses_default(d) ? NDEFAULT : d->conf->n_fields;
  for (size_t i = 0; i < n; i++)
    if (source_reads(uses_default(d) ? default_fields[i].source : d->conf->fields[i].source, root,
                     key, len))
      return 1;
  return 0;
}

/* An action name, possibly namespaced ("Microsoft.Dynamics.CRM.x"): it becomes a URL segment. */
static int valid_trigger(const char *t) {
  size_t n = t ? strlen(t) : 0;
  if (n == 0 || n > TRIGGER_NAME_MAX || !isalpha((unsigned char)t[0]) || strstr(t, "..") != NULL)
    return 0;
  for (; *t; t++)
    if (!isalnum((unsigned char)*t) && *t != '_' && *t != '.')
      return 0;
  return 1;
}

/* What a body is built from. */
struct doc {
  const struct sk_event *ev;
  const char *email;
  size_t email_len;
  const char *contact;
  const char *event_time; /* NULL writes null */
  char time_buf[CSR_TIME_BUF];
  char now[CSR_TIME_BUF];
};

/* EventDetails / OrderDetails / CustomerDetails, then a dotted path inside it. */
static yajl_val doc_path(const struct sk_event *ev, const char *path) {
  size_t n = strcspn(path, ".");
  yajl_val root = NULL;
  if (n == 12 && strncmp(path, "EventDetails", n) == 0)
    root = ev->event;
  else if (n == 12 && strncmp(path, "OrderDetails", n) == 0)
    root = ev->order;
  else if (n == 15 && strncmp(path, "CustomerDetails", n) == 0)
    root = ev->customer;
  if (root == NULL || path[n] == '\0')
    return root;
  return csr_json_path(root, path + n + 1);
}

static void write_source(struct csr_jw *jw, const struct doc *doc, const char *source) {
  if (source[0] != '$') {
    csr_jw_value(jw, doc_path(doc->ev, source)); /* nothing there writes null */
    return;
  }
  if (strcmp(source, "$email") == 0)
    csr_jw_strn(jw, doc->email, doc->email_len);
  else if (strcmp(source, "$event_time") == 0)
    csr_jw_str(jw, doc->event_time);
  else if (strcmp(source, "$now") == 0)
    csr_jw_str(jw, doc->now);
  else if (strcmp(source, "$contact_id") == 0)
    csr_jw_str(jw, doc->contact);
  else if (strcmp(source, "$event_id") == 0)
    csr_jw_str(jw, doc->ev->id);
  else
    csr_jw_null(jw);
}

/* Writes the trigger body for `d` into `jw` (finished: check with csr_jw_finish's result). */
static int encode_trigger(struct csr_jw *jw, const struct sk_delivery *d, const struct sk_event *ev,
                          const char *email, size_t email_len, const char *contact) {
  struct doc doc = {.ev = ev, .email = email, .email_len = email_len, .contact = contact};
  doc.event_time = csr_time_format(ev->time_ms, doc.time_buf, sizeof(doc.time_buf)) > 0
                       ? doc.time_buf
                       : ev->time_text;
  if (csr_time_format(rx_wall_ms(), doc.now, sizeof(doc.now)) == 0)
    return CSR_EPARSE;
  csr_jw_obj(jw);
  if (uses_default(d)) {
    for (size_t i = 0; i < NDEFAULT; i++) {
      csr_jw_key(jw, default_fields[i].target);
      write_source(jw, &doc, default_fields[i].source);
    }
  } else {
    for (size_t i = 0; i < d->conf->n_fields; i++) {
      csr_jw_key(jw, d->conf->fields[i].target);
      write_source(jw, &doc, d->conf->fields[i].source ? d->conf->fields[i].source : "");
    }
  }
  csr_jw_obj_end(jw);
  const char *text;
  size_t len;
  return csr_jw_finish(jw, &text, &len);
}

/* ---------------------------------------------------------------------------------------------- */
/* A delivery */
/* ---------------------------------------------------------------------------------------------- */

static void link_req(struct cij_sink *s, struct cij_req *r) {
  r->prev = NULL;
  r->next = s->active;
  if (s->active)
    s->active->prev = r;
  s->active = r;
}

static void unlink_req(struct cij_sink *s, struct cij_req *r) {
  if (r->prev)
    r->prev->next = r->next;
  else
    s->active = r->next;
  if (r->next)
    r->next->prev = r->prev;
  r->prev = r->next = NULL;
}

static void set_outcome(struct sk_delivery *d, enum sk_outcome outcome, const char *reason,
                        const char *excerpt) {
  d->outcome = outcome;
  d->status = 0;
  d->retry_after_ms = -1;
  snprintf(d->reason, sizeof(d->reason), "%s", reason);
  snprintf(d->excerpt, sizeof(d->excerpt), "%s", excerpt);
}

static void drop_token(struct cij_req *r) {
  if (r->token) {
    memset(r->token, 0, strlen(r->token));
    free(r->token);
    r->token = NULL;
  }
}

/* Unlinks and frees `r`, then reports its delivery; the sink may be closing but is still alive. */
static void finish(struct cij_req *r) {
  struct cij_sink *s = r->s;
  struct sk_delivery *d = r->d;
  unlink_req(s, r);
  if (r->started)
    rx_http_req_cleanup(&r->req);
  drop_token(r);
  free(r->body);
  sk_event_trees_free(&r->ev, d->event);
  free(r);
  if (d->outcome == SK_DEAD)
    CSR_LOG(CSR_WARN, "cij delivery dead", CSR_KS("event", d->event->id),
            CSR_KS("reason", d->reason), CSR_KI("status", d->status));
  d->_sink_state = NULL;
  d->done(d);
  sk__cij_maybe_closed(s);
}

static void start_token(struct cij_req *r);

/* A 4xx naming our cached contact as missing: the cache is stale (see the file comment). */
static int stale_contact(const struct cij_req *r) {
  const char *body = r->req.resp_body;
  return r->cached && r->d->outcome == SK_DEAD && body != NULL &&
         strstr(body, NOT_FOUND_CODE) != NULL && strcasestr(body, r->contact) != NULL;
}

static void on_trigger_answer(struct rx_fut *fut) {
  struct cij_req *r = RX_CONTAINER_OF(fut, struct cij_req, req.fut);
  struct cij_sink *s = r->s;
  if (fut->result == 0 && r->req.status == 401 && !r->refreshed && !r->cancelled) {
    r->refreshed = 1;
    s->refreshes++;
    sk__cij_note(s, 0, "");
    pl_tokens_invalidate(s->tokens, r->token);
    CSR_LOG(CSR_INFO, "cij token refused, refreshing", CSR_KS("event", r->d->event->id),
            CSR_KS("call", "trigger"));
    rx_http_req_cleanup(&r->req);
    r->started = 0;
    start_token(r);
    return;
  }
  sk_classify_http(&r->req, r->d);
  sk__cij_note(s, fut->result, r->d->reason);
  if (stale_contact(r)) {
    sk__cij_cache_drop(s->cache, r->key);
    CSR_LOG(CSR_INFO, "cij cached contact is gone", CSR_KS("event", r->d->event->id),
            CSR_KS("contact", r->contact));
    r->d->outcome = SK_RETRY;
    snprintf(r->d->reason, sizeof(r->d->reason), "stale_contact");
  }
  finish(r);
}

/* Builds the body (for now, with `token`) and sends it; < 0 when it could not start. */
static int send_trigger(struct cij_req *r) {
  struct cij_sink *s = r->s;
  csr_jw_reset(&s->jw);
  const char *text;
  size_t len;
  int rc = encode_trigger(&s->jw, r->d, &r->ev, r->email, strlen(r->email), r->contact);
  if (rc == 0)
    rc = csr_jw_finish(&s->jw, &text, &len);
  if (rc < 0) {
    set_outcome(r->d, SK_DEAD, "encode", "the trigger body cannot be encoded");
    return rc;
  }
  free(r->body);
  if ((r->body = malloc(len + 1)) == NULL)
    return -ENOMEM;
  memcpy(r->body, text, len + 1);
  rx_http_req_init(&r->req);
  r->req.data = r;
  r->req.method = "POST";
  r->req.url = r->url;
  r->req.body = r->body;
  r->req.body_len = len;
  r->req.timeout_ms = sk__cij_timeout(s);
  rc = sk__cij_headers(&r->req, r->token, 1);
  if (rc == 0)
    rc = rx_http_start(s->base.env->http, &r->req, on_trigger_answer);
  if (rc < 0) {
    rx_http_req_cleanup(&r->req);
    set_outcome(r->d, SK_RETRY, rc == -EINVAL ? "token" : "transport", csr_strerror(rc));
    return rc;
  }
  r->started = 1;
  r->state = CIJ_TRIGGER;
  return 0;
}

static void on_token(struct rx_fut *fut) {
  struct cij_req *r = RX_CONTAINER_OF(fut, struct cij_req, tok.fut);
  int rc = r->cancelled ? UV_ECANCELED : fut->result;
  if (rc < 0) {
    sk__cij_token_failed(r->s, r->d, rc);
    finish(r);
    return;
  }
  drop_token(r);
  if ((r->token = strdup(r->tok.token)) == NULL) {
    set_outcome(r->d, SK_RETRY, "transport", csr_strerror(-ENOMEM));
    finish(r);
    return;
  }
  if (send_trigger(r) < 0)
    finish(r);
}

static void start_token(struct cij_req *r) {
  r->state = CIJ_TOKEN;
  int rc = r->cancelled ? UV_ECANCELED : pl_tokens_get(r->s->tokens, &r->tok, on_token);
  if (rc < 0) {
    sk__cij_token_failed(r->s, r->d, rc);
    finish(r);
  }
}

/* The step is over: a contact to trigger for, or an outcome already in d. */
static void on_step(struct rx_fut *fut) {
  struct cij_req *r = RX_CONTAINER_OF(fut, struct cij_req, step);
  if (r->cancelled) {
    set_outcome(r->d, SK_RETRY, "cancelled", csr_strerror(UV_ECANCELED));
    finish(r);
  } else if (r->contact[0] == '\0') {
    finish(r);
  } else {
    start_token(r);
  }
}

/* An outcome known without any call; reported from the loop, never from inside deliver(). */
static void decide(struct cij_req *r, enum sk_outcome outcome, const char *reason,
                   const char *excerpt) {
  set_outcome(r->d, outcome, reason, excerpt);
  rx_fut_resolve(&r->step, 0);
}

static struct cij_req *req_create(struct cij_sink *s, struct sk_delivery *d,
                                  const struct sk_event *ev, const char *email, size_t email_len) {
  const char *trigger = d->conf && valid_trigger(d->conf->trigger) ? d->conf->trigger : "";
  size_t url_len = strlen(s->api) + strlen(trigger);
  struct cij_req *r = calloc(1, sizeof(*r) + 2 * (email_len + 1) + url_len + 1);
  if (r == NULL)
    return NULL;
  r->s = s;
  r->d = d;
  r->ev = *ev;
  r->email = r->text;
  memcpy(r->email, email ? email : "", email_len);
  r->email[email_len] = '\0';
  r->key = r->email + email_len + 1;
  lower(r->email, email_len, r->key);
  r->url = r->key + email_len + 1;
  snprintf(r->url, url_len + 1, "%s%s", s->api, trigger);
  return r;
}

/* ---------------------------------------------------------------------------------------------- */
/* ops */
/* ---------------------------------------------------------------------------------------------- */

static int init_fail(struct cij_sink *s, struct csr_err *err, const char *key, const char *what) {
  const struct csr_sink_conf *conf = s->base.conf;
  free(s->api);
  free(s->create_url);
  sk__cij_cache_destroy(s->cache);
  s->api = s->create_url = NULL;
  s->cache = NULL;
  return csr_err_set(err, NULL, conf->line, key, "cij sink '%s': %s", conf->name ? conf->name : "",
                     what);
}

static int cij_init(struct sk_sink *sink, struct csr_err *err) {
  struct cij_sink *s = (struct cij_sink *)sink;
  const struct csr_sink_conf *conf = sink->conf;
  const struct sk_env *env = sink->env;
  const char *url = conf->dataverse_url;
  size_t n = url ? strlen(url) : 0;
  if (n == 0 || url[n - 1] != '/' || has_ctl(url) ||
      (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0))
    return init_fail(s, err, "dataverse_url", "an http(s):// URL ending in '/' is required");
  if (env->http == NULL)
    return init_fail(s, err, "", "no HTTP client");
  s->tokens = env->tokens ? env->tokens(env->tokens_arg, conf->identity_name) : NULL;
  if (s->tokens == NULL)
    return init_fail(s, err, "identity", "no token cache for its identity");
  size_t an = n + strlen(API_PATH) + 1, cn = an + strlen("contacts?$select=contactid");
  s->api = malloc(an);
  s->create_url = malloc(cn);
  if (s->api == NULL || s->create_url == NULL || sk__cij_cache_create(CIJ_CACHE_MAX, &s->cache) < 0)
    return init_fail(s, err, "", "out of memory");
  snprintf(s->api, an, "%s" API_PATH, url);
  snprintf(s->create_url, cn, "%scontacts?$select=contactid", s->api);
  if (csr_jw_init(&s->jw) != 0)
    return init_fail(s, err, "", "out of memory");
  return 0;
}

static int cij_deliver(struct sk_sink *sink, struct sk_delivery *d) {
  struct cij_sink *s = (struct cij_sink *)sink;
  if (s->closing)
    return -ECANCELED;
  struct sk_event ev;
  size_t len = 0;
  const char *email = NULL;
  struct cij_req *r = NULL;
  if (sk_event_trees(d->event, reads_member, (void *)d, &ev) == 0) {
    email = choose_email(&ev, &len);
    r = req_create(s, d, &ev, email, email ? len : 0);
  }
  if (r == NULL) {
    sk_event_trees_free(&ev, d->event);
    return -ENOMEM;
  }
  rx_fut_init(&r->step, sink->env->loop, on_step);
  r->state = CIJ_STEP;
  const char *hit = NULL;
  if (d->conf == NULL || !valid_trigger(d->conf->trigger)) {
    decide(r, SK_DEAD, "no_trigger", "the route names no valid custom trigger for this cij sink");
  } else if (uses_default(d) && ev.order == NULL) {
    decide(r, SK_DEAD, "no_order",
           "the default trigger mapping needs OrderDetails: enrich the route with order");
  } else if (email == NULL) {
    decide(r, SK_SKIPPED, "no_email", "neither ReceiptEmail nor the customer's Email is set");
  } else if ((hit = sk__cij_cache_get(s->cache, r->key, 1)) != NULL) {
    s->cache_hits++;
    snprintf(r->contact, sizeof(r->contact), "%s", hit);
    r->cached = 1;
    rx_fut_resolve(&r->step, 0);
  } else if (sk__cij_contact_wait(s, r) < 0) {
    sk_event_trees_free(&r->ev, d->event);
    free(r);
    return -ENOMEM;
  }
  link_req(s, r);
  d->_sink_state = r;
  return 0;
}

static void cij_cancel(struct sk_sink *sink, struct sk_delivery *d) {
  struct cij_req *r = d ? d->_sink_state : NULL;
  if (r == NULL || r->cancelled)
    return;
  r->cancelled = 1;
  switch (r->state) {
    case CIJ_STEP:
      sk__cij_contact_leave(r);
      rx_fut_resolve(&r->step, UV_ECANCELED); /* ignored when the step already ended */
      break;
    case CIJ_TOKEN:
      pl_tokens_cancel(&r->tok);
      break;
    case CIJ_TRIGGER:
      if (r->started)
        rx_http_cancel(&r->req); /* deferred: on_trigger_answer runs later */
      break;
  }
}

static int cij_encode(struct sk_sink *sink, const struct sk_delivery *d, struct csr_jw *jw) {
  struct cij_sink *s = (struct cij_sink *)sink;
  if (d == NULL || d->event == NULL || jw == NULL)
    return -EINVAL;
  struct sk_event ev;
  int rc = sk_event_trees(d->event, reads_member, (void *)d, &ev);
  size_t len = 0;
  const char *email = rc == 0 ? choose_email(&ev, &len) : NULL;
  char *key = email ? malloc(len + 1) : NULL;
  if (rc < 0 || (email != NULL && key == NULL))
    rc = -ENOMEM;
  else if (email == NULL || (uses_default(d) && ev.order == NULL))
    rc = CSR_EPARSE;
  if (rc == 0) {
    lower(email, len, key);
    const char *id = s->cache ? sk__cij_cache_get(s->cache, key, 0) : NULL;
    rc = encode_trigger(jw, d, &ev, email, len, id ? id : PLACEHOLDER_ID);
  }
  free(key);
  sk_event_trees_free(&ev, d->event);
  return rc;
}

static int cij_ready(struct sk_sink *sink, char *why, size_t len) {
  struct cij_sink *s = (struct cij_sink *)sink;
  if (s->closing) {
    snprintf(why, len, "closing");
    return -ECANCELED;
  }
  if (s->failures >= READY_FAILURES) {
    snprintf(why, len, "%u transport or token failures in a row (last: %s)", s->failures,
             s->last_failure);
    return CSR_ETRANSPORT;
  }
  return 0;
}

static void on_close_fut(struct rx_fut *fut) {
  struct cij_sink *s = RX_CONTAINER_OF(fut, struct cij_sink, close_fut);
  CSR_LOG(CSR_DEBUG, "cij sink closed", CSR_KS("sink", s->base.conf->name),
          CSR_KI("lookups", s->lookups), CSR_KI("creates", s->creates),
          CSR_KI("cache_hits", s->cache_hits), CSR_KI("cached", sk__cij_cache_size(s->cache)),
          CSR_KI("refreshes", s->refreshes));
  csr_jw_free(&s->jw);
  sk__cij_cache_destroy(s->cache);
  free(s->api);
  free(s->create_url);
  s->cache = NULL;
  s->api = s->create_url = NULL;
  s->close_cb(&s->base);
}

static void cij_close(struct sk_sink *sink, void (*cb)(struct sk_sink *sink)) {
  struct cij_sink *s = (struct cij_sink *)sink;
  if (s->closing)
    return;
  s->closing = 1;
  s->close_cb = cb;
  rx_fut_init(&s->close_fut, sink->env->loop, on_close_fut);
  for (struct cij_req *r = s->active; r; r = r->next)
    cij_cancel(sink, r->d); /* every completion is deferred, so the list holds still */
  sk__cij_flights_cancel(s);
  sk__cij_maybe_closed(s);
}

const struct sk_ops sk_cij_ops = {
    .name = "cij",
    .description =
        "Customer Insights – Journeys: finds or creates the contact by email, then calls "
        "the custom trigger (SPEC section 4)",
    .size = sizeof(struct cij_sink),
    .init = cij_init,
    .deliver = cij_deliver,
    .cancel = cij_cancel,
    .encode = cij_encode,
    .ready = cij_ready,
    .close = cij_close,
};
