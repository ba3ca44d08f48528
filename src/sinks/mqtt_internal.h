/* The mqtt sink's two files and what they share: mqtt.c (the sink on the loop: slots, publishes,
 * topics, connection state, close) and mqtt_queue.c (the hand-off from Paho's threads: the hub
 * registry, the inbox and every Paho callback). Nothing outside these two files includes this
 * header.
 *
 * Paho's `context` is never a pointer but an integer ticket: hub id << 48 | low bits (for a
 * publish, slot << 32 | generation). The hub id finds the hub in a process-wide registry under
 * one lock, so a callback that runs late (after close, even while MQTTAsync_destroy returns on
 * another thread) finds nothing and touches no freed memory.
 */
#ifndef CSURELAY_SINKS_MQTT_INTERNAL_H
#define CSURELAY_SINKS_MQTT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include <MQTTAsync.h>

/* What Paho reported. */
enum mq_ev_kind {
  MQ_CONNECTED,      /* connect onSuccess, or the connected callback */
  MQ_CONNECT_FAILED, /* connect onFailure (Paho's automatic reconnect goes on) */
  MQ_LOST,           /* connectionLost (not always called: see refresh() in mqtt.c) */
  MQ_PUB_OK,         /* a publish's onSuccess */
  MQ_PUB_FAILED,     /* a publish's onFailure */
  MQ_DISCONNECTED,   /* the disconnect at close completed, either way */
};

/* One report, copied by value on the Paho thread. */
struct mq_ev {
  int kind;
  int rc;          /* Paho's code (or a CONNACK return code) */
  uint64_t ticket; /* the context it came with */
  char text[96];   /* Paho's message, when it gave one */
};

struct mq_inbox {
  struct mq_ev *v;
  size_t n, cap;
};

/* The part of a sink that Paho's threads reach. Embedded in the sink. */
struct mq_hub {
  /* guarded by the registry's lock */
  uint16_t id;
  int ready; /* `async` exists and may be signalled */
  struct mq_inbox inbox;
  struct mq_hub *next;
  /* loop only */
  uv_async_t async;
  struct mq_inbox spare;
};

typedef void (*mq_handle_cb)(struct mq_hub *hub, const struct mq_ev *ev);

/** Gives the hub an id in the registry; Paho's reports for it are kept from now on. */
void sk__mqtt_hub_register(struct mq_hub *hub);

/**
 * Initialises hub->async on `uv` (unreferenced: an idle sink does not keep the loop alive) with
 * `cb`, then lets reports wake it, including those kept since register. 0 or a libuv error.
 */
int sk__mqtt_hub_start(struct mq_hub *hub, uv_loop_t *uv, uv_async_cb cb);

/** Leaves the registry: later reports are dropped. Call after MQTTAsync_destroy. */
void sk__mqtt_hub_unregister(struct mq_hub *hub);

/** Takes every report kept so far and hands each to `handle`, outside the lock (loop only). */
void sk__mqtt_hub_drain(struct mq_hub *hub, mq_handle_cb handle);

/** Frees the inboxes (after unregister). */
void sk__mqtt_hub_free(struct mq_hub *hub);

/** The context for Paho: the hub id and `low` (48 bits). */
void *sk__mqtt_ticket(const struct mq_hub *hub, uint64_t low);

/** Sets the client's callbacks (connection lost, messages, connected) to post to `hub`. */
int sk__mqtt_hub_attach(struct mq_hub *hub, MQTTAsync client);

/** Points the options' onSuccess/onFailure at the hub's posting callbacks, with their context. */
void sk__mqtt_connect_opts(struct mq_hub *hub, MQTTAsync_connectOptions *o);
void sk__mqtt_publish_opts(struct mq_hub *hub, uint64_t low, MQTTAsync_responseOptions *o);
void sk__mqtt_disconnect_opts(struct mq_hub *hub, MQTTAsync_disconnectOptions *o);

#endif
