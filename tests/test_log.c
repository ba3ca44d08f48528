/* Logs: one valid JSON object per line, typed fields, PII masked before output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "csurelay/log.h"

static char captured[8192];
static size_t captured_len;
static int lines;

static void capture(const char *line, size_t len, void *arg) {
  if (captured_len + len < sizeof(captured)) {
    memcpy(captured + captured_len, line, len);
    captured_len += len;
    captured[captured_len] = '\0';
  }
  lines++;
}

static int setup(void **state) {
  captured_len = 0;
  captured[0] = '\0';
  lines = 0;
  csr_log_set_writer(capture, NULL);
  csr_log_set_level(CSR_INFO);
  return 0;
}

static int teardown(void **state) {
  csr_log_set_writer(NULL, NULL);
  return 0;
}

static void test_line_shape_and_typed_fields(void **state) {
  CSR_LOG(CSR_WARN, "poll \"failed\"", CSR_KS("csu", "houston"), CSR_KI("status", 503),
          CSR_KD("lag_s", 1.5));
  assert_int_equal(lines, 1);
  assert_true(strncmp(captured, "{\"ts\":\"", 7) == 0);
  assert_non_null(strstr(captured, "\"level\":\"warn\",\"msg\":\"poll \\\"failed\\\"\""));
  assert_non_null(strstr(captured, ",\"csu\":\"houston\",\"status\":503,\"lag_s\":1.5}\n"));
  assert_int_equal(captured[captured_len - 1], '\n');
  assert_null(memchr(captured, '\n', captured_len - 1)); /* exactly one line */
}

static void test_level_threshold(void **state) {
  CSR_LOG(CSR_DEBUG, "hidden");
  assert_int_equal(lines, 0);
  csr_log_set_level(CSR_DEBUG);
  CSR_LOG(CSR_DEBUG, "shown");
  assert_int_equal(lines, 1);
  enum csr_log_level lvl;
  assert_int_equal(csr_log_level_parse("error", &lvl), 0);
  assert_int_equal(lvl, CSR_ERROR);
  assert_true(csr_log_level_parse("loud", &lvl) < 0);
}

static void test_pii_is_masked(void **state) {
  CSR_LOG(CSR_INFO, "contact created", CSR_KEMAIL("email", "jane.doe@contoso.com"),
          CSR_KPHONE("phone", "+1 412 555 0144"), CSR_KNAME("first", "Jane"));
  assert_null(strstr(captured, "jane.doe"));
  assert_null(strstr(captured, "contoso"));
  assert_null(strstr(captured, "555"));
  assert_null(strstr(captured, "Jane\""));
  assert_non_null(strstr(captured, "\"email\":\"j***@c***.com\""));
  assert_non_null(strstr(captured, "\"phone\":\"***44\""));
  assert_non_null(strstr(captured, "\"first\":\"J***\""));
}

static void test_mask_edge_cases(void **state) {
  char buf[64];
  assert_string_equal(csr_mask_email("", buf, sizeof(buf)), "");
  assert_string_equal(csr_mask_email("no-at-sign", buf, sizeof(buf)), "***");
  assert_string_equal(csr_mask_email("@x.com", buf, sizeof(buf)), "***");
  assert_string_equal(csr_mask_email("a@b", buf, sizeof(buf)), "a***@b***");
  assert_string_equal(csr_mask_phone("12", buf, sizeof(buf)), "***");
  assert_string_equal(csr_mask_name(NULL, buf, sizeof(buf)), "");
}

static void test_control_characters_escaped(void **state) {
  CSR_LOG(CSR_INFO, "x", CSR_KS("body", "a\nb\x01\tc\\"));
  assert_non_null(strstr(captured, "\"body\":\"a\\nb\\u0001\\tc\\\\\""));
}

static void test_long_values_keep_the_line_valid(void **state) {
  static char big[10000];
  memset(big, 'x', sizeof(big) - 1);
  CSR_LOG(CSR_INFO, "big", CSR_KS("a", big), CSR_KS("b", big), CSR_KI("n", 7));
  assert_int_equal(lines, 1);
  assert_true(captured_len <= 4096);
  assert_int_equal(captured[captured_len - 2], '}');
  assert_int_equal(captured[captured_len - 3], '"'); /* the cut value still closes its quote */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_line_shape_and_typed_fields, setup, teardown),
      cmocka_unit_test_setup_teardown(test_level_threshold, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pii_is_masked, setup, teardown),
      cmocka_unit_test_setup_teardown(test_mask_edge_cases, setup, teardown),
      cmocka_unit_test_setup_teardown(test_control_characters_escaped, setup, teardown),
      cmocka_unit_test_setup_teardown(test_long_values_keep_the_line_valid, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
