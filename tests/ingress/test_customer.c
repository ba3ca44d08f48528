/* The customer request (src/ingress/customer.c, iso.c): every validation rule both ways, the
 * errors that name each bad field, the bodies that are not a JSON object, the normalised form's
 * round trip, and the Commerce bodies byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <uv.h>

#include "csurelay/ingress.h"

static int parse(const char *body, struct cs_customer *c, struct cs_field_errors *errs) {
  return cs_customer_parse(body, strlen(body), c, errs);
}

/* `n` copies of `ch`, in one of a few rotating buffers (a test builds a body from several). */
static const char *rep(char ch, size_t n) {
  static char bufs[8][512];
  static unsigned next;
  char *b = bufs[next++ % 8];
  assert_true(n < sizeof(bufs[0]));
  memset(b, ch, n);
  b[n] = '\0';
  return b;
}

static bool all_null(const struct cs_customer *c) {
  return c->email == NULL && c->first_name == NULL && c->last_name == NULL && c->phone == NULL &&
         !c->has_opt_in && c->language == NULL && c->currency == NULL &&
         c->customer_group == NULL && !c->has_address && c->address.country == NULL &&
         c->_mem == NULL;
}

/* The body breaks exactly one rule: CSR_EINVALID, one error naming `field`, nothing kept. */
static void expect_one_error(const char *body, const char *field, const char *message_part) {
  struct cs_customer c;
  struct cs_field_errors errs;
  int rc = parse(body, &c, &errs);
  if (rc != CSR_EINVALID || errs.n != 1 || strcmp(errs.e[0].field, field) != 0 ||
      strstr(errs.e[0].message, message_part) == NULL)
    fail_msg("body %s: rc %d, %zu errors, first \"%s\": \"%s\"; wanted \"%s\": \"%s\"", body, rc,
             errs.n, errs.n ? errs.e[0].field : "", errs.n ? errs.e[0].message : "", field,
             message_part);
  assert_true(all_null(&c));
}

/* The body is not a JSON object the rules can apply to. */
static void expect_parse_error(const char *body, size_t len) {
  struct cs_customer c;
  struct cs_field_errors errs;
  int rc = cs_customer_parse(body, len, &c, &errs);
  if (rc != CSR_EPARSE)
    fail_msg("body %.*s: rc %d, wanted CSR_EPARSE", (int)len, body ? body : "", rc);
  assert_int_equal(errs.n, 1);
  assert_string_equal(errs.e[0].field, "");
  assert_true(strlen(errs.e[0].message) > 0);
  assert_true(all_null(&c));
}

static void expect_valid(const char *body, struct cs_customer *c) {
  struct cs_field_errors errs;
  int rc = parse(body, c, &errs);
  if (rc != 0)
    fail_msg("body %s: rc %d, first error \"%s\": \"%s\"", body, rc, errs.n ? errs.e[0].field : "",
             errs.n ? errs.e[0].message : "");
}

/* ---- the ISO tables ------------------------------------------------------------------------- */

static void test_iso_tables_are_complete_and_sorted(void **state) {
  /* Every three-letter code: a table out of order loses codes to the binary search. */
  size_t countries = 0, currencies = 0;
  char code[4] = "";
  for (char a = 'A'; a <= 'Z'; a++)
    for (char b = 'A'; b <= 'Z'; b++)
      for (char d = 'A'; d <= 'Z'; d++) {
        code[0] = a, code[1] = b, code[2] = d;
        countries += cs_iso_country(code);
        currencies += cs_iso_currency(code);
      }
  assert_int_equal(countries, 249);
  assert_int_equal(currencies, 178);
}

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

/* Each code gets the answer `want` from `lookup`. */
static void expect_codes(bool (*lookup)(const char *), const char *const *codes, size_t n,
                         bool want) {
  for (size_t i = 0; i < n; i++)
    if (lookup(codes[i]) != want)
      fail_msg("\"%s\" %s", codes[i], want ? "rejected" : "accepted");
  assert_false(lookup(NULL));
}

static void test_iso_country(void **state) {
  static const char *const assigned[] = {"ABW", "ALA", "ATA", "BES", "CUW", "DNK", "GBR", "SSD",
                                         "SXM", "TWN", "UMI", "USA", "VAT", "ZWE", "PSE", "ESH"};
  /* XKX (Kosovo) is user-assigned, ANT and the others withdrawn. */
  static const char *const not_assigned[] = {"XKX", "ANT", "SCG",  "YUG", "SUN", "usa",
                                             "Usa", "US",  "USAA", "",    "AAA", "ZZZ",
                                             "QMA", "XXX", "EUR",  "U A"};
  expect_codes(cs_iso_country, assigned, COUNT_OF(assigned), true);
  expect_codes(cs_iso_country, not_assigned, COUNT_OF(not_assigned), false);
}

static void test_iso_currency(void **state) {
  static const char *const active[] = {
      "USD", "EUR", "DKK", "JPY", "XAU", "XAG", "XDR", "XXX", "XTS", "XCG", "ZWG", "XAD", "VED",
      "VES", "SLE", "UYW", "CHE", "AED", "ZMW", "BOV", "CLF", "MRU", "STN", "SSP", "XSU", "XUA"};
  /* Withdrawn (ANG, BGN, HRK, CUC, SLL, ZWL lately), never codes, or not uppercase. */
  static const char *const inactive[] = {"ANG",  "BGN", "HRK", "CUC", "SLL", "ZWL", "DEM",
                                         "MRO",  "STD", "VEF", "BYR", "LTL", "usd", "US",
                                         "USDD", "",    "ZZZ", "XFU", "XFO", "USS"};
  expect_codes(cs_iso_currency, active, COUNT_OF(active), true);
  expect_codes(cs_iso_currency, inactive, COUNT_OF(inactive), false);
}

/* ---- valid requests ------------------------------------------------------------------------- */

static const char full_body[] =
    "{\"email\":\"Alex.Johnson@Contoso.com\",\"firstName\":\"Alex\",\"lastName\":\"Johnson\","
    "\"phone\":\"+16135551111\",\"optIn\":true,\"language\":\"en-us\",\"currency\":\"USD\","
    "\"customerGroup\":\"30\",\"address\":{\"street\":\"248 Main Street\",\"city\":\"New York\","
    "\"state\":\"NY\",\"zip\":\"10002\",\"country\":\"USA\"}}";

static void test_full_request(void **state) {
  struct cs_customer c;
  expect_valid(full_body, &c);
  assert_string_equal(c.email, "Alex.Johnson@Contoso.com");
  assert_string_equal(c.first_name, "Alex");
  assert_string_equal(c.last_name, "Johnson");
  assert_string_equal(c.phone, "+16135551111");
  assert_true(c.has_opt_in);
  assert_true(c.opt_in);
  assert_string_equal(c.language, "en-us");
  assert_string_equal(c.currency, "USD");
  assert_string_equal(c.customer_group, "30");
  assert_true(c.has_address);
  assert_string_equal(c.address.street, "248 Main Street");
  assert_string_equal(c.address.city, "New York");
  assert_string_equal(c.address.state, "NY");
  assert_string_equal(c.address.zip, "10002");
  assert_string_equal(c.address.country, "USA");
  cs_customer_free(&c);
  assert_true(all_null(&c));
  cs_customer_free(&c); /* twice is harmless */
}

static void test_null_is_absent(void **state) {
  struct cs_customer c;
  expect_valid("{\"email\":\"a@b.co\",\"firstName\":null,\"lastName\":null,\"phone\":null,"
               "\"optIn\":null,\"language\":null,\"currency\":null,\"customerGroup\":null,"
               "\"address\":null}",
               &c);
  assert_string_equal(c.email, "a@b.co");
  assert_null(c.first_name);
  assert_null(c.last_name);
  assert_null(c.phone);
  assert_false(c.has_opt_in);
  assert_null(c.language);
  assert_null(c.currency);
  assert_null(c.customer_group);
  assert_false(c.has_address);
  cs_customer_free(&c);
  /* An address that carries nothing is no address. */
  expect_valid("{\"email\":\"a@b.co\",\"address\":{\"street\":null,\"city\":null,\"state\":null,"
               "\"zip\":null,\"country\":null}}",
               &c);
  assert_false(c.has_address);
  cs_customer_free(&c);
  expect_valid("{\"email\":\"a@b.co\",\"address\":{}}", &c);
  assert_false(c.has_address);
  cs_customer_free(&c);
  expect_valid("{\"email\":\"a@b.co\",\"address\":{\"city\":null,\"zip\":\"2100\"}}", &c);
  assert_true(c.has_address);
  assert_null(c.address.city);
  assert_string_equal(c.address.zip, "2100");
  cs_customer_free(&c);
  expect_valid("{\"email\":\"a@b.co\",\"optIn\":false}", &c);
  assert_true(c.has_opt_in);
  assert_false(c.opt_in);
  cs_customer_free(&c);
}

static void test_valid_edges(void **state) {
  char body[1024];
  struct cs_customer c;
  /* 254 bytes: a 64-byte local part, '@' and 189 bytes of domain (63 + 1 + 63 + 1 + 57 + 4). */
  char email[300];
  snprintf(email, sizeof(email), "%s@%s.%s.%s.com", rep('a', 64), rep('b', 63), rep('c', 63),
           rep('d', 57));
  assert_int_equal(strlen(email), 254);
  snprintf(body, sizeof(body), "{\"email\":\"%s\"}", email);
  expect_valid(body, &c);
  assert_int_equal(strlen(c.email), 254);
  cs_customer_free(&c);
  /* 63-byte labels, the longest allowed. */
  snprintf(body, sizeof(body), "{\"email\":\"x@%s.%s\"}", rep('a', 63), rep('b', 63));
  expect_valid(body, &c);
  cs_customer_free(&c);
  static const char *emails[] = {
      "!#$%&'*+-/=?^_`{|}~.x@example.com",
      "first.last@sub.example.co.uk",
      "a@b.co",
      "UPPER@EXAMPLE.COM",
      "x@xn--bcher-kva.example",
      "1@2.io",
      "a-b@a-b.c-d.org",
  };
  for (size_t i = 0; i < COUNT_OF(emails); i++) {
    snprintf(body, sizeof(body), "{\"email\":\"%s\"}", emails[i]);
    expect_valid(body, &c);
    assert_string_equal(c.email, emails[i]);
    cs_customer_free(&c);
  }
  /* The longest E.164 number, the shortest, and names, group, street and city at their limits
   * (60 bytes of two-byte characters count as 60). */
  snprintf(body, sizeof(body),
           "{\"email\":\"a@b.co\",\"phone\":\"+123456789012345\",\"firstName\":\"%s\","
           "\"lastName\":\"%s\",\"customerGroup\":\"%s\",\"address\":{\"street\":\"%s\","
           "\"city\":\"%s\",\"state\":\"%s\",\"zip\":\"%s\",\"country\":\"ATA\"}}",
           rep('f', 60),
           "\xc3\xb8\xc3\xb8\xc3\xb8\xc3\xb8\xc3\xb8\xc3\xb8\xc3\xb8\xc3\xb8\xc3\xb8"
           "\xc3\xb8\xc3\xb8\xc3\xb8\xc3\xb8\xc3\xb8\xc3\xb8\xc3\xb8\xc3\xb8\xc3\xb8"
           "\xc3\xb8\xc3\xb8\xc3\xb8\xc3\xb8\xc3\xb8\xc3\xb8\xc3\xb8\xc3\xb8\xc3\xb8"
           "\xc3\xb8\xc3\xb8\xc3\xb8",
           rep('g', 10), rep('s', 250), rep('c', 60), rep('t', 10), rep('z', 10));
  expect_valid(body, &c);
  assert_string_equal(c.phone, "+123456789012345");
  assert_int_equal(strlen(c.last_name), 60);
  assert_int_equal(strlen(c.address.street), 250);
  cs_customer_free(&c);
  expect_valid("{\"email\":\"a@b.co\",\"phone\":\"+12\"}", &c);
  cs_customer_free(&c);
  static const char *languages[] = {"en", "ast", "en-us", "en-US", "nb-NO", "zh-Hans", "es-419"};
  for (size_t i = 0; i < COUNT_OF(languages); i++) {
    snprintf(body, sizeof(body), "{\"email\":\"a@b.co\",\"language\":\"%s\"}", languages[i]);
    expect_valid(body, &c);
    cs_customer_free(&c);
  }
  static const char *countries[] = {"ATA", "SSD", "DNK", "GBR", "ALA", "CUW", "BES", "UMI"};
  for (size_t i = 0; i < COUNT_OF(countries); i++) {
    snprintf(body, sizeof(body), "{\"email\":\"a@b.co\",\"address\":{\"country\":\"%s\"}}",
             countries[i]);
    expect_valid(body, &c);
    assert_string_equal(c.address.country, countries[i]);
    cs_customer_free(&c);
  }
  /* Escapes decode: "\u00e6" is 2 bytes, "\/" a slash. */
  expect_valid("{\"email\":\"a\\/b@c.dk\",\"firstName\":\"S\\u00f8ren \\\"Bo\\\"\"}", &c);
  assert_string_equal(c.email, "a/b@c.dk");
  assert_string_equal(c.first_name, "S\xc3\xb8ren \"Bo\"");
  cs_customer_free(&c);
}

/* ---- one bad field at a time ---------------------------------------------------------------- */

static void test_email_rules(void **state) {
  char body[1024];
  expect_one_error("{}", "email", "required");
  expect_one_error("{\"email\":null,\"firstName\":\"A\"}", "email", "required");
  expect_one_error("{\"email\":\"\"}", "email", "empty");
  expect_one_error("{\"email\":5}", "email", "string");
  expect_one_error("{\"email\":[\"a@b.co\"]}", "email", "string");
  expect_one_error("{\"email\":{}}", "email", "string");
  static const struct {
    const char *email, *message;
  } bad[] = {
      {"noat.example.com", "one '@'"},
      {"a@b@example.com", "one '@'"},
      {"@example.com", "before '@'"},
      {".a@example.com", "before '@'"},
      {"a.@example.com", "before '@'"},
      {"a..b@example.com", "before '@'"},
      {"a b@example.com", "before '@'"},
      {" a@example.com", "before '@'"},
      {"\\\"a\\\"@example.com", "before '@'"}, /* a quoted local part */
      {"a(b)@example.com", "before '@'"},
      {"\xc3\xa6@example.com", "before '@'"},
      {"a@", "domain"},
      {"a@localhost", "domain"},
      {"a@example.com ", "domain"},
      {"a@example.c", "domain"},
      {"a@example.c0m", "domain"},
      {"a@1.2.3.4", "domain"},
      {"a@[192.168.0.1]", "domain"},
      {"a@-x.com", "domain"},
      {"a@x-.com", "domain"},
      {"a@x..com", "domain"},
      {"a@.x.com", "domain"},
      {"a@x.com.", "domain"},
      {"a@x_y.com", "domain"},
      {"a@b\xc3\xa6.com", "domain"},
  };
  for (size_t i = 0; i < COUNT_OF(bad); i++) {
    snprintf(body, sizeof(body), "{\"email\":\"%s\"}", bad[i].email);
    expect_one_error(body, "email", bad[i].message);
  }
  snprintf(body, sizeof(body), "{\"email\":\"%s@example.com\"}", rep('a', 65));
  expect_one_error(body, "email", "1-64 bytes");
  snprintf(body, sizeof(body), "{\"email\":\"a@%s.com\"}", rep('b', 64));
  expect_one_error(body, "email", "domain");
  /* 255 bytes, every part within its own bounds */
  snprintf(body, sizeof(body), "{\"email\":\"%s@%s.%s.%s.com\"}", rep('a', 64), rep('b', 63),
           rep('c', 63), rep('d', 58));
  expect_one_error(body, "email", "at most 254 bytes");
}

static void test_field_rules(void **state) {
  char body[1024];
  static const struct {
    const char *json, *field, *message;
  } bad[] = {
      {"\"firstName\":\"\"", "firstName", "empty"},
      {"\"firstName\":7", "firstName", "string"},
      {"\"firstName\":true", "firstName", "string"},
      {"\"firstName\":[]", "firstName", "string"},
      {"\"firstName\":\"a\\tb\"", "firstName", "control"},
      {"\"lastName\":\"a\\u0001\"", "lastName", "control"},
      {"\"lastName\":\"a\\u007f\"", "lastName", "control"},
      {"\"lastName\":\"\\n\"", "lastName", "control"},
      {"\"phone\":\"16135551111\"", "phone", "E.164"},
      {"\"phone\":\"+06135551111\"", "phone", "E.164"},
      {"\"phone\":\"+1\"", "phone", "E.164"},
      {"\"phone\":\"+1234567890123456\"", "phone", "E.164"},
      {"\"phone\":\"+1 613 555 1111\"", "phone", "E.164"},
      {"\"phone\":\"+1-613-555-1111\"", "phone", "E.164"},
      {"\"phone\":\"+\"", "phone", "E.164"},
      {"\"phone\":16135551111", "phone", "string"},
      {"\"optIn\":\"true\"", "optIn", "true or false"},
      {"\"optIn\":1", "optIn", "true or false"},
      {"\"optIn\":{}", "optIn", "true or false"},
      {"\"language\":\"e\"", "language", "language tag"},
      {"\"language\":\"english\"", "language", "language tag"},
      {"\"language\":\"en_US\"", "language", "language tag"},
      {"\"language\":\"en-u\"", "language", "language tag"},
      {"\"language\":\"en-\"", "language", "language tag"},
      {"\"language\":\"e1\"", "language", "language tag"},
      {"\"language\":\"en-US-x\"", "language", "language tag"},
      {"\"language\":\"zh-Hansx\"", "language", "language tag"},
      {"\"language\":\"en-u\\u00e6\"", "language", "language tag"},
      {"\"currency\":\"usd\"", "currency", "ISO 4217"},
      {"\"currency\":\"US\"", "currency", "ISO 4217"},
      {"\"currency\":\"USDX\"", "currency", "ISO 4217"},
      {"\"currency\":\"ANG\"", "currency", "ISO 4217"},
      {"\"currency\":\"ZZZ\"", "currency", "ISO 4217"},
      {"\"currency\":\"\"", "currency", "empty"},
      {"\"customerGroup\":\"12345678901\"", "customerGroup", "at most 10 bytes"},
      {"\"customerGroup\":30", "customerGroup", "string"},
      {"\"address\":\"Main Street\"", "address", "object"},
      {"\"address\":[]", "address", "object"},
      {"\"address\":true", "address", "object"},
      {"\"address\":{\"country\":\"usa\"}", "address.country", "ISO 3166-1"},
      {"\"address\":{\"country\":\"XKX\"}", "address.country", "ISO 3166-1"},
      {"\"address\":{\"country\":\"ANT\"}", "address.country", "ISO 3166-1"},
      {"\"address\":{\"country\":\"US\"}", "address.country", "ISO 3166-1"},
      {"\"address\":{\"country\":840}", "address.country", "string"},
      {"\"address\":{\"zip\":10002}", "address.zip", "string"},
      {"\"address\":{\"zip\":\"12345678901\"}", "address.zip", "at most 10 bytes"},
      {"\"address\":{\"state\":\"12345678901\"}", "address.state", "at most 10 bytes"},
      {"\"address\":{\"city\":\"\"}", "address.city", "empty"},
      {"\"address\":{\"street\":\"a\\rb\"}", "address.street", "control"},
      {"\"address\":{\"Street\":\"x\"}", "address.Street", "unknown field"},
      {"\"address\":{\"city\":\"A\",\"city\":\"B\"}", "address.city", "duplicate field"},
      {"\"Email\":\"a@b.co\"", "Email", "unknown field"},
      {"\"first_name\":\"Alex\"", "first_name", "unknown field"},
      {"\"firstName\":\"A\",\"firstName\":\"B\"", "firstName", "duplicate field"},
      {"\"optIn\":true,\"optIn\":null", "optIn", "duplicate field"},
      {"\"email\":\"c@d.co\"", "email", "duplicate field"},
  };
  for (size_t i = 0; i < COUNT_OF(bad); i++) {
    snprintf(body, sizeof(body), "{\"email\":\"a@b.co\",%s}", bad[i].json);
    expect_one_error(body, bad[i].field, bad[i].message);
  }
  snprintf(body, sizeof(body), "{\"email\":\"a@b.co\",\"firstName\":\"%s\"}", rep('f', 61));
  expect_one_error(body, "firstName", "at most 60 bytes");
  snprintf(body, sizeof(body), "{\"email\":\"a@b.co\",\"lastName\":\"%s\"}", rep('l', 61));
  expect_one_error(body, "lastName", "at most 60 bytes");
  snprintf(body, sizeof(body), "{\"email\":\"a@b.co\",\"address\":{\"street\":\"%s\"}}",
           rep('s', 251));
  expect_one_error(body, "address.street", "at most 250 bytes");
  snprintf(body, sizeof(body), "{\"email\":\"a@b.co\",\"address\":{\"city\":\"%s\"}}",
           rep('c', 61));
  expect_one_error(body, "address.city", "at most 60 bytes");
}

/* ---- several bad fields at once ------------------------------------------------------------- */

static void test_every_bad_field_is_named(void **state) {
  struct cs_customer c;
  struct cs_field_errors errs;
  const char *body = "{\"firstName\":\"\",\"phone\":\"555-1111\",\"currency\":\"usd\",\"nickname\":"
                     "\"Al\",\"optIn\":\"yes\",\"address\":{\"country\":\"XKX\",\"zip\":1,"
                     "\"floor\":2},\"language\":\"en-us\"}";
  assert_int_equal(parse(body, &c, &errs), CSR_EINVALID);
  static const char *fields[] = {"firstName",   "phone",         "currency",
                                 "nickname",    "optIn",         "address.country",
                                 "address.zip", "address.floor", "email"};
  assert_int_equal(errs.n, COUNT_OF(fields));
  for (size_t i = 0; i < errs.n; i++)
    assert_string_equal(errs.e[i].field, fields[i]);
  assert_string_equal(errs.e[8].message, "is required");
  assert_true(all_null(&c));
}

static void test_errors_past_the_cap_are_counted(void **state) {
  char body[2048] = "{";
  for (int i = 0; i < 30; i++)
    snprintf(body + strlen(body), sizeof(body) - strlen(body), "\"k%02d\":1,", i);
  snprintf(body + strlen(body), sizeof(body) - strlen(body), "\"email\":\"a@b.co\"}");
  struct cs_customer c;
  struct cs_field_errors errs;
  assert_int_equal(parse(body, &c, &errs), CSR_EINVALID);
  assert_int_equal(errs.n, 30);
  assert_string_equal(errs.e[0].field, "k00");
  assert_string_equal(errs.e[CS_MAX_FIELD_ERRORS - 1].field, "k23");
}

static void test_long_keys_are_cut_on_characters(void **state) {
  char body[512];
  struct cs_customer c;
  struct cs_field_errors errs;
  snprintf(body, sizeof(body), "{\"email\":\"a@b.co\",\"%s\":1}", rep('k', 40));
  assert_int_equal(parse(body, &c, &errs), CSR_EINVALID);
  assert_string_equal(errs.e[0].field, rep('k', 31));
  /* 20 x "æ" (2 bytes each): 15 whole characters fit in 31 bytes. */
  char key[64] = "";
  for (int i = 0; i < 20; i++)
    strcat(key, "\xc3\xa6");
  snprintf(body, sizeof(body), "{\"email\":\"a@b.co\",\"%s\":1}", key);
  assert_int_equal(parse(body, &c, &errs), CSR_EINVALID);
  assert_int_equal(strlen(errs.e[0].field), 30);
  assert_memory_equal(errs.e[0].field, key, 30);
  snprintf(body, sizeof(body), "{\"email\":\"a@b.co\",\"address\":{\"%s\":1}}", key);
  assert_int_equal(parse(body, &c, &errs), CSR_EINVALID);
  assert_int_equal(strlen(errs.e[0].field), 30); /* "address." and 11 characters */
  assert_memory_equal(errs.e[0].field, "address.\xc3\xa6", 10);
}

/* ---- not a JSON object ---------------------------------------------------------------------- */

static void test_parse_errors(void **state) {
  static const char *bodies[] = {
      "",
      "hello",
      "{\"email\":\"a@b.co\"",
      "{\"email\":\"a@b.co",
      "{\"email\":",
      "[]",
      "[{\"email\":\"a@b.co\"}]",
      "\"a@b.co\"",
      "42",
      "null",
      "true",
      "{\"email\":\"a@b.co\"} x",
      "{\"email\":\"a@b.co\"}{}",
      "{\"email\":\"a@b.co\"},",
      "{email:\"a@b.co\"}",
      "{'email':'a@b.co'}",
      "{\"email\":\"a@b.co\",}",
      "{\"email\":\"a@b.co\" /* c */}",
      "{\"email\":\"a\tb@c.co\"}",      /* a raw control character in a string */
      "{\"email\":\"\\x41@b.co\"}",     /* not a JSON escape */
      "{\"email\":\"a\\u0000b@c.co\"}", /* would cut the string short */
      "{\"firstName\":\"\\u0000\",\"email\":\"a@b.co\"}",
      "{\"email\":\"\xff@b.co\"}",                                 /* not UTF-8 */
      "{\"email\":\"\xc3@b.co\"}",                                 /* a cut sequence */
      "{\"email\":\"a@b.co\",\"firstName\":\"\xc0\x80\"}",         /* overlong NUL */
      "{\"email\":\"a@b.co\",\"firstName\":\"\xe0\x80\xaf\"}",     /* overlong '/' */
      "{\"email\":\"a@b.co\",\"firstName\":\"\xed\xa0\x80\"}",     /* a surrogate */
      "{\"email\":\"a@b.co\",\"firstName\":\"\xf4\x90\x80\x80\"}", /* past U+10FFFF */
      "{\"email\":\"a@b.co\",\"\xfe\":1}",                         /* a key that is not UTF-8 */
      "{\"email\":\"a@b.co\",\"address\":{\"street\":{\"n\":1}}}",
      "{\"email\":\"a@b.co\",\"address\":{\"street\":[\"1\"]}}",
      "{\"email\":\"a@b.co\",\"x\":[[1]]}",
      "{\"email\":\"a@b.co\",\"x\":{\"y\":{}}}",
  };
  for (size_t i = 0; i < COUNT_OF(bodies); i++)
    expect_parse_error(bodies[i], strlen(bodies[i]));
  /* A NUL byte inside the body, and no body at all. */
  expect_parse_error("{\"email\":\"a@b.co\"}\0", 19);
  expect_parse_error(NULL, 0);
  /* Deep nesting stops at the third level, long before yajl builds anything. */
  size_t n = 100000;
  char *deep = malloc(n);
  assert_non_null(deep);
  memset(deep, '[', n);
  expect_parse_error(deep, n);
  memset(deep, '{', 1);
  memcpy(deep + 1, "\"a\":", 4);
  expect_parse_error(deep, n);
  free(deep);
  /* The reason is yajl's first line, without the body's text. */
  struct cs_customer c;
  struct cs_field_errors errs;
  assert_int_equal(parse("{\"email\":\"secret@example.com\" x}", &c, &errs), CSR_EPARSE);
  assert_null(strstr(errs.e[0].message, "secret"));
  assert_null(strchr(errs.e[0].message, '\n'));
}

/* ---- the normalised request ----------------------------------------------------------------- */

static char *encode(const struct cs_customer *c) {
  struct csr_jw jw;
  const char *text;
  size_t len;
  assert_int_equal(csr_jw_init(&jw), 0);
  assert_int_equal(cs_customer_encode(c, &jw), 0);
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
  char *copy = strndup(text, len);
  csr_jw_free(&jw);
  return copy;
}

static void assert_same_text(const char *a, const char *b) {
  if (a == NULL || b == NULL)
    assert_true(a == b);
  else
    assert_string_equal(a, b);
}

static void assert_same_customer(const struct cs_customer *a, const struct cs_customer *b) {
  assert_same_text(a->email, b->email);
  assert_same_text(a->first_name, b->first_name);
  assert_same_text(a->last_name, b->last_name);
  assert_same_text(a->phone, b->phone);
  assert_int_equal(a->has_opt_in, b->has_opt_in);
  assert_int_equal(a->opt_in, b->opt_in);
  assert_same_text(a->language, b->language);
  assert_same_text(a->currency, b->currency);
  assert_same_text(a->customer_group, b->customer_group);
  assert_int_equal(a->has_address, b->has_address);
  assert_same_text(a->address.street, b->address.street);
  assert_same_text(a->address.city, b->address.city);
  assert_same_text(a->address.state, b->address.state);
  assert_same_text(a->address.zip, b->address.zip);
  assert_same_text(a->address.country, b->address.country);
}

static void round_trip(const char *body, const char *expected) {
  struct cs_customer a, b;
  expect_valid(body, &a);
  char *text = encode(&a);
  assert_string_equal(text, expected);
  expect_valid(text, &b);
  assert_same_customer(&a, &b);
  char *again = encode(&b);
  assert_string_equal(again, text);
  free(again);
  free(text);
  cs_customer_free(&a);
  cs_customer_free(&b);
}

static void test_encode_round_trip(void **state) {
  round_trip(full_body, full_body);
  round_trip("{\"email\":\"a@b.co\"}", "{\"email\":\"a@b.co\"}");
  /* Keys in any order, nulls and an empty address: the normalised form drops and orders them. */
  round_trip("{\"address\":{\"country\":\"DNK\",\"street\":null,\"city\":\"K\\u00f8benhavn\"},"
             "\"optIn\":false,\"phone\":null,\"lastName\":\"Lee\",\"email\":\"a/b@c.dk\"}",
             "{\"email\":\"a/b@c.dk\",\"lastName\":\"Lee\",\"optIn\":false,\"address\":{\"city\":"
             "\"K\xc3\xb8"
             "benhavn\",\"country\":\"DNK\"}}");
  round_trip("{\"email\":\"a@b.co\",\"address\":{},\"currency\":null}", "{\"email\":\"a@b.co\"}");
  /* Characters that need escapes in JSON survive. */
  round_trip("{\"email\":\"o'neil@b.co\",\"firstName\":\"Al \\\"Bo\\\" \\\\ \\u00e6\"}",
             "{\"email\":\"o'neil@b.co\",\"firstName\":\"Al \\\"Bo\\\" \\\\ \xc3\xa6\"}");
  struct cs_customer empty = {0};
  struct csr_jw jw;
  assert_int_equal(csr_jw_init(&jw), 0);
  assert_int_equal(cs_customer_encode(&empty, &jw), UV_EINVAL);
  csr_jw_free(&jw);
}

/* ---- the Commerce bodies -------------------------------------------------------------------- */

static void expect_commerce(const char *body, bool create, const char *account,
                            const char *expected) {
  struct cs_customer c;
  struct csr_jw jw;
  const char *text;
  size_t len;
  expect_valid(body, &c);
  assert_int_equal(csr_jw_init(&jw), 0);
  assert_int_equal(cs_customer_commerce_body(&c, create, account, &jw), 0);
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
  assert_string_equal(text, expected);
  assert_int_equal(len, strlen(expected));
  csr_jw_free(&jw);
  cs_customer_free(&c);
}

static void test_commerce_create(void **state) {
  expect_commerce(
      full_body, true, NULL,
      "{\"AccountNumber\":\"\",\"CustomerTypeValue\":1,\"Email\":\"Alex.Johnson@Contoso.com\","
      "\"ReceiptEmail\":\"Alex.Johnson@Contoso.com\",\"FirstName\":\"Alex\",\"LastName\":"
      "\"Johnson\",\"Name\":\"Alex Johnson\",\"Phone\":\"+16135551111\",\"Language\":\"en-us\","
      "\"CurrencyCode\":\"USD\",\"CustomerGroup\":\"30\",\"Addresses\":[{\"Name\":\"Alex "
      "Johnson\",\"Street\":\"248 Main Street\",\"City\":\"New York\",\"State\":\"NY\","
      "\"ZipCode\":\"10002\",\"ThreeLetterISORegionName\":\"USA\",\"IsPrimary\":true,"
      "\"AddressTypeValue\":0}],\"ExtensionProperties\":[{\"Key\":\"EmailOptIn\",\"Value\":{"
      "\"BooleanValue\":true}}]}");
  expect_commerce("{\"email\":\"a@b.co\"}", true, "ignored",
                  "{\"AccountNumber\":\"\",\"CustomerTypeValue\":1,\"Email\":\"a@b.co\","
                  "\"ReceiptEmail\":\"a@b.co\",\"ExtensionProperties\":[]}");
  expect_commerce("{\"email\":\"a@b.co\",\"lastName\":\"Lee\",\"optIn\":false,\"address\":{"
                  "\"country\":\"DNK\"}}",
                  true, NULL,
                  "{\"AccountNumber\":\"\",\"CustomerTypeValue\":1,\"Email\":\"a@b.co\","
                  "\"ReceiptEmail\":\"a@b.co\",\"LastName\":\"Lee\",\"Name\":\"Lee\","
                  "\"Addresses\":[{\"Name\":\"Lee\",\"ThreeLetterISORegionName\":\"DNK\","
                  "\"IsPrimary\":true,\"AddressTypeValue\":0}],\"ExtensionProperties\":[{\"Key\":"
                  "\"EmailOptIn\",\"Value\":{\"BooleanValue\":false}}]}");
  expect_commerce("{\"email\":\"a@b.co\",\"firstName\":\"Al\",\"address\":{\"city\":\"Oslo\"}}",
                  true, NULL,
                  "{\"AccountNumber\":\"\",\"CustomerTypeValue\":1,\"Email\":\"a@b.co\","
                  "\"ReceiptEmail\":\"a@b.co\",\"FirstName\":\"Al\",\"Name\":\"Al\",\"Addresses\":"
                  "[{\"Name\":\"Al\",\"City\":\"Oslo\",\"IsPrimary\":true,\"AddressTypeValue\":0}],"
                  "\"ExtensionProperties\":[]}");
  expect_commerce("{\"email\":\"a@b.co\",\"address\":{\"zip\":\"0150\"}}", true, NULL,
                  "{\"AccountNumber\":\"\",\"CustomerTypeValue\":1,\"Email\":\"a@b.co\","
                  "\"ReceiptEmail\":\"a@b.co\",\"Addresses\":[{\"ZipCode\":\"0150\",\"IsPrimary\":"
                  "true,\"AddressTypeValue\":0}],\"ExtensionProperties\":[]}");
}

static void test_commerce_update(void **state) {
  expect_commerce(
      full_body, false, "006001",
      "{\"AccountNumber\":\"006001\",\"Email\":\"Alex.Johnson@Contoso.com\",\"FirstName\":"
      "\"Alex\",\"LastName\":\"Johnson\",\"Name\":\"Alex Johnson\",\"Phone\":\"+16135551111\","
      "\"Language\":\"en-us\",\"CurrencyCode\":\"USD\",\"CustomerGroup\":\"30\",\"Addresses\":[{"
      "\"Name\":\"Alex Johnson\",\"Street\":\"248 Main Street\",\"City\":\"New York\",\"State\":"
      "\"NY\",\"ZipCode\":\"10002\",\"ThreeLetterISORegionName\":\"USA\",\"IsPrimary\":true,"
      "\"AddressTypeValue\":0}],\"ExtensionProperties\":[{\"Key\":\"EmailOptIn\",\"Value\":{"
      "\"BooleanValue\":true}}]}");
  /* Only what the request gives: no ReceiptEmail, no empty ExtensionProperties. */
  expect_commerce("{\"email\":\"a@b.co\"}", false, "006001",
                  "{\"AccountNumber\":\"006001\",\"Email\":\"a@b.co\"}");
  /* One name alone does not make Name (it would overwrite the stored full name with half). */
  expect_commerce("{\"email\":\"a@b.co\",\"firstName\":\"Alexandra\",\"phone\":\"+4512345678\"}",
                  false, "006001",
                  "{\"AccountNumber\":\"006001\",\"Email\":\"a@b.co\",\"FirstName\":\"Alexandra\","
                  "\"Phone\":\"+4512345678\"}");
  expect_commerce("{\"email\":\"a@b.co\",\"optIn\":false,\"address\":{\"street\":\"Vej 1\"}}",
                  false, "C-1",
                  "{\"AccountNumber\":\"C-1\",\"Email\":\"a@b.co\",\"Addresses\":[{\"Street\":"
                  "\"Vej 1\",\"IsPrimary\":true,\"AddressTypeValue\":0}],\"ExtensionProperties\":"
                  "[{\"Key\":\"EmailOptIn\",\"Value\":{\"BooleanValue\":false}}]}");
  /* An update needs the account; nothing needs a request without email. */
  struct cs_customer c;
  struct csr_jw jw;
  expect_valid("{\"email\":\"a@b.co\"}", &c);
  assert_int_equal(csr_jw_init(&jw), 0);
  assert_int_equal(cs_customer_commerce_body(&c, false, NULL, &jw), UV_EINVAL);
  assert_int_equal(cs_customer_commerce_body(&c, false, "", &jw), UV_EINVAL);
  cs_customer_free(&c);
  assert_int_equal(cs_customer_commerce_body(&c, true, NULL, &jw), UV_EINVAL);
  csr_jw_free(&jw);
}

/* ---- the email's key ------------------------------------------------------------------------ */

static void test_email_key(void **state) {
  char buf[64];
  assert_int_equal(cs_email_key("Alex.Johnson@Contoso.COM", buf, sizeof(buf)), 0);
  assert_string_equal(buf, "alex.johnson@contoso.com");
  assert_int_equal(cs_email_key("already@lower.case", buf, sizeof(buf)), 0);
  assert_string_equal(buf, "already@lower.case");
  /* Only ASCII folds; other bytes pass unchanged. */
  assert_int_equal(cs_email_key("\xc3\x86Z{|}~@X.IO", buf, sizeof(buf)), 0);
  assert_string_equal(buf, "\xc3\x86z{|}~@x.io");
  /* Exactly fits (6 bytes and the NUL), then one byte short. */
  char small[7];
  assert_int_equal(cs_email_key("A@B.CO", small, sizeof(small)), 0);
  assert_string_equal(small, "a@b.co");
  assert_int_equal(cs_email_key("A@B.COM", small, sizeof(small)), UV_ENOBUFS);
  assert_int_equal(cs_email_key("A@B.CO", small, 0), UV_ENOBUFS);
  assert_int_equal(cs_email_key(NULL, small, sizeof(small)), UV_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_iso_tables_are_complete_and_sorted),
      cmocka_unit_test(test_iso_country),
      cmocka_unit_test(test_iso_currency),
      cmocka_unit_test(test_full_request),
      cmocka_unit_test(test_null_is_absent),
      cmocka_unit_test(test_valid_edges),
      cmocka_unit_test(test_email_rules),
      cmocka_unit_test(test_field_rules),
      cmocka_unit_test(test_every_bad_field_is_named),
      cmocka_unit_test(test_errors_past_the_cap_are_counted),
      cmocka_unit_test(test_long_keys_are_cut_on_characters),
      cmocka_unit_test(test_parse_errors),
      cmocka_unit_test(test_encode_round_trip),
      cmocka_unit_test(test_commerce_create),
      cmocka_unit_test(test_commerce_update),
      cmocka_unit_test(test_email_key),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
