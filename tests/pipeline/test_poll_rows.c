/* The Search answer's rows (poll_rows.c): ids, spans and every refusal, without a CSU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "csurelay/error.h"
#include "csurelay/json.h"
#include "pipeline/poll_internal.h"

/* the window (2026-01-01T00:00:00, 2026-01-01T00:00:10] */
static const struct pl__query Q = {.from_ms = 1767225600000, .to_ms = 1767225610000};

/* The rows take the text, as they take a response's body: a copy of it. */
static int parse(struct pl__rows *r, const char *text, char *why, size_t len) {
  why[0] = '\0';
  char *mine = strdup(text);
  assert_non_null(mine);
  return pl__rows_parse(r, "csu1", &Q, mine, strlen(text), why, len);
}

static void test_ids_and_spans(void **state) {
  const char *page =
      "{\"@odata.context\":\"x\",\"other\":[{\"EventType\":\"nested, not a row\"}],\"value\":[\n"
      "  {\"EventDataAreaId\":\"usrt\",\"EventType\":\"Checkout\",\"EventTransactionId\":\"c\\u0041t\","
      "\"EventDateTime\":\"2026-01-01T00:00:01.25Z\",\"AmountPaid\":184.2200000000000000,"
      "\"Lines\":[{\"EventType\":\"inner\",\"EventDateTime\":\"1999-01-01T00:00:00Z\"}]} ,\n"
      "  {\"EventDataAreaId\":\"\",\"EventType\":\"Checkout\",\"EventTransactionId\":\"c2\","
      "\"EventDateTime\":\"2026-01-01T00:00:10Z\",\"EventTransactionId\":\"ignored\"}\n"
      "],\"@odata.count\":2}";
  struct pl__rows r = {0};
  char why[200];
  assert_int_equal(parse(&r, page, why, sizeof(why)), 0);
  assert_int_equal(r.n, 2);
  /* escapes are decoded in the id, the first of duplicate keys counts, nested keys do not */
  assert_string_equal(r.ev[0].id, "csu1|usrt|Checkout|cAt|2026-01-01T00:00:01.25Z");
  assert_string_equal(r.ev[1].id, "csu1||Checkout|c2|2026-01-01T00:00:10Z");
  assert_int_equal(r.ev[0].time_ms, 1767225601250);
  /* each span is the row's text exactly as sent: digits and escapes untouched */
  const char *first = strstr(page, "{\"EventDataAreaId\":\"usrt\"");
  assert_ptr_not_equal(first, NULL);
  size_t len0 = (size_t)(strstr(first, "} ,") + 1 - first);
  assert_int_equal(r.ev[0].row_len, len0);
  assert_memory_equal(r.ev[0].row_json, first, len0);
  yajl_val row = csr_json_parse(r.ev[1].row_json, r.ev[1].row_len, NULL, 0);
  assert_non_null(row);
  assert_string_equal(csr_json_get_str(row, "EventDateTime"), "2026-01-01T00:00:10Z");
  csr_json_free(row);
  /* an empty page is fine */
  assert_int_equal(parse(&r, "{\"value\":[]}", why, sizeof(why)), 0);
  assert_int_equal(r.n, 0);
  pl__rows_free(&r);
}

static void test_refusals(void **state) {
  static const struct {
    const char *page, *why;
  } CASES[] = {
      {"{\"value\":[", "malformed JSON"},
      {"[1,2]", "not an object"},
      {"{\"value\":{}}", "value is not an array"},
      {"{\"value\":3}", "value is not an array"},
      {"{\"count\":3}", "value is not an array"},
      {"{\"value\":[],\"value\":[]}", "value appears twice"},
      {"{\"value\":[7]}", "row 0 is not an object"},
      {"{\"value\":[{\"EventDataAreaId\":\"a\",\"EventType\":\"T\",\"EventTransactionId\":\"c\","
       "\"EventDateTime\":\"2026-01-01T00:00:02Z\"},[]]}",
       "row 1 is not an object"},
      {"{\"value\":[{\"EventType\":\"T\",\"EventTransactionId\":\"c\","
       "\"EventDateTime\":\"2026-01-01T00:00:02Z\"}]}",
       "row 0 has no EventDataAreaId"},
      {"{\"value\":[{\"EventDataAreaId\":\"a\",\"EventType\":\"T\",\"EventTransactionId\":\"\","
       "\"EventDateTime\":\"2026-01-01T00:00:02Z\"}]}",
       "row 0 has no EventTransactionId"},
      {"{\"value\":[{\"EventDataAreaId\":\"a\",\"EventType\":\"T\",\"EventTransactionId\":7,"
       "\"EventDateTime\":\"2026-01-01T00:00:02Z\"}]}",
       "row 0 has no EventTransactionId"},
      {"{\"value\":[{\"EventDataAreaId\":\"a\",\"EventType\":\"T\",\"EventTransactionId\":\"c\","
       "\"EventDateTime\":\"yesterday\"}]}",
       "row 0 has an invalid EventDateTime"},
      {"{\"value\":[{\"EventDataAreaId\":\"a\",\"EventType\":\"T\",\"EventTransactionId\":\"c\","
       "\"EventDateTime\":\"2026-01-01T00:00:00Z\"}]}",
       "row 0 lies outside the window"},
      {"{\"value\":[{\"EventDataAreaId\":\"a\",\"EventType\":\"T\",\"EventTransactionId\":\"c\","
       "\"EventDateTime\":\"2026-01-01T00:00:02Z\"}]} /* c */",
       "malformed JSON"},
      {"{\"value\":[{\"EventDataAreaId\":\"\xff\"}]}", "malformed JSON"},
  };
  struct pl__rows r = {0};
  char why[200];
  for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++) {
    int rc = parse(&r, CASES[i].page, why, sizeof(why));
    if (rc != CSR_EPARSE || strstr(why, CASES[i].why) == NULL)
      fail_msg("case %zu: rc %d, why \"%s\", wanted \"%s\"", i, rc, why, CASES[i].why);
    assert_int_equal(r.n, 0);
  }
  /* a NUL inside the text */
  static const char nul[] = "{\"value\":[]}\0x";
  char *mine = malloc(sizeof(nul));
  assert_non_null(mine);
  memcpy(mine, nul, sizeof(nul));
  assert_int_equal(pl__rows_parse(&r, "csu1", &Q, mine, sizeof(nul) - 1, why, sizeof(why)),
                   CSR_EPARSE);
  pl__rows_free(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ids_and_spans),
      cmocka_unit_test(test_refusals),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
