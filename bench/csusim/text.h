/* csusim's small text helpers, shared by several modules: percent-decoding (query strings and form
 * bodies) and the plain JSON answers of the sim's own endpoints outside the gate (/sim/faults,
 * /ledger). Not part of sim.h: only the modules use them. */
#ifndef CSUSIM_TEXT_H
#define CSUSIM_TEXT_H

#include <stdbool.h>
#include <stddef.h>

#include "csurelay/json.h"
#include "csurelay/reactor.h"

/**
 * Decodes `s` in place as application/x-www-form-urlencoded: '+' is a space, %XX a byte (either
 * case); a broken escape stays as sent.
 */
void sim_url_decode(char *s);

/**
 * Splits one "name=value" pair of a urlencoded text at its first '=' and decodes both halves in
 * place; `kv` is then the name. Returns the value (inside `kv`'s storage; "" when there is no '=').
 */
char *sim_url_pair(char *kv);

/**
 * Copies the decoded value of `key` in the raw query string `q` into `out` (same rules as
 * sim_url_decode). Returns false when the key is absent or the decoded value does not fit in `len`
 * bytes with its NUL.
 */
bool sim_query_get(const char *q, const char *key, char *out, size_t len);

/** Answers `req` with the writer's document as application/json; 500 when it does not finish. */
void sim_respond_json(struct rx_http_request *req, int status, struct csr_jw *jw);

/** Answers {"<key>":"<msg>"}, or {"<key>":true} when `msg` is NULL; 500 when out of memory. */
void sim_respond_msg(struct rx_http_request *req, int status, const char *key, const char *msg);

#endif
