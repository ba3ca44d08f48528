/* The cij sink's contacts (SPEC section 4 cij, steps 2 and 3): a bounded cache of contact ids by
 * email, and single-flight lookups and creates, so concurrent events for one new email create one
 * contact (commerce-event-sample.md W-L2).
 *
 * The cache maps an email in lower case (Dataverse compares strings without case) to the contact
 * id; it holds at most CIJ_CACHE_MAX entries and drops the least recently used. Entries do not
 * expire: a contact that disappears from Dataverse shows as a trigger 4xx, and cij.c drops it then.
 *
 * A flight is the lookup, then the create if the lookup found nothing, for one email; every
 * delivery for that email that arrives meanwhile waits on it (an intrusive list of waiters). The
 * flight copies what it needs from the event that started it (the email, the names, the account
 * number, the event id for the log), so it goes on when that delivery is cancelled, and what it
 * finds goes into the cache for the retry. A failed call fails every waiter with its
 * classification, the reason prefixed by the call ("contact_lookup: http_503"). A 401 refreshes the
 * token and repeats that call once.
 *
 * The lookup is an exact OData filter, never a relevance search: `emailaddress1 eq '<email>'`, the
 * quotes inside doubled, the whole filter percent-encoded (every byte but the RFC 3986 unreserved
 * ones, so '+' goes as %2B), $top=1. The create asks for return=representation with
 * $select=contactid and takes the id from a 201 body, or from OData-EntityId on a 204.
 *
 * Names on a created contact: firstname and lastname from CustomerDetails; when the customer has
 * none (guests), from the order's Name, split at the first space (one word is a lastname).
 * Empty values are left out rather than sent as "".
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cij_internal.h"
#include "csurelay/log.h"
#include "hash.h"

#define CACHE_MIN_BUCKETS 1024

/* ---------------------------------------------------------------------------------------------- */
/* The cache: chained hashing plus an LRU list */
/* ---------------------------------------------------------------------------------------------- */

struct centry {
  struct centry *hnext;       /* the bucket's chain */
  struct centry *prev, *next; /* LRU order: head is the most recent */
  uint64_t hash;
  char id[CIJ_ID_MAX];
  char key[];
};

struct sk__cij_cache {
  struct centry **buckets;
  size_t nbuckets; /* a power of two */
  size_t count, max;
  struct centry *head, *tail;
};

static uint64_t hash_key(const char *s) {
  return csr_strhash(CSR_FNV1A_BASIS, s);
}

int sk__cij_cache_create(size_t max, struct sk__cij_cache **out) {
  struct sk__cij_cache *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return -ENOMEM;
  c->nbuckets = CACHE_MIN_BUCKETS;
  c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
  if (c->buckets == NULL) {
    free(c);
    return -ENOMEM;
  }
  c->max = max ? max : 1;
  *out = c;
  return 0;
}

void sk__cij_cache_destroy(struct sk__cij_cache *c) {
  if (c == NULL)
    return;
  for (struct centry *e = c->head, *next; e; e = next) {
    next = e->next;
    free(e);
  }
  free(c->buckets);
  free(c);
}

size_t sk__cij_cache_size(const struct sk__cij_cache *c) {
  return c->count;
}

static struct centry **slot_of(struct sk__cij_cache *c, const char *key, uint64_t h) {
  struct centry **p = &c->buckets[h & (c->nbuckets - 1)];
  while (*p && ((*p)->hash != h || strcmp((*p)->key, key) != 0))
    p = &(*p)->hnext;
  return p;
}

static void lru_unlink(struct sk__cij_cache *c, struct centry *e) {
  if (e->prev)
    e->prev->next = e->next;
  else
    c->head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    c->tail = e->prev;
  e->prev = e->next = NULL;
}

static void lru_push(struct sk__cij_cache *c, struct centry *e) {
  e->prev = NULL;
  e->next = c->head;
  if (c->head)
    c->head->prev = e;
  c->head = e;
  if (c->tail == NULL)
    c->tail = e;
}

static void remove_entry(struct sk__cij_cache *c, struct centry *e) {
  struct centry **p = slot_of(c, e->key, e->hash);
  *p = e->hnext;
  lru_unlink(c, e);
  c->count--;
  free(e);
}

/* Doubles the buckets while there are more entries than buckets (a failed grow keeps the old). */
static void maybe_grow(struct sk__cij_cache *c) {
  if (c->count < c->nbuckets)
    return;
  size_t n = c->nbuckets * 2;
  struct centry **b = calloc(n, sizeof(*b));
  if (b == NULL)
    return;
  for (struct centry *e = c->head; e; e = e->next) {
    e->hnext = b[e->hash & (n - 1)];
    b[e->hash & (n - 1)] = e;
  }
  free(c->buckets);
  c->buckets = b;
  c->nbuckets = n;
}

const char *sk__cij_cache_get(struct sk__cij_cache *c, const char *key, int touch) {
  struct centry *e = *slot_of(c, key, hash_key(key));
  if (e == NULL)
    return NULL;
  if (touch) {
    lru_unlink(c, e);
    lru_push(c, e);
  }
  return e->id;
}

/* Stores or replaces; a failed allocation only means the next delivery looks the contact up. */
static void cache_put(struct sk__cij_cache *c, const char *key, const char *id) {
  uint64_t h = hash_key(key);
  struct centry *e = *slot_of(c, key, h);
  if (e != NULL) {
    snprintf(e->id, sizeof(e->id), "%s", id);
    lru_unlink(c, e);
    lru_push(c, e);
    return;
  }
  if (c->count >= c->max)
    remove_entry(c, c->tail);
  size_t klen = strlen(key);
  e = calloc(1, sizeof(*e) + klen + 1);
  if (e == NULL)
    return;
  memcpy(e->key, key, klen + 1);
  snprintf(e->id, sizeof(e->id), "%s", id);
  e->hash = h;
  struct centry **p = slot_of(c, key, h);
  *p = e;
  lru_push(c, e);
  c->count++;
  maybe_grow(c);
}

void sk__cij_cache_drop(struct sk__cij_cache *c, const char *key) {
  struct centry *e = *slot_of(c, key, hash_key(key));
  if (e != NULL)
    remove_entry(c, e);
}

/* ---------------------------------------------------------------------------------------------- */
/* Flights */
/* ---------------------------------------------------------------------------------------------- */

enum call { CALL_LOOKUP, CALL_CREATE };

struct cij_flight {
  struct cij_sink *s;
  struct cij_flight *prev, *next; /* the sink's flights */
  struct cij_req *waiters;
  struct pl_token_req tok;
  struct rx_http_req req;
  struct sk_delivery res; /* how the flight failed, for every waiter */
  enum call call;
  int waiting_token; /* tok is with the token cache */
  int started;       /* req is with the HTTP client */
  int refreshed;     /* this call's one token refresh after a 401 is spent */
  int cancelled;
  char contact[CIJ_ID_MAX];
  char *token;       /* the token the current call carries */
  char *lookup_url;  /* the filter, percent-encoded */
  char *create_body; /* built at the start, while the event is at hand */
  const char *key;   /* in text */
  const char *email; /* in text, as the delivery chose it */
  const char *event; /* in text: the id of the event that started the flight, for the log */
  char text[];
};

static int is_guid(const char *s, size_t len) {
  static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
  if (s == NULL || len != sizeof(shape) - 1)
    return 0;
  for (size_t i = 0; i < len; i++)
    if (shape[i] == '-' ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
      return 0;
  return 1;
}

static int unreserved(unsigned char c) {
  return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

/* {api}contacts?$select=contactid&$filter=<emailaddress1 eq '<email>', encoded>&$top=1 */
static char *build_lookup_url(const struct cij_sink *s, const char *email) {
  static const char hex[] = "0123456789ABCDEF";
  static const char pre[] = "emailaddress1 eq '";
  size_t n = strlen(email);
  size_t raw_cap = sizeof(pre) + 2 * n + 2;
  char *raw = malloc(raw_cap);
  if (raw == NULL)
    return NULL;
  size_t r = (size_t)snprintf(raw, raw_cap, "%s", pre);
  for (size_t i = 0; i < n; i++) {
    if (email[i] == '\'')
      raw[r++] = '\''; /* a quote inside an OData string literal is doubled */
    raw[r++] = email[i];
  }
  raw[r++] = '\'';
  size_t cap = strlen(s->api) + 64 + 3 * r;
  char *url = malloc(cap);
  if (url != NULL) {
    size_t o = (size_t)snprintf(url, cap, "%scontacts?$select=contactid&$filter=", s->api);
    for (size_t i = 0; i < r; i++) {
      unsigned char c = (unsigned char)raw[i];
      if (unreserved(c)) {
        url[o++] = (char)c;
      } else {
        url[o++] = '%';
        url[o++] = hex[c >> 4];
        url[o++] = hex[c & 15];
      }
    }
    snprintf(url + o, cap - o, "&$top=1");
  }
  free(raw);
  return url;
}

/* Writes `key` with a name of `len` bytes; nothing when it is empty. */
static void kname(struct csr_jw *jw, const char *key, const char *s, size_t len) {
  if (s != NULL && len > 0) {
    csr_jw_key(jw, key);
    csr_jw_strn(jw, s, len);
  }
}

/* The create body (see the file comment for the names); NULL when it cannot be built. */
static char *build_create_body(struct cij_sink *s, const struct sk_event *ev, const char *email) {
  const char *first = csr_json_get_str(ev->customer, "FirstName");
  const char *last = csr_json_get_str(ev->customer, "LastName");
  size_t flen = first ? strlen(first) : 0, llen = last ? strlen(last) : 0;
  if (flen == 0 && llen == 0) {
    const char *name = csr_json_get_str(ev->order, "Name");
    while (name && *name == ' ')
      name++;
    size_t n = name ? strlen(name) : 0;
    while (n > 0 && name[n - 1] == ' ')
      n--;
    const char *sp = n ? memchr(name, ' ', n) : NULL;
    if (sp == NULL) {
      last = name, llen = n;
    } else {
      first = name, flen = (size_t)(sp - name);
      for (last = sp; *last == ' ';)
        last++;
      llen = n - (size_t)(last - name);
    }
  }
  const char *account = csr_json_get_str(ev->customer, "AccountNumber");
  struct csr_jw *jw = &s->jw;
  csr_jw_reset(jw);
  csr_jw_obj(jw);
  kname(jw, "firstname", first, flen);
  kname(jw, "lastname", last, llen);
  csr_jw_kstr(jw, "emailaddress1", email);
  kname(jw, "msdyn_contactnumber", account, account ? strlen(account) : 0);
  csr_jw_obj_end(jw);
  const char *text;
  size_t len;
  if (csr_jw_finish(jw, &text, &len) < 0)
    return NULL;
  char *body = malloc(len + 1);
  if (body != NULL)
    memcpy(body, text, len + 1);
  return body;
}

static void flight_free(struct cij_flight *f) {
  if (f->started)
    rx_http_req_cleanup(&f->req);
  if (f->token) {
    memset(f->token, 0, strlen(f->token));
    free(f->token);
  }
  free(f->lookup_url);
  free(f->create_body);
  free(f);
}

/* Hands the result to every waiter (the contact, or the failure in res), then frees the flight. */
static void flight_done(struct cij_flight *f) {
  struct cij_sink *s = f->s;
  if (f->prev)
    f->prev->next = f->next;
  else
    s->flights = f->next;
  if (f->next)
    f->next->prev = f->prev;
  if (f->contact[0])
    cache_put(s->cache, f->key, f->contact);
  for (struct cij_req *w = f->waiters, *next; w; w = next) {
    next = w->wnext;
    w->wprev = w->wnext = NULL;
    w->flight = NULL;
    if (f->contact[0]) {
      snprintf(w->contact, sizeof(w->contact), "%s", f->contact);
    } else {
      struct sk_delivery *d = w->d;
      d->outcome = f->res.outcome;
      d->status = f->res.status;
      d->retry_after_ms = f->res.retry_after_ms;
      memcpy(d->reason, f->res.reason, sizeof(d->reason));
      memcpy(d->excerpt, f->res.excerpt, sizeof(d->excerpt));
    }
    rx_fut_resolve(&w->step, 0);
  }
  flight_free(f);
  sk__cij_maybe_closed(s);
}

static const char *call_name(const struct cij_flight *f) {
  return f->call == CALL_LOOKUP ? "contact_lookup" : "contact_create";
}

/* The failure already in f->res, its reason prefixed by the call, for every waiter (reasons are
 * short words: the precision only keeps the compiler sure of the fit). */
static void flight_fail(struct cij_flight *f) {
  char reason[sizeof(f->res.reason)];
  snprintf(reason, sizeof(reason), "%s: %.40s", call_name(f), f->res.reason);
  memcpy(f->res.reason, reason, sizeof(reason));
  CSR_LOG(f->res.outcome == SK_DEAD ? CSR_WARN : CSR_DEBUG, "cij contact step failed",
          CSR_KS("event", f->event), CSR_KS("reason", f->res.reason),
          CSR_KI("status", f->res.status), CSR_KEMAIL("email", f->email));
  flight_done(f);
}

/* A 2xx answer that does not say what it should: transient (a retry looks the contact up). */
static void flight_bad_answer(struct cij_flight *f, const char *reason, const char *why) {
  f->res.outcome = SK_RETRY;
  f->res.retry_after_ms = -1;
  snprintf(f->res.reason, sizeof(f->res.reason), "%s", reason);
  snprintf(f->res.excerpt, sizeof(f->res.excerpt), "%s", why);
  flight_fail(f);
}

static void call_start(struct cij_flight *f);

static void on_lookup(struct cij_flight *f) {
  yajl_val root = csr_json_parse(f->req.resp_body, f->req.resp_len, NULL, 0);
  yajl_val value = csr_json_get(root, "value");
  yajl_val id = csr_json_get(csr_json_at(value, 0), "contactid");
  const char *text = csr_json_str(id);
  int found = csr_json_len(value) > 0;
  if (!YAJL_IS_ARRAY(value) || (found && !is_guid(text, text ? strlen(text) : 0))) {
    csr_json_free(root);
    flight_bad_answer(f, "bad_answer", "the contact query answered without a value list of ids");
    return;
  }
  if (found) {
    snprintf(f->contact, sizeof(f->contact), "%s", text);
    csr_json_free(root);
    flight_done(f);
    return;
  }
  csr_json_free(root);
  rx_http_req_cleanup(&f->req);
  f->started = 0;
  f->call = CALL_CREATE;
  f->refreshed = 0;
  call_start(f);
}

/* The id from a 201 body, else from OData-EntityId ".../contacts(<id>)" on a 204. */
static void on_create(struct cij_flight *f) {
  yajl_val root =
      f->req.resp_len ? csr_json_parse(f->req.resp_body, f->req.resp_len, NULL, 0) : NULL;
  const char *id = csr_json_get_str(root, "contactid");
  size_t len = id ? strlen(id) : 0;
  const char *ent = f->req.odata_entity_id;
  const char *open = ent ? strrchr(ent, '(') : NULL;
  if (!is_guid(id, len) && open != NULL && strchr(open, ')') != NULL) {
    id = open + 1;
    len = (size_t)(strchr(open, ')') - id);
  }
  if (!is_guid(id, len)) {
    csr_json_free(root);
    flight_bad_answer(f, "no_id", "the contact was created but the answer names no contactid");
    return;
  }
  snprintf(f->contact, sizeof(f->contact), "%.*s", (int)len, id);
  csr_json_free(root);
  f->s->creates++;
  CSR_LOG(CSR_DEBUG, "cij contact created", CSR_KS("event", f->event),
          CSR_KS("contact", f->contact), CSR_KEMAIL("email", f->email));
  flight_done(f);
}

static void on_call_answer(struct rx_fut *fut) {
  struct cij_flight *f = RX_CONTAINER_OF(fut, struct cij_flight, req.fut);
  struct cij_sink *s = f->s;
  if (fut->result == 0 && f->req.status == 401 && !f->refreshed && !f->cancelled) {
    f->refreshed = 1;
    s->refreshes++;
    pl_tokens_invalidate(s->tokens, f->token);
    CSR_LOG(CSR_INFO, "cij token refused, refreshing", CSR_KS("event", f->event),
            CSR_KS("call", call_name(f)));
    sk__cij_note(s, 0, "");
    rx_http_req_cleanup(&f->req);
    f->started = 0;
    call_start(f);
    return;
  }
  sk_classify_http(&f->req, &f->res);
  sk__cij_note(s, fut->result, f->res.reason);
  if (f->res.outcome != SK_DELIVERED)
    flight_fail(f);
  else if (f->call == CALL_LOOKUP)
    on_lookup(f);
  else
    on_create(f);
}

static int call_send(struct cij_flight *f) {
  struct cij_sink *s = f->s;
  int create = f->call == CALL_CREATE;
  rx_http_req_init(&f->req);
  f->req.data = f;
  f->req.method = create ? "POST" : "GET";
  f->req.url = create ? s->create_url : f->lookup_url;
  f->req.timeout_ms = sk__cij_timeout(s);
  if (create) {
    f->req.body = f->create_body;
    f->req.body_len = strlen(f->create_body);
  }
  int rc = sk__cij_headers(&f->req, f->token, create);
  if (rc == 0 && create)
    rc = rx_http_req_header(&f->req, "Prefer: return=representation");
  if (rc == 0)
    rc = rx_http_start(s->base.env->http, &f->req, on_call_answer);
  if (rc < 0) {
    rx_http_req_cleanup(&f->req);
    return rc;
  }
  f->started = 1;
  if (!create)
    s->lookups++;
  return 0;
}

static void on_call_token(struct rx_fut *fut) {
  struct cij_flight *f = RX_CONTAINER_OF(fut, struct cij_flight, tok.fut);
  f->waiting_token = 0;
  int rc = f->cancelled ? UV_ECANCELED : fut->result;
  if (rc < 0) {
    sk__cij_token_failed(f->s, &f->res, rc);
    flight_fail(f);
    return;
  }
  if (f->token) {
    memset(f->token, 0, strlen(f->token));
    free(f->token);
  }
  f->token = strdup(f->tok.token);
  rc = f->token ? call_send(f) : -ENOMEM;
  if (rc < 0) {
    /* -EINVAL: a token that would split its header line; else the client refused the call */
    f->res.outcome = SK_RETRY;
    f->res.status = 0;
    f->res.retry_after_ms = -1;
    snprintf(f->res.reason, sizeof(f->res.reason), "%s", rc == -EINVAL ? "token" : "transport");
    snprintf(f->res.excerpt, sizeof(f->res.excerpt), "%s", csr_strerror(rc));
    flight_fail(f);
  }
}

/* Gets a token for the current call (a cached one still comes back from the loop). */
static void call_start(struct cij_flight *f) {
  int rc = f->cancelled ? UV_ECANCELED : pl_tokens_get(f->s->tokens, &f->tok, on_call_token);
  if (rc == 0) {
    f->waiting_token = 1;
    return;
  }
  sk__cij_token_failed(f->s, &f->res, rc);
  flight_fail(f);
}

static struct cij_flight *flight_find(struct cij_sink *s, const char *key) {
  for (struct cij_flight *f = s->flights; f; f = f->next)
    if (strcmp(f->key, key) == 0)
      return f;
  return NULL;
}

static struct cij_flight *flight_create(struct cij_sink *s, struct cij_req *r) {
  const char *event = r->d->event->id ? r->d->event->id : "";
  size_t klen = strlen(r->key), elen = strlen(r->email), idlen = strlen(event);
  struct cij_flight *f = calloc(1, sizeof(*f) + klen + elen + idlen + 3);
  if (f == NULL)
    return NULL;
  char *p = f->text;
  f->key = memcpy(p, r->key, klen + 1);
  f->email = memcpy(p += klen + 1, r->email, elen + 1);
  f->event = memcpy(p + elen + 1, event, idlen + 1);
  f->s = s;
  f->lookup_url = build_lookup_url(s, f->email);
  f->create_body = build_create_body(s, &r->ev, f->email);
  if (f->lookup_url == NULL || f->create_body == NULL) {
    flight_free(f);
    return NULL;
  }
  f->res.retry_after_ms = -1;
  f->call = CALL_LOOKUP;
  f->next = s->flights;
  if (s->flights)
    s->flights->prev = f;
  s->flights = f;
  return f;
}

int sk__cij_contact_wait(struct cij_sink *s, struct cij_req *r) {
  struct cij_flight *f = flight_find(s, r->key);
  int fresh = f == NULL;
  if (fresh && (f = flight_create(s, r)) == NULL)
    return -ENOMEM;
  r->flight = f;
  r->wprev = NULL;
  r->wnext = f->waiters;
  if (f->waiters)
    f->waiters->wprev = r;
  f->waiters = r;
  if (fresh)
    call_start(f); /* never completes from here: a failure to start resolves the waiters' futures */
  return 0;
}

void sk__cij_contact_leave(struct cij_req *r) {
  struct cij_flight *f = r->flight;
  if (f == NULL)
    return;
  if (r->wprev)
    r->wprev->wnext = r->wnext;
  else
    f->waiters = r->wnext;
  if (r->wnext)
    r->wnext->wprev = r->wprev;
  r->wprev = r->wnext = NULL;
  r->flight = NULL;
}

void sk__cij_flights_cancel(struct cij_sink *s) {
  for (struct cij_flight *f = s->flights; f; f = f->next) {
    if (f->cancelled)
      continue;
    f->cancelled = 1;
    if (f->waiting_token)
      pl_tokens_cancel(&f->tok);
    else if (f->started)
      rx_http_cancel(&f->req);
  }
}
