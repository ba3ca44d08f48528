/* The mqtt sink against a real mosquitto (/usr/sbin/mosquitto), started by each test on an
 * ephemeral loopback port with a config file of its own, and subscribers made with Paho
 * MQTTAsync in this process. The sink is created through the registry on the test's own loop;
 * a 5 ms tick keeps the loop turning and pumps deliveries (one per event at a time, up to the
 * sink's max_in_flight, a failed one again after 100 ms). Every wait is bounded, mosquitto dies
 * with the test (PR_SET_PDEATHSIG), and each test ends with a clean loop close.
 *
 * Under ASan, reads of freed memory made by Paho 1.3.12 itself (from its own threads, in
 * interceptors such as strlen and writev) are suppressed (paho_asan.supp): when the broker dies
 * under load, a QoS 1 publish whose write fails has its topic and payload freed while Paho keeps
 * it for retransmission. That is Paho's bug, seen in about one outage test in twenty; nothing the
 * sink does reaches that memory, and every other report stays fatal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <MQTTAsync.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "brokerport.h"
#include "csurelay/sink.h"

#define MOSQUITTO "/usr/sbin/mosquitto"
#define GUARD_MS  15000
#define TICK_MS   5
#define RETRY_MS  100
#define MAX_SUBS  100
#define TEMPLATE  "commerce/{csu}/{channel}/{type}/{dataarea}/{terminal}"

/* ---------------------------------------------------------------------------------------------- */
/* mosquitto as a child process */
/* ---------------------------------------------------------------------------------------------- */

struct broker {
  int port;
  pid_t pid;
  int persist;
  char dir[64];
  char conf[128];
};

static void broker_write_conf(struct broker *b) {
  FILE *f = fopen(b->conf, "w");
  assert_non_null(f);
  fprintf(f, "listener %d 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n", b->port);
  fprintf(f, "persistence %s\npersistence_location %s/\n", b->persist ? "true" : "false", b->dir);
  fprintf(f, "log_dest file %s/mosquitto.log\n", b->dir);
  if (geteuid() == 0)
    fprintf(f, "user root\n"); /* else mosquitto 2 drops to 'mosquitto' and cannot write here */
  fclose(f);
}

/* Starts mosquitto on b->port; 0 once it accepts connections, -1 when it exited (port taken). */
static int broker_spawn(struct broker *b) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open("/dev/null", O_RDWR);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    execl(MOSQUITTO, "mosquitto", "-c", b->conf, (char *)NULL);
    _exit(127);
  }
  int status;
  for (int i = 0; i < 250; i++) {
    if (waitpid(pid, &status, WNOHANG) == pid)
      return -1;
    if (tp_port_accepts(b->port)) {
      /* Ours, not another listener's: a mosquitto that cannot bind exits right after trying. */
      usleep(50000);
      if (waitpid(pid, &status, WNOHANG) == pid)
        return -1;
      b->pid = pid;
      return 0;
    }
    usleep(20000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

static void broker_start(struct broker *b, int persist) {
  snprintf(b->dir, sizeof(b->dir), "/tmp/csr_mqtt_XXXXXX");
  assert_non_null(mkdtemp(b->dir));
  snprintf(b->conf, sizeof(b->conf), "%s/mosquitto.conf", b->dir);
  b->persist = persist;
  for (int tries = 0; tries < 5; tries++) {
    b->port = tp_broker_port();
    broker_write_conf(b);
    if (broker_spawn(b) == 0)
      return;
  }
  fail_msg("mosquitto did not start");
}

/* The same port again; it may take a moment to be free. */
static void broker_restart(struct broker *b) {
  for (int tries = 0; tries < 50; tries++) {
    if (broker_spawn(b) == 0)
      return;
    usleep(100000);
  }
  fail_msg("mosquitto did not restart on port %d", b->port);
}

static void broker_stop(struct broker *b) {
  if (b->pid <= 0)
    return;
  int status;
  kill(b->pid, SIGTERM);
  for (int i = 0; i < 250 && waitpid(b->pid, &status, WNOHANG) == 0; i++)
    usleep(20000);
  if (kill(b->pid, 0) == 0) {
    kill(b->pid, SIGKILL);
    waitpid(b->pid, &status, 0);
  }
  b->pid = 0;
}

static void broker_cleanup(struct broker *b) {
  static const char *const files[] = {"mosquitto.conf", "mosquitto.log", "mosquitto.db"};
  broker_stop(b);
  if (b->dir[0] == '\0')
    return;
  char path[192];
  for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
    snprintf(path, sizeof(path), "%s/%s", b->dir, files[i]);
    unlink(path);
  }
  rmdir(b->dir);
}

/* ---------------------------------------------------------------------------------------------- */
/* Subscribers (Paho, on Paho's threads: only the locked store below is shared) */
/* ---------------------------------------------------------------------------------------------- */

struct msg {
  char *topic;
  char *body;
  size_t len;
  int sub;
  int dup; /* the broker's own retransmission to the subscriber */
};

struct sub {
  MQTTAsync c;
  int idx;
  int ready; /* under store.lock */
  char filter[128];
};

static struct {
  pthread_mutex_t lock;
  struct msg *v;
  size_t n, cap;
} store = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Static: a Paho callback may still be returning when a client is destroyed. */
static struct sub subs[MAX_SUBS];

static int on_sub_message(void *ctx, char *topic, int tlen, MQTTAsync_message *m) {
  struct sub *s = ctx;
  struct msg msg = {
      .topic = strdup(topic), .len = (size_t)m->payloadlen, .sub = s->idx, .dup = m->dup};
  msg.body = malloc(msg.len + 1);
  memcpy(msg.body, m->payload, msg.len);
  msg.body[msg.len] = '\0';
  pthread_mutex_lock(&store.lock);
  if (store.n == store.cap) {
    store.cap = store.cap ? store.cap * 2 : 1024;
    store.v = realloc(store.v, store.cap * sizeof(*store.v));
  }
  store.v[store.n++] = msg;
  pthread_mutex_unlock(&store.lock);
  MQTTAsync_freeMessage(&m);
  MQTTAsync_free(topic);
  return 1;
}

static void on_sub_subscribed(void *ctx, MQTTAsync_successData *r) {
  struct sub *s = ctx;
  pthread_mutex_lock(&store.lock);
  s->ready = 1;
  pthread_mutex_unlock(&store.lock);
}

static void sub_subscribe(struct sub *s) {
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  ro.onSuccess = on_sub_subscribed;
  ro.context = s;
  MQTTAsync_subscribe(s->c, s->filter, 1, &ro);
}

static void on_sub_connected(void *ctx, char *cause) {
  sub_subscribe(ctx);
}

static void on_sub_connect_ok(void *ctx, MQTTAsync_successData *r) {
  sub_subscribe(ctx);
}

/* A QoS 1 subscriber on `filter`; `persistent` keeps its session across a broker restart. */
static void sub_start(const struct broker *b, int idx, const char *filter, int persistent) {
  struct sub *s = &subs[idx];
  char url[64], id[64];
  memset(s, 0, sizeof(*s));
  s->idx = idx;
  snprintf(s->filter, sizeof(s->filter), "%s", filter);
  snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", b->port);
  snprintf(id, sizeof(id), "test-sub-%d-%d", (int)getpid(), idx);
  assert_int_equal(MQTTAsync_create(&s->c, url, id, MQTTCLIENT_PERSISTENCE_NONE, NULL), 0);
  assert_int_equal(MQTTAsync_setCallbacks(s->c, s, NULL, on_sub_message, NULL), 0);
  assert_int_equal(MQTTAsync_setConnected(s->c, s, on_sub_connected), 0);
  MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer;
  o.cleansession = !persistent;
  o.keepAliveInterval = 5;
  o.automaticReconnect = 1;
  o.minRetryInterval = 1;
  o.maxRetryInterval = 1;
  o.onSuccess = on_sub_connect_ok;
  o.context = s;
  assert_int_equal(MQTTAsync_connect(s->c, &o), 0);
}

static void subs_destroy(int n) {
  for (int i = 0; i < n; i++)
    if (subs[i].c != NULL)
      MQTTAsync_destroy(&subs[i].c);
  pthread_mutex_lock(&store.lock);
  for (size_t i = 0; i < store.n; i++) {
    free(store.v[i].topic);
    free(store.v[i].body);
  }
  free(store.v);
  store.v = NULL;
  store.n = store.cap = 0;
  pthread_mutex_unlock(&store.lock);
}

/* ---------------------------------------------------------------------------------------------- */
/* Fixture: loop, sink, events, the pump */
/* ---------------------------------------------------------------------------------------------- */

struct fx;

struct tev {
  struct fx *f;
  char id[64], csu[32], type[24];
  yajl_val obj, order;
  struct sk_event ev;
  char *body; /* the expected message */
  size_t len;
  char topic[256];
  int sub; /* the subscriber it must reach, -1: any */
  struct sk_delivery d;
  int in_flight, delivered, done, received, fresh, at_cut;
  uint64_t next_try_ms;
  int seq;
  enum sk_outcome outcome;
  char reason[64];
};

struct fx {
  uv_loop_t uv;
  struct rx_loop loop;
  uv_timer_t tick;
  struct sk_env env;
  struct csr_sink_conf conf;
  char url[64], client_id[64], topic[128];
  struct sk_sink *sink;
  int sink_closed, seq, close_seq;
  struct broker b;
  int n_subs;
  struct tev *evs;
  size_t n_evs;
  int pumping, outage;
  unsigned max_seen, max_paho;
  size_t delivered, retried, retried_outage, received;
};

static uint64_t now_ms(void) {
  return uv_hrtime() / 1000000;
}

static double metric(struct fx *f, const char *name) {
  struct sk_metric m[16];
  size_t n = f->sink->ops->metrics(f->sink, m, 16);
  for (size_t i = 0; i < n; i++)
    if (strcmp(m[i].name, name) == 0)
      return m[i].value;
  fail_msg("no metric %s", name);
  return -1;
}

static void on_done(struct sk_delivery *d) {
  struct tev *e = RX_CONTAINER_OF(d, struct tev, d);
  struct fx *f = e->f;
  assert_ptr_equal(d->done, on_done);
  e->in_flight = 0;
  e->done++;
  e->seq = ++f->seq;
  e->outcome = d->outcome;
  snprintf(e->reason, sizeof(e->reason), "%s", d->reason);
  if (d->outcome == SK_DELIVERED) {
    e->delivered++;
    f->delivered++;
    return;
  }
  if (d->outcome == SK_DEAD)
    return; /* only test_cancel_and_encode makes one, and checks it */
  static const char *const ok[] = {"disconnected", "timeout", "publish_failed", "publish",
                                   "cancelled"};
  int known = 0;
  for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
    known |= strcmp(d->reason, ok[i]) == 0;
  if (d->outcome != SK_RETRY || !known)
    fail_msg("unexpected outcome %d reason '%s' excerpt '%s'", (int)d->outcome, d->reason,
             d->excerpt);
  f->retried++;
  f->retried_outage += f->outage;
  e->next_try_ms = now_ms() + RETRY_MS;
}

static int start_one(struct fx *f, struct tev *e) {
  e->d = (struct sk_delivery){.event = &e->ev, .attempt = 1, .done = on_done};
  int rc = sk_deliver(f->sink, &e->d);
  if (rc == 0)
    e->in_flight = 1;
  return rc;
}

static void pump(struct fx *f) {
  uint64_t now = now_ms();
  for (size_t i = 0; i < f->n_evs; i++) {
    struct tev *e = &f->evs[i];
    if (e->delivered || e->in_flight || e->next_try_ms > now)
      continue;
    if (f->sink->in_flight >= f->conf.max_in_flight)
      break;
    int rc = start_one(f, e);
    if (rc == CSR_ELIMIT)
      break;
    assert_int_equal(rc, 0);
  }
  if (f->sink->in_flight > f->max_seen)
    f->max_seen = f->sink->in_flight;
  if ((unsigned)metric(f, "in_flight") > f->max_paho)
    f->max_paho = (unsigned)metric(f, "in_flight");
}

static void on_tick(uv_timer_t *t) {
  struct fx *f = t->data;
  if (f->pumping && f->sink != NULL && !f->sink_closed)
    pump(f);
}

typedef int (*pred_fn)(struct fx *f);

/* Runs the loop until pred(f) holds or `ms` passed; returns whether it held. */
static int run_until(struct fx *f, pred_fn pred, uint64_t ms) {
  uint64_t end = now_ms() + ms;
  while (!pred(f)) {
    if (now_ms() > end)
      return 0;
    uv_run(&f->uv, UV_RUN_ONCE);
  }
  return 1;
}

static int never(struct fx *f) {
  return 0;
}

static void run_ms(struct fx *f, uint64_t ms) {
  run_until(f, never, ms);
}

static int fx_setup(void **state) {
  struct fx *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->uv), 0);
  assert_int_equal(rx_loop_init(&f->loop, &f->uv), 0);
  assert_int_equal(uv_timer_init(&f->uv, &f->tick), 0);
  f->tick.data = f;
  assert_int_equal(uv_timer_start(&f->tick, on_tick, TICK_MS, TICK_MS), 0);
  f->env = (struct sk_env){.loop = &f->loop, .default_timeout_ms = 5000};
  *state = f;
  return 0;
}

static void on_sink_closed(void *arg) {
  struct fx *f = arg;
  f->sink_closed++;
  f->close_seq = f->seq;
}

static int sink_is_closed(struct fx *f) {
  return f->sink_closed > 0;
}

static void close_sink(struct fx *f) {
  if (f->sink == NULL || f->sink_closed)
    return;
  sk_sink_close(f->sink, on_sink_closed, f);
  assert_int_equal(f->sink_closed, 0); /* never from inside the call */
  assert_true(run_until(f, sink_is_closed, GUARD_MS));
  assert_int_equal(f->sink_closed, 1);
}

static int fx_teardown(void **state) {
  struct fx *f = *state;
  close_sink(f);
  subs_destroy(f->n_subs);
  broker_cleanup(&f->b);
  uv_close((uv_handle_t *)&f->tick, NULL);
  assert_int_equal(rx_loop_close(&f->loop), 0);
  for (size_t i = 0; i < f->n_evs; i++) {
    csr_json_free(f->evs[i].obj);
    csr_json_free(f->evs[i].order);
    free(f->evs[i].body);
  }
  free(f->evs);
  free(f);
  return 0;
}

static void make_conf(struct fx *f, const char *topic, unsigned max_in_flight, uint64_t timeout) {
  snprintf(f->url, sizeof(f->url), "tcp://127.0.0.1:%d", f->b.port);
  snprintf(f->client_id, sizeof(f->client_id), "csurelay-test-%d", (int)getpid());
  snprintf(f->topic, sizeof(f->topic), "%s", topic);
  f->conf = (struct csr_sink_conf){.name = "stores",
                                   .type = CSR_SINK_MQTT,
                                   .broker = f->url,
                                   .client_id = f->client_id,
                                   .topic = f->topic,
                                   .qos = 1,
                                   .max_in_flight = max_in_flight,
                                   .timeout_ms = timeout,
                                   .keepalive_s = 5,
                                   .line = 3};
}

static void create_sink(struct fx *f) {
  struct csr_err err;
  char buf[1024];
  int rc = sk_sink_create(&f->conf, &f->env, &f->sink, &err);
  if (rc < 0)
    fail_msg("sk_sink_create: %s", csr_err_format(&err, buf, sizeof(buf)));
  assert_ptr_equal(f->sink->ops, sk_find("mqtt"));
}

static int connected(struct fx *f) {
  return metric(f, "connected") == 1;
}

static int subs_ready(struct fx *f) {
  int n = 0;
  pthread_mutex_lock(&store.lock);
  for (int i = 0; i < f->n_subs; i++)
    n += subs[i].ready;
  pthread_mutex_unlock(&store.lock);
  return n == f->n_subs;
}

static void start_subs(struct fx *f, int n, const char *fmt, int persistent) {
  char filter[128];
  for (int i = 0; i < n; i++) {
    snprintf(filter, sizeof(filter), fmt, i);
    sub_start(&f->b, i, filter, persistent);
  }
  f->n_subs = n;
  assert_true(run_until(f, subs_ready, GUARD_MS));
}

/* One event; `channel` is JSON text, `terminal` a JSON value or NULL for none. */
static struct tev *add_event(struct fx *f, const char *csu, const char *type, const char *channel,
                             const char *dataarea, const char *terminal) {
  struct tev *e = &f->evs[f->n_evs];
  int i = (int)f->n_evs++;
  char text[1024], order[128];
  e->f = f;
  e->sub = -1;
  snprintf(e->id, sizeof(e->id), "%s-%s-%06d", csu, type, i);
  snprintf(e->csu, sizeof(e->csu), "%s", csu);
  snprintf(e->type, sizeof(e->type), "%s", type);
  snprintf(text, sizeof(text),
           "{\"EventType\":\"%s\",\"EventTransactionId\":\"T%06d\",\"EventDateTime\":"
           "\"2026-11-22T10:00:00.%03dZ\",\"EventDataAreaId\":\"%s\",\"EventData\":\"{}\","
           "\"EventChannelId\":%s%s%s,\"EventStaffId\":\"000168\",\"EventCustomerId\":\"C%d\"}",
           type, i, i % 1000, dataarea, channel, terminal ? ",\"EventTerminalId\":" : "",
           terminal ? terminal : "", i);
  e->obj = csr_json_parse(text, strlen(text), NULL, 0);
  assert_non_null(e->obj);
  snprintf(order, sizeof(order), "{\"SalesId\":\"S%06d\",\"AmountPaid\":184.2200000000000000}", i);
  e->order = i % 2 ? csr_json_parse(order, strlen(order), NULL, 0) : NULL;
  e->ev = (struct sk_event){
      .id = e->id, .csu = e->csu, .type = e->type, .event = e->obj, .order = e->order};
  struct csr_jw jw;
  const char *body;
  assert_int_equal(csr_jw_init(&jw), 0);
  assert_int_equal(sk_encode_message(&e->ev, &jw), 0);
  assert_int_equal(csr_jw_finish(&jw, &body, &e->len), 0);
  e->body = malloc(e->len);
  memcpy(e->body, body, e->len);
  csr_jw_free(&jw);
  return e;
}

static void alloc_events(struct fx *f, size_t n) {
  f->evs = calloc(n, sizeof(*f->evs));
  assert_non_null(f->evs);
}

/* `n` events over 5 CSUs, 2 types, 3 channels and 7 terminals, for TEMPLATE. */
static void add_events(struct fx *f, size_t n) {
  static const char *const types[] = {"Checkout", "AddCartLines"};
  static const char *const channels[] = {"5637144592", "5637145326", "68719476778"};
  alloc_events(f, n);
  for (size_t i = 0; i < n; i++) {
    char csu[16], terminal[32];
    snprintf(csu, sizeof(csu), "csu%zu", i % 5);
    snprintf(terminal, sizeof(terminal), "\"HOUSTON-%zu\"", i % 7);
    struct tev *e = add_event(f, csu, types[i % 2], channels[i % 3], "usrt", terminal);
    snprintf(e->topic, sizeof(e->topic), "commerce/%s/%s/%s/usrt/HOUSTON-%zu", csu, channels[i % 3],
             types[i % 2], i % 7);
  }
}

static struct tev *find_event(struct fx *f, const char *id) {
  for (size_t i = 0; i < f->n_evs; i++)
    if (strcmp(f->evs[i].id, id) == 0)
      return &f->evs[i];
  return NULL;
}

/* Checks every message received since the last call against its event: topic, exact body bytes
 * and subscriber. */
static void collect(struct fx *f) {
  pthread_mutex_lock(&store.lock);
  struct msg *v = store.v;
  size_t n = store.n;
  store.v = NULL;
  store.n = store.cap = 0;
  pthread_mutex_unlock(&store.lock);
  for (size_t i = 0; i < n; i++) {
    yajl_val doc = csr_json_parse(v[i].body, v[i].len, NULL, 0);
    assert_non_null(doc);
    struct tev *e = find_event(f, csr_json_get_str(doc, "EventId"));
    assert_non_null(e);
    assert_string_equal(v[i].topic, e->topic);
    assert_int_equal(v[i].len, e->len);
    assert_memory_equal(v[i].body, e->body, e->len);
    if (e->sub >= 0)
      assert_int_equal(v[i].sub, e->sub);
    e->received++;
    e->fresh += !v[i].dup;
    f->received++;
    csr_json_free(doc);
    free(v[i].topic);
    free(v[i].body);
  }
  free(v);
}

static int all_delivered(struct fx *f) {
  return f->delivered == f->n_evs;
}

static int all_received(struct fx *f) {
  collect(f);
  for (size_t i = 0; i < f->n_evs; i++)
    if (f->evs[i].received == 0)
      return 0;
  return 1;
}

static void start_broker_and_sink(struct fx *f, int persist, const char *topic, unsigned max,
                                  uint64_t timeout) {
  broker_start(&f->b, persist);
  make_conf(f, topic, max, timeout);
  create_sink(f);
  assert_true(run_until(f, connected, GUARD_MS));
}

/* ---------------------------------------------------------------------------------------------- */
/* Tests */
/* ---------------------------------------------------------------------------------------------- */

/* 500 events: each reaches the QoS 1 subscriber exactly once, at its topic, byte for byte. */
static void test_every_event_arrives(void **state) {
  struct fx *f = *state;
  start_broker_and_sink(f, 0, TEMPLATE, 1000, 0);
  start_subs(f, 1, "commerce/#", 0);
  add_events(f, 500);
  char why[128];
  assert_int_equal(f->sink->ops->ready(f->sink, why, sizeof(why)), 0);
  f->pumping = 1;
  assert_true(run_until(f, all_delivered, GUARD_MS));
  assert_true(run_until(f, all_received, GUARD_MS));
  run_ms(f, 200); /* nothing more comes */
  collect(f);
  assert_int_equal(f->received, 500);
  assert_int_equal(f->retried, 0);
  for (size_t i = 0; i < f->n_evs; i++) {
    assert_int_equal(f->evs[i].received, 1);
    assert_int_equal(f->evs[i].done, 1);
  }
  assert_int_equal(metric(f, "published_total"), 500);
  assert_int_equal(metric(f, "acked_total"), 500);
  assert_int_equal(metric(f, "in_flight"), 0);
  assert_int_equal(metric(f, "publish_failures_total"), 0);
  assert_int_equal(metric(f, "reconnects_total"), 0);
  assert_int_equal(f->sink->delivered, 500);
  assert_int_equal(f->sink->in_flight, 0);
}

/* max_in_flight N: the N+1th is refused, and neither the sink nor Paho ever holds more than N. */
static void test_in_flight_bound(void **state) {
  struct fx *f = *state;
  start_broker_and_sink(f, 0, TEMPLATE, 8, 0);
  add_events(f, 300);
  for (int i = 0; i < 8; i++)
    assert_int_equal(start_one(f, &f->evs[i]), 0);
  assert_int_equal(f->sink->in_flight, 8);
  assert_int_equal(start_one(f, &f->evs[8]), CSR_ELIMIT);
  assert_int_equal(f->evs[8].in_flight, 0);
  assert_int_equal(f->sink->in_flight, 8);
  f->pumping = 1;
  assert_true(run_until(f, all_delivered, GUARD_MS));
  assert_true(f->max_seen <= 8);
  assert_true(f->max_paho <= 8);
  assert_int_equal(f->retried, 0);
  assert_int_equal(metric(f, "acked_total"), 300);
}

static int ready_says_disconnected(struct fx *f) {
  char why[160];
  return f->sink->ops->ready(f->sink, why, sizeof(why)) < 0 &&
         strncmp(why, "disconnected: ", 14) == 0;
}

static int reconnected(struct fx *f) {
  return connected(f) && metric(f, "reconnects_total") >= 1;
}

static int cut_point(struct fx *f) {
  return f->delivered >= 100;
}

/* The broker goes down under load for ~3 s and comes back on the same port: deliveries in the
 * outage retry, the sink reconnects by itself, and redelivery brings every event to the
 * subscriber; only events in flight at the cut may be published twice. The broker keeps its state
 * on disk and the subscriber's session is persistent, so nothing the broker acknowledged is lost
 * on the broker's side; the broker may then repeat to the subscriber what it had not seen
 * acknowledged (DUP set), which is no publish of ours and is not counted as one. */
static void test_broker_outage(void **state) {
  struct fx *f = *state;
  start_broker_and_sink(f, 1, TEMPLATE, 50, 1500);
  start_subs(f, 1, "commerce/#", 1);
  add_events(f, 400);
  f->pumping = 1;
  assert_true(run_until(f, cut_point, GUARD_MS));
  for (size_t i = 0; i < f->n_evs; i++)
    f->evs[i].at_cut = f->evs[i].in_flight;
  broker_stop(&f->b);
  f->outage = 1;
  run_ms(f, 500);
  assert_true(ready_says_disconnected(f));
  assert_int_equal(metric(f, "connected"), 0);
  run_ms(f, 2500);
  assert_true(f->retried_outage > 0);
  assert_true(f->delivered < f->n_evs);
  broker_restart(&f->b);
  f->outage = 0;
  assert_true(run_until(f, reconnected, 30000));
  assert_true(run_until(f, all_delivered, GUARD_MS));
  assert_true(run_until(f, all_received, GUARD_MS));
  run_ms(f, 300);
  collect(f);
  for (size_t i = 0; i < f->n_evs; i++) {
    struct tev *e = &f->evs[i];
    if (e->fresh > 1 && !e->at_cut)
      fail_msg("%s was published %d times but was not in flight at the cut", e->id, e->fresh);
  }
  char why[160];
  assert_int_equal(f->sink->ops->ready(f->sink, why, sizeof(why)), 0);
}

/* 100 store topics, one subscriber each: every one gets exactly its own events. */
static void test_fanout_100_topics(void **state) {
  struct fx *f = *state;
  start_broker_and_sink(f, 0, "stores/{terminal}", 1000, 0);
  start_subs(f, MAX_SUBS, "stores/T%03d", 0);
  alloc_events(f, 3 * MAX_SUBS);
  for (int i = 0; i < 3 * MAX_SUBS; i++) {
    char terminal[32];
    snprintf(terminal, sizeof(terminal), "\"T%03d\"", i % MAX_SUBS);
    struct tev *e = add_event(f, "csu1", "Checkout", "5637144592", "usrt", terminal);
    snprintf(e->topic, sizeof(e->topic), "stores/T%03d", i % MAX_SUBS);
    e->sub = i % MAX_SUBS;
  }
  f->pumping = 1;
  assert_true(run_until(f, all_delivered, GUARD_MS));
  assert_true(run_until(f, all_received, GUARD_MS));
  run_ms(f, 200);
  collect(f);
  assert_int_equal(f->received, 3 * MAX_SUBS);
  for (size_t i = 0; i < f->n_evs; i++)
    assert_int_equal(f->evs[i].received, 1);
}

/* Substituted values cannot add levels or wildcards; empty or absent values become "_". */
static void test_topic_sanitising(void **state) {
  struct fx *f = *state;
  start_broker_and_sink(f, 0, "s/{csu}/{terminal}/{channel}/{dataarea}/{nope}", 10, 0);
  start_subs(f, 1, "s/#", 0);
  alloc_events(f, 5);
  static const struct {
    const char *csu, *terminal, *dataarea, *topic;
  } cases[] = {
      {"c1", "\"a/b+#\"", "usrt", "s/c1/a_b__/5637144592/usrt/{nope}"},
      {"c/2", "\"\"", "usrt", "s/c_2/_/5637144592/usrt/{nope}"},
      {"c3", NULL, "", "s/c3/_/5637144592/_/{nope}"},
      {"c4", "\"tab\\there\\u007f\"", "u+s", "s/c4/tab_here_/5637144592/u_s/{nope}"},
      {"c5", "\"Kasse 3 – Ära\"", "usrt", "s/c5/Kasse 3 – Ära/5637144592/usrt/{nope}"},
  };
  for (size_t i = 0; i < 5; i++) {
    struct tev *e =
        add_event(f, cases[i].csu, "Checkout", "5637144592", cases[i].dataarea, cases[i].terminal);
    snprintf(e->topic, sizeof(e->topic), "%s", cases[i].topic);
  }
  f->pumping = 1;
  assert_true(run_until(f, all_delivered, GUARD_MS));
  assert_true(run_until(f, all_received, GUARD_MS)); /* collect() compares each topic exactly */
}

/* Nothing listens: init succeeds, deliveries are refused with CSR_ELIMIT (the scheduler asks again
 * without spending an attempt), nothing is published, close is prompt. */
static void test_bad_broker(void **state) {
  struct fx *f = *state;
  f->b.port = tp_free_port();
  assert_true(f->b.port > 0);
  make_conf(f, TEMPLATE, 10, 0);
  create_sink(f);
  run_ms(f, 300);
  assert_true(ready_says_disconnected(f));
  add_events(f, 5);
  for (size_t i = 0; i < 5; i++)
    assert_int_equal(start_one(f, &f->evs[i]), CSR_ELIMIT);
  run_ms(f, 100);
  for (size_t i = 0; i < 5; i++)
    assert_int_equal(f->evs[i].done, 0);
  assert_int_equal(f->sink->in_flight, 0);
  assert_int_equal(metric(f, "connected"), 0);
  assert_int_equal(metric(f, "published_total"), 0);
  uint64_t t0 = now_ms();
  close_sink(f);
  assert_true(now_ms() - t0 < 3000);
}

/* Close with hundreds of publishes in flight: each done() fires exactly once, before the close
 * callback, as delivered or cancelled. */
static void test_close_in_flight(void **state) {
  struct fx *f = *state;
  start_broker_and_sink(f, 0, TEMPLATE, 1000, 0);
  add_events(f, 300);
  for (size_t i = 0; i < f->n_evs; i++)
    assert_int_equal(start_one(f, &f->evs[i]), 0);
  sk_sink_close(f->sink, on_sink_closed, f);
  assert_int_equal(start_one(f, &f->evs[0]), -ECANCELED);
  assert_true(run_until(f, sink_is_closed, GUARD_MS));
  run_ms(f, 200);
  assert_int_equal(f->sink_closed, 1);
  assert_int_equal(f->close_seq, 300);
  for (size_t i = 0; i < f->n_evs; i++) {
    struct tev *e = &f->evs[i];
    assert_int_equal(e->done, 1);
    if (e->outcome != SK_DELIVERED)
      assert_string_equal(e->reason, "cancelled");
  }
}

/* cancel() twice: done() once, from the loop, "cancelled" (the cancel comes before the loop can
 * bring the PUBACK, which is then ignored);
 * an event that cannot be encoded is dead, also from the loop. */
static void test_cancel_and_encode(void **state) {
  struct fx *f = *state;
  start_broker_and_sink(f, 0, TEMPLATE, 10, 0);
  add_events(f, 2);
  struct tev *e = &f->evs[0];
  assert_int_equal(start_one(f, e), 0);
  f->sink->ops->cancel(f->sink, &e->d);
  f->sink->ops->cancel(f->sink, &e->d);
  assert_int_equal(e->done, 0);
  run_ms(f, 100);
  assert_int_equal(e->done, 1);
  assert_int_equal(e->outcome, SK_RETRY);
  assert_string_equal(e->reason, "cancelled");
  assert_string_equal(e->d.excerpt, csr_strerror(UV_ECANCELED));
  e = &f->evs[1];
  e->ev.id = NULL;
  e->d = (struct sk_delivery){.event = &e->ev, .attempt = 1, .done = on_done};
  assert_int_equal(sk_deliver(f->sink, &e->d), 0);
  assert_int_equal(e->done, 0);
  run_ms(f, 50);
  assert_int_equal(e->done, 1);
  assert_int_equal(e->d.outcome, SK_DEAD);
  assert_string_equal(e->d.reason, "encode");
  e->ev.id = e->id;
  assert_int_equal(f->sink->in_flight, 0);
}

/* The body is the webhook's (sk_encode_message); the metric names are stable. */
static void test_encode_and_metrics(void **state) {
  struct fx *f = *state;
  f->b.port = tp_free_port();
  assert_true(f->b.port > 0);
  make_conf(f, TEMPLATE, 10, 0);
  create_sink(f);
  add_events(f, 2);
  struct csr_jw jw;
  const char *text;
  size_t len;
  assert_int_equal(csr_jw_init(&jw), 0);
  f->evs[1].d.event = &f->evs[1].ev;
  assert_int_equal(f->sink->ops->encode(f->sink, &f->evs[1].d, &jw), 0);
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
  assert_int_equal(len, f->evs[1].len);
  assert_memory_equal(text, f->evs[1].body, len);
  csr_jw_free(&jw);
  static const char *const names[] = {
      "connected",        "published_total",        "acked_total",    "in_flight",
      "reconnects_total", "publish_failures_total", "timeouts_total", "ack_latency_ms"};
  struct sk_metric m[16];
  assert_int_equal(f->sink->ops->metrics(f->sink, m, 16), 8);
  for (size_t i = 0; i < 8; i++) {
    assert_string_equal(m[i].name, names[i]);
    assert_int_equal(m[i].counter, strstr(names[i], "_total") != NULL);
  }
  assert_int_equal(f->sink->ops->metrics(f->sink, m, 3), 3);
}

/* Configurations the sink refuses; nothing is left behind. */
static void test_init_refusals(void **state) {
  struct fx *f = *state;
  struct csr_err err;
  struct sk_sink *sink = NULL;
  f->b.port = tp_free_port();
  assert_true(f->b.port > 0);
  static const struct {
    const char *broker, *client_id, *topic, *key;
    int qos;
  } cases[] = {
      {NULL, "c", "t/{csu}", "broker", 1},
      {"tcp://127.0.0.1:1", NULL, "t", "client_id", 1},
      {"tcp://127.0.0.1:1", "c", "t/+", "topic", 1},
      {"tcp://127.0.0.1:1", "c", "", "topic", 1},
      {"tcp://127.0.0.1:1", "c", "t", "qos", 3},
      {"http://127.0.0.1:1", "c", "t", "broker", 1},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct csr_sink_conf conf = {.name = "stores",
                                 .type = CSR_SINK_MQTT,
                                 .broker = (char *)cases[i].broker,
                                 .client_id = (char *)cases[i].client_id,
                                 .topic = (char *)cases[i].topic,
                                 .qos = cases[i].qos,
                                 .line = 9};
    memset(&err, 0, sizeof(err));
    assert_true(sk_sink_create(&conf, &f->env, &sink, &err) < 0);
    assert_null(sink);
    assert_int_equal(err.line, 9);
    assert_string_equal(err.key, cases[i].key);
  }
  /* Any case of the scheme is accepted, as the config accepts it. */
  make_conf(f, TEMPLATE, 10, 0);
  snprintf(f->url, sizeof(f->url), "TCP://127.0.0.1:%d", f->b.port);
  create_sink(f);
}

/* Read by ASan before main; ASAN_OPTIONS from the environment still applies on top. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "suppressions=" CSR_PAHO_ASAN_SUPP;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_init_refusals, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_encode_and_metrics, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_cancel_and_encode, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_bad_broker, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_every_event_arrives, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_in_flight_bound, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_topic_sanitising, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_fanout_100_topics, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_close_in_flight, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_broker_outage, fx_setup, fx_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
