/* The sinks' shared parts, with no network: sk_classify_http over a table of answers and transport
 * errors (outcome, reason, Retry-After, excerpt), the message body of SPEC section 4 as golden
 * JSON built from parsed fixtures (number texts kept, strings escaped), and the registry's lookups
 * and refusals (src/sinks/registry.c has no network-free part worth a file of its own). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/sink.h"

/* ---------------------------------------------------------------------------------------------- */
/* sk_classify_http */
/* ---------------------------------------------------------------------------------------------- */

struct answer {
  int result;
  long status;
  long retry_after_ms; /* as the client parsed it, -1 when absent */
  const char *body;
  enum sk_outcome outcome;
  const char *reason;
  int64_t want_retry_after;
  const char *want_excerpt;
};

#define NF "{\"error\":\"not_found\"}"

static const struct answer answers[] = {
    {0, 200, -1, "{}", SK_DELIVERED, "", -1, ""},
    {0, 201, -1, "{\"id\":1}", SK_DELIVERED, "", -1, ""},
    {0, 204, 5000, "", SK_DELIVERED, "", -1, ""}, /* a Retry-After on a 2xx means nothing */
    {0, 299, -1, "", SK_DELIVERED, "", -1, ""},
    {0, 100, -1, "", SK_DEAD, "http_100", -1, ""},
    {0, 301, -1, "moved", SK_DEAD, "http_301", -1, "moved"},
    {0, 308, -1, "", SK_DEAD, "http_308", -1, ""},
    {0, 400, -1, "{\"error\":\"bad\"}", SK_DEAD, "http_400", -1, "{\"error\":\"bad\"}"},
    {0, 401, -1, "expired", SK_RETRY, "http_401", -1, "expired"},
    {0, 403, -1, "no", SK_DEAD, "http_403", -1, "no"},
    {0, 404, -1, NF, SK_DEAD, "http_404", -1, NF},
    {0, 408, -1, "slow", SK_RETRY, "http_408", -1, "slow"},
    {0, 409, -1, "", SK_DEAD, "http_409", -1, ""},
    {0, 413, 3000, "big", SK_DEAD, "http_413", -1, "big"}, /* dead: Retry-After is not kept */
    {0, 422, -1, "x", SK_DEAD, "http_422", -1, "x"},
    {0, 429, -1, "", SK_RETRY, "http_429", -1, ""},
    {0, 429, 2000, "slow down", SK_RETRY, "http_429", 2000, "slow down"},
    {0, 429, 0, "", SK_RETRY, "http_429", 0, ""},
    {0, 500, -1, "oops", SK_RETRY, "http_500", -1, "oops"},
    {0, 502, -1, "", SK_RETRY, "http_502", -1, ""},
    {0, 503, 5000, "later", SK_RETRY, "http_503", 5000, "later"},
    {0, 504, -1, "", SK_RETRY, "http_504", -1, ""},
    {0, 599, -1, "", SK_RETRY, "http_599", -1, ""},
    {0, 600, -1, "", SK_DEAD, "http_600", -1, ""},
    {0, 0, -1, "", SK_RETRY, "transport", -1, NULL}, /* a transfer without a status */
    {UV_ETIMEDOUT, 0, -1, "", SK_RETRY, "timeout", -1, NULL},
    {UV_ECONNREFUSED, 0, -1, "", SK_RETRY, "refused", -1, NULL},
    {UV_ECONNRESET, 0, -1, "", SK_RETRY, "reset", -1, NULL},
    {UV_E2BIG, 200, -1, "xxxx", SK_RETRY, "too_large", -1, NULL},
    {UV_ECANCELED, 0, -1, "", SK_RETRY, "cancelled", -1, NULL},
    {CSR_ETRANSPORT, 0, -1, "", SK_RETRY, "transport", -1, NULL},
    {UV_EAI_NONAME, 0, -1, "", SK_RETRY, "transport", -1, NULL},
};

/* A request as the client leaves it after completion (no network involved). */
static void fake_req(struct rx_http_req *req, int result, long status, long retry_after_ms,
                     const char *body, size_t len) {
  rx_http_req_init(req);
  req->fut.result = result;
  req->status = status;
  req->retry_after_ms = retry_after_ms;
  req->resp_body = (char *)body;
  req->resp_len = len;
}

static void dirty(struct sk_delivery *d) {
  memset(d, 0, sizeof(*d));
  d->outcome = SK_SKIPPED;
  d->status = 777;
  d->retry_after_ms = 777;
  snprintf(d->reason, sizeof(d->reason), "stale");
  snprintf(d->excerpt, sizeof(d->excerpt), "stale");
}

static void test_classify_table(void **state) {
  for (size_t i = 0; i < sizeof(answers) / sizeof(answers[0]); i++) {
    const struct answer *a = &answers[i];
    struct rx_http_req req;
    struct sk_delivery d;
    fake_req(&req, a->result, a->status, a->retry_after_ms, a->body, strlen(a->body));
    dirty(&d);
    sk_classify_http(&req, &d);
    if (d.outcome != a->outcome || strcmp(d.reason, a->reason) != 0 ||
        d.retry_after_ms != a->want_retry_after)
      fail_msg("row %zu (result %d, status %ld): outcome %d reason '%s' retry_after %lld", i,
               a->result, a->status, (int)d.outcome, d.reason, (long long)d.retry_after_ms);
    assert_int_equal(d.status, a->result == 0 ? a->status : 0);
    if (a->want_excerpt != NULL)
      assert_string_equal(d.excerpt, a->want_excerpt);
    else
      assert_true(d.excerpt[0] != '\0'); /* the error's name, for the dead-letter queue */
  }
}

static void test_classify_transport_excerpt(void **state) {
  struct rx_http_req req;
  struct sk_delivery d;
  fake_req(&req, UV_ETIMEDOUT, 0, -1, "", 0);
  sk_classify_http(&req, &d);
  assert_string_equal(d.excerpt, csr_strerror(UV_ETIMEDOUT));
  /* No request at all reads as a transport failure rather than a crash. */
  sk_classify_http(NULL, &d);
  assert_int_equal(d.outcome, SK_RETRY);
  assert_string_equal(d.reason, "transport");
  sk_classify_http(&req, NULL);
}

static void classify_body(const char *body, size_t len, struct sk_delivery *d) {
  struct rx_http_req req;
  fake_req(&req, 0, 400, -1, body, len);
  sk_classify_http(&req, d);
  assert_int_equal(d->outcome, SK_DEAD);
}

static void test_excerpt_binary(void **state) {
  struct sk_delivery d;
  static const char body[] = "a\0b\x01"
                             "c\x7f\n\r\td\x1b[0m";
  classify_body(body, sizeof(body) - 1, &d);
  assert_string_equal(d.excerpt, "a b c    d [0m");
  /* Bytes that are not UTF-8 become '?'; valid characters pass. */
  static const char mixed[] =
      "\xff\xfe caf\xc3\xa9 \xe2\x98\x83 \xc0\xaf \xed\xa0\x80 \xf0\x9f\x98\x80";
  classify_body(mixed, sizeof(mixed) - 1, &d);
  assert_string_equal(d.excerpt, "?? caf\xc3\xa9 \xe2\x98\x83 ?? ??? \xf0\x9f\x98\x80");
  /* A truncated sequence at the end of the body. */
  classify_body("ab\xe2\x98", 4, &d);
  assert_string_equal(d.excerpt, "ab??");
  /* No body at all. */
  struct rx_http_req req;
  fake_req(&req, 0, 404, -1, NULL, 0);
  sk_classify_http(&req, &d);
  assert_string_equal(d.excerpt, "");
}

static void test_excerpt_cut(void **state) {
  struct sk_delivery d;
  size_t big = 10 * 1024;
  char *body = malloc(big + 1);
  assert_non_null(body);
  memset(body, 'x', big);
  body[big] = '\0';
  classify_body(body, big, &d);
  assert_int_equal(strlen(d.excerpt), 255);
  assert_int_equal(strspn(d.excerpt, "x"), 255);
  /* A two-byte character that would end past byte 255 is left out, never cut in half. */
  memset(body, 'a', 254);
  memcpy(body + 254, "\xc3\xa9zzz", 5);
  classify_body(body, 259, &d);
  assert_int_equal(strlen(d.excerpt), 254);
  memset(body, 'a', 253);
  memcpy(body + 253, "\xc3\xa9zzz", 5);
  classify_body(body, 258, &d);
  assert_int_equal(strlen(d.excerpt), 255);
  assert_memory_equal(d.excerpt + 253, "\xc3\xa9", 2);
  free(body);
}

/* ---------------------------------------------------------------------------------------------- */
/* sk_encode_message */
/* ---------------------------------------------------------------------------------------------- */

static yajl_val parse(const char *text) {
  char err[256] = "";
  yajl_val v = csr_json_parse(text, strlen(text), err, sizeof(err));
  if (v == NULL)
    fail_msg("fixture: %s", err);
  return v;
}

/* Encodes and compares with the golden text; the result also parses back. */
static void assert_message(const struct sk_event *ev, const char *golden) {
  struct csr_jw jw;
  const char *text;
  size_t len;
  assert_int_equal(csr_jw_init(&jw), 0);
  assert_int_equal(sk_encode_message(ev, &jw), 0);
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
  if (len != strlen(golden) || memcmp(text, golden, len) != 0)
    fail_msg("got\n%.*s\nwant\n%s", (int)len, text, golden);
  yajl_val back = csr_json_parse(text, len, NULL, 0);
  assert_non_null(back);
  assert_string_equal(csr_json_get_str(back, "EventId"), ev->id);
  csr_json_free(back);
  csr_jw_free(&jw);
}

#define ADD_EVENT                                                                                  \
  "{\"EventType\":\"AddCartLines\",\"EventTransactionId\":\"HOUSTON-HOUSTON-17-1721824109286\","   \
  "\"EventDateTime\":\"2024-07-24T14:17:02.16Z\",\"EventDataAreaId\":\"usrt\","                    \
  "\"EventData\":\"[{\\\"ItemId\\\":\\\"0001\\\",\\\"Qty\\\":2}]\",\"EventChannelId\":5637144592," \
  "\"EventTerminalId\":\"HOUSTON-17\",\"EventStaffId\":\"000168\",\"EventCustomerId\":\"\"}"
#define ADD_ID "houston|usrt|AddCartLines|HOUSTON-HOUSTON-17-1721824109286|2024-07-24T14:17:02.16Z"

static void test_encode_no_enrichment(void **state) {
  yajl_val event = parse(ADD_EVENT);
  struct sk_event ev = {.id = ADD_ID, .event = event};
  assert_message(&ev, "{\"EventId\":\"" ADD_ID "\",\"EventDetails\":" ADD_EVENT
                      ",\"OrderDetails\":null,\"CustomerDetails\":null}");
  csr_json_free(event);
}

#define CO_EVENT                                                                                   \
  "{\"EventType\":\"Checkout\",\"EventTransactionId\":\"T-1\","                                    \
  "\"EventDateTime\":\"2024-07-24T14:17:09.1234567Z\",\"EventDataAreaId\":\"usrt\","               \
  "\"EventData\":\"{}\",\"EventChannelId\":5637144592,\"EventCustomerId\":\"004011\"}"
#define CO_ORDER                                                                                   \
  "{\"SalesId\":\"012345\",\"AmountPaid\":184.2200000000000000,\"TotalAmount\":1.0E2,"             \
  "\"ReceiptEmail\":\"karen@contoso.com\",\"ChannelId\":5637144592,\"Discount\":-0.00,"            \
  "\"Lines\":[{\"Qty\":1.000,\"Price\":92.11},{\"Qty\":1,\"Price\":92.11}],\"Note\":null,"         \
  "\"Gift\":false,\"Paid\":true,\"Extra\":{}}"
#define CO_CUSTOMER "{\"AccountNumber\":\"004011\",\"Email\":\"karen@contoso.com\",\"Tags\":[]}"

static void test_encode_checkout_numbers(void **state) {
  yajl_val event = parse(CO_EVENT), order = parse(CO_ORDER), customer = parse(CO_CUSTOMER);
  struct sk_event ev = {.id = "houston|usrt|Checkout|T-1|2024-07-24T14:17:09.1234567Z",
                        .event = event,
                        .order = order,
                        .customer = customer};
  assert_message(&ev, "{\"EventId\":\"houston|usrt|Checkout|T-1|2024-07-24T14:17:09.1234567Z\","
                      "\"EventDetails\":" CO_EVENT ",\"OrderDetails\":" CO_ORDER
                      ",\"CustomerDetails\":" CO_CUSTOMER "}");
  /* A guest: the order without a customer. */
  ev.customer = NULL;
  assert_message(&ev, "{\"EventId\":\"houston|usrt|Checkout|T-1|2024-07-24T14:17:09.1234567Z\","
                      "\"EventDetails\":" CO_EVENT ",\"OrderDetails\":" CO_ORDER
                      ",\"CustomerDetails\":null}");
  csr_json_free(event);
  csr_json_free(order);
  csr_json_free(customer);
}

/* With the documents' texts at hand, the message splices them (the same bytes as the trees give),
 * with or without their trees; a document with neither is null. */
static void test_encode_splices_texts(void **state) {
  yajl_val event = parse(CO_EVENT), order = parse(CO_ORDER), customer = parse(CO_CUSTOMER);
  struct sk_event ev = {.id = "houston|usrt|Checkout|T-1|2024-07-24T14:17:09.1234567Z",
                        .event = event,
                        .order = order,
                        .customer = customer,
                        .event_json = CO_EVENT,
                        .event_json_len = strlen(CO_EVENT),
                        .order_json = CO_ORDER " ",
                        .order_json_len = strlen(CO_ORDER),
                        .customer_json = " " CO_CUSTOMER,
                        .customer_json_len = strlen(CO_CUSTOMER) + 1};
  assert_message(&ev, "{\"EventId\":\"houston|usrt|Checkout|T-1|2024-07-24T14:17:09.1234567Z\","
                      "\"EventDetails\":" CO_EVENT ",\"OrderDetails\":" CO_ORDER
                      ",\"CustomerDetails\": " CO_CUSTOMER "}");
  /* the text alone is enough: the pipeline keeps documents as text */
  ev.customer = NULL;
  ev.order = NULL;
  assert_message(&ev, "{\"EventId\":\"houston|usrt|Checkout|T-1|2024-07-24T14:17:09.1234567Z\","
                      "\"EventDetails\":" CO_EVENT ",\"OrderDetails\":" CO_ORDER
                      ",\"CustomerDetails\": " CO_CUSTOMER "}");
  ev.customer_json = NULL;
  ev.customer_json_len = 0;
  assert_message(&ev, "{\"EventId\":\"houston|usrt|Checkout|T-1|2024-07-24T14:17:09.1234567Z\","
                      "\"EventDetails\":" CO_EVENT ",\"OrderDetails\":" CO_ORDER
                      ",\"CustomerDetails\":null}");
  csr_json_free(event);
  csr_json_free(order);
  csr_json_free(customer);
}

/* sk_event_trees: a tree for each document that has only text, the event's own trees kept;
 * sk_event_trees_free frees only what it built (ASan would see a double or missing free). */
static void test_event_trees(void **state) {
  yajl_val customer = parse(CO_CUSTOMER);
  struct sk_event ev = {.id = "e",
                        .order_json = CO_ORDER,
                        .order_json_len = strlen(CO_ORDER),
                        .customer = customer,
                        .customer_json = "not looked at",
                        .customer_json_len = 13};
  struct sk_event t;
  assert_int_equal(sk_event_trees(&ev, NULL, NULL, &t), 0);
  assert_string_equal(t.id, "e");
  assert_ptr_equal(t.order_json, ev.order_json);
  assert_non_null(t.order);
  assert_string_equal(csr_json_num_text(csr_json_get(t.order, "AmountPaid")),
                      "184.2200000000000000");
  assert_ptr_equal(t.customer, customer);
  sk_event_trees_free(&t, &ev);
  assert_null(t.order);
  assert_null(ev.order);
  /* No document at all: no trees, nothing to free. */
  struct sk_event bare = {.id = "g"};
  assert_int_equal(sk_event_trees(&bare, NULL, NULL, &t), 0);
  assert_null(t.order);
  assert_null(t.customer);
  sk_event_trees_free(&t, &bare);
  csr_json_free(customer);
}

static void test_encode_escapes(void **state) {
  /* Quotes, backslashes, newlines, tabs, a control character, a solidus, and characters from the
   * two- to four-byte UTF-8 ranges (given as \u escapes, which come back as UTF-8). */
  yajl_val event = parse("{\"EventType\":\"Checkout\",\"EventData\":\"say \\\"hi\\\"\\n\\tback\\\\"
                         "slash / \\u00e9 \\u2603 \\ud83d\\ude00 \\u0001\\b\\f\\r\"}");
  yajl_val customer = parse("{\"FirstName\":\"Zo\\u00eb \\\"Z\\\"\",\"Email\":null}");
  struct sk_event ev = {.id = "c|usrt|Checkout|\"q\"|t", .event = event, .customer = customer};
  assert_message(&ev, "{\"EventId\":\"c|usrt|Checkout|\\\"q\\\"|t\",\"EventDetails\":{"
                      "\"EventType\":\"Checkout\",\"EventData\":\"say \\\"hi\\\"\\n\\tback\\\\"
                      "slash / \xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80 \\u0001\\b\\f\\r\"},"
                      "\"OrderDetails\":null,\"CustomerDetails\":{\"FirstName\":\"Zo\xc3\xab "
                      "\\\"Z\\\"\",\"Email\":null}}");
  csr_json_free(event);
  csr_json_free(customer);
}

static void test_encode_refusals(void **state) {
  yajl_val event = parse(ADD_EVENT), array = parse("[1,2]");
  struct csr_jw jw;
  assert_int_equal(csr_jw_init(&jw), 0);
  struct sk_event ev = {.id = ADD_ID, .event = NULL};
  assert_true(sk_encode_message(&ev, &jw) < 0); /* no event object */
  ev.event = array;
  assert_true(sk_encode_message(&ev, &jw) < 0); /* not an object */
  ev.event = event;
  ev.id = NULL;
  assert_true(sk_encode_message(&ev, &jw) < 0);
  ev.id = "";
  assert_true(sk_encode_message(&ev, &jw) < 0);
  assert_int_equal(sk_encode_message(NULL, &jw), -EINVAL);
  ev.id = ADD_ID;
  assert_int_equal(sk_encode_message(&ev, NULL), -EINVAL);
  assert_int_equal(sk_encode_message(&ev, &jw), 0);
  csr_jw_free(&jw);
  csr_json_free(event);
  csr_json_free(array);
}

/* ---------------------------------------------------------------------------------------------- */
/* The registry */
/* ---------------------------------------------------------------------------------------------- */

static void test_registry_find(void **state) {
  const struct sk_ops *ops = sk_find("webhook");
  assert_non_null(ops);
  assert_string_equal(ops->name, "webhook");
  assert_true(ops->size >= sizeof(struct sk_sink));
  assert_non_null(ops->init);
  assert_non_null(ops->deliver);
  assert_non_null(ops->cancel);
  assert_non_null(ops->encode);
  assert_non_null(ops->close);
  assert_non_null(sk_find("cij"));
  assert_string_equal(sk_find("cij")->name, "cij");
  assert_non_null(sk_find("mqtt"));
  assert_string_equal(sk_find("mqtt")->name, "mqtt");
  assert_null(sk_find("Webhook"));
  assert_null(sk_find(""));
  assert_null(sk_find(NULL));
}

static void test_registry_refusals(void **state) {
  uv_loop_t uv;
  struct rx_loop loop;
  assert_int_equal(uv_loop_init(&uv), 0);
  assert_int_equal(rx_loop_init(&loop, &uv), 0);
  struct sk_env env = {.loop = &loop, .default_timeout_ms = 1000};
  struct csr_sink_conf conf = {.name = "stores", .type = CSR_SINK_MQTT, .line = 7};
  struct csr_err err;
  struct sk_sink *sink = (struct sk_sink *)&conf; /* must come back NULL */
  memset(&err, 0, sizeof(err));
  assert_true(sk_sink_create(&conf, &env, &sink, &err) < 0);
  assert_null(sink);
  assert_int_equal(err.line, 7);
  /* Every type is registered now: an mqtt sink without a broker is refused by its own init. */
  assert_string_equal(err.key, "broker");
  assert_non_null(strstr(err.msg, "a broker is required"));
  /* A webhook without a url, or without an HTTP client: refused, nothing left allocated. */
  conf = (struct csr_sink_conf){.name = "audit", .type = CSR_SINK_WEBHOOK, .line = 9};
  assert_true(sk_sink_create(&conf, &env, &sink, &err) < 0);
  assert_string_equal(err.key, "url");
  conf.url = "ftp://example.com/x";
  assert_true(sk_sink_create(&conf, &env, &sink, &err) < 0);
  conf.url = "http://127.0.0.1:9/hook";
  assert_true(sk_sink_create(&conf, &env, &sink, &err) < 0);
  assert_non_null(strstr(err.msg, "HTTP client"));
  /* An Authorization value that would split the header. */
  struct rx_http http;
  assert_int_equal(rx_http_init(&http, &loop, NULL), 0);
  env.http = &http;
  conf.auth_header = "Bearer x\r\nX-Evil: 1";
  assert_true(sk_sink_create(&conf, &env, &sink, &err) < 0);
  assert_string_equal(err.key, "auth_header_env");
  assert_null(sink);
  assert_true(sk_sink_create(NULL, &env, &sink, &err) < 0);
  assert_true(sk_sink_create(&conf, NULL, &sink, &err) < 0);
  assert_true(sk_sink_create(&conf, &env, NULL, &err) < 0);
  assert_int_equal(sk_deliver(NULL, NULL), -EINVAL);
  sk_sink_close(NULL, NULL, NULL);
  rx_http_close(&http, NULL);
  rx_loop_run(&loop);
  assert_int_equal(rx_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_classify_table),
      cmocka_unit_test(test_classify_transport_excerpt),
      cmocka_unit_test(test_excerpt_binary),
      cmocka_unit_test(test_excerpt_cut),
      cmocka_unit_test(test_encode_no_enrichment),
      cmocka_unit_test(test_encode_checkout_numbers),
      cmocka_unit_test(test_encode_splices_texts),
      cmocka_unit_test(test_event_trees),
      cmocka_unit_test(test_encode_escapes),
      cmocka_unit_test(test_encode_refusals),
      cmocka_unit_test(test_registry_find),
      cmocka_unit_test(test_registry_refusals),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
