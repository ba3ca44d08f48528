/* Secrets of the configuration: client secrets, passwords and tokens, named by *_env and *_file
 * keys. config.c queues each one where its key is walked; they are read only once the whole file
 * is valid, so a typo further down is reported even where a secret is not set. A secret's value
 * never goes into a message, and a file's copy is wiped before it is freed. */
#include "config_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECRET_MAX (64u << 10)

struct csr__pending {
  struct csr__pending *next;
  enum csr__pend_kind kind;
  const char *what; /* variable name or file path */
  char **dest;
  char **source; /* "env NAME" / "file PATH", or NULL */
  int header;    /* the value goes into an HTTP header: no line breaks */
  int line;
  char path[CSR__PATH_MAX];
};

int csr__add_pending(struct csr__ld *ld, enum csr__pend_kind kind, const char *what, char **dest,
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
  if (p->kind == CSR__PEND_INGRESS) {
    if (cfg->ingress.token == NULL && !csr_host_is_loopback(cfg->ingress.listen.host))
      return csr__fail(ld, p->line, p->path, "no token set; refusing a non-loopback listener");
    return 0;
  }
  char *value = NULL;
  if (p->kind == CSR__PEND_FILE) {
    int rc = read_secret_file(ld, p, &value);
    if (rc != 0)
      return rc;
  } else {
    const char *env = getenv(p->what);
    if (env == NULL || env[0] == '\0') {
      if (p->kind == CSR__PEND_TOKEN)
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
    const char *kind = p->kind == CSR__PEND_FILE ? "file" : "env";
    size_t n = strlen(kind) + strlen(p->what) + 2;
    if ((*p->source = csr__arena_alloc(ld->arena, n)) == NULL)
      return csr__oom(ld);
    snprintf(*p->source, n, "%s %s", kind, p->what);
  }
  return 0;
}

int csr__resolve_pending(struct csr__ld *ld) {
  for (struct csr__pending *p = ld->pending; p; p = p->next) {
    int rc = resolve_one(ld, p);
    if (rc != 0)
      return rc;
  }
  return 0;
}
