/* The config loader (src/config.c, src/config_yaml.c): the SPEC section 7 example parsed to the
 * last field, defaults, and one bad configuration per rule, each pinned to its line, key path and
 * message. Fixtures are under $CSR_TEST_DATA/config. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "csurelay/config.h"

/* Set for every test; must never show up in an error message. */
#define SECRET "s3cret-VALUE-never-printed"

static const char *data_path(const char *rel) {
  static char buf[4][512];
  static int next;
  const char *dir = getenv("CSR_TEST_DATA");
  char *out = buf[next++ % 4];
  snprintf(out, sizeof(buf[0]), "%s/config/%s", dir ? dir : "tests/data", rel);
  return out;
}

static struct csr_config *parse_ok(const char *yaml) {
  struct csr_config *cfg = NULL;
  struct csr_err err;
  char buf[1024];
  int rc = csr_config_parse("t.yaml", yaml, strlen(yaml), &cfg, &err);
  if (rc != 0) {
    print_error("unexpected error: %s\n", csr_err_format(&err, buf, sizeof(buf)));
    fail();
  }
  assert_non_null(cfg);
  return cfg;
}

struct bad {
  const char *name;
  const char *yaml;
  int line;
  const char *key;
  const char *msg; /* a fragment of the message */
};

static void check_bad(const struct bad *b) {
  struct csr_config *cfg = (struct csr_config *)&cfg;
  struct csr_err err;
  char buf[1024];
  int rc = csr_config_parse("t.yaml", b->yaml, strlen(b->yaml), &cfg, &err);
  csr_err_format(&err, buf, sizeof(buf));
  if (rc != CSR_ECONFIG || cfg != NULL || err.line != b->line || strcmp(err.key, b->key) != 0 ||
      strstr(err.msg, b->msg) == NULL || strcmp(err.file, "t.yaml") != 0) {
    print_error("case '%s': rc %d, got \"%s\"\n  want line %d, key '%s', message with '%s'\n",
                b->name, rc, buf, b->line, b->key, b->msg);
    if (rc == 0)
      csr_config_destroy(cfg);
    fail();
  }
  if (strstr(buf, SECRET) != NULL) {
    print_error("case '%s': the secret leaked into \"%s\"\n", b->name, buf);
    fail();
  }
}

#define RUN_BAD(cases)                                                                             \
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)                                    \
  check_bad(&cases[i])

/* clang-format off */
#define IDS                                          \
  "identities:\n"                          /* 1 */  \
  "  commerce:\n"                          /* 2 */  \
  "    tenant: contoso\n"                  /* 3 */  \
  "    client_id: c1\n"                    /* 4 */  \
  "    client_secret_env: CSR_T_SECRET\n"  /* 5 */  \
  "    scope: api://commerce/.default\n"   /* 6 */
#define CSU                                          \
  "csus:\n"                                /* 7 */  \
  "  - name: houston\n"                    /* 8 */  \
  "    url: https://houston.example.com\n" /* 9 */  \
  "    oun: \"128\"\n"                     /* 10 */ \
  "    identity: commerce\n"               /* 11 */ \
  "    event_types: [Checkout, AddCartLines]\n" /* 12 */
#define SINKS                                                                                      \
  "sinks:\n"                                                                          /* 13 */ \
  "  - {name: journeys, type: cij, dataverse_url: https://org.crm.dynamics.com,\n"   /* 14 */ \
  "     identity: commerce}\n"                                                        /* 15 */ \
  "  - {name: stores, type: mqtt, broker: tcp://127.0.0.1:1883, client_id: r1, topic: 't/{csu}'}\n" \
  "  - {name: audit, type: webhook, url: https://hooks.example.com/x}\n"              /* 17 */ \
  "routes:\n"                                                                         /* 18 */
/* clang-format on */

static int setup(void **state) {
  setenv("CSR_T_SECRET", SECRET, 1);
  setenv("CSR_T_EMPTY", "", 1);
  unsetenv("CSR_T_UNSET");
  setenv("CSU_CLIENT_SECRET", SECRET, 1);
  return 0;
}

static int teardown(void **state) {
  unsetenv("CSR_T_SECRET");
  unsetenv("CSR_T_EMPTY");
  unsetenv("CSU_CLIENT_SECRET");
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Good configurations                                                                            */
/* ---------------------------------------------------------------------------------------------- */

/* SPEC section 7's defaults of state, admin.listen, limits and retry. */
static void check_section_defaults(const struct csr_config *cfg) {
  assert_string_equal(cfg->state.dir, "./var");
  assert_int_equal(cfg->state.fsync, CSR_FSYNC_BATCH);
  assert_int_equal(cfg->state.fsync_interval_ms, 5);
  assert_string_equal(cfg->admin.listen.host, "127.0.0.1");
  assert_int_equal(cfg->admin.listen.port, 8686);
  assert_int_equal(cfg->limits.max_live_events, 20000);
  assert_int_equal(cfg->limits.memory_mb, 256);
  assert_int_equal(cfg->limits.http_timeout_ms, 10000);
  assert_int_equal(cfg->retry.base_ms, 1000);
  assert_int_equal(cfg->retry.cap_ms, 300000);
  assert_int_equal(cfg->retry.max_attempts, 10);
}

/* SPEC section 7's defaults of a csu's polling keys. */
static void check_csu_defaults(const struct csr_csu *csu) {
  assert_int_equal(csu->poll_interval_ms, 1000);
  assert_int_equal(csu->page_size, 250);
  assert_int_equal(csu->overlap_s, 10);
  assert_int_equal(csu->settle_ms, 2000);
  assert_int_equal(csu->sweep_s, 900);
  assert_int_equal(csu->sweep_every_s, 300);
  assert_true(csu->start_relative);
  assert_int_equal(csu->start_from_ms, -86400000LL);
}

static void test_good_full(void **state) {
  struct csr_config *cfg = NULL;
  struct csr_err err;
  char buf[1024];
  setenv("CSURELAY_ADMIN_TOKEN", "admin-token", 1);
  setenv("CSURELAY_INGRESS_TOKEN", "ingress-token", 1);
  int rc = csr_config_load(data_path("good_full.yaml"), &cfg, &err);
  unsetenv("CSURELAY_ADMIN_TOKEN");
  unsetenv("CSURELAY_INGRESS_TOKEN");
  if (rc != 0) {
    print_error("%s\n", csr_err_format(&err, buf, sizeof(buf)));
    fail();
  }
  assert_string_equal(cfg->path, data_path("good_full.yaml"));

  check_section_defaults(cfg);
  assert_string_equal(cfg->admin.token_env, "CSURELAY_ADMIN_TOKEN");
  assert_string_equal(cfg->admin.token, "admin-token");
  assert_string_equal(cfg->log.level, "info");

  assert_int_equal(cfg->n_identities, 2);
  struct csr_identity *commerce = csr_config_identity(cfg, "commerce");
  struct csr_identity *dataverse = csr_config_identity(cfg, "dataverse");
  assert_ptr_equal(commerce, &cfg->identities[0]);
  assert_ptr_equal(dataverse, &cfg->identities[1]);
  assert_string_equal(commerce->authority, "https://login.microsoftonline.com");
  assert_string_equal(commerce->tenant, "contoso.onmicrosoft.com");
  assert_string_equal(commerce->client_id, "11111111-2222-3333-4444-555555555555");
  assert_string_equal(commerce->scope, "api://commerce/.default");
  assert_string_equal(
      commerce->token_url,
      "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token");
  assert_string_equal(commerce->secret, SECRET);
  assert_string_equal(commerce->secret_source, "env CSU_CLIENT_SECRET");
  assert_string_equal(commerce->client_secret_env, "CSU_CLIENT_SECRET");
  assert_null(commerce->client_secret_file);
  assert_int_equal(commerce->line, 9);
  assert_string_equal(dataverse->authority, "https://login.microsoftonline.com"); /* default */
  assert_string_equal(
      dataverse->token_url,
      "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token");
  assert_string_equal(dataverse->secret, "dataverse-file-secret"); /* newline stripped */
  assert_string_equal(dataverse->client_secret_file, data_path("dataverse.secret"));
  char source[600];
  snprintf(source, sizeof(source), "file %s", data_path("dataverse.secret"));
  assert_string_equal(dataverse->secret_source, source);
  assert_string_equal(dataverse->scope, "https://org.crm.dynamics.com/.default");

  assert_int_equal(cfg->n_csus, 1);
  struct csr_csu *csu = csr_config_csu(cfg, "houston");
  assert_ptr_equal(csu, &cfg->csus[0]);
  assert_string_equal(csu->url, "https://houston.example.com/");
  assert_string_equal(csu->oun, "128");
  assert_string_equal(csu->identity_name, "commerce");
  assert_ptr_equal(csu->identity, commerce);
  assert_int_equal(csu->n_event_types, 2);
  assert_string_equal(csu->event_types[0], "Checkout");
  assert_string_equal(csu->event_types[1], "AddCartLines");
  check_csu_defaults(csu);
  assert_int_equal(csu->line, 21);

  assert_int_equal(cfg->n_sinks, 3);
  struct csr_sink_conf *journeys = csr_config_sink(cfg, "journeys");
  struct csr_sink_conf *stores = csr_config_sink(cfg, "stores");
  struct csr_sink_conf *audit = csr_config_sink(cfg, "audit");
  assert_ptr_equal(journeys, &cfg->sinks[0]);
  assert_ptr_equal(stores, &cfg->sinks[1]);
  assert_ptr_equal(audit, &cfg->sinks[2]);
  assert_int_equal(journeys->type, CSR_SINK_CIJ);
  assert_string_equal(journeys->dataverse_url, "https://org.crm.dynamics.com/");
  assert_string_equal(journeys->identity_name, "dataverse");
  assert_ptr_equal(journeys->identity, dataverse);
  assert_int_equal(journeys->max_in_flight, 16);
  assert_true(journeys->rate_per_s == 40.0);
  assert_int_equal(journeys->timeout_ms, 0);
  assert_int_equal(journeys->line, 34);
  assert_int_equal(stores->type, CSR_SINK_MQTT);
  assert_string_equal(stores->broker, "tcp://127.0.0.1:1883");
  assert_string_equal(stores->client_id, "csurelay-1");
  assert_string_equal(stores->topic, "commerce/{csu}/{channel}/{type}");
  assert_int_equal(stores->qos, 1);
  assert_int_equal(stores->max_in_flight, 1000);
  assert_true(stores->rate_per_s == 0.0);
  assert_int_equal(stores->keepalive_s, 60);
  assert_null(stores->username);
  assert_null(stores->password);
  assert_null(stores->identity);
  assert_int_equal(audit->type, CSR_SINK_WEBHOOK);
  assert_string_equal(audit->url, "https://hooks.example.com/commerce"); /* an endpoint: as is */
  assert_int_equal(audit->max_in_flight, 32);
  assert_null(audit->auth_header);

  assert_int_equal(cfg->n_routes, 2);
  struct csr_route *checkout = &cfg->routes[0], *cart = &cfg->routes[1];
  assert_string_equal(checkout->event_type, "Checkout");
  assert_int_equal(checkout->enrich, CSR_ENRICH_ORDER | CSR_ENRICH_CUSTOMER);
  assert_int_equal(checkout->n_deliver, 2);
  assert_string_equal(checkout->deliver[0].sink_name, "journeys");
  assert_ptr_equal(checkout->deliver[0].sink, journeys);
  assert_string_equal(checkout->deliver[0].trigger, "msdynmkt_csucheckouteventtrigger_144841371");
  assert_null(checkout->deliver[0].fields);
  assert_int_equal(checkout->deliver[0].n_fields, 0);
  assert_int_equal(checkout->deliver[0].line, 43);
  assert_ptr_equal(checkout->deliver[1].sink, stores);
  assert_null(checkout->deliver[1].trigger);
  assert_string_equal(cart->event_type, "AddCartLines");
  assert_int_equal(cart->enrich, CSR_ENRICH_CUSTOMER);
  assert_int_equal(cart->n_deliver, 1);
  assert_ptr_equal(cart->deliver[0].sink, stores);
  assert_int_equal(cart->line, 45);

  assert_true(cfg->ingress.present);
  assert_string_equal(cfg->ingress.listen.host, "127.0.0.1");
  assert_int_equal(cfg->ingress.listen.port, 8687);
  assert_string_equal(cfg->ingress.token_env, "CSURELAY_INGRESS_TOKEN");
  assert_string_equal(cfg->ingress.token, "ingress-token");
  assert_string_equal(cfg->ingress.csu_name, "houston");
  assert_ptr_equal(cfg->ingress.csu, csu);
  assert_int_equal(cfg->ingress.sync_wait_ms, 5000);

  assert_null(csr_config_sink(cfg, "nope"));
  assert_null(csr_config_csu(cfg, "nope"));
  assert_null(csr_config_identity(cfg, "nope"));
  csr_config_destroy(cfg);
}

static void test_good_full_without_tokens(void **state) {
  struct csr_config *cfg = NULL;
  struct csr_err err;
  assert_int_equal(csr_config_load(data_path("good_full.yaml"), &cfg, &err), 0);
  assert_null(cfg->admin.token);   /* unset: no auth, not an error */
  assert_null(cfg->ingress.token); /* unset, but the listener is on loopback */
  csr_config_destroy(cfg);
}

static void test_minimal_defaults(void **state) {
  struct csr_config *cfg = parse_ok("log: {level: warn}\n");
  assert_string_equal(cfg->path, "t.yaml");
  assert_string_equal(cfg->log.level, "warn");
  check_section_defaults(cfg);
  assert_null(cfg->admin.token_env);
  assert_null(cfg->admin.token);
  assert_int_equal(cfg->n_identities, 0);
  assert_int_equal(cfg->n_csus, 0);
  assert_int_equal(cfg->n_sinks, 0);
  assert_int_equal(cfg->n_routes, 0);
  assert_null(cfg->csus);
  assert_false(cfg->ingress.present);
  assert_null(cfg->ingress.listen.host);
  csr_config_destroy(cfg);

  /* Empty sections and lists read as "nothing here". */
  cfg = parse_ok("state:\ncsus: []\nsinks:\nlog: {}\n");
  assert_string_equal(cfg->state.dir, "./var");
  assert_string_equal(cfg->log.level, "info");
  assert_int_equal(cfg->n_csus, 0);
  csr_config_destroy(cfg);
}

static void test_element_defaults(void **state) {
  struct csr_config *cfg =
      parse_ok(IDS CSU SINKS "  - {event_type: Checkout, deliver: [{sink: audit}]}\n");
  struct csr_csu *csu = &cfg->csus[0];
  assert_string_equal(csu->url, "https://houston.example.com/"); /* '/' appended */
  check_csu_defaults(csu);
  assert_int_equal(csu->line, 8);
  struct csr_identity *id = &cfg->identities[0];
  assert_string_equal(id->authority, "https://login.microsoftonline.com");
  assert_string_equal(id->token_url, "https://login.microsoftonline.com/contoso/oauth2/v2.0/token");
  assert_int_equal(id->line, 2);
  struct csr_sink_conf *cij = &cfg->sinks[0], *mqtt = &cfg->sinks[1], *hook = &cfg->sinks[2];
  assert_string_equal(cij->dataverse_url, "https://org.crm.dynamics.com/");
  assert_int_equal(cij->max_in_flight, 16);
  assert_true(cij->rate_per_s == 40.0);
  assert_int_equal(mqtt->max_in_flight, 1000);
  assert_true(mqtt->rate_per_s == 0.0);
  assert_int_equal(mqtt->qos, 1);
  assert_int_equal(mqtt->keepalive_s, 60);
  assert_int_equal(hook->max_in_flight, 32);
  assert_true(hook->rate_per_s == 0.0);
  assert_int_equal(hook->timeout_ms, 0);
  assert_int_equal(cfg->routes[0].enrich, 0);
  assert_int_equal(cfg->routes[0].line, 19);
  csr_config_destroy(cfg);
}

static void test_token_url_slashes(void **state) {
  struct csr_config *cfg =
      parse_ok("identities:\n"
               "  a: {authority: 'http://127.0.0.1:9000/', tenant: /t1/,\n"
               "      client_id: c, client_secret_env: CSR_T_SECRET, scope: s}\n"
               "  b: {authority: 'https://login.example.com//', tenant: t2,\n"
               "      client_id: c, client_secret_env: CSR_T_SECRET, scope: s}\n");
  assert_string_equal(cfg->identities[0].token_url, "http://127.0.0.1:9000/t1/oauth2/v2.0/token");
  assert_string_equal(cfg->identities[0].authority, "http://127.0.0.1:9000/"); /* as written */
  assert_string_equal(cfg->identities[1].token_url,
                      "https://login.example.com/t2/oauth2/v2.0/token");
  csr_config_destroy(cfg);
}

static void test_sink_options(void **state) {
  setenv("CSR_T_HOOK_AUTH", "Bearer abc", 1);
  struct csr_config *cfg = parse_ok(
      IDS CSU
      "sinks:\n"
      "  - {name: j, type: cij, dataverse_url: 'http://127.0.0.1:9/org', identity: commerce,\n"
      "     max_in_flight: 52, rate_per_s: 2.5, timeout_ms: 3000}\n"
      "  - {name: m, type: mqtt, broker: 'ssl://b.example.com:8883', client_id: r1, qos: 2,\n"
      "     topic: '{csu}/{channel}/{type}/{dataarea}/{terminal}', username: relay,\n"
      "     password_file: '${CSR_TEST_DATA}/config/dataverse.secret', keepalive_s: 0}\n"
      "  - {name: m2, type: mqtt, broker: 'mqtts://b', client_id: r2, topic: x, qos: 0,\n"
      "     password_env: CSR_T_SECRET}\n"
      "  - {name: w, type: webhook, url: 'https://h.example.com/in?code=1', max_in_flight: 5,\n"
      "     auth_header_env: CSR_T_HOOK_AUTH}\n"
      "routes:\n"
      "  - event_type: Checkout\n"
      "    deliver:\n"
      "      - sink: j\n"
      "        trigger: msdynmkt_t1\n"
      "        fields: {msdynmkt_amount: OrderDetails.AmountPaid, msdynmkt_when: $event_time,\n"
      "                 msdynmkt_profileid: $contact_id, msdynmkt_email: CustomerDetails.Email}\n"
      "      - {sink: w}\n");
  unsetenv("CSR_T_HOOK_AUTH");
  struct csr_sink_conf *j = &cfg->sinks[0], *m = &cfg->sinks[1], *m2 = &cfg->sinks[2];
  struct csr_sink_conf *w = &cfg->sinks[3];
  assert_string_equal(j->dataverse_url, "http://127.0.0.1:9/org/");
  assert_ptr_equal(j->identity, &cfg->identities[0]);
  assert_int_equal(j->max_in_flight, 52);
  assert_true(j->rate_per_s == 2.5);
  assert_int_equal(j->timeout_ms, 3000);
  assert_int_equal(m->qos, 2);
  assert_string_equal(m->username, "relay");
  assert_string_equal(m->password, "dataverse-file-secret");
  assert_int_equal(m->keepalive_s, 0);
  assert_string_equal(m2->password, SECRET);
  assert_int_equal(m2->qos, 0);
  assert_string_equal(w->url, "https://h.example.com/in?code=1");
  assert_int_equal(w->max_in_flight, 5);
  assert_string_equal(w->auth_header, "Bearer abc");
  struct csr_delivery_conf *d = &cfg->routes[0].deliver[0];
  assert_int_equal(d->n_fields, 4);
  assert_string_equal(d->fields[0].target, "msdynmkt_amount");
  assert_string_equal(d->fields[0].source, "OrderDetails.AmountPaid");
  assert_string_equal(d->fields[1].source, "$event_time");
  assert_string_equal(d->fields[2].source, "$contact_id");
  assert_string_equal(d->fields[3].target, "msdynmkt_email");
  assert_int_equal(d->line, 26);
  csr_config_destroy(cfg);
}

static void test_start_from(void **state) {
  static const struct {
    const char *text;
    bool relative;
    int64_t ms;
  } cases[] = {
      {"-24h", true, -86400000LL},
      {"-30m", true, -1800000LL},
      {"-90s", true, -90000LL},
      {"-7d", true, -604800000LL},
      {"-500ms", true, -500LL},
      {"0s", true, 0},
      {"now", true, 0},
      {"2024-07-24T00:00:00Z", false, 1721779200000LL},
      {"2024-07-24T02:00:00+02:00", false, 1721779200000LL},
      {"2024-07-23T22:30:00-0130", false, 1721779200000LL},
      {"2024-07-24T00:00:00.123Z", false, 1721779200123LL},
      {"2024-07-24T00:00:00.5Z", false, 1721779200500LL},
      {"2024-07-24T00:00:00.123456789Z", false, 1721779200123LL},
      {"2024-02-29T00:00:00Z", false, 1709164800000LL},
  };
  char yaml[512];
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    snprintf(yaml, sizeof(yaml), IDS CSU "    start_from: '%s'\n", cases[i].text);
    struct csr_config *cfg = parse_ok(yaml);
    if (cfg->csus[0].start_relative != cases[i].relative ||
        cfg->csus[0].start_from_ms != cases[i].ms) {
      print_error("%s: got %d %lld\n", cases[i].text, cfg->csus[0].start_relative,
                  (long long)cfg->csus[0].start_from_ms);
      fail();
    }
    csr_config_destroy(cfg);
  }
}

static void test_substitution(void **state) {
  setenv("CSR_T_HOST", "houston.example.com", 1);
  setenv("CSR_T_PAGE", "100", 1);
  struct csr_config *cfg = parse_ok("state: {dir: '/srv/$${HOME}/x${CSR_T_EMPTY}'}\n" IDS "csus:\n"
                                    "  - name: houston\n"
                                    "    url: https://${CSR_T_HOST}/retail\n"
                                    "    oun: \"${CSR_T_PAGE}\"\n"
                                    "    identity: commerce\n"
                                    "    event_types: [Checkout]\n"
                                    "    page_size: ${CSR_T_PAGE}\n");
  unsetenv("CSR_T_HOST");
  unsetenv("CSR_T_PAGE");
  assert_string_equal(cfg->state.dir, "/srv/${HOME}/x");
  assert_string_equal(cfg->csus[0].url, "https://houston.example.com/retail/");
  assert_string_equal(cfg->csus[0].oun, "100");
  assert_int_equal(cfg->csus[0].page_size, 100);
  csr_config_destroy(cfg);
}

static void test_ingress_tokens(void **state) {
  /* A non-loopback listener with a token is fine; loopback spellings need none. */
  setenv("CSR_T_ING", "tok", 1);
  struct csr_config *cfg =
      parse_ok(IDS CSU "ingress: {listen: '0.0.0.0:8687', token_env: CSR_T_ING, csu: houston}\n");
  assert_string_equal(cfg->ingress.token, "tok");
  assert_string_equal(cfg->ingress.listen.host, "0.0.0.0");
  assert_int_equal(cfg->ingress.sync_wait_ms, 5000);
  csr_config_destroy(cfg);
  unsetenv("CSR_T_ING");
  const char *loopback[] = {"'127.0.0.1:0'", "'[::1]:8687'", "'localhost:8687'", "'127.9.9.9:1'"};
  char yaml[512];
  for (size_t i = 0; i < 4; i++) {
    snprintf(yaml, sizeof(yaml), IDS CSU "ingress: {listen: %s, csu: houston}\n", loopback[i]);
    cfg = parse_ok(yaml);
    assert_null(cfg->ingress.token);
    assert_true(cfg->ingress.present);
    csr_config_destroy(cfg);
  }
  /* Defaults of a present ingress section. */
  cfg = parse_ok(IDS CSU "ingress:\n  csu: houston\n");
  assert_string_equal(cfg->ingress.listen.host, "127.0.0.1");
  assert_int_equal(cfg->ingress.listen.port, 8687);
  assert_ptr_equal(cfg->ingress.csu, &cfg->csus[0]);
  csr_config_destroy(cfg);
}

/* ---------------------------------------------------------------------------------------------- */
/* Bad configurations                                                                             */
/* ---------------------------------------------------------------------------------------------- */

static void test_bad_keys(void **state) {
  static const struct bad cases[] = {
      {"typo in a csu", IDS CSU "    poll_intervall_ms: 5\n", 13, "csus[0].poll_intervall_ms",
       "unknown key (did you mean 'poll_interval_ms'?)"},
      {"typo of a section", "log: {level: info}\nsink: []\n", 2, "sink",
       "unknown key (did you mean 'sinks'?)"},
      {"typo in an identity", IDS "    client_secert_env: X\n", 7,
       "identities.commerce.client_secert_env", "did you mean 'client_secret_env'?"},
      {"typo in a delivery",
       IDS CSU SINKS "  - event_type: Checkout\n    deliver: [{sink: audit}, {snk: x}]\n", 20,
       "routes[0].deliver[1].snk", "did you mean 'sink'?"},
      {"typo in sink key", IDS "sinks:\n  - {name: s, type: mqtt, brokr: 'tcp://b'}\n", 8,
       "sinks[0].brokr", "did you mean 'broker'?"},
      {"unknown key", "state: {dir: x, colour: red}\n", 1, "state.colour", "unknown key"},
      {"duplicate key", "state:\n  dir: a\n  fsync: none\n  dir: b\n", 4, "state.dir",
       "duplicate key (first on line 2)"},
      {"duplicate section", "log: {level: info}\nstate: {}\nlog: {level: warn}\n", 3, "log",
       "duplicate key (first on line 1)"},
      {"duplicate flow key", IDS "sinks:\n  - {name: a, type: webhook, url: 'http://x', name: b}\n",
       8, "sinks[0].name", "duplicate key"},
      {"duplicate identity", IDS "  commerce: {}\n", 7, "identities.commerce", "duplicate key"},
      {"mqtt key on webhook",
       IDS "sinks:\n  - {name: a, type: webhook, url: 'http://x',\n"
           "     broker: 'tcp://b:1883'}\n",
       9, "sinks[0].broker", "not valid for a webhook sink (only for mqtt)"},
      {"cij key on mqtt", IDS "sinks:\n  - name: a\n    type: mqtt\n    identity: commerce\n", 10,
       "sinks[0].identity", "not valid for a mqtt sink (only for cij)"},
      {"webhook key on cij", IDS "sinks:\n  - {name: a, type: cij, url: 'http://x'}\n", 8,
       "sinks[0].url", "not valid for a cij sink (only for webhook)"},
      {"trigger on a sink", IDS "sinks:\n  - {name: a, type: cij, trigger: t}\n", 8,
       "sinks[0].trigger", "unknown key"},
      {"non-scalar key", "? [a, b]\n: 1\n", 1, "", "keys must be plain strings"},
  };
  RUN_BAD(cases);

  /* No hint when nothing is close. */
  struct csr_config *cfg = NULL;
  struct csr_err err;
  const char *yaml = "state: {dir: x, colour: red}\n";
  assert_int_equal(csr_config_parse("t.yaml", yaml, strlen(yaml), &cfg, &err), CSR_ECONFIG);
  assert_string_equal(err.msg, "unknown key");
}

static void test_bad_types(void **state) {
  static const struct bad cases[] = {
      {"text for an integer", IDS CSU "    page_size: abc\n", 13, "csus[0].page_size",
       "expected an integer, got 'abc'"},
      {"hex integer", IDS CSU "    page_size: 0x10\n", 13, "csus[0].page_size",
       "expected an integer"},
      {"float for an integer", "retry: {max_attempts: 2.5}\n", 1, "retry.max_attempts",
       "expected an integer"},
      {"list for an integer", IDS CSU "    page_size: [1]\n", 13, "csus[0].page_size",
       "expected a scalar value, got a list"},
      {"mapping for a string 2", "state: {dir: {a: 1}}\n", 1, "state.dir",
       "expected a string, got a mapping"},
      {"list for a section", "state: [a]\n", 1, "state", "expected a mapping, got a list"},
      {"mapping for csus", "csus: {name: x}\n", 1, "csus",
       "expected a list of csus, got a mapping"},
      {"scalar for identities", "identities: [a]\n", 1, "identities",
       "expected a mapping of identity names, got a list"},
      {"scalar element", IDS "csus:\n  - houston\n", 8, "csus[0]",
       "expected a mapping, got a scalar"},
      {"scalar for event_types",
       IDS "csus:\n  - {name: h, url: 'http://x', oun: '1', identity: "
           "commerce, event_types: Checkout}\n",
       8, "csus[0].event_types", "expected a list, got a scalar"},
      {"bad enum", "state: {fsync: sometimes}\n", 1, "state.fsync",
       "expected always, batch or none, got 'sometimes'"},
      {"bad log level", "log:\n  level: verbose\n", 2, "log.level",
       "expected debug, info, warn or error, got 'verbose'"},
      {"bad number",
       IDS "sinks:\n  - {name: a, type: webhook, url: 'http://x', rate_per_s: fast}\n", 8,
       "sinks[0].rate_per_s", "expected a number, got 'fast'"},
      {"empty string", "state: {dir: ''}\n", 1, "state.dir", "must not be empty"},
      {"no value", "retry:\n  max_attempts:\n", 2, "retry.max_attempts", "has no value"},
      {"enrich scalar",
       IDS CSU SINKS "  - {event_type: Checkout, enrich: order, deliver: [{sink: audit}]}\n", 19,
       "routes[0].enrich", "expected a list like [order, customer], got a scalar"},
      {"fields as list",
       IDS CSU SINKS "  - event_type: Checkout\n    deliver:\n"
                     "      - {sink: journeys, trigger: t, fields: [a]}\n",
       21, "routes[0].deliver[0].fields", "expected a mapping of trigger parameter: source"},
  };
  RUN_BAD(cases);
}

static void test_bad_values(void **state) {
  static const struct bad cases[] = {
      {"page_size 0", IDS CSU "    page_size: 0\n", 13, "csus[0].page_size",
       "must be between 1 and 1000, got 0"},
      {"page_size 1001", IDS CSU "    page_size: 1001\n", 13, "csus[0].page_size",
       "must be between 1 and 1000, got 1001"},
      {"negative page_size", IDS CSU "    page_size: -5\n", 13, "csus[0].page_size",
       "must be between 1 and 1000, got -5"},
      {"poll_interval_ms 0", IDS CSU "    poll_interval_ms: 0\n", 13, "csus[0].poll_interval_ms",
       "must be between 1 and"},
      {"sweep_every_s 0", IDS CSU "    sweep_every_s: 0\n", 13, "csus[0].sweep_every_s",
       "must be between 1 and"},
      {"fsync_interval_ms 0", "state: {fsync_interval_ms: 0}\n", 1, "state.fsync_interval_ms",
       "must be between 1 and 60000, got 0"},
      {"http_timeout_ms 0", "limits: {http_timeout_ms: 0}\n", 1, "limits.http_timeout_ms",
       "must be between 1 and"},
      {"huge integer", "limits: {memory_mb: 99999999999999999999}\n", 1, "limits.memory_mb",
       "expected an integer"},
      {"qos 3",
       IDS "sinks:\n  - {name: a, type: mqtt, broker: 'tcp://b', client_id: c, topic: t,\n"
           "     qos: 3}\n",
       9, "sinks[0].qos", "must be between 0 and 2, got 3"},
      {"cij max_in_flight 53",
       IDS "sinks:\n  - name: j\n    type: cij\n    dataverse_url: "
           "'https://o.example.com'\n    identity: commerce\n"
           "    max_in_flight: 53\n",
       12, "sinks[0].max_in_flight", "at most 52"},
      {"max_in_flight 0",
       IDS "sinks:\n  - {name: w, type: webhook, url: 'http://x', max_in_flight: 0}\n", 8,
       "sinks[0].max_in_flight", "must be between 1 and 65535, got 0"},
      {"negative rate",
       IDS "sinks:\n  - {name: w, type: webhook, url: 'http://x', rate_per_s: -1}\n", 8,
       "sinks[0].rate_per_s", "must be between 0 and 1000000, got -1"},
      {"retry base > cap", "retry:\n  cap_ms: 1000\n  base_ms: 5000\n", 3, "retry.base_ms",
       "must not exceed cap_ms (1000)"},
      {"retry max_attempts 0", "retry: {max_attempts: 0}\n", 1, "retry.max_attempts",
       "must be between 1 and 1000, got 0"},
      {"long event type",
       IDS "csus:\n  - {name: h, url: 'http://x', oun: '1', identity: commerce,\n"
           "     event_types: [Checkout, CheckoutWithAVeryLongName]}\n",
       9, "csus[0].event_types[1]", "at most 20 characters"},
      {"event type with a space",
       IDS "csus:\n  - {name: h, url: 'http://x', oun: '1', identity: "
           "commerce,\n     event_types: ['Add Cart']}\n",
       9, "csus[0].event_types[0]", "an event type cannot contain spaces"},
      {"duplicate event type",
       IDS "csus:\n  - {name: h, url: 'http://x', oun: '1', identity: commerce,\n"
           "     event_types: [Checkout, Checkout]}\n",
       9, "csus[0].event_types[1]", "'Checkout' is listed twice"},
      {"no event types",
       IDS "csus:\n  - {name: h, url: 'http://x', oun: '1', identity: commerce,\n"
           "     event_types: []}\n",
       9, "csus[0].event_types", "must list at least one value"},
      {"bad enrich",
       IDS CSU SINKS
       "  - {event_type: Checkout, enrich: [order, orders], deliver: [{sink: audit}]}\n",
       19, "routes[0].enrich[1]", "expected order or customer, got 'orders'"},
      {"enrich twice",
       IDS CSU SINKS
       "  - {event_type: Checkout, enrich: [order, order], deliver: [{sink: audit}]}\n",
       19, "routes[0].enrich[1]", "'order' is listed twice"},
      {"ftp url", IDS "csus:\n  - name: h\n    url: ftp://x.example.com/\n", 9, "csus[0].url",
       "expected an http:// or https:// URL with a host"},
      {"url without host", IDS "csus:\n  - name: h\n    url: https:///x\n", 9, "csus[0].url",
       "expected an http:// or https:// URL with a host"},
      {"url with query", IDS "csus:\n  - name: h\n    url: https://x.example.com/?a=1\n", 9,
       "csus[0].url", "a root URL cannot have a query or fragment"},
      {"bad authority", "identities:\n  c: {authority: login.microsoftonline.com}\n", 2,
       "identities.c.authority", "expected an http:// or https:// URL"},
      {"bad broker",
       IDS "sinks:\n  - {name: m, type: mqtt, broker: 'http://b:1883', client_id: c,\n"
           "     topic: t}\n",
       8, "sinks[0].broker", "expected tcp://, ssl://, mqtt:// or mqtts://"},
      {"wildcard topic",
       IDS "sinks:\n  - {name: m, type: mqtt, broker: 'tcp://b', client_id: c,\n"
           "     topic: 'a/#'}\n",
       9, "sinks[0].topic", "wildcards"},
      {"bad placeholder",
       IDS "sinks:\n  - {name: m, type: mqtt, broker: 'tcp://b', client_id: c,\n"
           "     topic: 'a/{store}'}\n",
       9, "sinks[0].topic", "placeholders are {csu}, {channel}, {type}, {dataarea} and {terminal}"},
      {"bad webhook url", IDS "sinks:\n  - {name: w, type: webhook, url: 'hooks.example.com'}\n", 8,
       "sinks[0].url", "expected an http:// or https:// URL"},
      {"bad csu name", IDS "csus:\n  - name: 'hou ston'\n", 8, "csus[0].name",
       "must be at most 64 letters, digits"},
      {"bad identity name", "identities:\n  'a b': {}\n", 2, "identities.a b",
       "identity name must be at most 64"},
      {"bad field source",
       IDS CSU SINKS "  - event_type: Checkout\n    deliver:\n"
                     "      - sink: journeys\n        trigger: t\n"
                     "        fields: {p1: OrderDetails.X, p2: Order.X}\n",
       23, "routes[0].deliver[0].fields.p2", "expected a path starting with EventDetails"},
      {"bad field variable",
       IDS CSU SINKS "  - event_type: Checkout\n    deliver:\n"
                     "      - sink: journeys\n        trigger: t\n"
                     "        fields: {p1: $today}\n",
       23, "routes[0].deliver[0].fields.p1", "$event_time, $now, $contact_id, $event_id"},
      {"bad field target",
       IDS CSU SINKS "  - event_type: Checkout\n    deliver:\n"
                     "      - sink: journeys\n        trigger: t\n"
                     "        fields: {'my param': $now}\n",
       23, "routes[0].deliver[0].fields.my param", "parameter name has letters"},
      {"empty deliver", IDS CSU SINKS "  - {event_type: Checkout, deliver: []}\n", 19,
       "routes[0].deliver", "must list at least one delivery"},
  };
  RUN_BAD(cases);
}

static void test_bad_required(void **state) {
  static const struct bad cases[] = {
      {"csu without url", IDS "csus:\n  - name: h\n    oun: '1'\n", 8, "csus[0].url",
       "required key is missing"},
      {"csu without event_types",
       IDS "csus:\n  - {name: h, url: 'http://x', oun: '1', identity: commerce}\n", 8,
       "csus[0].event_types", "required key is missing"},
      {"identity without scope", "identities:\n  c:\n    tenant: t\n    client_id: c\n", 2,
       "identities.c.scope", "required key is missing"},
      {"identity without a secret", "identities:\n  c: {tenant: t, client_id: c, scope: s}\n", 2,
       "identities.c.client_secret_env",
       "one of client_secret_env or client_secret_file is required"},
      {"identity with two secrets",
       "identities:\n  c:\n    tenant: t\n    client_id: c\n"
       "    client_secret_env: A\n    client_secret_file: /x\n"
       "    scope: s\n",
       6, "identities.c.client_secret_file",
       "give either client_secret_env or client_secret_file, not both"},
      {"sink without type", IDS "sinks:\n  - {name: a, url: 'http://x'}\n", 8, "sinks[0].type",
       "required key is missing"},
      {"unknown sink type", IDS "sinks:\n  - name: a\n    type: kafka\n", 9, "sinks[0].type",
       "unknown sink type 'kafka' (expected cij, mqtt or webhook)"},
      {"sink without name", IDS "sinks:\n  - {type: webhook, url: 'http://x'}\n", 8,
       "sinks[0].name", "required key is missing"},
      {"cij without dataverse_url", IDS "sinks:\n  - {name: j, type: cij, identity: commerce}\n", 8,
       "sinks[0].dataverse_url", "required key is missing"},
      {"mqtt without topic",
       IDS "sinks:\n  - {name: m, type: mqtt, broker: 'tcp://b', client_id: c}\n", 8,
       "sinks[0].topic", "required key is missing"},
      {"webhook without url", IDS "sinks:\n  - {name: w, type: webhook}\n", 8, "sinks[0].url",
       "required key is missing"},
      {"route without deliver", IDS CSU SINKS "  - event_type: Checkout\n", 19, "routes[0].deliver",
       "required key is missing"},
      {"route without event_type", IDS CSU SINKS "  - deliver: [{sink: audit}]\n", 19,
       "routes[0].event_type", "required key is missing"},
      {"cij delivery without trigger",
       IDS CSU SINKS "  - event_type: Checkout\n    deliver:\n"
                     "      - {sink: audit}\n      - {sink: journeys}\n",
       22, "routes[0].deliver[1].trigger", "required for cij sink 'journeys'"},
      {"trigger on mqtt",
       IDS CSU SINKS "  - event_type: Checkout\n    deliver:\n"
                     "      - sink: stores\n        trigger: t\n",
       22, "routes[0].deliver[0].trigger",
       "only a cij sink takes a trigger; 'stores' is a mqtt sink"},
      {"fields on webhook",
       IDS CSU SINKS "  - event_type: Checkout\n    deliver:\n"
                     "      - sink: audit\n        fields: {a: $now}\n",
       22, "routes[0].deliver[0].fields", "only a cij sink takes a fields"},
      {"ingress without csu", IDS CSU "ingress:\n  listen: '127.0.0.1:0'\n", 13, "ingress.csu",
       "required key is missing"},
      {"mqtt with two passwords",
       IDS "sinks:\n  - {name: m, type: mqtt, broker: 'tcp://b', client_id: c,\n"
           "     topic: t, password_env: A, password_file: /x}\n",
       9, "sinks[0].password_file", "give either password_env or password_file, not both"},
  };
  RUN_BAD(cases);
}

static void test_bad_references(void **state) {
  static const struct bad cases[] = {
      {"duplicate csu",
       IDS CSU "  - {name: houston, url: 'http://y', oun: '2', identity: commerce,\n"
               "     event_types: [Checkout]}\n",
       13, "csus[1].name", "a csu named 'houston' is already defined on line 8"},
      {"duplicate sink",
       IDS "sinks:\n  - {name: w, type: webhook, url: 'http://x'}\n"
           "  - {name: w, type: webhook, url: 'http://y'}\n",
       9, "sinks[1].name", "a sink named 'w' is already defined on line 8"},
      {"unknown csu identity",
       IDS "csus:\n  - name: h\n    url: 'http://x'\n    oun: '1'\n"
           "    identity: comerce\n",
       11, "csus[0].identity", "no identity named 'comerce' (did you mean 'commerce'?)"},
      {"csu identity, none defined",
       "csus:\n  - {name: h, url: 'http://x', oun: '1', identity: x}\n", 2, "csus[0].identity",
       "no identity named 'x' (none is defined)"},
      {"unknown sink identity",
       IDS "sinks:\n  - {name: j, type: cij, dataverse_url: 'http://d',\n"
           "     identity: dataverse}\n",
       9, "sinks[0].identity", "no identity named 'dataverse'"},
      {"unknown route sink",
       IDS CSU SINKS "  - event_type: Checkout\n    deliver:\n"
                     "      - {sink: journey, trigger: t}\n",
       21, "routes[0].deliver[0].sink", "no sink named 'journey' (did you mean 'journeys'?)"},
      {"route, no sinks at all",
       IDS CSU "routes:\n  - {event_type: Checkout, deliver: [{sink: a}]}\n", 14,
       "routes[0].deliver[0].sink", "no sink named 'a' (none is defined)"},
      {"route for an unpolled type",
       IDS CSU SINKS "  - {event_type: Refund, deliver: [{sink: audit}]}\n", 19,
       "routes[0].event_type", "no csu polls event type 'Refund'"},
      {"routes without csus",
       "sinks:\n  - {name: w, type: webhook, url: 'http://x'}\n"
       "routes:\n  - {event_type: Checkout, deliver: [{sink: w}]}\n",
       4, "routes[0].event_type", "no csu polls event type 'Checkout'"},
      {"duplicate route",
       IDS CSU SINKS "  - {event_type: Checkout, deliver: [{sink: audit}]}\n"
                     "  - {event_type: Checkout, deliver: [{sink: stores}]}\n",
       20, "routes[1].event_type", "a route for 'Checkout' is already defined on line 19"},
      {"sink twice in a route",
       IDS CSU SINKS "  - event_type: Checkout\n    deliver:\n"
                     "      - {sink: audit}\n      - {sink: audit}\n",
       22, "routes[0].deliver[1].sink", "sink 'audit' is already listed on line 21"},
      {"unknown ingress csu", IDS CSU "ingress: {csu: dallas}\n", 13, "ingress.csu",
       "no csu named 'dallas'"},
  };
  RUN_BAD(cases);
}

static void test_bad_start_from(void **state) {
  static const struct bad cases[] = {
      {"future relative", IDS CSU "    start_from: 24h\n", 13, "csus[0].start_from",
       "a relative start lies in the past: write it with a minus, like -24h, got '24h'"},
      {"bad unit", IDS CSU "    start_from: -24x\n", 13, "csus[0].start_from",
       "expected a relative time (-24h, -30m, -90s, -7d, now) or an ISO-8601 instant"},
      {"word", IDS CSU "    start_from: yesterday\n", 13, "csus[0].start_from",
       "expected a relative time"},
      {"no zone", IDS CSU "    start_from: 2024-07-24T00:00:00\n", 13, "csus[0].start_from",
       "an instant needs a time zone"},
      {"date only", IDS CSU "    start_from: 2024-07-24\n", 13, "csus[0].start_from",
       "expected an ISO-8601 instant"},
      {"bad date", IDS CSU "    start_from: 2023-02-29T00:00:00Z\n", 13, "csus[0].start_from",
       "not a valid date and time"},
      {"bad hour", IDS CSU "    start_from: 2024-07-24T24:00:00Z\n", 13, "csus[0].start_from",
       "not a valid date and time"},
      {"bad offset", IDS CSU "    start_from: 2024-07-24T00:00:00+25:00\n", 13,
       "csus[0].start_from", "expected an ISO-8601 instant"},
      {"trailing junk", IDS CSU "    start_from: 2024-07-24T00:00:00Zjunk\n", 13,
       "csus[0].start_from", "expected an ISO-8601 instant"},
      {"too far back", IDS CSU "    start_from: -99999999d\n", 13, "csus[0].start_from",
       "at most 36500 days"},
  };
  RUN_BAD(cases);
}

static void test_bad_listen(void **state) {
  static const struct bad cases[] = {
      {"no port", "admin: {listen: localhost}\n", 1, "admin.listen",
       "expected host:port or [v6]:port with a port from 0 to 65535, got 'localhost'"},
      {"port too big", "admin:\n  listen: '127.0.0.1:70000'\n", 2, "admin.listen",
       "got '127.0.0.1:70000'"},
      {"bare v6", "admin: {listen: '::1:8686'}\n", 1, "admin.listen", "expected host:port"},
      {"no host", IDS CSU "ingress: {listen: ':8687', csu: houston}\n", 13, "ingress.listen",
       "expected host:port"},
      {"port text", "admin: {listen: 'localhost:http'}\n", 1, "admin.listen", "expected host:port"},
      {"ingress off loopback without token",
       IDS CSU "ingress:\n  listen: '0.0.0.0:8687'\n"
               "  token_env: CSR_T_UNSET\n  csu: houston\n",
       15, "ingress.token_env", "no token set; refusing a non-loopback listener"},
      {"ingress off loopback, no token_env",
       IDS CSU "ingress: {listen: '10.0.0.1:8687', csu: houston}\n", 13, "ingress.token_env",
       "no token set; refusing a non-loopback listener"},
  };
  RUN_BAD(cases);
}

static void test_bad_secrets(void **state) {
  static const struct bad cases[] = {
      {"unset secret env",
       "identities:\n  c:\n    tenant: t\n    client_id: c\n    scope: s\n"
       "    client_secret_env: CSR_T_UNSET\n",
       6, "identities.c.client_secret_env", "environment variable CSR_T_UNSET is not set"},
      {"empty secret env",
       "identities:\n  c: {tenant: t, client_id: c, scope: s,\n"
       "      client_secret_env: CSR_T_EMPTY}\n",
       3, "identities.c.client_secret_env", "environment variable CSR_T_EMPTY is empty"},
      {"secret pasted as a name",
       "identities:\n  c: {tenant: t, client_id: c, scope: s,\n"
       "      client_secret_env: '" SECRET "'}\n",
       3, "identities.c.client_secret_env", "must be the name of an environment variable"},
      {"missing secret file",
       "identities:\n  c: {tenant: t, client_id: c, scope: s,\n"
       "      client_secret_file: /nonexistent/csr/secret}\n",
       3, "identities.c.client_secret_file",
       "cannot read /nonexistent/csr/secret: No such file or directory"},
      {"secret file too large",
       "identities:\n  c: {tenant: t, client_id: c, scope: s,\n"
       "      client_secret_file: /dev/zero}\n",
       3, "identities.c.client_secret_file", "cannot read /dev/zero: File too large"},
      {"secret file is a directory",
       "identities:\n  c: {tenant: t, client_id: c, scope: s,\n"
       "      client_secret_file: /}\n",
       3, "identities.c.client_secret_file", "cannot read /: Is a directory"},
      {"unset mqtt password",
       IDS "sinks:\n  - {name: m, type: mqtt, broker: 'tcp://b', client_id: c,\n"
           "     topic: t, password_env: CSR_T_UNSET}\n",
       9, "sinks[0].password_env", "environment variable CSR_T_UNSET is not set"},
      {"unset webhook auth",
       IDS "sinks:\n  - {name: w, type: webhook, url: 'http://x',\n"
           "     auth_header_env: CSR_T_UNSET}\n",
       9, "sinks[0].auth_header_env", "environment variable CSR_T_UNSET is not set"},
      {"auth header with a line break",
       IDS "sinks:\n  - {name: w, type: webhook, url: 'http://x',\n"
           "     auth_header_env: CSR_T_CRLF}\n",
       9, "sinks[0].auth_header_env", "the value of CSR_T_CRLF contains a line break"},
      /* Secrets are read last: a structural error later in the file wins. */
      {"typo after a missing secret",
       "identities:\n  c: {tenant: t, client_id: c, scope: s,\n"
       "      client_secret_env: CSR_T_UNSET}\n"
       "state: {dri: x}\n",
       4, "state.dri", "did you mean 'dir'?"},
  };
  setenv("CSR_T_CRLF", SECRET "\r\nX-Evil: 1", 1);
  RUN_BAD(cases);
  unsetenv("CSR_T_CRLF");

  char path[] = "/tmp/csr_test_secret_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd); /* empty */
  char yaml[512];
  snprintf(yaml, sizeof(yaml),
           "identities:\n  c: {tenant: t, client_id: c, scope: s,\n"
           "      client_secret_file: '%s'}\n",
           path);
  struct bad empty = {"empty secret file", yaml, 3, "identities.c.client_secret_file", "is empty"};
  check_bad(&empty);
  unlink(path);
}

static void test_bad_substitution(void **state) {
  static const struct bad cases[] = {
      {"unset variable", "state:\n  dir: /srv/${CSR_T_UNSET}/x\n", 2, "state.dir",
       "environment variable CSR_T_UNSET is not set (used as ${CSR_T_UNSET})"},
      {"unset variable in a list item",
       IDS "csus:\n  - {name: h, url: 'http://x', oun: '1', "
           "identity: commerce,\n     event_types: [Checkout, "
           "'${CSR_T_UNSET}']}\n",
       9, "csus[0].event_types[1]", "CSR_T_UNSET is not set"},
      {"unterminated", "state: {dir: '/srv/${HOME'}\n", 1, "state.dir",
       "'${' must be followed by a variable name and '}' (write $${ for a literal ${)"},
      {"empty name", "state: {dir: '${}'}\n", 1, "state.dir", "'${' must be followed"},
      {"substituted integer", "retry: {max_attempts: '${CSR_T_EMPTY}'}\n", 1, "retry.max_attempts",
       "expected an integer, got ''"},
      {"substituted empty string", "state: {dir: '${CSR_T_EMPTY}'}\n", 1, "state.dir",
       "must not be empty"},
  };
  RUN_BAD(cases);
}

static void test_bad_yaml(void **state) {
  static const struct bad cases[] = {
      {"unclosed flow list", "state:\n  dir: x\nlimits: {memory_mb: [1, 2}\n", 3, "",
       "YAML syntax error: did not find expected ',' or ']' while parsing a flow sequence"},
      {"bad indentation", "state:\n  dir: x\n fsync: none\n", 3, "", "YAML syntax error:"},
      {"tab indentation", "state:\n\tdir: x\n", 2, "",
       "YAML syntax error: found character that cannot start any token while scanning for the "
       "next token (YAML indents with spaces, not tabs)"},
      {"undefined alias", "state: *nope\n", 1, "", "YAML syntax error: found undefined alias"},
      {"empty", "", 0, "", "empty configuration"},
      {"comments only", "# nothing\n\n# here\n", 0, "", "empty configuration"},
      {"document marker only", "---\n", 0, "", "empty configuration"},
      {"list at the top", "- a\n- b\n", 1, "",
       "the top level must be a mapping of sections (state, csus, sinks, ...), got a list"},
      {"scalar at the top", "\n\nhello\n", 3, "", "the top level must be a mapping"},
      {"two documents", "log: {level: info}\n---\nlog: {level: warn}\n", 3, "",
       "only one YAML document is allowed"},
      {"invalid UTF-8", "state:\n  dir: \"\xff\"\n", 2, "", "YAML syntax error: invalid"},
  };
  RUN_BAD(cases);
}

/* ---------------------------------------------------------------------------------------------- */
/* Files                                                                                          */
/* ---------------------------------------------------------------------------------------------- */

static void expect_file_error(const char *file, int want_rc, int line, const char *key,
                              const char *msg) {
  struct csr_config *cfg = (struct csr_config *)&cfg;
  struct csr_err err;
  char buf[1024];
  const char *path = data_path(file);
  int rc = csr_config_load(path, &cfg, &err);
  csr_err_format(&err, buf, sizeof(buf));
  if (rc != want_rc || cfg != NULL || err.line != line || strcmp(err.key, key) != 0 ||
      strcmp(err.msg, msg) != 0 || strcmp(err.file, path) != 0) {
    print_error("%s: rc %d, got \"%s\"\n", file, rc, buf);
    fail();
  }
}

static void test_files(void **state) {
  expect_file_error("typo.yaml", CSR_ECONFIG, 17, "csus[0].poll_intervall_ms",
                    "unknown key (did you mean 'poll_interval_ms'?)");
  unsetenv("CSU_CLIENT_SECRET"); /* the typo is reported whether or not the secret is set */
  expect_file_error("typo.yaml", CSR_ECONFIG, 17, "csus[0].poll_intervall_ms",
                    "unknown key (did you mean 'poll_interval_ms'?)");
  setenv("CSU_CLIENT_SECRET", SECRET, 1);
  expect_file_error("tabs.yaml", CSR_ECONFIG, 4, "",
                    "YAML syntax error: found a tab character that violates indentation while "
                    "scanning a plain scalar (YAML indents with spaces, not tabs)");
  expect_file_error("empty.yaml", CSR_ECONFIG, 0, "", "empty configuration");
  expect_file_error("no-such-file.yaml", -ENOENT, 0, "", "No such file or directory");
  expect_file_error("", -EISDIR, 0, "", "Is a directory");

  /* The whole line as the CLI prints it. */
  struct csr_config *cfg = NULL;
  struct csr_err err;
  char buf[1024], want[1024];
  assert_int_equal(csr_config_load(data_path("typo.yaml"), &cfg, &err), CSR_ECONFIG);
  snprintf(want, sizeof(want),
           "%s:17: csus[0].poll_intervall_ms: unknown key (did you mean 'poll_interval_ms'?)",
           data_path("typo.yaml"));
  assert_string_equal(csr_err_format(&err, buf, sizeof(buf)), want);
  assert_int_equal(csr_config_load(data_path("empty.yaml"), &cfg, &err), CSR_ECONFIG);
  snprintf(want, sizeof(want), "%s: empty configuration", data_path("empty.yaml"));
  assert_string_equal(csr_err_format(&err, buf, sizeof(buf)), want);

  /* The typo fixed, the same file loads: only the typo was wrong with it. */
  const char *typo = data_path("typo.yaml");
  FILE *f = fopen(typo, "rb");
  assert_non_null(f);
  static char text[8192];
  size_t n = fread(text, 1, sizeof(text) - 1, f);
  fclose(f);
  text[n] = '\0';
  char *at = strstr(text, "    poll_intervall_ms");
  assert_non_null(at);
  at = strstr(at, "ll_ms");
  memmove(at, at + 1, strlen(at + 1) + 1); /* drop one 'l' */
  cfg = parse_ok(text);
  assert_int_equal(cfg->csus[0].poll_interval_ms, 500);
  csr_config_destroy(cfg);
}

/* ---------------------------------------------------------------------------------------------- */
/* Helpers                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

static void test_listen_parse(void **state) {
  static const struct {
    const char *text;
    const char *host;
    int port;
  } good[] = {
      {"127.0.0.1:8686", "127.0.0.1", 8686},
      {"[::1]:8686", "::1", 8686},
      {"localhost:0", "localhost", 0},
      {"0.0.0.0:65535", "0.0.0.0", 65535},
      {"[::]:1", "::", 1},
      {"relay-1.example.com:443", "relay-1.example.com", 443},
  };
  static const char *const bad[] = {
      "",     "localhost", ":80",    "[::1]8686", "[::1]:",   "::1:80",  "a:65536",
      "a:-1", "a:12ab",    "a b:80", "[]:80",     "a:123456", "[::1:80", "[x y]:80"};
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    struct csr_listen l = {0};
    assert_int_equal(csr_listen_parse(good[i].text, &l), 0);
    assert_string_equal(l.host, good[i].host);
    assert_int_equal(l.port, good[i].port);
    free(l.host);
  }
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    struct csr_listen l = {0};
    if (csr_listen_parse(bad[i], &l) != -EINVAL) {
      print_error("'%s' parsed\n", bad[i]);
      fail();
    }
    assert_null(l.host);
  }
  assert_int_equal(csr_listen_parse(NULL, NULL), -EINVAL);
}

static void test_loopback(void **state) {
  static const char *const yes[] = {"127.0.0.1",       "127.1.2.3",       "::1",
                                    "[::1]",           "localhost",       "LocalHost",
                                    "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1"};
  static const char *const no[] = {
      "0.0.0.0", "10.0.0.1", "::", "128.0.0.1", "localhost.example.com", "example.com", "", "::2"};
  for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
    if (!csr_host_is_loopback(yes[i])) {
      print_error("%s\n", yes[i]);
      fail();
    }
  for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
    if (csr_host_is_loopback(no[i])) {
      print_error("%s\n", no[i]);
      fail();
    }
  assert_false(csr_host_is_loopback(NULL));
}

static void test_api_edges(void **state) {
  struct csr_config *cfg = (struct csr_config *)&cfg;
  assert_int_equal(csr_config_parse("t", NULL, 0, &cfg, NULL), -EINVAL);
  assert_int_equal(csr_config_parse("t", "", 0, &cfg, NULL), CSR_ECONFIG); /* err may be NULL */
  assert_null(cfg);
  csr_config_destroy(NULL);
  assert_null(csr_config_sink(NULL, "x"));
  assert_null(csr_config_csu(NULL, "x"));
  assert_null(csr_config_identity(NULL, "x"));
  /* The buffer need not be NUL-terminated: only `len` bytes are read. */
  const char text[] = "log: {level: error}\nstate: {dir: [";
  assert_int_equal(csr_config_parse("t", text, 20, &cfg, NULL), 0);
  assert_string_equal(cfg->log.level, "error");
  csr_config_destroy(cfg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_good_full),         cmocka_unit_test(test_good_full_without_tokens),
      cmocka_unit_test(test_minimal_defaults),  cmocka_unit_test(test_element_defaults),
      cmocka_unit_test(test_token_url_slashes), cmocka_unit_test(test_sink_options),
      cmocka_unit_test(test_start_from),        cmocka_unit_test(test_substitution),
      cmocka_unit_test(test_ingress_tokens),    cmocka_unit_test(test_bad_keys),
      cmocka_unit_test(test_bad_types),         cmocka_unit_test(test_bad_values),
      cmocka_unit_test(test_bad_required),      cmocka_unit_test(test_bad_references),
      cmocka_unit_test(test_bad_start_from),    cmocka_unit_test(test_bad_listen),
      cmocka_unit_test(test_bad_secrets),       cmocka_unit_test(test_bad_substitution),
      cmocka_unit_test(test_bad_yaml),          cmocka_unit_test(test_files),
      cmocka_unit_test(test_listen_parse),      cmocka_unit_test(test_loopback),
      cmocka_unit_test(test_api_edges),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
