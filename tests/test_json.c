/* The yajl layer: strict parsing, lookups, number texts kept exactly, and the writer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <uv.h>

#include "csurelay/json.h"
#include "jsontest.h"

static const char order[] =
    "{\"Id\":\"HOUSTON-HOUSTON-2-16\",\"ReceiptEmail\":\"\",\"AmountPaid\":184.2200000000000000,"
    "\"Big\":12345678901234.5678901234,\"ChannelId\":5637144592,\"Nested\":{\"Deep\":{\"X\":1}},"
    "\"Lines\":[{\"LineId\":\"1\"},{\"LineId\":\"2\"}],\"Flag\":true,\"Nothing\":null}";

static void test_lookup_and_types(void **state) {
  char err[128];
  yajl_val v = csr_json_parse(order, strlen(order), err, sizeof(err));
  assert_non_null(v);
  assert_string_equal(csr_json_get_str(v, "Id"), "HOUSTON-HOUSTON-2-16");
  assert_string_equal(csr_json_get_str(v, "ReceiptEmail"), "");
  assert_null(csr_json_get_str(v, "AmountPaid")); /* a number is not a string */
  assert_null(csr_json_get(v, "receiptemail"));
  assert_non_null(csr_json_get_ci(v, "receiptemail"));
  int64_t ch = 0;
  assert_int_equal(csr_json_get_int(v, "ChannelId", &ch), 0);
  assert_true(ch == 5637144592LL);
  assert_int_equal(csr_json_get_int(v, "AmountPaid", &ch), CSR_EPARSE);
  assert_int_equal(csr_json_get_int(v, "Missing", &ch), CSR_EPARSE);
  assert_string_equal(csr_json_num_text(csr_json_path(v, "Nested.Deep.X")), "1");
  assert_null(csr_json_path(v, "Nested.Nope.X"));
  assert_int_equal(csr_json_len(csr_json_get(v, "Lines")), 2);
  assert_string_equal(csr_json_get_str(csr_json_at(csr_json_get(v, "Lines"), 1), "LineId"), "2");
  assert_null(csr_json_at(csr_json_get(v, "Lines"), 2));
  csr_json_free(v);
}

static void test_numbers_keep_their_digits(void **state) {
  yajl_val v = csr_json_parse(order, strlen(order), NULL, 0);
  assert_non_null(v);
  struct csr_jw jw;
  assert_int_equal(csr_jw_init(&jw), 0);
  csr_jw_obj(&jw);
  csr_jw_key(&jw, "msdynmkt_amountpaid");
  csr_jw_value(&jw, csr_json_get(v, "AmountPaid"));
  csr_jw_key(&jw, "big");
  csr_jw_value(&jw, csr_json_get(v, "Big"));
  csr_jw_obj_end(&jw);
  const char *text;
  size_t len;
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
  assert_string_equal(text,
                      "{\"msdynmkt_amountpaid\":184.2200000000000000,\"big\":12345678901234.5678901234}");
  csr_jw_free(&jw);
  csr_json_free(v);
}

static void test_round_trip_whole_document(void **state) {
  yajl_val v = csr_json_parse(order, strlen(order), NULL, 0);
  struct csr_jw jw;
  assert_int_equal(csr_jw_init(&jw), 0);
  csr_jw_value(&jw, v);
  const char *text;
  size_t len;
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
  assert_int_equal(len, strlen(order));
  assert_memory_equal(text, order, len);
  csr_jw_free(&jw);
  csr_json_free(v);
}

/* A raw value takes its place like any other: separators before it, none inside it; NULL or empty
 * text is an error that sticks. */
static void test_raw_values(void **state) {
  struct csr_jw jw;
  const char *text;
  size_t len;
  assert_int_equal(csr_jw_init(&jw), 0);
  csr_jw_arr(&jw);
  csr_jw_int(&jw, 1);
  csr_jw_raw(&jw, "{\"a\":[1,2]}", 11);
  csr_jw_raw(&jw, "\"s\"xyz", 3);
  csr_jw_obj(&jw);
  csr_jw_key(&jw, "k");
  csr_jw_raw(&jw, "1.50", 4);
  csr_jw_obj_end(&jw);
  csr_jw_arr_end(&jw);
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
  assert_string_equal(text, "[1,{\"a\":[1,2]},\"s\",{\"k\":1.50}]");
  csr_jw_reset(&jw);
  csr_jw_raw(&jw, "", 0);
  assert_int_not_equal(csr_jw_finish(&jw, &text, &len), 0);
  csr_jw_reset(&jw);
  csr_jw_raw(&jw, NULL, 3);
  assert_int_not_equal(csr_jw_finish(&jw, &text, &len), 0);
  csr_jw_free(&jw);
}

/* A taken text is the caller's: the writer starts afresh, and later documents leave it alone. */
static void test_writer_take(void **state) {
  (void)state;
  struct csr_jw jw;
  assert_int_equal(csr_jw_init(&jw), 0);
  char *big = NULL, *next = NULL;
  size_t len = 0;
  csr_jw_arr(&jw);
  for (int i = 0; i < 2000; i++) /* well past the first buffer: it grows while writing */
    csr_jw_str(&jw, "abcdefgh");
  csr_jw_arr_end(&jw);
  assert_int_equal(csr_jw_take(&jw, &big, &len), 0);
  assert_int_equal(len, 2 + 2000 * 11 - 1);
  assert_int_equal(strlen(big), len); /* NUL-terminated */
  assert_memory_equal(big, "[\"abcdefgh\",\"abcdefgh\",", 23);
  assert_memory_equal(big + len - 11, "\"abcdefgh\"]", 11);
  const char *text;
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0); /* taking reset the writer */
  assert_int_equal(len, 0);
  assert_string_equal(text, "");
  csr_jw_obj(&jw);
  csr_jw_kint(&jw, "n", 7);
  csr_jw_obj_end(&jw);
  assert_int_equal(csr_jw_take(&jw, &next, &len), 0);
  assert_string_equal(next, "{\"n\":7}");
  assert_int_equal(len, 7);
  assert_int_equal(big[0], '['); /* the first text is untouched by the second document */
  assert_int_equal(big[2 + 2000 * 11 - 2], ']');
  assert_ptr_not_equal(big, next);
  free(big);
  free(next);
  char *none = (char *)"sentinel";
  csr_jw_arr(&jw);
  csr_jw_num_text(&jw, "x"); /* misuse: nothing is taken */
  assert_int_equal(csr_jw_take(&jw, &none, &len), CSR_EPARSE);
  assert_null(none);
  csr_jw_reset(&jw);
  assert_int_equal(csr_jw_take(&jw, &none, &len), 0); /* an empty text is still a buffer */
  assert_string_equal(none, "");
  free(none);
  csr_jw_free(&jw);
}

/* A writer may move (a struct holding it reallocated): yajl prints through the heap, not it. */
static void test_writer_moves(void **state) {
  (void)state;
  struct csr_jw *a = malloc(sizeof(*a));
  assert_non_null(a);
  assert_int_equal(csr_jw_init(a), 0);
  csr_jw_obj(a);
  csr_jw_kstr(a, "k", "v");
  struct csr_jw moved = *a;
  memset(a, 0xa5, sizeof(*a));
  free(a); /* under ASan, a write through the old address fails the test */
  csr_jw_kint(&moved, "n", 1);
  csr_jw_obj_end(&moved);
  const char *text;
  size_t len;
  assert_int_equal(csr_jw_finish(&moved, &text, &len), 0);
  assert_string_equal(text, "{\"k\":\"v\",\"n\":1}");
  csr_jw_free(&moved);
}

/* A copy that does not fit is cut before a character, never inside one. */
static void test_copy_utf8(void **state) {
  char out[6];
  csr_copy_utf8(out, sizeof(out), "abc");
  assert_string_equal(out, "abc");
  csr_copy_utf8(out, sizeof(out), "abcdefgh");
  assert_string_equal(out, "abcde");
  csr_copy_utf8(out, sizeof(out), "abcd\xc3\xa9"); /* é would end at byte 6 */
  assert_string_equal(out, "abcd");
  csr_copy_utf8(out, sizeof(out), "a\xe2\x98\x83z"); /* a, snowman, z: fits exactly */
  assert_string_equal(out, "a\xe2\x98\x83z");
  csr_copy_utf8(out, 1, "abc");
  assert_string_equal(out, "");
}

static void test_rejects_non_strict_input(void **state) {
  char err[128];
  const char *bad[] = {"{\"a\":1 /* c */}", "{\"a\":", "[1,2", "{\"a\":1} trailing", "", "nul\0l"};
  size_t lens[] = {15, 5, 4, 17, 0, 5};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    err[0] = '\0';
    assert_null(csr_json_parse(bad[i], lens[i], err, sizeof(err)));
    assert_true(err[0] != '\0');
    assert_null(strchr(err, '\n'));
  }
  /* A slash inside a string is data, not a comment. */
  yajl_val v = csr_json_parse("{\"u\":\"http://x/y\"}", 18, err, sizeof(err));
  assert_non_null(v);
  assert_string_equal(csr_json_get_str(v, "u"), "http://x/y");
  csr_json_free(v);
}

static void test_writer_escapes_and_validates(void **state) {
  struct csr_jw jw;
  assert_int_equal(csr_jw_init(&jw), 0);
  csr_jw_obj(&jw);
  csr_jw_kstr(&jw, "name", "O'Bryan \"Al\"\n");
  csr_jw_kint(&jw, "n", -42);
  csr_jw_kbool(&jw, "ok", true);
  csr_jw_kstr(&jw, "none", NULL);
  csr_jw_kstr(&jw, "url", "https://org.crm.dynamics.com/api");
  csr_jw_obj_end(&jw);
  const char *text;
  size_t len;
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
  assert_string_equal(text, "{\"name\":\"O'Bryan \\\"Al\\\"\\n\",\"n\":-42,\"ok\":true,\"none\":null,"
                            "\"url\":\"https://org.crm.dynamics.com/api\"}");
  csr_jw_reset(&jw);
  csr_jw_obj(&jw);
  csr_jw_knum_text(&jw, "amount", "12.5e"); /* not a number: the document is refused */
  csr_jw_obj_end(&jw);
  assert_int_equal(csr_jw_finish(&jw, &text, &len), CSR_EPARSE);
  csr_jw_reset(&jw);
  csr_jw_arr(&jw);
  csr_jw_num_text(&jw, "-0.5E+3");
  csr_jw_num_text(&jw, "0");
  csr_jw_arr_end(&jw);
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
  assert_string_equal(text, "[-0.5E+3,0]");
  csr_jw_free(&jw);
}

/* csr_json_check_object: the same rules as csr_json_parse, for one object, building nothing. */
static void test_check_object(void **state) {
  (void)state;
  static const char *const good[] = {"{}", " \n{\"a\":[1,2.50,{\"b\":null}],\"c\":\"\\u00e9\"}\t"};
  static const char *const bad[] = {"",          "  ",        "[]",       "\"s\"",
                                    "3",         "{",         "{} {}",    "{}x",
                                    "{\"a\":1,}", "{/*c*/}",   "{\"a\":\"\xff\"}"};
  char err[160];
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
    assert_int_equal(csr_json_check_object(good[i], strlen(good[i]), err, sizeof(err)), 0);
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    err[0] = '\0';
    if (csr_json_check_object(bad[i], strlen(bad[i]), err, sizeof(err)) != CSR_EPARSE)
      fail_msg("accepted bad[%zu]", i);
    assert_true(err[0] != '\0' && strchr(err, '\n') == NULL);
    /* and the tree parser agrees that none of these is an object */
    yajl_val v = csr_json_parse(bad[i], strlen(bad[i]), NULL, 0);
    assert_true(v == NULL || !YAJL_IS_OBJECT(v));
    csr_json_free(v);
  }
  static const char nul[] = "{\"a\":1}\0";
  assert_int_equal(csr_json_check_object(nul, sizeof(nul) - 1, NULL, 0), CSR_EPARSE);
}

/* keep_fn over a NULL-terminated list of names. */
static bool keep_listed(void *arg, const char *key, size_t len) {
  for (const char *const *k = arg; *k; k++)
    if (strlen(*k) == len && memcmp(*k, key, len) == 0)
      return true;
  return false;
}

/* csr_json_parse_members: the kept top-level members, each exactly as the whole tree has it
 * (every kind of value, spacing around ':' and ','), and nothing else; a kept name met deeper
 * down is not a top-level member; the same refusals as csr_json_check_object. */
static void test_parse_members(void **state) {
  (void)state;
  static const char doc[] =
      " { \"Id\" : \"a\\\"b\\u00e9\" ,\"Lines\":[{\"Name\":\"inner\"},2],\"AmountPaid\":\t"
      "184.2200000000000000 , \"Nested\":{\"Name\":{\"X\":[]}},\"Flag\":false,\"Nothing\":null,"
      "\"Name\":\"outer\",\"Last\":-1.5E3}\n";
  static const char *const kept[] = {"Id",      "Lines", "AmountPaid", "Nested", "Flag",
                                     "Nothing", "Name",  "Last",       NULL};
  yajl_val whole = csr_json_parse(doc, strlen(doc), NULL, 0);
  assert_non_null(whole);
  char err[160] = "";
  /* every member kept: the same tree as the whole parse */
  yajl_val all = csr_json_parse_members(doc, strlen(doc), keep_listed, (void *)kept, err, 160);
  assert_non_null(all);
  char *a = jt_text(all), *w = jt_text(whole);
  assert_string_equal(a, w);
  free(a);
  free(w);
  csr_json_free(all);
  /* a few kept: those, and only those */
  static const char *const few[] = {"Name", "AmountPaid", "Lines", "Missing", NULL};
  yajl_val v = csr_json_parse_members(doc, strlen(doc), keep_listed, (void *)few, err, 160);
  assert_non_null(v);
  a = jt_text(v);
  assert_string_equal(a, "{\"Lines\":[{\"Name\":\"inner\"},2],\"AmountPaid\":"
                         "184.2200000000000000,\"Name\":\"outer\"}");
  free(a);
  csr_json_free(v);
  /* none kept: an empty object */
  static const char *const none[] = {NULL};
  v = csr_json_parse_members(doc, strlen(doc), keep_listed, (void *)none, err, 160);
  assert_true(YAJL_IS_OBJECT(v) && v->u.object.len == 0);
  csr_json_free(v);
  csr_json_free(whole);
  static const char *const bad[] = {"", "  ", "[]", "\"s\"", "3", "{", "{} {}", "{}x", "{\"a\":1,}",
                                    "{/*c*/}", "{\"a\":\"\xff\"}",
                                    /* comments in a kept value, after one, in a skipped one */
                                    "{\"Name\":/*c*/1}", "{\"Name\":1 // c\n}",
                                    "{\"Skipped\":[1,/*c*/2]}"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    err[0] = '\0';
    if (csr_json_parse_members(bad[i], strlen(bad[i]), keep_listed, (void *)kept, err, 160))
      fail_msg("accepted bad[%zu]", i);
    assert_true(err[0] != '\0' && strchr(err, '\n') == NULL);
  }
}

/* csr_json_parse_checked_members: the scan stops once it has kept `want` distinct members (what
 * follows is not read: here it is not even JSON), a kept name repeated before the stop counts once
 * and its first value is the one csr_json_get finds, a wanted member that never comes means a whole
 * scan, and names that overflow the scan's record of them mean it never stops. */
static void test_parse_checked_members(void **state) {
  (void)state;
  static const char *const ab[] = {"a", "b", NULL};
  static const char stops[] = "{\"a\":1,\"x\":{\"b\":0},\"a\":2,\"b\":[3,{}],\"rest\":[1,,oops";
  char err[160] = "";
  yajl_val v = csr_json_parse_checked_members(stops, strlen(stops), keep_listed, (void *)ab, 2, err,
                                              sizeof(err));
  assert_non_null(v);
  char *t = jt_text(v);
  assert_string_equal(t, "{\"a\":1,\"a\":2,\"b\":[3,{}]}");
  free(t);
  assert_int_equal(csr_json_get(v, "a")->u.number.i, 1);
  csr_json_free(v);
  /* want 0, or the whole scan: the malformed rest is read and refused */
  assert_null(csr_json_parse_checked_members(stops, strlen(stops), keep_listed, (void *)ab, 0, err,
                                             sizeof(err)));
  assert_null(csr_json_parse_members(stops, strlen(stops), keep_listed, (void *)ab, err, 160));
  /* "b" never comes at the top: the scan reads to the end */
  static const char no_b[] = "{\"a\":1,\"x\":{\"b\":0},\"c\":3}";
  v = csr_json_parse_checked_members(no_b, strlen(no_b), keep_listed, (void *)ab, 2, err,
                                     sizeof(err));
  assert_non_null(v);
  t = jt_text(v);
  assert_string_equal(t, "{\"a\":1}");
  free(t);
  csr_json_free(v);
  /* five kept names of 200 bytes each do not fit the record: no stop, the rest is refused */
  char names[5][201], *list[6] = {0};
  char doc[2048];
  size_t at = (size_t)snprintf(doc, sizeof(doc), "{");
  for (int i = 0; i < 5; i++) {
    memset(names[i], 'a' + i, 200);
    names[i][200] = '\0';
    list[i] = names[i];
    at += (size_t)snprintf(doc + at, sizeof(doc) - at, "\"%s\":%d,", names[i], i);
  }
  snprintf(doc + at, sizeof(doc) - at, "\"rest\":[1,,oops");
  assert_null(csr_json_parse_checked_members(doc, strlen(doc), keep_listed, (void *)list, 5, err,
                                             sizeof(err)));
  doc[at - 1] = '}'; /* the same five, well formed: all kept */
  doc[at] = '\0';
  v = csr_json_parse_checked_members(doc, strlen(doc), keep_listed, (void *)list, 5, err,
                                     sizeof(err));
  assert_true(YAJL_IS_OBJECT(v) && v->u.object.len == 5);
  csr_json_free(v);
}

/* csr_json_top_strings: top-level string members unescaped, NULL for other kinds of value, for a
 * name met only deeper down and for an absent one; the first of repeated members counts even when
 * it is not a string; a buffer too small is refused, not overrun; the same refusals as
 * csr_json_check_object. */
static void test_top_strings(void **state) {
  (void)state;
  static const char doc[] =
      " { \"Id\" : \"a\\\"b\\u00e9\" ,\"Lines\":[{\"Name\":\"inner\"},2],\"Deep\":{\"Only\":\"x\"},"
      "\"Amount\":184.5,\"Nothing\":null,\"Flag\":true,\"Name\":\"outer\",\"Empty\":\"\","
      "\"Twice\":7,\"Twice\":\"late\",\"Name\":\"again\"}\n";
  static const char *const names[] = {"Id",      "Name", "Amount", "Lines", "Only",
                                      "Nothing", "Flag", "Empty",  "Twice", "Missing"};
  enum { N = sizeof(names) / sizeof(names[0]) };
  const char *vals[N];
  char buf[sizeof(doc) + N], err[160] = "";
  int used = csr_json_top_strings(doc, strlen(doc), names, N, buf, sizeof(buf), vals, err, 160);
  assert_int_equal(used, (int)(strlen("a\"b\xc3\xa9") + 1 + strlen("outer") + 1 + 1));
  assert_string_equal(vals[0], "a\"b\xc3\xa9");
  assert_string_equal(vals[1], "outer");
  assert_string_equal(vals[7], "");
  for (size_t i = 2; i < N; i++)
    if (i != 7 && vals[i] != NULL)
      fail_msg("names[%zu] = \"%s\", not NULL", i, vals[i]);
  for (size_t i = 0; i < N; i++)
    assert_true(vals[i] == NULL || (vals[i] >= buf && vals[i] + strlen(vals[i]) < buf + used));
  /* a buffer one byte short of the values */
  memset(buf, 0, sizeof(buf));
  assert_int_equal(
      csr_json_top_strings(doc, strlen(doc), names, N, buf, (size_t)used - 1, vals, err, 160),
      UV_E2BIG);
  assert_null(vals[0]);
  assert_int_equal(buf[used - 1], 0);
  static const char *const bad[] = {"",
                                    "[]",
                                    "\"s\"",
                                    "{",
                                    "{} {}",
                                    "{}x",
                                    "{\"a\":1,}",
                                    "{/*c*/}",
                                    "{\"Id\":\"\xff\"}",
                                    "{\"Id\":\"a\"/*c*/}"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    err[0] = '\0';
    if (csr_json_top_strings(bad[i], strlen(bad[i]), names, N, buf, sizeof(buf), vals, err, 160) !=
        CSR_EPARSE)
      fail_msg("accepted bad[%zu]", i);
    assert_true(err[0] != '\0' && strchr(err, '\n') == NULL && vals[0] == NULL);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lookup_and_types),
      cmocka_unit_test(test_check_object),
      cmocka_unit_test(test_parse_members),
      cmocka_unit_test(test_parse_checked_members),
      cmocka_unit_test(test_top_strings),
      cmocka_unit_test(test_numbers_keep_their_digits),
      cmocka_unit_test(test_round_trip_whole_document),
      cmocka_unit_test(test_raw_values),
      cmocka_unit_test(test_copy_utf8),
      cmocka_unit_test(test_rejects_non_strict_input),
      cmocka_unit_test(test_writer_escapes_and_validates),
      cmocka_unit_test(test_writer_take),
      cmocka_unit_test(test_writer_moves),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
