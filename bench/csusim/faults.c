/* csusim fault plan: what the gate injects per endpoint, and the knobs events.c, entra.c and
 * dataverse.c read. Parsed from YAML (--faults FILE, inline text, or POST /sim/faults at run time).
 *
 * Schema (every key optional; unknown keys, wrong types and out-of-range values are rejected with
 * "line N: ..."; rates are in [0,1]):
 *
 *   seed: 42                  # overrides --seed for the fault draws
 *   endpoints:                # endpoint name (see sim.h) or "*": one rule or a list of rules
 *     search:
 *       latency_ms: 20        # added latency ...
 *       latency_jitter_ms: 30 # ... plus uniform [0, jitter]
 *       error_rate: 0.1       # share answered with an error status ...
 *       errors: [429, 503]    # ... drawn uniformly from this list (400..599, default [500])
 *       retry_after_s: 2      # Retry-After on 429/503 (0 = none)
 *       timeout_rate: 0.01    # no answer at all
 *       reset_rate: 0.01      # connection reset
 *       malformed_rate: 0.01  # 2xx with a corrupted JSON body
 *       csus: [0, 2]          # only requests for these CSUs (default all)
 *       from_s: 10            # active from 10 s after start ...
 *       until_s: 40           # ... until 40 s (an outage window); default always
 *   events:    {late_commit_rate, late_commit_max_s, same_time_every_s, same_time_burst,
 *               unstable_tie_order, stale_cache, stale_cache_ttl_s}
 *   tokens:    {lifetime_s, revoke_at_s}
 *   dataverse: {max_requests, window_s, max_concurrent, require_known_contact}
 *
 * Reset, timeout, error and malformed are exclusive outcomes of one uniform draw, so their rates
 * must sum to at most 1. A request takes the first active rule in this order: endpoint-specific
 * with a csus filter that names its CSU, endpoint-specific without a filter, "*" with a matching
 * filter, "*"; ties go to the rule written first. Each rule draws from its own generator seeded
 * from the plan's seed and its position, so one endpoint's decisions do not shift when another
 * endpoint's traffic changes.
 *
 * POST /sim/faults replaces the endpoint rules (a body without `endpoints:` clears them, so an
 * empty body heals everything) and every other section the body names (that section starts from the
 * defaults). A missing plan (sim->faults == NULL) reads as the defaults everywhere.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "csurelay/error.h"
#include "sim.h"
#include "text.h"

#define MAX_ERRORS 8
#define MAX_CSUS   64
#define NEVER      UINT64_MAX

struct rule {
  char endpoint[24]; /* a name from ENDPOINTS or "*" */
  uint64_t latency_ms;
  uint64_t jitter_ms;
  double error_rate;
  double timeout_rate;
  double reset_rate;
  double malformed_rate;
  uint64_t retry_after_s;
  int errors[MAX_ERRORS];
  unsigned nerrors;
  int csus[MAX_CSUS];
  unsigned ncsus;
  uint64_t from_ms;
  uint64_t until_ms;
  uint64_t rng;
};

struct sim_faults {
  uint64_t seed;
  struct rule *rules;
  size_t nrules;
  struct sim_event_faults events;
  struct sim_token_faults tokens;
  struct sim_dv_limits dv;
  /* which sections the parsed document named, for a run-time replacement */
  bool has_seed, has_events, has_tokens, has_dv;
};

static const char *const ENDPOINTS[] = {
    "token",        "search",          "getall",          "lastsync",        "oun",
    "order",        "customer_get",    "customer_search", "customer_create", "customer_update",
    "contacts_get", "contacts_create", "trigger",         "webhook",         "*",
};

static const struct sim_event_faults EVENT_DEFAULTS = {
    .late_commit_rate = 0,
    .late_commit_max_s = 30,
    .same_time_every_s = 0,
    .same_time_burst = 600,
    .unstable_tie_order = false,
    .stale_cache = false,
    .stale_cache_ttl_s = 3600,
};
static const struct sim_token_faults TOKEN_DEFAULTS = {.lifetime_s = 3599, .revoke_at_s = -1};
static const struct sim_dv_limits DV_DEFAULTS = {
    .max_requests = 6000, .window_s = 300, .max_concurrent = 52, .require_known_contact = true};

/* ---------------------------------------------------------------------------------------------- */
/* Key tables */
/* ---------------------------------------------------------------------------------------------- */

enum kind { K_U64, K_I64, K_UINT, K_RATE, K_BOOL, K_SECS, K_STATUSES, K_CSUS };

struct key {
  const char *name;
  enum kind kind;
  size_t off;
  double min, max; /* for numbers */
};

#define R(name, kind, min, max)                                                                    \
  { #name, kind, offsetof(struct rule, name), min, max }
#define EV(name, kind, min, max)                                                                   \
  { #name, kind, offsetof(struct sim_event_faults, name), min, max }
#define TK(name, kind, min, max)                                                                   \
  { #name, kind, offsetof(struct sim_token_faults, name), min, max }
#define DV(name, kind, min, max)                                                                   \
  { #name, kind, offsetof(struct sim_dv_limits, name), min, max }
#define BIG 1e15

static const struct key RULE_KEYS[] = {
    R(latency_ms, K_U64, 0, 3600000),
    {"latency_jitter_ms", K_U64, offsetof(struct rule, jitter_ms), 0, 3600000},
    R(error_rate, K_RATE, 0, 1),
    {"errors", K_STATUSES, offsetof(struct rule, errors), 400, 599},
    R(retry_after_s, K_U64, 0, 86400),
    R(timeout_rate, K_RATE, 0, 1),
    R(reset_rate, K_RATE, 0, 1),
    R(malformed_rate, K_RATE, 0, 1),
    {"csus", K_CSUS, offsetof(struct rule, csus), 0, 65535},
    {"from_s", K_SECS, offsetof(struct rule, from_ms), 0, BIG},
    {"until_s", K_SECS, offsetof(struct rule, until_ms), 0, BIG},
    {NULL, K_U64, 0, 0, 0},
};

static const struct key EVENT_KEYS[] = {
    EV(late_commit_rate, K_RATE, 0, 1),     EV(late_commit_max_s, K_U64, 0, 86400),
    EV(same_time_every_s, K_U64, 0, 86400), EV(same_time_burst, K_UINT, 1, 1000000),
    EV(unstable_tie_order, K_BOOL, 0, 0),   EV(stale_cache, K_BOOL, 0, 0),
    EV(stale_cache_ttl_s, K_U64, 0, 86400), {NULL, K_U64, 0, 0, 0},
};

static const struct key TOKEN_KEYS[] = {
    TK(lifetime_s, K_U64, 1, 86400 * 365),
    TK(revoke_at_s, K_I64, -1, BIG),
    {NULL, K_U64, 0, 0, 0},
};

static const struct key DV_KEYS[] = {
    DV(max_requests, K_UINT, 1, 100000000),
    DV(window_s, K_U64, 1, 86400),
    DV(max_concurrent, K_UINT, 1, 1000000),
    DV(require_known_contact, K_BOOL, 0, 0),
    {NULL, K_U64, 0, 0, 0},
};

/* ---------------------------------------------------------------------------------------------- */
/* Scalars */
/* ---------------------------------------------------------------------------------------------- */

struct ld {
  yaml_document_t doc;
  struct sim_faults *f;
  char *why;
  size_t whylen;
};

static int line_of(const yaml_node_t *n) {
  return (int)n->start_mark.line + 1;
}

static int fail(struct ld *ld, const yaml_node_t *n, const char *fmt, ...) CSR_PRINTF(3, 4);
static int fail(struct ld *ld, const yaml_node_t *n, const char *fmt, ...) {
  char msg[200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (ld->why != NULL && ld->whylen > 0)
    snprintf(ld->why, ld->whylen, "line %d: %s", n ? line_of(n) : 1, msg);
  return CSR_ECONFIG;
}

static yaml_node_t *node(struct ld *ld, int id) {
  return yaml_document_get_node(&ld->doc, id);
}

static const char *text(const yaml_node_t *n) {
  return n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* A key's text, "" for a non-scalar key (compared, never shown). */
static const char *key_text(struct ld *ld, int id) {
  const char *t = text(node(ld, id));
  return t ? t : "";
}

/* A plain empty or ~/null scalar: a section written with no value, read as empty. */
static bool is_null(const yaml_node_t *n) {
  const char *v = text(n);
  return v != NULL && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
         (v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0);
}

/* A number within [min, max]; integers only when `integer`. strtod accepts "inf", "0x10" and
 * "nan", none of which a plan should carry, so the text is checked first. */
static int number(struct ld *ld, const yaml_node_t *n, const char *name, bool integer, double min,
                  double max, double *out) {
  const char *v = text(n);
  if (v == NULL || v[0] == '\0' || strspn(v, "+-0123456789.eE") != strlen(v))
    return fail(ld, n, "%s: expected a number", name);
  char *end;
  errno = 0;
  double d = strtod(v, &end);
  if (*end != '\0' || errno != 0 || !isfinite(d))
    return fail(ld, n, "%s: expected a number, got '%s'", name, v);
  if (integer && d != floor(d))
    return fail(ld, n, "%s: expected a whole number, got '%s'", name, v);
  if (d < min || d > max)
    return fail(ld, n, "%s: %s is out of range [%g, %g]", name, v, min, max);
  *out = d;
  return 0;
}

static int boolean(struct ld *ld, const yaml_node_t *n, const char *name, bool *out) {
  const char *v = text(n);
  if (v != NULL && (strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "on") == 0)) {
    *out = true;
    return 0;
  }
  if (v != NULL && (strcmp(v, "false") == 0 || strcmp(v, "no") == 0 || strcmp(v, "off") == 0)) {
    *out = false;
    return 0;
  }
  return fail(ld, n, "%s: expected true or false", name);
}

/* ---------------------------------------------------------------------------------------------- */
/* Mappings */
/* ---------------------------------------------------------------------------------------------- */

/* A list of whole numbers (or one scalar) into int[cap]; the count goes in *n. */
static int int_list(struct ld *ld, const yaml_node_t *v, const struct key *k, const char *name,
                    int *dst, unsigned cap, unsigned *n) {
  yaml_node_item_t one = 0, *it = &one, *end = &one + 1;
  if (v->type == YAML_SEQUENCE_NODE) {
    it = v->data.sequence.items.start;
    end = v->data.sequence.items.top;
  } else if (v->type != YAML_SCALAR_NODE) {
    return fail(ld, v, "%s: expected a list of numbers", name);
  }
  if (it == end)
    return fail(ld, v, "%s: the list is empty", name);
  if (end - it > (long)cap)
    return fail(ld, v, "%s: at most %u entries", name, cap);
  *n = 0;
  for (; it < end; it++) {
    const yaml_node_t *e = *it ? node(ld, *it) : v;
    double d = 0;
    int rc = number(ld, e, name, true, k->min, k->max, &d);
    if (rc != 0)
      return rc;
    dst[(*n)++] = (int)d;
  }
  return 0;
}

static int set_value(struct ld *ld, const struct key *k, const char *name, const yaml_node_t *v,
                     char *base) {
  void *p = base + k->off;
  double d = 0;
  int rc = 0;
  if (k->kind == K_BOOL)
    return boolean(ld, v, name, (bool *)p);
  if (k->kind == K_STATUSES)
    return int_list(ld, v, k, name, (int *)p, MAX_ERRORS, &((struct rule *)base)->nerrors);
  if (k->kind == K_CSUS)
    return int_list(ld, v, k, name, (int *)p, MAX_CSUS, &((struct rule *)base)->ncsus);
  rc = number(ld, v, name, k->kind != K_RATE && k->kind != K_SECS, k->min, k->max, &d);
  if (rc != 0)
    return rc;
  switch (k->kind) {
    case K_U64:
      *(uint64_t *)p = (uint64_t)d;
      break;
    case K_I64:
      *(int64_t *)p = (int64_t)d;
      break;
    case K_UINT:
      *(unsigned *)p = (unsigned)d;
      break;
    case K_RATE:
      *(double *)p = d;
      break;
    default: /* K_SECS */
      *(uint64_t *)p = (uint64_t)llround(d * 1000.0);
      break;
  }
  return 0;
}

/* Applies a mapping's keys to `base` through `keys`; unknown and repeated keys are errors. */
static int apply_map(struct ld *ld, const yaml_node_t *map, const char *what,
                     const struct key *keys, char *base) {
  if (is_null(map))
    return 0;
  if (map->type != YAML_MAPPING_NODE)
    return fail(ld, map, "%s: expected a mapping", what);
  yaml_node_pair_t *pairs = map->data.mapping.pairs.start;
  size_t n = (size_t)(map->data.mapping.pairs.top - pairs);
  for (size_t i = 0; i < n; i++) {
    const yaml_node_t *kn = node(ld, pairs[i].key);
    const char *name = text(kn);
    const struct key *k = keys;
    while (name != NULL && k->name != NULL && strcmp(k->name, name) != 0)
      k++;
    if (name == NULL || k->name == NULL)
      return fail(ld, kn, "%s: unknown key '%s'", what, name ? name : "?");
    for (size_t j = 0; j < i; j++)
      if (strcmp(key_text(ld, pairs[j].key), name) == 0)
        return fail(ld, kn, "%s: '%s' is given twice", what, name);
    char full[96];
    snprintf(full, sizeof(full), "%s.%s", what, name);
    int rc = set_value(ld, k, full, node(ld, pairs[i].value), base);
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Rules */
/* ---------------------------------------------------------------------------------------------- */

static bool known_endpoint(const char *name) {
  for (size_t i = 0; i < sizeof(ENDPOINTS) / sizeof(ENDPOINTS[0]); i++)
    if (strcmp(ENDPOINTS[i], name) == 0)
      return true;
  return false;
}

static int add_rule(struct ld *ld, const char *endpoint, const yaml_node_t *v) {
  struct sim_faults *f = ld->f;
  struct rule *rules = realloc(f->rules, (f->nrules + 1) * sizeof(*rules));
  if (rules == NULL)
    return fail(ld, v, "out of memory");
  f->rules = rules;
  struct rule *r = memset(&rules[f->nrules], 0, sizeof(*r));
  snprintf(r->endpoint, sizeof(r->endpoint), "%s", endpoint);
  r->errors[0] = 500;
  r->nerrors = 1;
  r->until_ms = NEVER;
  char what[48];
  snprintf(what, sizeof(what), "endpoints.%s", endpoint);
  int rc = apply_map(ld, v, what, RULE_KEYS, (char *)r);
  if (rc != 0)
    return rc;
  double sum = r->reset_rate + r->timeout_rate + r->error_rate + r->malformed_rate;
  if (sum > 1.0 + 1e-9)
    return fail(ld, v, "%s: reset, timeout, error and malformed rates sum to %g, over 1", what,
                sum);
  if (r->until_ms != NEVER && r->until_ms <= r->from_ms)
    return fail(ld, v, "%s: until_s must be after from_s", what);
  f->nrules++;
  return 0;
}

static int parse_endpoints(struct ld *ld, const yaml_node_t *map) {
  if (is_null(map))
    return 0;
  if (map->type != YAML_MAPPING_NODE)
    return fail(ld, map, "endpoints: expected a mapping of endpoint names to rules");
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
    const yaml_node_t *kn = node(ld, p->key);
    const yaml_node_t *v = node(ld, p->value);
    const char *name = text(kn);
    if (name == NULL || !known_endpoint(name))
      return fail(ld, kn, "endpoints: unknown endpoint '%s'", name ? name : "?");
    if (v->type != YAML_SEQUENCE_NODE) {
      int rc = add_rule(ld, name, v);
      if (rc != 0)
        return rc;
      continue;
    }
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
         it++) {
      int rc = add_rule(ld, name, node(ld, *it));
      if (rc != 0)
        return rc;
    }
  }
  return 0;
}

static int parse_top(struct ld *ld, const yaml_node_t *root) {
  struct sim_faults *f = ld->f;
  if (root == NULL || is_null(root))
    return 0;
  if (root->type != YAML_MAPPING_NODE)
    return fail(ld, root, "a fault plan is a mapping (seed, endpoints, events, tokens, dataverse)");
  for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
       p++) {
    const yaml_node_t *kn = node(ld, p->key);
    const yaml_node_t *v = node(ld, p->value);
    const char *name = text(kn) ? text(kn) : "?";
    int rc;
    double d;
    if (strcmp(name, "seed") == 0) {
      rc = number(ld, v, "seed", true, 0, 9007199254740992.0, &d);
      f->seed = (uint64_t)d;
      f->has_seed = true;
    } else if (strcmp(name, "endpoints") == 0) {
      rc = parse_endpoints(ld, v);
    } else if (strcmp(name, "events") == 0) {
      rc = apply_map(ld, v, "events", EVENT_KEYS, (char *)&f->events);
      f->has_events = true;
    } else if (strcmp(name, "tokens") == 0) {
      rc = apply_map(ld, v, "tokens", TOKEN_KEYS, (char *)&f->tokens);
      f->has_tokens = true;
    } else if (strcmp(name, "dataverse") == 0) {
      rc = apply_map(ld, v, "dataverse", DV_KEYS, (char *)&f->dv);
      f->has_dv = true;
    } else {
      rc = fail(ld, kn, "unknown key '%s' (expected seed, endpoints, events, tokens, dataverse)",
                name);
    }
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Create, load, destroy */
/* ---------------------------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

static void reseed(struct sim_faults *f) {
  for (size_t i = 0; i < f->nrules; i++) {
    uint64_t s = splitmix64(f->seed ^ splitmix64(i + 1));
    f->rules[i].rng = s != 0 ? s : 1; /* xorshift stays at zero forever */
  }
}

static int syntax_error(struct ld *ld, const yaml_parser_t *p) {
  if (p->error == YAML_MEMORY_ERROR)
    return fail(ld, NULL, "out of memory");
  int line = (int)p->problem_mark.line + 1;
  if (ld->why != NULL && ld->whylen > 0)
    snprintf(ld->why, ld->whylen, "line %d: YAML syntax error: %s%s%s", line,
             p->problem ? p->problem : "malformed YAML", p->context ? " " : "",
             p->context ? p->context : "");
  return CSR_ECONFIG;
}

static int parse(struct ld *ld, const char *yaml, size_t len) {
  yaml_parser_t p;
  if (!yaml_parser_initialize(&p))
    return fail(ld, NULL, "out of memory");
  yaml_parser_set_input_string(&p, (const unsigned char *)yaml, len);
  int rc;
  if (!yaml_parser_load(&p, &ld->doc)) {
    rc = syntax_error(ld, &p);
  } else {
    rc = parse_top(ld, yaml_document_get_root_node(&ld->doc));
    yaml_document_delete(&ld->doc);
  }
  yaml_parser_delete(&p);
  return rc;
}

int sim_faults_create(const char *yaml, size_t len, uint64_t seed, struct sim_faults **out,
                      char *why, size_t whylen) {
  if (out == NULL || (yaml == NULL && len > 0))
    return -EINVAL;
  *out = NULL;
  struct sim_faults *f = calloc(1, sizeof(*f));
  if (f == NULL)
    return -ENOMEM;
  f->seed = seed;
  f->events = EVENT_DEFAULTS;
  f->tokens = TOKEN_DEFAULTS;
  f->dv = DV_DEFAULTS;
  struct ld ld = {.f = f, .why = why, .whylen = whylen};
  int rc = parse(&ld, yaml ? yaml : "", len);
  if (rc != 0) {
    sim_faults_destroy(f);
    return rc;
  }
  reseed(f);
  *out = f;
  return 0;
}

int sim_faults_load(const char *path, uint64_t seed, struct sim_faults **out, char *why,
                    size_t whylen) {
  FILE *fp = fopen(path, "rb");
  if (fp == NULL) {
    int rc = -errno;
    if (why != NULL && whylen > 0)
      snprintf(why, whylen, "%s: %s", path, strerror(-rc));
    return rc;
  }
  char *buf = NULL;
  size_t len = 0, cap = 0, got;
  do {
    if (len + 4096 > cap) {
      char *nb = realloc(buf, cap = cap * 2 + 4096);
      if (nb == NULL) {
        free(buf);
        fclose(fp);
        return -ENOMEM;
      }
      buf = nb;
    }
    got = fread(buf + len, 1, cap - len, fp);
    len += got;
  } while (got > 0);
  fclose(fp);
  char inner[256] = "";
  int rc = sim_faults_create(buf, len, seed, out, inner, sizeof(inner));
  free(buf);
  if (rc != 0 && why != NULL && whylen > 0)
    snprintf(why, whylen, "%s: %s", path, inner);
  return rc;
}

void sim_faults_destroy(struct sim_faults *f) {
  if (f == NULL)
    return;
  free(f->rules);
  free(f);
}

/* ---------------------------------------------------------------------------------------------- */
/* Decisions */
/* ---------------------------------------------------------------------------------------------- */

static bool names_csu(const struct rule *r, int csu) {
  for (unsigned i = 0; i < r->ncsus; i++)
    if (r->csus[i] == csu)
      return true;
  return false;
}

/* 0 = specific with a matching filter, 1 = specific, 2 = "*" with a matching filter, 3 = "*";
 * -1 when the rule does not apply. */
static int rank(const struct rule *r, const char *endpoint, int csu, uint64_t elapsed_ms) {
  if (elapsed_ms < r->from_ms || elapsed_ms >= r->until_ms)
    return -1;
  int base;
  if (strcmp(r->endpoint, endpoint) == 0)
    base = 0;
  else if (r->endpoint[0] == '*')
    base = 2;
  else
    return -1;
  if (r->ncsus == 0)
    return base + 1;
  return names_csu(r, csu) ? base : -1;
}

static struct rule *pick(struct sim_faults *f, const char *endpoint, int csu, uint64_t elapsed_ms) {
  struct rule *best = NULL;
  int best_rank = 4;
  for (size_t i = 0; i < f->nrules && best_rank > 0; i++) {
    int k = rank(&f->rules[i], endpoint, csu, elapsed_ms);
    if (k >= 0 && k < best_rank) {
      best = &f->rules[i];
      best_rank = k;
    }
  }
  return best;
}

/* A uniform double in [0, 1) from the top 53 bits. */
static double unit(uint64_t *rng) {
  return (double)(rx_rand64(rng) >> 11) * (1.0 / 9007199254740992.0);
}

void sim_faults_decide(struct sim_faults *f, const char *endpoint, int csu, uint64_t elapsed_ms,
                       struct sim_fault_decision *out) {
  memset(out, 0, sizeof(*out));
  if (f == NULL || endpoint == NULL)
    return;
  struct rule *r = pick(f, endpoint, csu, elapsed_ms);
  if (r == NULL)
    return;
  double u = unit(&r->rng);
  double edge = r->reset_rate;
  if (u < edge) {
    out->reset = true;
  } else if (u < (edge += r->timeout_rate)) {
    out->timeout = true;
  } else if (u < (edge += r->error_rate)) {
    out->status = r->errors[r->nerrors > 1 ? rx_rand64(&r->rng) % r->nerrors : 0];
    if (out->status == 429 || out->status == 503)
      out->retry_after_s = r->retry_after_s;
  } else if (u < edge + r->malformed_rate) {
    out->malformed = true;
  }
  out->latency_ms = r->latency_ms;
  if (r->jitter_ms > 0)
    out->latency_ms += rx_rand64(&r->rng) % (r->jitter_ms + 1);
}

const struct sim_event_faults *sim_faults_events(const struct sim_faults *f) {
  return f ? &f->events : &EVENT_DEFAULTS;
}

const struct sim_token_faults *sim_faults_tokens(const struct sim_faults *f) {
  return f ? &f->tokens : &TOKEN_DEFAULTS;
}

const struct sim_dv_limits *sim_faults_dv(const struct sim_faults *f) {
  return f ? &f->dv : &DV_DEFAULTS;
}

/* ---------------------------------------------------------------------------------------------- */
/* GET and POST /sim/faults (outside the gate: the control plane must answer during an outage) */
/* ---------------------------------------------------------------------------------------------- */

/* Moves `src`'s rules, and the sections it named, into `dst` in place: entra.c, events.c and
 * dataverse.c may hold pointers to dst's sections. */
static void replace(struct sim_faults *dst, struct sim_faults *src) {
  free(dst->rules);
  dst->rules = src->rules;
  dst->nrules = src->nrules;
  src->rules = NULL;
  src->nrules = 0;
  if (src->has_seed)
    dst->seed = src->seed;
  if (src->has_events)
    dst->events = src->events;
  if (src->has_tokens)
    dst->tokens = src->tokens;
  if (src->has_dv)
    dst->dv = src->dv;
  reseed(dst);
}

static void on_post(struct rx_http_request *req, void *arg) {
  struct sim *sim = arg;
  struct sim_faults *fresh;
  char why[256] = "";
  int rc = sim_faults_create(req->body, req->body_len, sim->opts.seed, &fresh, why, sizeof(why));
  if (rc != 0) {
    sim_respond_msg(req, 400, "error", why[0] ? why : csr_strerror(rc));
    return;
  }
  if (sim->faults == NULL) {
    /* Started without a plan: this one becomes it, with sections the body left at defaults. */
    sim->faults = fresh;
  } else {
    replace(sim->faults, fresh);
    sim_faults_destroy(fresh);
  }
  sim_respond_msg(req, 200, "ok", NULL);
}

static void write_rate(struct csr_jw *jw, const char *key, double v) {
  char num[32];
  snprintf(num, sizeof(num), "%.12g", v);
  csr_jw_knum_text(jw, key, num);
}

static void write_rule(struct csr_jw *jw, const struct rule *r) {
  csr_jw_obj(jw);
  csr_jw_kint(jw, "latency_ms", (int64_t)r->latency_ms);
  csr_jw_kint(jw, "latency_jitter_ms", (int64_t)r->jitter_ms);
  write_rate(jw, "error_rate", r->error_rate);
  csr_jw_key(jw, "errors");
  csr_jw_arr(jw);
  for (unsigned i = 0; i < r->nerrors; i++)
    csr_jw_int(jw, r->errors[i]);
  csr_jw_arr_end(jw);
  csr_jw_kint(jw, "retry_after_s", (int64_t)r->retry_after_s);
  write_rate(jw, "timeout_rate", r->timeout_rate);
  write_rate(jw, "reset_rate", r->reset_rate);
  write_rate(jw, "malformed_rate", r->malformed_rate);
  if (r->ncsus > 0) {
    csr_jw_key(jw, "csus");
    csr_jw_arr(jw);
    for (unsigned i = 0; i < r->ncsus; i++)
      csr_jw_int(jw, r->csus[i]);
    csr_jw_arr_end(jw);
  }
  write_rate(jw, "from_s", (double)r->from_ms / 1000.0);
  if (r->until_ms != NEVER)
    write_rate(jw, "until_s", (double)r->until_ms / 1000.0);
  csr_jw_obj_end(jw);
}

/* Rules grouped by endpoint in first-appearance order, each as a list (the order decides ties). */
static void write_endpoints(struct csr_jw *jw, const struct sim_faults *f) {
  csr_jw_key(jw, "endpoints");
  csr_jw_obj(jw);
  for (size_t i = 0; i < f->nrules; i++) {
    size_t j = 0;
    while (j < i && strcmp(f->rules[j].endpoint, f->rules[i].endpoint) != 0)
      j++;
    if (j < i)
      continue; /* written with the first rule of its endpoint */
    csr_jw_key(jw, f->rules[i].endpoint);
    csr_jw_arr(jw);
    for (j = i; j < f->nrules; j++)
      if (strcmp(f->rules[j].endpoint, f->rules[i].endpoint) == 0)
        write_rule(jw, &f->rules[j]);
    csr_jw_arr_end(jw);
  }
  csr_jw_obj_end(jw);
}

static void write_sections(struct csr_jw *jw, const struct sim_faults *f) {
  const struct sim_event_faults *e = sim_faults_events(f);
  const struct sim_token_faults *t = sim_faults_tokens(f);
  const struct sim_dv_limits *d = sim_faults_dv(f);
  csr_jw_key(jw, "events");
  csr_jw_obj(jw);
  write_rate(jw, "late_commit_rate", e->late_commit_rate);
  csr_jw_kint(jw, "late_commit_max_s", (int64_t)e->late_commit_max_s);
  csr_jw_kint(jw, "same_time_every_s", (int64_t)e->same_time_every_s);
  csr_jw_kint(jw, "same_time_burst", e->same_time_burst);
  csr_jw_kbool(jw, "unstable_tie_order", e->unstable_tie_order);
  csr_jw_kbool(jw, "stale_cache", e->stale_cache);
  csr_jw_kint(jw, "stale_cache_ttl_s", (int64_t)e->stale_cache_ttl_s);
  csr_jw_obj_end(jw);
  csr_jw_key(jw, "tokens");
  csr_jw_obj(jw);
  csr_jw_kint(jw, "lifetime_s", (int64_t)t->lifetime_s);
  csr_jw_kint(jw, "revoke_at_s", t->revoke_at_s);
  csr_jw_obj_end(jw);
  csr_jw_key(jw, "dataverse");
  csr_jw_obj(jw);
  csr_jw_kint(jw, "max_requests", d->max_requests);
  csr_jw_kint(jw, "window_s", (int64_t)d->window_s);
  csr_jw_kint(jw, "max_concurrent", d->max_concurrent);
  csr_jw_kbool(jw, "require_known_contact", d->require_known_contact);
  csr_jw_obj_end(jw);
}

static void on_get(struct rx_http_request *req, void *arg) {
  struct sim *sim = arg;
  const struct sim_faults *f = sim->faults;
  struct csr_jw jw;
  if (csr_jw_init(&jw) != 0) {
    rx_http_respond(req, 500, NULL, NULL, NULL, 0);
    return;
  }
  csr_jw_obj(&jw);
  csr_jw_kint(&jw, "seed", (int64_t)(f ? f->seed : sim->opts.seed));
  if (f != NULL) {
    write_endpoints(&jw, f);
  } else {
    csr_jw_key(&jw, "endpoints");
    csr_jw_obj(&jw);
    csr_jw_obj_end(&jw);
  }
  write_sections(&jw, f);
  csr_jw_obj_end(&jw);
  sim_respond_json(req, 200, &jw);
  csr_jw_free(&jw);
}

int sim_faults_routes(struct sim *sim) {
  int rc = rx_http_server_route(&sim->server, "GET", "/sim/faults", on_get, sim);
  if (rc == 0)
    rc = rx_http_server_route(&sim->server, "POST", "/sim/faults", on_post, sim);
  return rc;
}
