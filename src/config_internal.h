/* What config.c takes from its neighbours: the checks and converters of single values that its key
 * tables name (config_values.c) and the queue of secrets read after the walk (config_secrets.c).
 * Nothing outside src/config*.c includes this. The walker they plug into is in config_yaml.h.
 */
#ifndef CSR_CONFIG_INTERNAL_H
#define CSR_CONFIG_INTERNAL_H

#include "config_yaml.h"

#define CSR__DAY_MS 86400000LL

/*
 * String checks (csr__check_fn): NULL when the value is fine, else a message that never quotes the
 * value, since it may be a secret pasted into the wrong key.
 */

/** A csu, sink or identity name: at most 64 letters, digits, '_', '-' or '.'. */
const char *csr__check_name(const char *s);
/** The name of an environment variable, which catches a secret written where its name belongs. */
const char *csr__check_env_name(const char *s);
/** A CSU event type: at most 20 characters (nvarchar(20)), no spaces. */
const char *csr__check_event_type(const char *s);
/** An http:// or https:// URL with a host. */
const char *csr__check_http_url(const char *s);
/** An MQTT broker URI: tcp://, ssl://, mqtt:// or mqtts:// and a host. */
const char *csr__check_broker(const char *s);
/** An MQTT publish topic template: no wildcards, only the known {placeholders}. */
const char *csr__check_topic(const char *s);
/** A custom trigger's parameter name: letters, digits and '_'. */
const char *csr__check_target(const char *s);

/*
 * Converters (csr__text_fn, csr__node_fn): fill the field(s) at key->off (and key->off2) of `base`,
 * or fail with ld's error naming `line` and `path`.
 */

/** A root URL into a char * at off: http(s), no query or fragment, always ending in '/'. */
int csr__text_root_url(struct csr__ld *ld, const struct csr__key *key, const char *text, int line,
                       const char *path, void *base);
/** host:port or [v6]:port into a struct csr_listen at off, its host in the arena. */
int csr__text_listen(struct csr__ld *ld, const struct csr__key *key, const char *text, int line,
                     const char *path, void *base);
/**
 * A csu's start_from: a relative time ("-24h", "now") sets the bool at off and an offset <= 0 at
 * off2; an ISO-8601 instant from the year 1970 on clears the bool and sets epoch ms at off2.
 */
int csr__text_start_from(struct csr__ld *ld, const struct csr__key *key, const char *text, int line,
                         const char *path, void *base);
/** enrich: a list of order and customer, each at most once, into CSR_ENRICH_* bits at off. */
int csr__node_enrich(struct csr__ld *ld, const struct csr__key *key, yaml_node_t *node,
                     const char *path, void *base);
/** fields: a mapping of trigger parameter to source, in the order written, array at off, count at
 * off2. */
int csr__node_fields(struct csr__ld *ld, const struct csr__key *key, yaml_node_t *node,
                     const char *path, void *base);

/*
 * Secrets (config_secrets.c)
 */

/** What a queued secret is and how it is read. */
enum csr__pend_kind {
  CSR__PEND_ENV,     /* a required secret from an environment variable */
  CSR__PEND_FILE,    /* a required secret from a file */
  CSR__PEND_TOKEN,   /* an optional token: unset or empty leaves NULL */
  CSR__PEND_INGRESS, /* the ingress token rule, once its token is known */
};

/**
 * Queues a secret: `what` is the variable name or file path (not copied: it lives in the arena or
 * is static), `dest` receives the value, `source` (or NULL) "env NAME" / "file PATH". `header`
 * forbids line breaks (the value goes into an HTTP header). Errors are reported at `line` and
 * `path`. Returns 0 or -ENOMEM.
 */
CSR_NODISCARD int csr__add_pending(struct csr__ld *ld, enum csr__pend_kind kind, const char *what,
                                   char **dest, char **source, int header, int line,
                                   const char *path);

/** Reads every queued secret in order; returns 0 or the first error (CSR_ECONFIG, -ENOMEM). */
CSR_NODISCARD int csr__resolve_pending(struct csr__ld *ld);

#endif
