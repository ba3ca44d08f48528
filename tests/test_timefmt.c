/* src/timefmt.c: ISO-8601 instants as Commerce and Dataverse send them, to epoch milliseconds and
 * back. Known anchors, every fraction length, offsets, leap years, dates before 1970 and Commerce's
 * "not set" dates, a day-by-day walk against a naive calendar, and malformed input. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "csurelay/timefmt.h"

#define DAY_MS 86400000LL

struct known {
  const char *text;
  int64_t ms;
};

static void expect_parse(const struct known *k, size_t n) {
  for (size_t i = 0; i < n; i++) {
    int64_t ms = 0;
    int rc = csr_time_parse(k[i].text, &ms);
    if (rc != 0 || ms != k[i].ms) {
      print_error("'%s': rc %d, got %lld, want %lld\n", k[i].text, rc, (long long)ms,
                  (long long)k[i].ms);
      fail();
    }
  }
}

static void expect_format(int64_t ms, const char *want, const char *want_seconds) {
  char buf[CSR_TIME_BUF];
  size_t n = csr_time_format(ms, buf, sizeof(buf));
  if (n != strlen(want) || strcmp(buf, want) != 0) {
    print_error("%lld: got '%s' (%zu), want '%s'\n", (long long)ms, buf, n, want);
    fail();
  }
  n = csr_time_format_seconds(ms, buf, sizeof(buf));
  if (n != strlen(want_seconds) || strcmp(buf, want_seconds) != 0) {
    print_error("%lld: got '%s' (%zu) in seconds, want '%s'\n", (long long)ms, buf, n,
                want_seconds);
    fail();
  }
}

static void test_parse_known(void **state) {
  static const struct known cases[] = {
      {"1970-01-01T00:00:00Z", 0},
      {"2024-07-24T00:00:00Z", 1721779200000LL},
      {"2024-07-24T14:17:02Z", 1721830622000LL},
      {"2024-07-24T14:17:02.16Z", 1721830622160LL},
      {"2024-07-24T14:17:02.1600000Z", 1721830622160LL},
      {"2024-07-24t14:17:02z", 1721830622000LL},
      {"2038-01-19T03:14:08Z", 2147483648000LL}, /* past 32-bit time_t */
      {"9999-12-31T23:59:59.999Z", 253402300799999LL},
  };
  expect_parse(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_fractions(void **state) {
  /* Milliseconds are the first three digits; the rest is truncated, never rounded up. */
  static const struct known cases[] = {
      {"2024-07-24T14:17:02.1Z", 1721830622100LL},
      {"2024-07-24T14:17:02.12Z", 1721830622120LL},
      {"2024-07-24T14:17:02.123Z", 1721830622123LL},
      {"2024-07-24T14:17:02.1234Z", 1721830622123LL},
      {"2024-07-24T14:17:02.12345Z", 1721830622123LL},
      {"2024-07-24T14:17:02.123456Z", 1721830622123LL},
      {"2024-07-24T14:17:02.1234567Z", 1721830622123LL},
      {"2024-07-24T14:17:02.9999999Z", 1721830622999LL},
      {"2024-07-24T14:17:02.0000001Z", 1721830622000LL},
      {"2024-07-24T14:17:02.000Z", 1721830622000LL},
      {"2024-07-24T14:17:02.123456789012345Z", 1721830622123LL},
  };
  expect_parse(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_offsets(void **state) {
  static const struct known cases[] = {
      {"2024-07-24T16:17:02+02:00", 1721830622000LL},
      {"2024-07-24T09:17:02-05:00", 1721830622000LL},
      {"2024-07-24T19:47:02.16+05:30", 1721830622160LL},
      {"2024-07-24T19:47:02+0530", 1721830622000LL},
      {"2024-07-24T14:17:02+00:00", 1721830622000LL},
      {"2024-07-24T14:17:02-00:00", 1721830622000LL},
      /* Offsets that carry the instant across a day, a month and a year. */
      {"2024-07-24T01:00:00+02:00", 1721775600000LL}, /* 2024-07-23T23:00:00Z */
      {"2024-07-31T23:00:00-02:00", 1722474000000LL}, /* 2024-08-01T01:00:00Z */
      {"2024-01-01T00:30:00+01:00", 1704065400000LL}, /* 2023-12-31T23:30:00Z */
      {"2024-07-24T14:17:02+23:59", 1721744282000LL},
      {"2024-07-24T14:17:02-23:59", 1721916962000LL},
  };
  expect_parse(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_leap_years(void **state) {
  static const struct known good[] = {
      {"2024-02-29T00:00:00Z", 1709164800000LL},   {"2024-03-01T00:00:00Z", 1709251200000LL},
      {"2000-02-29T12:00:00Z", 951825600000LL}, /* divisible by 400 */
      {"1600-02-29T00:00:00Z", -11670998400000LL}, {"2023-12-31T00:00:00Z", 1703980800000LL},
      {"2024-12-31T00:00:00Z", 1735603200000LL}, /* day 366 */
  };
  expect_parse(good, sizeof(good) / sizeof(good[0]));
  static const char *const bad[] = {"2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z",
                                    "2100-02-29T00:00:00Z", "2024-02-30T00:00:00Z"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    int64_t ms = 0;
    assert_int_equal(csr_time_parse(bad[i], &ms), CSR_EPARSE);
  }
  expect_format(1709164800000LL, "2024-02-29T00:00:00Z", "2024-02-29T00:00:00Z");
  expect_format(951825600000LL, "2000-02-29T12:00:00Z", "2000-02-29T12:00:00Z");
}

static void test_before_1970(void **state) {
  /* Commerce's "not set" dates are ordinary instants here. */
  static const struct known cases[] = {
      {"0001-01-01T00:00:00Z", -62135596800000LL},
      {"1900-01-01T00:00:00Z", -2208988800000LL},
      {"1969-12-31T23:59:59.999Z", -1},
      {"1969-12-31T23:59:59Z", -1000},
      {"1960-06-15T08:30:00.5Z", -301246199500LL},
      {"1970-01-01T00:30:00+01:00", -1800000},
  };
  expect_parse(cases, sizeof(cases) / sizeof(cases[0]));
  expect_format(-62135596800000LL, "0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z");
  expect_format(-2208988800000LL, "1900-01-01T00:00:00Z", "1900-01-01T00:00:00Z");
  /* Seconds and milliseconds count towards the past, not towards the epoch. */
  expect_format(-1, "1969-12-31T23:59:59.999Z", "1969-12-31T23:59:59Z");
  expect_format(-999, "1969-12-31T23:59:59.001Z", "1969-12-31T23:59:59Z");
  expect_format(-1000, "1969-12-31T23:59:59Z", "1969-12-31T23:59:59Z");
  expect_format(-1001, "1969-12-31T23:59:58.999Z", "1969-12-31T23:59:58Z");
  expect_format(-DAY_MS, "1969-12-31T00:00:00Z", "1969-12-31T00:00:00Z");
}

static void test_format_trims(void **state) {
  expect_format(1721830622000LL, "2024-07-24T14:17:02Z", "2024-07-24T14:17:02Z");
  expect_format(1721830622160LL, "2024-07-24T14:17:02.16Z", "2024-07-24T14:17:02Z");
  expect_format(1721830622100LL, "2024-07-24T14:17:02.1Z", "2024-07-24T14:17:02Z");
  expect_format(1721830622123LL, "2024-07-24T14:17:02.123Z", "2024-07-24T14:17:02Z");
  expect_format(1721830622005LL, "2024-07-24T14:17:02.005Z", "2024-07-24T14:17:02Z");
  expect_format(1721830622050LL, "2024-07-24T14:17:02.05Z", "2024-07-24T14:17:02Z");
  expect_format(1721830622999LL, "2024-07-24T14:17:02.999Z", "2024-07-24T14:17:02Z");
  expect_format(0, "1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z");
  expect_format(253402300799999LL, "9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59Z");
}

static void test_format_limits(void **state) {
  char buf[CSR_TIME_BUF];
  /* strftime's contract: the whole text and its NUL fit, or 0 and an empty string. */
  assert_int_equal(csr_time_format(1721830622160LL, buf, 24), 23);
  assert_string_equal(buf, "2024-07-24T14:17:02.16Z");
  memset(buf, 'x', sizeof(buf));
  assert_int_equal(csr_time_format(1721830622160LL, buf, 23), 0);
  assert_string_equal(buf, "");
  memset(buf, 'x', sizeof(buf));
  assert_int_equal(csr_time_format(1721830622160LL, buf, 19), 0); /* the seconds do not fit */
  assert_string_equal(buf, "");
  assert_int_equal(csr_time_format_seconds(1721830622160LL, buf, 21), 20);
  assert_string_equal(buf, "2024-07-24T14:17:02Z");
  assert_int_equal(csr_time_format_seconds(1721830622160LL, buf, 20), 0);
  assert_string_equal(buf, "");
  assert_int_equal(csr_time_format(0, NULL, 0), 0);
  assert_int_equal(csr_time_format(-1, buf, 1), 0);
  assert_string_equal(buf, "");
  /* Outside years 0001 to 9999 there is no four-digit year to write. */
  static const int64_t outside[] = {-62135596800001LL, 253402300800000LL, INT64_MIN, INT64_MAX};
  for (size_t i = 0; i < sizeof(outside) / sizeof(outside[0]); i++) {
    memset(buf, 'x', sizeof(buf));
    assert_int_equal(csr_time_format(outside[i], buf, sizeof(buf)), 0);
    assert_string_equal(buf, "");
    assert_int_equal(csr_time_format_seconds(outside[i], buf, sizeof(buf)), 0);
  }
}

/* Every day from 1600 to 2400 against a calendar that counts days one by one, both ways. */
static void test_every_day(void **state) {
  static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int64_t day = -135140; /* 1600-01-01 */
  char want[64], got[CSR_TIME_BUF];
  for (int y = 1600; y < 2400; y++) {
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    for (int m = 1; m <= 12; m++) {
      for (int d = 1; d <= mdays[m - 1] + (m == 2 && leap); d++, day++) {
        int64_t ms = day * DAY_MS + 45296789; /* 12:34:56.789 */
        snprintf(want, sizeof(want), "%04d-%02d-%02dT12:34:56.789Z", y, m, d);
        int64_t back = 0;
        if (csr_time_format(ms, got, sizeof(got)) != 24 || strcmp(got, want) != 0 ||
            csr_time_parse(want, &back) != 0 || back != ms) {
          print_error("day %lld: got '%s', want '%s', parsed %lld\n", (long long)day, got, want,
                      (long long)back);
          fail();
        }
      }
    }
  }
  assert_int_equal(day, 157054); /* 2400-01-01 */
}

static void test_round_trip(void **state) {
  char buf[CSR_TIME_BUF];
  /* Irregular steps over the whole range, so every field takes many values. */
  for (int64_t ms = -62135596800000LL; ms <= 253402300799999LL; ms += 3 * DAY_MS + 3723005) {
    int64_t back = 0;
    assert_true(csr_time_format(ms, buf, sizeof(buf)) > 0);
    if (csr_time_parse(buf, &back) != 0 || back != ms) {
      print_error("%lld: '%s' parsed as %lld\n", (long long)ms, buf, (long long)back);
      fail();
    }
    assert_true(csr_time_format_seconds(ms, buf, sizeof(buf)) == 20);
    assert_int_equal(csr_time_parse(buf, &back), 0);
    assert_true(back <= ms && ms - back < 1000);
  }
  /* Text that is already canonical comes back unchanged. */
  static const char *const canonical[] = {"2024-07-24T14:17:02.16Z", "2024-07-24T14:17:02Z",
                                          "0001-01-01T00:00:00Z", "1900-01-01T00:00:00Z",
                                          "1969-07-20T20:17:40.5Z"};
  for (size_t i = 0; i < sizeof(canonical) / sizeof(canonical[0]); i++) {
    int64_t ms = 0;
    assert_int_equal(csr_time_parse(canonical[i], &ms), 0);
    assert_int_equal(csr_time_format(ms, buf, sizeof(buf)), strlen(canonical[i]));
    assert_string_equal(buf, canonical[i]);
  }
}

static void test_no_time_zone_dependence(void **state) {
  static const struct known cases[] = {
      {"2024-07-24T14:17:02Z", 1721830622000LL},
      {"1900-01-01T00:00:00Z", -2208988800000LL},
      {"2024-03-31T02:30:00+01:00", 1711848600000LL}, /* a gap in Europe's local time */
  };
  const char *saved = getenv("TZ");
  char *old = saved ? strdup(saved) : NULL;
  static const char *const zones[] = {"America/New_York", "Asia/Kolkata", "Europe/Berlin", "UTC"};
  char buf[CSR_TIME_BUF];
  for (size_t i = 0; i < sizeof(zones) / sizeof(zones[0]); i++) {
    setenv("TZ", zones[i], 1);
    tzset();
    expect_parse(cases, sizeof(cases) / sizeof(cases[0]));
    assert_int_equal(csr_time_format(1721830622160LL, buf, sizeof(buf)), 23);
    assert_string_equal(buf, "2024-07-24T14:17:02.16Z");
  }
  if (old != NULL)
    setenv("TZ", old, 1);
  else
    unsetenv("TZ");
  tzset();
  free(old);
}

static void test_bad_input(void **state) {
  static const char syntax[] = "expected an ISO-8601 instant like 2024-07-24T00:00:00Z";
  static const char zone[] = "an instant needs a time zone: end it with Z or an offset like +02:00";
  static const char value[] = "not a valid date and time";
  static const struct {
    const char *text;
    const char *why;
  } cases[] = {
      {"", syntax},
      {"garbage", syntax},
      {"2024-07-24T14:17:02", zone},
      {"2024-07-24T14:17:02.16", zone},
      {"2024-13-01T00:00:00Z", value},
      {"2024-00-01T00:00:00Z", value},
      {"2024-07-32T00:00:00Z", value},
      {"2024-07-00T00:00:00Z", value},
      {"2024-04-31T00:00:00Z", value},
      {"2024-07-24T24:00:00Z", value},
      {"2024-07-24T23:60:00Z", value},
      {"2024-07-24T23:59:60Z", value}, /* no leap seconds */
      {"0000-01-01T00:00:00Z", value},
      {"2024-07-24", syntax},
      {"2024-07-24T", syntax},
      {"2024-07-24T14:17Z", syntax},
      {"2024-07-24 14:17:02Z", syntax},
      {"2024-7-24T14:17:02Z", syntax},
      {"24-07-24T14:17:02Z", syntax},
      {"+2024-07-24T14:17:02Z", syntax},
      {" 2024-07-24T14:17:02Z", syntax},
      {"2024-07-24T14:17:02Z ", syntax},
      {"2024-07-24T14:17:02Zjunk", syntax},
      {"2024-07-24T14:17:02.Z", syntax},
      {"2024-07-24T14:17:02,16Z", syntax},
      {"2024-07-24T14:17:02+25:00", syntax},
      {"2024-07-24T14:17:02+02:60", syntax},
      {"2024-07-24T14:17:02+2:00", syntax},
      {"2024-07-24T14:17:02+02", syntax},
      {"2024-07-24T14:17:02+02:00:00", syntax},
      {"2024-07-24T14:17:02UTC", syntax},
      {"2024-07-24T14:17:02GMT+2", syntax},
      {"/Date(1721830622160)/", syntax},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int64_t ms = 42;
    const char *why = NULL;
    int rc = csr_time_parse_why(cases[i].text, &ms, &why);
    if (rc != CSR_EPARSE || ms != 42 || why == NULL || strcmp(why, cases[i].why) != 0) {
      print_error("'%s': rc %d, ms %lld, why '%s', want '%s'\n", cases[i].text, rc, (long long)ms,
                  why ? why : "(null)", cases[i].why);
      fail();
    }
    assert_int_equal(csr_time_parse(cases[i].text, &ms), CSR_EPARSE);
    assert_int_equal(ms, 42);
  }
  int64_t ms = 0;
  const char *why = "untouched";
  assert_int_equal(csr_time_parse_why("2024-07-24T14:17:02Z", &ms, &why), 0);
  assert_string_equal(why, "untouched");
  assert_int_equal(csr_time_parse(NULL, &ms), -EINVAL);
  assert_int_equal(csr_time_parse("2024-07-24T14:17:02Z", NULL), -EINVAL);
  assert_int_equal(csr_time_parse_why(NULL, &ms, &why), -EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_known),   cmocka_unit_test(test_fractions),
      cmocka_unit_test(test_offsets),       cmocka_unit_test(test_leap_years),
      cmocka_unit_test(test_before_1970),   cmocka_unit_test(test_format_trims),
      cmocka_unit_test(test_format_limits), cmocka_unit_test(test_every_day),
      cmocka_unit_test(test_round_trip),    cmocka_unit_test(test_no_time_zone_dependence),
      cmocka_unit_test(test_bad_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
