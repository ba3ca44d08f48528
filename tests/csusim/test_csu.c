/* csu.c over HTTP through the in-process harness: every CSU endpoint's contract, with scripted
 * events so each answer is known exactly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "csu_internal.h"
#include "simtest.h"

#define SEARCH "/csu0/Commerce/CommerceEventsController/Search"
#define DAY    "2024-07-24T14:"
#define RT     "Microsoft_Dynamics_Commerce_Runtime_"

/* csu 0: Checkouts C1..C6 around whole seconds, an AddCartLines-only cart A1, a guest G1, 37
 * Checkouts P00..P36 100 ms apart for paging, K1 and L1 (committed 1.5 s late) for the stale cache;
 * csu 1: one Checkout. */
static char *script_path;

static void write_script(void) {
  static const char *const checkouts[][2] = {{"C1", "17:02.16"}, {"C2", "17:03"},
                                             {"C3", "17:03.5"},  {"C4", "17:04.999"},
                                             {"C5", "17:05"},    {"C6", "17:05.001"}};
  char path[] = "/tmp/test_csu_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "w");
  assert_non_null(f);
  fprintf(f, "[{\"EventType\":\"AddCartLines\",\"EventTransactionId\":\"C1\","
             "\"EventDateTime\":\"" DAY "17:01.5Z\",\"EventData\":\"[\\\"81143\\\",\\\"0002\\\"]\","
             "\"EventTerminalId\":\"HOUSTON-17\",\"EventStaffId\":\"000168\","
             "\"EventCustomerId\":\"001001\"},\n");
  for (size_t i = 0; i < sizeof(checkouts) / sizeof(checkouts[0]); i++)
    fprintf(f,
            "{\"EventType\":\"Checkout\",\"EventTransactionId\":\"%s\",\"EventDateTime\":\"" DAY
            "%sZ\",\"EventTerminalId\":\"HOUSTON-17\",\"EventStaffId\":\"000168\","
            "\"EventCustomerId\":\"001001\"},\n",
            checkouts[i][0], checkouts[i][1]);
  fprintf(f, "{\"EventType\":\"AddCartLines\",\"EventTransactionId\":\"A1\","
             "\"EventDateTime\":\"" DAY "18:00Z\"},\n"
             "{\"EventType\":\"Checkout\",\"EventTransactionId\":\"G1\",\"EventDateTime\":\"" DAY
             "18:01Z\",\"ReceiptEmail\":\"\",\"EventTerminalId\":\"HOUSTON-2\"},\n"
             "{\"csu\":1,\"EventType\":\"Checkout\",\"EventTransactionId\":\"S1\","
             "\"EventDateTime\":\"" DAY "18:02Z\",\"EventChannelId\":5637145592},\n"
             "{\"EventType\":\"Checkout\",\"EventTransactionId\":\"K1\","
             "\"EventDateTime\":\"2024-07-24T16:00:10Z\"},\n"
             "{\"EventType\":\"Checkout\",\"EventTransactionId\":\"L1\","
             "\"EventDateTime\":\"2024-07-24T16:00:20Z\",\"commit_after_ms\":1500},\n");
  for (int i = 0; i < 37; i++)
    fprintf(f,
            "{\"EventType\":\"Checkout\",\"EventTransactionId\":\"P%02d\",\"EventDateTime\":"
            "\"2024-07-24T15:00:%02d.%dZ\"}%s\n",
            i, i / 10, i % 10, i == 36 ? "" : ",");
  fprintf(f, "]\n");
  fclose(f);
  script_path = strdup(path);
}

static void start(struct st *t, const char *faults) {
  struct sim_opts o;
  sim_opts_default(&o);
  o.csus = 2;
  o.events_path = script_path;
  o.faults_yaml = faults;
  st_start_opts(t, &o);
}

static int setup(void **state) {
  struct st *t = calloc(1, sizeof(*t));
  start(t, NULL);
  *state = t;
  return 0;
}

static int teardown(void **state) {
  st_stop(*state);
  free(*state);
  return 0;
}

/* A call with these header lines (NULL-terminated); the transport must succeed. */
static void call_h(struct st *t, const char *const *headers, const char *method, const char *path,
                   const char *body, struct st_resp *out) {
  assert_int_equal(st_call(t, method, path, headers, body, 0, out), 0);
}

/* A call with the token and OUN 128. */
static void call(struct st *t, const char *method, const char *path, const char *body,
                 struct st_resp *out) {
  const char *h[] = {st_auth(t, SIM_AUD_COMMERCE), "OUN: 128", NULL};
  call_h(t, h, method, path, body, out);
}

static void assert_commerce_error(struct st_resp *r, long status, const char *id) {
  if (r->status != status)
    fail_msg("status %ld, wanted %ld: %s", r->status, status, r->body);
  assert_non_null(r->json);
  assert_string_equal(csr_json_get_str(r->json, "ErrorResourceId"), id);
  assert_non_null(csr_json_get_str(r->json, "LocalizedMessage"));
  assert_non_null(csr_json_get_str(r->json, "ExceptionType"));
}

/* call_h() answered by `status`: a Commerce error with ErrorResourceId RT `id`, or any body when
 * `id` is NULL. */
static void expect_h(struct st *t, const char *const *headers, const char *method, const char *path,
                     const char *body, long status, const char *id) {
  struct st_resp r;
  call_h(t, headers, method, path, body, &r);
  if (id != NULL) {
    char want[128];
    snprintf(want, sizeof(want), RT "%s", id);
    assert_commerce_error(&r, status, want);
  } else {
    assert_int_equal(r.status, status);
  }
  st_resp_free(&r);
}

/* expect_h() with the token and OUN 128. */
static void expect(struct st *t, const char *method, const char *path, const char *body,
                   long status, const char *id) {
  const char *h[] = {st_auth(t, SIM_AUD_COMMERCE), "OUN: 128", NULL};
  expect_h(t, h, method, path, body, status, id);
}

static void assert_count(struct st_resp *r, int64_t want) {
  int64_t count;
  assert_int_equal(csr_json_get_int(r->json, "@odata.count", &count), 0);
  assert_int_equal(count, want);
}

/* The transaction ids of a page, comma-joined. */
static const char *ids(struct st_resp *r) {
  static char buf[4096];
  yajl_val v = csr_json_get(r->json, "value");
  buf[0] = '\0';
  for (size_t i = 0; i < csr_json_len(v); i++) {
    strcat(buf, i ? "," : "");
    strcat(buf, csr_json_get_str(csr_json_at(v, i), "EventTransactionId"));
  }
  return buf;
}

/* A Customers/SearchByFields body: one Email criterion. */
static const char *by_email(const char *email) {
  static char body[512];
  snprintf(body, sizeof(body),
           "{\"CustomerSearchByFieldCriteria\":{\"Criteria\":[{\"SearchTerm\":\"%s\","
           "\"SearchField\":{\"Name\":\"Email\",\"Value\":3}}]}}",
           email);
  return body;
}

/* A Search (token, OUN 128) whose page holds these transaction ids, comma-joined. */
static void expect_ids(struct st *t, const char *path, const char *body, const char *want) {
  struct st_resp r;
  call(t, "POST", path, body, &r);
  assert_string_equal(ids(&r), want);
  st_resp_free(&r);
}

static const char *criteria(const char *from, const char *to) {
  static char body[512];
  snprintf(body, sizeof(body),
           "{\"commerceEventSearchCriteria\":{\"EventType\":\"Checkout\","
           "\"EventDateTimeFrom\":\"%s\",\"EventDateTimeTo\":\"%s\"}}",
           from, to);
  return body;
}

static void test_search_window(void **state) {
  struct st *t = *state;
  struct st_resp r;
  /* From 03.7 → 03 (exclusive: C2 at 03.000 is out), To 05.4 → 05 (inclusive: C5 in, C6 out) */
  call(t, "POST", SEARCH "?$top=250&$count=true&api-version=7.3",
       criteria(DAY "17:03.7Z", DAY "17:05.4000000Z"), &r);
  assert_int_equal(r.status, 200);
  assert_string_equal(ids(&r), "C3,C4,C5");
  assert_count(&r, 3);
  const char *ctx = csr_json_get_str(r.json, "@odata.context");
  assert_non_null(strstr(ctx, "/csu0/Commerce/$metadata#CommerceEventsController"));
  yajl_val e = csr_json_at(csr_json_get(r.json, "value"), 0);
  assert_string_equal(csr_json_get_str(e, "EventDateTime"), "2024-07-24T14:17:03.5Z");
  assert_string_equal(csr_json_get_str(e, "EventType"), "Checkout");
  assert_string_equal(csr_json_get_str(e, "EventDataAreaId"), "usrt");
  assert_string_equal(csr_json_get_str(e, "EventData"), "{}");
  assert_true(YAJL_IS_INTEGER(csr_json_get(e, "EventChannelId")));
  assert_string_equal(csr_json_num_text(csr_json_get(e, "EventChannelId")), "5637144592");
  assert_string_equal(csr_json_get_str(e, "EventTerminalId"), "HOUSTON-17");
  assert_string_equal(csr_json_get_str(e, "EventStaffId"), "000168");
  assert_string_equal(csr_json_get_str(e, "EventCustomerId"), "001001");
  assert_true(YAJL_IS_ARRAY(csr_json_get(e, "ExtensionProperties")));
  assert_int_equal(csr_json_len(csr_json_get(e, "ExtensionProperties")), 0);
  st_resp_free(&r);
  /* no $count: no @odata.count; the camelCase body of the Function and encoded option names */
  call(t, "POST", SEARCH "?%24top=2",
       "{\"CommerceEventSearchCriteria\":{\"eventType\":\"checkout\","
       "\"eventDateTimeFrom\":\"" DAY "17:00Z\",\"eventDateTimeTo\":\"" DAY "17:05Z\"}}",
       &r);
  assert_int_equal(r.status, 200);
  assert_null(csr_json_get(r.json, "@odata.count"));
  assert_string_equal(ids(&r), "C1,C2");
  st_resp_free(&r);
  /* AddCartLines only: one type per Search; a list of types matches nothing */
  call(t, "POST", SEARCH,
       "{\"commerceEventSearchCriteria\":{\"EventType\":\"AddCartLines\","
       "\"EventDateTimeFrom\":\"" DAY "00:00Z\",\"EventDateTimeTo\":\"" DAY "59:00Z\"}}",
       &r);
  assert_string_equal(ids(&r), "C1,A1");
  assert_string_equal(csr_json_get_str(csr_json_at(csr_json_get(r.json, "value"), 0), "EventData"),
                      "[\"81143\",\"0002\"]");
  st_resp_free(&r);
  call(t, "POST", SEARCH "?$count=true",
       "{\"commerceEventSearchCriteria\":{\"EventType\":\"AddCartLines,Checkout\","
       "\"EventDateTimeFrom\":\"" DAY "00:00Z\",\"EventDateTimeTo\":\"" DAY "59:00Z\"}}",
       &r);
  assert_int_equal(r.status, 200);
  assert_string_equal(ids(&r), "");
  st_resp_free(&r);
}

/* $top/$skip until a short page returns every event exactly once. */
static void test_search_paging(void **state) {
  struct st *t = *state;
  char seen[4096] = "", path[160];
  size_t pages = 0;
  for (size_t skip = 0;; skip += 10) {
    struct st_resp r;
    snprintf(path, sizeof(path), SEARCH "?$top=10&$skip=%zu&$count=true", skip);
    call(t, "POST", path, criteria("2024-07-24T15:00:00Z", "2024-07-24T15:01:00Z"), &r);
    assert_int_equal(r.status, 200);
    assert_count(&r, 36); /* P00 at 15:00:00.0 is not after From */
    size_t n = csr_json_len(csr_json_get(r.json, "value"));
    strcat(seen, ids(&r));
    strcat(seen, n ? "," : "");
    pages++;
    st_resp_free(&r);
    if (n < 10)
      break;
  }
  assert_int_equal(pages, 4);
  char want[4096] = "";
  for (int i = 1; i < 37; i++)
    sprintf(want + strlen(want), "P%02d,", i);
  assert_string_equal(seen, want);
}

static void test_search_errors(void **state) {
  struct st *t = *state;
  const char *body = criteria(DAY "17:00Z", DAY "18:00Z");
  const char *no_oun[] = {st_auth(t, SIM_AUD_COMMERCE), NULL};
  expect_h(t, no_oun, "POST", SEARCH, body, 400, "InvalidRequest");
  const char *wrong_oun[] = {st_auth(t, SIM_AUD_COMMERCE), "OUN: 129", NULL};
  expect_h(t, wrong_oun, "POST", SEARCH, body, 400, "InvalidRequest");
  const char *no_token[] = {"OUN: 128", NULL};
  expect_h(t, no_token, "POST", SEARCH, body, 401, NULL);
  const char *bad_token[] = {"Authorization: Bearer not-a-token", "OUN: 128", NULL};
  expect_h(t, bad_token, "POST", SEARCH, body, 401, NULL);
  char idtok[700];
  snprintf(idtok, sizeof(idtok), "Authorization: id_token %s", st_token(t, SIM_AUD_COMMERCE));
  const char *id_token[] = {idtok, "oun: 128", NULL}; /* header names in any case */
  expect_h(t, id_token, "POST", SEARCH, body, 200, NULL);
  expect(t, "POST", SEARCH, "{\"commerceEventSearchCriteria\":", 400, "InvalidRequest");
  expect(t, "POST", SEARCH, "{\"other\":{}}", 400, "RequiredValueNotFound");
  expect(t, "POST", SEARCH, "{\"commerceEventSearchCriteria\":{\"EventType\":\"Checkout\"}}", 400,
         "RequiredValueNotFound");
  expect(t, "POST", SEARCH,
         "{\"commerceEventSearchCriteria\":{\"EventDateTimeFrom\":\"" DAY "17:00Z\","
         "\"EventDateTimeTo\":\"" DAY "18:00Z\"}}",
         500, "ApplicationError");
  expect(t, "POST", SEARCH,
         "{\"commerceEventSearchCriteria\":{\"EventType\":\" \",\"EventDateTimeFrom\":\"" DAY
         "17:00Z\",\"EventDateTimeTo\":\"" DAY "18:00Z\"}}",
         500, NULL);
  /* W-C8 */
  expect(t, "POST", SEARCH, criteria("0001-01-01T00:00:00Z", DAY "18:00Z"), 500,
         "CriticalStorageError");
  expect(t, "POST", SEARCH "?$top=ten", body, 400, "InvalidRequest");
  /* an action called as a function */
  expect(t, "GET", SEARCH, NULL, 404, "ObjectNotFound");
  expect(t, "POST", "/csu2/Commerce/CommerceEventsController/Search", body, 404, NULL);
  expect(t, "GET", "/csu0/Commerce/Nothing", NULL, 404, "ObjectNotFound");
}

static void test_getall(void **state) {
  struct st *t = *state;
  struct st_resp r;
  call(t, "GET",
       "/csu0/Commerce/CommerceEventsController/GetAllCommerceEvents()?$top=3&$count=true", NULL,
       &r);
  assert_int_equal(r.status, 200);
  assert_string_equal(ids(&r), "C1,C1,C2");
  yajl_val v = csr_json_get(r.json, "value");
  assert_string_equal(csr_json_get_str(csr_json_at(v, 0), "EventType"), "AddCartLines");
  assert_string_equal(csr_json_get_str(csr_json_at(v, 1), "EventType"), "Checkout");
  assert_count(&r, 47); /* L1 is not committed yet */
  st_resp_free(&r);
  call(t, "GET", "/csu0/Commerce/CommerceEventsController/GetAllCommerceEvents?$skip=44", NULL, &r);
  assert_string_equal(ids(&r), "P35,P36,K1");
  st_resp_free(&r);
}

static void test_last_sync(void **state) {
  struct st *t = *state;
  struct st_resp r;
  const char *anon[] = {"OUN: 128", NULL}; /* the citizen flow sends no token */
  call_h(t, anon, "POST", "/csu0/Commerce/GetLastSyncDatetimeUTC", "{\"appName\":\"TestApp\"}", &r);
  assert_int_equal(r.status, 200);
  assert_string_equal(csr_json_get_str(r.json, "value"), "0001-01-01T00:00:00Z");
  st_resp_free(&r);
  const char *sets[] = {"2024-07-26T08:01:00Z", "2024-07-26T10:01:00.5+02:00"};
  const char *echo[] = {"2024-07-26T08:01:00Z", "2024-07-26T08:01:00.5Z"};
  for (int i = 0; i < 2; i++) {
    char body[128];
    snprintf(body, sizeof(body), "{\"lastSyncDatetime\":\"%s\",\"appName\":\"TestApp\"}", sets[i]);
    call_h(t, anon, "POST", "/csu0/Commerce/SetLastSyncDatetime", body, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(csr_json_get_str(r.json, "value"), echo[i]);
    st_resp_free(&r);
  }
  call_h(t, anon, "POST", "/csu0/Commerce/SetLastSyncDatetime",
         "{\"lastSyncDatetime\":\"2024-07-25T00:00:00Z\",\"appName\":\"TestApp\"}", &r);
  st_resp_free(&r);
  call(t, "POST", "/csu0/Commerce/GetLastSyncDatetimeUTC", "{\"appName\":\"TestApp\"}", &r);
  assert_string_equal(csr_json_get_str(r.json, "value"), "2024-07-26T08:01:00.5Z"); /* the newest */
  st_resp_free(&r);
  /* csu 1's OUN is 129 */
  expect(t, "POST", "/csu1/Commerce/GetLastSyncDatetimeUTC", "{\"appName\":\"TestApp\"}", 400,
         NULL);
  /* the table is append-only with the time in its key: the same value twice fails */
  expect_h(t, anon, "POST", "/csu0/Commerce/SetLastSyncDatetime",
           "{\"lastSyncDatetime\":\"2024-07-26T08:01:00Z\",\"appName\":\"TestApp\"}", 500,
           "CriticalStorageError");
  const char *bad_token[] = {"Authorization: Bearer nope", "OUN: 128", NULL};
  expect_h(t, bad_token, "POST", "/csu0/Commerce/GetLastSyncDatetimeUTC",
           "{\"appName\":\"TestApp\"}", 401, NULL);
}

static void test_oun(void **state) {
  struct st *t = *state;
  struct st_resp r;
  call(t, "GET", "/csu0/Commerce/GetOperatingUnitNumber(channelid=5637144594)?api-version=7.3",
       NULL, &r);
  assert_int_equal(r.status, 200);
  assert_string_equal(csr_json_get_str(r.json, "value"), "128");
  assert_non_null(strstr(csr_json_get_str(r.json, "@odata.context"), "#Edm.String"));
  st_resp_free(&r);
  const char *h1[] = {"OUN: 129", NULL};
  call_h(t, h1, "GET", "/csu1/Commerce/GetOperatingUnitNumber(channelid=5637145593)", NULL, &r);
  assert_string_equal(csr_json_get_str(r.json, "value"), "129");
  st_resp_free(&r);
  call(t, "GET", "/csu0/Commerce/GetOperatingUnitNumber(channelid=5637145593)", NULL, &r);
  assert_commerce_error(&r, 400, RT "InvalidRequest");
  assert_string_equal(csr_json_get_str(r.json, "LocalizedMessage"), "Could not retrieve Oun");
  st_resp_free(&r);
}

/* Cents from exact decimal text "184.2200000000000000"; asserts the high-scale form. */
static int64_t cents(yajl_val v) {
  const char *s = csr_json_num_text(v);
  assert_non_null(s);
  const char *dot = strchr(s, '.');
  assert_non_null(dot);
  assert_true(strlen(dot + 1) >= 16);
  for (const char *p = dot + 3; *p; p++)
    assert_int_equal(*p, '0');
  return strtoll(s, NULL, 10) * 100 + (dot[1] - '0') * 10 + (dot[2] - '0');
}

#define ORDER "/csu0/Commerce/SalesOrders/GetSalesOrderDetailsByTransactionId"

static void test_order(void **state) {
  struct st *t = *state;
  struct st_resp r;
  call(t, "GET", ORDER "(transactionId=@p1,searchLocationValue=1)?@p1='C1'&api-version=7.3", NULL,
       &r);
  assert_int_equal(r.status, 200);
  yajl_val o = r.json;
  assert_string_equal(csr_json_get_str(o, "Id"), "C1");
  assert_non_null(strstr(csr_json_get_str(o, "@odata.context"), "DataModel.SalesOrder"));
  assert_string_equal(csr_json_get_str(o, "CustomerId"), "001001");
  assert_string_equal(csr_json_get_str(o, "CreatedDateTime"), "2024-07-24T14:17:02.16Z");
  assert_string_equal(csr_json_get_str(o, "CurrencyCode"), "USD");
  assert_string_equal(csr_json_get_str(o, "TerminalId"), "HOUSTON-17");
  assert_string_equal(csr_json_get_str(o, "SalesId"), "");
  assert_string_equal(csr_json_get_str(o, "ChannelReferenceId"), "");
  assert_int_equal(strlen(csr_json_get_str(o, "InternalTransactionId")), 36);
  assert_true(strlen(csr_json_get_str(o, "Name")) > 3);
  int64_t paid = cents(csr_json_get(o, "AmountPaid"));
  assert_string_equal(csr_json_num_text(csr_json_get(o, "AmountPaid")),
                      csr_json_num_text(csr_json_get(o, "TotalAmount")));
  assert_int_equal(paid, cents(csr_json_get(o, "SubtotalAmount")) +
                             cents(csr_json_get(o, "TaxAmount")) +
                             cents(csr_json_get(o, "ChargeAmount")));
  yajl_val lines = csr_json_get(o, "SalesLines");
  assert_true(csr_json_len(lines) >= 1);
  int64_t net = 0;
  for (size_t i = 0; i < csr_json_len(lines); i++)
    net += cents(csr_json_get(csr_json_at(lines, i), "NetAmount"));
  assert_int_equal(net, cents(csr_json_get(o, "SubtotalAmount")));
  yajl_val tender = csr_json_at(csr_json_get(o, "TenderLines"), 0);
  assert_int_equal(cents(csr_json_get(tender, "Amount")), paid);
  const char *arrays[] = {"TaxLines", "ChargeLines", "ContactInformationCollection",
                          "ExtensionProperties"};
  for (size_t i = 0; i < 4; i++)
    assert_true(YAJL_IS_ARRAY(csr_json_get(o, arrays[i])));
  /* the money text is on the wire as written, not re-serialised */
  char want[80];
  snprintf(want, sizeof(want), "\"AmountPaid\":%s",
           csr_json_num_text(csr_json_get(o, "AmountPaid")));
  assert_non_null(strstr(r.body, want));
  /* what the ledger was told at generation matches the order */
  struct sim__order_sum sum;
  sim__order_summary(t->sim.csus, &t->sim.csus->csu[0], sim__cart_find(&t->sim.csus->csu[0], "C1"),
                     &sum);
  assert_string_equal(sum.binding, csr_json_get_str(o, "InternalTransactionId"));
  assert_string_equal(sum.amount, csr_json_num_text(csr_json_get(o, "AmountPaid")));
  const char *receipt = csr_json_get_str(o, "ReceiptEmail");
  struct sim__cust *k = sim__cust_find(&t->sim.csus->csu[0], "001001");
  assert_string_equal(sum.email, receipt[0] ? receipt : k->email);
  /* the same order again, through the inline literal and the %27-escaped alias */
  struct st_resp r2;
  call(t, "GET", ORDER "(transactionId='C1',searchLocationValue=1)", NULL, &r2);
  assert_int_equal(r2.status, 200);
  assert_string_equal(r2.body, r.body);
  st_resp_free(&r2);
  call(t, "GET", ORDER "(transactionId=@p1,searchLocationValue=1)?%40p1=%27C1%27", NULL, &r2);
  assert_string_equal(r2.body, r.body);
  st_resp_free(&r2);
  st_resp_free(&r);
}

static void test_order_guest_and_missing(void **state) {
  struct st *t = *state;
  struct st_resp r;
  call(t, "GET", ORDER "(transactionId=@p1,searchLocationValue=1)?@p1='G1'", NULL, &r);
  assert_int_equal(r.status, 200);
  assert_string_equal(csr_json_get_str(r.json, "CustomerId"), "");
  assert_string_equal(csr_json_get_str(r.json, "Name"), "");
  assert_string_equal(csr_json_get_str(r.json, "ReceiptEmail"), "");
  assert_int_equal(csr_json_len(csr_json_get(r.json, "ContactInformationCollection")), 0);
  struct sim__order_sum sum;
  sim__order_summary(t->sim.csus, &t->sim.csus->csu[0], sim__cart_find(&t->sim.csus->csu[0], "G1"),
                     &sum);
  assert_string_equal(sum.email, ""); /* the cij sink will skip it: no_email */
  st_resp_free(&r);
  /* only a committed Checkout makes an order: a cart with AddCartLines only has none */
  expect(t, "GET", ORDER "(transactionId=@p1,searchLocationValue=1)?@p1='A1'", NULL, 404,
         "ObjectNotFound");
  /* S1 is csu 1's */
  expect(t, "GET", ORDER "(transactionId=@p1,searchLocationValue=1)?@p1='S1'", NULL, 404, NULL);
  expect(t, "GET", ORDER "(transactionId=@p1,searchLocationValue=1)", NULL, 400,
         "RequiredValueNotFound");
}

static void test_customer_get_search(void **state) {
  struct st *t = *state;
  struct st_resp r;
  call(t, "GET", "/csu0//Commerce/Customers('001001')?api-version=7.3", NULL, &r); /* the `//` */
  assert_int_equal(r.status, 200);
  assert_string_equal(csr_json_get_str(r.json, "AccountNumber"), "001001");
  assert_non_null(strstr(csr_json_get_str(r.json, "@odata.context"), "#Customers/$entity"));
  const char *fields[] = {"FirstName", "LastName", "CustomerGroup", "Email", "Name", "PartyNumber"};
  for (size_t i = 0; i < 6; i++)
    assert_non_null(csr_json_get_str(r.json, fields[i]));
  assert_true(YAJL_IS_INTEGER(csr_json_get(r.json, "PersonNameId")));
  assert_true(YAJL_IS_ARRAY(csr_json_get(r.json, "Addresses")));
  assert_int_equal(csr_json_len(csr_json_get(r.json, "ExtensionProperties")), 0);
  char email[128], upper[128], body[300];
  snprintf(email, sizeof(email), "%s", csr_json_get_str(r.json, "Email"));
  assert_true(strchr(email, '@') != NULL);
  st_resp_free(&r);
  for (size_t i = 0; i <= strlen(email); i++)
    upper[i] = (char)(email[i] >= 'a' && email[i] <= 'z' ? email[i] - 32 : email[i]);
  snprintf(body, sizeof(body),
           "{\"CustomerSearchByFieldCriteria\":{\"Criteria\":[{\"SearchTerm\":\"%s\","
           "\"SearchField\":{\"Name\":\"Email\",\"Value\":3}}],\"DataLevelValue\":1}}",
           upper);
  call(t, "POST", "/csu0/Commerce/Customers/SearchByFields?$top=1&api-version=7.3", body, &r);
  assert_int_equal(r.status, 200);
  yajl_val v = csr_json_get(r.json, "value");
  assert_int_equal(csr_json_len(v), 1);
  assert_string_equal(csr_json_get_str(csr_json_at(v, 0), "AccountNumber"), "001001");
  assert_string_equal(csr_json_get_str(csr_json_at(v, 0), "Email"), email);
  assert_non_null(strstr(csr_json_get_str(r.json, "@odata.context"), "GlobalCustomer"));
  st_resp_free(&r);
  call(t, "POST", "/csu0/Commerce/Customers/SearchByFields", by_email("nobody@nowhere.test"), &r);
  assert_int_equal(csr_json_len(csr_json_get(r.json, "value")), 0);
  st_resp_free(&r);
  expect(t, "POST", "/csu0/Commerce/Customers/SearchByFields", "{\"x\":1}", 400,
         "RequiredValueNotFound");
  expect(t, "GET", "/csu0/Commerce/Customers('nope')", NULL, 404, "CustomerNotFound");
  /* a guest's empty CustomerId */
  expect(t, "GET", "/csu0/Commerce/Customers('')", NULL, 404, "CustomerNotFound");
}

static void test_customer_create_update(void **state) {
  struct st *t = *state;
  struct st_resp r;
  call(
      t, "POST", "/csu0/Commerce/Customers?api-version=7.3",
      "{\"AccountNumber\":\"\",\"FirstName\":\"Alex\",\"MiddleName\":\"\",\"LastName\":\"Johnson\","
      "\"CustomerTypeValue\":1,\"Language\":\"en-us\",\"CustomerGroup\":\"3\",\"Email\":"
      "\"JohnsonAlex@contoso.com\",\"Phone\":\"+16135551111\",\"Addresses\":[{\"Street\":\"Main "
      "Street\",\"StreetNumber\":\"248\",\"City\":\"Newyork\",\"State\":\"NY\",\"ZipCode\":"
      "\"10002\"}],\"ExtensionProperties\":[]}",
      &r);
  assert_int_equal(r.status, 201);
  assert_string_equal(csr_json_get_str(r.json, "AccountNumber"), "006001");
  assert_string_equal(csr_json_get_str(r.json, "CustomerGroup"), "3");
  assert_non_null(strstr(r.location, "/csu0/Commerce/Customers('006001')"));
  yajl_val addr = csr_json_at(csr_json_get(r.json, "Addresses"), 0);
  assert_string_equal(csr_json_get_str(addr, "Street"), "248 Main Street");
  st_resp_free(&r);
  call(t, "PATCH", "/csu0/Commerce/Customers('006001')",
       "{\"AccountNumber\":\"006001\",\"FirstName\":\"Alexandra\",\"Email\":\"alex@contoso.com\","
       "\"ExtensionProperties\":[]}",
       &r);
  assert_int_equal(r.status, 200);
  assert_string_equal(csr_json_get_str(r.json, "FirstName"), "Alexandra");
  assert_string_equal(csr_json_get_str(r.json, "LastName"), "Johnson"); /* merged */
  assert_string_equal(csr_json_get_str(r.json, "Email"), "alex@contoso.com");
  st_resp_free(&r);
  call(t, "GET", "/csu0/Commerce/Customers('006001')", NULL, &r);
  assert_string_equal(csr_json_get_str(r.json, "FirstName"), "Alexandra");
  st_resp_free(&r);
  call(t, "POST", "/csu0/Commerce/Customers/SearchByFields", by_email("johnsonalex@contoso.com"),
       &r);
  assert_int_equal(csr_json_len(csr_json_get(r.json, "value")), 0);
  st_resp_free(&r);
  call(t, "POST", "/csu0/Commerce/Customers/SearchByFields?$count=true",
       by_email("ALEX@contoso.com"), &r);
  assert_int_equal(csr_json_len(csr_json_get(r.json, "value")), 1);
  assert_count(&r, 1);
  st_resp_free(&r);
  struct sim_ledger_counts lc;
  sim_ledger_counts(t->sim.ledger, &lc);
  assert_int_equal(lc.customers_created, 1);
  assert_int_equal(lc.customers_updated, 1);
}

static void test_customer_validation(void **state) {
  struct st *t = *state;
  expect(t, "POST", "/csu0/Commerce/Customers", "{\"AccountNumber\":\"\",\"LastName\":\"Lee\"}",
         400, "RequiredValueNotFound");
  expect(t, "POST", "/csu0/Commerce/Customers", "{\"Email\":\"lee@contoso.com\"}", 400,
         "RequiredValueNotFound");
  expect(t, "POST", "/csu0/Commerce/Customers", "{\"Email\":\"lee\",\"LastName\":\"Lee\"}", 400,
         "InvalidFormat");
  expect(t, "POST", "/csu0/Commerce/Customers",
         "{\"AccountNumber\":\"001001\",\"Email\":\"lee@contoso.com\",\"LastName\":\"Lee\"}", 400,
         "InvalidRequest");
  expect(t, "POST", "/csu0/Commerce/Customers", "{\"FirstName\":7,\"LastName\":\"Lee\"}", 400,
         "InvalidRequest");
  expect(t, "POST", "/csu0/Commerce/Customers", "not json", 400, "InvalidRequest");
  expect(t, "PATCH", "/csu0/Commerce/Customers('nope')", "{\"FirstName\":\"X\"}", 404,
         "CustomerNotFound");
  expect(t, "PATCH", "/csu0/Commerce/Customers('001002')", "{\"LastName\":\"\"}", 400,
         "RequiredValueNotFound");
}

/* The stale cache: a non-empty page is served again for the same key after L1 (committed 1.5 s
 * after start) became visible; another key, or a page that was empty, sees it. Without the fault,
 * the same query sees it too. */
static void test_stale_cache(void **state) {
  const char *plans[2] = {"events:\n  stale_cache: true\n", NULL};
  for (int i = 0; i < 2; i++) {
    struct st t;
    start(&t, plans[i]);
    char window[512], later[512];
    snprintf(window, sizeof(window), "%s",
             criteria("2024-07-24T16:00:00Z", "2024-07-24T16:01:00Z"));
    snprintf(later, sizeof(later), "%s", criteria("2024-07-24T16:00:15Z", "2024-07-24T16:01:00Z"));
    expect_ids(&t, SEARCH "?$top=250", window, "K1");
    expect_ids(&t, SEARCH "?$top=250", later, "");
    st_run_ms(&t, 1700);
    expect_ids(&t, SEARCH "?$top=250", window, i == 0 ? "K1" : "K1,L1");
    expect_ids(&t, SEARCH "?$top=100", window, "K1,L1");
    expect_ids(&t, SEARCH "?$top=250", later, "L1"); /* empty pages are never cached */
    st_stop(&t);
  }
}

int main(void) {
  write_script();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_search_window, setup, teardown),
      cmocka_unit_test_setup_teardown(test_search_paging, setup, teardown),
      cmocka_unit_test_setup_teardown(test_search_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_getall, setup, teardown),
      cmocka_unit_test_setup_teardown(test_last_sync, setup, teardown),
      cmocka_unit_test_setup_teardown(test_oun, setup, teardown),
      cmocka_unit_test_setup_teardown(test_order, setup, teardown),
      cmocka_unit_test_setup_teardown(test_order_guest_and_missing, setup, teardown),
      cmocka_unit_test_setup_teardown(test_customer_get_search, setup, teardown),
      cmocka_unit_test_setup_teardown(test_customer_create_update, setup, teardown),
      cmocka_unit_test_setup_teardown(test_customer_validation, setup, teardown),
      cmocka_unit_test(test_stale_cache),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  unlink(script_path);
  free(script_path);
  return rc;
}
