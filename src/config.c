/* csurelay configuration: the key tables of SPEC section 7, their custom value types and
 * cross-field rules, secrets, and the public entry points. The generic walker is in config_yaml.c.
 *
 * Sections are walked in table order (identities before csus before sinks before routes before
 * ingress), so a reference is checked where it is written, with that key's line. Secrets are read
 * last, once everything else is valid: a typo is reported even where the secrets are not set. */
#include "config_yaml.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONFIG_MAX (4u << 20)
#define SECRET_MAX (64u << 10)
#define DAY_MS     86400000LL

_Static_assert(sizeof(enum csr_fsync) == sizeof(int), "CK_ENUM stores an int");
_Static_assert(sizeof(enum csr_sink_type) == sizeof(int), "CK_ENUM stores an int");

static const char *const sink_types[] = {"cij", "mqtt", "webhook", NULL}; /* csr_sink_type order */

/* ---------------------------------------------------------------------------------------------- */
/* Secrets, resolved after the walk                                                               */
/* ---------------------------------------------------------------------------------------------- */

enum pend_kind {
  PEND_ENV,     /* a required secret from an environment variable */
  PEND_FILE,    /* a required secret from a file */
  PEND_TOKEN,   /* an optional token: unset or empty leaves NULL */
  PEND_INGRESS, /* the ingress token rule, once its token is known */
};

struct csr__pending {
  struct csr__pending *next;
  enum pend_kind kind;
  const char *what; /* variable name or file path */
  char **dest;
  char **source; /* "env NAME" / "file PATH", or NULL */
  int header;    /* the value goes into an HTTP header: no line breaks */
  int line;
  char path[CSR__PATH_MAX];
};

static int add_pending(struct csr__ld *ld, enum pend_kind kind, const char *what, char **dest,
                       char **source, int header, int line, const char *path) {
  struct csr__pending *p = csr__arena_alloc(ld->arena, sizeof(*p));
  if (p == NULL)
    return csr__oom(ld);
  *p = (struct csr__pending){
      .kind = kind, .what = what, .dest = dest, .source = source, .header = header, .line = line};
  snprintf(p->path, sizeof(p->path), "%s", path);
  *ld->pending_tail = p;
  ld->pending_tail = &p->next;
  return 0;
}

static int read_secret_file(struct csr__ld *ld, const struct csr__pending *p, char **out) {
  char *buf = NULL;
  size_t len = 0;
  int rc = csr__read_file(p->what, SECRET_MAX, &buf, &len);
  if (rc != 0)
    return csr__fail(ld, p->line, p->path, "cannot read %s: %s", p->what, strerror(-rc));
  size_t n = len;
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
    n--;
  if (n == 0)
    rc = csr__fail(ld, p->line, p->path, "%s is empty", p->what);
  else if (memchr(buf, '\0', n) != NULL)
    rc = csr__fail(ld, p->line, p->path, "%s contains a NUL byte", p->what);
  else if ((*out = csr__arena_strndup(ld->arena, buf, n)) == NULL)
    rc = csr__oom(ld);
  explicit_bzero(buf, len);
  free(buf);
  return rc;
}

static int resolve_one(struct csr__ld *ld, const struct csr__pending *p) {
  struct csr_config *cfg = ld->cfg;
  if (p->kind == PEND_INGRESS) {
    if (cfg->ingress.token == NULL && !csr_host_is_loopback(cfg->ingress.listen.host))
      return csr__fail(ld, p->line, p->path, "no token set; refusing a non-loopback listener");
    return 0;
  }
  char *value = NULL;
  if (p->kind == PEND_FILE) {
    int rc = read_secret_file(ld, p, &value);
    if (rc != 0)
      return rc;
  } else {
    const char *env = getenv(p->what);
    if (env == NULL || env[0] == '\0') {
      if (p->kind == PEND_TOKEN)
        return 0;
      return csr__fail(ld, p->line, p->path, "environment variable %s is %s", p->what,
                       env ? "empty" : "not set");
    }
    if ((value = csr__arena_strdup(ld->arena, env)) == NULL)
      return csr__oom(ld);
  }
  if (p->header && strpbrk(value, "\r\n") != NULL)
    return csr__fail(ld, p->line, p->path, "the value of %s contains a line break", p->what);
  *p->dest = value;
  if (p->source != NULL) {
    const char *kind = p->kind == PEND_FILE ? "file" : "env";
    size_t n = strlen(kind) + strlen(p->what) + 2;
    if ((*p->source = csr__arena_alloc(ld->arena, n)) == NULL)
      return csr__oom(ld);
    snprintf(*p->source, n, "%s %s", kind, p->what);
  }
  return 0;
}

static int resolve_pending(struct csr__ld *ld) {
  for (struct csr__pending *p = ld->pending; p; p = p->next) {
    int rc = resolve_one(ld, p);
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* String checks (never quote the value: it may be a secret pasted into the wrong key)            */
/* ---------------------------------------------------------------------------------------------- */

static const char *check_name(const char *s) {
  size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-");
  return s[n] == '\0' && n <= 64 ? NULL : "must be at most 64 letters, digits, '_', '-' or '.'";
}

static const char *check_env_name(const char *s) {
  size_t n = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_");
  if (s[n] != '\0' || isdigit((unsigned char)s[0]))
    return "must be the name of an environment variable (letters, digits, '_'), not a value";
  return NULL;
}

static const char *check_event_type(const char *s) {
  if (strlen(s) > 20)
    return "an event type has at most 20 characters (the CSU's EventType is nvarchar(20))";
  for (const char *p = s; *p; p++)
    if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p))
      return "an event type cannot contain spaces";
  return NULL;
}

/* scheme://host..., with a non-empty host and no whitespace. */
static int has_scheme(const char *s, const char *const *schemes) {
  for (const char *const *sc = schemes; *sc; sc++) {
    size_t n = strlen(*sc);
    if (strncasecmp(s, *sc, n) == 0) {
      const char *host = s + n;
      if (host[0] == '\0' || host[0] == '/' || host[0] == ':')
        return 0;
      for (const char *p = s; *p; p++)
        if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p))
          return 0;
      return 1;
    }
  }
  return 0;
}

static const char *const http_schemes[] = {"http://", "https://", NULL};

static const char *check_http_url(const char *s) {
  return has_scheme(s, http_schemes) ? NULL : "expected an http:// or https:// URL with a host";
}

static const char *check_broker(const char *s) {
  static const char *const schemes[] = {"tcp://", "ssl://", "mqtt://", "mqtts://", NULL};
  return has_scheme(s, schemes) ? NULL : "expected tcp://, ssl://, mqtt:// or mqtts:// and a host";
}

static const char *check_topic(const char *s) {
  static const char *const vars[] = {"csu", "channel", "type", "dataarea", "terminal", NULL};
  if (strpbrk(s, "+#") != NULL)
    return "a publish topic cannot contain the wildcards '+' or '#'";
  for (const char *p = strchr(s, '{'); p; p = strchr(p + 1, '{')) {
    const char *end = strchr(p, '}');
    size_t n = end ? (size_t)(end - p - 1) : 0;
    int ok = 0;
    for (size_t i = 0; vars[i] && end; i++)
      ok |= strlen(vars[i]) == n && strncmp(p + 1, vars[i], n) == 0;
    if (!ok)
      return "placeholders are {csu}, {channel}, {type}, {dataarea} and {terminal}";
  }
  return NULL;
}

static const char *check_target(const char *s) {
  size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_");
  return n > 0 && s[n] == '\0' ? NULL : "a trigger parameter name has letters, digits and '_'";
}

static const char *check_source(const char *s) {
  static const char *const vars[] = {"$event_time", "$now", "$contact_id", "$event_id", NULL};
  static const char *const roots[] = {"EventDetails", "OrderDetails", "CustomerDetails", NULL};
  const char *bad = "expected a path starting with EventDetails, OrderDetails or CustomerDetails, "
                    "or one of $event_time, $now, $contact_id, $event_id";
  if (s[0] == '$') {
    for (size_t i = 0; vars[i]; i++)
      if (strcmp(s, vars[i]) == 0)
        return NULL;
    return bad;
  }
  size_t root = strcspn(s, ".");
  int ok = 0;
  for (size_t i = 0; roots[i]; i++)
    ok |= strlen(roots[i]) == root && strncmp(s, roots[i], root) == 0;
  if (!ok)
    return bad;
  for (const char *p = s; *p; p++)
    if ((*p == '.' && (p[1] == '.' || p[1] == '\0')) || isspace((unsigned char)*p))
      return "a path has non-empty segments separated by '.'";
  return NULL;
}

/* ---------------------------------------------------------------------------------------------- */
/* Custom value types                                                                             */
/* ---------------------------------------------------------------------------------------------- */

#define FIELD(base, off, type) ((type *)((char *)(base) + (off)))

/* A root URL: http(s), no query or fragment, always ending in '/'. */
static int text_root_url(struct csr__ld *ld, const struct csr__key *key, const char *text, int line,
                         const char *path, void *base) {
  const char *problem = check_http_url(text);
  if (problem == NULL && strpbrk(text, "?#") != NULL)
    problem = "a root URL cannot have a query or fragment";
  if (problem != NULL)
    return csr__fail(ld, line, path, "%s", problem);
  size_t n = strlen(text);
  char *url = csr__arena_alloc(ld->arena, n + 2);
  if (url == NULL)
    return csr__oom(ld);
  memcpy(url, text, n);
  if (url[n - 1] != '/')
    url[n] = '/';
  *FIELD(base, key->off, char *) = url;
  return 0;
}

static int text_listen(struct csr__ld *ld, const struct csr__key *key, const char *text, int line,
                       const char *path, void *base) {
  struct csr_listen l;
  if (csr_listen_parse(text, &l) != 0)
    return csr__fail(ld, line, path,
                     "expected host:port or [v6]:port with a port from 0 to 65535, got '%.64s'",
                     text);
  char *host = csr__arena_strdup(ld->arena, l.host);
  free(l.host);
  if (host == NULL)
    return csr__oom(ld);
  *FIELD(base, key->off, struct csr_listen) = (struct csr_listen){.host = host, .port = l.port};
  return 0;
}

static int digits(const char **p, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++, (*p)++) {
    if (!isdigit((unsigned char)**p))
      return -1;
    v = v * 10 + (**p - '0');
  }
  *out = v;
  return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int y, int m, int d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

static const char *parse_instant(const char *s, int64_t *ms) {
  static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const char *bad = "expected an ISO-8601 instant like 2024-07-24T00:00:00Z";
  const char *p = s;
  int y, mo, d, h, mi, sec, frac = 0, off = 0;
  if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' || digits(&p, 2, &d) ||
      (*p != 'T' && *p != 't'))
    return bad;
  p++;
  if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' || digits(&p, 2, &sec))
    return bad;
  if (*p == '.') {
    int scale = 100, n = 0;
    for (p++; isdigit((unsigned char)*p); p++, n++) {
      frac += (*p - '0') * scale;
      scale /= 10;
    }
    if (n == 0)
      return bad;
  }
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int sign = *p++ == '-' ? -1 : 1, oh, om;
    if (digits(&p, 2, &oh))
      return bad;
    p += *p == ':';
    if (digits(&p, 2, &om) || oh > 23 || om > 59)
      return bad;
    off = sign * (oh * 3600 + om * 60);
  } else if (*p == '\0') {
    return "an instant needs a time zone: end it with Z or an offset like +02:00";
  }
  if (*p != '\0')
    return bad;
  int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] ||
      (mo == 2 && d == 29 && !leap) || h > 23 || mi > 59 || sec > 59)
    return "not a valid date and time";
  *ms = ((days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec) - off) * 1000 + frac;
  return NULL;
}

/* "-24h", "-30m", "-90s", "-7d", "-500ms", "0s", "now"; returns 1 when `s` is not relative. */
static int parse_relative(const char *s, int64_t *ms, const char **why) {
  static const struct {
    const char *unit;
    int64_t ms;
  } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", DAY_MS}};
  if (strcmp(s, "now") == 0) {
    *ms = 0;
    return 0;
  }
  const char *p = s + (s[0] == '-');
  size_t n = strspn(p, "0123456789");
  if (n == 0 || n > 12)
    return 1;
  for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
    if (strcmp(p + n, units[i].unit) != 0)
      continue;
    int64_t v = strtoll(p, NULL, 10);
    if (v != 0 && s[0] != '-')
      *why = "a relative start lies in the past: write it with a minus, like -24h";
    else if (v > 36500 * DAY_MS / units[i].ms)
      *why = "a relative start reaches back at most 36500 days";
    *ms = -v * units[i].ms;
    return 0;
  }
  return 1;
}

static int text_start_from(struct csr__ld *ld, const struct csr__key *key, const char *text,
                           int line, const char *path, void *base) {
  const char *why = NULL;
  int64_t ms = 0;
  int relative = parse_relative(text, &ms, &why) == 0;
  if (!relative && strlen(text) >= 10 && text[4] == '-')
    why = parse_instant(text, &ms);
  else if (!relative)
    why = "expected a relative time (-24h, -30m, -90s, -7d, now) or an ISO-8601 instant "
          "(2024-07-24T00:00:00Z)";
  if (why != NULL)
    return csr__fail(ld, line, path, "%s, got '%.64s'", why, text);
  *FIELD(base, key->off, bool) = relative;
  *FIELD(base, key->off2, int64_t) = ms;
  return 0;
}

/* "no identity named 'x' (did you mean 'y'?)" over an array of structs holding `char *name`. */
static int ref_error(struct csr__ld *ld, int line, const char *path, const char *what,
                     const char *name, const void *arr, size_t n, size_t stride) {
  const char *best = NULL;
  size_t best_d = 3;
  for (size_t i = 0; i < n; i++) {
    const char *cand = *(char *const *)((const char *)arr + i * stride);
    size_t d = csr__edit_distance(name, cand, 2);
    if (d < best_d) {
      best = cand;
      best_d = d;
    }
  }
  if (best != NULL)
    return csr__fail(ld, line, path, "no %s named '%.64s' (did you mean '%s'?)", what, name, best);
  if (n == 0)
    return csr__fail(ld, line, path, "no %s named '%.64s' (none is defined)", what, name);
  return csr__fail(ld, line, path, "no %s named '%.64s'", what, name);
}

static int text_identity_ref(struct csr__ld *ld, const struct csr__key *key, const char *text,
                             int line, const char *path, void *base) {
  const struct csr_config *cfg = ld->cfg;
  struct csr_identity *id = csr_config_identity(cfg, text);
  if (id == NULL)
    return ref_error(ld, line, path, "identity", text, cfg->identities, cfg->n_identities,
                     sizeof(*id));
  *FIELD(base, key->off, char *) = id->name;
  *FIELD(base, key->off2, struct csr_identity *) = id;
  return 0;
}

static int text_sink_ref(struct csr__ld *ld, const struct csr__key *key, const char *text, int line,
                         const char *path, void *base) {
  const struct csr_config *cfg = ld->cfg;
  struct csr_sink_conf *sink = csr_config_sink(cfg, text);
  if (sink == NULL)
    return ref_error(ld, line, path, "sink", text, cfg->sinks, cfg->n_sinks, sizeof(*sink));
  *FIELD(base, key->off, char *) = sink->name;
  *FIELD(base, key->off2, struct csr_sink_conf *) = sink;
  return 0;
}

static int text_csu_ref(struct csr__ld *ld, const struct csr__key *key, const char *text, int line,
                        const char *path, void *base) {
  const struct csr_config *cfg = ld->cfg;
  struct csr_csu *csu = csr_config_csu(cfg, text);
  if (csu == NULL)
    return ref_error(ld, line, path, "csu", text, cfg->csus, cfg->n_csus, sizeof(*csu));
  *FIELD(base, key->off, char *) = csu->name;
  *FIELD(base, key->off2, struct csr_csu *) = csu;
  return 0;
}

static int node_enrich(struct csr__ld *ld, const struct csr__key *key, yaml_node_t *node,
                       const char *path, void *base) {
  unsigned bits = 0;
  char child[CSR__PATH_MAX];
  if (node->type != YAML_SEQUENCE_NODE)
    return csr__fail(ld, csr__line(node), path, "expected a list like [order, customer], got %s",
                     node->type == YAML_MAPPING_NODE ? "a mapping" : "a scalar");
  for (yaml_node_item_t *it = node->data.sequence.items.start; it < node->data.sequence.items.top;
       it++) {
    yaml_node_t *item = yaml_document_get_node(&ld->doc, *it);
    snprintf(child, sizeof(child), "%s[%d]", path, (int)(it - node->data.sequence.items.start));
    const char *text;
    int rc = csr__scalar(ld, item, child, &text);
    if (rc != 0)
      return rc;
    unsigned bit = strcmp(text, "order") == 0      ? CSR_ENRICH_ORDER
                   : strcmp(text, "customer") == 0 ? CSR_ENRICH_CUSTOMER
                                                   : 0;
    if (bit == 0)
      return csr__fail(ld, csr__line(item), child, "expected order or customer, got '%.64s'", text);
    if (bits & bit)
      return csr__fail(ld, csr__line(item), child, "'%s' is listed twice", text);
    bits |= bit;
  }
  *FIELD(base, key->off, unsigned) = bits;
  return 0;
}

/* fields: {target: source, ...}, in the order written. */
static int node_fields(struct csr__ld *ld, const struct csr__key *key, yaml_node_t *node,
                       const char *path, void *base) {
  if (node->type != YAML_MAPPING_NODE)
    return csr__fail(ld, csr__line(node), path,
                     "expected a mapping of trigger parameter: source, got a %s",
                     node->type == YAML_SEQUENCE_NODE ? "list" : "scalar");
  int rc = csr__check_keys(ld, node, path);
  if (rc != 0)
    return rc;
  yaml_node_pair_t *pairs = node->data.mapping.pairs.start;
  size_t n = (size_t)(node->data.mapping.pairs.top - pairs);
  if (n == 0)
    return csr__fail(ld, csr__line(node), path, "must map at least one parameter");
  struct csr_field_map *map = csr__arena_alloc(ld->arena, n * sizeof(*map));
  if (map == NULL)
    return csr__oom(ld);
  char child[CSR__PATH_MAX];
  for (size_t i = 0; i < n; i++) {
    yaml_node_t *k = yaml_document_get_node(&ld->doc, pairs[i].key);
    yaml_node_t *v = yaml_document_get_node(&ld->doc, pairs[i].value);
    const char *target = (const char *)k->data.scalar.value, *source;
    csr__path_join(child, sizeof(child), path, target);
    const char *problem = check_target(target);
    if (problem != NULL)
      return csr__fail(ld, csr__line(k), child, "%s", problem);
    if ((rc = csr__scalar(ld, v, child, &source)) != 0)
      return rc;
    if ((problem = check_source(source)) != NULL)
      return csr__fail(ld, csr__line(v), child, "%s", problem);
    map[i].target = csr__arena_strdup(ld->arena, target);
    map[i].source = (char *)source;
    if (map[i].target == NULL)
      return csr__oom(ld);
  }
  *FIELD(base, key->off, struct csr_field_map *) = map;
  *FIELD(base, key->off2, size_t) = n;
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Cross-field rules                                                                              */
/* ---------------------------------------------------------------------------------------------- */

/* The line of a key in a walked table, else the mapping's line. */
static int key_line(const struct csr__table *t, const struct csr__walk *w, const char *name) {
  for (size_t i = 0; i < t->n; i++)
    if (strcmp(t->keys[i].name, name) == 0 && (w->seen & (1u << i)))
      return w->key_line[i];
  return w->line;
}

static int was_set(const struct csr__table *t, const struct csr__walk *w, const char *name) {
  for (size_t i = 0; i < t->n; i++)
    if (strcmp(t->keys[i].name, name) == 0)
      return (w->seen & (1u << i)) != 0;
  return 0;
}

static int fail_at(struct csr__ld *ld, const struct csr__table *t, const struct csr__walk *w,
                   const char *path, const char *key, const char *msg) {
  char child[CSR__PATH_MAX];
  csr__path_join(child, sizeof(child), path, key);
  return csr__fail(ld, key_line(t, w, key), child, "%s", msg);
}

/* One of two exclusive secret sources; `need` says whether one is required. */
static int secret_source(struct csr__ld *ld, const struct csr__table *t, const struct csr__walk *w,
                         const char *path, const char *env_key, const char *env,
                         const char *file_key, const char *file, int need, char **dest,
                         char **source) {
  char child[CSR__PATH_MAX], msg[160];
  if (env != NULL && file != NULL) {
    snprintf(msg, sizeof(msg), "give either %s or %s, not both", env_key, file_key);
    return fail_at(ld, t, w, path, file_key, msg);
  }
  if (env == NULL && file == NULL) {
    snprintf(msg, sizeof(msg), "one of %s or %s is required", env_key, file_key);
    return need ? fail_at(ld, t, w, path, env_key, msg) : 0;
  }
  const char *key = env ? env_key : file_key;
  csr__path_join(child, sizeof(child), path, key);
  return add_pending(ld, env ? PEND_ENV : PEND_FILE, env ? env : file, dest, source, 0,
                     key_line(t, w, key), child);
}

static const struct csr__table identity_table, csu_table, sink_table, route_table, delivery_table,
    admin_table, ingress_table, retry_table;

static int finish_retry(struct csr__ld *ld, void *base, void *parent, const struct csr__walk *w,
                        const char *path) {
  const struct csr_config *cfg = parent;
  char msg[96];
  if (cfg->retry.base_ms <= cfg->retry.cap_ms)
    return 0;
  snprintf(msg, sizeof(msg), "must not exceed cap_ms (%llu)",
           (unsigned long long)cfg->retry.cap_ms);
  return fail_at(ld, &retry_table, w, path, "base_ms", msg);
}

static int finish_admin(struct csr__ld *ld, void *base, void *parent, const struct csr__walk *w,
                        const char *path) {
  struct csr_config *cfg = parent;
  char child[CSR__PATH_MAX];
  if (cfg->admin.token_env == NULL)
    return 0;
  csr__path_join(child, sizeof(child), path, "token_env");
  return add_pending(ld, PEND_TOKEN, cfg->admin.token_env, &cfg->admin.token, NULL, 1,
                     key_line(&admin_table, w, "token_env"), child);
}

static int finish_identity(struct csr__ld *ld, void *base, void *parent, const struct csr__walk *w,
                           const char *path) {
  struct csr_identity *id = base;
  size_t a = strlen(id->authority), t = strlen(id->tenant);
  const char *tenant = id->tenant;
  /* Exactly one slash between the parts, however the operator wrote them. */
  while (a > 0 && id->authority[a - 1] == '/')
    a--;
  for (; *tenant == '/'; t--)
    tenant++;
  while (t > 0 && tenant[t - 1] == '/')
    t--;
  if (t == 0)
    return fail_at(ld, &identity_table, w, path, "tenant", "must name a tenant");
  size_t n = a + t + sizeof("//oauth2/v2.0/token");
  if ((id->token_url = csr__arena_alloc(ld->arena, n)) == NULL)
    return csr__oom(ld);
  snprintf(id->token_url, n, "%.*s/%.*s/oauth2/v2.0/token", (int)a, id->authority, (int)t, tenant);
  return secret_source(ld, &identity_table, w, path, "client_secret_env", id->client_secret_env,
                       "client_secret_file", id->client_secret_file, 1, &id->secret,
                       &id->secret_source);
}

static int finish_csu(struct csr__ld *ld, void *base, void *parent, const struct csr__walk *w,
                      const char *path) {
  const struct csr_config *cfg = parent;
  const struct csr_csu *csu = base;
  char msg[96];
  for (const struct csr_csu *c = cfg->csus; c < csu; c++) {
    if (strcmp(c->name, csu->name) == 0) {
      snprintf(msg, sizeof(msg), "a csu named '%s' is already defined on line %d", c->name,
               c->line);
      return fail_at(ld, &csu_table, w, path, "name", msg);
    }
  }
  return 0;
}

static int sink_prepare(struct csr__ld *ld, yaml_node_t *map, const char *path, void *base,
                        unsigned *mask) {
  char child[CSR__PATH_MAX];
  csr__path_join(child, sizeof(child), path, "type");
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
    yaml_node_t *k = yaml_document_get_node(&ld->doc, p->key);
    if (strcmp((const char *)k->data.scalar.value, "type") != 0)
      continue;
    yaml_node_t *v = yaml_document_get_node(&ld->doc, p->value);
    const char *text;
    int rc = csr__scalar(ld, v, child, &text);
    if (rc != 0)
      return rc;
    for (unsigned i = 0; sink_types[i]; i++) {
      if (strcmp(text, sink_types[i]) == 0) {
        *mask = 1u << i;
        return 0;
      }
    }
    return csr__fail(ld, csr__line(v), child,
                     "unknown sink type '%.64s' (expected cij, mqtt or "
                     "webhook)",
                     text);
  }
  return csr__fail(ld, csr__line(map), child, "required key is missing");
}

static int finish_sink(struct csr__ld *ld, void *base, void *parent, const struct csr__walk *w,
                       const char *path) {
  static const unsigned max_in_flight[] = {16, 1000, 32};
  const struct csr_config *cfg = parent;
  struct csr_sink_conf *sink = base;
  const struct csr__table *t = &sink_table;
  char msg[96], child[CSR__PATH_MAX];
  for (const struct csr_sink_conf *s = cfg->sinks; s < sink; s++) {
    if (strcmp(s->name, sink->name) == 0) {
      snprintf(msg, sizeof(msg), "a sink named '%s' is already defined on line %d", s->name,
               s->line);
      return fail_at(ld, t, w, path, "name", msg);
    }
  }
  if (!was_set(t, w, "max_in_flight"))
    sink->max_in_flight = max_in_flight[sink->type];
  if (!was_set(t, w, "rate_per_s"))
    sink->rate_per_s = sink->type == CSR_SINK_CIJ ? 40 : 0;
  switch (sink->type) {
    case CSR_SINK_CIJ:
      if (sink->max_in_flight > 52)
        return fail_at(ld, t, w, path, "max_in_flight",
                       "a cij sink allows at most 52 (Dataverse's concurrent request limit)");
      return 0;
    case CSR_SINK_MQTT:
      return secret_source(ld, t, w, path, "password_env", sink->password_env, "password_file",
                           sink->password_file, 0, &sink->password, NULL);
    case CSR_SINK_WEBHOOK:
      if (sink->auth_header_env == NULL)
        return 0;
      csr__path_join(child, sizeof(child), path, "auth_header_env");
      return add_pending(ld, PEND_ENV, sink->auth_header_env, &sink->auth_header, NULL, 1,
                         key_line(t, w, "auth_header_env"), child);
  }
  return 0;
}

static int finish_route(struct csr__ld *ld, void *base, void *parent, const struct csr__walk *w,
                        const char *path) {
  const struct csr_config *cfg = parent;
  const struct csr_route *route = base;
  char msg[128];
  for (const struct csr_route *r = cfg->routes; r < route; r++) {
    if (strcmp(r->event_type, route->event_type) == 0) {
      snprintf(msg, sizeof(msg),
               "a route for '%s' is already defined on line %d; list every "
               "sink under its deliver",
               r->event_type, r->line);
      return fail_at(ld, &route_table, w, path, "event_type", msg);
    }
  }
  for (size_t i = 0; i < cfg->n_csus; i++)
    for (size_t j = 0; j < cfg->csus[i].n_event_types; j++)
      if (strcmp(cfg->csus[i].event_types[j], route->event_type) == 0)
        return 0;
  snprintf(msg, sizeof(msg), "no csu polls event type '%s' (add it to a csu's event_types)",
           route->event_type);
  return fail_at(ld, &route_table, w, path, "event_type", msg);
}

static int finish_delivery(struct csr__ld *ld, void *base, void *parent, const struct csr__walk *w,
                           const char *path) {
  const struct csr_route *route = parent;
  const struct csr_delivery_conf *d = base;
  const struct csr__table *t = &delivery_table;
  char msg[128];
  for (const struct csr_delivery_conf *e = route->deliver; e < d; e++) {
    if (e->sink == d->sink) {
      snprintf(msg, sizeof(msg), "sink '%s' is already listed on line %d", d->sink_name, e->line);
      return fail_at(ld, t, w, path, "sink", msg);
    }
  }
  if (d->sink->type == CSR_SINK_CIJ && d->trigger == NULL) {
    snprintf(msg, sizeof(msg), "required for cij sink '%s' (the custom trigger's name)",
             d->sink_name);
    return fail_at(ld, t, w, path, "trigger", msg);
  }
  if (d->sink->type != CSR_SINK_CIJ && (d->trigger != NULL || d->fields != NULL)) {
    const char *key = d->trigger != NULL ? "trigger" : "fields";
    snprintf(msg, sizeof(msg), "only a cij sink takes a %s; '%s' is a %s sink", key, d->sink_name,
             d->sink->type == CSR_SINK_MQTT ? "mqtt" : "webhook");
    return fail_at(ld, t, w, path, key, msg);
  }
  return 0;
}

static int finish_ingress(struct csr__ld *ld, void *base, void *parent, const struct csr__walk *w,
                          const char *path) {
  struct csr_config *cfg = parent;
  char child[CSR__PATH_MAX];
  int line = key_line(&ingress_table, w, "token_env");
  cfg->ingress.present = true;
  csr__path_join(child, sizeof(child), path, "token_env");
  int rc = 0;
  if (cfg->ingress.token_env != NULL)
    rc = add_pending(ld, PEND_TOKEN, cfg->ingress.token_env, &cfg->ingress.token, NULL, 1, line,
                     child);
  return rc ? rc : add_pending(ld, PEND_INGRESS, NULL, NULL, NULL, 0, line, child);
}

/* ---------------------------------------------------------------------------------------------- */
/* The key tables (SPEC section 7)                                                                */
/* ---------------------------------------------------------------------------------------------- */

#define U64_MAX_MS (30 * DAY_MS) /* no duration in this file needs more than 30 days */
#define OFF(f)     offsetof(T, f)

static const char *const fsync_names[] = {"always", "batch", "none", NULL};
static const char *const level_names[] = {"debug", "info", "warn", "error", NULL};
enum {
  M_CIJ = 1u << CSR_SINK_CIJ,
  M_MQTT = 1u << CSR_SINK_MQTT,
  M_WEBHOOK = 1u << CSR_SINK_WEBHOOK
};

#define T               struct csr_config
#define SUB(section, f) (offsetof(T, section.f) - offsetof(T, section))
static const struct csr__key log_keys[] = {
    {"level", CK_STR, 0, "info", .off = SUB(log, level), .names = level_names,
     .desc = "least severe level written: debug, info, warn or error"},
};
static const struct csr__key state_keys[] = {
    {"dir", CK_STR, 0, "./var", .off = SUB(state, dir), .desc = "directory of the AOF"},
    {"fsync", CK_ENUM, 0, "batch", .off = SUB(state, fsync), .names = fsync_names,
     .desc = "always (every record), batch (every fsync_interval_ms) or none"},
    {"fsync_interval_ms", CK_U64, 0, "5", 1, 60000, SUB(state, fsync_interval_ms),
     .desc = "batch fsync period"},
};
static const struct csr__key admin_keys[] = {
    {"listen", CK_TEXT, 0, "127.0.0.1:8686", .off = SUB(admin, listen), .text = text_listen,
     .desc = "host:port of the admin API (port 0: ephemeral)"},
    {"token_env", CK_STR, 0, .off = SUB(admin, token_env), .check = check_env_name,
     .desc = "variable holding the admin bearer token; unset → no auth"},
};
static const struct csr__key limits_keys[] = {
    {"max_live_events", CK_U64, 0, "20000", 1, 100000000, SUB(limits, max_live_events),
     .desc = "events admitted but not finished, at most"},
    {"memory_mb", CK_U64, 0, "256", 1, 1 << 20, SUB(limits, memory_mb),
     .desc = "memory budget of the pipeline"},
    {"http_timeout_ms", CK_U64, 0, "10000", 1, 3600000, SUB(limits, http_timeout_ms),
     .desc = "default timeout of one HTTP request"},
};
static const struct csr__key retry_keys[] = {
    {"base_ms", CK_U64, 0, "1000", 1, U64_MAX_MS, SUB(retry, base_ms),
     .desc = "first backoff (full jitter)"},
    {"cap_ms", CK_U64, 0, "300000", 1, U64_MAX_MS, SUB(retry, cap_ms), .desc = "longest backoff"},
    {"max_attempts", CK_UINT, 0, "10", 1, 1000, SUB(retry, max_attempts),
     .desc = "attempts before the dead-letter queue"},
};
static const struct csr__key ingress_keys[] = {
    {"listen", CK_TEXT, 0, "127.0.0.1:8687", .off = SUB(ingress, listen), .text = text_listen,
     .desc = "host:port of POST /v1/customers"},
    {"token_env", CK_STR, 0, .off = SUB(ingress, token_env), .check = check_env_name,
     .desc = "variable holding the bearer token; required off loopback"},
    {"csu", CK_TEXT, CKF_REQUIRED, .off = SUB(ingress, csu_name), .off2 = SUB(ingress, csu),
     .text = text_csu_ref, .desc = "the csu that customers are written to"},
    {"sync_wait_ms", CK_U64, 0, "5000", 0, 300000, SUB(ingress, sync_wait_ms),
     .desc = "how long a request waits for the job before answering 202"},
};
#undef SUB

#define TABLE(name, keys_, ...)                                                                    \
  static const struct csr__table name = {                                                          \
      .keys = keys_, .n = sizeof(keys_) / sizeof(keys_[0]), __VA_ARGS__}
TABLE(log_table, log_keys, .what = "log");
TABLE(state_table, state_keys, .what = "state");
TABLE(admin_table, admin_keys, .what = "admin", .finish = finish_admin);
TABLE(limits_table, limits_keys, .what = "limits");
TABLE(retry_table, retry_keys, .what = "retry", .finish = finish_retry);
TABLE(ingress_table, ingress_keys, .what = "ingress", .finish = finish_ingress);
#undef T

#define T struct csr_identity
static const struct csr__key identity_keys[] = {
    {"authority", CK_STR, 0, "https://login.microsoftonline.com", .off = OFF(authority),
     .check = check_http_url, .desc = "Entra ID authority; token URL = {authority}/{tenant}/..."},
    {"tenant", CK_STR, CKF_REQUIRED, .off = OFF(tenant), .desc = "tenant id or domain"},
    {"client_id", CK_STR, CKF_REQUIRED, .off = OFF(client_id), .desc = "app registration id"},
    {"client_secret_env", CK_STR, 0, .off = OFF(client_secret_env), .check = check_env_name,
     .desc = "variable holding the client secret"},
    {"client_secret_file", CK_STR, 0, .off = OFF(client_secret_file),
     .desc = "file holding the client secret (trailing newline stripped)"},
    {"scope", CK_STR, CKF_REQUIRED, .off = OFF(scope), .desc = "e.g. api://commerce/.default"},
};
TABLE(identity_table, identity_keys, .what = "identity", .size = sizeof(T), .line_off = OFF(line),
      .name_off = OFF(name), .finish = finish_identity);
#undef T

#define T struct csr_csu
static const struct csr__key csu_keys[] = {
    {"name", CK_STR, CKF_REQUIRED, .off = OFF(name), .check = check_name,
     .desc = "unique name; part of every event id"},
    {"url", CK_TEXT, CKF_REQUIRED, .off = OFF(url), .text = text_root_url,
     .desc = "Retail Server root; the API is under {url}Commerce/"},
    {"oun", CK_STR, CKF_REQUIRED, .off = OFF(oun), .desc = "operating unit number"},
    {"identity", CK_TEXT, CKF_REQUIRED, .off = OFF(identity_name), .off2 = OFF(identity),
     .text = text_identity_ref, .desc = "name under identities"},
    {"event_types", CK_STRLIST, CKF_REQUIRED | CKF_NONEMPTY, .off = OFF(event_types),
     .off2 = OFF(n_event_types), .check = check_event_type,
     .desc = "e.g. [Checkout, AddCartLines]"},
    {"poll_interval_ms", CK_U64, 0, "1000", 1, 3600000, OFF(poll_interval_ms),
     .desc = "pause between polls of one event type"},
    {"page_size", CK_UINT, 0, "250", 1, 1000, OFF(page_size), .desc = "$top of one Search call"},
    {"overlap_s", CK_U64, 0, "10", 0, 86400, OFF(overlap_s),
     .desc = "each poll searches from cursor - overlap_s"},
    {"settle_ms", CK_U64, 0, "2000", 0, 3600000, OFF(settle_ms),
     .desc = "each poll searches up to now - settle_ms"},
    {"sweep_s", CK_U64, 0, "900", 0, 30 * 86400, OFF(sweep_s),
     .desc = "window of the deeper sweep; 0 disables it"},
    {"sweep_every_s", CK_U64, 0, "300", 1, 86400, OFF(sweep_every_s), .desc = "sweep period"},
    {"start_from", CK_TEXT, 0, "-24h", .off = OFF(start_relative), .off2 = OFF(start_from_ms),
     .text = text_start_from, .desc = "first start: -24h, -30m, now, or an ISO-8601 instant"},
};
TABLE(csu_table, csu_keys, .what = "csu", .size = sizeof(T), .line_off = OFF(line),
      .finish = finish_csu);
#undef T

#define T struct csr_sink_conf
static const struct csr__key sink_keys[] = {
    {"name", CK_STR, CKF_REQUIRED, .off = OFF(name), .check = check_name,
     .desc = "unique name, used by routes"},
    {"type", CK_ENUM, CKF_REQUIRED, .off = OFF(type), .names = sink_types,
     .desc = "cij, mqtt or webhook"},
    {"max_in_flight", CK_UINT, 0, NULL, 1, 65535, OFF(max_in_flight),
     .desc = "concurrent deliveries (cij 16, at most 52; mqtt 1000; webhook 32)"},
    {"rate_per_s", CK_DOUBLE, 0, NULL, 0, 1000000, OFF(rate_per_s),
     .desc = "deliveries per second, 0 = unlimited (cij 40)"},
    {"timeout_ms", CK_U64, 0, "0", 0, 3600000, OFF(timeout_ms),
     .desc = "per request; 0 = limits.http_timeout_ms"},
    {"dataverse_url", CK_TEXT, CKF_REQUIRED, .off = OFF(dataverse_url), .text = text_root_url,
     .mask = M_CIJ, .desc = "Dataverse organization root"},
    {"identity", CK_TEXT, CKF_REQUIRED, .off = OFF(identity_name), .off2 = OFF(identity),
     .text = text_identity_ref, .mask = M_CIJ, .desc = "name under identities"},
    {"broker", CK_STR, CKF_REQUIRED, .off = OFF(broker), .check = check_broker, .mask = M_MQTT,
     .desc = "tcp://, ssl://, mqtt:// or mqtts:// host:port"},
    {"client_id", CK_STR, CKF_REQUIRED, .off = OFF(client_id), .mask = M_MQTT,
     .desc = "stable client id of the persistent session"},
    {"topic", CK_STR, CKF_REQUIRED, .off = OFF(topic), .check = check_topic, .mask = M_MQTT,
     .desc = "template: {csu} {channel} {type} {dataarea} {terminal}"},
    {"qos", CK_INT, 0, "1", 0, 2, OFF(qos), .mask = M_MQTT, .desc = "0, 1 or 2"},
    {"username", CK_STR, 0, .off = OFF(username), .mask = M_MQTT, .desc = "broker user"},
    {"password_env", CK_STR, 0, .off = OFF(password_env), .check = check_env_name, .mask = M_MQTT,
     .desc = "variable holding the broker password"},
    {"password_file", CK_STR, 0, .off = OFF(password_file), .mask = M_MQTT,
     .desc = "file holding the broker password"},
    {"keepalive_s", CK_U64, 0, "60", 0, 65535, OFF(keepalive_s), .mask = M_MQTT,
     .desc = "MQTT keep-alive; 0 disables it"},
    {"url", CK_STR, CKF_REQUIRED, .off = OFF(url), .check = check_http_url, .mask = M_WEBHOOK,
     .desc = "endpoint receiving the POSTs"},
    {"auth_header_env", CK_STR, 0, .off = OFF(auth_header_env), .check = check_env_name,
     .mask = M_WEBHOOK, .desc = "variable holding the Authorization header value"},
};
TABLE(sink_table, sink_keys, .what = "sink", .size = sizeof(T), .line_off = OFF(line),
      .prepare = sink_prepare, .finish = finish_sink, .variants = sink_types);
#undef T

#define T struct csr_delivery_conf
static const struct csr__key delivery_keys[] = {
    {"sink", CK_TEXT, CKF_REQUIRED, .off = OFF(sink_name), .off2 = OFF(sink), .text = text_sink_ref,
     .desc = "name under sinks"},
    {"trigger", CK_STR, 0, .off = OFF(trigger), .check = check_target,
     .desc = "cij: the custom trigger's action name"},
    {"fields", CK_NODE, 0, .off = OFF(fields), .off2 = OFF(n_fields), .node = node_fields,
     .desc = "cij: trigger parameter → path or $event_time/$now/$contact_id/$event_id"},
};
TABLE(delivery_table, delivery_keys, .what = "delivery", .size = sizeof(T), .line_off = OFF(line),
      .finish = finish_delivery);
#undef T

#define T struct csr_route
static const struct csr__key route_keys[] = {
    {"event_type", CK_STR, CKF_REQUIRED, .off = OFF(event_type), .check = check_event_type,
     .desc = "Checkout, AddCartLines, ..."},
    {"enrich", CK_NODE, 0, .off = OFF(enrich), .node = node_enrich,
     .desc = "documents to fetch first: [order, customer]"},
    {"deliver", CK_SEQ, CKF_REQUIRED | CKF_NONEMPTY, .off = OFF(deliver), .off2 = OFF(n_deliver),
     .sub = &delivery_table, .desc = "the sinks of this event type"},
};
TABLE(route_table, route_keys, .what = "route", .size = sizeof(T), .line_off = OFF(line),
      .finish = finish_route);
#undef T

/* Dependency order: a section may refer only to those above it. */
#define T struct csr_config
static const struct csr__key top_keys[] = {
    {"log", CK_MAP, 0, .off = OFF(log), .sub = &log_table, .desc = "logging"},
    {"state", CK_MAP, 0, .off = OFF(state), .sub = &state_table, .desc = "durable state"},
    {"admin", CK_MAP, 0, .off = OFF(admin), .sub = &admin_table, .desc = "admin API"},
    {"limits", CK_MAP, 0, .off = OFF(limits), .sub = &limits_table, .desc = "memory bounds"},
    {"retry", CK_MAP, 0, .off = OFF(retry), .sub = &retry_table, .desc = "backoff"},
    {"identities", CK_DICT, 0, .off = OFF(identities), .off2 = OFF(n_identities),
     .sub = &identity_table, .check = check_name, .desc = "OAuth2 client credentials by name"},
    {"csus", CK_SEQ, 0, .off = OFF(csus), .off2 = OFF(n_csus), .sub = &csu_table,
     .desc = "Commerce Scale Units to poll"},
    {"sinks", CK_SEQ, 0, .off = OFF(sinks), .off2 = OFF(n_sinks), .sub = &sink_table,
     .desc = "destinations"},
    {"routes", CK_SEQ, 0, .off = OFF(routes), .off2 = OFF(n_routes), .sub = &route_table,
     .desc = "event type → enrichment and sinks"},
    {"ingress", CK_MAP, CKF_OPTIONAL, .off = OFF(ingress), .sub = &ingress_table,
     .desc = "customer sync from a marketing system"},
};
TABLE(top_table, top_keys, .what = "section");
#undef T
#undef TABLE

/* ---------------------------------------------------------------------------------------------- */
/* Public API                                                                                     */
/* ---------------------------------------------------------------------------------------------- */

static int load_root(struct csr__ld *ld, const char *yaml, size_t len) {
  int rc = csr__yaml_load(ld, yaml, len);
  if (rc != 0)
    return rc;
  yaml_node_t *root = yaml_document_get_root_node(&ld->doc);
  if (root == NULL || (root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0 &&
                       root->data.scalar.style == YAML_PLAIN_SCALAR_STYLE))
    return csr__fail(ld, 0, "", "empty configuration");
  if (root->type != YAML_MAPPING_NODE)
    return csr__fail(ld, csr__line(root), "",
                     "the top level must be a mapping of sections (state, csus, sinks, ...), got "
                     "a %s",
                     root->type == YAML_SEQUENCE_NODE ? "list" : "scalar");
  struct csr__walk w;
  rc = csr__walk_map(ld, root, 0, "", &top_table, ld->cfg, NULL, &w);
  return rc ? rc : resolve_pending(ld);
}

int csr_config_parse(const char *name, const char *yaml, size_t len, struct csr_config **out,
                     struct csr_err *err) {
  if (out == NULL || yaml == NULL)
    return -EINVAL;
  *out = NULL;
  if (err != NULL)
    memset(err, 0, sizeof(*err));
  struct csr__ld ld = {.file = name ? name : "<config>", .err = err};
  ld.pending_tail = &ld.pending;
  if ((ld.arena = csr__arena_create()) == NULL)
    return csr__oom(&ld);
  ld.cfg = csr__arena_alloc(ld.arena, sizeof(*ld.cfg));
  int rc = ld.cfg ? 0 : csr__oom(&ld);
  if (rc == 0 && (ld.cfg->path = csr__arena_strdup(ld.arena, ld.file)) == NULL)
    rc = csr__oom(&ld);
  if (rc == 0) {
    ld.cfg->_arena = ld.arena;
    rc = load_root(&ld, yaml, len);
  }
  yaml_document_delete(&ld.doc);
  if (rc != 0) {
    csr__arena_destroy(ld.arena);
    return rc;
  }
  *out = ld.cfg;
  return 0;
}

int csr_config_load(const char *path, struct csr_config **out, struct csr_err *err) {
  if (out == NULL || path == NULL)
    return -EINVAL;
  *out = NULL;
  if (err != NULL)
    memset(err, 0, sizeof(*err));
  char *buf = NULL;
  size_t len = 0;
  int rc = csr__read_file(path, CONFIG_MAX, &buf, &len);
  if (rc != 0) {
    csr_err_set(err, path, 0, "", "%s", strerror(-rc));
    return rc;
  }
  rc = csr_config_parse(path, buf, len, out, err);
  free(buf);
  return rc;
}

void csr_config_destroy(struct csr_config *cfg) {
  if (cfg != NULL)
    csr__arena_destroy(cfg->_arena);
}

struct csr_sink_conf *csr_config_sink(const struct csr_config *cfg, const char *name) {
  for (size_t i = 0; cfg && name && i < cfg->n_sinks; i++)
    if (cfg->sinks[i].name && strcmp(cfg->sinks[i].name, name) == 0)
      return &cfg->sinks[i];
  return NULL;
}

struct csr_csu *csr_config_csu(const struct csr_config *cfg, const char *name) {
  for (size_t i = 0; cfg && name && i < cfg->n_csus; i++)
    if (cfg->csus[i].name && strcmp(cfg->csus[i].name, name) == 0)
      return &cfg->csus[i];
  return NULL;
}

struct csr_identity *csr_config_identity(const struct csr_config *cfg, const char *name) {
  for (size_t i = 0; cfg && name && i < cfg->n_identities; i++)
    if (cfg->identities[i].name && strcmp(cfg->identities[i].name, name) == 0)
      return &cfg->identities[i];
  return NULL;
}

int csr_listen_parse(const char *text, struct csr_listen *out) {
  if (text == NULL || out == NULL)
    return -EINVAL;
  const char *host = text, *host_end, *port;
  if (text[0] == '[') {
    host = text + 1;
    host_end = strchr(host, ']');
    if (host_end == NULL || host_end[1] != ':')
      return -EINVAL;
    port = host_end + 2;
  } else {
    host_end = strrchr(text, ':');
    if (host_end == NULL || memchr(text, ':', (size_t)(host_end - text)) != NULL)
      return -EINVAL; /* an IPv6 address needs brackets */
    port = host_end + 1;
  }
  size_t hn = (size_t)(host_end - host), pn = strlen(port);
  if (hn == 0 || hn > 253 || pn == 0 || pn > 5 || strspn(port, "0123456789") != pn)
    return -EINVAL;
  const char *ok = text[0] == '[' ? "0123456789abcdefABCDEF:."
                                  : "abcdefghijklmnopqrstuvwxyz"
                                    "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                    "0123456789.-_";
  for (size_t i = 0; i < hn; i++)
    if (strchr(ok, host[i]) == NULL)
      return -EINVAL;
  long p = strtol(port, NULL, 10);
  if (p > 65535)
    return -EINVAL;
  char *h = strndup(host, hn);
  if (h == NULL)
    return -ENOMEM;
  out->host = h;
  out->port = (int)p;
  return 0;
}

bool csr_host_is_loopback(const char *host) {
  char buf[64];
  if (host == NULL)
    return false;
  size_t n = strlen(host);
  if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(buf)) {
    memcpy(buf, host + 1, n - 2);
    buf[n - 2] = '\0';
    host = buf;
  }
  if (strcasecmp(host, "localhost") == 0)
    return true;
  struct in_addr a4;
  struct in6_addr a6;
  if (inet_pton(AF_INET, host, &a4) == 1)
    return (ntohl(a4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, host, &a6) == 1)
    return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
  return false;
}
