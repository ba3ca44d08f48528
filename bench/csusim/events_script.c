/* Scripted events (--events FILE): loaded before the start, committed by the generator (events.c)
 * when their commit time comes.
 *
 * The file is a JSON array of objects with the CSU wire fields:
 *
 *   [{"csu": 0, "EventType": "Checkout", "EventTransactionId": "HOUSTON-HOUSTON-17-1721824109286",
 *     "EventDateTime": "2024-07-24T14:17:02.16Z", "EventDataAreaId": "usrt", "EventData": "{}",
 *     "EventChannelId": 5637144592, "EventTerminalId": "HOUSTON-17", "EventStaffId": "000168",
 *     "EventCustomerId": "1002", "commit_after_ms": 0, "ReceiptEmail": "karen@contoso.com"}]
 *
 * Required: EventType ("AddCartLines" or "Checkout"), EventTransactionId (1-44 characters), and
 * either EventDateTime (ISO-8601; kept to the millisecond) or "offset_ms" (milliseconds after the
 * sim started, may be negative). Optional: "csu" (default 0), EventDataAreaId ("usrt"), EventData
 * ("{}" for Checkout, "[]" for AddCartLines, at most 63 bytes), EventChannelId (the CSU's first
 * channel), EventTerminalId, EventStaffId, EventCustomerId (""), "commit_after_ms" (when the event
 * becomes visible, ms after start; default 0), "ReceiptEmail" (Checkout only: the order's
 * ReceiptEmail; by default it is drawn like a generated order's). Unknown members, over-long fields
 * (the channel DB's column sizes) and two events with one primary key are rejected.
 */
#include "csu_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/timefmt.h"

static const char *const SCRIPT_KEYS[] = {
    "csu",           "EventType",          "EventTransactionId",
    "EventDateTime", "offset_ms",          "EventDataAreaId",
    "EventData",     "EventChannelId",     "EventTerminalId",
    "EventStaffId",  "EventCustomerId",    "commit_after_ms",
    "ReceiptEmail",  "ExtensionProperties"};

static int known_keys(yajl_val o, char *why, size_t len) {
  for (size_t i = 0; i < o->u.object.len; i++) {
    bool ok = false;
    for (size_t j = 0; j < sizeof(SCRIPT_KEYS) / sizeof(SCRIPT_KEYS[0]) && !ok; j++)
      ok = strcmp(o->u.object.keys[i], SCRIPT_KEYS[j]) == 0;
    if (!ok) {
      snprintf(why, len, "unknown member \"%s\"", o->u.object.keys[i]);
      return -1;
    }
  }
  return 0;
}

/* A string member no longer than `max` (the channel DB's column size), interned; `def` if absent.
 */
static int script_str(struct sim__csu *u, yajl_val o, const char *key, size_t max, const char *def,
                      uint32_t *out, char *why, size_t len) {
  yajl_val v = csr_json_get(o, key);
  const char *s = v ? csr_json_str(v) : def;
  if (s == NULL || strlen(s) > max) {
    snprintf(why, len, "%s must be a string of at most %zu characters", key, max);
    return -1;
  }
  *out = sim__intern(&u->pool, s, strlen(s));
  return *out == SIM_NO_STR ? -1 : 0;
}

static int script_int(yajl_val o, const char *key, int64_t def, int64_t *out, char *why,
                      size_t len) {
  if (csr_json_get(o, key) == NULL) {
    *out = def;
    return 0;
  }
  if (csr_json_get_int(o, key, out) < 0) {
    snprintf(why, len, "%s must be an integer", key);
    return -1;
  }
  return 0;
}

static int script_time(yajl_val o, struct sim__script *s, char *why, size_t len) {
  const char *text = csr_json_get_str(o, "EventDateTime");
  if (text != NULL) {
    if (csr_time_parse(text, &s->p.ev.time_ms) < 0) {
      snprintf(why, len, "EventDateTime is not an ISO-8601 instant");
      return -1;
    }
    return 0;
  }
  if (csr_json_get(o, "offset_ms") == NULL) {
    snprintf(why, len, "needs EventDateTime or offset_ms");
    return -1;
  }
  s->relative = true;
  return script_int(o, "offset_ms", 0, &s->p.ev.time_ms, why, len);
}

static int script_type(yajl_val o, struct sim__script *s, char *why, size_t len) {
  const char *type = csr_json_get_str(o, "EventType");
  for (int t = 0; type != NULL && t < 2; t++)
    if (strcmp(type, sim__type_names[t]) == 0) {
      s->p.type = (uint8_t)t;
      return 0;
    }
  snprintf(why, len, "EventType must be \"AddCartLines\" or \"Checkout\"");
  return -1;
}

static int script_one(struct sim_csus *c, yajl_val o, struct sim__script *s, char *why,
                      size_t len) {
  int64_t csu, chan, after;
  memset(s, 0, sizeof(*s));
  s->p.receipt = SIM_NO_STR;
  if (!YAJL_IS_OBJECT(o)) {
    snprintf(why, len, "not an object");
    return -1;
  }
  if (known_keys(o, why, len) < 0 || script_int(o, "csu", 0, &csu, why, len) < 0 ||
      script_type(o, s, why, len) < 0 || script_time(o, s, why, len) < 0)
    return -1;
  if (csu < 0 || csu >= (int64_t)c->n) {
    snprintf(why, len, "csu %lld is not one of the %u CSUs", (long long)csu, c->n);
    return -1;
  }
  struct sim__csu *u = &c->csu[csu];
  s->csu = (unsigned)csu;
  const char *data = s->p.type == SIM_CHECKOUT ? "{}" : "[]";
  if (script_str(u, o, "EventTransactionId", 44, NULL, &s->p.ev.txn, why, len) < 0 ||
      script_str(u, o, "EventDataAreaId", 4, SIM_DATA_AREA, &s->p.ev.area, why, len) < 0 ||
      script_str(u, o, "EventData", 63, data, &s->p.ev.data, why, len) < 0 ||
      script_str(u, o, "EventTerminalId", 10, "", &s->p.ev.terminal, why, len) < 0 ||
      script_str(u, o, "EventStaffId", 25, "", &s->p.ev.staff, why, len) < 0 ||
      script_str(u, o, "EventCustomerId", 38, "", &s->p.ev.customer, why, len) < 0 ||
      script_int(o, "EventChannelId", u->channels[0], &chan, why, len) < 0 ||
      script_int(o, "commit_after_ms", 0, &after, why, len) < 0)
    return -1;
  if (s->p.ev.txn == 0 || after < 0) {
    snprintf(why, len,
             s->p.ev.txn == 0 ? "EventTransactionId is empty"
                              : "commit_after_ms must not be negative");
    return -1;
  }
  if (csr_json_get(o, "ReceiptEmail") != NULL &&
      script_str(u, o, "ReceiptEmail", 80, NULL, &s->p.receipt, why, len) < 0)
    return -1;
  s->p.ev.channel_id = chan;
  s->commit_ms = after;
  const char *txn = sim__str(&u->pool, s->p.ev.txn);
  s->p.seed = (sim__mix(sim__mix(c->seed, (uint64_t)csu), sim__hash(txn, strlen(txn), false)) &
               ~SIM_SEED_BURST) |
              SIM_SEED_SCRIPT;
  return 0;
}

/* The channel DB's primary key: (txn, type, time, area), per CSU. Pool offsets stand for strings.
 */
static int script_cmp(const void *a, const void *b) {
  const struct sim__script *x = a, *y = b;
  int64_t d[] = {(int64_t)x->csu - y->csu, (int64_t)x->p.type - y->p.type,
                 (int64_t)x->p.ev.txn - y->p.ev.txn, (int64_t)x->p.ev.area - y->p.ev.area,
                 (int64_t)x->relative - y->relative};
  for (size_t i = 0; i < sizeof(d) / sizeof(d[0]); i++)
    if (d[i] != 0)
      return d[i] < 0 ? -1 : 1;
  return x->p.ev.time_ms < y->p.ev.time_ms ? -1 : x->p.ev.time_ms > y->p.ev.time_ms;
}

static int script_load(struct sim_csus *c, yajl_val doc, char *why, size_t len) {
  size_t n = csr_json_len(doc);
  if (!YAJL_IS_ARRAY(doc)) {
    snprintf(why, len, "not a JSON array of events");
    return -1;
  }
  struct sim__script *s = calloc(n ? n : 1, sizeof(*s));
  if (s == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < n; i++) {
    char one[160];
    if (script_one(c, csr_json_at(doc, i), &s[i], one, sizeof(one)) < 0) {
      snprintf(why, len, "event %zu: %s", i, one);
      free(s);
      return -1;
    }
  }
  qsort(s, n, sizeof(*s), script_cmp);
  for (size_t i = 1; i < n; i++)
    if (script_cmp(&s[i - 1], &s[i]) == 0) {
      snprintf(why, len, "two events share the primary key (cart %s, %s, one EventDateTime)",
               sim__str(&c->csu[s[i].csu].pool, s[i].p.ev.txn), sim__type_names[s[i].p.type]);
      free(s);
      return -1;
    }
  free(c->script);
  c->script = s;
  c->nscript = n;
  return 0;
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  size_t cap = 65536, n = 0;
  char *buf = malloc(cap);
  while (buf != NULL) {
    n += fread(buf + n, 1, cap - n, f);
    if (n < cap)
      break;
    char *more = realloc(buf, cap * 2);
    if (more == NULL) {
      free(buf);
      buf = NULL;
    } else {
      buf = more;
      cap *= 2;
    }
  }
  bool bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    return NULL;
  }
  *len = n;
  return buf;
}

int sim_csus_load_events(struct sim_csus *c, const char *path, char *why, size_t len) {
  char inner[256] = "";
  size_t n = 0;
  if (c == NULL || path == NULL || c->started)
    return -EINVAL;
  char *text = read_file(path, &n);
  if (text == NULL) {
    snprintf(why, len, "--events %s: %s", path, strerror(errno ? errno : EIO));
    return -errno ? -errno : -EIO;
  }
  yajl_val doc = csr_json_parse(text, n, inner, sizeof(inner));
  free(text);
  int rc = doc == NULL ? CSR_EPARSE : script_load(c, doc, inner, sizeof(inner));
  csr_json_free(doc);
  if (rc < 0) {
    snprintf(why, len, "--events %s: %s", path, inner);
    return rc == -ENOMEM ? rc : CSR_ECONFIG;
  }
  return 0;
}
