/* mqtt_recorder: the MQTT subscriber of bench/run. Subscribes QoS 1 to a topic filter on a
 * loopback broker and writes one line per message it receives:
 *
 *   <receipt time, epoch microseconds> TAB <EventId> TAB <EventDetails.EventDateTime> NEWLINE
 *
 * Only those two fields are cut out of the body (by scanning, not parsing): the bench needs the
 * event's identity and time, and a Checkout's body is ~25 KB of order and customer that a
 * general-purpose subscriber (mosquitto_sub -F '%U %p') would copy to disk at every message. It
 * prints "subscribed" on stdout once the broker has granted the subscription, so the harness
 * starts publishers only after that. SIGTERM or SIGINT flush the file and end it.
 *
 * Usage: mqtt_recorder tcp://127.0.0.1:PORT TOPIC_FILTER OUT_FILE
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <MQTTAsync.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#define FLUSH_US 200000 /* at most this long between flushes while messages come */

struct recorder {
  MQTTAsync client;
  const char *topic;
  FILE *out;
  pthread_mutex_t lock; /* the file is written on Paho's thread and flushed on the main one */
  unsigned long unparsed;
  long long flushed_us;
  volatile sig_atomic_t failed; /* connect or subscribe refused: exit 1 */
};

static struct recorder rec = {.lock = PTHREAD_MUTEX_INITIALIZER};

static long long now_us(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (long long)tv.tv_sec * 1000000 + tv.tv_usec;
}

/* The string value of the first `"key": "..."` in body (ids and times carry no escapes); its
 * length in *len, or NULL. `key` includes its quotes. */
static const char *string_field(const char *body, size_t n, const char *key, size_t *len) {
  const char *end = body + n;
  size_t kn = strlen(key);
  for (const char *p = body; (p = memmem(p, (size_t)(end - p), key, kn)) != NULL; p += kn) {
    const char *v = p + kn;
    while (v < end && *v == ' ')
      v++;
    if (v >= end || *v++ != ':')
      continue; /* the text appeared as a value, not as a key */
    while (v < end && *v == ' ')
      v++;
    if (v >= end || *v != '"')
      continue;
    const char *close = memchr(v + 1, '"', (size_t)(end - v - 1));
    if (close == NULL)
      return NULL;
    *len = (size_t)(close - v - 1);
    return v + 1;
  }
  return NULL;
}

static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *m) {
  (void)ctx, (void)topic_len;
  long long t = now_us();
  size_t idn = 0, tn = 0;
  const char *body = m->payload;
  const char *id = string_field(body, (size_t)m->payloadlen, "\"EventId\"", &idn);
  const char *when = string_field(body, (size_t)m->payloadlen, "\"EventDateTime\"", &tn);
  pthread_mutex_lock(&rec.lock);
  if (id != NULL && when != NULL)
    fprintf(rec.out, "%lld\t%.*s\t%.*s\n", t, (int)idn, id, (int)tn, when);
  else
    rec.unparsed++;
  if (t - rec.flushed_us > FLUSH_US) { /* the harness follows the file while the run goes on */
    fflush(rec.out);
    rec.flushed_us = t;
  }
  pthread_mutex_unlock(&rec.lock);
  MQTTAsync_freeMessage(&m);
  MQTTAsync_free(topic);
  return 1;
}

static void on_subscribed(void *ctx, MQTTAsync_successData *r) {
  (void)ctx, (void)r;
  printf("subscribed\n");
  fflush(stdout);
}

static void on_failed(void *ctx, MQTTAsync_failureData *r) {
  rec.failed = 1;
  fprintf(stderr, "mqtt_recorder: %s failed (%d)\n", (const char *)ctx, r ? r->code : -1);
  kill(getpid(), SIGTERM);
}

static void subscribe(void *ctx, MQTTAsync_successData *r) {
  (void)ctx, (void)r;
  MQTTAsync_responseOptions o = MQTTAsync_responseOptions_initializer;
  o.onSuccess = on_subscribed;
  o.onFailure = on_failed;
  o.context = "subscribe";
  if (MQTTAsync_subscribe(rec.client, rec.topic, 1, &o) != MQTTASYNC_SUCCESS)
    on_failed("subscribe", NULL);
}

static void on_lost(void *ctx, char *cause) {
  (void)ctx, (void)cause;
  fprintf(stderr, "mqtt_recorder: connection lost\n");
}

static int connect_broker(const char *url) {
  char id[64];
  snprintf(id, sizeof(id), "bench-recorder-%d", (int)getpid());
  if (MQTTAsync_create(&rec.client, url, id, MQTTCLIENT_PERSISTENCE_NONE, NULL) !=
      MQTTASYNC_SUCCESS)
    return -1;
  MQTTAsync_setCallbacks(rec.client, NULL, on_lost, on_message, NULL);
  MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer;
  o.keepAliveInterval = 30;
  o.cleansession = 1;
  o.onSuccess = subscribe;
  o.onFailure = on_failed;
  o.context = "connect";
  return MQTTAsync_connect(rec.client, &o) == MQTTASYNC_SUCCESS ? 0 : -1;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: mqtt_recorder tcp://127.0.0.1:PORT TOPIC_FILTER OUT_FILE\n");
    return 2;
  }
  rec.topic = argv[2];
  rec.out = fopen(argv[3], "w");
  if (rec.out == NULL) {
    perror(argv[3]);
    return 1;
  }
  setvbuf(rec.out, NULL, _IOFBF, 1 << 16);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, NULL); /* before Paho starts its threads, so they inherit it */
  if (connect_broker(argv[1]) < 0) {
    fprintf(stderr, "mqtt_recorder: cannot connect to %s\n", argv[1]);
    return 1;
  }
  int sig;
  sigwait(&stop, &sig);
  MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
  d.timeout = 500;
  MQTTAsync_disconnect(rec.client, &d);
  usleep(100 * 1000);
  pthread_mutex_lock(&rec.lock);
  fflush(rec.out);
  if (rec.unparsed > 0)
    fprintf(stderr, "mqtt_recorder: %lu messages without EventId or EventDateTime\n", rec.unparsed);
  fclose(rec.out);
  return rec.failed
             ? 1
             : 0; /* exits with the lock held: Paho's thread must not write after the close */
}
