/* The mqtt sink through the whole relay (issue 5): csusim, a real mosquitto and `csurelay run` as
 * processes on ephemeral loopback ports, with the configuration csusim prints for itself
 * (`--print-config --mqtt URL`: the sink `stores`, topic "commerce/{csu}/{channel}/{type}", QoS 1,
 * routed for both event types, beside the Journeys trigger and the audit webhook). The test raises
 * the trigger's rate, gives `stores` max_in_flight STORES_IN_FLIGHT (so the duplicate bounds below
 * mean something) and shortens the retry backoff as the other end-to-end tests do (base 200 ms,
 * cap 2 s) with the default max_attempts of 10. That holds through test 2's outage because the sink
 * refuses deliveries while it knows it is disconnected (CSR_ELIMIT: the scheduler asks again
 * without spending an attempt); before that, 10 attempts capped at 2 s (~5.5 s) ran out during the
 * 4 s outage plus Paho's reconnect backoff and dead-lettered 26-71 events a run.
 *
 * The subscribers are Paho MQTTAsync clients in this process, QoS 1, with a persistent session
 * (clean session off, a fixed client id): their callbacks, on Paho's threads, only copy each
 * message into a locked inbox; the test's thread reads it. What was generated comes from csusim's
 * ledger (/ledger/events); the events exactly as the relay read them come from csusim's Search
 * endpoint, asked by the test with a token of its own.
 *
 * 1. fanout: every event committed before a cutoff arrives on commerce/{csu}/{EventChannelId}/
 *    {EventType} with EventId = its id, EventDetails = the Search row, OrderDetails the order for a
 *    Checkout (null for AddCartLines), CustomerDetails the customer when there is one; nothing
 *    unknown, nothing twice (a clean run and a clean stop).
 * 2. broker_outage: mosquitto (persistence on, so the subscriber's session and its queue survive)
 *    is stopped with SIGTERM for 4 s under load and started again on the same port. Every event up
 *    to a cutoff arrives; duplicates come only from publishes in flight at the cut: the relay's at
 *    most max_in_flight, all of them at most that plus mosquitto's own in-flight window towards the
 *    subscriber (MOSQ_IN_FLIGHT, resent after its restart). Meanwhile the webhook goes on
 *    delivering, the relay answers /healthz and /readyz (still ready: a sink is reported down only
 *    after 30 s), and /metrics shows the sink disconnected, then reconnected.
 * 3. crash: csurelay is killed with SIGKILL under load 3 times, restarted on the same state each
 *    time, then runs cleanly: every event committed before the clean run reaches the subscriber at
 *    least once; duplicates at most rounds x max_in_flight (printed per kill: each is blamed on the
 *    run its first copy came from), none from the clean run.
 * 4. hundred_stores: 300 scripted events at 100 terminals, topic "stores/{dataarea}/{terminal}",
 *    100 subscribers each on its own exact topic: each gets exactly its 3 events, and nothing else.
 *
 * Duplicates are counted at the subscriber per EventId. A copy carrying the DUP flag is mosquitto
 * sending again what it had sent to the subscriber before its restart (not the relay's doing); the
 * relay's duplicates are the copies without that flag beyond the first. Both are printed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <MQTTAsync.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/timefmt.h"
#include "ittest.h"

#define STORES_IN_FLIGHT 64
#define MAX_SUBS         100
#define CRASH_ROUNDS     3  /* the crash report prints three */
#define MAX_ATTEMPTS     10 /* see the top */
#define MOSQ_IN_FLIGHT   20 /* mosquitto's max_inflight_messages: what it may resend to a client */
#define DATAVERSE_FAULTS "dataverse: {max_requests: 10000000, window_s: 1, max_concurrent: 1000}\n"

/* ---------------------------------------------------------------------------------------------- */
/* Subscribers (Paho's threads touch only `box`, under its lock) */
/* ---------------------------------------------------------------------------------------------- */

struct msg {
  char *topic, *body;
  size_t len;
  int sub;
  int dup; /* mosquitto's own retransmission to this subscriber */
};

struct sub {
  MQTTAsync c;
  int idx;
  char filter[128];
  bool subscribed; /* a SUBACK came since the last connect */
  unsigned connects;
};

/* Static: a Paho callback may still be returning while a client is destroyed. */
static struct {
  pthread_mutex_t lock;
  struct msg *v;
  size_t n, cap;
  struct sub subs[MAX_SUBS];
  int nsubs;
} box = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int on_message(void *ctx, char *topic, int tlen, MQTTAsync_message *m) {
  struct sub *s = ctx;
  struct msg msg = {.topic = strdup(topic),
                    .body = malloc((size_t)m->payloadlen + 1),
                    .len = (size_t)m->payloadlen,
                    .sub = s->idx,
                    .dup = m->dup};
  if (msg.topic == NULL || msg.body == NULL) {
    free(msg.topic);
    free(msg.body);
    return 0; /* not taken: Paho hands it over again */
  }
  memcpy(msg.body, m->payload, msg.len);
  msg.body[msg.len] = '\0';
  pthread_mutex_lock(&box.lock);
  if (box.n == box.cap) {
    size_t cap = box.cap ? box.cap * 2 : 4096;
    struct msg *v = realloc(box.v, cap * sizeof(*v));
    if (v == NULL) {
      pthread_mutex_unlock(&box.lock);
      free(msg.topic);
      free(msg.body);
      return 0;
    }
    box.v = v;
    box.cap = cap;
  }
  box.v[box.n++] = msg;
  pthread_mutex_unlock(&box.lock);
  MQTTAsync_freeMessage(&m);
  MQTTAsync_free(topic);
  return 1;
}

static void on_subscribed(void *ctx, MQTTAsync_successData *r) {
  struct sub *s = ctx;
  pthread_mutex_lock(&box.lock);
  s->subscribed = true;
  pthread_mutex_unlock(&box.lock);
}

/* After the first connect and every automatic reconnect. With a resumed session the subscription
 * is there already; subscribing again only replaces it. */
static void on_connected(void *ctx, char *cause) {
  struct sub *s = ctx;
  pthread_mutex_lock(&box.lock);
  s->subscribed = false;
  s->connects++;
  pthread_mutex_unlock(&box.lock);
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  ro.onSuccess = on_subscribed;
  ro.context = s;
  MQTTAsync_subscribe(s->c, s->filter, 1, &ro);
}

/* A QoS 1 subscriber on `filter` with a persistent session, reconnecting every second. */
static void sub_start(struct it *t, const char *filter) {
  assert_true(box.nsubs < MAX_SUBS);
  struct sub *s = &box.subs[box.nsubs];
  memset(s, 0, sizeof(*s));
  s->idx = box.nsubs++;
  snprintf(s->filter, sizeof(s->filter), "%s", filter);
  char id[64];
  snprintf(id, sizeof(id), "it-sub-%03d", s->idx);
  assert_int_equal(MQTTAsync_create(&s->c, t->mqtt_url, id, MQTTCLIENT_PERSISTENCE_NONE, NULL),
                   MQTTASYNC_SUCCESS);
  assert_int_equal(MQTTAsync_setCallbacks(s->c, s, NULL, on_message, NULL), MQTTASYNC_SUCCESS);
  assert_int_equal(MQTTAsync_setConnected(s->c, s, on_connected), MQTTASYNC_SUCCESS);
  MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer;
  o.cleansession = 0;
  o.keepAliveInterval = 5;
  o.automaticReconnect = 1;
  o.minRetryInterval = 1;
  o.maxRetryInterval = 1;
  o.connectTimeout = 5;
  assert_int_equal(MQTTAsync_connect(s->c, &o), MQTTASYNC_SUCCESS);
}

/* Waits (bounded) until every subscriber has its SUBACK. */
static void subs_wait_ready(struct it *t) {
  int64_t end = it_mono_ms() + it_slow(t, 15000);
  for (;;) {
    int ready = 0;
    pthread_mutex_lock(&box.lock);
    for (int i = 0; i < box.nsubs; i++)
      ready += box.subs[i].subscribed;
    pthread_mutex_unlock(&box.lock);
    if (ready == box.nsubs)
      return;
    if (it_mono_ms() > end)
      fail_msg("%d of %d subscribers subscribed within %ld ms", ready, box.nsubs,
               it_slow(t, 15000));
    it_sleep_ms(20);
  }
}

static size_t box_count(void) {
  pthread_mutex_lock(&box.lock);
  size_t n = box.n;
  pthread_mutex_unlock(&box.lock);
  return n;
}

/* Waits until no message came for `quiet_ms` (at most 10 s, stretched): what the broker still had
 * for the subscribers when the relay stopped. */
static void box_settle(struct it *t, long quiet_ms) {
  int64_t end = it_mono_ms() + it_slow(t, 10000);
  size_t n = box_count();
  int64_t since = it_mono_ms();
  while (it_mono_ms() < end && it_mono_ms() - since < quiet_ms) {
    it_sleep_ms(50);
    size_t m = box_count();
    if (m != n) {
      n = m;
      since = it_mono_ms();
    }
  }
}

/* A copy of message i (its strings stay owned by the box). */
static struct msg box_at(size_t i) {
  pthread_mutex_lock(&box.lock);
  struct msg m = box.v[i];
  pthread_mutex_unlock(&box.lock);
  return m;
}

static void subs_stop(void) {
  for (int i = 0; i < box.nsubs; i++)
    if (box.subs[i].c != NULL)
      MQTTAsync_destroy(&box.subs[i].c);
  pthread_mutex_lock(&box.lock);
  for (size_t i = 0; i < box.n; i++) {
    free(box.v[i].topic);
    free(box.v[i].body);
  }
  free(box.v);
  box.v = NULL;
  box.n = box.cap = 0;
  box.nsubs = 0;
  pthread_mutex_unlock(&box.lock);
}

/* ---------------------------------------------------------------------------------------------- */
/* A string map (open addressing): ids to indexes */
/* ---------------------------------------------------------------------------------------------- */

struct smap {
  char **keys;
  size_t *vals;
  size_t cap, n;
};

static uint64_t hash(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h;
}

static size_t *smap_find(const struct smap *m, const char *key) {
  if (m->cap == 0)
    return NULL;
  for (size_t j = hash(key) & (m->cap - 1); m->keys[j] != NULL; j = (j + 1) & (m->cap - 1))
    if (strcmp(m->keys[j], key) == 0)
      return &m->vals[j];
  return NULL;
}

static void smap_put(struct smap *m, const char *key, size_t val) {
  if (2 * (m->n + 1) > m->cap) {
    struct smap g = {.cap = m->cap ? m->cap * 2 : 1024};
    g.keys = calloc(g.cap, sizeof(*g.keys));
    g.vals = calloc(g.cap, sizeof(*g.vals));
    assert_true(g.keys != NULL && g.vals != NULL);
    for (size_t i = 0; i < m->cap; i++)
      if (m->keys[i] != NULL) {
        size_t j = hash(m->keys[i]) & (g.cap - 1);
        while (g.keys[j] != NULL)
          j = (j + 1) & (g.cap - 1);
        g.keys[j] = m->keys[i];
        g.vals[j] = m->vals[i];
      }
    g.n = m->n;
    free(m->keys);
    free(m->vals);
    *m = g;
  }
  size_t j = hash(key) & (m->cap - 1);
  while (m->keys[j] != NULL && strcmp(m->keys[j], key) != 0)
    j = (j + 1) & (m->cap - 1);
  if (m->keys[j] == NULL) {
    m->keys[j] = strdup(key);
    assert_non_null(m->keys[j]);
    m->n++;
  }
  m->vals[j] = val;
}

static void smap_free(struct smap *m) {
  for (size_t i = 0; i < m->cap; i++)
    free(m->keys[i]);
  free(m->keys);
  free(m->vals);
  memset(m, 0, sizeof(*m));
}

/* ---------------------------------------------------------------------------------------------- */
/* What was received, per EventId */
/* ---------------------------------------------------------------------------------------------- */

struct got {
  unsigned copies;
  unsigned flagged; /* copies with the DUP flag (mosquitto's resends) */
  size_t first;     /* the first copy's index in the box */
};

struct rx {
  struct smap ids; /* EventId -> index in `v` */
  struct got *v;
  size_t n, cap;
  size_t done;     /* box messages read so far */
  size_t unparsed; /* bodies without an EventId */
};

/* Reads the messages that came since the last call. */
static void rx_ingest(struct rx *r) {
  for (size_t n = box_count(); r->done < n; r->done++) {
    struct msg m = box_at(r->done);
    yajl_val doc = csr_json_parse(m.body, m.len, NULL, 0);
    const char *id = csr_json_get_str(doc, "EventId");
    if (id == NULL) {
      if (r->unparsed++ < 5)
        fprintf(stderr, "  message without an EventId on %s: %.300s\n", m.topic, m.body);
      csr_json_free(doc);
      continue;
    }
    size_t *at = smap_find(&r->ids, id);
    if (at == NULL) {
      if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 4096;
        r->v = realloc(r->v, r->cap * sizeof(*r->v));
        assert_non_null(r->v);
      }
      r->v[r->n] = (struct got){.first = r->done};
      smap_put(&r->ids, id, r->n);
      at = smap_find(&r->ids, id);
      r->n++;
    }
    struct got *g = &r->v[*at];
    g->copies++;
    g->flagged += m.dup != 0;
    csr_json_free(doc);
  }
}

static const struct got *rx_get(const struct rx *r, const char *id) {
  size_t *at = smap_find(&r->ids, id);
  return at ? &r->v[*at] : NULL;
}

struct dups {
  long total;   /* copies beyond the first */
  long flagged; /* of them, mosquitto's resends */
  long relay;   /* copies without the DUP flag beyond the first: published again by the relay */
  long ids;     /* events received more than once */
};

static struct dups rx_dups(const struct rx *r) {
  struct dups d = {0};
  for (size_t i = 0; i < r->n; i++) {
    const struct got *g = &r->v[i];
    if (g->copies < 2)
      continue;
    unsigned plain = g->copies - g->flagged;
    d.ids++;
    d.total += g->copies - 1;
    d.flagged += g->flagged;
    d.relay += plain > 1 ? plain - 1 : 0;
  }
  return d;
}

static void rx_free(struct rx *r) {
  smap_free(&r->ids);
  free(r->v);
  memset(r, 0, sizeof(*r));
}

/* ---------------------------------------------------------------------------------------------- */
/* What was generated: the ledger's events */
/* ---------------------------------------------------------------------------------------------- */

struct gen {
  char id[200];
  char type[16];
  unsigned csu;
  int64_t committed;
  bool order; /* a Checkout with an order: its binding (InternalTransactionId) */
  char binding[64];
};

struct genv {
  struct gen *v;
  size_t n, cap;
  struct smap ids;
};

static void on_gen(yajl_val ev, void *arg) {
  struct genv *g = arg;
  if (g->n == g->cap) {
    g->cap = g->cap ? g->cap * 2 : 4096;
    g->v = realloc(g->v, g->cap * sizeof(*g->v));
    assert_non_null(g->v);
  }
  struct gen *e = &g->v[g->n];
  memset(e, 0, sizeof(*e));
  snprintf(e->id, sizeof(e->id), "%s", csr_json_get_str(ev, "id"));
  snprintf(e->type, sizeof(e->type), "%s", csr_json_get_str(ev, "type"));
  e->csu = (unsigned)it_int(ev, "csu");
  e->committed = it_time_ms(csr_json_get_str(ev, "committed"));
  const char *binding = csr_json_get_str(ev, "binding");
  e->order = binding != NULL;
  snprintf(e->binding, sizeof(e->binding), "%s", binding ? binding : "");
  smap_put(&g->ids, e->id, g->n);
  g->n++;
}

static void gen_load(struct it *t, struct genv *g) {
  it_ledger_each(t, on_gen, g);
}

static const struct gen *gen_get(const struct genv *g, const char *id) {
  size_t *at = smap_find(&g->ids, id);
  return at ? &g->v[*at] : NULL;
}

static void gen_free(struct genv *g) {
  smap_free(&g->ids);
  free(g->v);
  memset(g, 0, sizeof(*g));
}

/* Asks the relay about an event the subscriber has not seen (diagnostics). */
static void ask_relay(struct it *t, const char *id) {
  if (t->admin_url[0] == '\0')
    return;
  char url[1024], esc[768];
  snprintf(url, sizeof(url), "%s/v1/events/%s", t->admin_url, it_escape(id, esc, sizeof(esc)));
  struct it_resp r;
  it_http(t, "GET", url, NULL, &r);
  fprintf(stderr, "  relay on %s: %ld %.1500s\n", id, r.status, r.body ? r.body : "");
  it_resp_free(&r);
}

/*
 * Waits (bounded) until every event committed before `cutoff` was received at least once; loads
 * the ledger into `g` first. Returns how many that is.
 */
static size_t wait_received(struct it *t, struct rx *r, struct genv *g, int64_t cutoff,
                            long deadline_ms) {
  gen_load(t, g);
  size_t want = 0;
  for (size_t i = 0; i < g->n; i++)
    want += g->v[i].committed < cutoff;
  int64_t start = it_mono_ms(), end = start + it_slow(t, deadline_ms);
  for (;;) {
    rx_ingest(r);
    size_t missing = 0;
    const char *first = NULL;
    for (size_t i = 0; i < g->n; i++)
      if (g->v[i].committed < cutoff && rx_get(r, g->v[i].id) == NULL) {
        missing++;
        first = first ? first : g->v[i].id;
      }
    if (missing == 0) {
      fprintf(stderr, "[%s] all %zu events committed before the cutoff received after %lld ms\n",
              t->name, want, (long long)(it_mono_ms() - start));
      return want;
    }
    if (it_mono_ms() > end) {
      size_t shown = 0;
      for (size_t i = 0; i < g->n && shown < 5; i++) {
        if (g->v[i].committed >= cutoff || rx_get(r, g->v[i].id) != NULL)
          continue;
        fprintf(stderr, "  missing %s (%s, committed %lld ms before the cutoff)\n", g->v[i].id,
                g->v[i].type, (long long)(cutoff - g->v[i].committed));
        shown++;
      }
      ask_relay(t, first);
      fail_msg("%zu of %zu events committed before the cutoff not received within %ld ms", missing,
               want, it_slow(t, deadline_ms));
    }
    if (t->relay.pid > 0 && t->admin_url[0] != '\0') {
      char url[128];
      struct it_resp h;
      snprintf(url, sizeof(url), "%s/healthz", t->admin_url);
      if (it_http(t, "GET", url, NULL, &h) != 200)
        fail_msg("the relay stopped answering /healthz while the subscriber waited");
      it_resp_free(&h);
    }
    it_sleep_ms(200);
  }
}

/* ---------------------------------------------------------------------------------------------- */
/* The events as the relay read them: csusim's Search, with a token of the test's own */
/* ---------------------------------------------------------------------------------------------- */

struct rows {
  yajl_val docs[64];
  size_t ndocs;
  struct smap keys; /* "csuN|area|type|txn|ms" -> index into `v` */
  yajl_val *v;
  size_t n, cap;
};

/* The ledger id "csuN|area|type|txn|time" as the rows' key (the time as milliseconds). */
static void id_key(const char *id, char *buf, size_t len) {
  const char *last = strrchr(id, '|');
  assert_non_null(last);
  snprintf(buf, len, "%.*s|%lld", (int)(last - id), id, (long long)it_time_ms(last + 1));
}

static void rows_load(struct it *t, struct rows *rs) {
  static const char *const hdr_form[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
  char url[256];
  struct it_resp r;
  snprintf(url, sizeof(url), "%s/csusim.onmicrosoft.com/oauth2/v2.0/token", t->sim_url);
  if (it_http_hdrs(t, "POST", url, hdr_form,
                   "client_id=csurelay&client_secret=" IT_SECRET
                   "&grant_type=client_credentials&scope=api%3A%2F%2Fcommerce%2F.default",
                   &r) != 200 ||
      csr_json_get_str(r.json, "access_token") == NULL)
    fail_msg("token: %ld %.300s", r.status, r.body ? r.body : "");
  char auth[4096];
  snprintf(auth, sizeof(auth), "Authorization: Bearer %s",
           csr_json_get_str(r.json, "access_token"));
  it_resp_free(&r);
  char from[CSR_TIME_BUF], to[CSR_TIME_BUF];
  csr_time_format(it_wall_ms() - 2 * 3600 * 1000, from, sizeof(from));
  csr_time_format(it_wall_ms() + 3600 * 1000, to, sizeof(to));
  static const char *const types[] = {"Checkout", "AddCartLines"};
  for (unsigned c = 0; c < t->csus; c++)
    for (int k = 0; k < 2; k++) {
      char oun[32], body[512];
      snprintf(oun, sizeof(oun), "OUN: %u", 128 + c);
      const char *const hdrs[] = {oun, auth, "Content-Type: application/json", NULL};
      snprintf(url, sizeof(url),
               "%s/csu%u/Commerce/CommerceEventsController/Search?api-version=7.3", t->sim_url, c);
      snprintf(body, sizeof(body),
               "{\"commerceEventSearchCriteria\":{\"EventType\":\"%s\",\"EventDateTimeFrom\":"
               "\"%s\",\"EventDateTimeTo\":\"%s\"}}",
               types[k], from, to);
      if (it_http_hdrs(t, "POST", url, hdrs, body, &r) != 200 || r.json == NULL)
        fail_msg("Search csu%u %s: %ld %.300s", c, types[k], r.status, r.body ? r.body : "");
      assert_true(rs->ndocs < sizeof(rs->docs) / sizeof(rs->docs[0]));
      yajl_val doc = rs->docs[rs->ndocs++] = r.json;
      r.json = NULL;
      it_resp_free(&r);
      yajl_val value = csr_json_get(doc, "value");
      for (size_t i = 0; i < csr_json_len(value); i++) {
        yajl_val row = csr_json_at(value, i);
        char key[400];
        snprintf(key, sizeof(key), "csu%u|%s|%s|%s|%lld", c,
                 csr_json_get_str(row, "EventDataAreaId"), csr_json_get_str(row, "EventType"),
                 csr_json_get_str(row, "EventTransactionId"),
                 (long long)it_time_ms(csr_json_get_str(row, "EventDateTime")));
        if (rs->n == rs->cap) {
          rs->cap = rs->cap ? rs->cap * 2 : 4096;
          rs->v = realloc(rs->v, rs->cap * sizeof(*rs->v));
          assert_non_null(rs->v);
        }
        rs->v[rs->n] = row;
        smap_put(&rs->keys, key, rs->n++);
      }
    }
}

static yajl_val rows_get(const struct rows *rs, const char *id) {
  char key[400];
  id_key(id, key, sizeof(key));
  size_t *at = smap_find(&rs->keys, key);
  return at ? rs->v[*at] : NULL;
}

static void rows_free(struct rows *rs) {
  for (size_t i = 0; i < rs->ndocs; i++)
    csr_json_free(rs->docs[i]);
  smap_free(&rs->keys);
  free(rs->v);
  memset(rs, 0, sizeof(*rs));
}

/* Deep equality; numbers by their text, members in any order. */
static bool json_eq(yajl_val a, yajl_val b) {
  if (a == NULL || b == NULL)
    return a == b;
  if (a->type != b->type)
    return false;
  switch (a->type) {
    case yajl_t_string:
      return strcmp(a->u.string, b->u.string) == 0;
    case yajl_t_number:
      return strcmp(csr_json_num_text(a), csr_json_num_text(b)) == 0;
    case yajl_t_array:
      if (a->u.array.len != b->u.array.len)
        return false;
      for (size_t i = 0; i < a->u.array.len; i++)
        if (!json_eq(a->u.array.values[i], b->u.array.values[i]))
          return false;
      return true;
    case yajl_t_object:
      if (a->u.object.len != b->u.object.len)
        return false;
      for (size_t i = 0; i < a->u.object.len; i++)
        if (!json_eq(a->u.object.values[i], csr_json_get(b, a->u.object.keys[i])))
          return false;
      return true;
    default:
      return true; /* true, false, null */
  }
}

/* ---------------------------------------------------------------------------------------------- */
/* The relay's configuration: csusim's own, adjusted */
/* ---------------------------------------------------------------------------------------------- */

static void config_write(struct it *t, const char *topic) {
  it_config_print(t, t->mqtt_url);
  it_config_edit(t, "max_in_flight: 16, rate_per_s: 40", "max_in_flight: 32, rate_per_s: 2000");
  char stores[256];
  snprintf(stores, sizeof(stores), "topic: \"%s\", qos: 1, max_in_flight: %d}",
           topic ? topic : "commerce/{csu}/{channel}/{type}", STORES_IN_FLIGHT);
  it_config_edit(t, "topic: \"commerce/{csu}/{channel}/{type}\", qos: 1}", stores);
  char head[160];
  snprintf(head, sizeof(head),
           "log: {level: info}\nretry: {base_ms: 200, cap_ms: 2000, max_attempts: %d}\n"
           "identities:\n",
           MAX_ATTEMPTS);
  it_config_edit(t, "identities:\n", head);
}

/* Starts csusim, mosquitto, the subscriber(s) (`filters`, NULL-terminated) and the relay. */
static void start_all(struct it *t, const struct it_sim_opts *so, bool persist, const char *topic,
                      const char *const *filters) {
  it_sim_start(t, so);
  it_broker_start(t, persist);
  for (size_t i = 0; filters[i] != NULL; i++)
    sub_start(t, filters[i]);
  subs_wait_ready(t);
  config_write(t, topic);
  it_relay_start(t);
}

static double stores_metric(struct it *t, const char *name) {
  char series[160];
  snprintf(series, sizeof(series), "csurelay_sink_mqtt_%s{sink=\"stores\"}", name);
  return it_metric(t, series);
}

/* The subscriber may have a message before the relay has its PUBACK (mosquitto forwards, then
 * acks; Paho hands the ack to the loop): waits up to timeout_ms for the sink to count `want`. */
static void wait_stores_acked(struct it *t, size_t want, int64_t timeout_ms) {
  int64_t until = it_mono_ms() + timeout_ms;
  while (it_mono_ms() < until &&
         (stores_metric(t, "acked_total") < (double)want ||
          it_metric(t, "csurelay_delivered_total{sink=\"stores\"}") < (double)want))
    it_sleep_ms(50);
}

static void print_stores_metrics(struct it *t) {
  fprintf(stderr,
          "[%s] /metrics stores: connected %.0f published %.0f acked %.0f in_flight %.0f "
          "reconnects %.0f failures %.0f timeouts %.0f ack latency %.1f ms; delivered %.0f "
          "retried %.0f dead %.0f\n",
          t->name, stores_metric(t, "connected"), stores_metric(t, "published_total"),
          stores_metric(t, "acked_total"), stores_metric(t, "in_flight"),
          stores_metric(t, "reconnects_total"), stores_metric(t, "publish_failures_total"),
          stores_metric(t, "timeouts_total"), stores_metric(t, "ack_latency_ms"),
          it_metric(t, "csurelay_delivered_total{sink=\"stores\"}"),
          it_metric(t, "csurelay_retried_total{sink=\"stores\"}"),
          it_metric(t, "csurelay_dead_total{sink=\"stores\"}"));
}

static void print_dups(struct it *t, const struct rx *r, const struct dups *d) {
  fprintf(stderr,
          "[%s] subscriber: %zu messages, %zu events; duplicates %ld (%ld events): %ld published "
          "again by the relay, %ld resent by mosquitto (DUP flag)\n",
          t->name, r->done, r->n, d->total, d->ids, d->relay, d->flagged);
}

/* Every received message has an EventId the ledger knows. */
static void assert_all_known(const struct rx *r, const struct genv *g) {
  size_t unknown = 0;
  for (size_t i = 0; i < r->ids.cap; i++)
    if (r->ids.keys[i] != NULL && gen_get(g, r->ids.keys[i]) == NULL && unknown++ < 5)
      fprintf(stderr, "  unknown EventId %s\n", r->ids.keys[i]);
  assert_int_equal(unknown, 0);
  assert_int_equal(r->unparsed, 0);
}

static int64_t webhook_delivered(struct it *t) {
  struct it_diff d;
  it_diff(t, "webhook:audit", NULL, 0, &d);
  int64_t n = d.delivered;
  it_diff_free(&d);
  return n;
}

/* ---------------------------------------------------------------------------------------------- */
/* 1. Topic and body of every event, each exactly once */
/* ---------------------------------------------------------------------------------------------- */

static const char *str_or(const char *s) {
  return s ? s : "";
}

/* Checks one received message against the generated event and its Search row: 1 (printed when
 * `print`) when it is wrong. */
static int check_message(const struct msg *m, const struct gen *e, yajl_val row, bool print) {
  char why[320] = "";
  yajl_val doc = csr_json_parse(m->body, m->len, NULL, 0);
  char topic[256];
  const char *chan = csr_json_num_text(csr_json_get(row, "EventChannelId"));
  snprintf(topic, sizeof(topic), "commerce/csu%u/%s/%s", e->csu, chan ? chan : "?", e->type);
  yajl_val order = csr_json_get(doc, "OrderDetails"), cust = csr_json_get(doc, "CustomerDetails");
  const char *customer = csr_json_get_str(row, "EventCustomerId");
  if (row == NULL)
    snprintf(why, sizeof(why), "no Search row for the event");
  else if (strcmp(m->topic, topic) != 0)
    snprintf(why, sizeof(why), "topic %.100s, want %.100s", m->topic, topic);
  else if (doc == NULL || csr_json_get_str(doc, "EventId") == NULL ||
           strcmp(csr_json_get_str(doc, "EventId"), e->id) != 0)
    snprintf(why, sizeof(why), "EventId is not the event's id");
  else if (!json_eq(csr_json_get(doc, "EventDetails"), row))
    snprintf(why, sizeof(why), "EventDetails differ from the Search row");
  else if (!YAJL_IS_OBJECT(doc) || doc->u.object.len != 4 || order == NULL || cust == NULL)
    snprintf(why, sizeof(why), "not exactly EventId, EventDetails, OrderDetails, CustomerDetails");
  else if (strcmp(e->type, "Checkout") == 0 && e->order &&
           (!YAJL_IS_OBJECT(order) ||
            strcmp(str_or(csr_json_get_str(order, "InternalTransactionId")), e->binding) != 0 ||
            strcmp(str_or(csr_json_get_str(order, "Id")),
                   csr_json_get_str(row, "EventTransactionId")) != 0))
    snprintf(why, sizeof(why), "OrderDetails is not the order %s", e->binding);
  else if (strcmp(e->type, "AddCartLines") == 0 && !YAJL_IS_NULL(order))
    snprintf(why, sizeof(why), "OrderDetails for an AddCartLines");
  else if (customer != NULL && customer[0] != '\0' &&
           (!YAJL_IS_OBJECT(cust) ||
            strcmp(str_or(csr_json_get_str(cust, "AccountNumber")), customer) != 0))
    snprintf(why, sizeof(why), "CustomerDetails is not customer %s", customer);
  else if ((customer == NULL || customer[0] == '\0') && !YAJL_IS_NULL(cust))
    snprintf(why, sizeof(why), "CustomerDetails for a guest");
  csr_json_free(doc);
  if (why[0] == '\0')
    return 0;
  if (print)
    fprintf(stderr, "  %s: %s\n    topic %s body %.600s\n", e->id, why, m->topic, m->body);
  return 1;
}

static void test_fanout(void **state) {
  struct it *t = *state;
  int64_t t0 = it_mono_ms();
  it_setup(t, "mqtt_fanout");
  const char *const filters[] = {"commerce/#", NULL};
  start_all(
      t, &(struct it_sim_opts){.csus = 4, .rate = 100, .seed = 51, .faults_yaml = DATAVERSE_FAULTS},
      false, NULL, filters);

  it_sleep_ms(8000);
  int64_t cutoff = it_wall_ms();
  struct rx r = {0};
  struct genv g = {0};
  size_t want = wait_received(t, &r, &g, cutoff, 40000);
  assert_true(want >= 400);
  wait_stores_acked(t, want, 5000);
  print_stores_metrics(t);
  assert_int_equal(stores_metric(t, "connected"), 1);
  assert_int_equal(stores_metric(t, "reconnects_total"), 0);
  assert_true(stores_metric(t, "acked_total") >= (double)want);
  assert_true(it_metric(t, "csurelay_delivered_total{sink=\"stores\"}") >= (double)want);
  assert_int_equal(it_metric(t, "csurelay_dead_total{sink=\"stores\"}"), 0);
  assert_int_equal(it_relay_stop(t, 15000, NULL), 0);
  box_settle(t, 500);
  rx_ingest(&r);

  /* Everything received, before the cutoff or not, against the ledger and the Search rows (read
   * after the stop, so they hold every event the relay can have read). */
  gen_free(&g);
  gen_load(t, &g);
  struct rows rs = {0};
  rows_load(t, &rs);
  assert_all_known(&r, &g);
  size_t bad = 0, checkouts = 0, orders = 0, addcartlines = 0, twice = 0;
  for (size_t i = 0; i < r.ids.cap; i++) {
    if (r.ids.keys[i] == NULL)
      continue;
    const struct got *got = &r.v[r.ids.vals[i]];
    const struct gen *e = gen_get(&g, r.ids.keys[i]);
    struct msg m = box_at(got->first);
    if (got->copies != 1 && twice++ < 5)
      fprintf(stderr, "  %s received %u times\n", e->id, got->copies);
    bad += (size_t)check_message(&m, e, rows_get(&rs, e->id), bad < 5);
    bool co = strcmp(e->type, "Checkout") == 0;
    checkouts += co;
    orders += co && e->order;
    addcartlines += !co;
  }
  fprintf(stderr,
          "[%s] %zu events committed before the cutoff (of %zu generated); received %zu events "
          "(%zu Checkouts, %zu of them with an order, %zu AddCartLines) in %zu messages; %zu "
          "wrong, %zu received more than once\n",
          t->name, want, g.n, r.n, checkouts, orders, addcartlines, r.done, bad, twice);
  assert_int_equal(bad, 0);
  assert_int_equal(twice, 0);
  assert_int_equal(r.done, r.n);
  assert_true(checkouts >= 50 && orders >= 50 && addcartlines >= 100);
  rows_free(&rs);
  gen_free(&g);
  rx_free(&r);
  fprintf(stderr, "[%s] took %lld ms\n", t->name, (long long)(it_mono_ms() - t0));
  it_pass(t);
}

/* ---------------------------------------------------------------------------------------------- */
/* 2. The broker stopped under load */
/* ---------------------------------------------------------------------------------------------- */

static void test_broker_outage(void **state) {
  struct it *t = *state;
  int64_t t0 = it_mono_ms();
  it_setup(t, "mqtt_broker_outage");
  const char *const filters[] = {"commerce/#", NULL};
  start_all(
      t, &(struct it_sim_opts){.csus = 4, .rate = 150, .seed = 52, .faults_yaml = DATAVERSE_FAULTS},
      true, NULL, filters);
  it_sleep_ms(4000);
  assert_true(box_count() > 0);

  int64_t hooks_before = webhook_delivered(t);
  size_t msgs_before = box_count();
  it_broker_stop(t);
  int64_t down = it_mono_ms();
  it_sleep_ms(1500);
  char url[128];
  struct it_resp resp;
  snprintf(url, sizeof(url), "%s/healthz", t->admin_url);
  assert_int_equal(it_http(t, "GET", url, NULL, &resp), 200);
  it_resp_free(&resp);
  snprintf(url, sizeof(url), "%s/readyz", t->admin_url);
  long ready = it_http(t, "GET", url, NULL, &resp);
  fprintf(stderr, "[%s] broker down for %lld ms: /readyz %ld %s\n", t->name,
          (long long)(it_mono_ms() - down), ready, resp.body ? resp.body : "");
  assert_int_equal(ready, 200); /* a sink counts as down for /readyz only after 30 s */
  it_resp_free(&resp);
  assert_int_equal(stores_metric(t, "connected"), 0);
  long left = 4000 - (long)(it_mono_ms() - down);
  if (left > 0)
    it_sleep_ms(left);
  int64_t hooks_during = webhook_delivered(t) - hooks_before;
  fprintf(stderr, "[%s] during the %lld ms outage: %lld webhook deliveries, %zu MQTT messages\n",
          t->name, (long long)(it_mono_ms() - down), (long long)hooks_during,
          box_count() - msgs_before);
  assert_true(hooks_during >= 100); /* ~600 events were generated meanwhile */

  it_broker_restart(t);
  fprintf(stderr, "[%s] mosquitto started again after %lld ms\n", t->name,
          (long long)(it_mono_ms() - down));
  it_sleep_ms(4000);
  int64_t cutoff = it_wall_ms();
  struct rx r = {0};
  struct genv g = {0};
  size_t want = wait_received(t, &r, &g, cutoff, 60000);
  static const char *const hook[] = {"webhook:audit", NULL};
  it_wait_complete(t, hook, cutoff, 30000);
  print_stores_metrics(t);
  assert_int_equal(stores_metric(t, "connected"), 1);
  assert_true(stores_metric(t, "reconnects_total") >= 1);
  assert_int_equal(it_metric(t, "csurelay_dead_total{sink=\"stores\"}"), 0);
  assert_int_equal(it_relay_stop(t, 15000, NULL), 0);
  box_settle(t, 500);
  rx_ingest(&r);
  gen_free(&g);
  gen_load(t, &g);
  assert_all_known(&r, &g);
  struct dups d = rx_dups(&r);
  print_dups(t, &r, &d);
  fprintf(stderr,
          "[%s] %zu events committed before the cutoff, all received; bounds: %d by the "
          "relay (max_in_flight), %d in all (+ mosquitto's in-flight window)\n",
          t->name, want, STORES_IN_FLIGHT, STORES_IN_FLIGHT + MOSQ_IN_FLIGHT);
  assert_true(d.relay <= STORES_IN_FLIGHT);
  assert_true(d.total <= STORES_IN_FLIGHT + MOSQ_IN_FLIGHT);
  gen_free(&g);
  rx_free(&r);
  fprintf(stderr, "[%s] took %lld ms\n", t->name, (long long)(it_mono_ms() - t0));
  it_pass(t);
}

/* ---------------------------------------------------------------------------------------------- */
/* 3. kill -9 of the relay under load */
/* ---------------------------------------------------------------------------------------------- */

static void test_crash(void **state) {
  struct it *t = *state;
  int64_t t0 = it_mono_ms();
  it_setup(t, "mqtt_crash");
  const char *const filters[] = {"commerce/#", NULL};
  it_sim_start(t, &(struct it_sim_opts){
                      .csus = 4, .rate = 150, .seed = 53, .faults_yaml = DATAVERSE_FAULTS});
  it_broker_start(t, false);
  sub_start(t, filters[0]);
  subs_wait_ready(t);
  config_write(t, NULL);
  it_sleep_ms(2500); /* a backlog past the relay's settle time, so even the first round publishes */

  static const long after_ms[CRASH_ROUNDS] = {1700, 2300, 2900};
  size_t upto[CRASH_ROUNDS]; /* the box's size once what round k's relay published was in */
  for (int round = 0; round < CRASH_ROUNDS; round++) {
    size_t before = box_count();
    it_relay_spawn(t);
    it_sleep_ms(it_slow(t, after_ms[round]));
    it_relay_kill(t);
    box_settle(t, 300);
    upto[round] = box_count();
    fprintf(stderr, "[%s] kill %d after %ld ms: %zu messages meanwhile\n", t->name, round + 1,
            it_slow(t, after_ms[round]), upto[round] - before);
  }
  assert_true(box_count() > 0); /* the rounds published between the kills */

  int64_t cutoff = it_wall_ms();
  it_relay_start(t);
  struct rx r = {0};
  struct genv g = {0};
  size_t want = wait_received(t, &r, &g, cutoff, 60000);
  print_stores_metrics(t);
  assert_int_equal(it_metric(t, "csurelay_dead_total{sink=\"stores\"}"), 0);
  assert_int_equal(it_relay_stop(t, 15000, NULL), 0);
  box_settle(t, 500);
  rx_ingest(&r);
  gen_free(&g);
  gen_load(t, &g);
  assert_all_known(&r, &g);
  struct dups d = rx_dups(&r);
  print_dups(t, &r, &d);
  /* Each duplicate blamed on the kill that ended the run its first copy came from. */
  long per_kill[CRASH_ROUNDS + 1] = {0};
  for (size_t i = 0; i < r.n; i++) {
    int k = 0;
    while (k < CRASH_ROUNDS && r.v[i].first >= upto[k])
      k++;
    per_kill[k] += r.v[i].copies - 1;
  }
  fprintf(stderr,
          "[%s] %zu events committed before the clean run, all received; duplicates per kill %ld, "
          "%ld, %ld (clean run %ld); bound %d (%d kills x max_in_flight %d)\n",
          t->name, want, per_kill[0], per_kill[1], per_kill[2], per_kill[CRASH_ROUNDS],
          CRASH_ROUNDS * STORES_IN_FLIGHT, CRASH_ROUNDS, STORES_IN_FLIGHT);
  assert_int_equal(per_kill[CRASH_ROUNDS], 0);
  assert_true(d.total <= CRASH_ROUNDS * STORES_IN_FLIGHT);
  gen_free(&g);
  rx_free(&r);
  fprintf(stderr, "[%s] took %lld ms\n", t->name, (long long)(it_mono_ms() - t0));
  it_pass(t);
}

/* ---------------------------------------------------------------------------------------------- */
/* 4. 100 store topics, a subscriber each */
/* ---------------------------------------------------------------------------------------------- */

#define STORES           100
#define EVENTS_PER_STORE 3 /* two AddCartLines, then the Checkout */

/* The store of an event of the script: its EventTransactionId is "STORE-nnn-CART". */
static int store_of(const char *id) {
  const char *p = strstr(id, "|STORE-");
  return p ? atoi(p + 7) : -1;
}

static void test_hundred_stores(void **state) {
  struct it *t = *state;
  int64_t t0 = it_mono_ms();
  it_setup(t, "mqtt_hundred_stores");
  size_t cap = STORES * EVENTS_PER_STORE * 320, len = 0;
  char *script = malloc(cap);
  assert_non_null(script);
  len += (size_t)snprintf(script + len, cap - len, "[");
  for (int i = 0; i < STORES; i++)
    for (int k = 0; k < EVENTS_PER_STORE; k++)
      len += (size_t)snprintf(
          script + len, cap - len,
          "%s{\"csu\": %d, \"EventType\": \"%s\", \"EventTransactionId\": \"STORE-%03d-CART\", "
          "\"offset_ms\": %d, \"EventTerminalId\": \"STORE-%03d\", \"EventStaffId\": \"%06d\", "
          "\"EventData\": \"%s\"}\n",
          i + k ? "," : "", i % 4, k < 2 ? "AddCartLines" : "Checkout", i, -30000 + i * 20 + k, i,
          i, k < 2 ? "[]" : "{}");
  snprintf(script + len, cap - len, "]\n");
  char *filters[STORES + 1];
  for (int i = 0; i < STORES; i++) {
    filters[i] = malloc(32);
    assert_non_null(filters[i]);
    snprintf(filters[i], 32, "stores/usrt/STORE-%03d", i);
  }
  filters[STORES] = NULL;
  start_all(t, &(struct it_sim_opts){.csus = 4, .rate = 0, .seed = 54, .events_json = script},
            false, "stores/{dataarea}/{terminal}", (const char *const *)filters);
  free(script);

  /* Every subscriber gets its store's events; then, after a clean stop, nothing else. */
  int64_t end = it_mono_ms() + it_slow(t, 30000);
  for (;;) {
    size_t n = box_count();
    if (n >= STORES * EVENTS_PER_STORE)
      break;
    if (it_mono_ms() > end)
      fail_msg("%zu of %d messages within %ld ms", n, STORES * EVENTS_PER_STORE, it_slow(t, 30000));
    it_sleep_ms(100);
  }
  fprintf(stderr, "[%s] %d messages at %d subscribers after %lld ms\n", t->name,
          STORES * EVENTS_PER_STORE, STORES, (long long)(it_mono_ms() - t0));
  print_stores_metrics(t);
  assert_int_equal(it_relay_stop(t, 15000, NULL), 0);
  box_settle(t, 500);

  struct genv g = {0};
  gen_load(t, &g);
  assert_int_equal(g.n, STORES * EVENTS_PER_STORE);
  unsigned per_sub[STORES] = {0};
  size_t n = box_count(), bad = 0;
  struct rx r = {0};
  rx_ingest(&r);
  assert_all_known(&r, &g);
  for (size_t i = 0; i < n; i++) {
    struct msg m = box_at(i);
    yajl_val doc = csr_json_parse(m.body, m.len, NULL, 0);
    const char *id = csr_json_get_str(doc, "EventId");
    int store = id ? store_of(id) : -1;
    char topic[64];
    snprintf(topic, sizeof(topic), "stores/usrt/STORE-%03d", store);
    const char *term = csr_json_get_str(csr_json_get(doc, "EventDetails"), "EventTerminalId");
    if (store != m.sub || strcmp(m.topic, topic) != 0 || term == NULL ||
        strcmp(term, topic + strlen("stores/usrt/")) != 0) {
      if (bad++ < 5)
        fprintf(stderr, "  subscriber %d got %s on %s\n", m.sub, id ? id : "(no id)", m.topic);
    } else {
      per_sub[store]++;
    }
    csr_json_free(doc);
  }
  unsigned short_subs = 0;
  for (int i = 0; i < STORES; i++)
    if (per_sub[i] != EVENTS_PER_STORE && short_subs++ < 5)
      fprintf(stderr, "  subscriber %d got %u of its %d events\n", i, per_sub[i], EVENTS_PER_STORE);
  struct dups d = rx_dups(&r);
  fprintf(stderr, "[%s] %zu messages, %zu events; misrouted %zu, subscribers short %u, dups %ld\n",
          t->name, n, r.n, bad, short_subs, d.total);
  assert_int_equal(bad, 0);
  assert_int_equal(short_subs, 0);
  assert_int_equal(n, STORES * EVENTS_PER_STORE);
  assert_int_equal(r.n, STORES * EVENTS_PER_STORE);
  for (int i = 0; i < STORES; i++)
    free(filters[i]);
  gen_free(&g);
  rx_free(&r);
  fprintf(stderr, "[%s] took %lld ms\n", t->name, (long long)(it_mono_ms() - t0));
  it_pass(t);
}

/* ---------------------------------------------------------------------------------------------- */

/* Under ASan, reads of freed memory made by Paho 1.3.12 itself are suppressed, as in test_mqtt
 * (tests/sinks/paho_asan.supp: a QoS 1 publish whose write fails on a dying connection has its
 * topic and payload freed while Paho keeps it for retransmission), here and, through
 * ASAN_OPTIONS, in the relays this test starts, whose broker it stops under load. Every other
 * report stays fatal. Read by ASan before main. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "suppressions=" CSR_PAHO_ASAN_SUPP;
}

static void asan_options_for_children(void) {
  const char *now = getenv("ASAN_OPTIONS");
  char opts[2048];
  snprintf(opts, sizeof(opts), "%s%ssuppressions=%s", now ? now : "", now && *now ? ":" : "",
           CSR_PAHO_ASAN_SUPP);
  setenv("ASAN_OPTIONS", opts, 1);
}

static int teardown(void **state) {
  subs_stop(); /* before the broker goes (it_teardown) */
  return it_cm_teardown(state);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN); /* a subscriber's write to a broker that just died */
  asan_options_for_children();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_fanout, it_cm_setup, teardown),
      cmocka_unit_test_setup_teardown(test_broker_outage, it_cm_setup, teardown),
      cmocka_unit_test_setup_teardown(test_crash, it_cm_setup, teardown),
      cmocka_unit_test_setup_teardown(test_hundred_stores, it_cm_setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
