/* The config loader's generic half: an arena, a libyaml document and a table-driven walker.
 *
 * A key table lists, per YAML mapping, each key's type, flags, default (as YAML text, converted by
 * the same code as a written value), range, struct offset and description, in the manner of Fluent
 * Bit's config map. csr__walk_map() fills a struct from a mapping node: it rejects unknown and
 * duplicate keys (with a did-you-mean hint), substitutes ${VAR} in every scalar, converts and
 * range-checks values, applies defaults and reports missing required keys. Tables are processed in
 * table order, not document order, so a later table may refer to what an earlier one built.
 * Only the src/config*.c files include this header.
 */
#ifndef CSR_CONFIG_YAML_H
#define CSR_CONFIG_YAML_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#include "csurelay/config.h"
#include "csurelay/error.h"

#define CSR__MAX_KEYS 32 /* per table */
#define CSR__PATH_MAX 128

/** The field of type `type` at byte offset `off` of the struct at `base` (a key's off or off2). */
#define CSR__FIELD(base, off, type) ((type *)((char *)(base) + (off)))

struct csr__arena;
struct csr__ld;
struct csr__key;
struct csr__pending;

/** What a walk saw: the mapping's line, which keys were present and on which lines. */
struct csr__walk {
  int line;                    /* where missing keys are reported; 0 when absent */
  uint32_t seen;               /* bit i: keys[i] was written */
  int key_line[CSR__MAX_KEYS]; /* line of keys[i] when seen */
};

/** A converter for a scalar, after ${VAR} substitution; also converts the key's default. */
typedef int (*csr__text_fn)(struct csr__ld *ld, const struct csr__key *key, const char *text,
                            int line, const char *path, void *base);
/** A converter for a whole node (a list with its own rules, a free-form mapping). */
typedef int (*csr__node_fn)(struct csr__ld *ld, const struct csr__key *key, yaml_node_t *node,
                            const char *path, void *base);
/** A string check: NULL when `value` is fine, else a message that never quotes the value. */
typedef const char *(*csr__check_fn)(const char *value);

enum csr__ktype {
  CK_STR,     /* char *; optional `names` restricts it to a set, `check` validates it */
  CK_U64,     /* uint64_t within [min, max] */
  CK_UINT,    /* unsigned within [min, max] */
  CK_INT,     /* int within [min, max] */
  CK_DOUBLE,  /* double within [min, max], finite */
  CK_ENUM,    /* int (an enum), the index of the value in `names` */
  CK_STRLIST, /* char ** at off, size_t count at off2; items unique, each passed to `check` */
  CK_MAP,     /* a nested struct at off, walked with `sub`; absent → its defaults */
  CK_SEQ,     /* a list of `sub` mappings: array at off, count at off2 */
  CK_DICT,    /* a mapping name → `sub` mapping: array at off, count at off2 */
  CK_TEXT,    /* a scalar converted by `text` (defaults too) */
  CK_NODE,    /* any node converted by `node` */
};

#define CKF_REQUIRED 1u /* missing → error */
#define CKF_NONEMPTY 2u /* CK_STRLIST, CK_SEQ: at least one item */
#define CKF_OPTIONAL 4u /* CK_MAP: when absent, leave it zeroed and skip its defaults */

struct csr__key {
  const char *name;
  enum csr__ktype type;
  unsigned flags;
  const char *def; /* default as YAML text, or NULL */
  int64_t min, max;
  size_t off, off2;
  const char *desc;
  const char *const *names;     /* CK_ENUM values, CK_STR choices; NULL-terminated */
  const struct csr__table *sub; /* CK_MAP, CK_SEQ, CK_DICT */
  csr__text_fn text;            /* CK_TEXT */
  csr__node_fn node;            /* CK_NODE */
  csr__check_fn check;          /* CK_STR, CK_STRLIST items, CK_DICT names */
  unsigned mask;                /* variants that accept the key (see prepare); 0 = all */
};

struct csr__table {
  const char *what; /* "csu", "sink", for messages */
  const struct csr__key *keys;
  size_t n;
  size_t size;     /* element size for CK_SEQ/CK_DICT */
  size_t line_off; /* CK_SEQ/CK_DICT: offset of the element's `int line` */
  size_t name_off; /* CK_DICT: offset of the element's `char *name` */
  /* Before the walk: picks the variant (a sink's type) that decides which keys apply. */
  int (*prepare)(struct csr__ld *ld, yaml_node_t *map, const char *path, void *base,
                 unsigned *mask);
  /* After the walk: cross-field rules. `parent` is the struct that holds this one. */
  int (*finish)(struct csr__ld *ld, void *base, void *parent, const struct csr__walk *w,
                const char *path);
  /* Names a variant for "not valid for a webhook sink" messages. */
  const char *const *variants;
};

/** The loader's state for one csr_config_parse(). */
struct csr__ld {
  struct csr_config *cfg;
  struct csr__arena *arena;
  yaml_document_t doc;
  const char *file;
  struct csr_err *err;
  struct csr__pending *pending; /* secrets to resolve once the structure is valid */
  struct csr__pending **pending_tail;
};

/* Arena: every string and array of a config; freed at once. */
struct csr__arena *csr__arena_create(void);
void csr__arena_destroy(struct csr__arena *arena);
void *csr__arena_alloc(struct csr__arena *arena, size_t size); /* zeroed, NULL on OOM */
char *csr__arena_strndup(struct csr__arena *arena, const char *s, size_t len);
char *csr__arena_strdup(struct csr__arena *arena, const char *s);

/**
 * Reads a whole file of at most `max` bytes into a malloc'd, NUL-terminated buffer. Returns 0, or a
 * negative errno (-EFBIG past `max`, -EISDIR for a directory).
 */
CSR_NODISCARD int csr__read_file(const char *path, size_t max, char **out, size_t *len);

/** Fills ld->err and returns CSR_ECONFIG. */
int csr__fail(struct csr__ld *ld, int line, const char *path, const char *fmt, ...)
    CSR_PRINTF(4, 5);
/** Reports an allocation failure; returns -ENOMEM. */
int csr__oom(struct csr__ld *ld);

/** Loads the first YAML document of `yaml` into ld->doc; syntax errors name their line. */
CSR_NODISCARD int csr__yaml_load(struct csr__ld *ld, const char *yaml, size_t len);

/** The line (1-based) of a node. */
int csr__line(const yaml_node_t *node);

/** `out` = "parent.key" (or "key" at the top); truncates safely. */
void csr__path_join(char *out, size_t n, const char *parent, const char *key);

/**
 * Reads a scalar node as text: rejects other node kinds and NUL bytes, substitutes ${VAR} (and $${
 * as a literal ${) and returns the result in the arena.
 */
CSR_NODISCARD int csr__scalar(struct csr__ld *ld, yaml_node_t *node, const char *path,
                              const char **out);

/** Checks that every key of the mapping `map` is a scalar and appears once. */
CSR_NODISCARD int csr__check_keys(struct csr__ld *ld, yaml_node_t *map, const char *path);

/**
 * Fills `base` from the mapping `map` (NULL or a null scalar: absent/empty) with table `t`. Missing
 * keys are reported on `line` (the line of the mapping's own key), or on the mapping's first line
 * when `line` is 0.
 */
CSR_NODISCARD int csr__walk_map(struct csr__ld *ld, yaml_node_t *map, int line, const char *path,
                                const struct csr__table *t, void *base, void *parent,
                                struct csr__walk *w);

/** Levenshtein distance, capped: returns cap + 1 once the distance exceeds `cap`. */
size_t csr__edit_distance(const char *a, const char *b, size_t cap);

#endif
