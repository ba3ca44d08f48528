/* The mqtt sink's hand-off from Paho's threads to the loop (STYLE 7.7). Every Paho callback lands
 * here and does only this: copy what it needs into a fixed-size record, lock, append to the hub's
 * inbox, signal the hub's uv_async_t, unlock. It never touches loop state, the logger or metrics.
 * The loop takes the whole inbox at once (sends coalesce) and handles it outside the lock.
 *
 * One lock guards the registry and every inbox. A callback finds its hub by the id in its ticket
 * while holding it, and a hub leaves the registry under it, so once sk__mqtt_hub_unregister
 * returns no callback can reach the hub, whatever Paho's threads are still doing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "mqtt_internal.h"

_Static_assert(sizeof(uintptr_t) >= 8, "tickets need 64-bit contexts");

static uv_once_t once = UV_ONCE_INIT;
static uv_mutex_t lock;
static struct mq_hub *hubs;
static uint16_t last_id;

static void init_lock(void) {
  if (uv_mutex_init(&lock) != 0)
    abort();
}

static struct mq_hub *find(uint16_t id) {
  for (struct mq_hub *h = hubs; h; h = h->next)
    if (h->id == id)
      return h;
  return NULL;
}

void sk__mqtt_hub_register(struct mq_hub *hub) {
  uv_once(&once, init_lock);
  uv_mutex_lock(&lock);
  do
    hub->id = ++last_id;
  while (hub->id == 0 || find(hub->id) != NULL);
  hub->next = hubs;
  hubs = hub;
  uv_mutex_unlock(&lock);
}

int sk__mqtt_hub_start(struct mq_hub *hub, uv_loop_t *uv, uv_async_cb cb) {
  int rc = uv_async_init(uv, &hub->async, cb);
  if (rc != 0)
    return rc;
  uv_unref((uv_handle_t *)&hub->async);
  uv_mutex_lock(&lock);
  hub->ready = 1;
  uv_async_send(&hub->async); /* for reports that came before the handle existed */
  uv_mutex_unlock(&lock);
  return 0;
}

void sk__mqtt_hub_unregister(struct mq_hub *hub) {
  uv_mutex_lock(&lock);
  for (struct mq_hub **p = &hubs; *p; p = &(*p)->next)
    if (*p == hub) {
      *p = hub->next;
      break;
    }
  hub->ready = 0;
  uv_mutex_unlock(&lock);
}

void sk__mqtt_hub_drain(struct mq_hub *hub, mq_handle_cb handle) {
  uv_mutex_lock(&lock);
  struct mq_inbox batch = hub->inbox;
  hub->inbox = hub->spare;
  uv_mutex_unlock(&lock);
  hub->spare = (struct mq_inbox){0};
  for (size_t i = 0; i < batch.n; i++)
    handle(hub, &batch.v[i]);
  batch.n = 0;
  hub->spare = batch;
}

void sk__mqtt_hub_free(struct mq_hub *hub) {
  free(hub->inbox.v);
  free(hub->spare.v);
  hub->inbox = hub->spare = (struct mq_inbox){0};
}

void *sk__mqtt_ticket(const struct mq_hub *hub, uint64_t low) {
  return (void *)(uintptr_t)((uint64_t)hub->id << 48 | (low & 0xffffffffffffull));
}

/* ---------------------------------------------------------------------------------------------- */
/* On Paho's threads */
/* ---------------------------------------------------------------------------------------------- */

/* Under the lock. Grows at most to what is posted between two drains, which the sink's slots
 * bound (one report per publish, plus a few about the connection). */
static int push(struct mq_inbox *q, const struct mq_ev *ev) {
  if (q->n == q->cap) {
    size_t cap = q->cap ? q->cap * 2 : 64;
    struct mq_ev *v = realloc(q->v, cap * sizeof(*v));
    if (v == NULL)
      return -ENOMEM; /* a lost publish report: that delivery times out instead */
    q->v = v;
    q->cap = cap;
  }
  q->v[q->n++] = *ev;
  return 0;
}

static void post(void *context, int kind, int rc, const char *text) {
  struct mq_ev ev = {.kind = kind, .rc = rc, .ticket = (uintptr_t)context};
  if (text != NULL)
    snprintf(ev.text, sizeof(ev.text), "%s", text);
  uv_once(&once, init_lock);
  uv_mutex_lock(&lock);
  struct mq_hub *hub = find((uint16_t)(ev.ticket >> 48));
  if (hub != NULL && push(&hub->inbox, &ev) == 0 && hub->ready)
    uv_async_send(&hub->async);
  uv_mutex_unlock(&lock);
}

static void on_connected(void *ctx, char *cause) {
  post(ctx, MQ_CONNECTED, 0, NULL);
}

static void on_connect_ok(void *ctx, MQTTAsync_successData *r) {
  post(ctx, MQ_CONNECTED, 0, NULL);
}

static void on_connect_failed(void *ctx, MQTTAsync_failureData *r) {
  post(ctx, MQ_CONNECT_FAILED, r ? r->code : MQTTASYNC_FAILURE, r ? r->message : NULL);
}

static void on_lost(void *ctx, char *cause) {
  post(ctx, MQ_LOST, 0, cause);
}

static int on_message(void *ctx, char *topic, int len, MQTTAsync_message *m) {
  MQTTAsync_freeMessage(&m); /* the sink subscribes to nothing; a stray message is dropped */
  MQTTAsync_free(topic);
  return 1;
}

static void on_published(void *ctx, MQTTAsync_successData *r) {
  post(ctx, MQ_PUB_OK, 0, NULL);
}

static void on_publish_failed(void *ctx, MQTTAsync_failureData *r) {
  post(ctx, MQ_PUB_FAILED, r ? r->code : MQTTASYNC_FAILURE, r ? r->message : NULL);
}

static void on_disconnected(void *ctx, MQTTAsync_successData *r) {
  post(ctx, MQ_DISCONNECTED, 0, NULL);
}

static void on_disconnect_failed(void *ctx, MQTTAsync_failureData *r) {
  post(ctx, MQ_DISCONNECTED, r ? r->code : MQTTASYNC_FAILURE, NULL);
}

/* ---------------------------------------------------------------------------------------------- */
/* Wiring the callbacks (on the loop) */
/* ---------------------------------------------------------------------------------------------- */

int sk__mqtt_hub_attach(struct mq_hub *hub, MQTTAsync client) {
  void *ctx = sk__mqtt_ticket(hub, 0);
  int rc = MQTTAsync_setCallbacks(client, ctx, on_lost, on_message, NULL);
  if (rc == MQTTASYNC_SUCCESS)
    rc = MQTTAsync_setConnected(client, ctx, on_connected);
  return rc;
}

void sk__mqtt_connect_opts(struct mq_hub *hub, MQTTAsync_connectOptions *o) {
  o->onSuccess = on_connect_ok;
  o->onFailure = on_connect_failed;
  o->context = sk__mqtt_ticket(hub, 0);
}

void sk__mqtt_publish_opts(struct mq_hub *hub, uint64_t low, MQTTAsync_responseOptions *o) {
  o->onSuccess = on_published;
  o->onFailure = on_publish_failed;
  o->context = sk__mqtt_ticket(hub, low);
}

void sk__mqtt_disconnect_opts(struct mq_hub *hub, MQTTAsync_disconnectOptions *o) {
  o->onSuccess = on_disconnected;
  o->onFailure = on_disconnect_failed;
  o->context = sk__mqtt_ticket(hub, 0);
}
