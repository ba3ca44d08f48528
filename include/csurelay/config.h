/* csurelay configuration — the YAML of SPEC section 7, loaded, validated and resolved.
 *
 * csr_config_load() reads the file with libyaml, substitutes ${VAR} in every string, rejects unknown
 * keys, checks types, ranges and cross-references (a csu's identity, a route's sinks), reads secrets
 * from their *_env variables or *_file files, and reports the first error as file:line: key: message.
 * Every string in the result lives as long as the config; csr_config_destroy() frees it all.
 */
#ifndef CSURELAY_CONFIG_H
#define CSURELAY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "csurelay/error.h"

enum csr_fsync { CSR_FSYNC_ALWAYS, CSR_FSYNC_BATCH, CSR_FSYNC_NONE };

/** host:port as written ("127.0.0.1:8686", "[::1]:8686"). */
struct csr_listen {
  char *host;
  int port;
};

struct csr_identity {
  char *name;
  char *authority;     /* default https://login.microsoftonline.com */
  char *tenant;
  char *client_id;
  char *scope;
  char *token_url;     /* {authority}/{tenant}/oauth2/v2.0/token, derived */
  char *secret;        /* resolved from the env variable or file; never log it */
  char *secret_source; /* "env CSU_CLIENT_SECRET" or "file /run/secrets/csu", for messages */
  char *client_secret_env;  /* as configured; exactly one of the two is set */
  char *client_secret_file; /* read at load time; relative paths from the working directory */
  int line;
};

struct csr_csu {
  char *name;
  char *url; /* Retail Server root, always ending in '/' */
  char *oun;
  char *identity_name;
  struct csr_identity *identity;
  char **event_types;
  size_t n_event_types;
  uint64_t poll_interval_ms; /* default 1000 */
  unsigned page_size;        /* default 250, 1..1000 */
  uint64_t overlap_s;        /* default 10 */
  uint64_t settle_ms;        /* default 2000 */
  uint64_t sweep_s;          /* default 900; 0 disables the sweep */
  uint64_t sweep_every_s;    /* default 300 */
  bool start_relative;       /* true: start_from_ms is an offset from now (<= 0) */
  int64_t start_from_ms;     /* default -24h */
  int line;
};

enum csr_sink_type { CSR_SINK_CIJ, CSR_SINK_MQTT, CSR_SINK_WEBHOOK };

struct csr_sink_conf {
  char *name;
  enum csr_sink_type type;
  unsigned max_in_flight; /* cij default 16, at most 52; webhook default 32; mqtt default 1000 */
  double rate_per_s;      /* 0 = unlimited (cij default 40) */
  uint64_t timeout_ms;    /* per request; 0 = limits.http_timeout_ms */
  /* cij */
  char *dataverse_url; /* ending in '/' */
  char *identity_name;
  struct csr_identity *identity;
  /* mqtt */
  char *broker; /* tcp://host:port or ssl://host:port */
  char *client_id;
  char *topic; /* template: {csu} {channel} {type} {dataarea} {terminal} */
  int qos;     /* 0..2, default 1 */
  char *username;
  char *password;        /* from password_env / password_file, or NULL */
  char *password_env;    /* as configured, or NULL */
  char *password_file;   /* as configured, or NULL */
  uint64_t keepalive_s;  /* default 60; 0 disables keep-alive */
  /* webhook */
  char *url;             /* as written: an endpoint, so no '/' is appended */
  char *auth_header;     /* a full "Authorization: ..." value from auth_header_env, or NULL */
  char *auth_header_env; /* as configured, or NULL */
  int line;
};

/** One trigger field: target parameter ← a path into the enriched document, or a $variable. */
struct csr_field_map {
  char *target;
  char *source; /* "OrderDetails.AmountPaid", "$event_time", "$now", "$contact_id", "$event_id" */
};

struct csr_delivery_conf {
  char *sink_name;
  struct csr_sink_conf *sink;
  char *trigger; /* cij only: the custom trigger's action name */
  struct csr_field_map *fields; /* NULL = the sink's default mapping */
  size_t n_fields;
  int line;
};

#define CSR_ENRICH_ORDER    1u
#define CSR_ENRICH_CUSTOMER 2u

struct csr_route {
  char *event_type;
  unsigned enrich; /* CSR_ENRICH_* bits */
  struct csr_delivery_conf *deliver;
  size_t n_deliver;
  int line;
};

struct csr_config {
  char *path;
  struct {
    char *dir; /* default ./var */
    enum csr_fsync fsync;
    uint64_t fsync_interval_ms; /* default 5 */
  } state;
  struct {
    struct csr_listen listen; /* default 127.0.0.1:8686 */
    char *token_env;
    char *token; /* the value of token_env when set and non-empty, else NULL (no auth) */
  } admin;
  struct {
    uint64_t max_live_events; /* default 20000 */
    uint64_t memory_mb;       /* default 256 */
    uint64_t http_timeout_ms; /* default 10000 */
  } limits;
  struct {
    uint64_t base_ms;      /* default 1000 */
    uint64_t cap_ms;       /* default 300000 */
    unsigned max_attempts; /* default 10 */
  } retry;
  struct {
    char *level; /* debug | info | warn | error; default info (an addition to SPEC section 7) */
  } log;
  struct csr_identity *identities;
  size_t n_identities;
  struct csr_csu *csus;
  size_t n_csus;
  struct csr_sink_conf *sinks;
  size_t n_sinks;
  struct csr_route *routes;
  size_t n_routes;
  struct {
    bool present;
    struct csr_listen listen; /* default 127.0.0.1:8687 */
    char *token_env;
    char *token; /* NULL when unset: the listener then starts only on loopback */
    char *csu_name;
    struct csr_csu *csu;
    uint64_t sync_wait_ms; /* default 5000 */
  } ingress;
  /* private */
  void *_arena;
};

/**
 * Loads and validates `path`. On success *out owns the config. On failure returns CSR_ECONFIG (or a
 * negative errno when the file cannot be read), fills `err` and leaves *out NULL.
 */
CSR_NODISCARD int csr_config_load(const char *path, struct csr_config **out, struct csr_err *err);

/** Same, from a YAML text in memory; `name` stands in for the file name in errors. */
CSR_NODISCARD int csr_config_parse(const char *name, const char *yaml, size_t len,
                                   struct csr_config **out, struct csr_err *err);

void csr_config_destroy(struct csr_config *cfg);

/** Finds by name; NULL when absent. */
struct csr_sink_conf *csr_config_sink(const struct csr_config *cfg, const char *name);
struct csr_csu *csr_config_csu(const struct csr_config *cfg, const char *name);
struct csr_identity *csr_config_identity(const struct csr_config *cfg, const char *name);

/** Parses "host:port" or "[v6]:port" into `out` (host allocated with malloc). */
CSR_NODISCARD int csr_listen_parse(const char *text, struct csr_listen *out);

/** True when `host` is a loopback address or "localhost". */
bool csr_host_is_loopback(const char *host);

#endif
