/* csusim's Dataverse inside: shared by dataverse.c (contacts, queries, the service protection
 * limits, routing and lifetime) and triggers.c (the custom-trigger actions). Not part of sim.h:
 * nothing else needs it. */
#ifndef CSUSIM_DATAVERSE_INTERNAL_H
#define CSUSIM_DATAVERSE_INTERNAL_H

#include "sim.h"

#define DV_PREFIX     "/dataverse/api/data/v9.2/"
#define DV_GUID_LEN   36
#define DV_ODATA_HDRS "OData-Version: 4.0\r\n"
#define DV_E_PAYLOAD  "0x80048d19" /* OData deserialisation: malformed JSON, wrong types */
#define DV_E_ARGUMENT "0x80040203" /* InvalidArgument */
#define DV_E_NOTFOUND "0x80040217" /* "contact With Id = ... Does Not Exist" */
#define DV_E_SEGMENT  "0x80060888" /* unknown segments and query options */

struct sim__dv_contact; /* dataverse.c */

/* Open addressing over contact indexes (+1, 0 = empty slot), keyed by id or by email_key. */
struct sim__dv_index {
  size_t *slots;
  size_t cap; /* a power of two */
  size_t used;
};

/* A registered custom-trigger action (triggers.c). */
struct sim__dv_trigger {
  char *name;
  struct sim_trigger_param *params;
  size_t n;
};

/* The gate hands one of these back as the handler's argument: whether the request was over the
 * concurrency limit when it arrived. */
struct sim__dv_tag {
  struct sim_dataverse *d;
  bool over;
};

struct sim_dataverse {
  struct sim *sim;
  struct sim__dv_tag admitted, refused;
  uint64_t rng;
  uint64_t next_etag;
  struct sim__dv_contact *contacts;
  size_t ncontacts, cap;
  struct sim__dv_index by_id, by_email;
  struct sim__dv_trigger *triggers;
  size_t ntriggers;
  /* the request-count window: admission times (loop ms), oldest first, in a ring */
  uint64_t *times;
  size_t tcap, thead, tcount;
  unsigned strikes; /* 429s since the last admitted request */
  struct sim_dataverse_stats stats;
};

/* dataverse.c */

/**
 * Every handler starts here: the token, then the limits. Returns NULL when it answered; otherwise
 * the Dataverse, with the path after DV_PREFIX in *seg.
 */
struct sim_dataverse *sim__dv_admit(struct sim_req *r, const char **seg);
/** Answers a Dataverse error whose message is `fmt` with `a` and `b` (NULL reads as ""). */
void sim__dv_fail(struct sim_req *r, int status, const char *code, const char *fmt, const char *a,
                  const char *b);
/** Whether the body is application/json (any parameters); answers 415 when not. */
bool sim__dv_json_body(struct sim_req *r);
/** The body as a JSON object (free with csr_json_free), or NULL after answering 400. */
yajl_val sim__dv_parse_body(struct sim_req *r, const char *entity);
/** Whether `s` is a GUID in 8-4-4-4-12 form (either case). */
bool sim__dv_is_guid(const char *s);
/** Whether a contact with this id (any case) exists. */
bool sim__dv_has_contact(const struct sim_dataverse *d, const char *id);

/* triggers.c */

/** Registers SIM_DEFAULT_TRIGGER (at create); < 0 as sim_dataverse_register_trigger. */
int sim__dv_triggers_init(struct sim_dataverse *d);
/** Frees every registered action. */
void sim__dv_triggers_free(struct sim_dataverse *d);
/** The handler of POST {action}: validates the call against the action's parameters. */
void sim__dv_on_trigger(struct sim_req *r);

#endif
