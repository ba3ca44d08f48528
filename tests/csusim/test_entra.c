/* Entra ID: the token endpoint's success and error JSON (v2.0 and v1), client authentication by
 * form and by HTTP Basic, and the token checks the CSU and Dataverse endpoints run: audience,
 * forgery, expiry and revocation mid-run, Bearer versus id_token. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "simtest.h"

#define V2       "/csusim.onmicrosoft.com/oauth2/v2.0/token"
#define V1       "/csusim.onmicrosoft.com/oauth2/token"
#define CV_SCOPE "api%3A%2F%2Fcommerce%2F.default"
#define DV_SCOPE "api%3A%2F%2Fdataverse%2F.default"
#define GOOD     "grant_type=client_credentials&client_id=csurelay&client_secret=csusim-secret"
#define DV_GET                                                                                     \
  "/dataverse/api/data/v9.2/contacts?$select=contactid&$filter=emailaddress1%20eq%20'a%40b.c'"

/* ---------------------------------------------------------------------------------------------- */
/* Helpers */
/* ---------------------------------------------------------------------------------------------- */

static void token_call(struct st *t, const char *path, const char *const *headers, const char *body,
                       struct st_resp *r) {
  st_call(t, "POST", path, headers, body, 0, r);
}

/* The Entra error object: status, error, "AADSTS<code>: <text>..." (text is a prefix of the
 * message), the trace lines, error_codes [code]. */
static void assert_entra_error(struct st_resp *r, long status, const char *error, int code,
                               const char *text) {
  char want[512];
  assert_int_equal(r->status, status);
  assert_non_null(r->json);
  assert_string_equal(csr_json_get_str(r->json, "error"), error);
  snprintf(want, sizeof(want), "AADSTS%d: %s", code, text);
  const char *desc = csr_json_get_str(r->json, "error_description");
  assert_non_null(desc);
  assert_memory_equal(desc, want, strlen(want));
  assert_non_null(strstr(desc, "\r\nTrace ID: "));
  assert_non_null(strstr(desc, "\r\nCorrelation ID: "));
  yajl_val codes = csr_json_get(r->json, "error_codes");
  assert_int_equal(csr_json_len(codes), 1);
  char num[16];
  snprintf(num, sizeof(num), "%d", code);
  assert_string_equal(csr_json_num_text(csr_json_at(codes, 0)), num);
  assert_non_null(csr_json_get_str(r->json, "timestamp"));
  assert_non_null(csr_json_get_str(r->json, "trace_id"));
  assert_non_null(csr_json_get_str(r->json, "correlation_id"));
}

static const char *fresh_token(struct st *t, enum sim_audience aud) {
  t->tokens[aud][0] = '\0';
  return st_token(t, aud);
}

/* GET a Dataverse lookup with this Authorization line; returns the status, fills *code. */
static long dv_probe(struct st *t, const char *auth, char *code, size_t cap) {
  const char *headers[] = {auth, NULL};
  struct st_resp r;
  st_call(t, "GET", DV_GET, auth ? headers : NULL, NULL, 0, &r);
  long status = r.status;
  const char *c = csr_json_get_str(csr_json_get(r.json, "error"), "code");
  snprintf(code, cap, "%s", c ? c : "");
  st_resp_free(&r);
  return status;
}

static void get_stats(struct st *t, struct sim_entra_stats *s) {
  sim_entra_stats(t->sim.entra, s);
}

/* ---------------------------------------------------------------------------------------------- */
/* A probe server: its handler runs sim_entra_check() for the CSU audience, as csu.c does */
/* ---------------------------------------------------------------------------------------------- */

static void on_probe_checked(struct sim_req *r) {
  if (sim_entra_check(r, (enum sim_audience)(intptr_t)r->arg) == 0)
    sim_reply(r, 200, NULL, NULL, "{\"ok\":true}", 11);
}

static void on_probe(struct rx_http_request *req, void *arg) {
  struct st *t = arg;
  intptr_t aud = strstr(req->path, "dataverse") ? SIM_AUD_DATAVERSE : SIM_AUD_COMMERCE;
  sim_serve(&t->sim, req, "probe", -1, on_probe_checked, (void *)aud);
}

static void probe_start(struct st *t, struct rx_http_server *srv) {
  assert_int_equal(rx_http_server_init(srv, &t->loop, NULL), 0);
  assert_int_equal(rx_http_server_route(srv, NULL, "/probe/*", on_probe, t), 0);
  assert_int_equal(rx_http_server_listen(srv, "127.0.0.1", 0), 0);
}

/* One probe call: the status, and the Commerce ErrorResourceId (or "") in `rid`. */
static int probe(struct st *t, struct rx_http_server *srv, const char *which, const char *auth,
                 char *rid, size_t cap) {
  char req[1024];
  struct st_raw x;
  snprintf(req, sizeof(req), "GET /probe/%s HTTP/1.1\r\nHost: x\r\n%s%sConnection: close\r\n\r\n",
           which, auth ? auth : "", auth ? "\r\n" : "");
  st_raw_call(t, srv->port, req, &x);
  const char *body = strstr(x.resp, "\r\n\r\n");
  yajl_val v = body ? csr_json_parse(body + 4, strlen(body + 4), NULL, 0) : NULL;
  const char *id = csr_json_get_str(v, "ErrorResourceId");
  snprintf(rid, cap, "%s", id ? id : "");
  csr_json_free(v);
  return st_raw_status(&x);
}

/* ---------------------------------------------------------------------------------------------- */
/* The token endpoint */
/* ---------------------------------------------------------------------------------------------- */

static void test_v2_success(void **state) {
  struct st t;
  st_start(&t, 1, 0, NULL);
  struct st_resp r;
  token_call(&t, V2, NULL, GOOD "&scope=" DV_SCOPE, &r);
  assert_int_equal(r.status, 200);
  assert_string_equal(csr_json_get_str(r.json, "token_type"), "Bearer");
  /* Numbers on v2.0, not strings. */
  assert_string_equal(csr_json_num_text(csr_json_get(r.json, "expires_in")), "3599");
  assert_string_equal(csr_json_num_text(csr_json_get(r.json, "ext_expires_in")), "3599");
  const char *tok = csr_json_get_str(r.json, "access_token");
  assert_non_null(tok);
  assert_memory_equal(tok, "eyJ", 3); /* JWT-shaped: header.payload.signature */
  assert_non_null(strchr(strchr(tok, '.') + 1, '.'));
  assert_true(strlen(tok) < 500);
  assert_null(csr_json_get(r.json, "refresh_token"));
  assert_int_equal(r.json->u.object.len, 4);
  st_resp_free(&r);

  /* The authority with a trailing slash gives "//tenant": still the token endpoint. */
  token_call(&t, "/" V2, NULL, GOOD "&scope=" CV_SCOPE, &r);
  assert_int_equal(r.status, 200);
  st_resp_free(&r);

  struct sim_entra_stats s;
  get_stats(&t, &s);
  assert_int_equal(s.issued, 2);
  assert_int_equal(s.refused, 0);
  st_stop(&t);
}

static void test_v1_success_with_string_numbers(void **state) {
  struct st t;
  st_start(&t, 1, 0, NULL);
  struct st_resp r;
  token_call(&t, V1, NULL, GOOD "&resource=api%3A%2F%2Fdataverse", &r);
  assert_int_equal(r.status, 200);
  assert_string_equal(csr_json_get_str(r.json, "token_type"), "Bearer");
  assert_string_equal(csr_json_get_str(r.json, "expires_in"), "3599");
  assert_string_equal(csr_json_get_str(r.json, "ext_expires_in"), "3599");
  assert_string_equal(csr_json_get_str(r.json, "resource"), "api://dataverse");
  const char *on = csr_json_get_str(r.json, "expires_on");
  const char *nbf = csr_json_get_str(r.json, "not_before");
  assert_non_null(on);
  assert_non_null(nbf);
  assert_int_equal(atoll(on) - atoll(nbf), 3599);
  /* The v1 token is a Dataverse token like any other. */
  char auth[600], code[32];
  snprintf(auth, sizeof(auth), "Authorization: Bearer %s",
           csr_json_get_str(r.json, "access_token"));
  assert_int_equal(dv_probe(&t, auth, code, sizeof(code)), 200);
  st_resp_free(&r);

  /* An unknown resource is invalid_resource; scope= is not how v1 names one. */
  token_call(&t, V1, NULL, GOOD "&resource=api%3A%2F%2Fnope", &r);
  assert_entra_error(&r, 400, "invalid_resource", 500011,
                     "The resource principal named api://nope was not found in the tenant named "
                     "csusim.onmicrosoft.com.");
  st_resp_free(&r);
  token_call(&t, V1, NULL, GOOD "&scope=" DV_SCOPE, &r);
  assert_entra_error(&r, 400, "invalid_request", 900144,
                     "The request body must contain the following parameter: 'resource'.");
  st_resp_free(&r);
  st_stop(&t);
}

static void test_client_errors(void **state) {
  struct st t;
  st_start(&t, 1, 0, NULL);
  struct st_resp r;
  token_call(&t, V2, NULL,
             "grant_type=client_credentials&client_id=csurelay&client_secret=wrong&scope=" DV_SCOPE,
             &r);
  assert_entra_error(&r, 401, "invalid_client", 7000215, "Invalid client secret is provided.");
  st_resp_free(&r);

  token_call(&t, V2, NULL, "grant_type=client_credentials&client_id=csurelay&scope=" DV_SCOPE, &r);
  assert_entra_error(&r, 401, "invalid_client", 7000218,
                     "The request body must contain the following parameter: 'client_assertion' "
                     "or 'client_secret'.");
  st_resp_free(&r);

  token_call(
      &t, V2, NULL,
      "grant_type=client_credentials&client_id=someone&client_secret=csusim-secret&scope=" DV_SCOPE,
      &r);
  assert_entra_error(&r, 400, "unauthorized_client", 700016,
                     "Application with identifier 'someone' was not found in the directory "
                     "'csusim.onmicrosoft.com'.");
  st_resp_free(&r);

  token_call(&t, V2, NULL, "grant_type=client_credentials&client_secret=csusim-secret", &r);
  assert_entra_error(&r, 400, "invalid_request", 900144,
                     "The request body must contain the following parameter: 'client_id'.");
  st_resp_free(&r);

  token_call(&t, V2, NULL, GOOD "&scope=" DV_SCOPE "&client_id=csurelay", &r);
  assert_entra_error(&r, 400, "invalid_request", 9000411,
                     "The request is not properly formatted. The parameter 'client_id' is "
                     "duplicated.");
  st_resp_free(&r);

  struct sim_entra_stats s;
  get_stats(&t, &s);
  assert_int_equal(s.issued, 0);
  assert_int_equal(s.refused, 5);
  st_stop(&t);
}

static void test_grant_and_scope_errors(void **state) {
  struct st t;
  st_start(&t, 1, 0, NULL);
  struct st_resp r;
  token_call(&t, V2, NULL,
             "grant_type=password&client_id=csurelay&client_secret=csusim-secret&scope=" DV_SCOPE,
             &r);
  assert_entra_error(&r, 400, "unsupported_grant_type", 70003,
                     "The app requested an unsupported grant type 'password'.");
  st_resp_free(&r);

  token_call(&t, V2, NULL, "client_id=csurelay&client_secret=csusim-secret&scope=" DV_SCOPE, &r);
  assert_entra_error(&r, 400, "invalid_request", 900144,
                     "The request body must contain the following parameter: 'grant_type'.");
  st_resp_free(&r);

  token_call(&t, V2, NULL, GOOD "&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default", &r);
  assert_entra_error(&r, 400, "invalid_scope", 70011,
                     "The provided value for the input parameter 'scope' is not valid. The scope "
                     "https://graph.microsoft.com/.default is not valid.");
  st_resp_free(&r);

  token_call(&t, V2, NULL, GOOD "&scope=api%3A%2F%2Fdataverse%2Fuser_impersonation", &r);
  assert_entra_error(&r, 400, "invalid_scope", 1002012,
                     "The provided value for scope api://dataverse/user_impersonation is not "
                     "valid. Client credential flows must have a scope value with /.default");
  st_resp_free(&r);

  token_call(&t, V2, NULL, GOOD "&scope=" DV_SCOPE "+" CV_SCOPE, &r);
  assert_entra_error(&r, 400, "invalid_scope", 700022,
                     "The provided value for the input parameter scope is not valid because it "
                     "contains more than one resource.");
  st_resp_free(&r);

  token_call(&t, V2, NULL, GOOD, &r);
  assert_entra_error(&r, 400, "invalid_request", 900144,
                     "The request body must contain the following parameter: 'scope'.");
  st_resp_free(&r);

  token_call(&t, V2, NULL, GOOD "&resource=api%3A%2F%2Fdataverse", &r);
  assert_entra_error(&r, 400, "invalid_request", 901002,
                     "The 'resource' request parameter is not supported.");
  st_resp_free(&r);

  st_call(&t, "GET", V2, NULL, NULL, 0, &r);
  assert_entra_error(&r, 400, "invalid_request", 900561,
                     "The endpoint only accepts POST, OPTIONS requests. Received a GET request.");
  st_resp_free(&r);

  /* The catch-all route leaves other paths a plain 404. */
  st_call(&t, "GET", "/nothing/here", NULL, NULL, 0, &r);
  assert_int_equal(r.status, 404);
  st_resp_free(&r);
  st_stop(&t);
}

static void test_basic_auth(void **state) {
  struct st t;
  st_start(&t, 1, 0, NULL);
  struct st_resp r;
  const char *good[] = {"Authorization: Basic Y3N1cmVsYXk6Y3N1c2ltLXNlY3JldA==", NULL};
  token_call(&t, V2, good, "grant_type=client_credentials&scope=" CV_SCOPE, &r);
  assert_int_equal(r.status, 200);
  assert_non_null(csr_json_get_str(r.json, "access_token"));
  st_resp_free(&r);

  const char *bad[] = {"Authorization: Basic Y3N1cmVsYXk6bm9wZQ==", NULL};
  token_call(&t, V2, bad, "grant_type=client_credentials&scope=" CV_SCOPE, &r);
  assert_entra_error(&r, 401, "invalid_client", 7000215, "Invalid client secret is provided.");
  st_resp_free(&r);

  const char *other[] = {"Authorization: Basic b3RoZXI6Y3N1c2ltLXNlY3JldA==", NULL};
  token_call(&t, V2, other, "grant_type=client_credentials&scope=" CV_SCOPE, &r);
  assert_int_equal(r.status, 400);
  assert_string_equal(csr_json_get_str(r.json, "error"), "unauthorized_client");
  st_resp_free(&r);
  st_stop(&t);

  /* Each half of the Basic pair is form-encoded first (RFC 6749 2.3.1): "s%3Ac+t" is "s:c t". */
  struct sim_opts o;
  sim_opts_default(&o);
  o.client_secret = "s:c t";
  st_start_opts(&t, &o);
  const char *encoded[] = {"Authorization: Basic Y3N1cmVsYXk6cyUzQWMrdA==", NULL};
  token_call(&t, V2, encoded, "grant_type=client_credentials&scope=" CV_SCOPE, &r);
  assert_int_equal(r.status, 200);
  st_resp_free(&r);
  token_call(&t, V2, NULL, GOOD "&scope=" CV_SCOPE, &r);
  assert_int_equal(r.status, 401);
  st_resp_free(&r);
  token_call(
      &t, V2, NULL,
      "grant_type=client_credentials&client_id=csurelay&client_secret=s%3Ac+t&scope=" CV_SCOPE, &r);
  assert_int_equal(r.status, 200);
  st_resp_free(&r);
  st_stop(&t);
}

/* ---------------------------------------------------------------------------------------------- */
/* Token checks */
/* ---------------------------------------------------------------------------------------------- */

static void test_audience_and_schemes(void **state) {
  struct st t;
  struct rx_http_server srv;
  st_start(&t, 1, 0, NULL);
  probe_start(&t, &srv);
  char auth[640], rid[96], code[32];

  /* Dataverse takes its own token as Bearer only. */
  assert_int_equal(dv_probe(&t, st_auth(&t, SIM_AUD_DATAVERSE), code, sizeof(code)), 200);
  assert_int_equal(dv_probe(&t, st_auth(&t, SIM_AUD_COMMERCE), code, sizeof(code)), 401);
  assert_string_equal(code, "0x80072560");
  snprintf(auth, sizeof(auth), "Authorization: id_token %s", st_token(&t, SIM_AUD_DATAVERSE));
  assert_int_equal(dv_probe(&t, auth, code, sizeof(code)), 401);
  assert_string_equal(code, "0x8004a100");
  assert_int_equal(dv_probe(&t, NULL, code, sizeof(code)), 401);
  assert_string_equal(code, "0x8004a100");

  /* The CSU takes Bearer and id_token (any case), and only its own audience. */
  assert_int_equal(probe(&t, &srv, "commerce", st_auth(&t, SIM_AUD_COMMERCE), rid, sizeof(rid)),
                   200);
  snprintf(auth, sizeof(auth), "authorization: ID_TOKEN %s", st_token(&t, SIM_AUD_COMMERCE));
  assert_int_equal(probe(&t, &srv, "commerce", auth, rid, sizeof(rid)), 200);
  assert_int_equal(probe(&t, &srv, "commerce", st_auth(&t, SIM_AUD_DATAVERSE), rid, sizeof(rid)),
                   401);
  assert_string_equal(rid, "Microsoft_Dynamics_Commerce_Runtime_InvalidAudience");
  assert_int_equal(probe(&t, &srv, "commerce", NULL, rid, sizeof(rid)), 401);
  assert_string_equal(rid, "Microsoft_Dynamics_Commerce_Runtime_AuthenticationFailed");

  struct sim_entra_stats s;
  get_stats(&t, &s);
  assert_int_equal(s.accepted, 3);
  assert_int_equal(s.rejected, 5);
  assert_int_equal(s.rejected_audience, 2);
  assert_int_equal(s.rejected_missing, 3);
  rx_http_server_close(&srv, NULL);
  st_stop(&t);
}

static void test_dataverse_401_shape(void **state) {
  struct st t;
  st_start(&t, 1, 0, NULL);
  struct st_raw x;
  char req[512], hdr[256];
  snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", DV_GET);
  st_raw_call(&t, t.sim.server.port, req, &x);
  assert_int_equal(st_raw_status(&x), 401);
  st_raw_header(&x, "WWW-Authenticate", hdr, sizeof(hdr));
  assert_memory_equal(hdr, "Bearer authorization_uri=", 25);
  assert_non_null(strstr(hdr, "resource_id=api://dataverse/"));
  assert_non_null(strstr(x.resp,
                         "{\"error\":{\"code\":\"0x8004a100\",\"message\":\"InvalidAuthTicket: "
                         "the request carries no Bearer token.\"}}"));
  st_stop(&t);
}

static void test_forged_tokens(void **state) {
  struct st t;
  st_start(&t, 1, 0, NULL);
  char tok[512], auth[640], code[32];
  snprintf(tok, sizeof(tok), "%s", st_token(&t, SIM_AUD_DATAVERSE));
  char *payload = strchr(tok, '.') + 1;
  char *sig = strrchr(tok, '.') + 1;
  /* One character of the payload changed, then one of the signature, then garbage. */
  payload[5] = payload[5] == 'A' ? 'B' : 'A';
  snprintf(auth, sizeof(auth), "Authorization: Bearer %s", tok);
  assert_int_equal(dv_probe(&t, auth, code, sizeof(code)), 401);
  assert_string_equal(code, "0x8004a100");
  snprintf(tok, sizeof(tok), "%s", st_token(&t, SIM_AUD_DATAVERSE));
  sig[3] = sig[3] == 'A' ? 'B' : 'A';
  snprintf(auth, sizeof(auth), "Authorization: Bearer %s", tok);
  assert_int_equal(dv_probe(&t, auth, code, sizeof(code)), 401);
  assert_int_equal(dv_probe(&t, "Authorization: Bearer abc.def.ghi", code, sizeof(code)), 401);
  assert_int_equal(dv_probe(&t, "Authorization: Bearer ", code, sizeof(code)), 401);
  struct sim_entra_stats s;
  get_stats(&t, &s);
  assert_int_equal(s.rejected_invalid, 3);
  assert_int_equal(s.rejected_missing, 1);
  st_stop(&t);

  /* A token from a sim with another seed is not ours; the same seed verifies it again. */
  struct sim_opts o;
  sim_opts_default(&o);
  o.seed = 2;
  st_start_opts(&t, &o);
  snprintf(auth, sizeof(auth), "%s", st_auth(&t, SIM_AUD_DATAVERSE));
  st_stop(&t);
  st_start(&t, 1, 0, NULL);
  assert_int_equal(dv_probe(&t, auth, code, sizeof(code)), 401);
  assert_string_equal(code, "0x8004a100");
  st_stop(&t);
  st_start_opts(&t, &o);
  assert_int_equal(dv_probe(&t, auth, code, sizeof(code)), 200);
  st_stop(&t);
}

static void test_expiry_mid_run(void **state) {
  struct st t;
  st_start(&t, 1, 0, "tokens: {lifetime_s: 1}\n");
  struct st_resp r;
  char auth[640], code[32];
  token_call(&t, V2, NULL, GOOD "&scope=" DV_SCOPE, &r);
  assert_string_equal(csr_json_num_text(csr_json_get(r.json, "expires_in")), "1");
  snprintf(auth, sizeof(auth), "Authorization: Bearer %s",
           csr_json_get_str(r.json, "access_token"));
  st_resp_free(&r);
  assert_int_equal(dv_probe(&t, auth, code, sizeof(code)), 200);
  st_run_ms(&t, 1100);
  assert_int_equal(dv_probe(&t, auth, code, sizeof(code)), 401);
  assert_string_equal(code, "0x8004a101");
  /* A new token works again. */
  fresh_token(&t, SIM_AUD_DATAVERSE);
  assert_int_equal(dv_probe(&t, st_auth(&t, SIM_AUD_DATAVERSE), code, sizeof(code)), 200);
  struct sim_entra_stats s;
  get_stats(&t, &s);
  assert_int_equal(s.rejected_expired, 1);
  assert_int_equal(s.issued, 2);
  st_stop(&t);
}

static void test_revocation_mid_run(void **state) {
  struct st t;
  struct rx_http_server srv;
  st_start(&t, 1, 0, "tokens: {revoke_at_s: 1}\n");
  probe_start(&t, &srv);
  char dv_auth[640], cv_auth[640], code[32], rid[96];
  snprintf(dv_auth, sizeof(dv_auth), "%s", st_auth(&t, SIM_AUD_DATAVERSE));
  snprintf(cv_auth, sizeof(cv_auth), "%s", st_auth(&t, SIM_AUD_COMMERCE));
  assert_int_equal(dv_probe(&t, dv_auth, code, sizeof(code)), 200);
  assert_int_equal(probe(&t, &srv, "commerce", cv_auth, rid, sizeof(rid)), 200);
  st_run_ms(&t, 1100);
  /* Every token issued before the moment dies at it, whatever its lifetime. */
  assert_int_equal(dv_probe(&t, dv_auth, code, sizeof(code)), 401);
  assert_string_equal(code, "0x8004a101");
  assert_int_equal(probe(&t, &srv, "commerce", cv_auth, rid, sizeof(rid)), 401);
  assert_string_equal(rid, "Microsoft_Dynamics_Commerce_Runtime_AuthenticationFailed");
  /* Tokens issued after it live. */
  fresh_token(&t, SIM_AUD_DATAVERSE);
  assert_int_equal(dv_probe(&t, st_auth(&t, SIM_AUD_DATAVERSE), code, sizeof(code)), 200);
  struct sim_entra_stats s;
  get_stats(&t, &s);
  assert_int_equal(s.rejected_revoked, 2);
  rx_http_server_close(&srv, NULL);
  st_stop(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_v2_success),
      cmocka_unit_test(test_v1_success_with_string_numbers),
      cmocka_unit_test(test_client_errors),
      cmocka_unit_test(test_grant_and_scope_errors),
      cmocka_unit_test(test_basic_auth),
      cmocka_unit_test(test_audience_and_schemes),
      cmocka_unit_test(test_dataverse_401_shape),
      cmocka_unit_test(test_forged_tokens),
      cmocka_unit_test(test_expiry_mid_run),
      cmocka_unit_test(test_revocation_mid_run),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
