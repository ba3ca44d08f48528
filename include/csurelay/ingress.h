/* csurelay customer sync ingress — marketing system → Commerce customers (SPEC §5, issue #6).
 *
 * The reverse direction of the relay, in three parts (src/ingress/):
 *   customer.c, iso.c  the request: validation (every failing field named), the normalised form
 *                      kept in the job record, and the Commerce Customer body built from it. Pure.
 *   jobs.c             the durable job model: what the JOB, JOB_END and CUSTOMER records of the
 *                      AOF mean (pipeline.h lists the record types). Pure, like pl_state, which
 *                      owns one and hands it the job records on apply, replay and dump.
 *   ingress.c          the listener (POST /v1/customers, GET /v1/customers/jobs/{id}) and the job
 *                      runner: per-email serialisation, SearchByFields → PATCH or POST against the
 *                      ingress CSU, retries through a pl_sched, answers within sync_wait_ms.
 *
 * A newcomer follows a request: ingress.c on_post → cs_customer_parse → JOB appended (durable) →
 * the email's queue → the scheduler → upsert attempt (search, then patch or create) → JOB_END
 * appended → the waiting request answered 200, or its GET answered later.
 */
#ifndef CSURELAY_INGRESS_H
#define CSURELAY_INGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "csurelay/config.h"
#include "csurelay/error.h"
#include "csurelay/json.h"
#include "csurelay/metrics.h"
#include "csurelay/reactor.h"

/* Attempts against the CSU at once (dynamics-api section 2.6). */
#define CS_INGRESS_MAX_IN_FLIGHT 8

struct pl_store_emitter;
struct pl_tokens;
struct pl_admit;

/* ---------------------------------------------------------------------------------------------- */
/* The request (src/ingress/customer.c, iso.c)                                                     */
/* ---------------------------------------------------------------------------------------------- */

/*
 * Body of POST /v1/customers (SPEC §5): a JSON object with
 *   email (required), firstName, lastName, phone, optIn, language, currency, customerGroup,
 *   address {street, city, state, zip, country}.
 * Rules (each broken rule is one cs_field_error naming the field, dotted for the address:
 * "address.country"; every field is checked, not just the first bad one):
 *  - The body is a JSON object; anything else (not JSON, truncated, an array, a second value after
 *    the object, invalid UTF-8, nesting deeper than the address) is CSR_EPARSE, not a field error.
 *  - A key not listed above is an error ("unknown field"), so a typo never silently drops data.
 *    A key given twice is an error ("duplicate field").
 *  - null is the same as absent, except for email (required).
 *  - Strings only where strings are expected, optIn a boolean, address an object.
 *  - email: at most 254 bytes (RFC 5321), one '@', a local part of 1-64 bytes of RFC 5322 atext
 *    and single dots (not first or last; no quoted local parts), a domain of at least two
 *    dot-separated labels of 1-63 letters, digits and inner hyphens, the last label alphabetic
 *    (2+ letters) — no IP literals. Stored as given (trimmed of nothing: surrounding spaces are an
 *    error); its key (cs_email_key) is the lowercase form.
 *  - phone: E.164, ^\+[1-9][0-9]{1,14}$ (no spaces or punctuation: the caller normalises).
 *  - currency: an active ISO 4217 code, three uppercase letters, from the full list (cs_iso_currency).
 *  - address.country: an ISO 3166-1 alpha-3 code, uppercase, from the full list of 249 assigned
 *    codes (cs_iso_country).
 *  - language: a language tag as Commerce stores it: 2-3 letters, optionally '-' and 2-8 letters or
 *    digits (en, en-us, en-US, nb-NO, zh-Hans); at most 7 bytes (LanguageId).
 *  - Lengths in bytes, after UTF-8 validation, from the F&O fields they land in: firstName and
 *    lastName 1-60 (Name), customerGroup 1-10 (CustGroupId), address.street 1-250, city 1-60,
 *    state 1-10, zip 1-10. Empty strings are errors (send null to leave a field alone). Control
 *    characters (below 0x20, and 0x7f) are errors in every field.
 */

#define CS_MAX_FIELD_ERRORS 24

struct cs_field_error {
  char field[32];    /* "phone", "address.country", or the unknown key (truncated) */
  char message[112]; /* "must be E.164, e.g. +16135551111" */
};

struct cs_field_errors {
  struct cs_field_error e[CS_MAX_FIELD_ERRORS];
  size_t n; /* errors found; past CS_MAX_FIELD_ERRORS only the first ones are kept */
};

/** A validated request; every string is NUL-terminated, NULL when absent (or null). */
struct cs_customer {
  char *email;
  char *first_name, *last_name;
  char *phone;
  bool has_opt_in, opt_in;
  char *language;
  char *currency;
  char *customer_group;
  bool has_address;
  struct {
    char *street, *city, *state, *zip, *country;
  } address;
  /* private */
  void *_mem;
};

/**
 * Parses and validates a request body. 0: *out is filled (free it with cs_customer_free).
 * CSR_EINVALID when fields break the rules: errs lists them and *out is left empty. CSR_EPARSE
 * when the body is not a JSON object (see the rules), with a one-line reason in
 * errs->e[0].message, errs->e[0].field "" and errs->n 1. UV_ENOMEM.
 */
CSR_NODISCARD int cs_customer_parse(const char *body, size_t len, struct cs_customer *out,
                                    struct cs_field_errors *errs);

void cs_customer_free(struct cs_customer *c);

/**
 * Writes the normalised request (the keys of SPEC §5 that are present, in the order above) as one
 * JSON object: what the JOB record keeps. cs_customer_parse accepts it back unchanged.
 */
CSR_NODISCARD int cs_customer_encode(const struct cs_customer *c, struct csr_jw *jw);

/**
 * Writes the Commerce Customer entity for POST Customers (create = true) or PATCH
 * Customers('{account}') (create = false), dynamics-api §2.3:
 *   create: AccountNumber "", CustomerTypeValue 1 (person), Email and ReceiptEmail, the names
 *           (Name = "first last" when either is given), Phone, Language, CurrencyCode,
 *           CustomerGroup, Addresses [{Name, Street, City, State, ZipCode,
 *           ThreeLetterISORegionName, IsPrimary true, AddressTypeValue 0}] when address is given,
 *           ExtensionProperties (optIn, below).
 *   update: AccountNumber `account`, and only the fields the request gives (a PATCH merges).
 * optIn is not a Customer property on the wire (dynamics-api §5: UNCONFIRMED, handled by
 * extensions), so it travels as ExtensionProperties [{"Key":"EmailOptIn","Value":
 * {"BooleanValue":true|false}}], which a CSU without the extension ignores.
 */
CSR_NODISCARD int cs_customer_commerce_body(const struct cs_customer *c, bool create,
                                            const char *account, struct csr_jw *jw);

/** The email's key for serialisation and the account mapping: ASCII-lowercased into buf. 0, or
 * UV_ENOBUFS when it does not fit. */
CSR_NODISCARD int cs_email_key(const char *email, char *buf, size_t size);

/** True for an assigned ISO 3166-1 alpha-3 code (exact, uppercase: "USA", "DNK", "GBR"). */
bool cs_iso_country(const char *code);
/** True for an active ISO 4217 currency code (exact, uppercase: "USD", "EUR", "DKK"). */
bool cs_iso_currency(const char *code);

/* ---------------------------------------------------------------------------------------------- */
/* The job model (src/ingress/jobs.c)                                                              */
/* ---------------------------------------------------------------------------------------------- */

/*
 * What the ingress records mean (pipeline.h, enum pl_rec_type; compact JSON payloads like the
 * others; times in ms since the epoch):
 *   JOB       {id, email, at_ms, req: {the normalised request, cs_customer_encode}}
 *             a request accepted: appended and durable before any call to Commerce
 *   JOB_END   {id, outcome: "done"|"failed", account, created, status, message, attempts, at_ms}
 *             done: account is the customer's AccountNumber, created whether this job made it
 *             (and the email's mapping becomes account); failed: status and message are
 *             Commerce's answer (or "max_attempts: http_503" and the last excerpt), account ""
 *   CUSTOMER  {email, account}  the email → AccountNumber mapping (written by dumps; a JOB_END
 *             done sets it too)
 *
 * Model. Jobs by id (a hash table), pending ones in acceptance order (to resume after a restart),
 * ended ones in end order until they expire: retain_ms after their end, or sooner when more than
 * max_ended are kept (the oldest go first). The mapping is keyed by cs_email_key and holds at most
 * max_accounts entries (the least recently set go first): it is a cache that saves a Search, never
 * the truth, since the upsert searches when the mapping has nothing (or PATCH says 404).
 *
 * Errors of cs_jobs_apply (nothing changes when it fails; cs_jobs_error() names the record and the
 * field or id): CSR_EPARSE (malformed, a missing or mistyped field), UV_EEXIST (JOB of an id
 * known), CSR_ECORRUPT (JOB_END of an id never seen or already ended, a type that is not a job
 * record), UV_ENOMEM.
 */

enum cs_job_state { CS_JOB_PENDING, CS_JOB_DONE, CS_JOB_FAILED };

struct cs_job {
  /* read-only: valid until the next apply or expire that removes the job */
  const char *id;
  const char *email;   /* as given */
  const char *request; /* the normalised request (JSON text) */
  size_t request_len;
  int64_t accepted_ms;
  enum cs_job_state state;
  const char *account; /* done: the AccountNumber; "" otherwise */
  bool created;        /* done: this job created the customer */
  int status;          /* ended: the deciding HTTP status, 0 when none */
  const char *message; /* failed: Commerce's message (or the reason); "" otherwise */
  unsigned attempts;   /* ended: attempts made */
  int64_t ended_ms;    /* ended: when; 0 while pending */
  /* public: the runtime's own record of the job while it works on it (NULL otherwise) */
  void *run;
  /* private */
  struct cs_job *_prev, *_next; /* the pending list or the ended list */
  struct cs_job *_hnext;        /* hash chain */
};

struct cs_jobs_opts {
  int64_t retain_ms;   /* keep ended jobs this long for GET; 0 = 24 h */
  size_t max_ended;    /* 0 = 100000 */
  size_t max_accounts; /* 0 = 100000 */
};

struct cs_jobs_stats {
  uint64_t pending, ended; /* jobs held */
  uint64_t accounts;       /* mappings held */
  uint64_t expired;        /* ended jobs dropped so far */
  uint64_t bytes;          /* heap held (approximate) */
};

struct cs_jobs;

/** `opts` may be NULL for the defaults. 0, UV_ENOMEM. */
CSR_NODISCARD int cs_jobs_create(const struct cs_jobs_opts *opts, struct cs_jobs **out);
void cs_jobs_destroy(struct cs_jobs *j);

/** Applies one JOB, JOB_END or CUSTOMER record (`payload` is the caller's). */
CSR_NODISCARD int cs_jobs_apply(struct cs_jobs *j, uint8_t type, const void *payload, size_t len);
const char *cs_jobs_error(const struct cs_jobs *j);

/** Emits CUSTOMER per mapping (oldest first) and JOB + JOB_END per ended job (in end order),
 * interleaved in the order the model set and ended them (a JOB_END done sets a mapping too, so a
 * CUSTOMER set after it must replay after it; a mapping its JOB_END sets needs no CUSTOMER), then
 * JOB per pending job, so a replay of the dump rebuilds an equal model. The emitter's error or
 * UV_ENOMEM. */
CSR_NODISCARD int cs_jobs_dump(struct cs_jobs *j, struct pl_store_emitter *e);

/** The job, or NULL. */
struct cs_job *cs_jobs_find(const struct cs_jobs *j, const char *id);
/** Pending jobs in acceptance order: NULL starts, NULL ends. */
struct cs_job *cs_jobs_pending_next(const struct cs_jobs *j, const struct cs_job *prev);
/** The mapped AccountNumber of an email (any case), or NULL. */
const char *cs_jobs_account(const struct cs_jobs *j, const char *email);
/** Drops ended jobs past retain_ms at `now_ms` (and past max_ended); returns how many. */
size_t cs_jobs_expire(struct cs_jobs *j, int64_t now_ms);
void cs_jobs_stats(const struct cs_jobs *j, struct cs_jobs_stats *out);

/** The fields of a JOB_END record. */
struct cs_rec_job_end {
  const char *id;
  enum cs_job_state outcome; /* CS_JOB_DONE or CS_JOB_FAILED */
  const char *account;       /* done: required; failed: NULL or "" */
  bool created;
  int status;
  const char *message; /* may be NULL */
  unsigned attempts;
  int64_t at_ms;
};

/* Encoders (as pl_rec_*: into a caller-initialised or reset writer; read with csr_jw_finish).
 * 0 or UV_EINVAL for a required string NULL or empty (apply refuses empty ones) or a `req` that is
 * not one JSON object; `req` is JSON text (cs_customer_encode's), embedded compact. */
CSR_NODISCARD int cs_rec_job(struct csr_jw *jw, const char *id, const char *email, int64_t at_ms,
                             const char *req, size_t req_len);
CSR_NODISCARD int cs_rec_job_end(struct csr_jw *jw, const struct cs_rec_job_end *e);
CSR_NODISCARD int cs_rec_customer(struct csr_jw *jw, const char *email, const char *account);

/* ---------------------------------------------------------------------------------------------- */
/* The listener and the job runner (src/ingress/ingress.c)                                         */
/* ---------------------------------------------------------------------------------------------- */

/*
 * HTTP (on cfg->ingress.listen, its own rx_http_server; body ceiling 64 KiB → 413):
 *   POST /v1/customers           Authorization: Bearer <ingress token> when one is configured
 *                                (401 {"error":"unauthorized"} otherwise, compared in constant
 *                                time); 400 {"error":"invalid_json","message"} or
 *                                {"error":"invalid_request","fields":[{field,message}...]};
 *                                then the JOB record, durable, then the job runs; the answer
 *                                waits up to sync_wait_ms: 200 {"accountNumber","created"},
 *                                422 {"error":"commerce_rejected","status","message","jobId"}
 *                                for a failed job, else 202 {"jobId","status":"pending"} with
 *                                Location: /v1/customers/jobs/{id}. 503 when the store refuses.
 *   GET /v1/customers/jobs/{id}  same auth; 200 {"jobId","status":"pending"|"done"|"failed",
 *                                "accountNumber","created","attempts","status_code"?,"message"?,
 *                                "acceptedAt","endedAt"} (ISO-8601 UTC); 404 for an unknown or
 *                                expired id. No email or other PII in answers or logs.
 *
 * Running a job (one attempt = the whole upsert from the start, so a retry after any step, or
 * after a restart, is safe):
 *  1. account = the mapping's, else POST {csu}Commerce/Customers/SearchByFields?$top=5&api-version=7.3
 *     with the Email criterion (dynamics-api §2.3) and the first hit whose Email equals the job's
 *     email case-insensitively (a hit that only starts with it is not the customer).
 *  2. account known: PATCH Customers('{account}') with the update body; a 404 there drops the
 *     mapping and the attempt goes back to step 1 once (the customer was deleted or merged).
 *     Not known: POST Customers with the create body; the account comes from the answer's
 *     AccountNumber. A crash between the POST and the JOB_END is safe: the next attempt searches
 *     first and finds the customer it made (then updates it, created false).
 *  3. JOB_END done (the mapping follows), or failed on a permanent answer (4xx but 408/429, or a
 *     2xx body without an AccountNumber) with Commerce's message (LocalizedMessage, else the
 *     body's excerpt). Transient answers (408, 429, 5xx, transport, 401 once after a token refresh)
 *     are retried by the pl_sched with cfg->retry's backoff, Retry-After and max_attempts; past
 *     max_attempts the job fails with "max_attempts: <reason>".
 * Per email (cs_email_key) one job runs at a time; the others wait in that email's FIFO, so two
 * concurrent posts for a new email create one customer and the second updates it. At most 8 jobs
 * run at once against the CSU (dynamics-api §2.6). Headers: OUN (the CSU's), Authorization:
 * Bearer (the CSU identity's token cache), Content-Type/Accept: application/json.
 */

struct cs_ingress;

struct cs_ingress_deps {
  struct rx_loop *loop;
  const struct csr_config *cfg; /* ingress, retry, limits; ingress.csu is the target */
  struct rx_http *http;
  struct pl_tokens *tokens; /* the ingress CSU's identity */
  struct pl_admit *admit;   /* its store and state (pl_state_jobs); a failed append stops it */
  struct csr_metrics *metrics;
};

struct cs_ingress_stats {
  uint64_t requests;           /* POSTs answered, any status */
  uint64_t invalid;            /* 400s for validation or JSON */
  uint64_t unauthorized;       /* 401s */
  uint64_t accepted;           /* JOB records made durable */
  uint64_t created, updated;   /* jobs done, by what they did */
  uint64_t failed;             /* jobs failed */
  uint64_t retries;            /* attempts that failed transiently */
  uint64_t searches;           /* SearchByFields calls */
  uint64_t answered_sync;      /* 200/422 within sync_wait_ms */
  uint64_t answered_async;     /* 202 */
  uint64_t running, queued;    /* jobs now in the scheduler / waiting behind their email */
};

/**
 * Listens on cfg->ingress.listen (port 0 = ephemeral, see cs_ingress_port), registers its metrics
 * (counters continue from their values in `metrics`), and resumes every pending job of the state
 * (a restart after a crash). 0, or an error with `err` filled (the bind's, UV_ENOMEM).
 */
CSR_NODISCARD int cs_ingress_open(const struct cs_ingress_deps *deps, struct cs_ingress **out,
                                  struct csr_err *err);

int cs_ingress_port(const struct cs_ingress *g);
void cs_ingress_stats(const struct cs_ingress *g, struct cs_ingress_stats *out);

/**
 * Stops listening; requests waiting for their job get 202 (their JOB is durable) or 503 (not yet);
 * running attempts are cancelled (their jobs stay pending in the AOF for the next open). `cb`
 * fires once `g` is freed, before the store is closed by the caller.
 */
void cs_ingress_stop(struct cs_ingress *g, void (*cb)(void *arg), void *arg);

#endif
