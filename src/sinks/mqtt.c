/* The mqtt sink (SPEC section 4): each event is published as the message body (sk_encode_message)
 * to a topic built from the sink's template, through Paho MQTTAsync.
 *
 * Threads. Paho calls back on its own threads; mqtt_queue.c turns every callback into a record in
 * the sink's inbox and wakes the loop, which handles the records here. Paho's `context` is an
 * integer ticket (mqtt_internal.h), for a publish hub id << 48 | slot << 32 | generation.
 *
 * Publishes. The sink owns one slot per allowed in-flight publish (max_in_flight of them). A slot
 * is taken by deliver() and held until both the delivery is done *and* Paho has reported on the
 * publish (or the client is destroyed): a publish that timed out or was cancelled stays with Paho,
 * which retransmits it after a reconnect, so it still counts against the bound. The slot's
 * generation changes when it is freed, so a stale ticket never matches a new publish. When every
 * slot is taken, deliver() refuses with CSR_ELIMIT and the retry scheduler asks again shortly. A
 * publish Paho never reports on (its report lost to a failed allocation, or a QoS 0 message
 * dropped with its connection) would hold its slot for good, so a slot whose delivery is done is
 * taken back ORPHAN_TIMEOUTS timeouts (at least ORPHAN_MIN_MS) after its publish.
 *
 * Outcomes. SK_DELIVERED on Paho's onSuccess: PUBACK at QoS 1, PUBCOMP at QoS 2, the write at QoS
 * 0. While the sink knows it is not connected, deliver() refuses with CSR_ELIMIT (the scheduler
 * asks again shortly, no attempt spent). SK_RETRY "disconnected" when Paho refuses the publish for
 * want of a connection the sink did not know was lost (it never buffers while disconnected),
 * "publish" for any other refusal (the Paho error in the excerpt),
 * "publish_failed" on onFailure, "timeout" when no acknowledgement came within timeout_ms (a late
 * one is then ignored), "cancelled" on cancel(). SK_DEAD "encode" when the body cannot be built and
 * "topic" when the topic can never be valid. Every outcome reaches done() from the loop, never from
 * inside deliver().
 *
 * Topics. {csu}, {channel}, {type}, {dataarea} and {terminal} take the CSU's name, EventChannelId
 * (a number, by its text), the event type, EventDataAreaId and EventTerminalId. In a substituted
 * value '/', '+', '#' and control characters become '_', so a value can neither add topic levels
 * nor wildcards; an absent or empty value becomes "_" so the topic keeps its levels. (A NUL cannot
 * reach us: the JSON strings are C strings and end there.) Any other {...} is copied as written.
 *
 * Session. Clean session off with the configured client id, Paho's automatic reconnect (1 s
 * doubling to 30 s, jittered), no Paho persistence: the relay's AOF keeps the events.
 *
 * Close: stop accepting, cancel every delivery (their done() fire first), disconnect, then
 * MQTTAsync_destroy on the disconnect's completion (or after a guard), leave the registry, drain
 * the inbox once more, close the handles, and only then call back.
 */
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <MQTTAsync.h>

#include "csurelay/log.h"
#include "csurelay/sink.h"
#include "mqtt_internal.h"

#define DEFAULT_IN_FLIGHT   1000
#define DEFAULT_TIMEOUT_MS  10000
#define CONNECT_TIMEOUT_S   10
#define MIN_RETRY_S         1
#define MAX_RETRY_S         30
#define DISCONNECT_GUARD_MS 2000
#define WATCH_MS            500   /* how often Paho's connection flag is read */
#define TOPIC_MAX           65535 /* MQTT's limit on a topic's length */
#define LATENCY_WEIGHT      0.1   /* of each new sample in the ack latency average */
#define ORPHAN_TIMEOUTS     10
#define ORPHAN_MIN_MS       60000

struct mq_sink;

/* One publish slot (see the top of the file for its lifetime). */
struct mq_pub {
  struct mq_sink *s;
  struct sk_delivery *d; /* NULL once the delivery is done */
  uint32_t gen;
  int paho;      /* handed to Paho and not yet reported */
  int fut_armed; /* `fut` is resolved and its callback has not run */
  int cancelled;
  int is_free;
  uint64_t started_ms, deadline_ms;
  struct mq_pub *prev, *next; /* the timeout FIFO (delivery waiting on Paho), or the free list */
  struct rx_fut fut;          /* completes `d` from the loop with the fields below */
  enum sk_outcome outcome;
  char why[32];
  char excerpt[160];
};

struct mq_sink {
  struct sk_sink base;
  MQTTAsync client;
  struct mq_hub hub; /* what Paho's threads reach (mqtt_queue.c) */
  struct mq_pub *slots;
  unsigned n_slots;
  struct mq_pub *free_list;
  struct mq_pub *fifo_head, *fifo_tail;
  struct rx_timer timer; /* the head of the FIFO's deadline */
  struct rx_timer guard; /* bounds the wait for the disconnect at close */
  struct rx_timer watch; /* reads Paho's connection flag (see refresh) */
  struct csr_jw jw;
  char *broker; /* the configured URL with its scheme in lower case */
  char *topic;
  size_t topic_cap;
  uint64_t timeout_ms, orphan_ms;
  unsigned orphans; /* slots whose delivery is done while Paho still has the publish */
  int connected, ever_connected, warned;
  char last_reason[128];
  unsigned active, armed; /* deliveries not yet done; futures not yet run */
  uint64_t published, acked, paho_pending, reconnects, failures, timeouts;
  double latency_ms;
  int closing, disconnected, destroyed, open_handles;
  void (*close_cb)(struct sk_sink *sink);
  struct rx_fut close_fut;
};

static void close_step(struct mq_sink *s);

/* ---------------------------------------------------------------------------------------------- */
/* Slots and outcomes (the loop) */
/* ---------------------------------------------------------------------------------------------- */

/* The slot a Paho report is about, or NULL when it is stale. */
static struct mq_pub *lookup(struct mq_sink *s, uint64_t t) {
  uint64_t slot = (t >> 32) & 0xffff;
  if (slot >= s->n_slots)
    return NULL;
  struct mq_pub *p = &s->slots[slot];
  return p->paho && p->gen == (uint32_t)t ? p : NULL;
}

static struct mq_pub *take_slot(struct mq_sink *s) {
  struct mq_pub *p = s->free_list;
  if (p != NULL) {
    s->free_list = p->next;
    p->next = NULL;
    p->is_free = 0;
    p->cancelled = 0;
  }
  return p;
}

/* Idempotent: called wherever one of the three holds may have been the last. */
static void maybe_free_slot(struct mq_pub *p) {
  if (p->is_free || p->d != NULL || p->paho || p->fut_armed)
    return;
  p->is_free = 1;
  p->gen++;
  p->prev = NULL;
  p->next = p->s->free_list;
  p->s->free_list = p;
}

static void fifo_push(struct mq_sink *s, struct mq_pub *p) {
  p->next = NULL;
  p->prev = s->fifo_tail;
  if (s->fifo_tail)
    s->fifo_tail->next = p;
  else
    s->fifo_head = p;
  s->fifo_tail = p;
}

static void fifo_unlink(struct mq_sink *s, struct mq_pub *p) {
  if (p->prev)
    p->prev->next = p->next;
  else if (s->fifo_head == p)
    s->fifo_head = p->next;
  else
    return; /* not linked */
  if (p->next)
    p->next->prev = p->prev;
  else
    s->fifo_tail = p->prev;
  p->prev = p->next = NULL;
}

/* Reports `p`'s delivery; the slot stays taken while Paho still has the publish. */
static void finish(struct mq_pub *p, enum sk_outcome outcome, const char *why,
                   const char *excerpt) {
  struct mq_sink *s = p->s;
  struct sk_delivery *d = p->d;
  if (d == NULL)
    return;
  fifo_unlink(s, p);
  p->d = NULL;
  s->active--;
  s->orphans += p->paho != 0;
  d->outcome = outcome;
  d->status = 0;
  d->retry_after_ms = -1;
  snprintf(d->reason, sizeof(d->reason), "%s", why);
  snprintf(d->excerpt, sizeof(d->excerpt), "%s", excerpt);
  d->_sink_state = NULL;
  maybe_free_slot(p);
  d->done(d); /* may deliver again, or close the sink (which goes on from the loop) */
}

static void on_slot_fut(struct rx_fut *fut) {
  struct mq_pub *p = RX_CONTAINER_OF(fut, struct mq_pub, fut);
  struct mq_sink *s = p->s;
  p->fut_armed = 0;
  s->armed--;
  if (p->d != NULL)
    finish(p, p->outcome, p->why, p->excerpt); /* may free the slot */
  else
    maybe_free_slot(p); /* an acknowledgement won the race */
  close_step(s);
}

/* Completes `p`'s delivery from the loop later this turn. A later call (cancel) changes the
 * outcome it will report. */
static void complete_later(struct mq_pub *p, enum sk_outcome outcome, const char *why,
                           const char *excerpt) {
  p->outcome = outcome;
  snprintf(p->why, sizeof(p->why), "%s", why);
  snprintf(p->excerpt, sizeof(p->excerpt), "%s", excerpt);
  if (p->fut_armed)
    return;
  p->fut_armed = 1;
  p->s->armed++;
  rx_fut_init(&p->fut, p->s->base.env->loop, on_slot_fut);
  rx_fut_resolve(&p->fut, 0);
}

static uint64_t on_timeout(struct rx_timer *timer);

/* rx_timer_start fails only for a NULL callback. */
static void start_timer(struct rx_timer *t, rx_timer_cb cb, uint64_t ms) {
  int rc = rx_timer_start(t, cb, ms);
  assert(rc == 0);
  (void)rc;
}

static void arm_timer(struct mq_sink *s) {
  if (s->fifo_head == NULL) {
    rx_timer_stop(&s->timer);
    return;
  }
  uint64_t now = rx_now_ms(s->base.env->loop);
  uint64_t due = s->fifo_head->deadline_ms;
  start_timer(&s->timer, on_timeout, due > now ? due - now : 0);
}

static uint64_t on_timeout(struct rx_timer *timer) {
  struct mq_sink *s = RX_CONTAINER_OF(timer, struct mq_sink, timer);
  uint64_t now = rx_now_ms(s->base.env->loop);
  char excerpt[80];
  snprintf(excerpt, sizeof(excerpt), "no acknowledgement within %llu ms",
           (unsigned long long)s->timeout_ms);
  /* One timeout for the whole sink, so the FIFO is in deadline order. A done() may start new
   * publishes; they join the tail with later deadlines. */
  while (s->fifo_head != NULL && s->fifo_head->deadline_ms <= now) {
    s->timeouts++;
    finish(s->fifo_head, SK_RETRY, "timeout", excerpt);
  }
  arm_timer(s); /* explicitly: a done() above may have started the timer for a later deadline */
  close_step(s);
  return RX_TIMER_STOP;
}

/* ---------------------------------------------------------------------------------------------- */
/* Draining Paho's reports (the loop) */
/* ---------------------------------------------------------------------------------------------- */

/* A failed connect's code: a CONNACK return code (1-5) or Paho's own (< 0). */
static const char *connack_text(int rc) {
  static const char *const refused[] = {"",
                                        "refused: unacceptable protocol version",
                                        "refused: identifier rejected",
                                        "refused: server unavailable",
                                        "refused: bad user name or password",
                                        "refused: not authorized"};
  return rc >= 1 && rc <= 5 ? refused[rc] : MQTTAsync_strerror(rc);
}

static void set_down(struct mq_sink *s, const char *reason) {
  int was = s->connected;
  s->connected = 0;
  snprintf(s->last_reason, sizeof(s->last_reason), "%s", reason);
  /* Once per outage at warn level; Paho's further attempts only at debug. */
  CSR_LOG(was || !s->warned ? CSR_WARN : CSR_DEBUG, "mqtt disconnected",
          CSR_KS("sink", s->base.conf->name), CSR_KS("broker", s->broker),
          CSR_KS("client_id", s->base.conf->client_id), CSR_KS("reason", s->last_reason));
  s->warned = 1;
}

static void set_up(struct mq_sink *s) {
  s->connected = 1;
  s->warned = 0;
  if (s->ever_connected)
    s->reconnects++;
  s->ever_connected = 1;
  snprintf(s->last_reason, sizeof(s->last_reason), "connected");
  CSR_LOG(CSR_INFO, "mqtt connected", CSR_KS("sink", s->base.conf->name),
          CSR_KS("broker", s->broker), CSR_KS("client_id", s->base.conf->client_id),
          CSR_KI("reconnects", s->reconnects));
}

/* Paho's own flag is the truth. Its connectionLost callback does not come when a failed write
 * noticed the loss first (1.3.12), and a report may arrive after the state it describes has
 * changed again; so every report, refusal and watch tick re-reads the flag. `reason` replaces the
 * last one when `news` (a report about this very loss) or when the loss is new to us. */
static void refresh(struct mq_sink *s, const char *reason, int news) {
  if (s->closing)
    return;
  int up = MQTTAsync_isConnected(s->client);
  if (up && !s->connected)
    set_up(s);
  else if (!up && (s->connected || news))
    set_down(s, reason);
}

static void on_connect_failed(struct mq_sink *s, const struct mq_ev *ev) {
  char reason[sizeof(s->last_reason)];
  snprintf(reason, sizeof(reason), "connect failed: %s",
           ev->text[0] ? ev->text : connack_text(ev->rc));
  refresh(s, reason, 1);
}

/* Takes back the slots of publishes Paho has not reported on for far too long (see the top). A
 * late report then matches no generation and is ignored. */
static void reclaim_orphans(struct mq_sink *s) {
  uint64_t now = rx_now_ms(s->base.env->loop);
  for (unsigned i = 0; i < s->n_slots && s->orphans > 0; i++) {
    struct mq_pub *p = &s->slots[i];
    if (!p->paho || p->d != NULL || now - p->started_ms < s->orphan_ms)
      continue;
    p->paho = 0;
    s->paho_pending--;
    s->orphans--;
    maybe_free_slot(p);
    CSR_LOG(CSR_WARN, "mqtt publish never reported, slot taken back",
            CSR_KS("sink", s->base.conf->name), CSR_KI("age_ms", now - p->started_ms));
  }
}

static uint64_t on_watch(struct rx_timer *t) {
  struct mq_sink *s = RX_CONTAINER_OF(t, struct mq_sink, watch);
  refresh(s, "connection lost", 0);
  if (s->orphans > 0)
    reclaim_orphans(s);
  return WATCH_MS;
}

static void on_publish_report(struct mq_sink *s, const struct mq_ev *ev) {
  struct mq_pub *p = lookup(s, ev->ticket);
  if (p == NULL)
    return; /* the client was destroyed, or the ticket is stale */
  fifo_unlink(s, p);
  p->paho = 0;
  s->paho_pending--;
  s->orphans -= p->d == NULL;
  if (ev->kind == MQ_PUB_OK) {
    s->acked++;
    if (p->d != NULL) {
      double ms = (double)(rx_now_ms(s->base.env->loop) - p->started_ms);
      s->latency_ms += (ms - s->latency_ms) * LATENCY_WEIGHT;
    }
    finish(p, SK_DELIVERED, "", "");
  } else {
    s->failures++;
    char excerpt[sizeof(ev->text) + 32];
    snprintf(excerpt, sizeof(excerpt), "%s", ev->text[0] ? ev->text : MQTTAsync_strerror(ev->rc));
    finish(p, SK_RETRY, "publish_failed", excerpt);
  }
  maybe_free_slot(p); /* when the delivery was done before (timeout, cancel) */
}

static void handle(struct mq_hub *hub, const struct mq_ev *ev) {
  struct mq_sink *s = RX_CONTAINER_OF(hub, struct mq_sink, hub);
  switch (ev->kind) {
    case MQ_CONNECTED:
      refresh(s, "connection lost", 0);
      break;
    case MQ_CONNECT_FAILED:
      on_connect_failed(s, ev);
      break;
    case MQ_LOST:
      refresh(s, "connection lost", 1);
      break;
    case MQ_PUB_OK:
    case MQ_PUB_FAILED:
      on_publish_report(s, ev);
      break;
    case MQ_DISCONNECTED:
      s->disconnected = 1;
      break;
  }
}

static void on_async(uv_async_t *async) {
  struct mq_sink *s = RX_CONTAINER_OF(async, struct mq_sink, hub.async);
  sk__mqtt_hub_drain(&s->hub, handle);
  close_step(s);
}

/* ---------------------------------------------------------------------------------------------- */
/* Topic and publish */
/* ---------------------------------------------------------------------------------------------- */

static const char *field_text(yajl_val obj, const char *key) {
  yajl_val v = csr_json_get(obj, key);
  const char *text = csr_json_str(v);
  return text ? text : csr_json_num_text(v);
}

/* The topic's placeholders; the first two come from the event's lane, the rest from its fields. */
static const struct {
  const char *name, *field;
} PLACEHOLDERS[] = {{"csu", NULL},
                    {"type", NULL},
                    {"channel", "EventChannelId"},
                    {"dataarea", "EventDataAreaId"},
                    {"terminal", "EventTerminalId"}};
#define N_PLACEHOLDERS (sizeof(PLACEHOLDERS) / sizeof(PLACEHOLDERS[0]))

/* The value of placeholder `name` (n bytes), "" for a known one with no value, NULL if unknown. */
static const char *placeholder(const struct sk_event *ev, const char *name, size_t n) {
  for (size_t i = 0; i < N_PLACEHOLDERS; i++) {
    if (strlen(PLACEHOLDERS[i].name) != n || strncmp(PLACEHOLDERS[i].name, name, n) != 0)
      continue;
    const char *v = i == 0   ? ev->csu
                    : i == 1 ? ev->type
                             : field_text(ev->event, PLACEHOLDERS[i].field);
    return v ? v : "";
  }
  return NULL;
}

static int topic_put(struct mq_sink *s, size_t *len, char c) {
  if (*len >= TOPIC_MAX)
    return CSR_ELIMIT;
  if (*len + 1 >= s->topic_cap) {
    size_t cap = s->topic_cap * 2;
    char *t = realloc(s->topic, cap);
    if (t == NULL)
      return -ENOMEM;
    s->topic = t;
    s->topic_cap = cap;
  }
  s->topic[(*len)++] = c;
  return 0;
}

static int topic_value(struct mq_sink *s, size_t *len, const char *v) {
  if (v[0] == '\0')
    v = "_";
  int rc = 0;
  for (const unsigned char *p = (const unsigned char *)v; *p && rc == 0; p++) {
    int bad = *p == '/' || *p == '+' || *p == '#' || *p < 0x20 || *p == 0x7f;
    rc = topic_put(s, len, bad ? '_' : (char)*p);
  }
  return rc;
}

/* Whether `topic` names placeholder i ("{name}"). */
static bool names_placeholder(const char *topic, size_t i) {
  size_t n = strlen(PLACEHOLDERS[i].name);
  for (const char *p = strchr(topic, '{'); p != NULL; p = strchr(p + 1, '{'))
    if (strncmp(p + 1, PLACEHOLDERS[i].name, n) == 0 && p[1 + n] == '}')
      return true;
  return false;
}

/* sk_reads_fn: the event's members that sink `arg`'s template names; with key NULL, how many (a
 * template of {csu} and {type} alone needs no pass over the row). */
static size_t topic_reads(void *arg, enum sk_doc doc, const char *key, size_t len) {
  const struct mq_sink *s = arg;
  size_t n = 0;
  if (doc != SK_DOC_EVENT)
    return 0;
  for (size_t i = 0; i < N_PLACEHOLDERS; i++)
    if (PLACEHOLDERS[i].field != NULL &&
        (key == NULL || csr_json_key_in(key, len, &PLACEHOLDERS[i].field, 1)) &&
        names_placeholder(s->base.conf->topic, i))
      n++;
  return n;
}

/* Expands the template into s->topic: 0, CSR_ELIMIT when it would exceed MQTT's limit, -ENOMEM. */
static int build_topic(struct mq_sink *s, const struct sk_event *ev) {
  size_t len = 0;
  int rc = 0;
  for (const char *p = s->base.conf->topic; *p && rc == 0;) {
    const char *end = *p == '{' ? strchr(p, '}') : NULL;
    const char *v = end ? placeholder(ev, p + 1, (size_t)(end - p - 1)) : NULL;
    if (v != NULL) {
      rc = topic_value(s, &len, v);
      p = end + 1;
    } else {
      rc = topic_put(s, &len, *p++);
    }
  }
  if (rc == 0)
    s->topic[len] = '\0';
  return rc;
}

static int publish(struct mq_sink *s, struct mq_pub *p, const char *body, size_t len) {
  MQTTAsync_message msg = MQTTAsync_message_initializer;
  msg.payload = (void *)body; /* Paho copies the payload and the topic */
  msg.payloadlen = (int)len;
  msg.qos = s->base.conf->qos;
  msg.retained = 0;
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  sk__mqtt_publish_opts(&s->hub, (uint64_t)(p - s->slots) << 32 | p->gen, &ro);
  return MQTTAsync_sendMessage(s->client, s->topic, &msg, &ro);
}

/* Hands the publish to Paho, or arranges the outcome of its refusal. */
static void start_publish(struct mq_sink *s, struct mq_pub *p, const char *body, size_t len) {
  int rc = len > INT32_MAX ? MQTTASYNC_FAILURE : publish(s, p, body, len);
  if (rc == MQTTASYNC_SUCCESS) {
    uint64_t now = rx_now_ms(s->base.env->loop);
    p->paho = 1;
    p->started_ms = now;
    p->deadline_ms = now + s->timeout_ms;
    s->published++;
    s->paho_pending++;
    fifo_push(s, p);
    if (s->fifo_head == p)
      arm_timer(s);
    return;
  }
  s->failures++;
  if (rc == MQTTASYNC_DISCONNECTED) {
    refresh(s, "connection lost", 0);
    complete_later(p, SK_RETRY, "disconnected", s->last_reason);
  } else if (rc == MQTTASYNC_BAD_UTF8_STRING || rc == MQTTASYNC_TOPICNAME_TRUNCATED)
    complete_later(p, SK_DEAD, "topic", MQTTAsync_strerror(rc));
  else
    complete_later(p, SK_RETRY, "publish", MQTTAsync_strerror(rc));
}

/* ---------------------------------------------------------------------------------------------- */
/* ops */
/* ---------------------------------------------------------------------------------------------- */

static int check_conf(const struct csr_sink_conf *conf, struct csr_err *err) {
  const char *name = conf->name ? conf->name : "";
  if (conf->broker == NULL || conf->broker[0] == '\0')
    return csr_err_set(err, NULL, conf->line, "broker", "mqtt sink '%s': a broker is required",
                       name);
  if (conf->client_id == NULL || conf->client_id[0] == '\0')
    return csr_err_set(err, NULL, conf->line, "client_id",
                       "mqtt sink '%s': a stable client_id is required", name);
  if (conf->topic == NULL || conf->topic[0] == '\0' || strpbrk(conf->topic, "+#") != NULL)
    return csr_err_set(err, NULL, conf->line, "topic",
                       "mqtt sink '%s': a topic template without '+' or '#' is required", name);
  if (conf->qos < 0 || conf->qos > 2)
    return csr_err_set(err, NULL, conf->line, "qos", "mqtt sink '%s': qos is 0, 1 or 2", name);
  return 0;
}

/* Paho matches schemes case-sensitively; the config accepts any case. */
static char *lower_scheme(const char *url) {
  char *copy = strdup(url);
  char *sep = copy ? strstr(copy, "://") : NULL;
  for (char *c = copy; sep && c < sep; c++)
    *c = (char)tolower((unsigned char)*c);
  return copy;
}

static int alloc_state(struct mq_sink *s) {
  const struct csr_sink_conf *conf = s->base.conf;
  s->n_slots = conf->max_in_flight ? conf->max_in_flight : DEFAULT_IN_FLIGHT;
  if (s->n_slots > 0xffff)
    s->n_slots = 0xffff; /* a slot number has 16 bits in a ticket */
  s->slots = calloc(s->n_slots, sizeof(*s->slots));
  s->topic_cap = 256;
  s->topic = malloc(s->topic_cap);
  s->broker = lower_scheme(conf->broker);
  if (s->slots == NULL || s->topic == NULL || s->broker == NULL || csr_jw_init(&s->jw) != 0)
    return -ENOMEM;
  for (unsigned i = s->n_slots; i-- > 0;) {
    s->slots[i].s = s;
    maybe_free_slot(&s->slots[i]);
  }
  uint64_t t = conf->timeout_ms ? conf->timeout_ms : s->base.env->default_timeout_ms;
  s->timeout_ms = t ? t : DEFAULT_TIMEOUT_MS;
  s->orphan_ms = s->timeout_ms * ORPHAN_TIMEOUTS;
  if (s->orphan_ms < ORPHAN_MIN_MS)
    s->orphan_ms = ORPHAN_MIN_MS;
  snprintf(s->last_reason, sizeof(s->last_reason), "connecting");
  return 0;
}

static void free_state(struct mq_sink *s) {
  csr_jw_free(&s->jw);
  free(s->slots);
  free(s->topic);
  free(s->broker);
  sk__mqtt_hub_free(&s->hub);
}

static int create_client(struct mq_sink *s) {
  MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
  co.sendWhileDisconnected = 0; /* refuse rather than buffer: the AOF keeps the events */
  co.maxBufferedMessages = (int)s->n_slots; /* never the binding limit: the slots are */
  co.MQTTVersion = MQTTVERSION_3_1_1;
  int rc = MQTTAsync_createWithOptions(&s->client, s->broker, s->base.conf->client_id,
                                       MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
  if (rc == MQTTASYNC_SUCCESS && (rc = sk__mqtt_hub_attach(&s->hub, s->client)) != 0)
    MQTTAsync_destroy(&s->client);
  if (rc != MQTTASYNC_SUCCESS)
    s->client = NULL;
  return rc;
}

static int start_connect(struct mq_sink *s) {
  const struct csr_sink_conf *conf = s->base.conf;
  MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer;
  MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
  ssl.verify = 1; /* check the certificate's host name too */
  o.keepAliveInterval = (int)conf->keepalive_s;
  o.cleansession = 0; /* the persistent session of SPEC section 4 */
  o.maxInflight = (int)s->n_slots;
  o.username = conf->username;
  o.password = conf->password;
  o.connectTimeout = CONNECT_TIMEOUT_S;
  o.MQTTVersion = MQTTVERSION_3_1_1;
  o.automaticReconnect = 1;
  o.minRetryInterval = MIN_RETRY_S;
  o.maxRetryInterval = MAX_RETRY_S;
  sk__mqtt_connect_opts(&s->hub, &o);
  if (strncmp(s->broker, "ssl://", 6) == 0 || strncmp(s->broker, "mqtts://", 8) == 0)
    o.ssl = &ssl; /* Paho copies what it keeps */
  return MQTTAsync_connect(s->client, &o);
}

static int init_fail(struct mq_sink *s, struct csr_err *err, const char *key, int rc,
                     const char *what) {
  free_state(s);
  return csr_err_set(err, NULL, s->base.conf->line, key, "mqtt sink '%s': %s: %s",
                     s->base.conf->name ? s->base.conf->name : "", what,
                     rc == -ENOMEM ? "out of memory" : MQTTAsync_strerror(rc));
}

static int mqtt_init(struct sk_sink *sink, struct csr_err *err) {
  struct mq_sink *s = (struct mq_sink *)sink;
  int rc = check_conf(sink->conf, err);
  if (rc < 0)
    return rc;
  if ((rc = alloc_state(s)) < 0)
    return init_fail(s, err, "", rc, "cannot start");
  if ((rc = create_client(s)) != MQTTASYNC_SUCCESS)
    return init_fail(s, err, "broker", rc, "cannot create the client");
  sk__mqtt_hub_register(&s->hub); /* before connect: its reports must be kept */
  rc = start_connect(s);
  if (rc == MQTTASYNC_SUCCESS && sk__mqtt_hub_start(&s->hub, sink->env->loop->uv, on_async) != 0)
    rc = MQTTASYNC_FAILURE;
  if (rc != MQTTASYNC_SUCCESS) {
    sk__mqtt_hub_unregister(&s->hub);
    MQTTAsync_destroy(&s->client);
    return init_fail(s, err, "broker", rc, "cannot connect");
  }
  /* After the async, as nothing can fail past it: uv_timer_init only fills in the handle. */
  rc = rx_timer_init(&s->timer, sink->env->loop);
  rc |= rx_timer_init(&s->guard, sink->env->loop);
  rc |= rx_timer_init(&s->watch, sink->env->loop);
  assert(rc == 0);
  rx_timer_unref(&s->watch);
  start_timer(&s->watch, on_watch, WATCH_MS);
  s->open_handles = 4;
  CSR_LOG(CSR_INFO, "mqtt sink connecting", CSR_KS("sink", sink->conf->name),
          CSR_KS("broker", s->broker), CSR_KS("client_id", sink->conf->client_id),
          CSR_KI("qos", sink->conf->qos), CSR_KI("max_in_flight", s->n_slots));
  return 0;
}

static int mqtt_deliver(struct sk_sink *sink, struct sk_delivery *d) {
  struct mq_sink *s = (struct mq_sink *)sink;
  if (s->closing)
    return -ECANCELED;
  /* No connection: a publish would only be refused. CSR_ELIMIT has the scheduler ask again shortly
   * without spending an attempt, so deliveries wait out a broker outage (or a slow first connect)
   * instead of running down max_attempts into the dead-letter queue. */
  if (!s->connected)
    return CSR_ELIMIT;
  struct mq_pub *p = take_slot(s);
  if (p == NULL)
    return CSR_ELIMIT; /* every slot is in flight, some of them with Paho after a timeout */
  const char *body = NULL;
  size_t len = 0;
  csr_jw_reset(&s->jw);
  int rc = sk_encode_message(d->event, &s->jw);
  if (rc == 0)
    rc = csr_jw_finish(&s->jw, &body, &len);
  struct sk_event ev; /* the event's topic fields as a small tree (the pipeline gives text) */
  int trc = rc == 0 ? sk_event_trees(d->event, topic_reads, s, &ev) : 0;
  if (rc == 0 && trc == 0)
    trc = build_topic(s, &ev);
  if (rc == 0)
    sk_event_trees_free(&ev, d->event);
  if (rc == -ENOMEM || trc == -ENOMEM) {
    maybe_free_slot(p);
    return -ENOMEM;
  }
  p->d = d;
  d->_sink_state = p;
  s->active++;
  if (rc < 0)
    complete_later(p, SK_DEAD, "encode", "the event cannot be encoded (no id or no event object)");
  else if (trc < 0)
    complete_later(p, SK_DEAD, "topic", "the topic would exceed 65535 bytes");
  else
    start_publish(s, p, body, len);
  return 0;
}

static void mqtt_cancel(struct sk_sink *sink, struct sk_delivery *d) {
  struct mq_pub *p = d ? d->_sink_state : NULL;
  if (p == NULL || p->d != d || p->cancelled)
    return;
  p->cancelled = 1;
  complete_later(p, SK_RETRY, "cancelled", csr_strerror(UV_ECANCELED));
}

static int mqtt_encode(struct sk_sink *sink, const struct sk_delivery *d, struct csr_jw *jw) {
  if (d == NULL)
    return -EINVAL;
  return sk_encode_message(d->event, jw);
}

static int mqtt_ready(struct sk_sink *sink, char *why, size_t len) {
  struct mq_sink *s = (struct mq_sink *)sink;
  if (s->closing) {
    snprintf(why, len, "closing");
    return -ECANCELED;
  }
  refresh(s, "connection lost", 0);
  if (!s->connected) {
    snprintf(why, len, "disconnected: %s", s->last_reason);
    return CSR_ETRANSPORT;
  }
  return 0;
}

static size_t mqtt_metrics(struct sk_sink *sink, struct sk_metric *out, size_t max) {
  struct mq_sink *s = (struct mq_sink *)sink;
  refresh(s, "connection lost", 0);
  const struct sk_metric all[] = {
      {"connected", "1 while connected to the broker", 0, s->connected},
      {"published_total", "publishes handed to the MQTT client", 1, (double)s->published},
      {"acked_total", "publishes acknowledged (PUBACK, PUBCOMP; written at QoS 0)", 1,
       (double)s->acked},
      {"in_flight", "publishes with the MQTT client awaiting acknowledgement", 0,
       (double)s->paho_pending},
      {"reconnects_total", "connections made after the first", 1, (double)s->reconnects},
      {"publish_failures_total", "publishes refused or failed by the MQTT client", 1,
       (double)s->failures},
      {"timeouts_total", "publishes not acknowledged within timeout_ms", 1, (double)s->timeouts},
      {"ack_latency_ms", "moving average from publish to acknowledgement", 0, s->latency_ms},
  };
  size_t n = sizeof(all) / sizeof(all[0]);
  n = n < max ? n : max;
  memcpy(out, all, n * sizeof(*out));
  return n;
}

/* ---------------------------------------------------------------------------------------------- */
/* close */
/* ---------------------------------------------------------------------------------------------- */

static void on_handle_closed(struct mq_sink *s) {
  if (--s->open_handles > 0)
    return;
  free_state(s);
  CSR_LOG(CSR_DEBUG, "mqtt sink closed", CSR_KS("sink", s->base.conf->name));
  s->close_cb(&s->base);
}

static void on_async_closed(uv_handle_t *h) {
  on_handle_closed(RX_CONTAINER_OF((uv_async_t *)h, struct mq_sink, hub.async));
}

static void on_timer_closed(struct rx_timer *t) {
  on_handle_closed(t->data);
}

/* Paho can no longer call back for this client once destroyed and out of the registry; what it
 * still had in flight is forgotten (those deliveries were cancelled). */
static void destroy_client(struct mq_sink *s) {
  MQTTAsync_destroy(&s->client);
  sk__mqtt_hub_unregister(&s->hub);
  sk__mqtt_hub_drain(&s->hub, handle);
  s->destroyed = 1;
  s->paho_pending = 0;
  s->orphans = 0;
  for (unsigned i = 0; i < s->n_slots; i++)
    if (s->slots[i].paho) {
      s->slots[i].paho = 0;
      maybe_free_slot(&s->slots[i]);
    }
}

/* Moves close along: destroy once disconnected, close the handles once nothing is pending. */
static void close_step(struct mq_sink *s) {
  if (!s->closing || rx_fut_pending(&s->close_fut) || uv_is_closing((uv_handle_t *)&s->hub.async))
    return;
  if (!s->destroyed && s->disconnected)
    destroy_client(s);
  if (!s->destroyed || s->active > 0 || s->armed > 0)
    return;
  rx_timer_stop(&s->guard);
  s->timer.data = s->guard.data = s->watch.data = s;
  uv_close((uv_handle_t *)&s->hub.async, on_async_closed);
  rx_timer_close(&s->timer, on_timer_closed);
  rx_timer_close(&s->guard, on_timer_closed);
  rx_timer_close(&s->watch, on_timer_closed);
}

static uint64_t on_guard(struct rx_timer *t) {
  struct mq_sink *s = RX_CONTAINER_OF(t, struct mq_sink, guard);
  s->disconnected = 1; /* Paho never reported on the disconnect: destroy anyway */
  close_step(s);
  return RX_TIMER_STOP;
}

static void on_close_fut(struct rx_fut *fut) {
  close_step(RX_CONTAINER_OF(fut, struct mq_sink, close_fut));
}

static void mqtt_close(struct sk_sink *sink, void (*cb)(struct sk_sink *sink)) {
  struct mq_sink *s = (struct mq_sink *)sink;
  if (s->closing)
    return;
  s->closing = 1;
  s->close_cb = cb;
  for (unsigned i = 0; i < s->n_slots; i++)
    if (s->slots[i].d != NULL)
      mqtt_cancel(sink, s->slots[i].d);
  rx_timer_stop(&s->timer);
  rx_timer_stop(&s->watch);
  MQTTAsync_disconnectOptions o = MQTTAsync_disconnectOptions_initializer;
  o.timeout = 0; /* in-flight publishes were cancelled; their events are retried after restart */
  sk__mqtt_disconnect_opts(&s->hub, &o);
  if (MQTTAsync_disconnect(s->client, &o) != MQTTASYNC_SUCCESS)
    s->disconnected = 1; /* not connected: no callback will come */
  else
    start_timer(&s->guard, on_guard, DISCONNECT_GUARD_MS);
  /* Never from inside close: the rest happens from the loop. */
  rx_fut_init(&s->close_fut, sink->env->loop, on_close_fut);
  rx_fut_resolve(&s->close_fut, 0);
}

const struct sk_ops sk_mqtt_ops = {
    .name = "mqtt",
    .description = "publishes each event to an MQTT broker, QoS 0-2 (SPEC section 4)",
    .size = sizeof(struct mq_sink),
    .init = mqtt_init,
    .deliver = mqtt_deliver,
    .cancel = mqtt_cancel,
    .encode = mqtt_encode,
    .ready = mqtt_ready,
    .metrics = mqtt_metrics,
    .close = mqtt_close,
};
