/* The values of single keys: string checks, converters of custom value types (root URLs, listen
 * addresses, start_from, enrich, fields) and the public listen helpers. The key tables in config.c
 * name these; nothing here looks at another key or at the rest of the configuration. */
#include "config_internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "csurelay/timefmt.h"

/* ---------------------------------------------------------------------------------------------- */
/* String checks (never quote the value: it may be a secret pasted into the wrong key)            */
/* ---------------------------------------------------------------------------------------------- */

const char *csr__check_name(const char *s) {
  size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-");
  return s[n] == '\0' && n <= 64 ? NULL : "must be at most 64 letters, digits, '_', '-' or '.'";
}

const char *csr__check_env_name(const char *s) {
  size_t n = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_");
  if (s[n] != '\0' || isdigit((unsigned char)s[0]))
    return "must be the name of an environment variable (letters, digits, '_'), not a value";
  return NULL;
}

const char *csr__check_event_type(const char *s) {
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

const char *csr__check_http_url(const char *s) {
  return has_scheme(s, http_schemes) ? NULL : "expected an http:// or https:// URL with a host";
}

const char *csr__check_broker(const char *s) {
  static const char *const schemes[] = {"tcp://", "ssl://", "mqtt://", "mqtts://", NULL};
  return has_scheme(s, schemes) ? NULL : "expected tcp://, ssl://, mqtt:// or mqtts:// and a host";
}

const char *csr__check_topic(const char *s) {
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

const char *csr__check_target(const char *s) {
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

/* A root URL: http(s), no query or fragment, always ending in '/'. */
int csr__text_root_url(struct csr__ld *ld, const struct csr__key *key, const char *text, int line,
                       const char *path, void *base) {
  const char *problem = csr__check_http_url(text);
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
  *CSR__FIELD(base, key->off, char *) = url;
  return 0;
}

int csr__text_listen(struct csr__ld *ld, const struct csr__key *key, const char *text, int line,
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
  *CSR__FIELD(base, key->off, struct csr_listen) =
      (struct csr_listen){.host = host, .port = l.port};
  return 0;
}

/* "-24h", "-30m", "-90s", "-7d", "-500ms", "0s", "now"; returns 1 when `s` is not relative. */
static int parse_relative(const char *s, int64_t *ms, const char **why) {
  static const struct {
    const char *unit;
    int64_t ms;
  } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", CSR__DAY_MS}};
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
    else if (v > 36500 * CSR__DAY_MS / units[i].ms)
      *why = "a relative start reaches back at most 36500 days";
    *ms = -v * units[i].ms;
    return 0;
  }
  return 1;
}

/* An absolute start. csr_time_parse() takes any year from 0001, but a start has always been limited
 * to 1970 on, judged by the year as written, before its offset; that rule stays here. */
static const char *parse_start_instant(const char *text, int64_t *ms) {
  const char *why = NULL;
  if (csr_time_parse_why(text, ms, &why) != 0)
    return why;
  return strncmp(text, "1970", 4) < 0 ? "not a valid date and time" : NULL;
}

int csr__text_start_from(struct csr__ld *ld, const struct csr__key *key, const char *text, int line,
                         const char *path, void *base) {
  const char *why = NULL;
  int64_t ms = 0;
  int relative = parse_relative(text, &ms, &why) == 0;
  if (!relative && strlen(text) >= 10 && text[4] == '-')
    why = parse_start_instant(text, &ms);
  else if (!relative)
    why = "expected a relative time (-24h, -30m, -90s, -7d, now) or an ISO-8601 instant "
          "(2024-07-24T00:00:00Z)";
  if (why != NULL)
    return csr__fail(ld, line, path, "%s, got '%.64s'", why, text);
  *CSR__FIELD(base, key->off, bool) = relative;
  *CSR__FIELD(base, key->off2, int64_t) = ms;
  return 0;
}

int csr__node_enrich(struct csr__ld *ld, const struct csr__key *key, yaml_node_t *node,
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
  *CSR__FIELD(base, key->off, unsigned) = bits;
  return 0;
}

/* fields: {target: source, ...}, in the order written. */
int csr__node_fields(struct csr__ld *ld, const struct csr__key *key, yaml_node_t *node,
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
    const char *problem = csr__check_target(target);
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
  *CSR__FIELD(base, key->off, struct csr_field_map *) = map;
  *CSR__FIELD(base, key->off2, size_t) = n;
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Listen addresses                                                                               */
/* ---------------------------------------------------------------------------------------------- */

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
