/* csurelay — the dates Commerce and Dataverse put on the wire, as epoch milliseconds.
 *
 * Retail Server and Dataverse send DateTimeOffset values in ISO-8601 form: 2024-07-24T14:17:02Z,
 * with a fraction of any length (.16, .1600000) and a Z or a +hh:mm offset. csurelay keeps them as
 * int64 milliseconds since 1970-01-01T00:00:00Z (negative before 1970) and writes them back in UTC.
 * The arithmetic is proleptic Gregorian on civil dates: no libc time zone, mktime or timegm, so the
 * result never depends on TZ. 0001-01-01T00:00:00Z and 1900-01-01T00:00:00Z, which Commerce uses
 * for "not set", parse and format like any other instant; telling them apart is the caller's
 * business.
 */
#ifndef CSURELAY_TIMEFMT_H
#define CSURELAY_TIMEFMT_H

#include <stddef.h>
#include <stdint.h>

#include "csurelay/error.h"

/** Bytes that always hold csr_time_format()'s output with its NUL: "yyyy-MM-ddTHH:mm:ss.fffZ". */
#define CSR_TIME_BUF 25

/**
 * Parses an ISO-8601 instant: yyyy-MM-ddTHH:mm:ss, an optional fraction of one or more digits
 * (milliseconds are kept, further digits truncated), then Z or an offset +hh:mm, -hh:mm or +hhmm.
 * 'T' and 'Z' may be lower case. The written fields must form a real date and time in years 0001 to
 * 9999 (no leap second, no hour 24). Stores milliseconds since the epoch, UTC, in *ms_out
 * (untouched on failure). Returns 0, CSR_EPARSE for any malformed or impossible text, or -EINVAL
 * when `text` or `ms_out` is NULL.
 */
CSR_NODISCARD int csr_time_parse(const char *text, int64_t *ms_out);

/**
 * Same as csr_time_parse(), and on CSR_EPARSE points *why (when `why` is not NULL) at a static
 * sentence for a human: the instant is malformed, lacks a time zone, or names an impossible date or
 * time. The sentence never quotes `text`. *why is left alone on success.
 */
CSR_NODISCARD int csr_time_parse_why(const char *text, int64_t *ms_out, const char **why);

/**
 * Writes `ms` as UTC the way Retail Server does: yyyy-MM-ddTHH:mm:ss, then the milliseconds with
 * trailing zeros trimmed (".16", ".005"), no fraction at all when it is zero, then Z. Returns the
 * length written, not counting the NUL, as strftime does; returns 0 (and writes "" when `len` > 0)
 * when the result would not fit in `len` bytes or the instant falls outside years 0001 to 9999.
 * CSR_TIME_BUF bytes are always enough.
 */
size_t csr_time_format(int64_t ms, char *buf, size_t len);

/**
 * Writes `ms` as UTC in whole seconds, yyyy-MM-ddTHH:mm:ssZ, the form of a Search criteria date.
 * Milliseconds are dropped towards the past (-1 ms is 1969-12-31T23:59:59Z). Returns as
 * csr_time_format() does.
 */
size_t csr_time_format_seconds(int64_t ms, char *buf, size_t len);

#endif
