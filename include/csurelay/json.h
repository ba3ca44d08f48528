/* JSON for csurelay and csusim: a thin layer over yajl (chosen in bench/RESULTS.md because it keeps
 * a number's text, so money like 184.2200000000000000 passes through with its digits intact).
 *
 * Reading: csr_json_parse() gives a yajl_val tree; look things up with csr_json_get() and read them
 * with the typed accessors, which return NULL/defaults on a missing key or a wrong type so callers
 * check once. Writing: struct csr_jw wraps a yajl generator; every body the relay sends is built here,
 * never by string concatenation.
 */
#ifndef CSURELAY_JSON_H
#define CSURELAY_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_parse.h>
#include <yajl/yajl_tree.h>

#include "csurelay/error.h"

/**
 * Parses `len` bytes (need not be NUL-terminated). Returns the tree (free with csr_json_free), or
 * NULL with a one-line reason in `err` (may be NULL). Comments are rejected: yajl_tree_parse would
 * accept them, the wire never carries them.
 */
yajl_val csr_json_parse(const char *text, size_t len, char *err, size_t errlen);
/**
 * 0 when `len` bytes are one JSON object under csr_json_parse's rules, else CSR_EPARSE with a
 * one-line reason in `err`. Builds nothing: for text that is kept and spliced, and parsed later only
 * if something reads it.
 */
int csr_json_check_object(const char *text, size_t len, char *err, size_t errlen);
/** Whether `key` (`len` bytes, not NUL-terminated) is one of the `n` strings of `names`: the usual
 * body of a csr_json_keep_fn. */
bool csr_json_key_in(const char *key, size_t len, const char *const *names, size_t n);
/** Says whether csr_json_parse_members keeps the top-level member `key` (`len` bytes, unescaped). */
typedef bool (*csr_json_keep_fn)(void *arg, const char *key, size_t len);
/**
 * The JSON object `text` as a tree holding only the top-level members `keep` accepts, each whole.
 * For a reader of a few fields of a large document: one scan without allocations, then a tree of
 * what is kept, instead of a tree of everything (a 15 KB order costs ~50 us as a whole tree).
 * NULL with a reason in `err` when the text is not one JSON object (as csr_json_parse) or memory
 * runs out.
 */
yajl_val csr_json_parse_members(const char *text, size_t len, csr_json_keep_fn keep, void *arg,
                                char *err, size_t errlen);
/**
 * csr_json_parse_members for text already checked whole (csr_json_check_object): `keep` accepts at
 * most `want` distinct members, and the scan stops once it has kept that many, leaving the rest of
 * the text unread (and unchecked). A trigger reads ~10 header members of a 10-20 KB order whose
 * lines come after them. Of a member that repeats before the stop, the first counts for
 * csr_json_get, as with the whole scan. `want` 0 scans everything.
 */
yajl_val csr_json_parse_checked_members(const char *text, size_t len, csr_json_keep_fn keep,
                                        void *arg, size_t want, char *err, size_t errlen);
/**
 * The string values of the top-level members `names[0..n)` of the JSON object `text`, in one scan
 * that builds no tree: for a reader of a few short fields that keeps them, where a tree of even the
 * kept members costs several allocations and a second parse. vals[i] points into `buf` (unescaped,
 * NUL-terminated), or is NULL when the member is absent or not a string; of repeated members the
 * first counts. `len + n` bytes of `buf` always suffice. The bytes of `buf` used (>= 0); CSR_EPARSE
 * with a reason in `err` when the text is not one JSON object (as csr_json_parse_members);
 * UV_E2BIG when `cap` is too small; UV_EINVAL for more than 64 names; UV_ENOMEM.
 */
int csr_json_top_strings(const char *text, size_t len, const char *const *names, size_t n,
                         char *buf, size_t cap, const char **vals, char *err, size_t errlen);
/**
 * Runs yajl event parser `h` over all `len` bytes and completes the parse: 0; CSR_EPARSE with the
 * first line of yajl's complaint in `err` when the text is not JSON; UV_ECANCELED when one of h's
 * callbacks stopped it (the callback keeps its own reason).
 */
int csr_json_stream(yajl_handle h, const char *text, size_t len, char *err, size_t errlen);
void csr_json_free(yajl_val v);

/** The member `key` of object `obj` (exact match), or NULL. */
yajl_val csr_json_get(yajl_val obj, const char *key);
/** Same, ignoring ASCII case (OData parameter names arrive in either casing). */
yajl_val csr_json_get_ci(yajl_val obj, const char *key);
/** Follows a dotted path of object keys ("OrderDetails.AmountPaid"); NULL when any step is absent. */
yajl_val csr_json_path(yajl_val obj, const char *path);

/** The string value, or NULL when `v` is not a string. */
const char *csr_json_str(yajl_val v);
/** The member's string value, or NULL. */
const char *csr_json_get_str(yajl_val obj, const char *key);
/** The number's original text, or NULL when `v` is not a number. */
const char *csr_json_num_text(yajl_val v);
/** Reads an integer member into *out: 0, or CSR_EPARSE when absent, not an integer or out of range. */
CSR_NODISCARD int csr_json_get_int(yajl_val obj, const char *key, int64_t *out);
/** Array length and element; 0 / NULL when `v` is not an array or i is out of range. */
size_t csr_json_len(yajl_val v);
yajl_val csr_json_at(yajl_val v, size_t i);

struct csr_jw_out;

/** A JSON writer. Errors are sticky: check once with csr_jw_finish(). The text is written into
 * the writer's own buffer (yajl's print callback), so a finished body can be taken rather than
 * copied (csr_jw_take). */
struct csr_jw {
  /* private */
  yajl_gen _g;
  struct csr_jw_out *_out; /* on the heap: yajl keeps its address, the writer may move */
};

CSR_NODISCARD int csr_jw_init(struct csr_jw *jw);
void csr_jw_free(struct csr_jw *jw);
/** The finished text, NUL-terminated (owned by jw, valid until csr_jw_free/reset/take); 0,
 * CSR_EPARSE on misuse, or UV_ENOMEM. */
CSR_NODISCARD int csr_jw_finish(struct csr_jw *jw, const char **text, size_t *len);
/** As csr_jw_finish, but the caller owns the text (free() it) and jw is reset for the next
 * document. On error nothing is taken and *text is NULL. */
CSR_NODISCARD int csr_jw_take(struct csr_jw *jw, char **text, size_t *len);
/** Clears the buffer for the next document. */
void csr_jw_reset(struct csr_jw *jw);

void csr_jw_obj(struct csr_jw *jw);
void csr_jw_obj_end(struct csr_jw *jw);
void csr_jw_arr(struct csr_jw *jw);
void csr_jw_arr_end(struct csr_jw *jw);
void csr_jw_key(struct csr_jw *jw, const char *key);
void csr_jw_str(struct csr_jw *jw, const char *s); /* NULL writes null */
void csr_jw_strn(struct csr_jw *jw, const char *s, size_t len);
void csr_jw_int(struct csr_jw *jw, int64_t v);
void csr_jw_bool(struct csr_jw *jw, bool v);
void csr_jw_null(struct csr_jw *jw);
/** Writes a number from its text exactly as given (validated as a JSON number, else an error). */
void csr_jw_num_text(struct csr_jw *jw, const char *text);
/**
 * Copies the NUL-terminated `src` into dst[size] (size >= 1), cut, when it does not fit, before a
 * UTF-8 character rather than inside one, so valid UTF-8 stays valid (for messages that go back
 * out in JSON).
 */
void csr_copy_utf8(char *dst, size_t size, const char *src);

/** Copies a parsed value (any type, recursively), keeping number texts. */
void csr_jw_value(struct csr_jw *jw, yajl_val v);
/**
 * Writes `len` bytes of JSON text as one value, verbatim: splicing a document that was parsed
 * (so is known to be one whole, valid JSON value) costs a copy instead of a walk of its tree. The
 * caller vouches for the text; it is not checked. A NULL or empty text is an error.
 */
void csr_jw_raw(struct csr_jw *jw, const char *json, size_t len);

/* Key + value in one call, for the common case of building an object. */
void csr_jw_kstr(struct csr_jw *jw, const char *key, const char *s);
void csr_jw_kint(struct csr_jw *jw, const char *key, int64_t v);
void csr_jw_kbool(struct csr_jw *jw, const char *key, bool v);
void csr_jw_knum_text(struct csr_jw *jw, const char *key, const char *text);

#endif
