/* A small Prometheus registry. Families and series are linked lists: there are tens of them, they
 * are created at start-up, and the hot path holds direct pointers, so no lookup structure is needed. */
#include "csurelay/metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void csr_metrics_init(struct csr_metrics *m) {
  *m = (struct csr_metrics){0};
}

static void family_free(struct csr_family *fam) {
  struct csr_series *s = fam->_series;
  while (s) {
    struct csr_series *next = s->_next;
    free(s->_labels);
    free(s->buckets);
    free(s);
    s = next;
  }
  free(fam->_name);
  free(fam->_help);
  free(fam->_bounds);
  free(fam);
}

void csr_metrics_destroy(struct csr_metrics *m) {
  for (struct csr_family *f = m->_head, *next; f; f = next) {
    next = f->_next;
    family_free(f);
  }
  for (struct csr_collector *c = m->_collectors, *next; c; c = next) {
    next = c->_next;
    free(c);
  }
  *m = (struct csr_metrics){0};
}

struct csr_family *csr_metrics_family(struct csr_metrics *m, const char *name, const char *help,
                                      enum csr_metric_type type, const double *bounds,
                                      size_t nbounds) {
  for (struct csr_family *f = m->_head; f; f = f->_next)
    if (strcmp(f->_name, name) == 0)
      return f->_type == type ? f : NULL;
  struct csr_family *fam = calloc(1, sizeof(*fam));
  if (fam == NULL)
    return NULL;
  fam->_name = strdup(name);
  fam->_help = strdup(help ? help : "");
  fam->_type = type;
  if (type == CSR_HISTOGRAM && nbounds > 0) {
    fam->_bounds = malloc(nbounds * sizeof(double));
    if (fam->_bounds)
      memcpy(fam->_bounds, bounds, nbounds * sizeof(double));
    fam->_nbounds = nbounds;
  }
  if (!fam->_name || !fam->_help || (fam->_nbounds && !fam->_bounds)) {
    family_free(fam);
    return NULL;
  }
  if (m->_tail)
    m->_tail->_next = fam;
  else
    m->_head = fam;
  m->_tail = fam;
  return fam;
}

/* Label values are escaped as the text format requires: backslash, quote and newline. */
static char *format_labels(va_list ap) {
  char buf[512];
  size_t pos = 0;
  const char *key;
  while ((key = va_arg(ap, const char *)) != NULL) {
    const char *val = va_arg(ap, const char *);
    int n = snprintf(buf + pos, sizeof(buf) - pos, "%s%s=\"", pos ? "," : "", key);
    if (n < 0 || (size_t)n >= sizeof(buf) - pos)
      return NULL;
    pos += (size_t)n;
    for (const char *p = val ? val : ""; *p; p++) {
      if (pos + 3 >= sizeof(buf))
        return NULL;
      if (*p == '\\' || *p == '"' || *p == '\n')
        buf[pos++] = '\\';
      buf[pos++] = *p == '\n' ? 'n' : *p;
    }
    if (pos + 2 >= sizeof(buf))
      return NULL;
    buf[pos++] = '"';
  }
  buf[pos] = '\0';
  return strdup(buf);
}

struct csr_series *csr_metrics_series(struct csr_family *fam, ...) {
  va_list ap;
  va_start(ap, fam);
  char *labels = format_labels(ap);
  va_end(ap);
  if (labels == NULL)
    return NULL;
  for (struct csr_series *s = fam->_series; s; s = s->_next) {
    if (strcmp(s->_labels, labels) == 0) {
      free(labels);
      return s;
    }
  }
  struct csr_series *s = calloc(1, sizeof(*s));
  if (s == NULL || (fam->_type == CSR_HISTOGRAM &&
                    !(s->buckets = calloc(fam->_nbounds + 1, sizeof(uint64_t))))) {
    free(s);
    free(labels);
    return NULL;
  }
  s->_labels = labels;
  s->_family = fam;
  if (fam->_series_tail)
    fam->_series_tail->_next = s;
  else
    fam->_series = s;
  fam->_series_tail = s;
  return s;
}

void csr_series_observe(struct csr_series *s, double value) {
  const struct csr_family *fam = s->_family;
  size_t i = 0;
  while (i < fam->_nbounds && value > fam->_bounds[i])
    i++;
  s->buckets[i]++;
  s->sum += value;
  s->count++;
}

int csr_metrics_collector(struct csr_metrics *m, void (*fn)(void *arg), void *arg) {
  struct csr_collector *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return -ENOMEM;
  c->fn = fn;
  c->arg = arg;
  c->_next = m->_collectors;
  m->_collectors = c;
  return 0;
}

static const char *type_name(enum csr_metric_type t) {
  return t == CSR_COUNTER ? "counter" : t == CSR_GAUGE ? "gauge" : "histogram";
}

static void render_histogram(FILE *f, const struct csr_family *fam, const struct csr_series *s) {
  const char *sep = s->_labels[0] ? "," : "";
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= fam->_nbounds; i++) {
    cumulative += s->buckets[i];
    if (i < fam->_nbounds)
      fprintf(f, "%s_bucket{%s%sle=\"%g\"} %llu\n", fam->_name, s->_labels, sep, fam->_bounds[i],
              (unsigned long long)cumulative);
    else
      fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", fam->_name, s->_labels, sep,
              (unsigned long long)cumulative);
  }
  const char *open = s->_labels[0] ? "{" : "", *close = s->_labels[0] ? "}" : "";
  fprintf(f, "%s_sum%s%s%s %.17g\n", fam->_name, open, s->_labels, close, s->sum);
  fprintf(f, "%s_count%s%s%s %llu\n", fam->_name, open, s->_labels, close,
          (unsigned long long)s->count);
}

int csr_metrics_render(struct csr_metrics *m, char **out, size_t *len) {
  for (struct csr_collector *c = m->_collectors; c; c = c->_next)
    c->fn(c->arg);
  FILE *f = open_memstream(out, len);
  if (f == NULL)
    return -errno;
  for (const struct csr_family *fam = m->_head; fam; fam = fam->_next) {
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", fam->_name, fam->_help, fam->_name,
            type_name(fam->_type));
    for (const struct csr_series *s = fam->_series; s; s = s->_next) {
      if (fam->_type == CSR_HISTOGRAM)
        render_histogram(f, fam, s);
      else if (s->_labels[0])
        fprintf(f, "%s{%s} %.15g\n", fam->_name, s->_labels, s->value);
      else
        fprintf(f, "%s %.15g\n", fam->_name, s->value);
    }
  }
  return fclose(f) == 0 ? 0 : -ENOMEM;
}
