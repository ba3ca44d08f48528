/* Shared by the tests that compare JSON trees: a tree's compact text. Include after cmocka.h. */
#ifndef CSR_JSONTEST_H
#define CSR_JSONTEST_H

#include <stdlib.h>
#include <string.h>

#include "csurelay/json.h"

/* The compact JSON text of `v` (malloc'd), as the writer encodes it. */
static inline char *jt_text(yajl_val v) {
  struct csr_jw jw;
  const char *text;
  size_t len;
  assert_int_equal(csr_jw_init(&jw), 0);
  csr_jw_value(&jw, v);
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
  char *copy = strndup(text, len);
  csr_jw_free(&jw);
  return copy;
}

#endif
