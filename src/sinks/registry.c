/* The sink registry: the only list of sink types, and the calls every caller goes through
 * (create, deliver, close), which keep the base's in_flight and outcome counters so no sink has to.
 *
 * sk_deliver stands between the caller and the sink: it swaps in its own done callback for the
 * time of the delivery (the caller's is kept in d->_done), so the counters change exactly once per
 * delivery, just before the caller hears of it, and the caller gets its own callback back before
 * it runs (so it may start the next delivery on `d` from there).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/sink.h"

/* The sinks that exist. Adding one is one file (src/sinks/<name>.c ending in sk_<name>_ops) and
 * one X(<name>) here. */
#define SK_SINKS(X) X(webhook) X(cij) X(mqtt)

#define DECLARE_OPS(n) extern const struct sk_ops sk_##n##_ops;
SK_SINKS(DECLARE_OPS)
#undef DECLARE_OPS

#define OPS_ENTRY(n) &sk_##n##_ops,
static const struct sk_ops *const sinks[] = {SK_SINKS(OPS_ENTRY) NULL};
#undef OPS_ENTRY

/* The config's `type` for each enum csr_sink_type (config.h), whether implemented or not. */
static const char *type_name(enum csr_sink_type type) {
  switch (type) {
    case CSR_SINK_CIJ:
      return "cij";
    case CSR_SINK_MQTT:
      return "mqtt";
    case CSR_SINK_WEBHOOK:
      return "webhook";
  }
  return "?";
}

const struct sk_ops *sk_find(const char *type) {
  if (type == NULL)
    return NULL;
  for (size_t i = 0; sinks[i] != NULL; i++)
    if (strcmp(sinks[i]->name, type) == 0)
      return sinks[i];
  return NULL;
}

/* The caller fills err->file with the configuration's path (a sink does not know it). */
int sk_sink_create(const struct csr_sink_conf *conf, const struct sk_env *env, struct sk_sink **out,
                   struct csr_err *err) {
  if (out != NULL)
    *out = NULL;
  if (conf == NULL || env == NULL || env->loop == NULL || out == NULL) {
    csr_err_set(err, NULL, 0, "", "sink: a configuration, an environment and a loop are required");
    return -EINVAL;
  }
  const char *name = conf->name ? conf->name : "";
  const struct sk_ops *ops = sk_find(type_name(conf->type));
  if (ops == NULL)
    return csr_err_set(err, NULL, conf->line, "type",
                       "sink '%s': sink type '%s' is not available yet", name,
                       type_name(conf->type));
  if (ops->size < sizeof(struct sk_sink))
    return csr_err_set(err, NULL, conf->line, "type", "sink '%s': type '%s' is malformed", name,
                       ops->name);
  struct sk_sink *sink = calloc(1, ops->size);
  if (sink == NULL) {
    csr_err_set(err, NULL, conf->line, "", "sink '%s': out of memory", name);
    return -ENOMEM;
  }
  sink->ops = ops;
  sink->conf = conf;
  sink->env = env;
  int rc = ops->init(sink, err);
  if (rc < 0) {
    free(sink);
    return rc;
  }
  *out = sink;
  return 0;
}

static void on_delivery_done(struct sk_delivery *d) {
  struct sk_sink *sink = d->_sink;
  sk_done_cb done = d->_done;
  d->done = done;
  d->_done = NULL;
  d->_sink = NULL;
  sink->in_flight--;
  switch (d->outcome) {
    case SK_DELIVERED:
      sink->delivered++;
      break;
    case SK_SKIPPED:
      sink->skipped++;
      break;
    case SK_RETRY:
      sink->retried++;
      break;
    case SK_DEAD:
      sink->dead++;
      break;
  }
  done(d);
}

int sk_deliver(struct sk_sink *sink, struct sk_delivery *d) {
  if (sink == NULL || d == NULL || d->event == NULL || d->done == NULL)
    return -EINVAL;
  if (sink->_closing)
    return -ECANCELED;
  if (sink->conf->max_in_flight > 0 && sink->in_flight >= sink->conf->max_in_flight)
    return CSR_ELIMIT;
  d->outcome = SK_RETRY;
  d->status = 0;
  d->retry_after_ms = -1;
  d->reason[0] = '\0';
  d->excerpt[0] = '\0';
  d->_sink_state = NULL;
  d->_done = d->done;
  d->_sink = sink;
  d->done = on_delivery_done;
  sink->in_flight++;
  int rc = sink->ops->deliver(sink, d);
  if (rc < 0) {
    sink->in_flight--;
    d->done = d->_done;
    d->_done = NULL;
    d->_sink = NULL;
  }
  return rc;
}

static void on_sink_closed(struct sk_sink *sink) {
  void (*cb)(void *arg) = sink->_close_cb;
  void *arg = sink->_close_arg;
  free(sink);
  if (cb != NULL)
    cb(arg);
}

void sk_sink_close(struct sk_sink *sink, void (*cb)(void *arg), void *arg) {
  if (sink == NULL || sink->_closing)
    return;
  sink->_closing = 1;
  sink->_close_cb = cb;
  sink->_close_arg = arg;
  sink->ops->close(sink, on_sink_closed);
}
