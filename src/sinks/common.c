/* What the sinks share: the one HTTP classifier (SPEC section 3, as Fluent Bit's out_http: any 4xx
 * but 408 and 429 is not worth a retry) and the message body of the mqtt and webhook sinks
 * (SPEC section 4).
 *
 * Statuses curl does not normally hand us are decided here once:
 *   - 1xx and 3xx are dead: the client follows no redirects, so a 3xx means the configured URL is
 *     wrong, which no retry mends (a final 1xx is a broken receiver);
 *   - a status over 599 is dead like any other answer we cannot act on;
 *   - no status at all on a completed transfer (result 0, status < 100) is a transport failure.
 * Excerpts go into the dead-letter queue and from there into JSON, so they are valid UTF-8: control
 * characters become spaces, bytes that are not UTF-8 become '?', and a character is never cut.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "csurelay/sink.h"

/* The reason for a transport error (SPEC section 3: all of them are transient). */
static const char *transport_reason(int result) {
  switch (result) {
    case UV_ETIMEDOUT:
      return "timeout";
    case UV_ECONNREFUSED:
      return "refused";
    case UV_ECONNRESET:
      return "reset";
    case UV_E2BIG:
      /* An answer over the body ceiling: the receiver's doing, and it may not recur. */
      return "too_large";
    case UV_ECANCELED:
      return "cancelled";
    default:
      return "transport";
  }
}

/* The length of the valid UTF-8 sequence at s[0..n), or 0 when it is not one (RFC 3629: no
 * overlong forms, no surrogates, nothing past U+10FFFF). */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  size_t len;
  unsigned lo = 0x80, hi = 0xbf;
  if (s[0] >= 0xc2 && s[0] <= 0xdf)
    len = 2;
  else if (s[0] >= 0xe0 && s[0] <= 0xef) {
    len = 3;
    lo = s[0] == 0xe0 ? 0xa0 : 0x80;
    hi = s[0] == 0xed ? 0x9f : 0xbf;
  } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
    len = 4;
    lo = s[0] == 0xf0 ? 0x90 : 0x80;
    hi = s[0] == 0xf4 ? 0x8f : 0xbf;
  } else
    return 0;
  if (n < len || s[1] < lo || s[1] > hi)
    return 0;
  for (size_t i = 2; i < len; i++)
    if (s[i] < 0x80 || s[i] > 0xbf)
      return 0;
  return len;
}

/* Copies the start of `body` into `out` (at most cap - 1 bytes, NUL-terminated) as printable,
 * valid UTF-8. */
static void excerpt(char *out, size_t cap, const char *body, size_t len) {
  const unsigned char *s = (const unsigned char *)body;
  size_t i = 0, o = 0;
  while (i < len && o + 1 < cap) {
    if (s[i] < 0x80) {
      out[o++] = s[i] < 0x20 || s[i] == 0x7f ? ' ' : (char)s[i];
      i++;
      continue;
    }
    size_t n = utf8_seq(s + i, len - i);
    if (n == 0) {
      out[o++] = '?';
      i++;
    } else if (o + n < cap) {
      memcpy(out + o, s + i, n);
      o += n;
      i += n;
    } else
      break; /* the character does not fit: stop rather than cut it */
  }
  out[o] = '\0';
}

static void classify_status(const struct rx_http_req *req, struct sk_delivery *d) {
  long st = req->status;
  d->status = (int)st;
  if (st >= 200 && st <= 299) {
    d->outcome = SK_DELIVERED;
    return;
  }
  snprintf(d->reason, sizeof(d->reason), "http_%ld", st);
  excerpt(d->excerpt, sizeof(d->excerpt), req->resp_body ? req->resp_body : "",
          req->resp_body ? req->resp_len : 0);
  /* 401 retries too: the caller refreshes its token once before the retry (SPEC section 3). */
  if (st == 401 || st == 408 || st == 429 || (st >= 500 && st <= 599)) {
    d->outcome = SK_RETRY;
    d->retry_after_ms = req->retry_after_ms >= 0 ? (int64_t)req->retry_after_ms : -1;
  } else {
    d->outcome = SK_DEAD;
  }
}

void sk_classify_http(const struct rx_http_req *req, struct sk_delivery *d) {
  if (d == NULL)
    return;
  d->status = 0;
  d->retry_after_ms = -1;
  d->reason[0] = '\0';
  d->excerpt[0] = '\0';
  int result = req ? req->fut.result : CSR_ETRANSPORT;
  if (result == 0 && req->status < 100) {
    d->outcome = SK_RETRY;
    snprintf(d->reason, sizeof(d->reason), "transport");
    snprintf(d->excerpt, sizeof(d->excerpt), "the transfer ended without an HTTP status");
    return;
  }
  if (result < 0) {
    d->outcome = SK_RETRY;
    snprintf(d->reason, sizeof(d->reason), "%s", transport_reason(result));
    snprintf(d->excerpt, sizeof(d->excerpt), "%s", csr_strerror(result));
    return;
  }
  classify_status(req, d);
}

/* A document by its text when the pipeline kept it (a copy: the text is all an event routed to no
 * tree-reading sink has), else by its tree (a walk); neither writes null. Re-encoding the trees was
 * 12% of the relay's CPU at 2,500 ev/s. */
static void encode_document(struct csr_jw *jw, const char *key, yajl_val doc, const char *json,
                            size_t len) {
  csr_jw_key(jw, key);
  if (json != NULL && len > 0)
    csr_jw_raw(jw, json, len);
  else
    csr_jw_value(jw, doc);
}

int sk_encode_message(const struct sk_event *ev, struct csr_jw *jw) {
  if (ev == NULL || jw == NULL)
    return -EINVAL;
  bool has_event = YAJL_IS_OBJECT(ev->event) || (ev->event_json != NULL && ev->event_json_len > 0);
  if (ev->id == NULL || ev->id[0] == '\0' || !has_event)
    return CSR_EPARSE;
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "EventId", ev->id);
  encode_document(jw, "EventDetails", ev->event, ev->event_json, ev->event_json_len);
  encode_document(jw, "OrderDetails", ev->order, ev->order_json, ev->order_json_len);
  encode_document(jw, "CustomerDetails", ev->customer, ev->customer_json, ev->customer_json_len);
  csr_jw_obj_end(jw);
  const char *text;
  size_t len;
  return csr_jw_finish(jw, &text, &len);
}

/* csr_json_parse_members' filter for one document of sk_event_trees. */
struct reads {
  sk_reads_fn fn;
  void *arg;
  enum sk_doc doc;
};

static bool keep_member(void *arg, const char *key, size_t len) {
  const struct reads *r = arg;
  return r->fn(r->arg, r->doc, key, len) != 0;
}

/* A document's tree: the event's own, else one built from its text (which the enricher or the
 * poller checked whole, so only memory can fail, and a scan may stop once it has what the sink
 * reads); NULL when it has neither. */
static yajl_val tree_of(yajl_val tree, const char *json, size_t len, struct reads *r, int *rc) {
  size_t want = r->fn ? r->fn(r->arg, r->doc, NULL, 0) : SIZE_MAX;
  if (tree != NULL || json == NULL || len == 0 || want == 0)
    return tree;
  yajl_val built = r->fn ? csr_json_parse_checked_members(json, len, keep_member, r, want, NULL, 0)
                         : csr_json_parse(json, len, NULL, 0);
  if (built == NULL)
    *rc = -ENOMEM;
  return built;
}

int sk_event_trees(const struct sk_event *ev, sk_reads_fn reads, void *arg, struct sk_event *out) {
  int rc = 0;
  struct reads event = {reads, arg, SK_DOC_EVENT}, order = {reads, arg, SK_DOC_ORDER},
               customer = {reads, arg, SK_DOC_CUSTOMER};
  *out = *ev;
  out->event = tree_of(ev->event, ev->event_json, ev->event_json_len, &event, &rc);
  out->order = tree_of(ev->order, ev->order_json, ev->order_json_len, &order, &rc);
  out->customer = tree_of(ev->customer, ev->customer_json, ev->customer_json_len, &customer, &rc);
  return rc;
}

void sk_event_trees_free(struct sk_event *out, const struct sk_event *ev) {
  if (out->event != ev->event)
    csr_json_free(out->event);
  if (out->order != ev->order)
    csr_json_free(out->order);
  if (out->customer != ev->customer)
    csr_json_free(out->customer);
  memset(out, 0, sizeof(*out));
}
