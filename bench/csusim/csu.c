/* The CSU endpoints under /csu{i}/Commerce/ (commerce-event-sample section 1, dynamics-api 2).
 *
 * Every request first goes through sim_serve() so the fault plan applies; the handler then checks
 * the token (optional on the last-sync and OUN endpoints, as in the sample, but a token that is
 * sent must be valid), then the OUN header, and answers. Paths are percent-decoded and matched
 * without regard to case; `//Commerce` (the Function's doubled slash) is accepted. Unknown paths,
 * a method a route does not take, and CSU indexes past --csus get 404 in the Commerce error shape
 * at once, before the gate (no endpoint name, so no fault and no ledger count).
 *
 * Choices where the references are silent:
 * - Search with a missing or blank EventType answers 500 (the real key builder throws an
 *   unhandled ArgumentNullException); a From or To before 1753 answers 500 (SQL datetime cannot
 *   hold it, W-C8). Missing From/To or criteria answer 400 RequiredValueNotFound. EventType
 *   matches ignoring case (SQL's default collation); "AddCartLines,Checkout" matches nothing.
 * - @odata.count, when $count=true, is the true number of matching rows (the screenshot's 0 is
 *   not reproduced). Without $top every matching row is returned. The stale cache's key also
 *   holds $count (the settings hash covers the whole QueryResultSettings).
 * - An unstable tie order applies to Search only; GetAllCommerceEvents merges both types by time,
 *   AddCartLines first on a tie.
 * - An order for a cart with no committed Checkout: 404 ObjectNotFound.
 * - The Customers endpoints' choices are listed in customers.c.
 * - SetLastSyncDatetime twice with one value for one app answers 500 (the table's primary key,
 *   W-C8); an appName over 20 characters answers 500 (truncation).
 */
#include "csu_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "csurelay/timefmt.h"

#define CT_ODATA   "application/json; odata.metadata=minimal"
#define SQL_MIN_MS (-6847804800000LL) /* 1753-01-01T00:00:00Z, SQL datetime's first day */

/* ---------------------------------------------------------------------------------------------- */
/* Request text: paths, query options, bodies */
/* ---------------------------------------------------------------------------------------------- */

static int hexval(char ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  ch = (char)tolower((unsigned char)ch);
  return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Percent-decodes n bytes; false when the result does not fit. */
static bool decode(const char *s, size_t n, char *out, size_t len) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    if (o + 1 >= len)
      return false;
    int hi, lo;
    if (s[i] == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 && (lo = hexval(s[i + 2])) >= 0) {
      out[o++] = (char)(hi * 16 + lo);
      i += 2;
    } else {
      out[o++] = s[i];
    }
  }
  out[o] = '\0';
  return true;
}

/* "/csu{i}/Commerce/REST" → i and the decoded REST; -1 when the path has no such shape. */
static int parse_path(const char *path, unsigned *csu, char *rest, size_t len) {
  const char *p = path + 4; /* after "/csu" */
  unsigned long v = 0;
  if (strncmp(path, "/csu", 4) != 0 || !isdigit((unsigned char)*p))
    return -1;
  for (; isdigit((unsigned char)*p) && v < 1000000; p++)
    v = v * 10 + (unsigned long)(*p - '0');
  if (*p != '/')
    return -1;
  while (*p == '/')
    p++;
  if (strncasecmp(p, "Commerce", 8) != 0 || (p[8] != '/' && p[8] != '\0'))
    return -1;
  for (p += 8; *p == '/';)
    p++;
  *csu = (unsigned)v;
  return decode(p, strlen(p), rest, len) ? 0 : -1;
}

/* The decoded value of query option `key` (exact name after decoding): 1 found, 0 absent, -1 when
 * it does not fit. */
static int query_get(const char *query, const char *key, char *out, size_t len) {
  while (*query) {
    size_t n = strcspn(query, "&");
    const char *eq = memchr(query, '=', n);
    size_t kn = eq ? (size_t)(eq - query) : n;
    char name[64];
    if (decode(query, kn, name, sizeof(name)) && strcmp(name, key) == 0) {
      if (eq == NULL) {
        out[0] = '\0';
        return 1;
      }
      return decode(eq + 1, n - kn - 1, out, len) ? 1 : -1;
    }
    query += n;
    if (*query == '&')
      query++;
  }
  return 0;
}

bool sim__unquote(const char *s, size_t n, char *out, size_t len) {
  size_t o = 0;
  if (n < 2 || s[0] != '\'' || s[n - 1] != '\'')
    return false;
  for (size_t i = 1; i + 1 < n; i++) {
    if (s[i] == '\'' && (i + 2 >= n || s[++i] != '\''))
      return false;
    if (o + 1 >= len)
      return false;
    out[o++] = s[i];
  }
  out[o] = '\0';
  return true;
}

/* The value of parameter `name` in "Fn(a=1,b='x')" (from the '(' on): raw text, quotes kept. */
static bool call_param(const char *args, const char *name, char *out, size_t len) {
  const char *p = args + 1;
  size_t nl = strlen(name);
  while (*p && *p != ')') {
    const char *eq = strchr(p, '=');
    if (eq == NULL)
      return false;
    const char *v = eq + 1, *end = v;
    bool quoted = *v == '\'';
    for (end = quoted ? v + 1 : v; *end; end++) {
      if (quoted && *end == '\'' && end[1] == '\'')
        end++;
      else if (quoted && *end == '\'')
        quoted = false;
      else if (!quoted && (*end == ',' || *end == ')'))
        break;
    }
    if ((size_t)(eq - p) == nl && strncasecmp(p, name, nl) == 0) {
      snprintf(out, len, "%.*s", (int)(end - v), v);
      return (size_t)(end - v) < len;
    }
    p = *end == ',' ? end + 1 : end;
  }
  return false;
}

/* A 404 from routing, before the gate (no fault applies, as no endpoint was named). */
static void not_found(struct rx_http_request *req) {
  static const char body[] =
      "{\"ErrorResourceId\":\"" SIM_E_NOT_FOUND "\",\"LocalizedMessage\":\"No HTTP resource was "
      "found that matches the request URI.\",\"ExceptionType\":\"CommerceException\"}";
  rx_http_respond(req, 404, NULL, "application/json", body, sizeof(body) - 1);
}

void sim__reply_jw(struct sim_req *r, int status, const char *headers, struct csr_jw *jw) {
  const char *text;
  size_t len;
  if (csr_jw_finish(jw, &text, &len) < 0) {
    sim_reply_commerce_error(r, 500, SIM_E_APPLICATION, "The response could not be written.",
                             "CommerceException");
    return;
  }
  sim_reply(r, status, headers, CT_ODATA, text, len);
}

int sim__fail(struct sim_req *r, int status, const char *id, const char *msg, const char *type) {
  sim_reply_commerce_error(r, status, id, msg, type);
  return -1;
}

int sim__bad(struct sim_req *r, const char *id, const char *msg) {
  return sim__fail(r, 400, id, msg, SIM_X_VALIDATION);
}

struct sim__csu *sim__csu_begin(struct sim_req *r, bool token_required) {
  struct sim_csus *c = r->arg;
  struct sim__csu *u = &c->csu[r->csu];
  if ((token_required || rx_http_header(r->http, "Authorization") != NULL) &&
      sim_entra_check(r, SIM_AUD_COMMERCE) < 0)
    return NULL;
  const char *oun = rx_http_header(r->http, "OUN");
  if (oun == NULL || oun[0] == '\0') {
    sim__bad(r, SIM_E_INVALID,
             "The OUN header is required: the operating unit number of the channel.");
    return NULL;
  }
  size_t n = strlen(oun);
  while (n > 0 && isspace((unsigned char)oun[n - 1]))
    n--;
  while (n > 0 && isspace((unsigned char)*oun))
    oun++, n--;
  if (n != strlen(u->oun) || strncmp(oun, u->oun, n) != 0) {
    sim__bad(r, SIM_E_INVALID, "The operating unit number in the OUN header is not served here.");
    return NULL;
  }
  csr_jw_reset(&c->jw);
  return u;
}

yajl_val sim__body_json(struct sim_req *r) {
  char why[128];
  yajl_val v = csr_json_parse(r->http->body, r->http->body_len, why, sizeof(why));
  if (v == NULL || !YAJL_IS_OBJECT(v)) {
    csr_json_free(v);
    sim__bad(r, SIM_E_INVALID, "The request body is not a JSON object.");
    return NULL;
  }
  return v;
}

int sim__paging(struct sim_req *r, struct sim__query *q) {
  char v[32];
  const char *names[2] = {"$top", "$skip"};
  size_t *dst[2] = {&q->top, &q->skip};
  q->top = SIZE_MAX;
  q->skip = 0;
  for (int i = 0; i < 2; i++) {
    int got = query_get(r->http->query, names[i], v, sizeof(v));
    char *end = NULL;
    errno = 0;
    unsigned long long n = got == 1 ? strtoull(v, &end, 10) : 0;
    if (got < 0 ||
        (got == 1 && (!isdigit((unsigned char)v[0]) || *end || errno || n > INT32_MAX))) {
      sim__bad(r, SIM_E_INVALID, "The query options $top and $skip take a non-negative integer.");
      return -1;
    }
    if (got == 1)
      *dst[i] = (size_t)n;
  }
  int got = query_get(r->http->query, "$count", v, sizeof(v));
  if (got < 0 || (got == 1 && strcasecmp(v, "true") != 0 && strcasecmp(v, "false") != 0)) {
    sim__bad(r, SIM_E_INVALID, "The query option $count takes true or false.");
    return -1;
  }
  q->count = got == 1 && strcasecmp(v, "true") == 0;
  return 0;
}

const char *sim__rest_of(struct sim_req *r, char *buf, size_t len) {
  unsigned csu;
  return parse_path(r->http->path, &csu, buf, len) == 0 ? buf : "";
}

void sim__with_body(struct sim_req *r, bool token_required, sim__body_fn fn) {
  struct sim__csu *u = sim__csu_begin(r, token_required);
  yajl_val doc = u ? sim__body_json(r) : NULL;
  if (doc != NULL)
    fn(r, u, doc);
  csr_json_free(doc);
}

void sim__jw_context(struct csr_jw *jw, const struct sim_csus *c, const struct sim__csu *u,
                     const char *what) {
  char ctx[256];
  snprintf(ctx, sizeof(ctx), "%s/csu%u/Commerce/$metadata#%s", c->sim->base_url, u->index, what);
  csr_jw_kstr(jw, "@odata.context", ctx);
}

/* ---------------------------------------------------------------------------------------------- */
/* CommerceEventsController */
/* ---------------------------------------------------------------------------------------------- */

static int search_dates(struct sim_req *r, yajl_val crit, struct sim__query *q) {
  const char *names[2] = {"EventDateTimeFrom", "EventDateTimeTo"};
  int64_t *dst[2] = {&q->from_ms, &q->to_ms};
  for (int i = 0; i < 2; i++) {
    const char *text = csr_json_str(csr_json_get_ci(crit, names[i]));
    char msg[96];
    if (text == NULL) {
      snprintf(msg, sizeof(msg), "A value is required for %s.", names[i]);
      sim__bad(r, SIM_E_REQUIRED, msg);
      return -1;
    }
    if (csr_time_parse(text, dst[i]) < 0) {
      snprintf(msg, sizeof(msg), "%s is not a valid DateTime.", names[i]);
      sim__bad(r, SIM_E_INVALID, msg);
      return -1;
    }
    if (*dst[i] < SQL_MIN_MS) {
      sim_reply_commerce_error(r, 500, SIM_E_STORAGE,
                               "The conversion of a varchar data type to a datetime data type "
                               "resulted in an out-of-range value.",
                               SIM_X_STORAGE);
      return -1;
    }
    /* the server formats both with DateTime.ToString(): milliseconds are gone */
    *dst[i] = sim__whole_s(*dst[i]) * 1000;
  }
  return 0;
}

static void search_run(struct sim_req *r, struct sim__csu *u, const char *type,
                       struct sim__query *q) {
  struct sim_csus *c = r->arg;
  const struct sim_event_faults *k = sim__knobs(c);
  q->type = strcasecmp(type, "AddCartLines") == 0 ? SIM_ADDCARTLINES
            : strcasecmp(type, "Checkout") == 0   ? SIM_CHECKOUT
                                                  : 2; /* matches nothing, as SQL's = would */
  q->shuffle = k->unstable_tie_order;
  size_t len = 0;
  const char *cached = k->stale_cache ? sim__cache_get(c, u->index, type, q, &len) : NULL;
  if (cached != NULL) {
    sim_reply(r, 200, NULL, CT_ODATA, cached, len);
    return;
  }
  size_t rows = sim__write_page(c, u, q, &c->jw);
  const char *text;
  if (k->stale_cache && rows > 0 && csr_jw_finish(&c->jw, &text, &len) == 0)
    sim__cache_put(c, u->index, type, q, text, len); /* only non-empty pages are cached */
  sim__reply_jw(r, 200, NULL, &c->jw);
}

static void on_search(struct sim_req *r) {
  struct sim__csu *u = sim__csu_begin(r, true);
  struct sim__query q;
  if (u == NULL || sim__paging(r, &q) < 0)
    return;
  yajl_val doc = sim__body_json(r);
  if (doc == NULL)
    return;
  yajl_val crit = csr_json_get_ci(doc, "commerceEventSearchCriteria");
  const char *type = csr_json_str(csr_json_get_ci(crit, "EventType"));
  if (!YAJL_IS_OBJECT(crit)) {
    sim__bad(r, SIM_E_REQUIRED, "A value is required for commerceEventSearchCriteria.");
  } else if (search_dates(r, crit, &q) == 0) {
    size_t n = type ? strlen(type) : 0;
    while (n > 0 && isspace((unsigned char)type[n - 1]))
      n--;
    if (n == 0)
      sim_reply_commerce_error(r, 500, SIM_E_APPLICATION, "Value cannot be null. (Parameter 'key')",
                               "ArgumentNullException");
    else
      search_run(r, u, type, &q);
  }
  csr_json_free(doc);
}

static void on_getall(struct sim_req *r) {
  struct sim__csu *u = sim__csu_begin(r, true);
  struct sim__query q;
  if (u == NULL || sim__paging(r, &q) < 0)
    return;
  q.type = -1;
  q.from_ms = INT64_MIN;
  q.to_ms = INT64_MAX;
  q.shuffle = false;
  sim__write_page(r->arg, u, &q, &((struct sim_csus *)r->arg)->jw);
  sim__reply_jw(r, 200, NULL, &((struct sim_csus *)r->arg)->jw);
}

/* ---------------------------------------------------------------------------------------------- */
/* Last sync and the operating unit */
/* ---------------------------------------------------------------------------------------------- */

static struct sim__lastsync *lastsync_app(struct sim__csu *u, const char *app, bool add) {
  for (size_t i = 0; i < u->nsync; i++)
    if (strcasecmp(u->sync[i].app, app) == 0) /* SQL's default collation ignores case */
      return &u->sync[i];
  if (!add)
    return NULL;
  struct sim__lastsync *n = realloc(u->sync, (u->nsync + 1) * sizeof(*n));
  if (n == NULL)
    return NULL;
  u->sync = n;
  n = &u->sync[u->nsync++];
  memset(n, 0, sizeof(*n));
  snprintf(n->app, sizeof(n->app), "%s", app);
  return n;
}

/* {"@odata.context": ".../$metadata#{edm}", "value": value} */
static void reply_value(struct sim_req *r, struct sim__csu *u, const char *edm, const char *value) {
  struct sim_csus *c = r->arg;
  csr_jw_obj(&c->jw);
  sim__jw_context(&c->jw, c, u, edm);
  csr_jw_kstr(&c->jw, "value", value);
  csr_jw_obj_end(&c->jw);
  sim__reply_jw(r, 200, NULL, &c->jw);
}

static void reply_value_time(struct sim_req *r, struct sim__csu *u, int64_t ms) {
  char text[CSR_TIME_BUF];
  csr_time_format(ms, text, sizeof(text));
  reply_value(r, u, "Edm.DateTimeOffset", text);
}

static int lastsync_get(struct sim_req *r, struct sim__csu *u, yajl_val doc) {
  const char *app = csr_json_str(csr_json_get_ci(doc, "appName"));
  struct sim__lastsync *s = lastsync_app(u, app ? app : "", false);
  int64_t best = -62135596800000LL; /* default(DateTime), 0001-01-01 */
  for (size_t i = 0; s != NULL && i < s->n; i++)
    best = s->vals[i] > best ? s->vals[i] : best;
  reply_value_time(r, u, best);
  return 0;
}

static int lastsync_set(struct sim_req *r, struct sim__csu *u, yajl_val doc) {
  const char *app = csr_json_str(csr_json_get_ci(doc, "appName"));
  const char *when = csr_json_str(csr_json_get_ci(doc, "lastSyncDatetime"));
  int64_t ms;
  if (app == NULL || when == NULL)
    return sim__bad(r, SIM_E_REQUIRED, "A value is required for lastSyncDatetime and appName.");
  if (csr_time_parse(when, &ms) < 0)
    return sim__bad(r, SIM_E_INVALID, "lastSyncDatetime is not a valid DateTimeOffset.");
  if (strlen(app) > 20 || ms < SQL_MIN_MS)
    return sim__fail(r, 500, SIM_E_STORAGE,
                     strlen(app) > 20 ? "String or binary data would be truncated."
                                      : "SqlDateTime overflow.",
                     SIM_X_STORAGE);
  struct sim__lastsync *s = lastsync_app(u, app, true);
  for (size_t i = 0; s != NULL && i < s->n; i++)
    if (s->vals[i] == ms)
      return sim__fail(r, 500, SIM_E_STORAGE,
                       "Violation of PRIMARY KEY constraint. Cannot insert "
                       "duplicate key in object 'ext.COMMERCEEVENTSSYNCTABLE'.",
                       SIM_X_STORAGE);
  if (s != NULL && s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 16;
    int64_t *v = realloc(s->vals, cap * sizeof(*v));
    s->vals = v ? v : s->vals;
    s->cap = v ? cap : s->cap;
  }
  if (s == NULL || s->n == s->cap)
    return sim__fail(r, 500, SIM_E_APPLICATION, "Out of memory.", "CommerceException");
  s->vals[s->n++] = ms;
  reply_value_time(r, u, ms);
  return 0;
}

static void on_lastsync(struct sim_req *r) {
  char rest[SIM_MAX_PATH_BYTES];
  bool get = strncasecmp(sim__rest_of(r, rest, sizeof(rest)), "Get", 3) == 0;
  sim__with_body(r, false, get ? lastsync_get : lastsync_set);
}

static void on_oun(struct sim_req *r) {
  char rest[SIM_MAX_PATH_BYTES], v[32];
  struct sim__csu *u = sim__csu_begin(r, false);
  if (u == NULL)
    return;
  const char *args = strchr(sim__rest_of(r, rest, sizeof(rest)), '(');
  char *end = NULL;
  long long id = args && call_param(args, "channelid", v, sizeof(v)) ? strtoll(v, &end, 10) : 0;
  bool known = false;
  for (int i = 0; end != NULL && *end == '\0' && end != v && i < SIM_CHANNELS_PER_CSU; i++)
    known = known || u->channels[i] == id;
  if (!known) {
    sim__bad(r, SIM_E_INVALID, "Could not retrieve Oun");
    return;
  }
  reply_value(r, u, "Edm.String", u->oun);
}

/* ---------------------------------------------------------------------------------------------- */
/* SalesOrders */
/* ---------------------------------------------------------------------------------------------- */

static void on_order(struct sim_req *r) {
  char rest[SIM_MAX_PATH_BYTES], raw[256], alias[256], txn[128];
  struct sim__csu *u = sim__csu_begin(r, true);
  if (u == NULL)
    return;
  const char *args = strchr(sim__rest_of(r, rest, sizeof(rest)), '(');
  bool ok = args != NULL && call_param(args, "transactionId", raw, sizeof(raw));
  if (ok && raw[0] == '@') { /* a parameter alias: its literal is in the query */
    ok = query_get(r->http->query, raw, alias, sizeof(alias)) == 1;
    snprintf(raw, sizeof(raw), "%s", ok ? alias : "");
  }
  if (!ok || !sim__unquote(raw, strlen(raw), txn, sizeof(txn))) {
    sim__bad(r, SIM_E_REQUIRED, "A value is required for transactionId (an OData string literal).");
    return;
  }
  struct sim_csus *c = r->arg;
  const struct sim__cart *k = sim__cart_find(u, txn);
  if (k == NULL) {
    sim__fail(r, 404, SIM_E_NOT_FOUND, "No sales order was found for the transaction id.",
              SIM_X_VALIDATION);
    return;
  }
  sim__write_order(c, u, k, &c->jw);
  sim__reply_jw(r, 200, NULL, &c->jw);
}

/* ---------------------------------------------------------------------------------------------- */
/* Dispatch */
/* ---------------------------------------------------------------------------------------------- */

struct route {
  const char *method;
  const char *path; /* matched ignoring case; a trailing '(' matches a call "Name(...)" */
  const char *endpoint;
  sim_handler handler;
};

static const struct route ROUTES[] = {
    {"POST", "CommerceEventsController/Search", "search", on_search},
    {"GET", "CommerceEventsController/GetAllCommerceEvents", "getall", on_getall},
    {"GET", "CommerceEventsController/GetAllCommerceEvents()", "getall", on_getall},
    {"POST", "GetLastSyncDatetimeUTC", "lastsync", on_lastsync},
    {"POST", "SetLastSyncDatetime", "lastsync", on_lastsync},
    {"GET", "GetOperatingUnitNumber(", "oun", on_oun},
    {"GET", "SalesOrders/GetSalesOrderDetailsByTransactionId(", "order", on_order},
    {"POST", "Customers/SearchByFields", "customer_search", sim__on_customer_search},
    {"POST", "Customers", "customer_create", sim__on_customer_create},
    {"GET", "Customers(", "customer_get", sim__on_customer_get},
    {"PATCH", "Customers(", "customer_update", sim__on_customer_update},
};

static const struct route *match(const char *method, const char *rest) {
  size_t rn = strlen(rest);
  for (size_t i = 0; i < sizeof(ROUTES) / sizeof(ROUTES[0]); i++) {
    const struct route *rt = &ROUTES[i];
    size_t n = strlen(rt->path);
    bool call = rt->path[n - 1] == '(';
    if (strcmp(method, rt->method) != 0 || strncasecmp(rest, rt->path, n) != 0)
      continue;
    if (call ? rest[rn - 1] == ')' : rn == n)
      return rt;
  }
  return NULL;
}

static void on_request(struct rx_http_request *req, void *arg) {
  struct sim *sim = arg;
  struct sim_csus *c = sim->csus;
  char rest[SIM_MAX_PATH_BYTES];
  unsigned csu;
  const struct route *rt = NULL;
  if (c != NULL && parse_path(req->path, &csu, rest, sizeof(rest)) == 0 && csu < c->n)
    rt = match(req->method, rest);
  if (rt == NULL)
    not_found(req);
  else
    sim_serve(sim, req, rt->endpoint, (int)csu, rt->handler, c);
}

/* One prefix per first digit: a bare "/csu*" would also take the token route's tenants (e.g.
 * /csusim.onmicrosoft.com/oauth2/v2.0/token), which come last. */
int sim_csus_routes(struct sim *sim) {
  static const char *const prefixes[] = {"/csu0*", "/csu1*", "/csu2*", "/csu3*", "/csu4*",
                                         "/csu5*", "/csu6*", "/csu7*", "/csu8*", "/csu9*"};
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
    rc = rx_http_server_route(&sim->server, NULL, prefixes[i], on_request, sim);
  return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* Create, destroy */
/* ---------------------------------------------------------------------------------------------- */

int sim_csus_create(struct sim *sim, struct sim_csus **out) {
  struct sim_csus *c = calloc(1, sizeof(*c));
  unsigned n = sim->opts.csus ? sim->opts.csus : 1;
  if (c == NULL || (c->csu = calloc(n, sizeof(*c->csu))) == NULL || csr_jw_init(&c->jw) < 0) {
    free(c ? c->csu : NULL);
    free(c);
    return -ENOMEM;
  }
  c->sim = sim;
  c->n = n;
  c->seed = sim->opts.seed;
  for (unsigned i = 0; i < n; i++) {
    struct sim__csu *u = &c->csu[i];
    u->index = i;
    snprintf(u->oun, sizeof(u->oun), "%u", SIM_FIRST_OUN + i);
    for (int j = 0; j < SIM_CHANNELS_PER_CSU; j++)
      u->channels[j] = SIM_FIRST_CHANNEL_ID + 1000LL * i + j;
    u->rng = sim__mix(c->seed, 0x6e0000 + i) | 1;
    u->tie_rng = sim__mix(c->seed, 0x7e0000 + i) | 1;
    if (sim__events_init(u) < 0 || sim__customers_init(c, u) < 0) {
      sim_csus_destroy(c);
      return -ENOMEM;
    }
  }
  *out = c;
  return 0;
}

void sim_csus_destroy(struct sim_csus *c) {
  if (c == NULL)
    return;
  sim_csus_stop(c);
  sim__events_free(c);
  for (unsigned i = 0; i < c->n; i++) {
    sim__customers_free(&c->csu[i]);
    for (size_t j = 0; j < c->csu[i].nsync; j++)
      free(c->csu[i].sync[j].vals);
    free(c->csu[i].sync);
  }
  sim__cache_free(c);
  csr_jw_free(&c->jw);
  free(c->csu);
  free(c);
}
