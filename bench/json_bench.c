/* json_bench: issue 2, choose the relay's JSON library by measurement.
 *
 * Candidates: jansson, cJSON, yajl (yajl_tree to parse, yajl_gen to encode). For the two documents
 * the relay parses most (bench/data, made by bench/gen_json_fixtures.py):
 *   search_page.json  a CommerceEventsController/Search page, 250 CommerceEventEntity rows
 *   sales_order.json  a full-size SalesOrder (GetSalesOrderDetailsByTransactionId)
 * it
 *   1. checks that the three libraries extract identical fields,
 *   2. shows what each library's tree and encoder do to high-scale decimals (AmountPaid must reach
 *      Dataverse with its digits kept exactly),
 *   3. times parse -> walk (extract the relay's fields into its own structs) -> free, one document
 *      per sample, CLOCK_MONOTONIC, warm-up first, rounds interleaved across libraries, and prints
 *      median, p90, min in microseconds and MB/s (10^6 bytes/s at the median).
 *
 * Usage: json_bench [--iters N] [--warmup N] [--only LIB:DOC] DATA_DIR
 *   --iters   timed samples per library and document (default 3000)
 *   --warmup  untimed runs per library and document before the first round (default 200)
 *   --only    run LIB (jansson|cjson|yajl) on DOC (page|order) N times inside cg_region() and
 *             nothing else; for valgrind --tool=callgrind --toggle-collect='cg_region*', so that
 *             total Ir / N is the instruction count of one parse + walk + free.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <jansson.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>
#include <yajl/yajl_version.h>

/* ---------------------------------------------------------------------------------------------
 * What the relay extracts. Strings are copied into fixed buffers sized from the channel DB
 * columns (an over-long value is an error, as it would be in the relay).
 * ------------------------------------------------------------------------------------------- */

#define MAX_EVENTS 1000

typedef struct {
  char txn[48];      /* EventTransactionId nvarchar(44) */
  char when[40];     /* EventDateTime */
  char type[24];     /* EventType nvarchar(20) */
  char area[8];      /* EventDataAreaId nvarchar(4) */
  char terminal[16]; /* EventTerminalId nvarchar(10) */
  char customer[40]; /* EventCustomerId nvarchar(38) */
  long long channel; /* EventChannelId bigint */
} event_t;

typedef struct {
  size_t n;
  event_t ev[MAX_EVENTS];
} page_t;

typedef struct {
  char receipt_email[256];
  char amount_text[64]; /* AmountPaid as source text; "" if the library does not keep it */
  char currency[8];
  char channel_ref[64];
  char created[40];
  char name[128];
  char sales_id[32];
  char internal_txn[48];
  double amount_paid;
  size_t sales_lines;
} order_t;

static int put(char *dst, size_t cap, const char *s, size_t n) {
  if (n >= cap)
    return -1;
  memcpy(dst, s, n);
  dst[n] = '\0';
  return 0;
}

/* ---------------------------------------------------------------------------------------------
 * jansson
 * ------------------------------------------------------------------------------------------- */

static int jn_str(const json_t *obj, const char *key, char *dst, size_t cap) {
  const json_t *v = json_object_get(obj, key);
  if (!json_is_string(v))
    return -1;
  return put(dst, cap, json_string_value(v), json_string_length(v));
}

static int jansson_page(const char *buf, size_t len, page_t *out) {
  json_error_t err;
  json_t *root = json_loadb(buf, len, 0, &err);
  if (root == NULL)
    return -1;
  int rc = -1;
  const json_t *value = json_object_get(root, "value");
  if (!json_is_array(value) || json_array_size(value) > MAX_EVENTS)
    goto done;
  out->n = json_array_size(value);
  for (size_t i = 0; i < out->n; i++) {
    const json_t *e = json_array_get(value, i);
    event_t *ev = &out->ev[i];
    const json_t *ch = json_object_get(e, "EventChannelId");
    if (!json_is_integer(ch))
      goto done;
    ev->channel = json_integer_value(ch);
    if (jn_str(e, "EventTransactionId", ev->txn, sizeof ev->txn) ||
        jn_str(e, "EventDateTime", ev->when, sizeof ev->when) ||
        jn_str(e, "EventType", ev->type, sizeof ev->type) ||
        jn_str(e, "EventDataAreaId", ev->area, sizeof ev->area) ||
        jn_str(e, "EventTerminalId", ev->terminal, sizeof ev->terminal) ||
        jn_str(e, "EventCustomerId", ev->customer, sizeof ev->customer))
      goto done;
  }
  rc = 0;
done:
  json_decref(root);
  return rc;
}

static int jansson_order(const char *buf, size_t len, order_t *out) {
  json_error_t err;
  json_t *root = json_loadb(buf, len, 0, &err);
  if (root == NULL)
    return -1;
  int rc = -1;
  const json_t *paid = json_object_get(root, "AmountPaid");
  const json_t *lines = json_object_get(root, "SalesLines");
  if (!json_is_number(paid) || !json_is_array(lines))
    goto done;
  out->amount_paid = json_number_value(paid);
  out->amount_text[0] = '\0'; /* json_real holds a double only */
  out->sales_lines = json_array_size(lines);
  if (jn_str(root, "ReceiptEmail", out->receipt_email, sizeof out->receipt_email) ||
      jn_str(root, "CurrencyCode", out->currency, sizeof out->currency) ||
      jn_str(root, "ChannelReferenceId", out->channel_ref, sizeof out->channel_ref) ||
      jn_str(root, "CreatedDateTime", out->created, sizeof out->created) ||
      jn_str(root, "Name", out->name, sizeof out->name) ||
      jn_str(root, "SalesId", out->sales_id, sizeof out->sales_id) ||
      jn_str(root, "InternalTransactionId", out->internal_txn, sizeof out->internal_txn))
    goto done;
  rc = 0;
done:
  json_decref(root);
  return rc;
}

/* ---------------------------------------------------------------------------------------------
 * cJSON
 * ------------------------------------------------------------------------------------------- */

static int cj_str(const cJSON *obj, const char *key, char *dst, size_t cap) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!cJSON_IsString(v))
    return -1;
  return put(dst, cap, v->valuestring, strlen(v->valuestring));
}

/* cJSON_Parse accepts trailing garbage; require the end of the text like the other two do. The
 * buffer is NUL-terminated, so the length passed includes the NUL. */
static cJSON *cj_parse(const char *buf, size_t len) {
  return cJSON_ParseWithLengthOpts(buf, len + 1, NULL, 1);
}

static int cjson_page(const char *buf, size_t len, page_t *out) {
  cJSON *root = cj_parse(buf, len);
  if (root == NULL)
    return -1;
  int rc = -1;
  const cJSON *value = cJSON_GetObjectItemCaseSensitive(root, "value");
  const cJSON *e;
  if (!cJSON_IsArray(value))
    goto done;
  out->n = 0;
  cJSON_ArrayForEach(e, value) {
    if (out->n == MAX_EVENTS)
      goto done;
    event_t *ev = &out->ev[out->n++];
    const cJSON *ch = cJSON_GetObjectItemCaseSensitive(e, "EventChannelId");
    if (!cJSON_IsNumber(ch))
      goto done;
    ev->channel = (long long)ch->valuedouble; /* valueint is an int: saturates at 2^31-1 */
    if (cj_str(e, "EventTransactionId", ev->txn, sizeof ev->txn) ||
        cj_str(e, "EventDateTime", ev->when, sizeof ev->when) ||
        cj_str(e, "EventType", ev->type, sizeof ev->type) ||
        cj_str(e, "EventDataAreaId", ev->area, sizeof ev->area) ||
        cj_str(e, "EventTerminalId", ev->terminal, sizeof ev->terminal) ||
        cj_str(e, "EventCustomerId", ev->customer, sizeof ev->customer))
      goto done;
  }
  rc = 0;
done:
  cJSON_Delete(root);
  return rc;
}

static int cjson_order(const char *buf, size_t len, order_t *out) {
  cJSON *root = cj_parse(buf, len);
  if (root == NULL)
    return -1;
  int rc = -1;
  const cJSON *paid = cJSON_GetObjectItemCaseSensitive(root, "AmountPaid");
  const cJSON *lines = cJSON_GetObjectItemCaseSensitive(root, "SalesLines");
  if (!cJSON_IsNumber(paid) || !cJSON_IsArray(lines))
    goto done;
  out->amount_paid = paid->valuedouble;
  out->amount_text[0] = '\0'; /* the number's text is discarded after strtod */
  out->sales_lines = (size_t)cJSON_GetArraySize(lines);
  if (cj_str(root, "ReceiptEmail", out->receipt_email, sizeof out->receipt_email) ||
      cj_str(root, "CurrencyCode", out->currency, sizeof out->currency) ||
      cj_str(root, "ChannelReferenceId", out->channel_ref, sizeof out->channel_ref) ||
      cj_str(root, "CreatedDateTime", out->created, sizeof out->created) ||
      cj_str(root, "Name", out->name, sizeof out->name) ||
      cj_str(root, "SalesId", out->sales_id, sizeof out->sales_id) ||
      cj_str(root, "InternalTransactionId", out->internal_txn, sizeof out->internal_txn))
    goto done;
  rc = 0;
done:
  cJSON_Delete(root);
  return rc;
}

/* ---------------------------------------------------------------------------------------------
 * yajl (yajl_tree)
 * ------------------------------------------------------------------------------------------- */

static yajl_val yj_get(yajl_val obj, const char *key, yajl_type type) {
  const char *path[] = {key, NULL};
  return yajl_tree_get(obj, path, type);
}

static int yj_str(yajl_val obj, const char *key, char *dst, size_t cap) {
  yajl_val v = yj_get(obj, key, yajl_t_string);
  if (v == NULL)
    return -1;
  return put(dst, cap, v->u.string, strlen(v->u.string));
}

/* yajl_tree_parse wants a NUL-terminated text; the buffers here are. */
static int yajl_page(const char *buf, size_t len, page_t *out) {
  char err[128];
  yajl_val root = yajl_tree_parse(buf, err, sizeof err);
  if (root == NULL)
    return -1;
  int rc = -1;
  yajl_val value = yj_get(root, "value", yajl_t_array);
  if (value == NULL || value->u.array.len > MAX_EVENTS)
    goto done;
  out->n = value->u.array.len;
  for (size_t i = 0; i < out->n; i++) {
    yajl_val e = value->u.array.values[i];
    event_t *ev = &out->ev[i];
    yajl_val ch = yj_get(e, "EventChannelId", yajl_t_number);
    if (!YAJL_IS_INTEGER(ch))
      goto done;
    ev->channel = YAJL_GET_INTEGER(ch);
    if (yj_str(e, "EventTransactionId", ev->txn, sizeof ev->txn) ||
        yj_str(e, "EventDateTime", ev->when, sizeof ev->when) ||
        yj_str(e, "EventType", ev->type, sizeof ev->type) ||
        yj_str(e, "EventDataAreaId", ev->area, sizeof ev->area) ||
        yj_str(e, "EventTerminalId", ev->terminal, sizeof ev->terminal) ||
        yj_str(e, "EventCustomerId", ev->customer, sizeof ev->customer))
      goto done;
  }
  rc = 0;
done:
  yajl_tree_free(root);
  return rc;
}

static int yajl_order(const char *buf, size_t len, order_t *out) {
  char err[128];
  yajl_val root = yajl_tree_parse(buf, err, sizeof err);
  if (root == NULL)
    return -1;
  int rc = -1;
  yajl_val paid = yj_get(root, "AmountPaid", yajl_t_number);
  yajl_val lines = yj_get(root, "SalesLines", yajl_t_array);
  if (!YAJL_IS_DOUBLE(paid) || lines == NULL)
    goto done;
  out->amount_paid = YAJL_GET_DOUBLE(paid);
  out->sales_lines = lines->u.array.len;
  if (put(out->amount_text, sizeof out->amount_text, YAJL_GET_NUMBER(paid),
          strlen(YAJL_GET_NUMBER(paid))) ||
      yj_str(root, "ReceiptEmail", out->receipt_email, sizeof out->receipt_email) ||
      yj_str(root, "CurrencyCode", out->currency, sizeof out->currency) ||
      yj_str(root, "ChannelReferenceId", out->channel_ref, sizeof out->channel_ref) ||
      yj_str(root, "CreatedDateTime", out->created, sizeof out->created) ||
      yj_str(root, "Name", out->name, sizeof out->name) ||
      yj_str(root, "SalesId", out->sales_id, sizeof out->sales_id) ||
      yj_str(root, "InternalTransactionId", out->internal_txn, sizeof out->internal_txn))
    goto done;
  rc = 0;
done:
  yajl_tree_free(root);
  return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Harness
 * ------------------------------------------------------------------------------------------- */

typedef struct {
  const char *name;
  int (*page)(const char *buf, size_t len, page_t *out);
  int (*order)(const char *buf, size_t len, order_t *out);
} lib_t;

static const lib_t LIBS[] = {
    {"jansson", jansson_page, jansson_order},
    {"cjson", cjson_page, cjson_order},
    {"yajl", yajl_page, yajl_order},
};
#define NLIBS (sizeof LIBS / sizeof LIBS[0])

enum { DOC_PAGE, DOC_ORDER, NDOCS };
static const char *const DOC_NAMES[NDOCS] = {"page", "order"};
static const char *const DOC_FILES[NDOCS] = {"search_page.json", "sales_order.json"};

typedef struct {
  char *buf; /* NUL-terminated */
  size_t len;
} doc_t;

static page_t g_page;
static order_t g_order;

static int run_once(const lib_t *lib, int doc, const doc_t *d) {
  return doc == DOC_PAGE ? lib->page(d->buf, d->len, &g_page)
                         : lib->order(d->buf, d->len, &g_order);
}

/* Not static and never inlined, so callgrind can find it: --toggle-collect='cg_region*'. */
int cg_region(const lib_t *lib, int doc, const doc_t *d, long iters);
__attribute__((noinline)) int cg_region(const lib_t *lib, int doc, const doc_t *d, long iters) {
  int rc = 0;
  for (long i = 0; i < iters; i++)
    rc |= run_once(lib, doc, d);
  return rc;
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int load(const char *dir, const char *file, doc_t *d) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, file);
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    fprintf(stderr, "json_bench: %s: %s\n", path, strerror(errno));
    return -1;
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  d->buf = malloc((size_t)n + 1);
  if (d->buf == NULL || fread(d->buf, 1, (size_t)n, f) != (size_t)n) {
    fprintf(stderr, "json_bench: %s: read failed\n", path);
    fclose(f);
    return -1;
  }
  fclose(f);
  d->buf[n] = '\0';
  d->len = (size_t)n;
  return 0;
}

/* ---------------------------------------------------------------------------------------------
 * 1. Same fields from every library
 * ------------------------------------------------------------------------------------------- */

static int same_page(const page_t *a, const page_t *b) {
  if (a->n != b->n)
    return 0;
  for (size_t i = 0; i < a->n; i++) {
    const event_t *x = &a->ev[i], *y = &b->ev[i];
    if (x->channel != y->channel || strcmp(x->txn, y->txn) || strcmp(x->when, y->when) ||
        strcmp(x->type, y->type) || strcmp(x->area, y->area) || strcmp(x->terminal, y->terminal) ||
        strcmp(x->customer, y->customer))
      return 0;
  }
  return 1;
}

static int same_order(const order_t *a, const order_t *b) {
  return a->amount_paid == b->amount_paid && a->sales_lines == b->sales_lines &&
         !strcmp(a->receipt_email, b->receipt_email) && !strcmp(a->currency, b->currency) &&
         !strcmp(a->channel_ref, b->channel_ref) && !strcmp(a->created, b->created) &&
         !strcmp(a->name, b->name) && !strcmp(a->sales_id, b->sales_id) &&
         !strcmp(a->internal_txn, b->internal_txn);
}

static int verify(const doc_t docs[NDOCS], char *amount_text, size_t cap) {
  static page_t pages[NLIBS];
  static order_t orders[NLIBS];
  int ok = 1;
  for (size_t l = 0; l < NLIBS; l++) {
    if (LIBS[l].page(docs[DOC_PAGE].buf, docs[DOC_PAGE].len, &pages[l]) ||
        LIBS[l].order(docs[DOC_ORDER].buf, docs[DOC_ORDER].len, &orders[l])) {
      printf("  %s: parse/extract FAILED\n", LIBS[l].name);
      return 0;
    }
    if (l > 0 && (!same_page(&pages[0], &pages[l]) || !same_order(&orders[0], &orders[l]))) {
      printf("  %s: extracted fields differ from %s\n", LIBS[l].name, LIBS[0].name);
      ok = 0;
    }
  }
  const page_t *p = &pages[0];
  size_t checkout = 0, guests = 0;
  for (size_t i = 0; i < p->n; i++) {
    checkout += strcmp(p->ev[i].type, "Checkout") == 0;
    guests += p->ev[i].customer[0] == '\0';
  }
  const order_t *o = &orders[NLIBS - 1];
  printf("  page:  %zu events (%zu Checkout, %zu guest), first %s %s %s channel %lld\n", p->n,
         checkout, guests, p->ev[0].txn, p->ev[0].when, p->ev[0].type, p->ev[0].channel);
  printf("  order: SalesId %s, Name %s, ReceiptEmail %s, %s, created %s, %zu SalesLines,\n"
         "         InternalTransactionId %s, AmountPaid text \"%s\" (yajl) = %.17g (double)\n",
         o->sales_id, o->name, o->receipt_email, o->currency, o->created, o->sales_lines,
         o->internal_txn, o->amount_text, o->amount_paid);
  snprintf(amount_text, cap, "%s", o->amount_text);
  printf("  %s\n", ok ? "all three libraries extract identical fields" : "MISMATCH");
  return ok;
}

/* ---------------------------------------------------------------------------------------------
 * 2. Number fidelity: parse {"AmountPaid":X}, re-encode with the library's own encoder
 * ------------------------------------------------------------------------------------------- */

/* Canonical form of a JSON number's decimal value: 184.2200 and 184.22 give the same string. */
static void dec_norm(const char *s, char *out, size_t cap) {
  char digits[256];
  size_t nd = 0;
  long point = 0;
  int neg = 0, frac = 0;
  if (*s == '-') {
    neg = 1;
    s++;
  }
  for (; *s && *s != 'e' && *s != 'E'; s++) {
    if (*s == '.') {
      frac = 1;
      continue;
    }
    if (nd < sizeof digits)
      digits[nd++] = *s;
    if (!frac)
      point++;
  }
  if (*s == 'e' || *s == 'E')
    point += strtol(s + 1, NULL, 10);
  size_t a = 0, b = nd;
  while (a < b && digits[a] == '0') {
    a++;
    point--;
  }
  while (b > a && digits[b - 1] == '0')
    b--;
  if (a == b)
    snprintf(out, cap, "0");
  else
    snprintf(out, cap, "%s0.%.*se%ld", neg ? "-" : "", (int)(b - a), digits + a, point);
}

/* The number text between "AmountPaid": and the closing brace of a compact one-member object. */
static void number_of(const char *json, char *out, size_t cap) {
  const char *c = strchr(json, ':');
  const char *e = c ? strrchr(c, '}') : NULL;
  if (c == NULL || e == NULL || (size_t)(e - c - 1) >= cap) {
    snprintf(out, cap, "?");
    return;
  }
  snprintf(out, cap, "%.*s", (int)(e - c - 1), c + 1);
}

static void fidelity_row(const char *in, const char *path, const char *emitted) {
  char a[300], b[300];
  int text = strcmp(in, emitted) == 0;
  dec_norm(in, a, sizeof a);
  dec_norm(emitted, b, sizeof b);
  printf("| `%s` | %s | `%s` | %s | %s |\n", in, path, emitted, text ? "yes" : "**no**",
         strcmp(a, b) == 0 ? "yes" : "**no**");
}

static void fidelity_case(const char *num) {
  char doc[256], got[256];
  snprintf(doc, sizeof doc, "{\"AmountPaid\":%s}", num);

  /* jansson: the parsed node (json_integer or json_real) put into the outgoing object. */
  json_error_t jerr;
  json_t *jroot = json_loads(doc, 0, &jerr);
  if (jroot == NULL) {
    printf("| `%s` | jansson json_loads | parse error: %s | **no** | **no** |\n", num, jerr.text);
  } else {
    json_t *out = json_object();
    json_object_set(out, "AmountPaid", json_object_get(jroot, "AmountPaid"));
    char *s = json_dumps(out, JSON_COMPACT); /* default: %.17g */
    number_of(s, got, sizeof got);
    fidelity_row(num, "jansson node -> json_dumps", got);
    free(s);
    if (json_is_real(json_object_get(out, "AmountPaid"))) {
      s = json_dumps(out, JSON_COMPACT | JSON_REAL_PRECISION(15)); /* best case for money */
      number_of(s, got, sizeof got);
      fidelity_row(num, "jansson node -> json_dumps JSON_REAL_PRECISION(15)", got);
      free(s);
    }
    json_decref(out);
    json_decref(jroot);
  }

  /* cJSON: the parsed node's valuedouble (the only thing it keeps) -> cJSON_PrintUnformatted. */
  cJSON *croot = cJSON_Parse(doc);
  if (croot == NULL) {
    printf("| `%s` | cJSON_Parse | parse error | **no** | **no** |\n", num);
  } else {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(croot, "AmountPaid");
    cJSON *out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "AmountPaid", v->valuedouble);
    char *s = cJSON_PrintUnformatted(out);
    number_of(s, got, sizeof got);
    fidelity_row(num, v->valuestring == NULL ? "cJSON node (no text) -> cJSON_Print" : "?", got);
    free(s);
    cJSON_Delete(out);
    cJSON_Delete(croot);
  }

  /* yajl: yajl_gen_number with the tree's u.number.r, and yajl_gen_double with u.number.d. */
  char yerr[128];
  yajl_val yroot = yajl_tree_parse(doc, yerr, sizeof yerr);
  yajl_val v = yroot ? yj_get(yroot, "AmountPaid", yajl_t_number) : NULL;
  if (v == NULL) {
    printf("| `%s` | yajl_tree_parse | parse error | **no** | **no** |\n", num);
  } else {
    for (int how = 0; how < 2; how++) {
      if (how == 1 && !YAJL_IS_DOUBLE(v))
        continue;
      yajl_gen g = yajl_gen_alloc(NULL);
      const unsigned char *s;
      size_t n;
      yajl_gen_map_open(g);
      yajl_gen_string(g, (const unsigned char *)"AmountPaid", 10);
      if (how == 0)
        yajl_gen_number(g, YAJL_GET_NUMBER(v), strlen(YAJL_GET_NUMBER(v)));
      else
        yajl_gen_double(g, YAJL_GET_DOUBLE(v));
      yajl_gen_map_close(g);
      yajl_gen_get_buf(g, &s, &n);
      number_of((const char *)s, got, sizeof got);
      fidelity_row(num,
                   how == 0 ? "yajl u.number.r -> yajl_gen_number"
                            : "yajl u.number.d -> yajl_gen_double",
                   got);
      yajl_gen_free(g);
    }
  }
  yajl_tree_free(yroot);
}

static void fidelity(const char *fixture_amount) {
  static const char *const cases[] = {"184.2200000000000000", "12345678901234.5678901234",
                                      "9007199254740993", "98765432109876543210"};
  printf("| input | library path | emitted | text kept | value kept |\n");
  printf("|---|---|---|---|---|\n");
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    fidelity_case(cases[i]);
  if (fixture_amount[0])
    fidelity_case(fixture_amount);

  /* cJSON can emit raw text (cJSON_CreateRaw), but only text the caller kept from elsewhere. */
  cJSON *out = cJSON_CreateObject();
  cJSON_AddRawToObject(out, "AmountPaid", "184.2200000000000000");
  char *s = cJSON_PrintUnformatted(out);
  printf("\ncJSON_AddRawToObject(\"184.2200000000000000\") -> %s (exact, but cJSON's parse tree "
         "never has that text)\n",
         s);
  free(s);
  cJSON_Delete(out);
  cJSON *big = cJSON_Parse("{\"EventChannelId\":5637144592}");
  printf("cJSON valueint of EventChannelId 5637144592 = %d (saturated; valuedouble = %.0f)\n",
         cJSON_GetObjectItemCaseSensitive(big, "EventChannelId")->valueint,
         cJSON_GetObjectItemCaseSensitive(big, "EventChannelId")->valuedouble);
  cJSON_Delete(big);
}

/* ---------------------------------------------------------------------------------------------
 * 3. Timing
 * ------------------------------------------------------------------------------------------- */

static int timing(const doc_t docs[NDOCS], long iters, long warmup) {
  enum { ROUNDS = 5 };
  long per_round = (iters + ROUNDS - 1) / ROUNDS;
  long n = per_round * ROUNDS;
  double *samples = malloc(sizeof(double) * NLIBS * NDOCS * (size_t)n);
  if (samples == NULL)
    return -1;
  for (int r = 0; r < ROUNDS; r++) {
    for (size_t k = 0; k < NLIBS; k++) {
      size_t l = (k + (size_t)r) % NLIBS; /* rotate the order so no library always goes first */
      for (int d = 0; d < NDOCS; d++) {
        double *s = samples + ((l * NDOCS + (size_t)d) * (size_t)n) + (size_t)r * (size_t)per_round;
        for (long i = 0; i < (r == 0 ? warmup : warmup / 10); i++)
          if (run_once(&LIBS[l], d, &docs[d]))
            return -1;
        for (long i = 0; i < per_round; i++) {
          double t0 = now_us();
          int rc = run_once(&LIBS[l], d, &docs[d]);
          s[i] = now_us() - t0;
          if (rc)
            return -1;
        }
      }
    }
  }
  printf("| library | document | bytes | median µs | p90 µs | min µs | MB/s (median) |\n");
  printf("|---|---|---:|---:|---:|---:|---:|\n");
  for (int d = 0; d < NDOCS; d++) {
    for (size_t l = 0; l < NLIBS; l++) {
      double *s = samples + (l * NDOCS + (size_t)d) * (size_t)n;
      qsort(s, (size_t)n, sizeof *s, cmp_double);
      double med = s[n / 2], p90 = s[(n * 9 + 9) / 10 - 1];
      printf("| %s | %s | %zu | %.1f | %.1f | %.1f | %.1f |\n", LIBS[l].name, DOC_FILES[d],
             docs[d].len, med, p90, s[0], (double)docs[d].len / med);
    }
  }
  printf("\n%ld timed samples per row (%d rounds, library order rotated), %ld warm-up runs first\n",
         n, ROUNDS, warmup);
  free(samples);
  return 0;
}

static void usage(void) {
  fprintf(stderr, "usage: json_bench [--iters N] [--warmup N] [--only LIB:DOC] DATA_DIR\n"
                  "  LIB: jansson | cjson | yajl   DOC: page | order\n");
}

int main(int argc, char **argv) {
  long iters = 3000, warmup = 200;
  const char *only = NULL, *dir = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--iters") && i + 1 < argc)
      iters = strtol(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--warmup") && i + 1 < argc)
      warmup = strtol(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--only") && i + 1 < argc)
      only = argv[++i];
    else if (argv[i][0] != '-' && dir == NULL)
      dir = argv[i];
    else {
      usage();
      return 2;
    }
  }
  if (dir == NULL || iters < 1 || warmup < 0) {
    usage();
    return 2;
  }
  /* Fixed hash seed: the same bucket layout every run, so callgrind counts repeat exactly. The
   * relay itself keeps jansson's default (random) seed. */
  json_object_seed(0x2a);

  doc_t docs[NDOCS];
  for (int d = 0; d < NDOCS; d++)
    if (load(dir, DOC_FILES[d], &docs[d]))
      return 1;

  if (only != NULL) {
    const char *colon = strchr(only, ':');
    for (size_t l = 0; colon != NULL && l < NLIBS; l++) {
      if (strncmp(only, LIBS[l].name, (size_t)(colon - only)) != 0 ||
          strlen(LIBS[l].name) != (size_t)(colon - only))
        continue;
      for (int d = 0; d < NDOCS; d++) {
        if (strcmp(colon + 1, DOC_NAMES[d]) != 0)
          continue;
        for (int i = 0; i < 3; i++) /* warm up outside the collected region */
          run_once(&LIBS[l], d, &docs[d]);
        int rc = cg_region(&LIBS[l], d, &docs[d], iters);
        printf("%s %s: %ld runs, rc %d\n", LIBS[l].name, DOC_NAMES[d], iters, rc);
        return rc ? 1 : 0;
      }
    }
    usage();
    return 2;
  }

  printf("json_bench: jansson %s, cJSON %s, yajl %d; %s %zu bytes, %s %zu bytes\n\n",
         JANSSON_VERSION, cJSON_Version(), yajl_version(), DOC_FILES[DOC_PAGE], docs[DOC_PAGE].len,
         DOC_FILES[DOC_ORDER], docs[DOC_ORDER].len);
  char fixture_amount[64];
  printf("## 1. Extraction check\n");
  if (!verify(docs, fixture_amount, sizeof fixture_amount))
    return 1;
  printf("\n## 2. Number fidelity: parse {\"AmountPaid\":X}, re-encode with the library\n\n");
  fidelity(fixture_amount);
  printf("\n## 3. parse + walk + free, per document\n\n");
  if (timing(docs, iters, warmup)) {
    fprintf(stderr, "json_bench: a run failed\n");
    return 1;
  }
  for (int d = 0; d < NDOCS; d++)
    free(docs[d].buf);
  return 0;
}
