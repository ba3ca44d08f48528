/* The gate: injected errors come back in each party's own shape with Retry-After; latency delays,
 * timeouts hold, resets cut, malformed bodies do not parse; stopping releases held requests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "simtest.h"

static const char all_429[] = "endpoints:\n"
                              "  \"*\": {error_rate: 1.0, errors: [429], retry_after_s: 7}\n";

static void test_injected_errors_in_each_party_shape(void **state) {
  struct st t;
  st_start(&t, 1, 0, all_429);
  struct st_resp r;

  /* Entra: an OAuth error object with an AADSTS code. */
  st_call(&t, "POST", "/csusim.onmicrosoft.com/oauth2/v2.0/token", NULL, "{}", 0, &r);
  assert_int_equal(r.status, 429);
  assert_int_equal(r.retry_after_ms, 7000);
  assert_string_equal(csr_json_get_str(r.json, "error"), "temporarily_unavailable");
  assert_non_null(strstr(csr_json_get_str(r.json, "error_description"), "AADSTS90055"));
  assert_int_equal(csr_json_len(csr_json_get(r.json, "error_codes")), 1);
  st_resp_free(&r);

  /* Commerce: ErrorResourceId and Retry-After. */
  const char *csu_headers[] = {"OUN: 128", NULL};
  st_call(&t, "POST", "/csu0/Commerce/CommerceEventsController/Search?$top=10", csu_headers, "{}",
          0, &r);
  assert_int_equal(r.status, 429);
  assert_int_equal(r.retry_after_ms, 7000);
  assert_string_equal(csr_json_get_str(r.json, "ErrorResourceId"),
                      "Microsoft_Dynamics_Commerce_Runtime_RequestThrottled");
  st_resp_free(&r);

  /* Dataverse: {"error":{"code","message"}} with the service-protection code. */
  st_call(&t, "GET", "/dataverse/api/data/v9.2/contacts?$select=contactid", NULL, NULL, 0, &r);
  assert_int_equal(r.status, 429);
  assert_int_equal(r.retry_after_ms, 7000);
  assert_string_equal(csr_json_get_str(csr_json_get(r.json, "error"), "code"), "0x80072322");
  st_resp_free(&r);

  /* A webhook receiver: plain JSON. */
  st_call(&t, "POST", "/hooks/audit", NULL, "{}", 0, &r);
  assert_int_equal(r.status, 429);
  assert_string_equal(csr_json_get_str(r.json, "error"), "injected");
  st_resp_free(&r);

  assert_int_equal(t.sim.requests, 4);
  st_stop(&t);
}

static const char faults_per_kind[] = "endpoints:\n"
                                      "  webhook:\n"
                                      "    - {latency_ms: 300}\n"
                                      "  customer_get: {timeout_rate: 1.0}\n"
                                      "  oun: {reset_rate: 1.0}\n"
                                      "  lastsync: {malformed_rate: 1.0}\n";

static void test_latency_timeout_reset_malformed(void **state) {
  struct st t;
  st_start(&t, 1, 0, faults_per_kind);
  struct st_resp r;

  uint64_t before = rx_now_ms(&t.loop);
  const char *hook_headers[] = {"Idempotency-Key: nope", NULL};
  st_call(&t, "POST", "/hooks/audit", hook_headers, "{\"EventId\":\"nope\"}", 0, &r);
  assert_true(rx_now_ms(&t.loop) - before >= 300);
  assert_true(r.status > 0); /* answered, after the delay */
  st_resp_free(&r);

  const char *csu[] = {"OUN: 128", st_auth(&t, SIM_AUD_COMMERCE), NULL};
  assert_int_equal(st_call(&t, "GET", "/csu0/Commerce/Customers('C0001')", csu, NULL, 400, &r),
                   UV_ETIMEDOUT);
  st_resp_free(&r);

  assert_int_equal(st_call(&t, "GET", "/csu0/Commerce/GetOperatingUnitNumber(channelid=5637144592)",
                           csu, NULL, 0, &r),
                   UV_ECONNRESET);
  st_resp_free(&r);

  st_call(&t, "POST", "/csu0/Commerce/GetLastSyncDatetimeUTC", csu, "{\"appName\":\"x\"}", 0, &r);
  assert_int_equal(r.status, 200);
  assert_true(r.len > 0);
  assert_null(r.json); /* cut in half: no longer JSON */
  st_resp_free(&r);
  st_stop(&t);
}

static void test_stop_releases_held_requests(void **state) {
  struct st t;
  st_start(&t, 1, 0, "endpoints:\n  webhook: {timeout_rate: 1.0}\n");
  struct st_resp r;
  /* The request is held; the client gives up; the sim keeps it until the sweep or the stop. */
  assert_int_equal(st_call(&t, "POST", "/hooks/audit", NULL, "{}", 200, &r), UV_ETIMEDOUT);
  st_resp_free(&r);
  st_stop(&t); /* asserts the loop closes with nothing left (and ASan that nothing leaked) */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_injected_errors_in_each_party_shape),
      cmocka_unit_test(test_latency_timeout_reset_malformed),
      cmocka_unit_test(test_stop_releases_held_requests),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
