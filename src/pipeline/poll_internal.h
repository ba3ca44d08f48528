/* The poll stage's insides, shared by poll.c (lanes, scheduling, tokens, the admitter's side) and
 * poll_window.c (what the next Search of a window is, its request and its answer's rows). Not part
 * of the public API. */
#ifndef CSURELAY_PIPELINE_POLL_INTERNAL_H
#define CSURELAY_PIPELINE_POLL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "csurelay/pipeline.h"

/** Milliseconds rounded down to a whole second (towards the past, negatives included). */
static inline int64_t pl__floor_s(int64_t ms) {
  return ms >= 0 ? ms / 1000 * 1000 : -((999 - ms) / 1000) * 1000;
}

/** A set of 64-bit id hashes (open addressing; the value 0 is stored as 1). */
struct pl__idset {
  uint64_t *slots;
  size_t cap;
  size_t n;
};

/** FNV-1a 64 of an event id. */
uint64_t pl__id_hash(const char *id);
/** 1 when `h` was new, 0 when already there, UV_ENOMEM (or UV_E2BIG past PL__IDSET_MAX). */
CSR_NODISCARD int pl__idset_add(struct pl__idset *s, uint64_t h);
void pl__idset_free(struct pl__idset *s);

#define PL__IDSET_MAX (1u << 22) /* distinct rows of one dense second we are ready to track */

/** One Search: the window (From exclusive, To inclusive, whole seconds) and the paging. */
struct pl__query {
  int64_t from_ms;
  int64_t to_ms;
  unsigned top;
  uint64_t skip;
};

/** Paging knobs, from the CSU's config and the stage's options. */
struct pl__paging {
  unsigned page_size; /* the window's keyset $top */
  unsigned wide_top;  /* at least page_size */
  unsigned max_passes;
  /* The keyset $tops of every kind of window (page_size among them): dense passes use none.
   * paging() in poll.c fills these four for every window. */
  unsigned keyset_lo, keyset_hi;
  /* Windows of different kinds can share a To: each kind's dense passes take every `kinds`-th
   * $top, starting `kind` below the wide top, so no two kinds send the same pass. */
  unsigned kind, kinds;
};

/** A window being read: a keyset walk, with $skip passes over a dense second when it must. */
struct pl__win {
  bool active;
  bool sweep;
  int64_t start_ms; /* From as first sent */
  int64_t to_ms;    /* To, fixed for the window's life */
  int64_t from_ms;  /* the keyset's From now (a whole second) */
  bool dense;       /* paging the second (from_ms, from_ms + 1 s] in passes */
  unsigned pass;
  unsigned top;          /* this pass's $top */
  uint64_t skip;         /* the next page's $skip */
  uint64_t pass_rows;    /* rows of the second this pass returned so far */
  struct pl__idset seen; /* ids of the second's rows seen in any pass */
};

enum pl__step {
  PL__STEP_NEXT, /* another Search of this window follows */
  PL__STEP_DONE, /* the window is complete */
  PL__STEP_FAIL, /* the window cannot complete now (see *why); read it again later */
};

/** Starts a window over (from_ms, to_ms]; both whole seconds, from < to. */
void pl__win_begin(struct pl__win *w, bool sweep, int64_t from_ms, int64_t to_ms);
/** The window's next Search. */
void pl__win_query(const struct pl__win *w, const struct pl__paging *pg, struct pl__query *q);
/**
 * Takes the answer to `q` (rows ev[0..n), every one inside the window) and decides what follows.
 * *mark is set to the time up to which every row of the window has now been on a page (a
 * whole second; the window's To when it is done), or left alone when that did not move.
 */
enum pl__step pl__win_advance(struct pl__win *w, const struct pl__paging *pg,
                              const struct pl__query *q, const struct pl_poll_event *ev, size_t n,
                              int64_t *mark, const char **why);
/** Ends the window (complete, failed or abandoned) and frees what it holds. */
void pl__win_end(struct pl__win *w);

/** The Search's JSON body for `type` and q's window, into *body (reallocated). */
CSR_NODISCARD int pl__search_body(struct csr_jw *jw, const char *type, const struct pl__query *q,
                                  char **body);
/** {base}Commerce/CommerceEventsController/Search?$top=..&$skip=..&api-version=7.3 into *url. */
CSR_NODISCARD int pl__search_url(const char *base, const struct pl__query *q, char **url);

/** The rows of one answer and their ids; the buffers are kept from page to page. */
struct pl__rows {
  char *text; /* the answer's text the rows point into (owned, freed with the page) */
  struct pl_poll_event *ev;
  size_t n;
  size_t ev_cap;
  char *ids; /* every row's id, NUL-terminated one after another */
  size_t ids_cap;
};

/**
 * Parses the answer to `q` from CSU `csu` into `r`: 0, or CSR_EPARSE with a reason in `why` when
 * the text is not JSON, `value` is not an array, a row lacks a key field or an EventDateTime that
 * parses, or lies outside q's window. Nothing is kept on failure. `text` (malloc'd, `len` bytes
 * and a NUL) becomes r's either way: the rows point into it until pl__rows_clear.
 */
CSR_NODISCARD int pl__rows_parse(struct pl__rows *r, const char *csu, const struct pl__query *q,
                                 char *text, size_t len, char *why, size_t whylen);
/** Forgets the parsed answer (the buffers stay for the next one). */
void pl__rows_clear(struct pl__rows *r);
void pl__rows_free(struct pl__rows *r);

#endif
