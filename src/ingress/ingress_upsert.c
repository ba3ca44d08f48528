/* One attempt of a customer sync job (ingress.h, "Running a job"): the scheduler's sink, whose
 * deliver() runs the whole upsert from the start, so a retry after any step is safe.
 *
 *   account mapped?  yes → PATCH Customers('{account}')   (404: forget it, search once)
 *                    no  → POST Customers/SearchByFields → hit: PATCH; none: POST Customers
 *
 * Each call gets a token from the CSU identity's cache, carries OUN and Bearer, and is judged by
 * sk_classify_http (the sinks' rules: 408, 429, 5xx and transport errors retry, other 4xx are
 * final); a 401 drops the token it carried and repeats that call once. A failed answer's excerpt
 * is replaced by Commerce's own LocalizedMessage when the body has one, so a failed job reports
 * what Commerce said. The outcome goes back to the scheduler through the delivery:
 * SK_DELIVERED with run->a.account set (and whether this attempt created it), SK_RETRY or SK_DEAD.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "csurelay/log.h"
#include "ingress_internal.h"

#define BEARER "Authorization: Bearer "

static void set_outcome(struct sk_delivery *d, enum sk_outcome o, const char *reason,
                        const char *excerpt) {
  d->outcome = o;
  d->retry_after_ms = -1;
  snprintf(d->reason, sizeof(d->reason), "%s", reason);
  snprintf(d->excerpt, sizeof(d->excerpt), "%s", excerpt ? excerpt : "");
}

static void call_cleanup(struct cs_attempt *a) {
  if (a->http_started)
    rx_http_req_cleanup(&a->http);
  a->http_started = false;
  free(a->body);
  free(a->url);
  a->body = a->url = NULL;
}

/* The attempt is over: release what it holds and report (never from inside deliver()). */
static void finish(struct cs_run *run) {
  struct cs_attempt *a = &run->a;
  call_cleanup(a);
  free(a->token);
  a->token = NULL;
  run->it.d->done(run->it.d); /* the scheduler takes its delivery back */
}

/* ---------------------------------------------------------------------------------------------- */
/* Answers                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

/* Commerce's words for a failed answer (dynamics-api section 2.5: LocalizedMessage; an OData
 * error's message as a fallback); without either, sk_classify_http's excerpt stays. */
static void commerce_message(const struct rx_http_req *h, struct sk_delivery *d) {
  if (h->resp_body == NULL || h->resp_len == 0)
    return;
  yajl_val doc = csr_json_parse(h->resp_body, h->resp_len, NULL, 0);
  const char *msg = csr_json_get_str(doc, "LocalizedMessage");
  if (msg == NULL)
    msg = csr_json_get_str(csr_json_get(doc, "error"), "message");
  if (msg != NULL && *msg != '\0')
    csr_copy_utf8(d->excerpt, sizeof(d->excerpt), msg);
  csr_json_free(doc);
}

/* The customer of a SearchByFields answer: the first hit whose Email is the job's email in any
 * case (the search may match prefixes, dynamics-api 2.3). 1 found, 0 none, < 0 malformed. */
static int search_hit(const struct rx_http_req *h, const char *email, char *account, size_t cap) {
  yajl_val doc = csr_json_parse(h->resp_body, h->resp_len, NULL, 0);
  yajl_val value = csr_json_get(doc, "value");
  int rc = YAJL_IS_ARRAY(value) ? 0 : CSR_EPARSE;
  for (size_t i = 0; rc == 0 && i < csr_json_len(value); i++) {
    yajl_val hit = csr_json_at(value, i);
    const char *e = csr_json_get_str(hit, "Email");
    const char *acct = csr_json_get_str(hit, "AccountNumber");
    if (e == NULL || strcasecmp(e, email) != 0 || acct == NULL || *acct == '\0')
      continue;
    rc = strlen(acct) < cap ? 1 : CSR_EPARSE;
    if (rc == 1)
      memcpy(account, acct, strlen(acct) + 1);
  }
  csr_json_free(doc);
  return rc;
}

/* The AccountNumber of a created customer: 1, 0 when the object has none, < 0 not an object. */
static int created_account(const struct rx_http_req *h, char *account, size_t cap) {
  yajl_val doc = csr_json_parse(h->resp_body, h->resp_len, NULL, 0);
  const char *acct = csr_json_get_str(doc, "AccountNumber");
  int rc = YAJL_IS_OBJECT(doc) ? 0 : CSR_EPARSE;
  if (acct != NULL && *acct != '\0' && strlen(acct) < cap) {
    memcpy(account, acct, strlen(acct) + 1);
    rc = 1;
  }
  csr_json_free(doc);
  return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* Calls                                                                                          */
/* ---------------------------------------------------------------------------------------------- */

static void on_answer(struct rx_fut *fut);
static void get_token(struct cs_run *run);

/* The body of the current call into a->body (a copy: g->jw is scratch). */
static int build_body(struct cs_run *run) {
  struct cs_ingress *g = run->g;
  struct cs_attempt *a = &run->a;
  struct csr_jw *jw = &g->jw;
  csr_jw_reset(jw);
  int rc = 0;
  if (a->call == CS_CALL_SEARCH) {
    csr_jw_obj(jw);
    csr_jw_key(jw, "CustomerSearchByFieldCriteria");
    csr_jw_obj(jw);
    csr_jw_key(jw, "Criteria");
    csr_jw_arr(jw);
    csr_jw_obj(jw);
    csr_jw_kstr(jw, "SearchTerm", run->email);
    csr_jw_key(jw, "SearchField");
    csr_jw_obj(jw);
    csr_jw_kstr(jw, "Name", "Email");
    csr_jw_kint(jw, "Value", 3);
    csr_jw_obj_end(jw);
    csr_jw_obj_end(jw);
    csr_jw_arr_end(jw);
    csr_jw_kint(jw, "DataLevelValue", 1);
    csr_jw_obj_end(jw);
    csr_jw_obj_end(jw);
  } else {
    bool create = a->call == CS_CALL_CREATE;
    rc = cs_customer_commerce_body(&run->cust, create, create ? NULL : a->account, jw);
  }
  const char *text;
  size_t len;
  if (rc == 0)
    rc = csr_jw_finish(jw, &text, &len);
  if (rc == 0 && (a->body = malloc(len + 1)) == NULL)
    rc = UV_ENOMEM;
  if (rc == 0)
    memcpy(a->body, text, len + 1);
  csr_jw_reset(jw);
  return rc;
}

static int build_url(struct cs_run *run) {
  struct cs_ingress *g = run->g;
  struct cs_attempt *a = &run->a;
  if (a->call != CS_CALL_PATCH) {
    a->url = strdup(a->call == CS_CALL_SEARCH ? g->search_url : g->create_url);
    return a->url ? 0 : UV_ENOMEM;
  }
  /* Customers('{account}')?api-version=7.3, the key an OData literal, joined as enrich.c does. */
  size_t cap = strlen(g->cfg->ingress.csu->url) + 6 * strlen(a->account) + 64;
  if ((a->url = malloc(cap)) == NULL)
    return UV_ENOMEM;
  int n = pl_enrich_url(g->cfg->ingress.csu->url, PL_FETCH_CUSTOMER, a->account, a->url, cap);
  return n < 0 ? n : 0;
}

static int add_headers(struct cs_run *run) {
  struct cs_attempt *a = &run->a;
  char oun[160];
  snprintf(oun, sizeof(oun), "OUN: %s", run->g->cfg->ingress.csu->oun);
  size_t n = sizeof(BEARER) + strlen(a->token);
  char *auth = malloc(n);
  if (auth == NULL)
    return UV_ENOMEM;
  snprintf(auth, n, BEARER "%s", a->token);
  int rc = rx_http_req_header(&a->http, "Content-Type: application/json");
  if (rc == 0)
    rc = rx_http_req_header(&a->http, "Accept: application/json");
  if (rc == 0)
    rc = rx_http_req_header(&a->http, oun);
  if (rc == 0)
    rc = rx_http_req_header(&a->http, auth);
  free(auth);
  return rc;
}

/* Sends the attempt's current call with its token. < 0: it did not start (nothing in flight). */
static int start_call(struct cs_run *run) {
  struct cs_ingress *g = run->g;
  struct cs_attempt *a = &run->a;
  call_cleanup(a);
  int rc = build_url(run);
  if (rc == 0)
    rc = build_body(run);
  if (rc < 0)
    return rc;
  rx_http_req_init(&a->http);
  a->http_started = true; /* from here on the request holds headers to clean up */
  a->http.data = run;
  a->http.method = a->call == CS_CALL_PATCH ? "PATCH" : "POST";
  a->http.url = a->url;
  a->http.body = a->body;
  a->http.body_len = strlen(a->body);
  a->http.timeout_ms = (long)g->timeout_ms;
  rc = add_headers(run);
  if (rc == 0)
    rc = rx_http_start(g->http, &a->http, on_answer);
  if (rc < 0)
    return rc;
  if (a->call == CS_CALL_SEARCH)
    g->st.searches++;
  return 0;
}

/* Moves the attempt on to `call`; on a failure to start, the attempt ends as a transient one. */
static void next_call(struct cs_run *run, enum cs_call call) {
  run->a.call = call;
  int rc = start_call(run);
  if (rc < 0) {
    set_outcome(run->it.d, SK_RETRY, "transport", csr_strerror(rc));
    finish(run);
  }
}

/* A 2xx: the search tells which call comes next; a PATCH or a POST ends the attempt. */
static void on_success(struct cs_run *run) {
  struct cs_attempt *a = &run->a;
  struct sk_delivery *d = run->it.d;
  int rc;
  switch (a->call) {
    case CS_CALL_SEARCH:
      rc = search_hit(&a->http, run->email, a->account, sizeof(a->account));
      if (rc < 0 || a->cancelled) {
        set_outcome(d, SK_RETRY, a->cancelled ? "cancelled" : "malformed",
                    a->cancelled ? csr_strerror(UV_ECANCELED)
                                 : "a SearchByFields answer without a usable value array");
        finish(run);
        return;
      }
      next_call(run, rc == 1 ? CS_CALL_PATCH : CS_CALL_CREATE);
      return;
    case CS_CALL_PATCH:
      run->created = false;
      break;
    case CS_CALL_CREATE:
      rc = created_account(&a->http, a->account, sizeof(a->account));
      if (rc < 0) /* a truncated answer: the next attempt's search finds what it made */
        set_outcome(d, SK_RETRY, "malformed", "a POST Customers answer that is not a JSON object");
      else if (rc == 0)
        set_outcome(d, SK_DEAD, "no_account", "Commerce answered without an AccountNumber");
      run->created = rc == 1;
      break;
  }
  finish(run);
}

static void on_answer(struct rx_fut *fut) {
  struct cs_run *run = RX_CONTAINER_OF(fut, struct cs_run, a.http.fut);
  struct cs_attempt *a = &run->a;
  struct sk_delivery *d = run->it.d;
  if (fut->result == 0 && a->http.status == 401 && !a->refreshed && !a->cancelled) {
    /* SPEC section 3: a 401 refreshes the token once; only the token this call sent is dropped. */
    a->refreshed = true;
    pl_tokens_invalidate(run->g->tokens, a->token);
    call_cleanup(a);
    get_token(run);
    return;
  }
  sk_classify_http(&a->http, d);
  if (d->outcome == SK_DELIVERED) {
    on_success(run);
    return;
  }
  if (a->call == CS_CALL_PATCH && d->status == 404 && !a->patch_404) {
    if (a->cancelled) { /* not a final answer: the search it calls for was cancelled */
      set_outcome(d, SK_RETRY, "cancelled", csr_strerror(UV_ECANCELED));
      finish(run);
      return;
    }
    /* The mapped customer was deleted or merged: the mapping is only a cache. */
    a->patch_404 = true;
    run->skip_mapping = true;
    a->account[0] = '\0';
    next_call(run, CS_CALL_SEARCH);
    return;
  }
  commerce_message(&a->http, d);
  finish(run);
}

static void on_token(struct rx_fut *fut) {
  struct cs_run *run = RX_CONTAINER_OF(fut, struct cs_run, a.tok.fut);
  struct cs_attempt *a = &run->a;
  a->in_token = false;
  int rc = a->cancelled ? UV_ECANCELED : fut->result;
  if (rc < 0) {
    const struct pl_token_stats *ts = pl_tokens_stats(run->g->tokens);
    char why[256];
    snprintf(why, sizeof(why), "%.60s%s%.180s", csr_strerror(rc), ts->last_error[0] ? ": " : "",
             rc == UV_ECANCELED ? "" : ts->last_error);
    set_outcome(run->it.d, SK_RETRY, rc == UV_ECANCELED ? "cancelled" : "token", why);
    finish(run);
    return;
  }
  free(a->token);
  a->token = strdup(a->tok.token); /* valid during this callback only */
  rc = a->token ? start_call(run) : UV_ENOMEM;
  if (rc < 0) {
    set_outcome(run->it.d, SK_RETRY, "transport", csr_strerror(rc));
    finish(run);
  }
}

static void get_token(struct cs_run *run) {
  struct cs_attempt *a = &run->a;
  a->in_token = true;
  int rc = pl_tokens_get(run->g->tokens, &a->tok, on_token);
  if (rc < 0) {
    a->in_token = false;
    set_outcome(run->it.d, SK_RETRY, "token", csr_strerror(rc));
    finish(run);
  }
}

/* ---------------------------------------------------------------------------------------------- */
/* The sink                                                                                       */
/* ---------------------------------------------------------------------------------------------- */

static int usink_deliver(struct sk_sink *sink, struct sk_delivery *d) {
  struct cs_run *run = d->data;
  struct cs_ingress *g = run->g;
  struct cs_attempt *a = &run->a;
  memset(a, 0, sizeof(*a));
  const char *mapped = run->skip_mapping ? NULL : cs_jobs_account(g->jobs, run->email);
  if (mapped != NULL && *mapped != '\0' && strlen(mapped) < sizeof(a->account)) {
    memcpy(a->account, mapped, strlen(mapped) + 1);
    a->call = CS_CALL_PATCH;
  } else {
    a->call = CS_CALL_SEARCH;
  }
  a->in_token = true;
  int rc = pl_tokens_get(g->tokens, &a->tok, on_token);
  if (rc < 0) {
    a->in_token = false;
    return rc; /* the scheduler counts a failed start */
  }
  run->attempts++;
  return 0;
}

static void usink_cancel(struct sk_sink *sink, struct sk_delivery *d) {
  struct cs_run *run = d->data;
  struct cs_attempt *a = &run->a;
  if (a->cancelled)
    return;
  a->cancelled = true;
  if (a->in_token)
    pl_tokens_cancel(&a->tok); /* completes later with UV_ECANCELED */
  else if (a->http_started)
    rx_http_cancel(&a->http); /* deferred: on_answer runs later */
}

static void usink_close(struct sk_sink *sink, void (*cb)(struct sk_sink *sink)) {
  cb(sink); /* never closed through the registry: the ingress owns it */
}

const struct sk_ops cs__usink_ops = {
    .name = "ingress",
    .description = "the customer sync ingress's Commerce upserts",
    .size = sizeof(struct cs_usink),
    .deliver = usink_deliver,
    .cancel = usink_cancel,
    .close = usink_close,
};

void cs__usink_init(struct cs_ingress *g) {
  struct cs_usink *s = &g->sink;
  memset(s, 0, sizeof(*s));
  s->conf.name = "ingress";
  s->conf.max_in_flight = CS_INGRESS_MAX_IN_FLIGHT;
  s->base.ops = &cs__usink_ops;
  s->base.conf = &s->conf;
  s->g = g;
}
