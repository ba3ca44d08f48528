/* The cij sink against csusim in-process: its Dataverse (exact contact lookup, create, the
 * custom trigger validating every parameter of commerce-event-sample.md 6.1 and that the contact
 * exists), its token endpoint (revocation), its fault plans, and its ledger, which matches each
 * trigger call to a generated Checkout by msdynmkt_bindingid and checks the amount text, the
 * signal timestamp and the receipt email. Events are scripted; each test fetches the real order
 * and customer from the sim's CSU to build the enriched event, creates the sink through the
 * registry with its own rx_http and token cache, and ends by closing the sink, the token cache,
 * the client and the sim. One capture server of our own shows the exact requests on the wire.
 * Every log line is captured and searched for emails, names and tokens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/log.h"
#include "csurelay/pipeline.h"
#include "csurelay/timefmt.h"
#include "sinktest.h"

#define GUARD_MS   SKT_GUARD_MS
#define MAX_EVENTS 24
#define TOKEN_PATH "/csusim.onmicrosoft.com/oauth2/v2.0/token"
#define ZERO_ID    "00000000-0000-0000-0000-000000000000"

/* ---------------------------------------------------------------------------------------------- */
/* Captured logs */
/* ---------------------------------------------------------------------------------------------- */

static char logbuf[1 << 20];
static size_t loglen;

static void on_log(const char *line, size_t len, void *arg) {
  if (loglen + len < sizeof(logbuf)) {
    memcpy(logbuf + loglen, line, len);
    loglen += len;
    logbuf[loglen] = '\0';
  }
}

static void assert_not_logged(const char *s) {
  if (s != NULL && strlen(s) >= 3 && strstr(logbuf, s) != NULL)
    fail_msg("logged: %s", s);
}

/* ---------------------------------------------------------------------------------------------- */
/* Fixture */
/* ---------------------------------------------------------------------------------------------- */

/* A scripted Checkout: its cart, its customer ("" for a guest), its ReceiptEmail (NULL: drawn). */
struct script {
  const char *txn;
  const char *customer;
  const char *receipt;
};

struct evt {
  char id[256];
  char time_text[64];
  yajl_val event, order, customer; /* for the tests' own reading */
  char *order_text, *customer_text;
  struct sk_event ev;
};

struct fx {
  struct skt k; /* k.url: the Dataverse */
  struct csr_identity ident;
  char token_url[256];
  struct pl_tokens *tokens;
  char token0[4096]; /* the first token, fetched before any delivery */
  struct csr_delivery_conf dconf;
  struct evt evs[MAX_EVENTS];
  size_t nevs;
  int tokens_closed;
};

static void write_events_file(struct fx *fx, const struct script *sc, size_t n) {
  struct csr_jw jw;
  assert_int_equal(csr_jw_init(&jw), 0);
  csr_jw_arr(&jw);
  for (size_t i = 0; i < n; i++) {
    char when[40];
    snprintf(when, sizeof(when), "2024-07-24T14:17:%02u.16Z", (unsigned)(i % 60));
    csr_jw_obj(&jw);
    csr_jw_kint(&jw, "csu", 0);
    csr_jw_kstr(&jw, "EventType", "Checkout");
    csr_jw_kstr(&jw, "EventTransactionId", sc[i].txn);
    csr_jw_kstr(&jw, "EventDateTime", when);
    csr_jw_kstr(&jw, "EventTerminalId", "HOUSTON-17");
    csr_jw_kstr(&jw, "EventStaffId", "000168");
    csr_jw_kstr(&jw, "EventCustomerId", sc[i].customer);
    if (sc[i].receipt != NULL)
      csr_jw_kstr(&jw, "ReceiptEmail", sc[i].receipt);
    csr_jw_obj_end(&jw);
  }
  csr_jw_arr_end(&jw);
  const char *text;
  size_t len;
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
  skt_write_events(&fx->k, "test_cij", text, len);
  csr_jw_free(&jw);
}

/* A CSU document by GET: its tree, and its text in *text (malloc'd). */
static yajl_val get_json(struct fx *fx, const char *path, char **text) {
  const char *h[] = {st_auth(&fx->k.t, SIM_AUD_COMMERCE), "OUN: 128", NULL};
  struct st_resp r;
  assert_int_equal(st_call(&fx->k.t, "GET", path, h, NULL, 0, &r), 0);
  if (r.status != 200)
    fail_msg("GET %s: %ld %s", path, r.status, r.body);
  yajl_val v = csr_json_parse(r.body, r.len, NULL, 0);
  assert_non_null(v);
  assert_non_null(*text = strndup(r.body, r.len));
  st_resp_free(&r);
  return v;
}

/* The scripted event as the pipeline hands it over: the event object with the sim's id and time,
 * the order and (for a customer) the customer fetched from the sim's CSU, as text only (the sink
 * builds its own trees). */
static void build_evt(struct fx *fx, struct evt *e, const struct script *sc, yajl_val rec) {
  snprintf(e->id, sizeof(e->id), "%s", csr_json_get_str(rec, "id"));
  snprintf(e->time_text, sizeof(e->time_text), "%s", csr_json_get_str(rec, "time"));
  char path[512];
  e->event = skt_checkout_event(sc->txn, e->time_text, sc->customer);
  snprintf(path, sizeof(path),
           "/csu0/Commerce/SalesOrders/GetSalesOrderDetailsByTransactionId(transactionId=@p1,"
           "searchLocationValue=1)?@p1='%s'&api-version=7.3",
           sc->txn);
  e->order = get_json(fx, path, &e->order_text);
  if (sc->customer[0]) {
    snprintf(path, sizeof(path), "/csu0/Commerce/Customers('%s')?api-version=7.3", sc->customer);
    e->customer = get_json(fx, path, &e->customer_text);
  }
  int64_t ms = 0;
  assert_int_equal(csr_time_parse(e->time_text, &ms), 0);
  e->ev = (struct sk_event){.id = e->id,
                            .csu = "csu0",
                            .type = "Checkout",
                            .time_ms = ms,
                            .time_text = e->time_text,
                            .event = e->event,
                            .order_json = e->order_text,
                            .order_json_len = strlen(e->order_text),
                            .customer_json = e->customer_text,
                            .customer_json_len = e->customer_text ? strlen(e->customer_text) : 0};
}

static void find_events(struct fx *fx, const struct script *sc, size_t n) {
  struct st_resp r;
  skt_ledger_events(&fx->k, n, &r);
  yajl_val list = csr_json_get(r.json, "events");
  for (size_t i = 0; i < n; i++) {
    char needle[96];
    snprintf(needle, sizeof(needle), "|%s|", sc[i].txn);
    yajl_val rec = NULL;
    for (size_t j = 0; j < csr_json_len(list) && rec == NULL; j++)
      if (strstr(csr_json_get_str(csr_json_at(list, j), "id"), needle))
        rec = csr_json_at(list, j);
    assert_non_null(rec);
    build_evt(fx, &fx->evs[i], &sc[i], rec);
  }
  fx->nevs = n;
  st_resp_free(&r);
}

static struct pl_tokens *tokens_for(void *arg, const char *identity) {
  struct fx *fx = arg;
  return identity && strcmp(identity, "dataverse") == 0 ? fx->tokens : NULL;
}

struct waiter {
  struct pl_token_req req;
  int done, result;
  char token[4096];
};

static void on_token(struct rx_fut *fut) {
  struct waiter *w = RX_CONTAINER_OF(fut, struct waiter, req.fut);
  w->done++;
  w->result = fut->result;
  snprintf(w->token, sizeof(w->token), "%s", fut->result == 0 ? w->req.token : "");
}

/* The cache's current token, as a delivery would get it. */
static void get_token(struct fx *fx, char *out, size_t len) {
  struct waiter w = {0};
  assert_int_equal(pl_tokens_get(fx->tokens, &w.req, on_token), 0);
  assert_true(skt_run_until(&fx->k, &w.done, 1, GUARD_MS));
  assert_int_equal(w.result, 0);
  snprintf(out, len, "%s", w.token);
}

static void create_sink(struct fx *fx) {
  skt_create_sink(&fx->k, "cij");
}

/* A sim with the scripted events and `faults`, a token cache for its Dataverse (with a first
 * token already fetched), and, when `create`, the sink. */
static struct fx *fx_start(const char *faults, const struct script *sc, size_t n, int create) {
  struct fx *fx = calloc(1, sizeof(*fx));
  assert_non_null(fx);
  loglen = 0;
  logbuf[0] = '\0';
  if (n > 0)
    write_events_file(fx, sc, n);
  struct sim_opts o;
  sim_opts_default(&o);
  o.faults_yaml = faults;
  skt_start(&fx->k, &o, 64, 5000);
  snprintf(fx->token_url, sizeof(fx->token_url), "%s%s", fx->k.t.sim.base_url, TOKEN_PATH);
  fx->ident = (struct csr_identity){.name = "dataverse",
                                    .tenant = "csusim.onmicrosoft.com",
                                    .client_id = SIM_CLIENT_ID,
                                    .scope = SIM_DATAVERSE_SCOPE,
                                    .token_url = fx->token_url,
                                    .secret = SIM_DEFAULT_SECRET};
  assert_int_equal(pl_tokens_create(&fx->k.t.loop, &fx->k.http, &fx->ident, &fx->tokens), 0);
  fx->k.env.tokens = tokens_for;
  fx->k.env.tokens_arg = fx;
  snprintf(fx->k.url, sizeof(fx->k.url), "%s/dataverse/", fx->k.t.sim.base_url);
  fx->k.conf = (struct csr_sink_conf){.name = "journeys",
                                      .type = CSR_SINK_CIJ,
                                      .max_in_flight = 52,
                                      .rate_per_s = 40,
                                      .dataverse_url = fx->k.url,
                                      .identity_name = "dataverse",
                                      .line = 1};
  fx->dconf = (struct csr_delivery_conf){
      .sink_name = "journeys", .sink = &fx->k.conf, .trigger = SIM_DEFAULT_TRIGGER, .line = 2};
  if (n > 0)
    find_events(fx, sc, n);
  get_token(fx, fx->token0, sizeof(fx->token0));
  if (create)
    create_sink(fx);
  return fx;
}

static void on_tokens_closed(void *arg) {
  ((struct fx *)arg)->tokens_closed++;
}

/* No email, name or token of this test in any log line. */
static void check_logs(struct fx *fx) {
  char token[4096];
  get_token(fx, token, sizeof(token));
  assert_not_logged(token);
  assert_not_logged(fx->token0);
  assert_null(strstr(logbuf, "eyJ")); /* the start of any JWT */
  static const char *const keys[] = {"ReceiptEmail", "Email", "FirstName", "LastName", "Name"};
  for (size_t i = 0; i < fx->nevs; i++) {
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
      assert_not_logged(csr_json_get_str(fx->evs[i].order, keys[k]));
      assert_not_logged(csr_json_get_str(fx->evs[i].customer, keys[k]));
    }
  }
}

static void fx_stop(struct fx *fx) {
  check_logs(fx);
  skt_close_sink(&fx->k);
  pl_tokens_destroy(fx->tokens, on_tokens_closed, fx);
  assert_true(skt_run_until(&fx->k, &fx->tokens_closed, 1, GUARD_MS));
  skt_stop(&fx->k);
  assert_int_equal(fx->tokens_closed, 1);
  for (size_t i = 0; i < fx->nevs; i++) {
    csr_json_free(fx->evs[i].event);
    csr_json_free(fx->evs[i].order);
    csr_json_free(fx->evs[i].customer);
    free(fx->evs[i].order_text);
    free(fx->evs[i].customer_text);
  }
  free(fx);
}

/* Runs `ev` (with `conf`, NULL: the route's) until its done() fired. */
static void run_ev(struct fx *fx, struct skt_deliv *v, const struct sk_event *ev,
                   const struct csr_delivery_conf *conf) {
  skt_run_delivery(&fx->k, v, ev, conf ? conf : &fx->dconf);
}

static void start(struct fx *fx, struct skt_deliv *v, size_t i) {
  skt_start_delivery(&fx->k, v, &fx->evs[i].ev, &fx->dconf);
}

static void deliver(struct fx *fx, struct skt_deliv *v, size_t i) {
  run_ev(fx, v, &fx->evs[i].ev, NULL);
  st_run_ms(&fx->k.t, 5);
  assert_int_equal(v->done, 1);
}

/* encode() for `d`, with the ingestion timestamp checked to be now and replaced by "NOW". */
static char *encode_text(struct fx *fx, const struct sk_delivery *d) {
  struct csr_jw jw;
  const char *text;
  size_t len;
  assert_int_equal(csr_jw_init(&jw), 0);
  int64_t before = rx_wall_ms();
  int rc = fx->k.sink->ops->encode(fx->k.sink, d, &jw);
  int64_t after = rx_wall_ms();
  if (rc < 0) {
    csr_jw_free(&jw);
    return NULL;
  }
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
  char *out = malloc(len + 1);
  assert_non_null(out);
  memcpy(out, text, len + 1);
  csr_jw_free(&jw);
  static const char *const keys[] = {"\"msdynmkt_signalingestiontimestamp\":\"", "\"p_now\":\""};
  for (size_t k = 0; k < 2; k++) {
    char *p = strstr(out, keys[k]);
    if (p == NULL)
      continue;
    p += strlen(keys[k]);
    char *q = strchr(p, '"');
    char when[64];
    int64_t ms;
    snprintf(when, sizeof(when), "%.*s", (int)(q - p), p);
    assert_int_equal(csr_time_parse(when, &ms), 0);
    assert_true(ms >= before - 1 && ms <= after + 1);
    memmove(p + 3, q, strlen(q) + 1);
    memcpy(p, "NOW", 3);
  }
  return out;
}

static const char *str_at(yajl_val v, const char *path) {
  const char *s = csr_json_str(csr_json_path(v, path));
  assert_non_null(s);
  return s;
}

/* The contact id the sink would send now (from its cache). */
static void cached_contact(struct fx *fx, const struct sk_event *ev, char *out, size_t len) {
  struct sk_delivery d = {.event = ev, .conf = &fx->dconf};
  char *text = encode_text(fx, &d);
  assert_non_null(text);
  yajl_val v = csr_json_parse(text, strlen(text), NULL, 0);
  snprintf(out, len, "%s", str_at(v, "msdynmkt_signaluserauthid"));
  assert_string_equal(out, str_at(v, "msdynmkt_profileid"));
  csr_json_free(v);
  free(text);
}

static struct sim_ledger_sink_counts trigger_counts(struct fx *fx) {
  struct sim_ledger_sink_counts c;
  memset(&c, 0, sizeof(c));
  sim_ledger_sink_counts(fx->k.t.sim.ledger, "trigger", &c);
  return c;
}

static struct sim_ledger_counts ledger_counts(struct fx *fx) {
  struct sim_ledger_counts c;
  sim_ledger_counts(fx->k.t.sim.ledger, &c);
  return c;
}

static uint64_t requests(struct fx *fx, const char *endpoint, int status) {
  return sim_ledger_requests(fx->k.t.sim.ledger, endpoint, status);
}

/* ---------------------------------------------------------------------------------------------- */
/* encode(): golden bodies, no network */
/* ---------------------------------------------------------------------------------------------- */

/* A synthetic Checkout for the golden bodies: the event time with an offset, a name that needs
 * escaping, a padded ReceiptEmail, high-scale decimals. */
struct golden {
  yajl_val event, order, customer;
  const char *event_text, *order_text, *customer_text; /* the same documents as text */
  struct sk_event ev;
  struct sk_delivery d;
};

static void golden_start(struct fx *fx, struct golden *g) {
  static const char event[] =
      "{\"EventType\":\"Checkout\",\"EventTransactionId\":\"C1\",\"EventDateTime\":"
      "\"2024-07-24T16:17:02.1600000+02:00\",\"EventChannelId\":5637144592}";
  static const char order[] =
      "{\"SalesId\":\"012345\",\"ChannelReferenceId\":\"\",\"CreatedDateTime\":"
      "\"2024-07-24T14:17:02.16Z\",\"CurrencyCode\":\"USD\",\"Name\":\"Zoë \\\"K\\\" O'Brien\\\\\","
      "\"ReceiptEmail\":\"  Karen@Contoso.com \",\"AmountPaid\":184.2200000000000000,"
      "\"InternalTransactionId\":\"6f1c2d3e-0000-4000-8000-000000000001\","
      "\"Lines\":[{\"ItemId\":\"81143\",\"Qty\":2.0000000000000000}]}";
  static const char cust[] = "{\"Email\":\"diego@fabrikam.com\",\"FirstName\":\"Diego\"}";
  memset(g, 0, sizeof(*g));
  g->event = csr_json_parse(event, strlen(event), NULL, 0);
  g->order = csr_json_parse(order, strlen(order), NULL, 0);
  g->customer = csr_json_parse(cust, strlen(cust), NULL, 0);
  g->event_text = event;
  g->order_text = order;
  g->customer_text = cust;
  assert_true(g->event && g->order && g->customer);
  g->ev = (struct sk_event){.id = "csu0|usrt|Checkout|C1|2024-07-24T16:17:02.1600000+02:00",
                            .csu = "csu0",
                            .type = "Checkout",
                            .time_text = "2024-07-24T16:17:02.1600000+02:00",
                            .event = g->event,
                            .order = g->order};
  assert_int_equal(csr_time_parse(g->ev.time_text, &g->ev.time_ms), 0);
  g->d = (struct sk_delivery){.event = &g->ev, .conf = &fx->dconf};
}

static void golden_stop(struct golden *g) {
  csr_json_free(g->event);
  csr_json_free(g->order);
  csr_json_free(g->customer);
}

/* The golden event with its documents as text only, as the pipeline hands them over. */
static void use_texts(struct golden *g) {
  g->ev.event = g->ev.order = g->ev.customer = NULL;
  g->ev.event_json = g->event_text;
  g->ev.event_json_len = strlen(g->event_text);
  g->ev.order_json = g->order_text;
  g->ev.order_json_len = strlen(g->order_text);
  g->ev.customer_json = g->customer_text;
  g->ev.customer_json_len = strlen(g->customer_text);
}

/* ... and as trees only (golden_start's own). */
static void use_trees(struct golden *g) {
  g->ev.event = g->event;
  g->ev.order = g->order;
  g->ev.customer = NULL;
  g->ev.event_json = g->ev.order_json = g->ev.customer_json = NULL;
  g->ev.event_json_len = g->ev.order_json_len = g->ev.customer_json_len = 0;
}

/* d's body is the same whether its documents are trees or texts. */
static void assert_body_from_text(struct fx *fx, struct sk_delivery *d) {
  struct sk_event *ev = (struct sk_event *)d->event, saved = *ev;
  yajl_val event = csr_json_parse(ev->event_json, ev->event_json_len, NULL, 0);
  yajl_val order = csr_json_parse(ev->order_json, ev->order_json_len, NULL, 0);
  yajl_val customer = csr_json_parse(ev->customer_json, ev->customer_json_len, NULL, 0);
  char *from_text = encode_text(fx, d);
  ev->event = event;
  ev->order = order;
  ev->customer = customer;
  ev->event_json = ev->order_json = ev->customer_json = NULL;
  char *from_trees = encode_text(fx, d);
  assert_non_null(from_text);
  assert_non_null(from_trees);
  assert_string_equal(from_text, from_trees);
  free(from_text);
  free(from_trees);
  *ev = saved;
  csr_json_free(event);
  csr_json_free(order);
  csr_json_free(customer);
}

/* The default mapping: amount digits kept, strings escaped, the email trimmed, the event time in
 * UTC, the zero GUID while no contact is cached. */
static void test_encode_default(void **state) {
  struct fx *fx = fx_start(NULL, NULL, 0, 1);
  struct golden g;
  golden_start(fx, &g);
  char *text = encode_text(fx, &g.d);
  assert_non_null(text);
  assert_string_equal(
      text, "{\"msdynmkt_amountpaid\":184.2200000000000000,\"msdynmkt_channelreferenceid\":\"\","
            "\"msdynmkt_createddatetime\":\"2024-07-24T14:17:02.16Z\",\"msdynmkt_currencycode\":"
            "\"USD\",\"msdynmkt_name\":\"Zoë \\\"K\\\" O'Brien\\\\\",\"msdynmkt_receiptemail\":"
            "\"Karen@Contoso.com\",\"msdynmkt_salesid\":\"012345\",\"msdynmkt_signaltimestamp\":"
            "\"2024-07-24T14:17:02.16Z\",\"msdynmkt_signalingestiontimestamp\":\"NOW\","
            "\"msdynmkt_signaluserauthid\":\"" ZERO_ID "\",\"msdynmkt_profileid\":\"" ZERO_ID
            "\",\"msdynmkt_bindingid\":\"6f1c2d3e-0000-4000-8000-000000000001\"}");
  /* The same body from the documents as text, as the pipeline hands them over. */
  use_texts(&g);
  char *from_text = encode_text(fx, &g.d);
  assert_non_null(from_text);
  assert_string_equal(from_text, text);
  free(from_text);
  free(text);
  golden_stop(&g);
  fx_stop(fx);
}

/* A route's own map: each variable, a path into each part, a whole array, a missing path. */
static void test_encode_custom_map(void **state) {
  struct fx *fx = fx_start(NULL, NULL, 0, 1);
  struct golden g;
  golden_start(fx, &g);
  struct csr_field_map fields[] = {
      {"p_amount", "OrderDetails.AmountPaid"},
      {"p_time", "$event_time"},
      {"p_now", "$now"},
      {"p_contact", "$contact_id"},
      {"p_event", "$event_id"},
      {"p_missing", "OrderDetails.Nope.Deeper"},
      {"p_customer", "CustomerDetails.Email"},
      {"p_channel", "EventDetails.EventChannelId"},
      {"p_lines", "OrderDetails.Lines"},
  };
  struct csr_delivery_conf custom = fx->dconf;
  custom.fields = fields;
  custom.n_fields = sizeof(fields) / sizeof(fields[0]);
  g.d.conf = &custom;
  char *text = encode_text(fx, &g.d);
  assert_non_null(text);
  assert_string_equal(text, "{\"p_amount\":184.2200000000000000,\"p_time\":"
                            "\"2024-07-24T14:17:02.16Z\",\"p_now\":\"NOW\",\"p_contact\":\"" ZERO_ID
                            "\",\"p_event\":\"csu0|usrt|Checkout|C1|2024-07-24T16:17:02.1600000+02:"
                            "00\",\"p_missing\":null,\"p_customer\":null,\"p_channel\":5637144592,"
                            "\"p_lines\":[{\"ItemId\":\"81143\",\"Qty\":2.0000000000000000}]}");
  free(text);
  /* The same body from the documents as text (the sink then builds partial trees), and with
   * sources that name a whole document. */
  use_texts(&g);
  assert_body_from_text(fx, &g.d);
  struct csr_field_map wholes[] = {{"p_order", "OrderDetails"}, {"p_customer", "CustomerDetails."}};
  custom.fields = wholes;
  custom.n_fields = 2;
  char *whole = encode_text(fx, &g.d);
  assert_non_null(strstr(whole, "\"Lines\":[{\"ItemId\":\"81143\""));
  assert_non_null(strstr(whole, "\"p_customer\":{\"Email\":\"diego@fabrikam.com\""));
  free(whole);
  assert_body_from_text(fx, &g.d);
  custom.fields = fields;
  custom.n_fields = sizeof(fields) / sizeof(fields[0]);
  use_trees(&g);
  /* A custom map needs no order (the email then comes from the customer). */
  g.ev.order = NULL;
  g.ev.customer = g.customer;
  text = encode_text(fx, &g.d);
  assert_non_null(text);
  assert_non_null(strstr(text, "\"p_amount\":null"));
  assert_non_null(strstr(text, "\"p_customer\":\"diego@fabrikam.com\""));
  free(text);
  golden_stop(&g);
  fx_stop(fx);
}

/* No body without an order (default mapping) or without any email; the customer's Email stands
 * in for a blank ReceiptEmail. */
static void test_encode_refusals(void **state) {
  struct fx *fx = fx_start(NULL, NULL, 0, 1);
  struct golden g;
  golden_start(fx, &g);
  g.ev.order = NULL;
  g.ev.customer = g.customer;
  assert_null(encode_text(fx, &g.d));
  static const char blank[] = "{\"ReceiptEmail\":\"   \",\"AmountPaid\":1}";
  yajl_val b = csr_json_parse(blank, strlen(blank), NULL, 0);
  g.ev.order = b;
  g.ev.customer = NULL;
  assert_null(encode_text(fx, &g.d));
  g.ev.customer = g.customer;
  char *text = encode_text(fx, &g.d);
  assert_non_null(strstr(text, "\"msdynmkt_receiptemail\":\"diego@fabrikam.com\""));
  free(text);
  struct csr_jw jw;
  assert_int_equal(csr_jw_init(&jw), 0);
  assert_int_equal(fx->k.sink->ops->encode(fx->k.sink, NULL, &jw), -EINVAL);
  csr_jw_free(&jw);
  csr_json_free(b);
  golden_stop(&g);
  fx_stop(fx);
}

static void test_init_refusals(void **state) {
  struct fx *fx = fx_start(NULL, NULL, 0, 0);
  struct csr_err err;
  struct sk_sink *sink = NULL;
  char *good = fx->k.conf.dataverse_url;
  const char *bad[] = {NULL, "", "ftp://x/", "http://127.0.0.1:9/dataverse"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    fx->k.conf.dataverse_url = (char *)bad[i];
    assert_true(sk_sink_create(&fx->k.conf, &fx->k.env, &sink, &err) < 0);
    assert_null(sink);
    assert_string_equal(err.key, "dataverse_url");
  }
  fx->k.conf.dataverse_url = good;
  fx->k.conf.identity_name = "commerce"; /* no token cache for it */
  assert_true(sk_sink_create(&fx->k.conf, &fx->k.env, &sink, &err) < 0);
  assert_string_equal(err.key, "identity");
  assert_int_equal(err.line, 1);
  fx->k.conf.identity_name = "dataverse";
  fx->k.env.http = NULL;
  assert_true(sk_sink_create(&fx->k.conf, &fx->k.env, &sink, &err) < 0);
  assert_non_null(strstr(err.msg, "HTTP client"));
  fx->k.env.http = &fx->k.http;
  create_sink(fx);
  char why[128] = "";
  assert_int_equal(fx->k.sink->ops->ready(fx->k.sink, why, sizeof(why)), 0);
  fx_stop(fx);
}

/* ---------------------------------------------------------------------------------------------- */
/* Delivered, skipped, and the contact */
/* ---------------------------------------------------------------------------------------------- */

static void test_delivered(void **state) {
  static const struct script sc[] = {
      {"HOUSTON-HOUSTON-17-1721824109286", "001002", "Diego.Fischer+Receipts@Contoso.com"}};
  struct fx *fx = fx_start(NULL, sc, 1, 1);
  uint64_t gets = requests(fx, "contacts_get", 200);
  struct skt_deliv v;
  deliver(fx, &v, 0);
  skt_assert_outcome(&v, SK_DELIVERED, 204, "", -1);
  assert_int_equal(v.in_flight, 0);
  assert_int_equal(fx->k.sink->delivered, 1);
  /* One lookup (exact, with the '+' intact: it found nothing), one create, one trigger call that
   * passed every check of the sim's trigger and ledger. */
  assert_int_equal(requests(fx, "contacts_get", 200), gets + 1);
  assert_int_equal(requests(fx, "contacts_create", 201), 1);
  struct sim_ledger_counts lc = ledger_counts(fx);
  assert_int_equal(lc.contacts_created, 1);
  assert_int_equal(lc.duplicate_emails, 0);
  struct sim_ledger_sink_counts c = trigger_counts(fx);
  assert_int_equal(c.received, 1);
  assert_int_equal(c.unique, 1);
  assert_int_equal(c.unknown, 0);
  assert_int_equal(c.mismatched, 0);
  struct sim_ledger_diff diff;
  assert_int_equal(sim_ledger_diff(fx->k.t.sim.ledger, "trigger", -1, 0, &diff), 0);
  assert_int_equal(diff.expected, 1);
  assert_int_equal(diff.delivered, 1);
  assert_int_equal(diff.missing, 0);
  /* The contact as created: the customer's names and account, the email as chosen. */
  char id[64], path[160];
  cached_contact(fx, &fx->evs[0].ev, id, sizeof(id));
  assert_int_equal(strlen(id), 36);
  assert_string_not_equal(id, ZERO_ID);
  snprintf(path, sizeof(path), "/dataverse/api/data/v9.2/contacts(%s)", id);
  const char *h[] = {st_auth(&fx->k.t, SIM_AUD_DATAVERSE), NULL};
  struct st_resp r;
  assert_int_equal(st_call(&fx->k.t, "GET", path, h, NULL, 0, &r), 0);
  assert_int_equal(r.status, 200);
  yajl_val cust = fx->evs[0].customer;
  assert_string_equal(csr_json_get_str(r.json, "emailaddress1"),
                      "Diego.Fischer+Receipts@Contoso.com");
  assert_string_equal(csr_json_get_str(r.json, "firstname"), csr_json_get_str(cust, "FirstName"));
  assert_string_equal(csr_json_get_str(r.json, "lastname"), csr_json_get_str(cust, "LastName"));
  assert_string_equal(csr_json_get_str(r.json, "msdyn_contactnumber"), "001002");
  st_resp_free(&r);
  assert_non_null(strstr(logbuf, "cij contact created"));
  char why[64];
  assert_int_equal(fx->k.sink->ops->ready(fx->k.sink, why, sizeof(why)), 0);
  fx_stop(fx);
}

static void test_email_fallback_and_skip(void **state) {
  static const struct script sc[] = {
      {"HOUSTON-HOUSTON-17-1721824100001", "001002", ""}, /* POS: no ReceiptEmail */
      {"HOUSTON-HOUSTON-17-1721824100002", "", ""},       /* a guest with no email at all */
      {"HOUSTON-HOUSTON-17-1721824100003", "001001", ""}, /* a contact that already exists */
  };
  struct fx *fx = fx_start(NULL, sc, 3, 1);
  assert_string_equal(csr_json_get_str(fx->evs[0].order, "ReceiptEmail"), "");
  /* A contact made by someone else, the same email in other capitals. */
  const char *email1 = csr_json_get_str(fx->evs[2].customer, "Email");
  assert_non_null(email1);
  char body[256], upper[128];
  snprintf(upper, sizeof(upper), "%s", email1);
  for (char *p = strchr(upper, '@'); p && *p; p++)
    *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
  snprintf(body, sizeof(body), "{\"emailaddress1\":\"%s\",\"lastname\":\"Elsewhere\"}", upper);
  const char *h[] = {st_auth(&fx->k.t, SIM_AUD_DATAVERSE), NULL};
  struct st_resp r;
  assert_int_equal(st_call(&fx->k.t, "POST", "/dataverse/api/data/v9.2/contacts", h, body, 0, &r),
                   0);
  assert_int_equal(r.status, 204);
  const char *ent = strrchr(r.odata_entity_id, '(');
  char existing[64];
  snprintf(existing, sizeof(existing), "%.36s", ent + 1);
  st_resp_free(&r);
  /* The POS order reaches the customer's Email. */
  struct skt_deliv v;
  deliver(fx, &v, 0);
  skt_assert_outcome(&v, SK_DELIVERED, 204, "", -1);
  assert_int_equal(trigger_counts(fx).mismatched, 0);
  /* The guest with no email: skipped, and nothing was sent anywhere. */
  uint64_t before = fx->k.t.sim.requests;
  struct sim_dataverse_stats ds0, ds1;
  sim_dataverse_stats(fx->k.t.sim.dv, &ds0);
  deliver(fx, &v, 1);
  skt_assert_outcome(&v, SK_SKIPPED, 0, "no_email", -1);
  assert_int_equal(fx->k.t.sim.requests, before);
  sim_dataverse_stats(fx->k.t.sim.dv, &ds1);
  assert_int_equal(ds1.lookups, ds0.lookups);
  assert_int_equal(fx->k.sink->skipped, 1);
  /* The existing contact is found by the exact, case-blind filter: no second contact. */
  deliver(fx, &v, 2);
  skt_assert_outcome(&v, SK_DELIVERED, 204, "", -1);
  char id[64];
  cached_contact(fx, &fx->evs[2].ev, id, sizeof(id));
  assert_string_equal(id, existing);
  struct sim_ledger_counts lc = ledger_counts(fx);
  assert_int_equal(lc.contacts_created, 2); /* ours for the POS order, and the one made above */
  struct sim_ledger_sink_counts c = trigger_counts(fx);
  assert_int_equal(c.received, 2);
  assert_int_equal(c.mismatched, 0);
  struct sim_ledger_diff diff;
  assert_int_equal(sim_ledger_diff(fx->k.t.sim.ledger, "trigger", -1, 0, &diff), 0);
  assert_int_equal(diff.skipped_no_email, 1);
  assert_int_equal(diff.unexpected, 0);
  assert_int_equal(diff.missing, 0);
  fx_stop(fx);
}

#define SHARED   "shared.buyer@contoso.com"
#define N_SHARED 20

static void test_single_flight(void **state) {
  static struct script sc[N_SHARED];
  static char txns[N_SHARED][48];
  for (size_t i = 0; i < N_SHARED; i++) {
    snprintf(txns[i], sizeof(txns[i]), "HOUSTON-HOUSTON-17-17218241%05zu", i);
    sc[i] = (struct script){txns[i], "", i % 2 ? SHARED : "Shared.Buyer@Contoso.com"};
  }
  struct fx *fx = fx_start(NULL, sc, N_SHARED, 1);
  static struct skt_deliv v[N_SHARED];
  for (size_t i = 0; i < N_SHARED; i++)
    start(fx, &v[i], i);
  assert_int_equal(fx->k.sink->in_flight, N_SHARED);
  for (size_t i = 0; i < N_SHARED; i++) {
    assert_true(skt_run_until(&fx->k, &v[i].done, 1, GUARD_MS));
    skt_assert_outcome(&v[i], SK_DELIVERED, 204, "", -1);
  }
  st_run_ms(&fx->k.t, 20);
  for (size_t i = 0; i < N_SHARED; i++)
    assert_int_equal(v[i].done, 1);
  /* One lookup and one contact for the twenty (the case of the email does not split them). */
  assert_int_equal(requests(fx, "contacts_get", 200), 1);
  assert_int_equal(requests(fx, "contacts_create", 201), 1);
  struct sim_ledger_counts lc = ledger_counts(fx);
  assert_int_equal(lc.contacts_created, 1);
  assert_int_equal(lc.duplicate_emails, 0);
  struct sim_ledger_sink_counts c = trigger_counts(fx);
  assert_int_equal(c.received, N_SHARED);
  assert_int_equal(c.unique, N_SHARED);
  assert_int_equal(c.mismatched, 0);
  /* The cache: another delivery for the email sends no lookup. */
  struct skt_deliv again;
  deliver(fx, &again, 3);
  skt_assert_outcome(&again, SK_DELIVERED, 204, "", -1);
  assert_int_equal(requests(fx, "contacts_get", 200), 1);
  assert_int_equal(trigger_counts(fx).duplicates, 1);
  assert_int_equal(fx->k.sink->delivered, N_SHARED + 1);
  fx_stop(fx);
}

/* ---------------------------------------------------------------------------------------------- */
/* Failures: classified per call */
/* ---------------------------------------------------------------------------------------------- */

static const struct script two[] = {
    {"HOUSTON-HOUSTON-17-1721824200001", "", "first.buyer@contoso.com"},
    {"HOUSTON-HOUSTON-17-1721824200002", "", "second.buyer@contoso.com"},
};

static void test_trigger_429_503(void **state) {
  struct fx *fx = fx_start("endpoints:\n  trigger:\n    error_rate: 1.0\n    errors: [429]\n"
                           "    retry_after_s: 3\n",
                           two, 2, 1);
  struct skt_deliv v;
  deliver(fx, &v, 0);
  skt_assert_outcome(&v, SK_RETRY, 429, "http_429", 3000);
  assert_non_null(strstr(v.d.excerpt, "0x8"));
  skt_set_faults(&fx->k, "endpoints:\n  trigger:\n    error_rate: 1.0\n    errors: [503]\n");
  deliver(fx, &v, 0);
  skt_assert_outcome(&v, SK_RETRY, 503, "http_503", -1);
  assert_int_equal(fx->k.sink->retried, 2);
  /* Healed: the contact made on the first try is reused. */
  skt_set_faults(&fx->k, "");
  deliver(fx, &v, 0);
  skt_assert_outcome(&v, SK_DELIVERED, 204, "", -1);
  assert_int_equal(requests(fx, "contacts_get", 200), 1);
  assert_int_equal(ledger_counts(fx).contacts_created, 1);
  assert_int_equal(trigger_counts(fx).received, 1);
  fx_stop(fx);
}

static void test_contact_failures(void **state) {
  struct fx *fx =
      fx_start("endpoints:\n  contacts_get:\n    error_rate: 1.0\n    errors: [503]\n", two, 2, 1);
  struct skt_deliv v;
  deliver(fx, &v, 1);
  skt_assert_outcome(&v, SK_RETRY, 503, "contact_lookup: http_503", -1);
  skt_set_faults(&fx->k, "endpoints:\n  contacts_get:\n    error_rate: 1.0\n    errors: [429]\n"
                         "    retry_after_s: 2\n");
  deliver(fx, &v, 1);
  skt_assert_outcome(&v, SK_RETRY, 429, "contact_lookup: http_429", 2000);
  skt_set_faults(&fx->k,
                 "endpoints:\n  contacts_create:\n    error_rate: 1.0\n    errors: [503]\n");
  deliver(fx, &v, 1);
  skt_assert_outcome(&v, SK_RETRY, 503, "contact_create: http_503", -1);
  skt_set_faults(&fx->k,
                 "endpoints:\n  contacts_create:\n    error_rate: 1.0\n    errors: [400]\n");
  deliver(fx, &v, 1);
  skt_assert_outcome(&v, SK_DEAD, 400, "contact_create: http_400", -1);
  assert_true(v.d.excerpt[0] != '\0');
  skt_set_faults(&fx->k, "endpoints:\n  contacts_get:\n    reset_rate: 1.0\n");
  deliver(fx, &v, 1);
  skt_assert_outcome(&v, SK_RETRY, 0, "contact_lookup: reset", -1);
  assert_int_equal(ledger_counts(fx).contacts_created, 0);
  assert_int_equal(trigger_counts(fx).received, 0);
  skt_set_faults(&fx->k, "");
  deliver(fx, &v, 1);
  skt_assert_outcome(&v, SK_DELIVERED, 204, "", -1);
  assert_int_equal(ledger_counts(fx).contacts_created, 1);
  assert_int_equal(fx->k.sink->dead, 1);
  assert_int_equal(fx->k.sink->retried, 4);
  fx_stop(fx);
}

static void test_permanent_400(void **state) {
  struct fx *fx = fx_start(NULL, two, 2, 1);
  /* A map that leaves out a required parameter of the trigger. */
  struct csr_field_map fields[] = {
      {"msdynmkt_amountpaid", "OrderDetails.AmountPaid"},
      {"msdynmkt_channelreferenceid", "OrderDetails.ChannelReferenceId"},
      {"msdynmkt_createddatetime", "OrderDetails.CreatedDateTime"},
      {"msdynmkt_currencycode", "OrderDetails.CurrencyCode"},
      {"msdynmkt_name", "OrderDetails.Name"},
      {"msdynmkt_receiptemail", "OrderDetails.ReceiptEmail"},
      {"msdynmkt_signaltimestamp", "$event_time"},
      {"msdynmkt_signalingestiontimestamp", "$now"},
      {"msdynmkt_signaluserauthid", "$contact_id"},
      {"msdynmkt_profileid", "$contact_id"},
      {"msdynmkt_bindingid", "OrderDetails.InternalTransactionId"},
  };
  struct csr_delivery_conf custom = fx->dconf;
  custom.fields = fields;
  custom.n_fields = sizeof(fields) / sizeof(fields[0]);
  struct skt_deliv v;
  run_ev(fx, &v, &fx->evs[0].ev, &custom);
  skt_assert_outcome(&v, SK_DEAD, 400, "http_400", -1);
  assert_non_null(strstr(v.d.excerpt, "msdynmkt_salesid"));
  assert_int_equal(fx->k.sink->dead, 1);
  /* With the parameter, the same map delivers (and the ledger agrees with every field). */
  struct csr_field_map full[sizeof(fields) / sizeof(fields[0]) + 1];
  memcpy(full, fields, sizeof(fields));
  full[custom.n_fields] = (struct csr_field_map){"msdynmkt_salesid", "OrderDetails.SalesId"};
  custom.fields = full;
  custom.n_fields++;
  run_ev(fx, &v, &fx->evs[0].ev, &custom);
  skt_assert_outcome(&v, SK_DELIVERED, 204, "", -1);
  assert_int_equal(trigger_counts(fx).mismatched, 0);
  /* The default mapping without an order is a configuration mistake: dead, with no call. */
  struct sk_event no_order = fx->evs[1].ev;
  no_order.order_json = NULL;
  no_order.order_json_len = 0;
  uint64_t before = fx->k.t.sim.requests;
  run_ev(fx, &v, &no_order, NULL);
  skt_assert_outcome(&v, SK_DEAD, 0, "no_order", -1);
  /* So is a route without a trigger name. */
  struct csr_delivery_conf nameless = fx->dconf;
  nameless.trigger = NULL;
  run_ev(fx, &v, &fx->evs[1].ev, &nameless);
  skt_assert_outcome(&v, SK_DEAD, 0, "no_trigger", -1);
  nameless.trigger = "msdynmkt_x/../contacts";
  run_ev(fx, &v, &fx->evs[1].ev, &nameless);
  skt_assert_outcome(&v, SK_DEAD, 0, "no_trigger", -1);
  assert_int_equal(fx->k.t.sim.requests, before);
  assert_int_equal(fx->k.sink->dead, 4);
  fx_stop(fx);
}

/* ---------------------------------------------------------------------------------------------- */
/* Tokens */
/* ---------------------------------------------------------------------------------------------- */

static const struct script three[] = {
    {"HOUSTON-HOUSTON-17-1721824300001", "", "first.buyer@contoso.com"},
    {"HOUSTON-HOUSTON-17-1721824300002", "", "first.buyer@contoso.com"},
    {"HOUSTON-HOUSTON-17-1721824300003", "", "second.buyer@contoso.com"},
};

static void wait_elapsed(struct fx *fx, uint64_t ms) {
  while (sim_elapsed_ms(&fx->k.t.sim) < ms)
    st_run_ms(&fx->k.t, 50);
}

static void test_token_revoked(void **state) {
  struct fx *fx = fx_start("tokens:\n  revoke_at_s: 2\n", three, 3, 1);
  struct sim_entra_stats es0, es1;
  struct skt_deliv v;
  /* Before the revocation: the first token serves the lookup, the create and the trigger. */
  deliver(fx, &v, 0);
  skt_assert_outcome(&v, SK_DELIVERED, 204, "", -1);
  assert_true(sim_elapsed_ms(&fx->k.t.sim) < 2000);
  assert_int_equal(pl_tokens_stats(fx->tokens)->fetches, 1);
  /* After it: the trigger call (the contact is cached) gets a 401, the sink refreshes once. */
  wait_elapsed(fx, 2200);
  sim_entra_stats(fx->k.t.sim.entra, &es0);
  deliver(fx, &v, 1);
  skt_assert_outcome(&v, SK_DELIVERED, 204, "", -1);
  sim_entra_stats(fx->k.t.sim.entra, &es1);
  assert_int_equal(es1.issued, es0.issued + 1);
  assert_int_equal(es1.rejected_revoked, es0.rejected_revoked + 1);
  assert_int_equal(pl_tokens_stats(fx->tokens)->fetches, 2);
  assert_int_equal(pl_tokens_stats(fx->tokens)->invalidations, 1);
  /* Revoked again: now the lookup of a new email meets the 401, and refreshes the same way. */
  uint64_t at = sim_elapsed_ms(&fx->k.t.sim) / 1000 + 1;
  char yaml[64];
  snprintf(yaml, sizeof(yaml), "tokens:\n  revoke_at_s: %llu\n", (unsigned long long)at);
  skt_set_faults(&fx->k, yaml);
  wait_elapsed(fx, at * 1000 + 200);
  sim_entra_stats(fx->k.t.sim.entra, &es0);
  uint64_t gets = requests(fx, "contacts_get", 401);
  deliver(fx, &v, 2);
  skt_assert_outcome(&v, SK_DELIVERED, 204, "", -1);
  sim_entra_stats(fx->k.t.sim.entra, &es1);
  assert_int_equal(es1.issued, es0.issued + 1);
  assert_int_equal(requests(fx, "contacts_get", 401), gets + 1);
  assert_int_equal(pl_tokens_stats(fx->tokens)->fetches, 3);
  assert_int_equal(pl_tokens_stats(fx->tokens)->invalidations, 2);
  struct sim_ledger_sink_counts c = trigger_counts(fx);
  assert_int_equal(c.received, 3);
  assert_int_equal(c.mismatched, 0);
  assert_int_equal(fx->k.sink->delivered, 3);
  fx_stop(fx);
}

static void test_401_twice(void **state) {
  struct fx *fx =
      fx_start("endpoints:\n  trigger:\n    error_rate: 1.0\n    errors: [401]\n", two, 2, 1);
  struct skt_deliv v;
  deliver(fx, &v, 0);
  skt_assert_outcome(&v, SK_RETRY, 401, "http_401", -1);
  assert_int_equal(pl_tokens_stats(fx->tokens)->fetches, 2); /* one refresh, not a loop */
  assert_int_equal(requests(fx, "trigger", 401), 2);
  fx_stop(fx);
}

/* ---------------------------------------------------------------------------------------------- */
/* The wire, against our own Dataverse */
/* ---------------------------------------------------------------------------------------------- */

#define WIRE_ID  "11111111-2222-4333-8444-555555555555"
#define FOUND_ID "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
#define MAX_WIRE 16

struct wire_req {
  char method[8];
  char path[128];
  char query[512];
  char accept[64], maxver[16], ver[16], ctype[64], prefer[64];
  char auth[11]; /* "Bearer eyJ": the scheme and the start of a JWT, no more */
  char *body;
};

struct capture {
  struct wire_req reqs[MAX_WIRE];
  int n;
  const char *lookup_answer; /* the body of GET contacts */
  int trigger_status;
  const char *trigger_body;
};

static void on_wire(struct rx_http_request *req, void *arg) {
  struct capture *c = arg;
  assert_true(c->n < MAX_WIRE);
  struct wire_req *w = &c->reqs[c->n++];
  snprintf(w->method, sizeof(w->method), "%s", req->method);
  snprintf(w->path, sizeof(w->path), "%s", req->path);
  snprintf(w->query, sizeof(w->query), "%s", req->query);
  skt_copy_header(req, "Accept", w->accept, sizeof(w->accept));
  skt_copy_header(req, "OData-MaxVersion", w->maxver, sizeof(w->maxver));
  skt_copy_header(req, "OData-Version", w->ver, sizeof(w->ver));
  skt_copy_header(req, "Authorization", w->auth, sizeof(w->auth)); /* "Bearer ..." cut short */
  skt_copy_header(req, "Content-Type", w->ctype, sizeof(w->ctype));
  skt_copy_header(req, "Prefer", w->prefer, sizeof(w->prefer));
  w->body = malloc(req->body_len + 1);
  assert_non_null(w->body);
  memcpy(w->body, req->body, req->body_len + 1);
  const char *json = "application/json; odata.metadata=minimal";
  if (strcmp(req->method, "GET") == 0) {
    rx_http_respond(req, 200, NULL, json, c->lookup_answer, strlen(c->lookup_answer));
  } else if (strcmp(req->path, "/dv/api/data/v9.2/contacts") == 0) {
    rx_http_respond(req, 204,
                    "OData-EntityId: http://127.0.0.1/dv/api/data/v9.2/contacts(" WIRE_ID ")\r\n",
                    NULL, NULL, 0);
  } else {
    const char *b = c->trigger_body ? c->trigger_body : "";
    rx_http_respond(req, c->trigger_status, NULL, json, b, strlen(b));
  }
}

static void assert_dv_headers(const struct wire_req *w, const char *ctype) {
  assert_string_equal(w->accept, "application/json");
  assert_string_equal(w->maxver, "4.0");
  assert_string_equal(w->ver, "4.0");
  assert_string_equal(w->auth, "Bearer eyJ");
  assert_string_equal(w->ctype, ctype);
}

/* Our own Dataverse on a loopback port (tokens still come from the sim), and a customer and an
 * order whose email needs every escape of the filter. */
struct wire {
  struct fx *fx;
  struct rx_http_server srv;
  struct capture cap;
  yajl_val customer, order;
  struct sk_event ev;
};

static struct wire *wire_start(void) {
  static const char cust[] = "{\"AccountNumber\":\"001002\",\"FirstName\":\"Diego\","
                             "\"LastName\":\"Fischer\",\"Email\":\"diego@fabrikam.com\"}";
  static const char order[] = "{\"ReceiptEmail\":\"O'Hara+Tag@Contoso.com\",\"AmountPaid\":"
                              "12.5000000000000000,\"Name\":\"Diego Fischer\"}";
  struct wire *w = calloc(1, sizeof(*w));
  assert_non_null(w);
  w->fx = fx_start(NULL, NULL, 0, 0);
  w->cap = (struct capture){.lookup_answer = "{\"value\":[]}", .trigger_status = 204};
  skt_serve(&w->fx->k, &w->srv, NULL, "/dv/api/data/v9.2/*", on_wire, &w->cap);
  snprintf(w->fx->k.url, sizeof(w->fx->k.url), "http://127.0.0.1:%d/dv/", w->srv.port);
  w->fx->dconf.trigger = "msdynmkt_trig";
  create_sink(w->fx);
  w->customer = csr_json_parse(cust, strlen(cust), NULL, 0);
  w->order = csr_json_parse(order, strlen(order), NULL, 0);
  w->ev = (struct sk_event){.id = "csu0|usrt|Checkout|W1|2024-07-24T14:17:02.16Z",
                            .time_ms = 1721830622160,
                            .order = w->order,
                            .customer = w->customer};
  return w;
}

/* Delivers w->ev with `order` (NULL: the wire's own) and `customer`; the outcome is in `v`. */
static void wire_deliver(struct wire *w, struct skt_deliv *v, const char *order,
                         yajl_val customer) {
  yajl_val o = order ? csr_json_parse(order, strlen(order), NULL, 0) : NULL;
  w->ev.order = o ? o : w->order;
  w->ev.customer = customer;
  run_ev(w->fx, v, &w->ev, NULL);
  w->ev.order = w->order;
  w->ev.customer = w->customer;
  csr_json_free(o);
}

static void wire_stop(struct wire *w) {
  assert_not_logged("O'Hara+Tag@Contoso.com");
  assert_not_logged("guest@example.net");
  assert_not_logged("found@example.net");
  assert_not_logged("Fischer");
  assert_not_logged("María");
  for (int i = 0; i < w->cap.n; i++)
    free(w->cap.reqs[i].body);
  csr_json_free(w->customer);
  csr_json_free(w->order);
  int srv_closed;
  skt_close_server(&w->srv, &srv_closed);
  fx_stop(w->fx);
  assert_int_equal(srv_closed, 1);
  free(w);
}

/* Lookup, create, trigger: exactly what goes on the wire. */
static void test_wire_requests(void **state) {
  struct wire *w = wire_start();
  struct capture *cap = &w->cap;
  struct skt_deliv v;
  wire_deliver(w, &v, NULL, w->customer);
  skt_assert_outcome(&v, SK_DELIVERED, 204, "", -1);
  assert_int_equal(cap->n, 3);
  /* The lookup: an exact filter, the quote doubled, every reserved byte percent-encoded. */
  assert_string_equal(cap->reqs[0].method, "GET");
  assert_string_equal(cap->reqs[0].path, "/dv/api/data/v9.2/contacts");
  assert_string_equal(cap->reqs[0].query,
                      "$select=contactid&$filter=emailaddress1%20eq%20%27O%27%27"
                      "Hara%2BTag%40Contoso.com%27&$top=1");
  assert_dv_headers(&cap->reqs[0], "(none)");
  /* The create: the customer's names and account, representation asked for. */
  assert_string_equal(cap->reqs[1].method, "POST");
  assert_string_equal(cap->reqs[1].query, "$select=contactid");
  assert_dv_headers(&cap->reqs[1], "application/json; charset=utf-8");
  assert_string_equal(cap->reqs[1].prefer, "return=representation");
  assert_string_equal(cap->reqs[1].body,
                      "{\"firstname\":\"Diego\",\"lastname\":\"Fischer\",\"emailaddress1\":"
                      "\"O'Hara+Tag@Contoso.com\",\"msdyn_contactnumber\":\"001002\"}");
  /* The trigger: the id from OData-EntityId (a 204 create), and exactly encode()'s body. */
  assert_string_equal(cap->reqs[2].path, "/dv/api/data/v9.2/msdynmkt_trig");
  assert_dv_headers(&cap->reqs[2], "application/json; charset=utf-8");
  assert_string_equal(cap->reqs[2].prefer, "(none)");
  char *sent = cap->reqs[2].body;
  char *p = strstr(sent, "\"msdynmkt_signalingestiontimestamp\":\"") + 37;
  char *q = strchr(p, '"');
  memmove(p + 3, q, strlen(q) + 1);
  memcpy(p, "NOW", 3);
  struct sk_delivery d = {.event = &w->ev, .conf = &w->fx->dconf};
  char *want = encode_text(w->fx, &d);
  assert_string_equal(sent, want);
  assert_non_null(strstr(sent, "\"msdynmkt_signaluserauthid\":\"" WIRE_ID "\""));
  assert_non_null(strstr(sent, "\"msdynmkt_amountpaid\":12.5000000000000000"));
  assert_non_null(strstr(sent, "\"msdynmkt_signaltimestamp\":\"2024-07-24T14:17:02.16Z\""));
  free(want);
  wire_stop(w);
}

/* A guest's names come from the order's Name; a contact the lookup finds is used as it is. */
static void test_wire_guest_and_found(void **state) {
  struct wire *w = wire_start();
  struct capture *cap = &w->cap;
  struct skt_deliv v;
  wire_deliver(w, &v,
               "{\"ReceiptEmail\":\"guest@example.net\",\"AmountPaid\":1,"
               "\"Name\":\"  Ana   María López \"}",
               NULL);
  skt_assert_outcome(&v, SK_DELIVERED, 204, "", -1);
  assert_int_equal(cap->n, 3);
  assert_string_equal(cap->reqs[1].body, "{\"firstname\":\"Ana\",\"lastname\":\"María López\","
                                         "\"emailaddress1\":\"guest@example.net\"}");
  wire_deliver(w, &v, "{\"ReceiptEmail\":\"one@example.net\",\"AmountPaid\":1,\"Name\":\"Cher\"}",
               NULL);
  assert_string_equal(cap->reqs[4].body,
                      "{\"lastname\":\"Cher\",\"emailaddress1\":\"one@example.net\"}");
  cap->lookup_answer =
      "{\"value\":[{\"@odata.etag\":\"W/\\\"1\\\"\",\"contactid\":\"" FOUND_ID "\"}]}";
  wire_deliver(w, &v, "{\"ReceiptEmail\":\"found@example.net\",\"AmountPaid\":1}", NULL);
  skt_assert_outcome(&v, SK_DELIVERED, 204, "", -1);
  assert_int_equal(cap->n, 8);
  assert_string_equal(cap->reqs[6].method, "GET");
  assert_non_null(strstr(cap->reqs[7].body, "\"msdynmkt_profileid\":\"" FOUND_ID "\""));
  /* An answer that is not a list of ids is transient, not a contact. */
  cap->lookup_answer = "{\"value\":[{\"contactid\":\"not-a-guid\"}]}";
  wire_deliver(w, &v, "{\"ReceiptEmail\":\"odd@example.net\",\"AmountPaid\":1}", NULL);
  skt_assert_outcome(&v, SK_RETRY, 200, "contact_lookup: bad_answer", -1);
  assert_int_equal(cap->n, 9);
  wire_stop(w);
}

/* A cached contact that Dataverse no longer has: the entry is dropped and the delivery retries;
 * a 4xx about another contact, or about one this very delivery found, stays dead. */
static void test_wire_stale_contact(void **state) {
  struct wire *w = wire_start();
  struct capture *cap = &w->cap;
  static const char found[] = "{\"ReceiptEmail\":\"found@example.net\",\"AmountPaid\":1}";
  struct skt_deliv v;
  cap->lookup_answer = "{\"value\":[{\"contactid\":\"" FOUND_ID "\"}]}";
  wire_deliver(w, &v, found, NULL);
  skt_assert_outcome(&v, SK_DELIVERED, 204, "", -1);
  assert_int_equal(cap->n, 2);
  cap->trigger_status = 400;
  cap->trigger_body =
      "{\"error\":{\"code\":\"0x80040217\",\"message\":\"contact With Id = " FOUND_ID
      " Does Not Exist\"}}";
  wire_deliver(w, &v, found, NULL);
  skt_assert_outcome(&v, SK_RETRY, 400, "stale_contact", -1);
  assert_non_null(strstr(v.d.excerpt, "Does Not Exist"));
  assert_int_equal(cap->n, 3); /* the trigger only: the contact came from the cache */
  cap->trigger_status = 204;
  wire_deliver(w, &v, found, NULL);
  skt_assert_outcome(&v, SK_DELIVERED, 204, "", -1);
  assert_int_equal(cap->n, 5);
  assert_string_equal(cap->reqs[3].method, "GET"); /* looked up again */
  /* About another contact: not about ours. */
  cap->lookup_answer = "{\"value\":[]}";
  wire_deliver(w, &v, NULL, w->customer); /* creates WIRE_ID, cached */
  cap->trigger_status = 400;
  wire_deliver(w, &v, NULL, w->customer);
  skt_assert_outcome(&v, SK_DEAD, 400, "http_400", -1);
  assert_int_equal(cap->n, 9);
  /* Found by this delivery (not from the cache): not second-guessed. */
  cap->lookup_answer = "{\"value\":[{\"contactid\":\"" FOUND_ID "\"}]}";
  wire_deliver(w, &v, "{\"ReceiptEmail\":\"fresh@example.net\",\"AmountPaid\":1}", NULL);
  skt_assert_outcome(&v, SK_DEAD, 400, "http_400", -1);
  assert_int_equal(cap->n, 11);
  assert_int_equal(w->fx->k.sink->dead, 2);
  wire_stop(w);
}

/* ---------------------------------------------------------------------------------------------- */
/* Cancel and close */
/* ---------------------------------------------------------------------------------------------- */

static void test_cancel_trigger(void **state) {
  struct fx *fx = fx_start("endpoints:\n  trigger:\n    latency_ms: 5000\n", two, 2, 1);
  struct skt_deliv v;
  start(fx, &v, 0);
  for (int i = 0; i < 100 && requests(fx, "contacts_create", 201) == 0; i++)
    st_run_ms(&fx->k.t, 20);
  st_run_ms(&fx->k.t, 100); /* the trigger call is now held by the latency */
  skt_cancel_in_flight(&fx->k, &v, 50);
  char why[64];
  assert_int_equal(fx->k.sink->ops->ready(fx->k.sink, why, sizeof(why)),
                   0); /* a cancel is no fault */
  fx_stop(fx);
}

static void test_cancel_waiter(void **state) {
  struct fx *fx = fx_start("endpoints:\n  contacts_get:\n    latency_ms: 400\n", three, 3, 1);
  struct skt_deliv a, b;
  start(fx, &a, 0);
  start(fx, &b, 1); /* the same email: waits on a's lookup */
  st_run_ms(&fx->k.t, 50);
  fx->k.sink->ops->cancel(fx->k.sink, &a.d);
  assert_true(skt_run_until(&fx->k, &a.done, 1, GUARD_MS));
  skt_assert_outcome(&a, SK_RETRY, 0, "cancelled", -1);
  assert_int_equal(b.done, 0);
  /* The flight goes on for b, and caches what it found. */
  assert_true(skt_run_until(&fx->k, &b.done, 1, GUARD_MS));
  skt_assert_outcome(&b, SK_DELIVERED, 204, "", -1);
  assert_int_equal(a.done, 1);
  assert_int_equal(requests(fx, "contacts_get", 200), 1);
  assert_int_equal(ledger_counts(fx).contacts_created, 1);
  /* A flight whose only waiter left still fills the cache for the retry. */
  struct skt_deliv c;
  start(fx, &c, 2);
  st_run_ms(&fx->k.t, 50);
  fx->k.sink->ops->cancel(fx->k.sink, &c.d);
  assert_true(skt_run_until(&fx->k, &c.done, 1, GUARD_MS));
  skt_assert_outcome(&c, SK_RETRY, 0, "cancelled", -1);
  for (int i = 0; i < 100 && ledger_counts(fx).contacts_created < 2; i++)
    st_run_ms(&fx->k.t, 20);
  st_run_ms(&fx->k.t, 50);
  assert_int_equal(ledger_counts(fx).contacts_created, 2);
  deliver(fx, &c, 2);
  skt_assert_outcome(&c, SK_DELIVERED, 204, "", -1);
  assert_int_equal(requests(fx, "contacts_get", 200), 2);
  fx_stop(fx);
}

static void test_close_in_flight(void **state) {
  struct fx *fx = fx_start("endpoints:\n  trigger:\n    latency_ms: 5000\n", three, 3, 1);
  struct skt_deliv v[3];
  for (size_t i = 0; i < 3; i++)
    start(fx, &v[i], i);
  for (int i = 0; i < 100 && requests(fx, "contacts_create", 201) < 2; i++)
    st_run_ms(&fx->k.t, 20);
  st_run_ms(&fx->k.t, 100);
  assert_int_equal(fx->k.sink->in_flight, 3);
  uint64_t t0 = rx_now_ms(&fx->k.t.loop);
  sk_sink_close(fx->k.sink, skt_on_sink_closed, &fx->k);
  sk_sink_close(fx->k.sink, skt_on_sink_closed, &fx->k);
  struct skt_deliv extra = {.k = &fx->k, .d = {.event = &fx->evs[0].ev, .done = skt_on_done}};
  assert_int_equal(sk_deliver(fx->k.sink, &extra.d), -ECANCELED);
  char why[64];
  assert_true(fx->k.sink->ops->ready(fx->k.sink, why, sizeof(why)) < 0);
  assert_true(skt_run_until(&fx->k, &fx->k.sink_closed, 1, GUARD_MS));
  assert_true(rx_now_ms(&fx->k.t.loop) - t0 < 2000);
  st_run_ms(&fx->k.t, 50);
  assert_int_equal(fx->k.sink_closed, 1);
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(v[i].done, 1);
    skt_assert_outcome(&v[i], SK_RETRY, 0, "cancelled", -1);
  }
  assert_int_equal(fx->k.seq, 3);
  assert_int_equal(fx->k.close_seq, 3);
  fx_stop(fx);
}

static void test_close_during_flight(void **state) {
  struct fx *fx = fx_start("endpoints:\n  contacts_create:\n    latency_ms: 5000\n", three, 3, 1);
  struct skt_deliv v[3];
  for (size_t i = 0; i < 3; i++)
    start(fx, &v[i], i);
  st_run_ms(&fx->k.t, 200); /* both flights wait on their create */
  uint64_t t0 = rx_now_ms(&fx->k.t.loop);
  sk_sink_close(fx->k.sink, skt_on_sink_closed, &fx->k);
  assert_true(skt_run_until(&fx->k, &fx->k.sink_closed, 1, GUARD_MS));
  assert_true(rx_now_ms(&fx->k.t.loop) - t0 < 2000);
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(v[i].done, 1);
    skt_assert_outcome(&v[i], SK_RETRY, 0, "cancelled", -1);
  }
  assert_int_equal(fx->k.close_seq, 3);
  fx_stop(fx);
}

int main(void) {
  csr_log_set_writer(on_log, NULL);
  csr_log_set_level(CSR_DEBUG);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_encode_default),      cmocka_unit_test(test_encode_custom_map),
      cmocka_unit_test(test_encode_refusals),     cmocka_unit_test(test_init_refusals),
      cmocka_unit_test(test_delivered),           cmocka_unit_test(test_email_fallback_and_skip),
      cmocka_unit_test(test_single_flight),       cmocka_unit_test(test_trigger_429_503),
      cmocka_unit_test(test_contact_failures),    cmocka_unit_test(test_permanent_400),
      cmocka_unit_test(test_token_revoked),       cmocka_unit_test(test_401_twice),
      cmocka_unit_test(test_wire_requests),       cmocka_unit_test(test_wire_guest_and_found),
      cmocka_unit_test(test_wire_stale_contact),  cmocka_unit_test(test_cancel_trigger),
      cmocka_unit_test(test_cancel_waiter),       cmocka_unit_test(test_close_in_flight),
      cmocka_unit_test(test_close_during_flight),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  csr_log_set_writer(NULL, NULL);
  return rc;
}
