/* Entra ID for csusim: the client-credentials token endpoint (v2.0 and v1) and the token checks the
 * CSU and Dataverse endpoints run first.
 *
 * Tokens are stateless, so nothing grows with the number issued: a JWT-shaped string whose payload
 * names the audience, the tenant and the issue and expiry instants (wall-clock ms), signed with two
 * SipHash-2-4 tags under keys drawn from the seed. A forged or altered token fails its tag; the
 * same seed verifies the same tokens after a restart, as a real resource server would. Revocation
 * (sim_token_faults.revoke_at_s) is a moment, not a list: a token issued before it dies at it.
 *
 * Choices where the references are silent (dynamics-api.md section 1, UNCONFIRMED there):
 *   - Statuses: invalid_client (7000215 wrong secret, 7000218 no secret) is 401, as RFC 6749 5.2
 *     allows; every other token error is 400.
 *   - Missing parameters are AADSTS900144, duplicated ones AADSTS9000411, a GET AADSTS900561, a v2
 *     call with resource= AADSTS901002, a v1 resource we do not know AADSTS500011 invalid_resource,
 *     a known resource without /.default AADSTS1002012, two resources in one scope AADSTS700022.
 *   - Commerce 401: ErrorResourceId Microsoft_Dynamics_Commerce_Runtime_InvalidAudience for a token
 *     of another resource (the id the reference names), ..._AuthenticationFailed otherwise;
 *     ExceptionType UserAuthenticationException.
 *   - Dataverse 401: 0x8004a100 InvalidAuthTicket (missing, malformed, forged), 0x8004a101
 *     ExpiredAuthTicket (expired or revoked), 0x80072560 "The user is not a member of the
 *     organization." (a token for another resource), with WWW-Authenticate: Bearer.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sim.h"
#include "text.h"

#define FORM_MAX     16   /* form fields kept; real requests send four or five */
#define TOKEN_MAX    1024 /* an access token we mint stays well under this */
#define TENANT_MAX   64
#define DEFAULT_SFX  "/.default"
#define COMMERCE_401 "Microsoft_Dynamics_Commerce_Runtime_AuthenticationFailed"
#define AUDIENCE_401 "Microsoft_Dynamics_Commerce_Runtime_InvalidAudience"

struct sim_entra {
  struct sim *sim;
  uint64_t key[4]; /* two SipHash keys: the tag is 128 bits, so guessing is hopeless */
  struct sim_entra_stats stats;
};

/* The resources a token can be for: the scope the relay asks for, and the App ID URI (the scope
 * without /.default), which is the v1 resource= value and the token's aud claim. */
static const struct resource {
  enum sim_audience aud;
  const char *scope;
} resources[] = {{SIM_AUD_COMMERCE, SIM_COMMERCE_SCOPE}, {SIM_AUD_DATAVERSE, SIM_DATAVERSE_SCOPE}};

#define NRESOURCES (sizeof(resources) / sizeof(resources[0]))

static size_t uri_len(const struct resource *res) {
  return strlen(res->scope) - (sizeof(DEFAULT_SFX) - 1);
}

/* ---------------------------------------------------------------------------------------------- */
/* SipHash-2-4 and base64 */
/* ---------------------------------------------------------------------------------------------- */

static uint64_t rotl(uint64_t x, int b) {
  return (x << b) | (x >> (64 - b));
}

static void sipround(uint64_t v[4]) {
  v[0] += v[1], v[1] = rotl(v[1], 13), v[1] ^= v[0], v[0] = rotl(v[0], 32);
  v[2] += v[3], v[3] = rotl(v[3], 16), v[3] ^= v[2];
  v[0] += v[3], v[3] = rotl(v[3], 21), v[3] ^= v[0];
  v[2] += v[1], v[1] = rotl(v[1], 17), v[1] ^= v[2], v[2] = rotl(v[2], 32);
}

static uint64_t siphash(const uint64_t k[2], const char *p, size_t len) {
  uint64_t v[4] = {0x736f6d6570736575ULL ^ k[0], 0x646f72616e646f6dULL ^ k[1],
                   0x6c7967656e657261ULL ^ k[0], 0x7465646279746573ULL ^ k[1]};
  uint64_t last = (uint64_t)len << 56;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t m = 0;
    for (int j = 7; j >= 0; j--)
      m = (m << 8) | (unsigned char)p[i + (size_t)j];
    v[3] ^= m;
    sipround(v), sipround(v);
    v[0] ^= m;
  }
  for (size_t j = 0; i + j < len; j++)
    last |= (uint64_t)(unsigned char)p[i + j] << (8 * j);
  v[3] ^= last;
  sipround(v), sipround(v);
  v[0] ^= last;
  v[2] ^= 0xff;
  for (int r = 0; r < 4; r++)
    sipround(v);
  return v[0] ^ v[1] ^ v[2] ^ v[3];
}

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Unpadded base64url; returns the length written, 0 when it would not fit. */
static size_t b64_encode(const unsigned char *in, size_t len, char *out, size_t cap) {
  size_t need = (len * 4 + 2) / 3;
  if (need + 1 > cap)
    return 0;
  size_t o = 0;
  for (size_t i = 0; i < len; i += 3) {
    uint32_t n = (uint32_t)in[i] << 16;
    n |= i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0;
    n |= i + 2 < len ? in[i + 2] : 0;
    for (size_t k = 0; k < 4 && o < need; k++)
      out[o++] = b64url[(n >> (18 - 6 * k)) & 63];
  }
  out[o] = '\0';
  return o;
}

static int b64_value(char c) {
  if (c == '+' || c == '-')
    return 62;
  if (c == '/' || c == '_')
    return 63;
  const char *p = c ? strchr(b64url, c) : NULL;
  return p != NULL ? (int)(p - b64url) : -1;
}

/* Either alphabet, padding optional (Basic auth pads, JWT parts do not). Returns the decoded
 * length (NUL-terminated), or -1 on a bad character or when it would not fit. */
static long b64_decode(const char *in, size_t len, char *out, size_t cap) {
  while (len > 0 && in[len - 1] == '=')
    len--;
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < len; i++) {
    int v = b64_value(in[i]);
    if (v < 0)
      return -1;
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (o + 1 >= cap)
        return -1;
      out[o++] = (char)((acc >> bits) & 0xff);
    }
  }
  out[o] = '\0';
  return (long)o;
}

/* ---------------------------------------------------------------------------------------------- */
/* The form body */
/* ---------------------------------------------------------------------------------------------- */

struct form {
  char *buf; /* the body, decoded in place */
  unsigned n;
  const char *dup; /* the first name given twice, or NULL */
  struct {
    const char *name, *value;
  } f[FORM_MAX];
};

static const char *form_get(const struct form *f, const char *name) {
  for (unsigned i = 0; i < f->n; i++)
    if (strcmp(f->f[i].name, name) == 0)
      return f->f[i].value;
  return NULL;
}

static int form_parse(struct form *f, const char *body, size_t len) {
  memset(f, 0, sizeof(*f));
  f->buf = malloc(len + 1);
  if (f->buf == NULL)
    return -ENOMEM;
  memcpy(f->buf, body, len);
  f->buf[len] = '\0';
  char *save = NULL;
  for (char *kv = strtok_r(f->buf, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
    char *value = sim_url_pair(kv);
    if (form_get(f, kv) != NULL && f->dup == NULL)
      f->dup = kv;
    if (f->n < FORM_MAX)
      f->f[f->n].name = kv, f->f[f->n++].value = value;
  }
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Minting and verifying */
/* ---------------------------------------------------------------------------------------------- */

/* The two tags of `text`, base64url: 22 characters. */
static void sign(const struct sim_entra *e, const char *text, size_t len, char out[24]) {
  uint64_t t[2] = {siphash(e->key, text, len), siphash(e->key + 2, text, len)};
  unsigned char raw[16];
  for (int i = 0; i < 16; i++)
    raw[i] = (unsigned char)(t[i / 8] >> (8 * (i % 8)));
  b64_encode(raw, sizeof(raw), out, 24);
}

static void write_claims(struct csr_jw *jw, const struct resource *res, const char *tenant,
                         int64_t now_ms, uint64_t life_s, uint64_t serial) {
  char iss[TENANT_MAX + 40];
  snprintf(iss, sizeof(iss), "https://sts.windows.net/%s/", tenant);
  csr_jw_obj(jw);
  csr_jw_key(jw, "aud");
  csr_jw_strn(jw, res->scope, uri_len(res));
  csr_jw_kstr(jw, "iss", iss);
  csr_jw_kint(jw, "iat", now_ms / 1000);
  csr_jw_kint(jw, "nbf", now_ms / 1000);
  csr_jw_kint(jw, "exp", (now_ms + (int64_t)life_s * 1000) / 1000);
  csr_jw_kstr(jw, "appid", SIM_CLIENT_ID);
  csr_jw_kstr(jw, "idtyp", "app");
  csr_jw_kstr(jw, "tid", tenant);
  /* The checks use the millisecond instants: exp in seconds would cut a 1 s token short. */
  csr_jw_kint(jw, "sim_iat_ms", now_ms);
  csr_jw_kint(jw, "sim_exp_ms", now_ms + (int64_t)life_s * 1000);
  csr_jw_kint(jw, "sim_n", (int64_t)serial);
  csr_jw_obj_end(jw);
}

/* header.payload.tag into `out`; 0 or < 0 when it does not fit. */
static int mint(struct sim_entra *e, const struct resource *res, const char *tenant, int64_t now_ms,
                uint64_t life_s, char *out, size_t cap) {
  static const char header[] = "{\"typ\":\"JWT\",\"alg\":\"HS256\",\"kid\":\"csusim\"}";
  struct csr_jw jw;
  if (csr_jw_init(&jw) < 0)
    return -ENOMEM;
  write_claims(&jw, res, tenant, now_ms, life_s, e->stats.issued + 1);
  const char *payload;
  size_t plen, n = 0, m;
  int rc = csr_jw_finish(&jw, &payload, &plen);
  if (rc == 0 &&
      (n = b64_encode((const unsigned char *)header, sizeof(header) - 1, out, cap)) > 0 &&
      n + 1 < cap) {
    out[n++] = '.';
    m = b64_encode((const unsigned char *)payload, plen, out + n, cap - n);
    n = m > 0 ? n + m : 0;
  }
  csr_jw_free(&jw);
  if (rc < 0 || n == 0 || n + 24 > cap)
    return rc < 0 ? rc : -ENOSPC;
  out[n] = '.';
  sign(e, out, n, out + n + 1);
  return 0;
}

enum verdict { TOK_OK, TOK_MISSING, TOK_INVALID, TOK_AUDIENCE, TOK_EXPIRED, TOK_REVOKED };

/* Reads the claims of a token whose tag already matched. */
static enum verdict judge(struct sim_entra *e, yajl_val claims, enum sim_audience aud) {
  int64_t iat = 0, exp = 0;
  const char *tok_aud = csr_json_get_str(claims, "aud");
  if (tok_aud == NULL || csr_json_get_int(claims, "sim_iat_ms", &iat) < 0 ||
      csr_json_get_int(claims, "sim_exp_ms", &exp) < 0)
    return TOK_INVALID;
  const struct resource *res = &resources[aud == SIM_AUD_COMMERCE ? 0 : 1];
  if (strlen(tok_aud) != uri_len(res) || strncmp(tok_aud, res->scope, uri_len(res)) != 0)
    return TOK_AUDIENCE;
  int64_t now = rx_wall_ms();
  const struct sim_token_faults *tf = sim_faults_tokens(e->sim->faults);
  if (tf->revoke_at_s >= 0) {
    int64_t at = e->sim->started_wall_ms + tf->revoke_at_s * 1000;
    if (now >= at && iat < at)
      return TOK_REVOKED;
  }
  return now >= exp ? TOK_EXPIRED : TOK_OK;
}

static enum verdict verify(struct sim_entra *e, const char *tok, size_t len,
                           enum sim_audience aud) {
  const char *dot1 = memchr(tok, '.', len);
  const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - tok)) : NULL;
  if (len == 0)
    return TOK_MISSING;
  if (dot2 == NULL || len >= TOKEN_MAX || (size_t)(tok + len - dot2) != 23)
    return TOK_INVALID;
  char tag[24], payload[TOKEN_MAX];
  sign(e, tok, (size_t)(dot2 - tok), tag);
  unsigned char diff = 0;
  for (int i = 0; i < 22; i++)
    diff |= (unsigned char)(tag[i] ^ dot2[1 + i]);
  long plen = b64_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), payload, sizeof(payload));
  if (diff != 0 || plen <= 0)
    return TOK_INVALID;
  yajl_val claims = csr_json_parse(payload, (size_t)plen, NULL, 0);
  enum verdict v = claims != NULL ? judge(e, claims, aud) : TOK_INVALID;
  csr_json_free(claims);
  return v;
}

/* ---------------------------------------------------------------------------------------------- */
/* The token endpoint */
/* ---------------------------------------------------------------------------------------------- */

/* Splits "/{tenant}/oauth2/v2.0/token" or "/{tenant}/oauth2/token"; tolerates the "//" a
 * configured authority with a trailing slash produces. Returns 2, 1, or 0 when not a token path. */
static int token_path(const char *path, char *tenant, size_t cap) {
  while (*path == '/')
    path++;
  const char *slash = strchr(path, '/');
  if (slash == NULL || slash == path || (size_t)(slash - path) >= cap)
    return 0;
  int version = strcmp(slash, "/oauth2/v2.0/token") == 0 ? 2 : strcmp(slash, "/oauth2/token") == 0;
  if (version != 0) {
    memcpy(tenant, path, (size_t)(slash - path));
    tenant[slash - path] = '\0';
  }
  return version;
}

static void refuse(struct sim_req *r, int status, const char *error, int aadsts, const char *fmt,
                   const char *a, const char *b) {
  char msg[512];
  /* Echoed client input can be long; a cut message is still a valid answer. */
  if (snprintf(msg, sizeof(msg), fmt, a, b ? b : "") >= (int)sizeof(msg))
    msg[sizeof(msg) - 1] = '\0';
  r->sim->entra->stats.refused++;
  sim_reply_entra_error(r, status, error, aadsts, msg);
}

static void refuse_missing(struct sim_req *r, const char *name) {
  refuse(r, 400, "invalid_request", 900144,
         "The request body must contain the following parameter: '%s'.", name, NULL);
}

/* Finds the client's id and secret: form fields, else HTTP Basic (RFC 6749 2.3.1: each part is
 * form-encoded, then the pair base64'd). `basic` holds the decoded pair. */
static void client_auth(struct sim_req *r, const struct form *f, const char **id,
                        const char **secret, char *basic, size_t cap) {
  *id = form_get(f, "client_id");
  *secret = form_get(f, "client_secret");
  const char *auth = rx_http_header(r->http, "Authorization");
  if (auth == NULL || strncasecmp(auth, "Basic ", 6) != 0)
    return;
  auth += 6;
  while (*auth == ' ')
    auth++;
  char *colon;
  if (b64_decode(auth, strlen(auth), basic, cap) <= 0 || (colon = strchr(basic, ':')) == NULL)
    return;
  *colon = '\0';
  sim_url_decode(basic);
  sim_url_decode(colon + 1);
  if (*id == NULL)
    *id = basic;
  if (*secret == NULL)
    *secret = colon + 1;
}

/* The v2 scope: every space-separated entry must be some resource's /.default, all the same one. */
static const struct resource *pick_scope(struct sim_req *r, const char *scope) {
  const struct resource *found = NULL;
  char buf[512];
  snprintf(buf, sizeof(buf), "%s", scope);
  char *save = NULL;
  for (char *s = strtok_r(buf, " ", &save); s; s = strtok_r(NULL, " ", &save)) {
    const struct resource *res = NULL;
    for (size_t i = 0; i < NRESOURCES; i++) {
      size_t n = uri_len(&resources[i]);
      if (strncasecmp(s, resources[i].scope, n) == 0 && (s[n] == '\0' || s[n] == '/'))
        res = &resources[i];
    }
    if (res == NULL || strcasecmp(s + uri_len(res), DEFAULT_SFX) != 0) {
      if (res != NULL)
        refuse(r, 400, "invalid_scope", 1002012,
               "The provided value for scope %s is not valid. Client credential flows must have a "
               "scope value with /.default suffixed to the resource identifier (application ID "
               "URI).",
               s, NULL);
      else
        refuse(r, 400, "invalid_scope", 70011,
               "The provided value for the input parameter 'scope' is not valid. The scope %s is "
               "not valid.",
               scope, NULL);
      return NULL;
    }
    if (found != NULL && found != res) {
      refuse(r, 400, "invalid_scope", 700022,
             "The provided value for the input parameter scope is not valid because it contains "
             "more than one resource. Scope %s is not valid.",
             scope, NULL);
      return NULL;
    }
    found = res;
  }
  if (found == NULL)
    refuse_missing(r, "scope");
  return found;
}

/* The v1 resource=: an App ID URI we know, with or without a trailing slash. */
static const struct resource *pick_resource(struct sim_req *r, const char *resource,
                                            const char *tenant) {
  size_t len = strlen(resource);
  if (len > 0 && resource[len - 1] == '/')
    len--;
  for (size_t i = 0; i < NRESOURCES; i++)
    if (len == uri_len(&resources[i]) && strncasecmp(resource, resources[i].scope, len) == 0)
      return &resources[i];
  refuse(r, 400, "invalid_resource", 500011,
         "The resource principal named %s was not found in the tenant named %s. This can happen "
         "if the application has not been installed by the administrator of the tenant or "
         "consented to by any user in the tenant. You might have sent your authentication request "
         "to the wrong tenant.",
         resource, tenant);
  return NULL;
}

/* Everything but the resource; returns 0 when the client may have a token. */
static int check_client(struct sim_req *r, const struct form *f, const char *tenant) {
  const char *grant = form_get(f, "grant_type"), *id, *secret;
  char basic[512];
  if (f->dup != NULL) {
    refuse(r, 400, "invalid_request", 9000411,
           "The request is not properly formatted. The parameter '%s' is duplicated.", f->dup,
           NULL);
    return -1;
  }
  if (grant == NULL) {
    refuse_missing(r, "grant_type");
    return -1;
  }
  if (strcmp(grant, "client_credentials") != 0) {
    refuse(r, 400, "unsupported_grant_type", 70003,
           "The app requested an unsupported grant type '%s'.", grant, NULL);
    return -1;
  }
  client_auth(r, f, &id, &secret, basic, sizeof(basic));
  if (id == NULL || id[0] == '\0') {
    refuse_missing(r, "client_id");
    return -1;
  }
  if (strcmp(id, SIM_CLIENT_ID) != 0) {
    refuse(r, 400, "unauthorized_client", 700016,
           "Application with identifier '%s' was not found in the directory '%s'. This can happen "
           "if the application has not been installed by the administrator of the tenant or "
           "consented to by any user in the tenant. You may have sent your authentication request "
           "to the wrong tenant.",
           id, tenant);
    return -1;
  }
  if (secret == NULL || secret[0] == '\0') {
    refuse(r, 401, "invalid_client", 7000218,
           "The request body must contain the following parameter: 'client_assertion' or "
           "'client_secret'.",
           NULL, NULL);
    return -1;
  }
  if (strcmp(secret, r->sim->opts.client_secret) != 0) {
    refuse(r, 401, "invalid_client", 7000215, "Invalid client secret is provided.", NULL, NULL);
    return -1;
  }
  return 0;
}

static void reply_token(struct sim_req *r, const struct resource *res, const char *tenant,
                        int version) {
  struct sim_entra *e = r->sim->entra;
  uint64_t life = sim_faults_tokens(r->sim->faults)->lifetime_s;
  int64_t now = rx_wall_ms();
  char token[TOKEN_MAX], num[3][24];
  struct csr_jw jw;
  const char *text;
  size_t len;
  if (mint(e, res, tenant, now, life, token, sizeof(token)) < 0 || csr_jw_init(&jw) < 0) {
    refuse(r, 500, "temporarily_unavailable", 90055, "csusim could not mint a token.", NULL, NULL);
    return;
  }
  /* v1 sends every number as a string; the FastTrack flows parse them so (reference 1.2). */
  snprintf(num[0], sizeof(num[0]), "%llu", (unsigned long long)life);
  snprintf(num[1], sizeof(num[1]), "%lld", (long long)(now / 1000 + (int64_t)life));
  snprintf(num[2], sizeof(num[2]), "%lld", (long long)(now / 1000));
  csr_jw_obj(&jw);
  csr_jw_kstr(&jw, "token_type", "Bearer");
  if (version == 2) {
    csr_jw_kint(&jw, "expires_in", (int64_t)life);
    csr_jw_kint(&jw, "ext_expires_in", (int64_t)life);
  } else {
    csr_jw_kstr(&jw, "expires_in", num[0]);
    csr_jw_kstr(&jw, "ext_expires_in", num[0]);
    csr_jw_kstr(&jw, "expires_on", num[1]);
    csr_jw_kstr(&jw, "not_before", num[2]);
    csr_jw_key(&jw, "resource");
    csr_jw_strn(&jw, res->scope, uri_len(res));
  }
  csr_jw_kstr(&jw, "access_token", token);
  csr_jw_obj_end(&jw);
  if (csr_jw_finish(&jw, &text, &len) == 0) {
    e->stats.issued++;
    sim_reply(r, 200, "Cache-Control: no-store, no-cache\r\nPragma: no-cache\r\n",
              "application/json; charset=utf-8", text, len);
  } else {
    refuse(r, 500, "temporarily_unavailable", 90055, "csusim could not write a token.", NULL, NULL);
  }
  csr_jw_free(&jw);
}

static void on_token(struct sim_req *r) {
  char tenant[TENANT_MAX];
  int version = token_path(r->http->path, tenant, sizeof(tenant));
  struct form f;
  if (strcmp(r->http->method, "POST") != 0) {
    refuse(r, 400, "invalid_request", 900561,
           "The endpoint only accepts POST, OPTIONS requests. Received a %s request.",
           r->http->method, NULL);
    return;
  }
  if (form_parse(&f, r->http->body, r->http->body_len) < 0) {
    refuse(r, 500, "temporarily_unavailable", 90055, "csusim is out of memory.", NULL, NULL);
    return;
  }
  const char *scope = form_get(&f, "scope"), *resource = form_get(&f, "resource");
  const struct resource *res = NULL;
  if (check_client(r, &f, tenant) == 0) {
    if (version == 2 && scope == NULL && resource != NULL)
      refuse(r, 400, "invalid_request", 901002,
             "The 'resource' request parameter is not supported.", NULL, NULL);
    else if (version == 2)
      res = scope != NULL ? pick_scope(r, scope) : (refuse_missing(r, "scope"), NULL);
    else
      res = resource != NULL ? pick_resource(r, resource, tenant)
                             : (refuse_missing(r, "resource"), NULL);
  }
  if (res != NULL)
    reply_token(r, res, tenant, version);
  free(f.buf);
}

/* The tenant is any path segment, so this route is a catch-all: it must be the last one
 * registered. Paths that are not a token endpoint get the server's own 404. */
static void on_route(struct rx_http_request *req, void *arg) {
  struct sim *sim = arg;
  char tenant[TENANT_MAX];
  if (token_path(req->path, tenant, sizeof(tenant)) == 0) {
    static const char body[] = "{\"error\":\"not_found\"}";
    rx_http_respond(req, 404, NULL, "application/json", body, sizeof(body) - 1);
    return;
  }
  sim_serve(sim, req, "token", -1, on_token, sim->entra);
}

/* ---------------------------------------------------------------------------------------------- */
/* Token checks */
/* ---------------------------------------------------------------------------------------------- */

/* Authorization: "<scheme> <token>"; Bearer everywhere, id_token for the CSU (the Commerce doc's
 * form). Anything else counts as no token. */
static const char *presented(struct sim_req *r, enum sim_audience aud, size_t *len) {
  const char *h = rx_http_header(r->http, "Authorization");
  *len = 0;
  if (h == NULL)
    return "";
  while (*h == ' ')
    h++;
  if (strncasecmp(h, "Bearer ", 7) == 0)
    h += 7;
  else if (aud == SIM_AUD_COMMERCE && strncasecmp(h, "id_token ", 9) == 0)
    h += 9;
  else
    return "";
  while (*h == ' ')
    h++;
  *len = strlen(h);
  while (*len > 0 && h[*len - 1] == ' ')
    (*len)--;
  return h;
}

static void reject_commerce(struct sim_req *r, enum verdict v) {
  static const char *const why[] = {
      [TOK_MISSING] = "Authentication failed: no access token was presented.",
      [TOK_INVALID] = "Authentication failed: the access token is not valid.",
      [TOK_AUDIENCE] = "The access token was issued for another audience.",
      [TOK_EXPIRED] = "Authentication failed: the access token has expired.",
      [TOK_REVOKED] = "Authentication failed: the access token has been revoked.",
  };
  sim_reply_commerce_error(r, 401, v == TOK_AUDIENCE ? AUDIENCE_401 : COMMERCE_401, why[v],
                           "UserAuthenticationException");
}

static void reject_dataverse(struct sim_req *r, enum verdict v) {
  static const char *const code[] = {[TOK_MISSING] = "0x8004a100",
                                     [TOK_INVALID] = "0x8004a100",
                                     [TOK_AUDIENCE] = "0x80072560",
                                     [TOK_EXPIRED] = "0x8004a101",
                                     [TOK_REVOKED] = "0x8004a101"};
  static const char *const why[] = {
      [TOK_MISSING] = "InvalidAuthTicket: the request carries no Bearer token.",
      [TOK_INVALID] = "InvalidAuthTicket: the Bearer token is not valid.",
      [TOK_AUDIENCE] = "The user is not a member of the organization.",
      [TOK_EXPIRED] = "ExpiredAuthTicket: the Bearer token has expired.",
      [TOK_REVOKED] = "ExpiredAuthTicket: the Bearer token is no longer valid.",
  };
  char hdr[256];
  snprintf(hdr, sizeof(hdr),
           "WWW-Authenticate: Bearer authorization_uri=%s/common/oauth2/authorize, "
           "resource_id=%.*s/\r\n",
           r->sim->base_url, (int)uri_len(&resources[1]), resources[1].scope);
  sim_reply_dataverse_error(r, 401, code[v], why[v], hdr);
}

int sim_entra_check(struct sim_req *r, enum sim_audience aud) {
  struct sim_entra *e = r->sim->entra;
  size_t len;
  const char *tok = presented(r, aud, &len);
  enum verdict v = verify(e, tok, len, aud);
  if (v == TOK_OK) {
    e->stats.accepted++;
    return 0;
  }
  e->stats.rejected++;
  uint64_t *by[] = {NULL,
                    &e->stats.rejected_missing,
                    &e->stats.rejected_invalid,
                    &e->stats.rejected_audience,
                    &e->stats.rejected_expired,
                    &e->stats.rejected_revoked};
  (*by[v])++;
  if (aud == SIM_AUD_COMMERCE)
    reject_commerce(r, v);
  else
    reject_dataverse(r, v);
  return -1;
}

/* ---------------------------------------------------------------------------------------------- */
/* Lifetime */
/* ---------------------------------------------------------------------------------------------- */

int sim_entra_create(struct sim *sim, struct sim_entra **out) {
  struct sim_entra *e = calloc(1, sizeof(*e));
  if (e == NULL)
    return -ENOMEM;
  e->sim = sim;
  /* Keys from the seed, on a stream of their own so other modules' draws do not shift them. */
  uint64_t state = (sim->opts.seed ^ 0x656e747261ULL) * 0x9e3779b97f4a7c15ULL | 1;
  for (int i = 0; i < 4; i++)
    e->key[i] = rx_rand64(&state);
  *out = e;
  return 0;
}

void sim_entra_destroy(struct sim_entra *e) {
  free(e);
}

int sim_entra_routes(struct sim *sim) {
  return rx_http_server_route(&sim->server, NULL, "/*", on_route, sim);
}

void sim_entra_stats(const struct sim_entra *e, struct sim_entra_stats *out) {
  *out = e->stats;
}
