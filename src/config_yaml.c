/* The generic half of the config loader: arena, libyaml document, ${VAR} substitution and the
 * table-driven walker (see config_yaml.h). libyaml's errors are converted here and nowhere else. */
#include "config_yaml.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------------- */
/* Arena                                                                                          */
/* ---------------------------------------------------------------------------------------------- */

#define CHUNK_SIZE 8192
#define ALIGN      16

struct chunk {
  struct chunk *next;
  size_t used, cap;
  max_align_t data[];
};

struct csr__arena {
  struct chunk *head;
};

struct csr__arena *csr__arena_create(void) {
  return calloc(1, sizeof(struct csr__arena));
}

void csr__arena_destroy(struct csr__arena *arena) {
  if (arena == NULL)
    return;
  struct chunk *c = arena->head;
  while (c) {
    struct chunk *next = c->next;
    free(c);
    c = next;
  }
  free(arena);
}

void *csr__arena_alloc(struct csr__arena *arena, size_t size) {
  size = (size + ALIGN - 1) & ~(size_t)(ALIGN - 1);
  if (size == 0)
    size = ALIGN;
  struct chunk *c = arena->head;
  if (c == NULL || c->cap - c->used < size) {
    /* Big blocks get a chunk of their own behind the head, so the head's free space stays usable.
     */
    size_t cap = size > CHUNK_SIZE / 4 ? size : CHUNK_SIZE;
    struct chunk *n = malloc(sizeof(*n) + cap);
    if (n == NULL)
      return NULL;
    n->used = 0;
    n->cap = cap;
    if (c != NULL && cap != CHUNK_SIZE) {
      n->next = c->next;
      c->next = n;
    } else {
      n->next = c;
      arena->head = n;
    }
    c = n;
  }
  void *p = (char *)c->data + c->used;
  c->used += size;
  memset(p, 0, size);
  return p;
}

char *csr__arena_strndup(struct csr__arena *arena, const char *s, size_t len) {
  char *p = csr__arena_alloc(arena, len + 1);
  if (p != NULL) {
    memcpy(p, s, len);
    p[len] = '\0';
  }
  return p;
}

char *csr__arena_strdup(struct csr__arena *arena, const char *s) {
  return csr__arena_strndup(arena, s, strlen(s));
}

int csr__read_file(const char *path, size_t max, char **out, size_t *out_len) {
  struct stat st;
  int rc = 0, fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  if (fstat(fd, &st) != 0)
    rc = -errno;
  else if (S_ISDIR(st.st_mode))
    rc = -EISDIR;
  /* Sized from fstat, but read to EOF: the size is a hint (a pipe, a file being rewritten). */
  size_t len = 0, cap = rc == 0 && (size_t)st.st_size < max ? (size_t)st.st_size + 1 : max + 1;
  char *buf = rc == 0 ? malloc(cap + 1) : NULL;
  if (rc == 0 && buf == NULL)
    rc = -ENOMEM;
  while (rc == 0 && len <= max) {
    if (len == cap) {
      char *bigger = realloc(buf, (cap = max + 1) + 1);
      if (bigger == NULL) {
        rc = -ENOMEM;
        break;
      }
      buf = bigger;
    }
    ssize_t r = read(fd, buf + len, cap - len);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      rc = -errno;
    if (r <= 0)
      break;
    len += (size_t)r;
  }
  close(fd);
  if (rc == 0 && len > max)
    rc = -EFBIG;
  if (rc != 0) {
    free(buf);
    return rc;
  }
  buf[len] = '\0';
  *out = buf;
  *out_len = len;
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Errors, paths, nodes                                                                           */
/* ---------------------------------------------------------------------------------------------- */

int csr__fail(struct csr__ld *ld, int line, const char *path, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  return csr_err_set(ld->err, ld->file, line, path, "%s", msg);
}

int csr__oom(struct csr__ld *ld) {
  csr_err_set(ld->err, ld->file, 0, "", "out of memory");
  return -ENOMEM;
}

int csr__line(const yaml_node_t *node) {
  return (int)node->start_mark.line + 1;
}

void csr__path_join(char *out, size_t n, const char *parent, const char *key) {
  int w = parent[0] ? snprintf(out, n, "%s.%s", parent, key) : snprintf(out, n, "%s", key);
  if (w < 0 && n > 0)
    out[0] = '\0';
}

static void path_index(char *out, size_t n, const char *parent, size_t i) {
  if (snprintf(out, n, "%s[%zu]", parent, i) < 0 && n > 0)
    out[0] = '\0';
}

static const char *node_kind(const yaml_node_t *node) {
  switch (node->type) {
    case YAML_MAPPING_NODE:
      return "mapping";
    case YAML_SEQUENCE_NODE:
      return "list";
    default:
      return "scalar";
  }
}

/* A plain empty, ~ or null scalar: "no value", which a section or list reads as empty. */
static int is_null(const yaml_node_t *node) {
  if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
    return 0;
  const char *v = (const char *)node->data.scalar.value;
  return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
         strcmp(v, "NULL") == 0;
}

static yaml_node_t *node_at(struct csr__ld *ld, int id) {
  return yaml_document_get_node(&ld->doc, id);
}

/* ---------------------------------------------------------------------------------------------- */
/* libyaml                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

static int syntax_error(struct csr__ld *ld, const yaml_parser_t *p, const char *yaml, size_t len) {
  if (p->error == YAML_MEMORY_ERROR)
    return csr__oom(ld);
  size_t at = p->problem_mark.index;
  int line = (int)p->problem_mark.line + 1;
  if (p->error == YAML_READER_ERROR) {
    /* The reader reports a byte offset, not a mark. */
    at = p->problem_offset;
    line = 1;
    for (size_t i = 0; i < at && i < len; i++)
      line += yaml[i] == '\n';
  }
  const char *problem = p->problem ? p->problem : "malformed YAML";
  const char *tab = at < len && yaml[at] == '\t' ? " (YAML indents with spaces, not tabs)" : "";
  if (p->context != NULL)
    return csr__fail(ld, line, "", "YAML syntax error: %s %s%s", problem, p->context, tab);
  return csr__fail(ld, line, "", "YAML syntax error: %s%s", problem, tab);
}

int csr__yaml_load(struct csr__ld *ld, const char *yaml, size_t len) {
  yaml_parser_t p;
  if (!yaml_parser_initialize(&p))
    return csr__oom(ld);
  yaml_parser_set_input_string(&p, (const unsigned char *)yaml, len);
  int rc = 0;
  if (!yaml_parser_load(&p, &ld->doc)) {
    rc = syntax_error(ld, &p, yaml, len);
  } else {
    /* A second document would be silently ignored; say so instead. */
    yaml_document_t extra;
    if (!yaml_parser_load(&p, &extra)) {
      rc = syntax_error(ld, &p, yaml, len);
    } else {
      yaml_node_t *root = yaml_document_get_root_node(&extra);
      if (root != NULL)
        rc = csr__fail(ld, csr__line(root), "", "only one YAML document is allowed");
      yaml_document_delete(&extra);
    }
    if (rc != 0) {
      yaml_document_delete(&ld->doc);
      memset(&ld->doc, 0, sizeof(ld->doc));
    }
  }
  yaml_parser_delete(&p);
  return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* ${VAR} substitution                                                                            */
/* ---------------------------------------------------------------------------------------------- */

#define EXPAND_MAX (64 * 1024)

struct buf {
  char *p;
  size_t len, cap;
};

static int buf_add(struct buf *b, const char *s, size_t n) {
  if (b->len + n + 1 > EXPAND_MAX)
    return -E2BIG;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 64;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL)
      return -ENOMEM;
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
  return 0;
}

static int is_name_char(char c, int first) {
  return c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (!first && c >= '0' && c <= '9');
}

/* One ${NAME} at v[i] (v[i] == '$', v[i + 1] == '{'); appends its value, returns the length used.
 */
static int expand_var(struct csr__ld *ld, struct buf *b, const char *v, size_t len, int line,
                      const char *path, size_t *used) {
  size_t j = 2;
  while (j < len && is_name_char(v[j], j == 2))
    j++;
  if (j == 2 || j >= len || v[j] != '}')
    return csr__fail(
        ld, line, path,
        "'${' must be followed by a variable name and '}' (write $${ for a literal ${)");
  char name[128];
  if (j - 2 >= sizeof(name))
    return csr__fail(ld, line, path, "environment variable name is too long");
  memcpy(name, v + 2, j - 2);
  name[j - 2] = '\0';
  const char *value = getenv(name);
  if (value == NULL)
    return csr__fail(ld, line, path, "environment variable %s is not set (used as ${%s})", name,
                     name);
  *used = j + 1;
  return buf_add(b, value, strlen(value));
}

static int expand(struct csr__ld *ld, const char *v, size_t len, int line, const char *path,
                  const char **out) {
  if (memchr(v, '$', len) == NULL) {
    *out = csr__arena_strndup(ld->arena, v, len);
    return *out ? 0 : csr__oom(ld);
  }
  struct buf b = {0};
  int rc = buf_add(&b, "", 0);
  for (size_t i = 0; rc == 0 && i < len;) {
    size_t used = 1;
    if (v[i] == '$' && i + 2 < len && v[i + 1] == '$' && v[i + 2] == '{') {
      rc = buf_add(&b, "${", 2);
      used = 3;
    } else if (v[i] == '$' && i + 1 < len && v[i + 1] == '{') {
      rc = expand_var(ld, &b, v + i, len - i, line, path, &used);
    } else {
      rc = buf_add(&b, v + i, 1);
    }
    i += used;
  }
  if (rc == -E2BIG)
    rc = csr__fail(ld, line, path, "value is longer than %d bytes after substitution", EXPAND_MAX);
  else if (rc == -ENOMEM)
    rc = csr__oom(ld);
  if (rc == 0) {
    *out = csr__arena_strndup(ld->arena, b.p, b.len);
    rc = *out ? 0 : csr__oom(ld);
  }
  free(b.p);
  return rc;
}

int csr__scalar(struct csr__ld *ld, yaml_node_t *node, const char *path, const char **out) {
  if (node->type != YAML_SCALAR_NODE)
    return csr__fail(ld, csr__line(node), path, "expected a scalar value, got a %s",
                     node_kind(node));
  const char *v = (const char *)node->data.scalar.value;
  size_t len = node->data.scalar.length;
  if (memchr(v, '\0', len) != NULL)
    return csr__fail(ld, csr__line(node), path, "value contains a NUL character");
  return expand(ld, v, len, csr__line(node), path, out);
}

/* ---------------------------------------------------------------------------------------------- */
/* Scalar conversion                                                                              */
/* ---------------------------------------------------------------------------------------------- */

size_t csr__edit_distance(const char *a, const char *b, size_t cap) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 63 || lb > 63 || (la > lb ? la - lb : lb - la) > cap)
    return cap + 1;
  size_t prev[64], cur[64];
  for (size_t j = 0; j <= lb; j++)
    prev[j] = j;
  for (size_t i = 1; i <= la; i++) {
    cur[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
      size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
      cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
    }
    memcpy(prev, cur, (lb + 1) * sizeof(size_t));
  }
  return prev[lb];
}

/* "a, b or c" */
static const char *join_names(const char *const *names, char *out, size_t n) {
  size_t count = 0, w = 0;
  while (names[count])
    count++;
  out[0] = '\0';
  for (size_t i = 0; i < count && w < n; i++) {
    const char *sep = i == 0 ? "" : i + 1 == count ? " or " : ", ";
    int r = snprintf(out + w, n - w, "%s%s", sep, names[i]);
    if (r < 0)
      break;
    w += (size_t)r;
  }
  return out;
}

static int find_name(const char *const *names, const char *s) {
  for (int i = 0; names[i]; i++)
    if (strcmp(names[i], s) == 0)
      return i;
  return -1;
}

/* Decimal digits with an optional leading '-' only: no hex, octal, exponents or spaces. */
static int parse_int(const char *s, int64_t *out) {
  const char *p = s + (s[0] == '-');
  if (*p == '\0' || strlen(p) > 18)
    return -1;
  for (const char *q = p; *q; q++)
    if (*q < '0' || *q > '9')
      return -1;
  errno = 0;
  long long v = strtoll(s, NULL, 10);
  if (errno != 0)
    return -1;
  *out = v;
  return 0;
}

static int range_error(struct csr__ld *ld, const struct csr__key *key, int line, const char *path,
                       const char *text) {
  if (key->max == INT64_MAX)
    return csr__fail(ld, line, path, "must be at least %lld, got %.64s", (long long)key->min, text);
  return csr__fail(ld, line, path, "must be between %lld and %lld, got %.64s", (long long)key->min,
                   (long long)key->max, text);
}

static int set_integer(struct csr__ld *ld, const struct csr__key *key, const char *text, int line,
                       const char *path, void *field) {
  int64_t v;
  if (parse_int(text, &v) != 0)
    return csr__fail(ld, line, path, "expected an integer, got '%.64s'", text);
  if (v < key->min || v > key->max)
    return range_error(ld, key, line, path, text);
  if (key->type == CK_U64)
    *(uint64_t *)field = (uint64_t)v;
  else if (key->type == CK_UINT)
    *(unsigned *)field = (unsigned)v;
  else
    *(int *)field = (int)v;
  return 0;
}

static int set_double(struct csr__ld *ld, const struct csr__key *key, const char *text, int line,
                      const char *path, void *field) {
  char *end = NULL;
  errno = 0;
  double v = strtod(text, &end);
  if (text[0] == '\0' || *end != '\0' || errno != 0 || !isfinite(v))
    return csr__fail(ld, line, path, "expected a number, got '%.64s'", text);
  if (v < (double)key->min || v > (double)key->max)
    return range_error(ld, key, line, path, text);
  *(double *)field = v;
  return 0;
}

static int set_string(struct csr__ld *ld, const struct csr__key *key, const char *text, int line,
                      const char *path, void *field) {
  char names[256];
  if (text[0] == '\0')
    return csr__fail(ld, line, path, "must not be empty");
  if (key->names != NULL && find_name(key->names, text) < 0)
    return csr__fail(ld, line, path, "expected %s, got '%.64s'",
                     join_names(key->names, names, sizeof(names)), text);
  const char *problem = key->check ? key->check(text) : NULL;
  if (problem != NULL)
    return csr__fail(ld, line, path, "%s", problem);
  /* `text` already lives in the arena (csr__scalar, or a static default: copy that). */
  char *copy = csr__arena_strdup(ld->arena, text);
  if (copy == NULL)
    return csr__oom(ld);
  *(char **)field = copy;
  return 0;
}

static int set_text(struct csr__ld *ld, const struct csr__key *key, const char *text, int line,
                    const char *path, void *base) {
  void *field = (char *)base + key->off;
  char names[256];
  switch (key->type) {
    case CK_STR:
      return set_string(ld, key, text, line, path, field);
    case CK_U64:
    case CK_UINT:
    case CK_INT:
      return set_integer(ld, key, text, line, path, field);
    case CK_DOUBLE:
      return set_double(ld, key, text, line, path, field);
    case CK_ENUM: {
      int i = find_name(key->names, text);
      if (i < 0)
        return csr__fail(ld, line, path, "expected %s, got '%.64s'",
                         join_names(key->names, names, sizeof(names)), text);
      *(int *)field = i;
      return 0;
    }
    case CK_TEXT:
      return key->text(ld, key, text, line, path, base);
    default:
      return csr__fail(ld, line, path, "internal error: key type %d is not a scalar", key->type);
  }
}

/* ---------------------------------------------------------------------------------------------- */
/* Containers                                                                                     */
/* ---------------------------------------------------------------------------------------------- */

int csr__check_keys(struct csr__ld *ld, yaml_node_t *map, const char *path) {
  yaml_node_pair_t *pairs = map->data.mapping.pairs.start;
  size_t n = (size_t)(map->data.mapping.pairs.top - pairs);
  char child[CSR__PATH_MAX];
  for (size_t i = 0; i < n; i++) {
    yaml_node_t *k = node_at(ld, pairs[i].key);
    if (k->type != YAML_SCALAR_NODE)
      return csr__fail(ld, csr__line(k), path, "keys must be plain strings, got a %s",
                       node_kind(k));
    for (size_t j = 0; j < i; j++) {
      yaml_node_t *e = node_at(ld, pairs[j].key);
      if (strcmp((const char *)e->data.scalar.value, (const char *)k->data.scalar.value) == 0) {
        csr__path_join(child, sizeof(child), path, (const char *)k->data.scalar.value);
        return csr__fail(ld, csr__line(k), child, "duplicate key (first on line %d)", csr__line(e));
      }
    }
  }
  return 0;
}

/* The items of a list node, a null scalar being an empty one. `what` names an item in messages
 * ("csu"), or is NULL for plain values. */
static int list_items(struct csr__ld *ld, const struct csr__key *key, yaml_node_t *node,
                      const char *path, const char *what, yaml_node_item_t **items, size_t *n) {
  *items = NULL;
  *n = 0;
  if (!is_null(node)) {
    if (node->type != YAML_SEQUENCE_NODE && what != NULL)
      return csr__fail(ld, csr__line(node), path, "expected a list of %ss, got a %s", what,
                       node_kind(node));
    if (node->type != YAML_SEQUENCE_NODE)
      return csr__fail(ld, csr__line(node), path, "expected a list, got a %s", node_kind(node));
    *items = node->data.sequence.items.start;
    *n = (size_t)(node->data.sequence.items.top - *items);
  }
  if (*n == 0 && (key->flags & CKF_NONEMPTY))
    return csr__fail(ld, csr__line(node), path, "must list at least one %s", what ? what : "value");
  return 0;
}

/* The array of a list or dict key: `n` zeroed elements of `size` bytes, published at off with its
 * count at off2 (NULL and 0 when empty) before they are filled, so a finish hook can compare an
 * element with the earlier ones. NULL when out of memory. */
static void *new_array(struct csr__ld *ld, const struct csr__key *key, void *base, size_t n,
                       size_t size) {
  void *arr = csr__arena_alloc(ld->arena, (n ? n : 1) * size);
  if (arr != NULL) {
    *CSR__FIELD(base, key->off, void *) = n ? arr : NULL;
    *CSR__FIELD(base, key->off2, size_t) = n;
  }
  return arr;
}

static int set_strlist(struct csr__ld *ld, const struct csr__key *key, yaml_node_t *node,
                       const char *path, void *base) {
  size_t n;
  yaml_node_item_t *items;
  int rc = list_items(ld, key, node, path, NULL, &items, &n);
  if (rc != 0)
    return rc;
  char **arr = new_array(ld, key, base, n, sizeof(*arr));
  if (arr == NULL)
    return csr__oom(ld);
  char child[CSR__PATH_MAX];
  for (size_t i = 0; i < n; i++) {
    yaml_node_t *item = node_at(ld, items[i]);
    path_index(child, sizeof(child), path, i);
    const char *text;
    if ((rc = csr__scalar(ld, item, child, &text)) != 0)
      return rc;
    const char *problem = text[0] == '\0' ? "must not be empty"
                          : key->check    ? key->check(text)
                                          : NULL;
    if (problem != NULL)
      return csr__fail(ld, csr__line(item), child, "%s", problem);
    for (size_t j = 0; j < i; j++)
      if (strcmp(arr[j], text) == 0)
        return csr__fail(ld, csr__line(item), child, "'%.64s' is listed twice", text);
    arr[i] = (char *)text;
  }
  return 0;
}

static void set_line(const struct csr__table *t, void *elem, int line) {
  *(int *)((char *)elem + t->line_off) = line;
}

static int set_seq(struct csr__ld *ld, const struct csr__key *key, yaml_node_t *node,
                   const char *path, void *base) {
  const struct csr__table *t = key->sub;
  size_t n;
  yaml_node_item_t *items;
  int rc = list_items(ld, key, node, path, t->what, &items, &n);
  if (rc != 0)
    return rc;
  char *arr = new_array(ld, key, base, n, t->size);
  if (arr == NULL)
    return csr__oom(ld);
  char child[CSR__PATH_MAX];
  for (size_t i = 0; i < n; i++) {
    yaml_node_t *item = node_at(ld, items[i]);
    path_index(child, sizeof(child), path, i);
    if (item->type != YAML_MAPPING_NODE)
      return csr__fail(ld, csr__line(item), child, "expected a mapping, got a %s", node_kind(item));
    set_line(t, arr + i * t->size, csr__line(item));
    struct csr__walk w;
    if ((rc = csr__walk_map(ld, item, 0, child, t, arr + i * t->size, base, &w)) != 0)
      return rc;
  }
  return 0;
}

static int set_dict(struct csr__ld *ld, const struct csr__key *key, yaml_node_t *node,
                    const char *path, void *base) {
  const struct csr__table *t = key->sub;
  size_t n = 0;
  yaml_node_pair_t *pairs = NULL;
  int rc;
  if (!is_null(node)) {
    if (node->type != YAML_MAPPING_NODE)
      return csr__fail(ld, csr__line(node), path, "expected a mapping of %s names, got a %s",
                       t->what, node_kind(node));
    if ((rc = csr__check_keys(ld, node, path)) != 0)
      return rc;
    pairs = node->data.mapping.pairs.start;
    n = (size_t)(node->data.mapping.pairs.top - pairs);
  }
  if (n == 0 && (key->flags & CKF_NONEMPTY))
    return csr__fail(ld, csr__line(node), path, "must define at least one %s", t->what);
  char *arr = new_array(ld, key, base, n, t->size);
  if (arr == NULL)
    return csr__oom(ld);
  char child[CSR__PATH_MAX];
  for (size_t i = 0; i < n; i++) {
    yaml_node_t *k = node_at(ld, pairs[i].key), *v = node_at(ld, pairs[i].value);
    const char *name = (const char *)k->data.scalar.value;
    csr__path_join(child, sizeof(child), path, name);
    const char *problem = key->check ? key->check(name) : NULL;
    if (problem != NULL)
      return csr__fail(ld, csr__line(k), child, "%s name %s", t->what, problem);
    char *elem = arr + i * t->size;
    char *copy = csr__arena_strdup(ld->arena, name);
    if (copy == NULL)
      return csr__oom(ld);
    *(char **)(elem + t->name_off) = copy;
    set_line(t, elem, csr__line(k));
    if (v->type != YAML_MAPPING_NODE)
      return csr__fail(ld, csr__line(v), child, "expected a mapping, got a %s", node_kind(v));
    struct csr__walk w;
    if ((rc = csr__walk_map(ld, v, csr__line(k), child, t, elem, base, &w)) != 0)
      return rc;
  }
  return 0;
}

/* `line` is the key's: a section's missing keys are reported where the section is named. */
static int set_node(struct csr__ld *ld, const struct csr__key *key, yaml_node_t *node, int line,
                    const char *path, void *base) {
  switch (key->type) {
    case CK_STRLIST:
      return set_strlist(ld, key, node, path, base);
    case CK_MAP: {
      struct csr__walk w;
      return csr__walk_map(ld, node, line, path, key->sub, (char *)base + key->off, base, &w);
    }
    case CK_SEQ:
      return set_seq(ld, key, node, path, base);
    case CK_DICT:
      return set_dict(ld, key, node, path, base);
    case CK_NODE:
      return key->node(ld, key, node, path, base);
    default:
      break;
  }
  if (node->type != YAML_SCALAR_NODE)
    return csr__fail(ld, csr__line(node), path, "expected a %s, got a %s",
                     key->type == CK_STR || key->type == CK_TEXT ? "string" : "scalar value",
                     node_kind(node));
  if (is_null(node))
    return csr__fail(ld, csr__line(node), path, "has no value");
  const char *text;
  int rc = csr__scalar(ld, node, path, &text);
  return rc ? rc : set_text(ld, key, text, csr__line(node), path, base);
}

static int set_default(struct csr__ld *ld, const struct csr__key *key, int line, const char *path,
                       void *base) {
  if (key->type == CK_MAP && !(key->flags & CKF_OPTIONAL)) {
    struct csr__walk w;
    return csr__walk_map(ld, NULL, line, path, key->sub, (char *)base + key->off, base, &w);
  }
  if (key->def == NULL)
    return 0;
  return set_text(ld, key, key->def, line, path, base);
}

/* ---------------------------------------------------------------------------------------------- */
/* The walker                                                                                     */
/* ---------------------------------------------------------------------------------------------- */

static int applies(const struct csr__key *key, unsigned mask) {
  return mask == 0 || key->mask == 0 || (key->mask & mask) != 0;
}

/* Names the variants in `mask` ("mqtt", "cij or webhook"). */
static const char *variant_names(const struct csr__table *t, unsigned mask, char *out, size_t n) {
  const char *names[8];
  size_t count = 0;
  for (unsigned b = 0; t->variants && t->variants[b] && count < 7; b++)
    if (mask & (1u << b))
      names[count++] = t->variants[b];
  names[count] = NULL;
  return count ? join_names(names, out, n) : "?";
}

static int unknown_key(struct csr__ld *ld, const struct csr__table *t, unsigned mask,
                       const char *name, int line, const char *path) {
  char mine[64], owners[128];
  for (size_t i = 0; i < t->n; i++) {
    const struct csr__key *k = &t->keys[i];
    if (strcmp(k->name, name) == 0) /* known, but for another variant ("broker" on a webhook) */
      return csr__fail(ld, line, path, "not valid for a %s %s (only for %s)",
                       variant_names(t, mask, mine, sizeof(mine)), t->what,
                       variant_names(t, k->mask, owners, sizeof(owners)));
  }
  const struct csr__key *best = NULL;
  size_t best_d = 3;
  for (size_t i = 0; i < t->n; i++) {
    const struct csr__key *k = &t->keys[i];
    size_t d = applies(k, mask) ? csr__edit_distance(name, k->name, 2) : 3;
    if (d < best_d && d < strlen(k->name)) {
      best = k;
      best_d = d;
    }
  }
  if (best != NULL)
    return csr__fail(ld, line, path, "unknown key (did you mean '%s'?)", best->name);
  return csr__fail(ld, line, path, "unknown key");
}

int csr__walk_map(struct csr__ld *ld, yaml_node_t *map, int line, const char *path,
                  const struct csr__table *t, void *base, void *parent, struct csr__walk *w) {
  memset(w, 0, sizeof(*w));
  yaml_node_t *val[CSR__MAX_KEYS] = {0};
  unsigned mask = 0;
  char child[CSR__PATH_MAX];
  int rc;
  if (t->n > CSR__MAX_KEYS)
    return csr__fail(ld, 0, path, "internal error: table '%s' has too many keys", t->what);
  if (map != NULL) {
    w->line = line ? line : csr__line(map);
    if (is_null(map))
      map = NULL;
    else if (map->type != YAML_MAPPING_NODE)
      return csr__fail(ld, w->line, path, "expected a mapping, got a %s", node_kind(map));
  }
  if (map != NULL) {
    if ((rc = csr__check_keys(ld, map, path)) != 0)
      return rc;
    if (t->prepare && (rc = t->prepare(ld, map, path, base, &mask)) != 0)
      return rc;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
      yaml_node_t *k = node_at(ld, p->key);
      const char *name = (const char *)k->data.scalar.value;
      size_t i = 0;
      while (i < t->n && !(strcmp(t->keys[i].name, name) == 0 && applies(&t->keys[i], mask)))
        i++;
      csr__path_join(child, sizeof(child), path, name);
      if (i == t->n)
        return unknown_key(ld, t, mask, name, csr__line(k), child);
      val[i] = node_at(ld, p->value);
      w->key_line[i] = csr__line(k);
      w->seen |= 1u << i;
    }
  }
  for (size_t i = 0; i < t->n; i++) {
    const struct csr__key *key = &t->keys[i];
    if (!applies(key, mask))
      continue;
    csr__path_join(child, sizeof(child), path, key->name);
    if (val[i] != NULL)
      rc = set_node(ld, key, val[i], w->key_line[i], child, base);
    else if (key->flags & CKF_REQUIRED)
      rc = csr__fail(ld, w->line, child, "required key is missing");
    else
      rc = set_default(ld, key, w->line, child, base);
    if (rc != 0)
      return rc;
  }
  return t->finish ? t->finish(ld, base, parent, w, path) : 0;
}
