/* csurelay configuration: the key tables of SPEC section 7, their cross-references and cross-field
 * rules, and the public entry points. The generic walker is in config_yaml.c, the checks and
 * converters of single values in config_values.c, the reading of secrets in config_secrets.c.
 *
 * Sections are walked in table order (identities before csus before sinks before routes before
 * ingress), so a reference is checked where it is written, with that key's line. Secrets are read
 * last, once everything else is valid: a typo is reported even where the secrets are not set. */
#include "config_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_MAX (4u << 20)

_Static_assert(sizeof(enum csr_fsync) == sizeof(int), "CK_ENUM stores an int");
_Static_assert(sizeof(enum csr_sink_type) == sizeof(int), "CK_ENUM stores an int");
/* find_named() and unique_name() read an element's name as its first member. */
_Static_assert(offsetof(struct csr_identity, name) == 0, "name comes first");
_Static_assert(offsetof(struct csr_csu, name) == 0, "name comes first");
_Static_assert(offsetof(struct csr_sink_conf, name) == 0, "name comes first");

static const char *const sink_types[] = {"cij", "mqtt", "webhook", NULL}; /* csr_sink_type order */

/* ---------------------------------------------------------------------------------------------- */
/* Where a key was written                                                                        */
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

/* Queues a secret for csr__resolve_pending(); its errors name `key` of the walked table `t`. */
static int add_pending(struct csr__ld *ld, const struct csr__table *t, const struct csr__walk *w,
                       const char *path, const char *key, enum csr__pend_kind kind,
                       const char *what, char **dest, char **source, int header) {
  char child[CSR__PATH_MAX];
  csr__path_join(child, sizeof(child), path, key);
  return csr__add_pending(ld, kind, what, dest, source, header, key_line(t, w, key), child);
}

/* ---------------------------------------------------------------------------------------------- */
/* References by name                                                                             */
/* ---------------------------------------------------------------------------------------------- */

/* The element named `name` in an array of structs whose first member is `char *name`, or NULL. */
static void *find_named(const void *arr, size_t n, size_t stride, const char *name) {
  for (size_t i = 0; name && i < n; i++) {
    char *const *elem = (char *const *)((const char *)arr + i * stride);
    if (*elem && strcmp(*elem, name) == 0)
      return (void *)elem;
  }
  return NULL;
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

/* A reference to an element of `arr`: its name goes to the char * at off, the element to off2. */
static int set_ref(struct csr__ld *ld, const struct csr__key *key, const char *text, int line,
                   const char *path, void *base, const char *what, void *arr, size_t n,
                   size_t stride) {
  char **elem = find_named(arr, n, stride, text);
  if (elem == NULL)
    return ref_error(ld, line, path, what, text, arr, n, stride);
  *CSR__FIELD(base, key->off, char *) = *elem;
  *CSR__FIELD(base, key->off2, void *) = elem;
  return 0;
}

static int text_identity_ref(struct csr__ld *ld, const struct csr__key *key, const char *text,
                             int line, const char *path, void *base) {
  struct csr_config *cfg = ld->cfg;
  return set_ref(ld, key, text, line, path, base, "identity", cfg->identities, cfg->n_identities,
                 sizeof(cfg->identities[0]));
}

static int text_sink_ref(struct csr__ld *ld, const struct csr__key *key, const char *text, int line,
                         const char *path, void *base) {
  struct csr_config *cfg = ld->cfg;
  return set_ref(ld, key, text, line, path, base, "sink", cfg->sinks, cfg->n_sinks,
                 sizeof(cfg->sinks[0]));
}

static int text_csu_ref(struct csr__ld *ld, const struct csr__key *key, const char *text, int line,
                        const char *path, void *base) {
  struct csr_config *cfg = ld->cfg;
  return set_ref(ld, key, text, line, path, base, "csu", cfg->csus, cfg->n_csus,
                 sizeof(cfg->csus[0]));
}

/* ---------------------------------------------------------------------------------------------- */
/* Cross-field rules                                                                              */
/* ---------------------------------------------------------------------------------------------- */

/* One of two exclusive secret sources; `need` says whether one is required. */
static int secret_source(struct csr__ld *ld, const struct csr__table *t, const struct csr__walk *w,
                         const char *path, const char *env_key, const char *env,
                         const char *file_key, const char *file, int need, char **dest,
                         char **source) {
  char msg[160];
  if (env != NULL && file != NULL) {
    snprintf(msg, sizeof(msg), "give either %s or %s, not both", env_key, file_key);
    return fail_at(ld, t, w, path, file_key, msg);
  }
  if (env == NULL && file == NULL) {
    snprintf(msg, sizeof(msg), "one of %s or %s is required", env_key, file_key);
    return need ? fail_at(ld, t, w, path, env_key, msg) : 0;
  }
  return add_pending(ld, t, w, path, env ? env_key : file_key, env ? CSR__PEND_ENV : CSR__PEND_FILE,
                     env ? env : file, dest, source, 0);
}

/* The first element of a list that has the same name as `elem`, a later one: "a csu named 'x' is
 * already defined on line 8". Elements are t->size apart and start with `char *name`. */
static int unique_name(struct csr__ld *ld, const struct csr__table *t, const struct csr__walk *w,
                       const char *path, const void *first, const void *elem) {
  const char *name = *(char *const *)elem;
  char msg[96];
  for (const char *e = first; e < (const char *)elem; e += t->size) {
    if (strcmp(*(char *const *)e, name) == 0) {
      snprintf(msg, sizeof(msg), "a %s named '%s' is already defined on line %d", t->what, name,
               *(const int *)(e + t->line_off));
      return fail_at(ld, t, w, path, "name", msg);
    }
  }
  return 0;
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
  if (cfg->admin.token_env == NULL)
    return 0;
  return add_pending(ld, &admin_table, w, path, "token_env", CSR__PEND_TOKEN, cfg->admin.token_env,
                     &cfg->admin.token, NULL, 1);
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
  return unique_name(ld, &csu_table, w, path, cfg->csus, base);
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
  int rc = unique_name(ld, t, w, path, cfg->sinks, sink);
  if (rc != 0)
    return rc;
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
      return add_pending(ld, t, w, path, "auth_header_env", CSR__PEND_ENV, sink->auth_header_env,
                         &sink->auth_header, NULL, 1);
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
  const struct csr__table *t = &ingress_table;
  cfg->ingress.present = true;
  int rc = 0;
  if (cfg->ingress.token_env != NULL)
    rc = add_pending(ld, t, w, path, "token_env", CSR__PEND_TOKEN, cfg->ingress.token_env,
                     &cfg->ingress.token, NULL, 1);
  /* The loopback rule waits for the token, so it is queued after it and reported at the same key.
   */
  return rc ? rc : add_pending(ld, t, w, path, "token_env", CSR__PEND_INGRESS, NULL, NULL, NULL, 0);
}

/* ---------------------------------------------------------------------------------------------- */
/* The key tables (SPEC section 7)                                                                */
/* ---------------------------------------------------------------------------------------------- */

#define U64_MAX_MS (30 * CSR__DAY_MS) /* no duration in this file needs more than 30 days */
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
    {"listen", CK_TEXT, 0, "127.0.0.1:8686", .off = SUB(admin, listen), .text = csr__text_listen,
     .desc = "host:port of the admin API (port 0: ephemeral)"},
    {"token_env", CK_STR, 0, .off = SUB(admin, token_env), .check = csr__check_env_name,
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
    {"listen", CK_TEXT, 0, "127.0.0.1:8687", .off = SUB(ingress, listen), .text = csr__text_listen,
     .desc = "host:port of POST /v1/customers"},
    {"token_env", CK_STR, 0, .off = SUB(ingress, token_env), .check = csr__check_env_name,
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
     .check = csr__check_http_url,
     .desc = "Entra ID authority; token URL = {authority}/{tenant}/..."},
    {"tenant", CK_STR, CKF_REQUIRED, .off = OFF(tenant), .desc = "tenant id or domain"},
    {"client_id", CK_STR, CKF_REQUIRED, .off = OFF(client_id), .desc = "app registration id"},
    {"client_secret_env", CK_STR, 0, .off = OFF(client_secret_env), .check = csr__check_env_name,
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
    {"name", CK_STR, CKF_REQUIRED, .off = OFF(name), .check = csr__check_name,
     .desc = "unique name; part of every event id"},
    {"url", CK_TEXT, CKF_REQUIRED, .off = OFF(url), .text = csr__text_root_url,
     .desc = "Retail Server root; the API is under {url}Commerce/"},
    {"oun", CK_STR, CKF_REQUIRED, .off = OFF(oun), .desc = "operating unit number"},
    {"identity", CK_TEXT, CKF_REQUIRED, .off = OFF(identity_name), .off2 = OFF(identity),
     .text = text_identity_ref, .desc = "name under identities"},
    {"event_types", CK_STRLIST, CKF_REQUIRED | CKF_NONEMPTY, .off = OFF(event_types),
     .off2 = OFF(n_event_types), .check = csr__check_event_type,
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
     .text = csr__text_start_from, .desc = "first start: -24h, -30m, now, or an ISO-8601 instant"},
};
TABLE(csu_table, csu_keys, .what = "csu", .size = sizeof(T), .line_off = OFF(line),
      .finish = finish_csu);
#undef T

#define T struct csr_sink_conf
static const struct csr__key sink_keys[] = {
    {"name", CK_STR, CKF_REQUIRED, .off = OFF(name), .check = csr__check_name,
     .desc = "unique name, used by routes"},
    {"type", CK_ENUM, CKF_REQUIRED, .off = OFF(type), .names = sink_types,
     .desc = "cij, mqtt or webhook"},
    {"max_in_flight", CK_UINT, 0, NULL, 1, 65535, OFF(max_in_flight),
     .desc = "concurrent deliveries (cij 16, at most 52; mqtt 1000; webhook 32)"},
    {"rate_per_s", CK_DOUBLE, 0, NULL, 0, 1000000, OFF(rate_per_s),
     .desc = "deliveries per second, 0 = unlimited (cij 40)"},
    {"timeout_ms", CK_U64, 0, "0", 0, 3600000, OFF(timeout_ms),
     .desc = "per request; 0 = limits.http_timeout_ms"},
    {"dataverse_url", CK_TEXT, CKF_REQUIRED, .off = OFF(dataverse_url), .text = csr__text_root_url,
     .mask = M_CIJ, .desc = "Dataverse organization root"},
    {"identity", CK_TEXT, CKF_REQUIRED, .off = OFF(identity_name), .off2 = OFF(identity),
     .text = text_identity_ref, .mask = M_CIJ, .desc = "name under identities"},
    {"broker", CK_STR, CKF_REQUIRED, .off = OFF(broker), .check = csr__check_broker, .mask = M_MQTT,
     .desc = "tcp://, ssl://, mqtt:// or mqtts:// host:port"},
    {"client_id", CK_STR, CKF_REQUIRED, .off = OFF(client_id), .mask = M_MQTT,
     .desc = "stable client id of the persistent session"},
    {"topic", CK_STR, CKF_REQUIRED, .off = OFF(topic), .check = csr__check_topic, .mask = M_MQTT,
     .desc = "template: {csu} {channel} {type} {dataarea} {terminal}"},
    {"qos", CK_INT, 0, "1", 0, 2, OFF(qos), .mask = M_MQTT, .desc = "0, 1 or 2"},
    {"username", CK_STR, 0, .off = OFF(username), .mask = M_MQTT, .desc = "broker user"},
    {"password_env", CK_STR, 0, .off = OFF(password_env), .check = csr__check_env_name,
     .mask = M_MQTT, .desc = "variable holding the broker password"},
    {"password_file", CK_STR, 0, .off = OFF(password_file), .mask = M_MQTT,
     .desc = "file holding the broker password"},
    {"keepalive_s", CK_U64, 0, "60", 0, 65535, OFF(keepalive_s), .mask = M_MQTT,
     .desc = "MQTT keep-alive; 0 disables it"},
    {"url", CK_STR, CKF_REQUIRED, .off = OFF(url), .check = csr__check_http_url, .mask = M_WEBHOOK,
     .desc = "endpoint receiving the POSTs"},
    {"auth_header_env", CK_STR, 0, .off = OFF(auth_header_env), .check = csr__check_env_name,
     .mask = M_WEBHOOK, .desc = "variable holding the Authorization header value"},
};
TABLE(sink_table, sink_keys, .what = "sink", .size = sizeof(T), .line_off = OFF(line),
      .prepare = sink_prepare, .finish = finish_sink, .variants = sink_types);
#undef T

#define T struct csr_delivery_conf
static const struct csr__key delivery_keys[] = {
    {"sink", CK_TEXT, CKF_REQUIRED, .off = OFF(sink_name), .off2 = OFF(sink), .text = text_sink_ref,
     .desc = "name under sinks"},
    {"trigger", CK_STR, 0, .off = OFF(trigger), .check = csr__check_target,
     .desc = "cij: the custom trigger's action name"},
    {"fields", CK_NODE, 0, .off = OFF(fields), .off2 = OFF(n_fields), .node = csr__node_fields,
     .desc = "cij: trigger parameter → path or $event_time/$now/$contact_id/$event_id"},
};
TABLE(delivery_table, delivery_keys, .what = "delivery", .size = sizeof(T), .line_off = OFF(line),
      .finish = finish_delivery);
#undef T

#define T struct csr_route
static const struct csr__key route_keys[] = {
    {"event_type", CK_STR, CKF_REQUIRED, .off = OFF(event_type), .check = csr__check_event_type,
     .desc = "Checkout, AddCartLines, ..."},
    {"enrich", CK_NODE, 0, .off = OFF(enrich), .node = csr__node_enrich,
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
     .sub = &identity_table, .check = csr__check_name, .desc = "OAuth2 client credentials by name"},
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
  return rc ? rc : csr__resolve_pending(ld);
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
  return cfg ? find_named(cfg->sinks, cfg->n_sinks, sizeof(cfg->sinks[0]), name) : NULL;
}

struct csr_csu *csr_config_csu(const struct csr_config *cfg, const char *name) {
  return cfg ? find_named(cfg->csus, cfg->n_csus, sizeof(cfg->csus[0]), name) : NULL;
}

struct csr_identity *csr_config_identity(const struct csr_config *cfg, const char *name) {
  return cfg ? find_named(cfg->identities, cfg->n_identities, sizeof(cfg->identities[0]), name)
             : NULL;
}
