/* ISO-8601 instants to and from epoch milliseconds (see csurelay/timefmt.h). Civil-date arithmetic
 * after Howard Hinnant's days_from_civil / civil_from_days: exact for every proleptic Gregorian
 * date, before 1970 too, and free of the process time zone. */
#include "csurelay/timefmt.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>

#define DAY_S  86400
#define DAY_MS 86400000LL

/* The years a four-digit field can hold; .NET's DateTimeOffset has the same range. */
#define YEAR_MIN 1
#define YEAR_MAX 9999

static const char bad_syntax[] = "expected an ISO-8601 instant like 2024-07-24T00:00:00Z";
static const char bad_zone[] =
    "an instant needs a time zone: end it with Z or an offset like +02:00";
static const char bad_value[] = "not a valid date and time";

static int digits(const char **p, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++, (*p)++) {
    if (!isdigit((unsigned char)**p))
      return -1;
    v = v * 10 + (**p - '0');
  }
  *out = v;
  return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int y, int m, int d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

/* The inverse of days_from_civil(). */
static void civil_from_days(int64_t z, int64_t *y, int *m, int *d) {
  z += 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  int64_t doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  *d = (int)(doy - (153 * mp + 2) / 5 + 1);
  *m = (int)(mp < 10 ? mp + 3 : mp - 9);
  *y = yoe + era * 400 + (*m <= 2);
}

static int valid_date(int y, int mo, int d) {
  static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return y >= YEAR_MIN && mo >= 1 && mo <= 12 && d >= 1 && d <= mdays[mo - 1] &&
         !(mo == 2 && d == 29 && !leap);
}

/* Milliseconds of a fraction after the '.': the first three digits count, the rest (.NET writes
 * seven) are truncated, never rounded, so an instant never moves into the next second. */
static int fraction(const char **p, int *ms) {
  int scale = 100, n = 0;
  *ms = 0;
  for (; isdigit((unsigned char)**p); (*p)++, n++) {
    *ms += (**p - '0') * scale;
    scale /= 10;
  }
  return n > 0 ? 0 : -1;
}

/* Z, or an offset in seconds east of UTC. */
static const char *zone(const char **p, int *off) {
  *off = 0;
  if (**p == 'Z' || **p == 'z') {
    (*p)++;
    return NULL;
  }
  if (**p == '+' || **p == '-') {
    int sign = *(*p)++ == '-' ? -1 : 1, oh, om;
    if (digits(p, 2, &oh))
      return bad_syntax;
    *p += **p == ':';
    if (digits(p, 2, &om) || oh > 23 || om > 59)
      return bad_syntax;
    *off = sign * (oh * 3600 + om * 60);
    return NULL;
  }
  return **p == '\0' ? bad_zone : bad_syntax;
}

static const char *parse(const char *s, int64_t *ms) {
  const char *p = s, *why;
  int y, mo, d, h, mi, sec, frac = 0, off;
  /* Each field is checked before the next is read, so a short text never reads past its NUL. */
  if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' || digits(&p, 2, &d) ||
      (*p != 'T' && *p != 't'))
    return bad_syntax;
  p++;
  if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' || digits(&p, 2, &sec))
    return bad_syntax;
  if (*p == '.') {
    p++;
    if (fraction(&p, &frac) != 0)
      return bad_syntax;
  }
  if ((why = zone(&p, &off)) != NULL)
    return why;
  if (*p != '\0')
    return bad_syntax;
  if (!valid_date(y, mo, d) || h > 23 || mi > 59 || sec > 59)
    return bad_value;
  *ms = ((days_from_civil(y, mo, d) * DAY_S + h * 3600 + mi * 60 + sec) - off) * 1000 + frac;
  return NULL;
}

int csr_time_parse_why(const char *text, int64_t *ms_out, const char **why) {
  if (text == NULL || ms_out == NULL)
    return -EINVAL;
  const char *problem = parse(text, ms_out);
  if (problem == NULL)
    return 0;
  if (why != NULL)
    *why = problem;
  return CSR_EPARSE;
}

int csr_time_parse(const char *text, int64_t *ms_out) {
  return csr_time_parse_why(text, ms_out, NULL);
}

/* yyyy-MM-ddTHH:mm:ss of `ms` (floored to its second) into buf; `ms_part` gets the milliseconds. */
static size_t format_seconds(int64_t ms, char *buf, size_t len, int *ms_part) {
  /* Floor division: -1 ms is the last millisecond of 1969-12-31, not of 1970-01-01. */
  int64_t days = ms / DAY_MS, rem = ms % DAY_MS;
  if (rem < 0) {
    rem += DAY_MS;
    days--;
  }
  int64_t y;
  int m, d;
  civil_from_days(days, &y, &m, &d);
  if (len > 0)
    buf[0] = '\0';
  if (y < YEAR_MIN || y > YEAR_MAX)
    return 0;
  int s = (int)(rem / 1000);
  *ms_part = (int)(rem % 1000);
  int n = snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d", (int)y, m, d, s / 3600, s / 60 % 60,
                   s % 60);
  if (n < 0 || (size_t)n >= len) {
    if (len > 0)
      buf[0] = '\0';
    return 0;
  }
  return (size_t)n;
}

/* Appends `tail` at buf[n]; 0 and "" when it does not fit. */
static size_t finish(char *buf, size_t len, size_t n, const char *tail) {
  int w = snprintf(buf + n, len - n, "%s", tail);
  if (w < 0 || (size_t)w >= len - n) {
    buf[0] = '\0';
    return 0;
  }
  return n + (size_t)w;
}

size_t csr_time_format(int64_t ms, char *buf, size_t len) {
  int part = 0;
  size_t n = format_seconds(ms, buf, len, &part);
  if (n == 0)
    return 0;
  char tail[6] = "Z";
  if (part != 0) {
    /* Retail Server trims trailing zeros: .160 is written .16, .100 is .1. */
    int digits_n = 3;
    for (; part % 10 == 0; part /= 10)
      digits_n--;
    snprintf(tail, sizeof(tail), ".%0*dZ", digits_n, part);
  }
  return finish(buf, len, n, tail);
}

size_t csr_time_format_seconds(int64_t ms, char *buf, size_t len) {
  int part = 0;
  size_t n = format_seconds(ms, buf, len, &part);
  return n == 0 ? 0 : finish(buf, len, n, "Z");
}
