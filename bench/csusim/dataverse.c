/* Dataverse for csusim: contacts (lookup by email, create, get by id) and the service protection
 * limits, all under /dataverse/api/data/v9.2/ (dynamics-api.md sections 3 and 4); the
 * custom-trigger actions are in triggers.c, behind the same admission.
 *
 * In flight means arrived and not yet answered, wherever the request waits. Our handlers answer
 * at once, so a Dataverse request can only be waiting in the gate (a latency delay or a held
 * timeout), and route.c keeps every such request on sim->_held with the argument we gave it.
 * Counting ours there at arrival is exact, and costs nothing when the gate holds nothing; a counter
 * could not be, because a request the gate answers for never comes back to us. The concurrency
 * verdict is taken at arrival, as Dataverse does, and delivered after the token check.
 *
 * Choices where the references are silent (UNCONFIRMED there):
 *   - Payload errors (malformed JSON, wrong types, unknown or repeated parameters) are 400
 *     0x80048d19, the OData deserialisation code; a missing or null required parameter and too many
 *     attributes are 400 0x80040203 (InvalidArgument); an unknown contact id is 400 0x80040217
 *     ("contact With Id = ... Does Not Exist"); unknown segments 404 0x80060888; a body that is
 *     not application/json 415 0x80048d19; query options we do not model 400 0x80060888.
 *   - Requests over the window limit do not count against it; each one refused since the last
 *     admitted request adds a second to Retry-After ("grows if the client keeps pushing").
 *   - Contact creates accept any column; the string columns we know are type-checked and stored.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dataverse_internal.h"
#include "text.h"

/* The string columns of a contact we store and return (fullname is computed, as Dataverse does). */
static const char *const columns[] = {
    "firstname",     "lastname",    "middlename", "fullname", "emailaddress1",      "emailaddress2",
    "emailaddress3", "mobilephone", "telephone1", "jobtitle", "msdyn_contactnumber"};
#define NCOLS     (sizeof(columns) / sizeof(columns[0]))
#define COL_FIRST 0
#define COL_LAST  1
#define COL_FULL  3
#define COL_EMAIL 4

struct sim__dv_contact {
  char id[DV_GUID_LEN + 1]; /* lower case */
  char *email_key;          /* emailaddress1 in lower case, NULL when none */
  char *cols[NCOLS];        /* NULL = not set */
  uint64_t etag;
  size_t next_email; /* index + 1 of the next contact with the same email_key; 0 = none */
};

/* ---------------------------------------------------------------------------------------------- */
/* Small helpers */
/* ---------------------------------------------------------------------------------------------- */

static uint64_t hash_str(const char *s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
  return h;
}

static char *lower_dup(const char *s) {
  char *o = strdup(s);
  for (char *p = o; p && *p; p++)
    *p = (char)tolower((unsigned char)*p);
  return o;
}

bool sim__dv_is_guid(const char *s) {
  static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
  for (size_t i = 0; i < DV_GUID_LEN; i++)
    if (shape[i] == '-' ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
      return false;
  return s[DV_GUID_LEN] == '\0';
}

void sim__dv_fail(struct sim_req *r, int status, const char *code, const char *fmt, const char *a,
                  const char *b) {
  char msg[640];
  snprintf(msg, sizeof(msg), fmt, a, b ? b : "");
  sim_reply_dataverse_error(r, status, code, msg, NULL);
}

static void unexpected(struct sim_req *r) {
  sim_reply_dataverse_error(r, 500, "0x80040216", "An unexpected error occurred.", NULL);
}

static void reply_json(struct sim_req *r, int status, const char *headers, struct csr_jw *jw) {
  const char *text;
  size_t len;
  if (csr_jw_finish(jw, &text, &len) < 0)
    unexpected(r);
  else
    sim_reply(r, status, headers, "application/json; odata.metadata=minimal", text, len);
}

/* ---------------------------------------------------------------------------------------------- */
/* The contact store */
/* ---------------------------------------------------------------------------------------------- */

static const char *id_key(const struct sim__dv_contact *c) {
  return c->id;
}

static const char *email_key(const struct sim__dv_contact *c) {
  return c->email_key;
}

/* The slot holding `key`, or the empty slot where it would go. */
static size_t *index_find(const struct sim_dataverse *d, const struct sim__dv_index *ix,
                          const char *(*key)(const struct sim__dv_contact *), const char *want) {
  size_t mask = ix->cap - 1;
  for (size_t i = hash_str(want) & mask;; i = (i + 1) & mask) {
    size_t *slot = &ix->slots[i];
    if (*slot == 0 || strcmp(key(&d->contacts[*slot - 1]), want) == 0)
      return slot;
  }
}

static int index_grow(struct sim_dataverse *d, struct sim__dv_index *ix,
                      const char *(*key)(const struct sim__dv_contact *)) {
  if (ix->cap != 0 && (ix->used + 1) * 4 < ix->cap * 3)
    return 0;
  struct sim__dv_index old = *ix;
  ix->cap = old.cap ? old.cap * 2 : 256;
  ix->slots = calloc(ix->cap, sizeof(*ix->slots));
  if (ix->slots == NULL) {
    *ix = old;
    return -ENOMEM;
  }
  for (size_t i = 0; i < old.cap; i++)
    if (old.slots[i] != 0)
      *index_find(d, ix, key, key(&d->contacts[old.slots[i] - 1])) = old.slots[i];
  free(old.slots);
  return 0;
}

static struct sim__dv_contact *contact_by_id(const struct sim_dataverse *d, const char *id) {
  if (d->by_id.cap == 0 || !sim__dv_is_guid(id))
    return NULL;
  char key[DV_GUID_LEN + 1];
  for (size_t i = 0; i <= DV_GUID_LEN; i++)
    key[i] = (char)tolower((unsigned char)id[i]);
  size_t slot = *index_find(d, &d->by_id, id_key, key);
  return slot ? &d->contacts[slot - 1] : NULL;
}

bool sim__dv_has_contact(const struct sim_dataverse *d, const char *id) {
  return contact_by_id(d, id) != NULL;
}

/* The first contact created with this email (any case), or NULL; follow next_email for more. */
static const struct sim__dv_contact *contact_by_email(const struct sim_dataverse *d,
                                                      const char *email) {
  char *key = lower_dup(email);
  size_t slot = key && d->by_email.cap ? *index_find(d, &d->by_email, email_key, key) : 0;
  free(key);
  return slot ? &d->contacts[slot - 1] : NULL;
}

static void new_guid(struct sim_dataverse *d, char out[DV_GUID_LEN + 1]) {
  do {
    uint64_t a = rx_rand64(&d->rng), b = rx_rand64(&d->rng);
    snprintf(out, DV_GUID_LEN + 1, "%08x-%04x-4%03x-%04x-%012llx", (unsigned)(a >> 32),
             (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xfff,
             (unsigned)(0x8000 | ((b >> 48) & 0x3fff)),
             (unsigned long long)(b & 0xffffffffffffULL));
  } while (contact_by_id(d, out) != NULL);
}

/* Links contact `i` into both indexes (the arrays have room: grown by the caller). */
static void contact_link(struct sim_dataverse *d, size_t i) {
  struct sim__dv_contact *c = &d->contacts[i];
  *index_find(d, &d->by_id, id_key, c->id) = i + 1;
  d->by_id.used++;
  if (c->email_key == NULL)
    return;
  size_t *slot = index_find(d, &d->by_email, email_key, c->email_key);
  if (*slot == 0) {
    *slot = i + 1;
    d->by_email.used++;
    return;
  }
  /* Dataverse allows duplicates; keep them in creation order behind the first. */
  struct sim__dv_contact *p = &d->contacts[*slot - 1];
  while (p->next_email != 0)
    p = &d->contacts[p->next_email - 1];
  p->next_email = i + 1;
}

static void contact_free(struct sim__dv_contact *c) {
  free(c->email_key);
  for (size_t k = 0; k < NCOLS; k++)
    free(c->cols[k]);
}

/* Stores a new contact from a validated create body; `id` may be NULL (then one is drawn). */
static struct sim__dv_contact *contact_add(struct sim_dataverse *d, yajl_val body, const char *id) {
  if (d->ncontacts == d->cap) {
    size_t cap = d->cap ? d->cap * 2 : 256;
    struct sim__dv_contact *n = realloc(d->contacts, cap * sizeof(*n));
    if (n == NULL)
      return NULL;
    d->contacts = n, d->cap = cap;
  }
  if (index_grow(d, &d->by_id, id_key) < 0 || index_grow(d, &d->by_email, email_key) < 0)
    return NULL;
  struct sim__dv_contact *c = memset(&d->contacts[d->ncontacts], 0, sizeof(*c));
  bool oom = false;
  for (size_t k = 0; k < NCOLS; k++) {
    const char *v = csr_json_get_str(body, columns[k]);
    oom |= v != NULL && (c->cols[k] = strdup(v)) == NULL;
  }
  if (c->cols[COL_FULL] == NULL && (c->cols[COL_FIRST] || c->cols[COL_LAST])) {
    size_t n = strlen(c->cols[COL_FIRST] ? c->cols[COL_FIRST] : "") + 2 +
               strlen(c->cols[COL_LAST] ? c->cols[COL_LAST] : "");
    oom |= (c->cols[COL_FULL] = malloc(n)) == NULL;
    if (c->cols[COL_FULL])
      snprintf(c->cols[COL_FULL], n, "%s%s%s", c->cols[COL_FIRST] ? c->cols[COL_FIRST] : "",
               c->cols[COL_FIRST] && c->cols[COL_LAST] ? " " : "",
               c->cols[COL_LAST] ? c->cols[COL_LAST] : "");
  }
  if (c->cols[COL_EMAIL] != NULL)
    oom |= (c->email_key = lower_dup(c->cols[COL_EMAIL])) == NULL;
  if (oom) {
    contact_free(c);
    return NULL;
  }
  if (id != NULL)
    for (size_t i = 0; i <= DV_GUID_LEN; i++)
      c->id[i] = (char)tolower((unsigned char)id[i]);
  else
    new_guid(d, c->id);
  c->etag = d->next_etag++;
  contact_link(d, d->ncontacts++);
  return c;
}

/* ---------------------------------------------------------------------------------------------- */
/* Service protection limits */
/* ---------------------------------------------------------------------------------------------- */

/* Ours among the requests the gate is delaying or holding: see the file comment. */
static unsigned inflight(const struct sim_dataverse *d) {
  unsigned n = 0;
  for (const struct sim_req *r = d->sim->_held; r != NULL; r = r->_next)
    n += r->arg == &d->admitted;
  return n;
}

/* Drops admissions older than the window; returns how many remain. */
static size_t window_count(struct sim_dataverse *d, uint64_t now, uint64_t window_ms) {
  while (d->tcount > 0 && d->times[d->thead] + window_ms <= now) {
    d->thead = (d->thead + 1) % d->tcap;
    d->tcount--;
  }
  return d->tcount;
}

static int window_push(struct sim_dataverse *d, uint64_t now) {
  if (d->tcount == d->tcap) {
    size_t cap = d->tcap ? d->tcap * 2 : 64;
    uint64_t *t = malloc(cap * sizeof(*t));
    if (t == NULL)
      return -ENOMEM;
    for (size_t i = 0; i < d->tcount; i++)
      t[i] = d->times[(d->thead + i) % d->tcap];
    free(d->times);
    d->times = t, d->tcap = cap, d->thead = 0;
  }
  d->times[(d->thead + d->tcount++) % d->tcap] = now;
  return 0;
}

/* Counts the request in the window, or answers 429 and returns -1. */
static int rate_check(struct sim_dataverse *d, struct sim_req *r) {
  const struct sim_dv_limits *lim = sim_faults_dv(d->sim->faults);
  uint64_t now = rx_now_ms(d->sim->loop), window_ms = lim->window_s * 1000;
  if (window_count(d, now, window_ms) < lim->max_requests && window_push(d, now) == 0) {
    d->strikes = 0;
    return 0;
  }
  /* Until the oldest admission leaves the window, in whole seconds, plus one per early retry. */
  uint64_t free_at = d->tcount ? d->times[d->thead] + window_ms : now + window_ms;
  uint64_t wait_s = (free_at - now + 999) / 1000 + d->strikes++;
  char hdr[48], msg[160];
  snprintf(hdr, sizeof(hdr), "Retry-After: %llu\r\n", (unsigned long long)(wait_s ? wait_s : 1));
  snprintf(msg, sizeof(msg),
           "Number of requests exceeded the limit of %u over time window of %llu seconds.",
           lim->max_requests, (unsigned long long)lim->window_s);
  d->stats.throttled_requests++;
  sim_reply_dataverse_error(r, 429, "0x80072322", msg, hdr);
  return -1;
}

struct sim_dataverse *sim__dv_admit(struct sim_req *r, const char **seg) {
  const struct sim__dv_tag *t = r->arg;
  struct sim_dataverse *d = t->d;
  *seg = r->http->path + strlen(DV_PREFIX);
  if (sim_entra_check(r, SIM_AUD_DATAVERSE) < 0)
    return NULL;
  if (t->over) {
    char msg[96];
    snprintf(msg, sizeof(msg), "Number of concurrent requests exceeded the limit of %u.",
             sim_faults_dv(d->sim->faults)->max_concurrent);
    d->stats.throttled_concurrency++;
    sim_reply_dataverse_error(r, 429, "0x80072326", msg, "Retry-After: 1\r\n");
    return NULL;
  }
  return rate_check(d, r) == 0 ? d : NULL;
}

/* Dataverse wants application/json (any parameters) on a body; 415 otherwise. */
bool sim__dv_json_body(struct sim_req *r) {
  const char *ct = rx_http_header(r->http, "Content-Type");
  if (ct != NULL && strncasecmp(ct, "application/json", 16) == 0 &&
      (ct[16] == '\0' || ct[16] == ';' || ct[16] == ' '))
    return true;
  sim__dv_fail(r, 415, DV_E_PAYLOAD,
               "The content type '%s' is not supported; send application/json.", ct ? ct : "",
               NULL);
  return false;
}

yajl_val sim__dv_parse_body(struct sim_req *r, const char *entity) {
  char err[160] = "";
  yajl_val v = csr_json_parse(r->http->body, r->http->body_len, err, sizeof(err));
  if (v != NULL && YAJL_IS_OBJECT(v))
    return v;
  csr_json_free(v);
  sim__dv_fail(
      r, 400, DV_E_PAYLOAD,
      "Error identified in Payload provided by the user for Entity :'%s' ----> InnerException "
      ": Microsoft.OData.ODataException: %s",
      entity, err[0] ? err : "The payload is not a JSON object.");
  return NULL;
}

/* ---------------------------------------------------------------------------------------------- */
/* Queries: $select, $filter, $top */
/* ---------------------------------------------------------------------------------------------- */

struct query {
  char *buf; /* the decoded query text; the pointers below point into it */
  char *select, *filter, *top;
  int cols[NCOLS + 1]; /* $select as column indexes, -1 for contactid */
  size_t ncols;        /* 0 = no $select: every column */
  long top_n;          /* -1 = no $top */
};

/* Splits and decodes the raw query ('+' is a space, so an email's '+' must come as %2B); answers
 * 400 (and returns -1) on an option we do not model. */
static int query_split(struct sim_req *r, struct query *q) {
  memset(q, 0, sizeof(*q));
  q->top_n = -1;
  if ((q->buf = strdup(r->http->query)) == NULL) {
    unexpected(r);
    return -1;
  }
  char *save = NULL;
  for (char *kv = strtok_r(q->buf, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
    char *value = sim_url_pair(kv);
    char **slot = strcmp(kv, "$select") == 0   ? &q->select
                  : strcmp(kv, "$filter") == 0 ? &q->filter
                  : strcmp(kv, "$top") == 0    ? &q->top
                                               : NULL;
    if (slot != NULL) {
      *slot = value;
    } else if (kv[0] == '$') {
      sim__dv_fail(r, 400, DV_E_SEGMENT, "The query parameter '%s' is not supported by csusim.", kv,
                   NULL);
      free(q->buf);
      q->buf = NULL;
      return -1;
    }
  }
  return 0;
}

static int column_index(const char *name, size_t len) {
  if (len == 9 && strncmp(name, "contactid", 9) == 0)
    return -1;
  for (size_t k = 0; k < NCOLS; k++)
    if (strlen(columns[k]) == len && strncmp(columns[k], name, len) == 0)
      return (int)k;
  return -2;
}

static int parse_select(struct sim_req *r, struct query *q) {
  for (const char *s = q->select; s != NULL && *s;) {
    while (*s == ' ')
      s++;
    size_t len = strcspn(s, ", ");
    int k = column_index(s, len);
    if (k < -1 || q->ncols == NCOLS + 1) {
      char name[96];
      snprintf(name, sizeof(name), "%.*s", (int)len, s);
      sim__dv_fail(r, 400, DV_E_SEGMENT,
                   "Could not find a property named '%s' on type 'Microsoft.Dynamics.CRM.contact'.",
                   name, NULL);
      return -1;
    }
    q->cols[q->ncols++] = k;
    s += len;
    while (*s == ' ' || *s == ',')
      s++;
  }
  return 0;
}

/* `emailaddress1 eq '<literal>'` with '' for a quote inside; the literal is unescaped in place.
 * Returns the literal, or NULL when the filter has any other form. */
static char *parse_filter(char *f) {
  while (*f == ' ')
    f++;
  if (strncmp(f, "emailaddress1", 13) != 0 || f[13] != ' ')
    return NULL;
  f += 13;
  while (*f == ' ')
    f++;
  if (strncmp(f, "eq", 2) != 0 || f[2] != ' ')
    return NULL;
  for (f += 2; *f == ' ';)
    f++;
  if (*f++ != '\'')
    return NULL;
  char *lit = f, *o = f;
  for (;; f++) {
    if (*f == '\0')
      return NULL;
    if (*f == '\'' && f[1] == '\'')
      *o++ = *f++;
    else if (*f == '\'')
      break;
    else
      *o++ = *f;
  }
  for (f++; *f == ' ';)
    f++;
  *o = '\0';
  return *f == '\0' ? lit : NULL;
}

static int parse_top(struct sim_req *r, struct query *q) {
  char *end = NULL;
  if (q->top == NULL)
    return 0;
  q->top_n = strtol(q->top, &end, 10);
  if (q->top[0] >= '0' && q->top[0] <= '9' && *end == '\0' && q->top_n >= 0)
    return 0;
  sim__dv_fail(r, 400, DV_E_SEGMENT,
               "Invalid value '%s' for $top query option found. The $top query option requires a "
               "non-negative integer value.",
               q->top, NULL);
  return -1;
}

/* "<base>/dataverse/api/data/v9.2/$metadata#contacts(<select>)<suffix>" */
static void write_context(struct csr_jw *jw, const struct sim_dataverse *d, const struct query *q,
                          const char *suffix) {
  char ctx[512];
  size_t n =
      (size_t)snprintf(ctx, sizeof(ctx), "%s%s$metadata#contacts", d->sim->base_url, DV_PREFIX);
  for (size_t i = 0; i < q->ncols && n < sizeof(ctx); i++)
    n += (size_t)snprintf(ctx + n, sizeof(ctx) - n, "%s%s", i ? "," : "(",
                          q->cols[i] < 0 ? "contactid" : columns[q->cols[i]]);
  if (q->ncols > 0 && n < sizeof(ctx))
    n += (size_t)snprintf(ctx + n, sizeof(ctx) - n, ")");
  if (n < sizeof(ctx))
    snprintf(ctx + n, sizeof(ctx) - n, "%s", suffix);
  csr_jw_kstr(jw, "@odata.context", ctx);
}

/* One contact's members (inside an object already opened): the etag, then the selected columns. */
static void write_contact(struct csr_jw *jw, const struct sim__dv_contact *c,
                          const struct query *q) {
  char etag[32];
  snprintf(etag, sizeof(etag), "W/\"%llu\"", (unsigned long long)c->etag);
  csr_jw_kstr(jw, "@odata.etag", etag);
  if (q->ncols == 0) {
    csr_jw_kstr(jw, "contactid", c->id);
    for (size_t k = 0; k < NCOLS; k++)
      csr_jw_kstr(jw, columns[k], c->cols[k]);
    return;
  }
  for (size_t i = 0; i < q->ncols; i++)
    if (q->cols[i] < 0)
      csr_jw_kstr(jw, "contactid", c->id);
    else
      csr_jw_kstr(jw, columns[q->cols[i]], c->cols[q->cols[i]]);
}

/* ---------------------------------------------------------------------------------------------- */
/* GET contacts, GET contacts(id), POST contacts */
/* ---------------------------------------------------------------------------------------------- */

static void list_contacts(struct sim_req *r, struct sim_dataverse *d, struct query *q) {
  char *email = q->filter ? parse_filter(q->filter) : NULL;
  if (q->filter == NULL || email == NULL) {
    sim__dv_fail(r, 400, DV_E_SEGMENT,
                 "csusim supports only $filter=emailaddress1 eq '<value>' on contacts, not '%s'.",
                 q->filter ? q->filter : "", NULL);
    return;
  }
  struct csr_jw jw;
  if (csr_jw_init(&jw) < 0) {
    unexpected(r);
    return;
  }
  d->stats.lookups++;
  csr_jw_obj(&jw);
  write_context(&jw, d, q, "");
  csr_jw_key(&jw, "value");
  csr_jw_arr(&jw);
  const struct sim__dv_contact *c = contact_by_email(d, email);
  for (long n = 0; c != NULL && (q->top_n < 0 || n < q->top_n); n++) {
    csr_jw_obj(&jw);
    write_contact(&jw, c, q);
    csr_jw_obj_end(&jw);
    c = c->next_email ? &d->contacts[c->next_email - 1] : NULL;
  }
  csr_jw_arr_end(&jw);
  csr_jw_obj_end(&jw);
  reply_json(r, 200, DV_ODATA_HDRS, &jw);
  csr_jw_free(&jw);
}

static void reply_one(struct sim_req *r, struct sim_dataverse *d, const struct sim__dv_contact *c,
                      const struct query *q, int status, const char *headers) {
  struct csr_jw jw;
  if (csr_jw_init(&jw) < 0) {
    unexpected(r);
    return;
  }
  csr_jw_obj(&jw);
  write_context(&jw, d, q, "/$entity");
  write_contact(&jw, c, q);
  csr_jw_obj_end(&jw);
  reply_json(r, status, headers, &jw);
  csr_jw_free(&jw);
}

/* "contacts(<id>)" -> the id, copied into `id`; NULL when `seg` has another shape. */
static const char *keyed_id(const char *seg, char *id, size_t cap) {
  size_t len = strlen(seg);
  if (strncmp(seg, "contacts(", 9) != 0 || len < 10 || seg[len - 1] != ')' || len - 10 >= cap)
    return NULL;
  memcpy(id, seg + 9, len - 10);
  id[len - 10] = '\0';
  return id;
}

static void on_contacts_get(struct sim_req *r) {
  const char *seg;
  struct sim_dataverse *d = sim__dv_admit(r, &seg);
  if (d == NULL)
    return;
  char id[64];
  struct query q;
  bool keyed = keyed_id(seg, id, sizeof(id)) != NULL;
  if (!keyed && strcmp(seg, "contacts") != 0) {
    sim__dv_fail(r, 404, DV_E_SEGMENT, "Resource not found for the segment '%s'.", seg, NULL);
    return;
  }
  if (query_split(r, &q) < 0)
    return;
  if (parse_select(r, &q) == 0 && parse_top(r, &q) == 0) {
    const struct sim__dv_contact *c = keyed ? contact_by_id(d, id) : NULL;
    if (!keyed)
      list_contacts(r, d, &q);
    else if (c != NULL)
      reply_one(r, d, c, &q, 200, DV_ODATA_HDRS);
    else
      sim__dv_fail(r, 404, DV_E_NOTFOUND, "contact With Id = %s Does Not Exist", id, NULL);
  }
  free(q.buf);
}

/* The columns we know must be strings (or null); a given contactid must be a new GUID. */
static int check_contact_body(struct sim_req *r, struct sim_dataverse *d, yajl_val body) {
  for (size_t i = 0; i < body->u.object.len; i++) {
    const char *k = body->u.object.keys[i];
    yajl_val v = body->u.object.values[i];
    int col = column_index(k, strlen(k));
    if (col == -2 || YAJL_IS_NULL(v) ||
        (YAJL_IS_STRING(v) && (col >= 0 || sim__dv_is_guid(v->u.string))))
      continue;
    sim__dv_fail(
        r, 400, DV_E_PAYLOAD,
        "Error identified in Payload provided by the user for Entity :'contacts' ----> "
        "InnerException : Microsoft.OData.ODataException: Cannot convert the value of property "
        "'%s' to the expected type '%s'.",
        k, col == -1 ? "Edm.Guid" : "Edm.String");
    return -1;
  }
  const char *id = csr_json_get_str(body, "contactid");
  if (id != NULL && contact_by_id(d, id) != NULL) {
    sim__dv_fail(r, 412, "0x80040237", "A record with matching key values already exists.", NULL,
                 NULL);
    return -1;
  }
  return 0;
}

static bool wants_representation(struct sim_req *r) {
  const char *p = rx_http_header(r->http, "Prefer");
  for (; p != NULL && *p; p += strcspn(p, ",")) {
    while (*p == ',' || *p == ' ')
      p++;
    if (strncasecmp(p, "return=representation", 21) == 0)
      return true;
  }
  return false;
}

static void create_contact(struct sim_req *r, struct sim_dataverse *d, yajl_val body,
                           struct query *q) {
  struct sim__dv_contact *c = contact_add(d, body, csr_json_get_str(body, "contactid"));
  if (c == NULL) {
    unexpected(r);
    return;
  }
  d->stats.contacts_created++;
  sim_ledger_contact(d->sim->ledger, c->cols[COL_EMAIL] ? c->cols[COL_EMAIL] : "", c->id);
  char hdr[256];
  if (wants_representation(r)) {
    snprintf(hdr, sizeof(hdr), DV_ODATA_HDRS "Preference-Applied: return=representation\r\n");
    reply_one(r, d, c, q, 201, hdr);
    return;
  }
  snprintf(hdr, sizeof(hdr), DV_ODATA_HDRS "OData-EntityId: %s%scontacts(%s)\r\n", d->sim->base_url,
           DV_PREFIX, c->id);
  sim_reply(r, 204, hdr, NULL, NULL, 0);
}

static void on_contacts_create(struct sim_req *r) {
  const char *seg;
  struct sim_dataverse *d = sim__dv_admit(r, &seg);
  if (d == NULL)
    return;
  yajl_val body = NULL;
  struct query q = {0};
  if (strcmp(seg, "contacts") != 0 || strcmp(r->http->method, "POST") != 0) {
    sim__dv_fail(r, 405, DV_E_SEGMENT, "The requested resource does not support http method '%s'.",
                 r->http->method, NULL);
    return;
  }
  if (sim__dv_json_body(r) && query_split(r, &q) == 0 && parse_select(r, &q) == 0 &&
      (body = sim__dv_parse_body(r, "contacts")) != NULL && check_contact_body(r, d, body) == 0)
    create_contact(r, d, body, &q);
  csr_json_free(body);
  free(q.buf);
}

/* ---------------------------------------------------------------------------------------------- */
/* Routing and lifetime */
/* ---------------------------------------------------------------------------------------------- */

/* Decides the concurrency verdict at arrival, then hands the request to the gate under the
 * contract it belongs to. Unsupported methods and paths still pass the gate (and the token check)
 * and get their 404/405 from the handler, as on a real org. */
static void on_route(struct rx_http_request *req, void *arg) {
  struct sim_dataverse *d = arg;
  const char *seg = req->path + strlen(DV_PREFIX);
  unsigned now = inflight(d) + 1;
  bool over = now > sim_faults_dv(d->sim->faults)->max_concurrent;
  if (!over && now > d->stats.inflight_max)
    d->stats.inflight_max = now;
  struct sim__dv_tag *tag = over ? &d->refused : &d->admitted;
  bool contacts = strncmp(seg, "contacts", 8) == 0 && (seg[8] == '\0' || seg[8] == '(');
  if (strcmp(req->method, "GET") == 0)
    sim_serve(d->sim, req, "contacts_get", -1, on_contacts_get, tag);
  else if (contacts)
    sim_serve(d->sim, req, "contacts_create", -1, on_contacts_create, tag);
  else
    sim_serve(d->sim, req, "trigger", -1, sim__dv_on_trigger, tag);
}

int sim_dataverse_create(struct sim *sim, struct sim_dataverse **out) {
  struct sim_dataverse *d = calloc(1, sizeof(*d));
  if (d == NULL)
    return -ENOMEM;
  d->sim = sim;
  d->admitted = (struct sim__dv_tag){d, false};
  d->refused = (struct sim__dv_tag){d, true};
  d->rng = (sim->opts.seed ^ 0x6461746176657273ULL) * 0x9e3779b97f4a7c15ULL | 1;
  d->next_etag = 72201545; /* the size of the reference's example etag */
  int rc = sim__dv_triggers_init(d);
  if (rc < 0) {
    sim_dataverse_destroy(d);
    return rc;
  }
  *out = d;
  return 0;
}

void sim_dataverse_destroy(struct sim_dataverse *d) {
  if (d == NULL)
    return;
  for (size_t i = 0; i < d->ncontacts; i++)
    contact_free(&d->contacts[i]);
  sim__dv_triggers_free(d);
  free(d->contacts);
  free(d->by_id.slots);
  free(d->by_email.slots);
  free(d->times);
  free(d);
}

int sim_dataverse_routes(struct sim *sim) {
  return rx_http_server_route(&sim->server, NULL, DV_PREFIX "*", on_route, sim->dv);
}

void sim_dataverse_stats(const struct sim_dataverse *d, struct sim_dataverse_stats *out) {
  *out = d->stats;
  out->contacts = d->ncontacts;
  out->inflight = inflight(d);
}
