/* Dataverse: contact lookup by email (URL-decoding, doubled quotes, any case), create with and
 * without return=representation, the checkout trigger's parameter checks (commerce-event-sample.md
 * 6.1), unknown actions and contacts, and the service protection limits (requests per window,
 * concurrent requests) with their exact 429 answers. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "simtest.h"

#define DV      "/dataverse/api/data/v9.2/"
#define TRIGGER DV SIM_DEFAULT_TRIGGER
#define LOOKUP  DV "contacts?$select=contactid&$filter=emailaddress1%20eq%20"

/* ---------------------------------------------------------------------------------------------- */
/* Helpers */
/* ---------------------------------------------------------------------------------------------- */

/* A Dataverse call as the relay makes it: token, OData headers, and one optional extra header. */
static void dv_call(struct st *t, const char *method, const char *path, const char *body,
                    const char *extra, struct st_resp *r) {
  const char *headers[] = {st_auth(t, SIM_AUD_DATAVERSE),
                           "OData-MaxVersion: 4.0",
                           "OData-Version: 4.0",
                           "Accept: application/json",
                           extra,
                           NULL};
  st_call(t, method, path, headers, body, 0, r);
}

static const char *err_code(const struct st_resp *r) {
  return csr_json_get_str(csr_json_get(r->json, "error"), "code");
}

static const char *err_msg(const struct st_resp *r) {
  return csr_json_get_str(csr_json_get(r->json, "error"), "message");
}

static void assert_dv_error(struct st_resp *r, long status, const char *code, const char *msg) {
  assert_int_equal(r->status, status);
  assert_non_null(r->json);
  assert_string_equal(err_code(r), code);
  if (msg != NULL)
    assert_string_equal(err_msg(r), msg);
}

/* A call that must be refused: dv_call without an extra header, then assert_dv_error. */
static void expect_dv_error(struct st *t, const char *method, const char *path, const char *body,
                            long status, const char *code, const char *msg) {
  struct st_resp r;
  dv_call(t, method, path, body, NULL, &r);
  assert_dv_error(&r, status, code, msg);
  st_resp_free(&r);
}

/* POST contacts (no Prefer): the new id from OData-EntityId. */
static void create_contact(struct st *t, const char *email, char id[40]) {
  char body[256];
  struct st_resp r;
  snprintf(body, sizeof(body),
           "{\"firstname\":\"Alex\",\"lastname\":\"Johnson\",\"emailaddress1\":\"%s\","
           "\"msdyn_contactnumber\":\"004011\"}",
           email);
  dv_call(t, "POST", DV "contacts", body, NULL, &r);
  assert_int_equal(r.status, 204);
  assert_non_null(r.odata_entity_id);
  const char *open = strrchr(r.odata_entity_id, '(');
  assert_non_null(open);
  snprintf(id, 40, "%.36s", open + 1);
  st_resp_free(&r);
}

/* GET the lookup for a filter literal (already URL-encoded); returns how many contacts came back
 * and copies the first contactid into `id` (may be NULL). */
static size_t lookup(struct st *t, const char *literal, const char *tail, char *id) {
  char path[512];
  struct st_resp r;
  snprintf(path, sizeof(path), "%s'%s'%s", LOOKUP, literal, tail ? tail : "");
  dv_call(t, "GET", path, NULL, NULL, &r);
  assert_int_equal(r.status, 200);
  yajl_val value = csr_json_get(r.json, "value");
  size_t n = csr_json_len(value);
  if (id != NULL && n > 0)
    snprintf(id, 40, "%s", csr_json_get_str(csr_json_at(value, 0), "contactid"));
  st_resp_free(&r);
  return n;
}

/* The checkout trigger's body as the relay sends it, with `key` set to the raw JSON `value` (or
 * dropped when `value` is NULL; appended when not a default member). */
static void trigger_body(char *buf, size_t cap, const char *cid, const char *key,
                         const char *value) {
  const char *members[][2] = {
      {"msdynmkt_amountpaid", "184.2200000000000000"},
      {"msdynmkt_bindingid", "\"5637145326-000123\""},
      {"msdynmkt_channelreferenceid", "\"\""},
      {"msdynmkt_createddatetime", "\"2024-05-15T09:02:08.847Z\""},
      {"msdynmkt_currencycode", "\"USD\""},
      {"msdynmkt_name", "\"Football Stadium\""},
      {"msdynmkt_profileid", NULL},
      {"msdynmkt_receiptemail", "\"alex@contoso.com\""},
      {"msdynmkt_salesid", "\"HOUSTON-HOUSTON-2-16\""},
      {"msdynmkt_signalingestiontimestamp", "\"2024-05-15T09:02:10.123Z\""},
      {"msdynmkt_signaltimestamp", "\"2024-05-15T09:02:10Z\""},
      {"msdynmkt_signaluserauthid", NULL},
  };
  char quoted[48];
  snprintf(quoted, sizeof(quoted), "\"%s\"", cid);
  size_t n = (size_t)snprintf(buf, cap, "{");
  bool found = false;
  for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++) {
    const char *v = members[i][1] ? members[i][1] : quoted;
    if (key != NULL && strcmp(key, members[i][0]) == 0) {
      found = true;
      if (value == NULL)
        continue;
      v = value;
    }
    n += (size_t)snprintf(buf + n, cap - n, "%s\"%s\":%s", n > 1 ? "," : "", members[i][0], v);
  }
  if (key != NULL && !found)
    n += (size_t)snprintf(buf + n, cap - n, ",\"%s\":%s", key, value);
  snprintf(buf + n, cap - n, "}");
}

static void call_trigger(struct st *t, const char *cid, const char *key, const char *value,
                         struct st_resp *r) {
  char body[2048];
  trigger_body(body, sizeof(body), cid, key, value);
  dv_call(t, "POST", TRIGGER, body, NULL, r);
}

/* A trigger call that must be accepted: 204, no body. */
static void expect_trigger_ok(struct st *t, const char *cid, const char *key, const char *value) {
  struct st_resp r;
  call_trigger(t, cid, key, value, &r);
  assert_int_equal(r.status, 204);
  assert_int_equal(r.len, 0);
  st_resp_free(&r);
}

static void stats(struct st *t, struct sim_dataverse_stats *s) {
  sim_dataverse_stats(t->sim.dv, s);
}

/* ---------------------------------------------------------------------------------------------- */
/* Contacts */
/* ---------------------------------------------------------------------------------------------- */

static void test_lookup(void **state) {
  struct st t;
  st_start(&t, 1, 0, NULL);
  char alex[40], tag[40], quote[40], got[40];
  create_contact(&t, "alex@contoso.com", alex);
  create_contact(&t, "alex+tag@contoso.com", tag);
  create_contact(&t, "o'bryan@contoso.com", quote);

  struct st_resp r;
  dv_call(&t, "GET", LOOKUP "'alex%40contoso.com'&$top=1", NULL, NULL, &r);
  assert_int_equal(r.status, 200);
  char ctx[256];
  snprintf(ctx, sizeof(ctx), "%s" DV "$metadata#contacts(contactid)", t.sim.base_url);
  assert_string_equal(csr_json_get_str(r.json, "@odata.context"), ctx);
  yajl_val first = csr_json_at(csr_json_get(r.json, "value"), 0);
  assert_int_equal(csr_json_len(csr_json_get(r.json, "value")), 1);
  assert_string_equal(csr_json_get_str(first, "contactid"), alex);
  assert_string_equal(csr_json_get_str(first, "@odata.etag"), "W/\"72201545\"");
  assert_int_equal(first->u.object.len, 2); /* $select=contactid: nothing else */
  st_resp_free(&r);

  /* Any case; '+' must come as %2B (a raw '+' is a space); quotes doubled; %20 or '+' as blanks. */
  assert_int_equal(lookup(&t, "ALEX%40Contoso.COM", NULL, got), 1);
  assert_string_equal(got, alex);
  assert_int_equal(lookup(&t, "alex%2Btag%40contoso.com", NULL, got), 1);
  assert_string_equal(got, tag);
  assert_int_equal(lookup(&t, "alex+tag%40contoso.com", NULL, NULL), 0);
  assert_int_equal(lookup(&t, "o''bryan%40contoso.com", NULL, got), 1);
  assert_string_equal(got, quote);
  assert_int_equal(lookup(&t, "nobody%40contoso.com", NULL, NULL), 0);
  dv_call(&t, "GET",
          DV "contacts?$select=contactid,emailaddress1&$filter=emailaddress1+eq+"
             "'alex%40contoso.com'",
          NULL, NULL, &r);
  assert_int_equal(r.status, 200);
  first = csr_json_at(csr_json_get(r.json, "value"), 0);
  assert_string_equal(csr_json_get_str(first, "emailaddress1"), "alex@contoso.com");
  snprintf(ctx, sizeof(ctx), "%s" DV "$metadata#contacts(contactid,emailaddress1)", t.sim.base_url);
  assert_string_equal(csr_json_get_str(r.json, "@odata.context"), ctx);
  st_resp_free(&r);

  /* Duplicates are allowed, as on a real org: $top=1 shows the first, the ledger counts both. */
  char dup[40];
  create_contact(&t, "Alex@Contoso.com", dup);
  assert_int_equal(lookup(&t, "alex%40contoso.com", NULL, NULL), 2);
  assert_int_equal(lookup(&t, "alex%40contoso.com", "&$top=1", got), 1);
  assert_string_equal(got, alex);
  struct sim_ledger_counts lc;
  sim_ledger_counts(t.sim.ledger, &lc);
  assert_int_equal(lc.contacts_created, 4);
  struct sim_dataverse_stats s;
  stats(&t, &s);
  assert_int_equal(s.contacts, 4);
  assert_int_equal(s.lookups, 9);
  st_stop(&t);
}

static void test_lookup_errors(void **state) {
  struct st t;
  st_start(&t, 1, 0, NULL);
  struct st_resp r;
  expect_dv_error(&t, "GET", DV "contacts?$select=contactid&$filter=lastname%20eq%20'x'", NULL, 400,
                  "0x80060888",
                  "csusim supports only $filter=emailaddress1 eq '<value>' on contacts, not "
                  "'lastname eq 'x''.");
  expect_dv_error(&t, "GET", DV "contacts?$filter=emailaddress1%20eq%20'unterminated", NULL, 400,
                  "0x80060888", NULL);
  expect_dv_error(&t, "GET", DV "contacts?$select=contactid", NULL, 400, "0x80060888", NULL);
  expect_dv_error(&t, "GET", LOOKUP "'a'&$select=shoesize", NULL, 400, "0x80060888",
                  "Could not find a property named 'shoesize' on type "
                  "'Microsoft.Dynamics.CRM.contact'.");
  expect_dv_error(&t, "GET", LOOKUP "'a'&$top=one", NULL, 400, "0x80060888",
                  "Invalid value 'one' for $top query option found. The $top query option "
                  "requires a non-negative integer value.");
  expect_dv_error(&t, "GET", LOOKUP "'a'&$orderby=fullname", NULL, 400, "0x80060888",
                  "The query parameter '$orderby' is not supported by csusim.");
  expect_dv_error(&t, "GET", DV "accounts", NULL, 404, "0x80060888",
                  "Resource not found for the segment 'accounts'.");

  /* No token: 401 before anything else. */
  st_call(&t, "GET", LOOKUP "'a'", NULL, NULL, 0, &r);
  assert_dv_error(&r, 401, "0x8004a100", NULL);
  st_resp_free(&r);
  st_stop(&t);
}

static void test_create_with_representation(void **state) {
  struct st t;
  st_start(&t, 1, 0, NULL);
  struct st_resp r;
  const char body[] = "{\"firstname\":\"Alex\",\"lastname\":\"Johnson\",\"emailaddress1\":"
                      "\"alex@contoso.com\",\"msdyn_contactnumber\":\"004011\",\"new_extra\":7}";
  dv_call(&t, "POST", DV "contacts", body, "Prefer: return=representation", &r);
  assert_int_equal(r.status, 201);
  assert_null(r.odata_entity_id);
  char ctx[256];
  snprintf(ctx, sizeof(ctx), "%s" DV "$metadata#contacts/$entity", t.sim.base_url);
  assert_string_equal(csr_json_get_str(r.json, "@odata.context"), ctx);
  assert_string_equal(csr_json_get_str(r.json, "@odata.etag"), "W/\"72201545\"");
  const char *id = csr_json_get_str(r.json, "contactid");
  assert_non_null(id);
  assert_int_equal(strlen(id), 36);
  assert_string_equal(csr_json_get_str(r.json, "firstname"), "Alex");
  assert_string_equal(csr_json_get_str(r.json, "lastname"), "Johnson");
  assert_string_equal(csr_json_get_str(r.json, "fullname"), "Alex Johnson");
  assert_string_equal(csr_json_get_str(r.json, "emailaddress1"), "alex@contoso.com");
  assert_string_equal(csr_json_get_str(r.json, "msdyn_contactnumber"), "004011");
  assert_true(YAJL_IS_NULL(csr_json_get(r.json, "mobilephone")));

  /* The same contact by key. */
  char path[128];
  struct st_resp g;
  snprintf(path, sizeof(path), DV "contacts(%s)?$select=fullname", id);
  dv_call(&t, "GET", path, NULL, NULL, &g);
  assert_int_equal(g.status, 200);
  assert_string_equal(csr_json_get_str(g.json, "fullname"), "Alex Johnson");
  st_resp_free(&g);
  st_resp_free(&r);

  /* $select keeps the answer small; the header says the preference was applied. */
  char req[1024], hdr[128];
  const char *small = "{\"emailaddress1\":\"b@c.d.e\"}";
  struct st_raw x;
  snprintf(req, sizeof(req),
           "POST " DV "contacts?$select=contactid HTTP/1.1\r\nHost: x\r\n%s\r\n"
           "Prefer: odata.include-annotations=\"*\",return=representation\r\n"
           "Content-Type: application/json; charset=utf-8\r\nContent-Length: %zu\r\n"
           "Connection: close\r\n\r\n%s",
           st_auth(&t, SIM_AUD_DATAVERSE), strlen(small), small);
  st_raw_call(&t, t.sim.server.port, req, &x);
  assert_memory_equal(x.resp, "HTTP/1.1 201", 12);
  assert_string_equal(st_raw_header(&x, "Preference-Applied", hdr, sizeof(hdr)),
                      "return=representation");
  assert_string_equal(st_raw_header(&x, "OData-Version", hdr, sizeof(hdr)), "4.0");
  assert_string_equal(st_raw_header(&x, "OData-EntityId", hdr, sizeof(hdr)), "");
  const char *json = strstr(x.resp, "\r\n\r\n") + 4;
  yajl_val v = csr_json_parse(json, strlen(json), NULL, 0);
  assert_int_equal(v->u.object.len, 3);
  assert_non_null(strstr(csr_json_get_str(v, "@odata.context"), "#contacts(contactid)/$entity"));
  csr_json_free(v);
  st_stop(&t);
}

static void test_create_plain_and_errors(void **state) {
  struct st t;
  st_start(&t, 1, 0, NULL);
  struct st_resp r;
  dv_call(&t, "POST", DV "contacts", "{\"firstname\":\"Sam\"}", NULL, &r);
  assert_int_equal(r.status, 204);
  assert_int_equal(r.len, 0);
  char prefix[160];
  snprintf(prefix, sizeof(prefix), "%s" DV "contacts(", t.sim.base_url);
  assert_memory_equal(r.odata_entity_id, prefix, strlen(prefix));
  const char *guid = r.odata_entity_id + strlen(prefix);
  assert_int_equal(strlen(guid), 37);
  assert_int_equal(guid[36], ')');
  assert_int_equal(guid[14], '4'); /* a version-4 shape */
  char first[40];
  snprintf(first, sizeof(first), "%.36s", guid);
  st_resp_free(&r);

  expect_dv_error(&t, "POST", DV "contacts", "{\"firstname\":5}", 400, "0x80048d19",
                  "Error identified in Payload provided by the user for Entity :'contacts' ----> "
                  "InnerException : Microsoft.OData.ODataException: Cannot convert the value of "
                  "property 'firstname' to the expected type 'Edm.String'.");
  dv_call(&t, "POST", DV "contacts", "{\"firstname\":", NULL, &r);
  assert_dv_error(&r, 400, "0x80048d19", NULL);
  assert_memory_equal(err_msg(&r), "Error identified in Payload", 27);
  st_resp_free(&r);
  expect_dv_error(&t, "POST", DV "contacts", "[1]", 400, "0x80048d19", NULL);
  char body[128];
  snprintf(body, sizeof(body), "{\"contactid\":\"%s\"}", first);
  expect_dv_error(&t, "POST", DV "contacts", body, 412, "0x80040237",
                  "A record with matching key values already exists.");
  expect_dv_error(&t, "POST", DV "contacts", NULL, 415, "0x80048d19", NULL);
  expect_dv_error(&t, "DELETE", DV "contacts", NULL, 405, "0x80060888",
                  "The requested resource does not support http method 'DELETE'.");
  st_stop(&t);

  /* GUIDs come from the seed: the same seed draws the same first id. */
  st_start(&t, 1, 0, NULL);
  dv_call(&t, "POST", DV "contacts", "{\"firstname\":\"Sam\"}", NULL, &r);
  assert_non_null(strstr(r.odata_entity_id, first));
  st_resp_free(&r);
  st_stop(&t);
}

/* ---------------------------------------------------------------------------------------------- */
/* The custom trigger */
/* ---------------------------------------------------------------------------------------------- */

static void test_trigger_success(void **state) {
  struct st t;
  st_start(&t, 1, 0, NULL);
  char cid[40];
  struct st_resp r;
  create_contact(&t, "alex@contoso.com", cid);
  expect_trigger_ok(&t, cid, NULL, NULL);
  /* The optional bindingid may be absent or null; strings may be empty; zones may be offsets;
   * the namespace-qualified action name works too. */
  expect_trigger_ok(&t, cid, "msdynmkt_bindingid", NULL);
  expect_trigger_ok(&t, cid, "msdynmkt_bindingid", "null");
  expect_trigger_ok(&t, cid, "msdynmkt_receiptemail", "\"\"");
  expect_trigger_ok(&t, cid, "msdynmkt_signaltimestamp", "\"2024-05-15T11:02:10.5+02:00\"");
  char body[2048];
  trigger_body(body, sizeof(body), cid, NULL, NULL);
  dv_call(&t, "POST", DV "Microsoft.Dynamics.CRM." SIM_DEFAULT_TRIGGER, body, NULL, &r);
  assert_int_equal(r.status, 204);
  st_resp_free(&r);

  struct sim_ledger_sink_counts k;
  assert_int_equal(sim_ledger_sink_counts(t.sim.ledger, "trigger", &k), 0);
  assert_int_equal(k.received, 6);
  struct sim_dataverse_stats s;
  stats(&t, &s);
  assert_int_equal(s.triggers_accepted, 6);
  assert_int_equal(s.triggers_rejected, 0);
  st_stop(&t);
}

/* One rejected variation of the default body: status, code and exact message. */
struct rejection {
  const char *key, *value, *code, *message;
};

static const struct rejection rejections[] = {
    {"msdynmkt_salesid", NULL, "0x80040203",
     "The required parameter 'msdynmkt_salesid' is missing from the request to "
     "'" SIM_DEFAULT_TRIGGER "'."},
    {"msdynmkt_signaltimestamp", NULL, "0x80040203",
     "The required parameter 'msdynmkt_signaltimestamp' is missing from the request to "
     "'" SIM_DEFAULT_TRIGGER "'."},
    {"msdynmkt_name", "null", "0x80040203",
     "The required parameter 'msdynmkt_name' cannot be null."},
    {"msdynmkt_amountpaid", "\"184.22\"", "0x80048d19",
     "Cannot convert the value of parameter 'msdynmkt_amountpaid' to the expected type "
     "'Edm.Decimal'."},
    {"msdynmkt_amountpaid", "null", "0x80040203",
     "The required parameter 'msdynmkt_amountpaid' cannot be null."},
    {"msdynmkt_signaltimestamp", "\"15/05/2024 09:02\"", "0x80048d19",
     "Cannot convert the value of parameter 'msdynmkt_signaltimestamp' to the expected type "
     "'Edm.DateTimeOffset'."},
    {"msdynmkt_signalingestiontimestamp", "\"2024-05-15T09:02:10\"", "0x80048d19",
     "Cannot convert the value of parameter 'msdynmkt_signalingestiontimestamp' to the "
     "expected type 'Edm.DateTimeOffset'."},
    {"msdynmkt_signaltimestamp", "1715763730", "0x80048d19",
     "Cannot convert the value of parameter 'msdynmkt_signaltimestamp' to the expected type "
     "'Edm.DateTimeOffset'."},
    {"msdynmkt_currencycode", "840", "0x80048d19",
     "Cannot convert the value of parameter 'msdynmkt_currencycode' to the expected type "
     "'Edm.String'."},
    {"msdynmkt_extra", "\"x\"", "0x80048d19",
     "The parameter 'msdynmkt_extra' in the request payload is not a valid parameter for the "
     "operation '" SIM_DEFAULT_TRIGGER "'."},
    {"msdynmkt_signaluserauthid", "\"00000000-0000-4000-8000-000000000000\"", "0x80040217",
     "contact With Id = 00000000-0000-4000-8000-000000000000 Does Not Exist"},
    {"msdynmkt_profileid", "\"not-a-guid\"", "0x80040217",
     "contact With Id = not-a-guid Does Not Exist"},
};

static void test_trigger_rejections(void **state) {
  struct st t;
  st_start(&t, 1, 0, NULL);
  char cid[40];
  create_contact(&t, "alex@contoso.com", cid);
  struct st_resp r;
  for (size_t i = 0; i < sizeof(rejections) / sizeof(rejections[0]); i++) {
    const struct rejection *c = &rejections[i];
    call_trigger(&t, cid, c->key, c->value, &r);
    assert_dv_error(&r, 400, c->code, c->message);
    st_resp_free(&r);
  }

  /* A repeated member, 30 members, malformed JSON, no JSON at all. */
  char body[4096];
  trigger_body(body, sizeof(body), cid, "msdynmkt_name", "\"A\",\"msdynmkt_name\":\"B\"");
  expect_dv_error(&t, "POST", TRIGGER, body, 400, "0x80048d19",
                  "Multiple parameters with the name 'msdynmkt_name' were found in the request "
                  "payload.");
  char extras[1024] = "1";
  for (int i = 0; i < 17; i++)
    snprintf(extras + strlen(extras), sizeof(extras) - strlen(extras), ",\"x%d\":1", i);
  trigger_body(body, sizeof(body), cid, "x_first", extras);
  expect_dv_error(&t, "POST", TRIGGER, body, 400, "0x80040203",
                  "The request carries 30 attributes; a custom trigger takes at most 29.");
  dv_call(&t, "POST", TRIGGER, "{\"msdynmkt_name\":", NULL, &r);
  assert_dv_error(&r, 400, "0x80048d19", NULL);
  assert_non_null(strstr(err_msg(&r), "Entity :'" SIM_DEFAULT_TRIGGER "'"));
  st_resp_free(&r);
  expect_dv_error(&t, "POST", TRIGGER, NULL, 415, "0x80048d19", NULL);

  struct sim_dataverse_stats s;
  stats(&t, &s);
  assert_int_equal(s.triggers_accepted, 0);
  assert_int_equal(s.triggers_rejected, 16);
  struct sim_ledger_sink_counts k;
  sim_ledger_sink_counts(t.sim.ledger, "trigger", &k);
  assert_int_equal(k.received, 0); /* nothing refused reaches the ledger */
  st_stop(&t);
}

static void test_unknown_trigger_and_contacts_off(void **state) {
  struct st t;
  st_start(&t, 1, 0, "dataverse: {require_known_contact: false}\n");
  expect_dv_error(&t, "POST", DV "msdynmkt_nosuchtrigger", "{}", 404, "0x80060888",
                  "Resource not found for the segment 'msdynmkt_nosuchtrigger'.");
  /* With the contact check off, any id passes. */
  expect_trigger_ok(&t, "00000000-0000-4000-8000-000000000000", NULL, NULL);
  st_stop(&t);
}

static void test_registered_trigger(void **state) {
  struct st t;
  st_start(&t, 1, 0, "dataverse: {require_known_contact: false}\n");
  static const struct sim_trigger_param params[] = {
      {"new_count", SIM_PT_INTEGER, false},
      {"new_flag", SIM_PT_BOOLEAN, false},
      {"new_ref", SIM_PT_GUID, true},
      {"new_tags", SIM_PT_STRINGARRAY, true},
  };
  assert_int_equal(sim_dataverse_register_trigger(t.sim.dv, "new_mytrigger", params, 4), 0);
  struct sim_trigger_param many[30];
  for (size_t i = 0; i < 30; i++)
    many[i] = (struct sim_trigger_param){"p", SIM_PT_STRING, true};
  assert_int_equal(sim_dataverse_register_trigger(t.sim.dv, "new_big", many, 30), -E2BIG);
  assert_int_equal(sim_dataverse_register_trigger(t.sim.dv, "", params, 1), -EINVAL);
  struct st_resp r;
  dv_call(&t, "POST", DV "new_mytrigger",
          "{\"new_count\":3,\"new_flag\":true,\"new_ref\":\"49B0BE2E-D01C-ED11-B83E-000D3A572421\","
          "\"new_tags\":[\"a\",\"b\"]}",
          NULL, &r);
  assert_int_equal(r.status, 204);
  st_resp_free(&r);
  const char *bad[][2] = {
      {"{\"new_count\":1.5,\"new_flag\":true}", "new_count' to the expected type 'Edm.Int32'."},
      {"{\"new_count\":3000000000,\"new_flag\":true}", "'Edm.Int32'."},
      {"{\"new_count\":1,\"new_flag\":\"true\"}", "'Edm.Boolean'."},
      {"{\"new_count\":1,\"new_flag\":false,\"new_ref\":\"x\"}", "'Edm.Guid'."},
      {"{\"new_count\":1,\"new_flag\":false,\"new_tags\":[1]}", "'Collection(Edm.String)'."},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    dv_call(&t, "POST", DV "new_mytrigger", bad[i][0], NULL, &r);
    assert_dv_error(&r, 400, "0x80048d19", NULL);
    const char *m = err_msg(&r);
    assert_string_equal(m + strlen(m) - strlen(bad[i][1]), bad[i][1]);
    st_resp_free(&r);
  }
  /* Registering a name again replaces its parameter list. */
  assert_int_equal(sim_dataverse_register_trigger(t.sim.dv, "new_mytrigger", params + 1, 1), 0);
  dv_call(&t, "POST", DV "new_mytrigger", "{\"new_flag\":false}", NULL, &r);
  assert_int_equal(r.status, 204);
  st_resp_free(&r);
  st_stop(&t);
}

/* ---------------------------------------------------------------------------------------------- */
/* Service protection limits */
/* ---------------------------------------------------------------------------------------------- */

static void test_request_limit(void **state) {
  struct st t;
  st_start(&t, 1, 0, "dataverse: {max_requests: 5, window_s: 300}\n");
  struct st_resp r;
  char cid[40];
  create_contact(&t, "a@b.c", cid);
  for (int i = 0; i < 4; i++)
    assert_int_equal(lookup(&t, "a%40b.c", NULL, NULL), 1);
  dv_call(&t, "GET", LOOKUP "'a%40b.c'", NULL, NULL, &r);
  assert_dv_error(&r, 429, "0x80072322",
                  "Number of requests exceeded the limit of 5 over time window of 300 seconds.");
  assert_int_equal(r.retry_after_ms, 300000);
  st_resp_free(&r);
  /* Pushing on makes the wait grow; every endpoint shares the window. */
  call_trigger(&t, cid, NULL, NULL, &r);
  assert_dv_error(&r, 429, "0x80072322", NULL);
  assert_int_equal(r.retry_after_ms, 301000);
  st_resp_free(&r);
  /* No token is still a 401, not a 429. */
  st_call(&t, "GET", LOOKUP "'a%40b.c'", NULL, NULL, 0, &r);
  assert_int_equal(r.status, 401);
  st_resp_free(&r);
  struct sim_dataverse_stats s;
  stats(&t, &s);
  assert_int_equal(s.throttled_requests, 2);
  st_stop(&t);

  /* The window slides: after it passes, requests are admitted again. */
  st_start(&t, 1, 0, "dataverse: {max_requests: 2, window_s: 1}\n");
  assert_int_equal(lookup(&t, "a%40b.c", NULL, NULL), 0);
  assert_int_equal(lookup(&t, "a%40b.c", NULL, NULL), 0);
  dv_call(&t, "GET", LOOKUP "'a%40b.c'", NULL, NULL, &r);
  assert_int_equal(r.status, 429);
  assert_int_equal(r.retry_after_ms, 1000);
  assert_string_equal(err_msg(&r),
                      "Number of requests exceeded the limit of 2 over time window of 1 seconds.");
  st_resp_free(&r);
  st_run_ms(&t, 1100);
  assert_int_equal(lookup(&t, "a%40b.c", NULL, NULL), 0);
  st_stop(&t);
}

struct pcall {
  struct rx_http_req req;
  int done;
};

static void on_pcall_done(struct rx_fut *fut) {
  RX_CONTAINER_OF(fut, struct pcall, req.fut)->done = 1;
}

/* `n` lookups at once; returns how many got 200 and checks every other one is the 429. */
static int parallel_lookups(struct st *t, int n, int *throttled) {
  struct pcall calls[8];
  char url[256];
  snprintf(url, sizeof(url), "%s%s'a%%40b.c'", t->sim.base_url, LOOKUP);
  assert_true(n <= 8);
  for (int i = 0; i < n; i++) {
    memset(&calls[i], 0, sizeof(calls[i]));
    rx_http_req_init(&calls[i].req);
    calls[i].req.url = url;
    assert_int_equal(rx_http_req_header(&calls[i].req, st_auth(t, SIM_AUD_DATAVERSE)), 0);
  }
  for (int i = 0; i < n; i++)
    assert_int_equal(rx_http_start(&t->http, &calls[i].req, on_pcall_done), 0);
  int ok = 0, pending = n;
  *throttled = 0;
  while (pending > 0) {
    uv_run(&t->uv, UV_RUN_ONCE);
    pending = 0;
    for (int i = 0; i < n; i++)
      pending += !calls[i].done;
  }
  for (int i = 0; i < n; i++) {
    struct rx_http_req *q = &calls[i].req;
    yajl_val v = csr_json_parse(q->resp_body, q->resp_len, NULL, 0);
    if (q->status == 200) {
      ok++;
    } else {
      assert_int_equal(q->status, 429);
      assert_int_equal(q->retry_after_ms, 1000);
      assert_string_equal(csr_json_get_str(csr_json_get(v, "error"), "code"), "0x80072326");
      assert_string_equal(csr_json_get_str(csr_json_get(v, "error"), "message"),
                          "Number of concurrent requests exceeded the limit of 2.");
      (*throttled)++;
    }
    csr_json_free(v);
    rx_http_req_cleanup(q);
  }
  return ok;
}

static void test_concurrency_limit(void **state) {
  struct st t;
  /* The latency holds each admitted request in flight for 300 ms, so five sent together overlap. */
  st_start(&t, 1, 0,
           "dataverse: {max_concurrent: 2}\n"
           "endpoints:\n"
           "  contacts_get: {latency_ms: 300}\n");
  st_token(&t, SIM_AUD_DATAVERSE);
  int throttled;
  assert_int_equal(parallel_lookups(&t, 5, &throttled), 2);
  assert_int_equal(throttled, 3);
  struct sim_dataverse_stats s;
  stats(&t, &s);
  assert_int_equal(s.inflight, 0);
  assert_int_equal(s.inflight_max, 2);
  assert_int_equal(s.throttled_concurrency, 3);
  /* Once they are answered the slots are free again. */
  assert_int_equal(parallel_lookups(&t, 2, &throttled), 2);
  st_stop(&t);
}

static void test_gate_answers_free_their_slot(void **state) {
  struct st t;
  st_start(&t, 1, 0,
           "dataverse: {max_concurrent: 1}\n"
           "endpoints:\n"
           "  contacts_get:\n"
           "    - {latency_ms: 100, error_rate: 1.0, errors: [503]}\n");
  st_token(&t, SIM_AUD_DATAVERSE);
  struct st_resp r;
  for (int i = 0; i < 3; i++) {
    dv_call(&t, "GET", LOOKUP "'a%40b.c'", NULL, NULL, &r);
    assert_int_equal(r.status, 503);
    st_resp_free(&r);
  }
  struct sim_dataverse_stats s;
  stats(&t, &s);
  assert_int_equal(s.inflight, 0);
  /* A held timeout is in flight until its client gives up and the gate's sweep lets it go. */
  st_call(&t, "POST", "/sim/faults", NULL, "endpoints:\n  contacts_get: {timeout_rate: 1.0}\n", 0,
          &r);
  assert_int_equal(r.status, 200);
  st_resp_free(&r);
  const char *headers[] = {st_auth(&t, SIM_AUD_DATAVERSE), NULL};
  st_call(&t, "GET", LOOKUP "'a%40b.c'", headers, NULL, 300, &r);
  assert_int_equal(r.result, UV_ETIMEDOUT);
  st_resp_free(&r);
  st_run_ms(&t, 700);
  stats(&t, &s);
  assert_int_equal(s.inflight, 0);
  st_call(&t, "POST", "/sim/faults", NULL, "{}", 0, &r);
  assert_int_equal(r.status, 200);
  st_resp_free(&r);
  assert_int_equal(lookup(&t, "a%40b.c", NULL, NULL), 0);
  stats(&t, &s);
  assert_int_equal(s.throttled_concurrency, 0);
  st_stop(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lookup),
      cmocka_unit_test(test_lookup_errors),
      cmocka_unit_test(test_create_with_representation),
      cmocka_unit_test(test_create_plain_and_errors),
      cmocka_unit_test(test_trigger_success),
      cmocka_unit_test(test_trigger_rejections),
      cmocka_unit_test(test_unknown_trigger_and_contacts_off),
      cmocka_unit_test(test_registered_trigger),
      cmocka_unit_test(test_request_limit),
      cmocka_unit_test(test_concurrency_limit),
      cmocka_unit_test(test_gate_answers_free_their_slot),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
