/* Deterministic, realistic SalesOrders and Customers (dynamics-api sections 2.3 and 2.4).
 *
 * A cart's SalesOrder is a pure function of (seed, csu, cart): it is rebuilt on every request and
 * never stored. Lines come from the cart's plan (the ItemIds its AddCartLines carried), prices from
 * a small catalogue, tax at 6.25 % per line, money written as high-scale decimal text. POS orders
 * have no SalesId or ChannelReferenceId and an empty ReceiptEmail more often than not; online
 * orders always carry a ReceiptEmail, a SalesId and a ChannelReferenceId. A generated cart's
 * customer data comes from the customer as generated, so an order never changes after a PATCH, as a
 * real order would not.
 *
 * Customers: SIM_POOL_CUSTOMERS per CSU, generated from the seed (about 4 % without an email;
 * emails are unique per customer and some carry capitals), plus those created through the API. Each
 * CSU has its own customers.
 */
#include "csu_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "csurelay/timefmt.h"

#define MAX_LINES 8
#define TAX_BP    625 /* 6.25 % in basis points */

struct item {
  const char *id;
  int64_t product;
  int64_t cents;
  const char *dim;
};

static const struct item CATALOGUE[] = {
    {"81143", 22565430173, 12999, "004689"}, {"0002", 22565421964, 3999, ""},
    {"81112", 22565430142, 8999, "004521"},  {"81234", 22565430266, 2499, "004690"},
    {"91003", 22565431009, 1999, ""},        {"91017", 22565431023, 5499, "004702"},
    {"81321", 22565430353, 17999, "004733"}, {"0007", 22565421969, 999, ""},
    {"92004", 22565432010, 7450, "004741"},  {"81410", 22565430442, 3450, ""},
    {"93118", 22565433124, 24900, "004788"}, {"0011", 22565421973, 499, ""},
    {"82003", 22565430935, 6200, "004802"},  {"82014", 22565430946, 11950, "004815"},
    {"94220", 22565434226, 1575, ""},        {"81575", 22565430607, 4299, "004836"},
};
#define NCAT (sizeof(CATALOGUE) / sizeof(CATALOGUE[0]))

static const char *const FIRST[] = {
    "Karen", "Alex", "Maria", "James",  "Priya", "Wei",     "Fatima", "Lucas", "Olivia", "Noah",
    "Sofia", "Liam", "Aisha", "Mateo",  "Emma",  "Hiroshi", "Chloe",  "Diego", "Hannah", "Omar",
    "Grace", "Ivan", "Zoe",   "Samuel", "Lena",  "Ethan",   "Mia",    "Kenji", "Nora",   "Victor"};
static const char *const LAST[] = {"Berg",   "Johnson", "Garcia",  "Smith",  "Patel",   "Zhang",
                                   "Khan",   "Silva",   "Brown",   "Miller", "Rossi",   "Nguyen",
                                   "Okafor", "Lopez",   "Schmidt", "Tanaka", "Dubois",  "Novak",
                                   "Jensen", "Ali",     "Walsh",   "Petrov", "Kim",     "Cohen",
                                   "Larsen", "Moreau",  "Singh",   "Costa",  "Fischer", "Reyes"};
static const char *const DOMAINS[] = {"contoso.com", "fabrikam.com", "adventure-works.com",
                                      "example.com", "litware.net"};
static const char *const STREETS[] = {"Main Street", "Oak Avenue", "Pine Road", "Maple Drive",
                                      "Cedar Lane",  "Elm Street", "Lake View", "Hill Road"};

struct site {
  const char *store, *city, *state, *zip;
};
static const struct site SITES[] = {
    {"HOUSTON", "Houston", "TX", "77002"}, {"SEATTLE", "Seattle", "WA", "98101"},
    {"DALLAS", "Dallas", "TX", "75201"},   {"BOSTON", "Boston", "MA", "02108"},
    {"DENVER", "Denver", "CO", "80202"},   {"CHICAGO", "Chicago", "IL", "60601"},
    {"PHOENIX", "Phoenix", "AZ", "85004"}, {"ATLANTA", "Atlanta", "GA", "30303"},
    {"MIAMI", "Miami", "FL", "33130"},     {"OAKLAND", "Oakland", "CA", "94612"},
    {"TAMPA", "Tampa", "FL", "33602"},     {"RALEIGH", "Raleigh", "NC", "27601"},
};
#define NSITES (sizeof(SITES) / sizeof(SITES[0]))
#define N(a)   (sizeof(a) / sizeof((a)[0]))

static uint64_t draw(uint64_t *r, uint64_t n) {
  return rx_rand64(r) % n;
}

static const struct site *site_of(unsigned csu) {
  return &SITES[csu % NSITES];
}

/* ---------------------------------------------------------------------------------------------- */
/* Customers */
/* ---------------------------------------------------------------------------------------------- */

static void cust_gen(uint64_t seed, unsigned csu, unsigned k, struct sim__cust *o) {
  uint64_t r = sim__mix(sim__mix(seed, 0xc057), (uint64_t)csu * 100000 + k) | 1;
  const struct site *s = site_of(csu);
  const char *first = FIRST[draw(&r, N(FIRST))], *last = LAST[draw(&r, N(LAST))];
  memset(o, 0, sizeof(*o));
  snprintf(o->account, sizeof(o->account), "%06u", csu * 10000 + 1001 + k);
  snprintf(o->first, sizeof(o->first), "%s", first);
  snprintf(o->last, sizeof(o->last), "%s", last);
  uint64_t e = draw(&r, 100);
  if (e >= 4) /* some customers never gave an email */
    snprintf(o->email, sizeof(o->email), "%s.%s%s@%s", first, last, o->account,
             DOMAINS[draw(&r, N(DOMAINS))]);
  for (char *p = o->email; e >= 20 && *p; p++) /* most emails are lower case, some are not */
    *p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
  snprintf(o->phone, sizeof(o->phone), "+1 %03u 555 %04u", 200 + (unsigned)draw(&r, 700),
           (unsigned)draw(&r, 10000));
  snprintf(o->group, sizeof(o->group), "%u0", 1 + (unsigned)draw(&r, 3));
  snprintf(o->language, sizeof(o->language), "en-us");
  snprintf(o->street, sizeof(o->street), "%u %s", 1 + (unsigned)draw(&r, 980),
           STREETS[draw(&r, N(STREETS))]);
  snprintf(o->city, sizeof(o->city), "%s", s->city);
  snprintf(o->state, sizeof(o->state), "%s", s->state);
  snprintf(o->zip, sizeof(o->zip), "%s", s->zip);
  o->recid = 5637144576LL + (int64_t)csu * 1000000 + (int64_t)k * 4;
  o->party_recid = o->recid + 1;
  o->person_name_id = o->recid + 2;
  snprintf(o->party, sizeof(o->party), "%09lld", (long long)(o->party_recid % 1000000000));
  o->created_ms = 1672531200000LL + (int64_t)k * 86400000LL; /* 2023-01-01 plus k days */
  o->type = 1;
}

static uint32_t email_hash(const char *email) {
  return sim__hash(email, strlen(email), true);
}

int sim__cust_reindex(struct sim__csu *u, struct sim__cust *k) {
  /* entries for an old email stay behind; lookups compare the current email */
  uint32_t i = (uint32_t)(k - u->cust);
  if (k->email[0] && sim__htab_put(&u->by_email, email_hash(k->email), i) < 0)
    return -ENOMEM;
  return 0;
}

struct sim__cust *sim__cust_add(struct sim__csu *u, const struct sim__cust *src) {
  if (u->ncust == u->capcust) {
    size_t cap = u->capcust ? u->capcust * 2 : SIM_POOL_CUSTOMERS;
    struct sim__cust *n = realloc(u->cust, cap * sizeof(*n));
    if (n == NULL)
      return NULL;
    u->cust = n;
    u->capcust = cap;
  }
  struct sim__cust *k = &u->cust[u->ncust];
  *k = *src;
  if (sim__htab_put(&u->by_account, sim__hash(k->account, strlen(k->account), false),
                    (uint32_t)u->ncust) < 0)
    return NULL;
  u->ncust++;
  return sim__cust_reindex(u, k) < 0 ? NULL : k;
}

int sim__customers_init(struct sim_csus *c, struct sim__csu *u) {
  const struct site *s = site_of(u->index);
  if (u->index < NSITES)
    snprintf(u->store, sizeof(u->store), "%s", s->store);
  else
    snprintf(u->store, sizeof(u->store), "ST%u", u->index);
  u->next_account = (uint64_t)u->index * 10000 + 6001;
  for (unsigned k = 0; k < SIM_POOL_CUSTOMERS; k++) {
    struct sim__cust one;
    cust_gen(c->seed, u->index, k, &one);
    if (sim__cust_add(u, &one) == NULL)
      return -ENOMEM;
  }
  return 0;
}

void sim__customers_free(struct sim__csu *u) {
  free(u->cust);
  u->cust = NULL;
  sim__htab_free(&u->by_account);
  sim__htab_free(&u->by_email);
}

struct sim__cust *sim__cust_find(struct sim__csu *u, const char *account) {
  struct sim__hiter it;
  uint32_t i;
  sim__htab_find(&u->by_account, sim__hash(account, strlen(account), false), &it);
  while (sim__htab_next(&u->by_account, &it, &i))
    if (strcmp(u->cust[i].account, account) == 0)
      return &u->cust[i];
  return NULL;
}

size_t sim__cust_by_email(struct sim__csu *u, const char *email, struct sim__cust **out,
                          size_t max) {
  struct sim__hiter it;
  uint32_t i;
  size_t n = 0;
  sim__htab_find(&u->by_email, email_hash(email), &it);
  while (n < max && sim__htab_next(&u->by_email, &it, &i)) {
    bool dup = false;
    for (size_t j = 0; j < n && !dup; j++)
      dup = out[j] == &u->cust[i];
    if (!dup && strcasecmp(u->cust[i].email, email) == 0)
      out[n++] = &u->cust[i];
  }
  /* the index probes in slot order; answer in creation order */
  for (size_t a = 1; a < n; a++)
    for (size_t b = a; b > 0 && out[b - 1] > out[b]; b--) {
      struct sim__cust *t = out[b];
      out[b] = out[b - 1];
      out[b - 1] = t;
    }
  return n;
}

void sim__cust_next_account(struct sim__csu *u, char *buf, size_t len) {
  do
    snprintf(buf, len, "%06llu", (unsigned long long)u->next_account++);
  while (sim__cust_find(u, buf) != NULL);
}

/* ---------------------------------------------------------------------------------------------- */
/* Carts and orders */
/* ---------------------------------------------------------------------------------------------- */

void sim__cart_plan(uint64_t seed, struct sim__cart_plan *p) {
  uint64_t r = seed | 1;
  memset(p, 0, sizeof(*p));
  uint64_t ch = draw(&r, 100);
  p->channel = ch < 45 ? 0 : ch < 80 ? 1 : 2;
  p->terminal = 1 + (unsigned)draw(&r, p->channel == 0 ? 29 : 9);
  p->staff = 100 + (unsigned)draw(&r, 400);
  p->guest = draw(&r, 100) < 20;
  p->customer = (unsigned)draw(&r, SIM_POOL_CUSTOMERS);
  p->lines = (seed & SIM_SEED_BURST) ? 1 : 1 + (unsigned)draw(&r, 4);
  for (unsigned i = 0; i < p->lines; i++) {
    p->nitems[i] = draw(&r, 100) < 70 ? 1 : 2;
    for (unsigned j = 0; j < p->nitems[i]; j++)
      p->items[i][j] = (unsigned)draw(&r, NCAT);
  }
  for (unsigned i = 1; i <= p->lines; i++)
    p->gaps_ms[i] =
        (seed & SIM_SEED_BURST) ? 1000 : p->gaps_ms[i - 1] + 200 + (unsigned)draw(&r, 2300);
}

void sim__cart_data(const struct sim__cart_plan *p, unsigned line, char *buf, size_t len) {
  size_t n = (size_t)snprintf(buf, len, "[");
  for (unsigned j = 0; j < p->nitems[line] && n < len; j++)
    n += (size_t)snprintf(buf + n, len - n, "%s\"%s\"", j ? "," : "",
                          CATALOGUE[p->items[line][j]].id);
  if (n < len)
    snprintf(buf + n, len - n, "]");
}

struct line {
  unsigned item;
  int64_t qty, gross, disc, net, tax;
};

struct order {
  struct sim__cart_plan plan;
  struct line lines[MAX_LINES];
  unsigned n;
  int64_t subtotal, tax, disc, charge, total, qty;
  const struct sim__cust *cust; /* NULL for guests and unknown customers */
  struct sim__cust gen;         /* the generated customer, for generated carts */
  char receipt[96], guid[40], receipt_id[24], sales_id[16], ref[24];
  bool card;
  unsigned card_last4;
};

static void order_lines(struct order *o, uint64_t *r) {
  for (unsigned i = 0; i < o->plan.lines; i++)
    for (unsigned j = 0; j < o->plan.nitems[i] && o->n < MAX_LINES; j++) {
      struct line *l = &o->lines[o->n++];
      l->item = o->plan.items[i][j];
      l->qty = draw(r, 100) < 85 ? 1 : 2;
      l->gross = CATALOGUE[l->item].cents * l->qty;
      l->disc = draw(r, 100) < 10 ? (l->gross + 5) / 10 : 0;
      l->net = l->gross - l->disc;
      l->tax = (l->net * TAX_BP + 5000) / 10000;
      o->subtotal += l->net;
      o->tax += l->tax;
      o->disc += l->disc;
      o->qty += l->qty;
    }
}

static const struct sim__cust *order_customer(struct sim_csus *c, struct sim__csu *u,
                                              const struct sim__cart *k, struct order *o) {
  const char *id = sim__str(&u->pool, k->customer);
  if (id[0] == '\0')
    return NULL;
  if (!(k->seed & SIM_SEED_SCRIPT)) {
    cust_gen(c->seed, u->index, o->plan.customer, &o->gen);
    if (strcmp(o->gen.account, id) == 0)
      return &o->gen;
  }
  return sim__cust_find(u, id);
}

static void order_receipt(struct sim__csu *u, const struct sim__cart *k, struct order *o,
                          uint64_t *r) {
  const char *mail = o->cust ? o->cust->email : "";
  uint64_t d = draw(r, 100);
  if (k->receipt != SIM_NO_STR)
    snprintf(o->receipt, sizeof(o->receipt), "%s", sim__str(&u->pool, k->receipt));
  else if (k->channel == 2 && mail[0]) /* online: the shopper's address is always on the order */
    snprintf(o->receipt, sizeof(o->receipt), "%s", mail);
  else if (k->channel == 2 || (o->cust == NULL && d < 15)) /* a guest typed an address */
    snprintf(o->receipt, sizeof(o->receipt), "shopper%06u@example.net",
             (unsigned)(sim__mix(k->seed, 0xe11) % 1000000));
  else if (o->cust != NULL && d < 40)
    snprintf(o->receipt, sizeof(o->receipt), "%s", mail);
}

static void order_build(struct sim_csus *c, struct sim__csu *u, const struct sim__cart *k,
                        struct order *o) {
  memset(o, 0, sizeof(*o));
  sim__cart_plan(k->seed, &o->plan);
  uint64_t r = sim__mix(k->seed, 0x0de7) | 1;
  order_lines(o, &r);
  bool online = k->channel == 2;
  uint64_t d = draw(&r, 100);
  o->charge = online ? (d < 60 ? 599 : 0) : (d < 15 ? 340 : 0);
  o->total = o->subtotal + o->tax + o->charge;
  o->cust = order_customer(c, u, k, o);
  order_receipt(u, k, o, &r);
  uint64_t g1 = rx_rand64(&r), g2 = rx_rand64(&r);
  snprintf(o->guid, sizeof(o->guid), "%08x-%04x-4%03x-%04x-%012llx", (unsigned)(g1 >> 32),
           (unsigned)(g1 >> 16) & 0xffff, (unsigned)g1 & 0xfff,
           0x8000 | ((unsigned)(g2 >> 48) & 0x3fff), (unsigned long long)(g2 & 0xffffffffffffULL));
  o->card = online || draw(&r, 100) < 70;
  o->card_last4 = (unsigned)draw(&r, 10000);
  unsigned seq = (unsigned)draw(&r, 100000);
  if (online) {
    snprintf(o->sales_id, sizeof(o->sales_id), "%06u", 10000 + seq);
    snprintf(o->ref, sizeof(o->ref), "%.3s-%016llX", u->store,
             (unsigned long long)(g2 >> 8) & 0xffffffffffffULL);
  } else {
    snprintf(o->receipt_id, sizeof(o->receipt_id), "%.6s-%02u%05u", u->store, o->plan.terminal,
             seq);
  }
}

/* Money as Retail Server writes it: the exact amount, zero-padded to `scale` fraction digits. */
static const char *money(char *buf, size_t len, int64_t cents, int scale) {
  /* by hand, not snprintf: an order writes about 30 of these and printf was its hottest part */
  char digits[24];
  size_t n = 0, o = 0;
  uint64_t v = cents < 0 ? 0 : (uint64_t)cents;
  do {
    digits[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v > 0 || n < 3);
  if (n + 2 + (size_t)scale > len) {
    buf[0] = '\0';
    return buf;
  }
  while (n > 2)
    buf[o++] = digits[--n];
  buf[o++] = '.';
  buf[o++] = digits[1];
  buf[o++] = digits[0];
  for (int i = 2; i < scale; i++)
    buf[o++] = '0';
  buf[o] = '\0';
  return buf;
}

static void kmoney(struct csr_jw *jw, const char *key, int64_t cents, int scale) {
  char buf[48];
  csr_jw_knum_text(jw, key, money(buf, sizeof(buf), cents, scale));
}

static void empty_array(struct csr_jw *jw, const char *key) {
  csr_jw_key(jw, key);
  csr_jw_arr(jw);
  csr_jw_arr_end(jw);
}

/* "key":[ and, when `one`, an entity: a collection of zero or one entity; close_one() ends it. */
static void open_one(struct csr_jw *jw, const char *key, bool one) {
  csr_jw_key(jw, key);
  csr_jw_arr(jw);
  if (one)
    csr_jw_obj(jw);
}

static void close_one(struct csr_jw *jw, bool one) {
  if (one)
    csr_jw_obj_end(jw);
  csr_jw_arr_end(jw);
}

static void full_name(const struct sim__cust *k, char *buf, size_t len) {
  if (k == NULL)
    snprintf(buf, len, "%s", "");
  else
    snprintf(buf, len, "%s%s%s", k->first, k->first[0] && k->last[0] ? " " : "", k->last);
}

void sim__order_summary(struct sim_csus *c, struct sim__csu *u, const struct sim__cart *k,
                        struct sim__order_sum *out) {
  struct order o;
  order_build(c, u, k, &o);
  snprintf(out->binding, sizeof(out->binding), "%s", o.guid);
  money(out->amount, sizeof(out->amount), o.total, 16);
  const struct sim__cust *now = NULL;
  const char *id = sim__str(&u->pool, k->customer);
  if (!o.receipt[0] && id[0]) /* what GET Customers answers right now */
    now = sim__cust_find(u, id);
  snprintf(out->email, sizeof(out->email), "%s", o.receipt[0] ? o.receipt : now ? now->email : "");
}

static void write_sales_line(struct csr_jw *jw, const struct line *l, unsigned no) {
  const struct item *it = &CATALOGUE[l->item];
  char id[12];
  snprintf(id, sizeof(id), "%u", no);
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "LineId", id);
  csr_jw_kstr(jw, "ItemId", it->id);
  csr_jw_kint(jw, "ProductId", it->product);
  csr_jw_kstr(jw, "InventoryDimensionId", it->dim);
  kmoney(jw, "Quantity", l->qty * 100, 17);
  kmoney(jw, "Price", it->cents, 16);
  kmoney(jw, "GrossAmount", l->gross, 17);
  kmoney(jw, "NetAmount", l->net, 17);
  kmoney(jw, "TaxAmount", l->tax, 16);
  kmoney(jw, "TotalAmount", l->net + l->tax, 17);
  kmoney(jw, "DiscountAmount", l->disc, 16);
  csr_jw_kstr(jw, "UnitOfMeasureSymbol", "ea");
  csr_jw_kbool(jw, "IsVoided", false);
  csr_jw_kstr(jw, "Comment", "");
  csr_jw_kstr(jw, "SalesTaxGroupId", "AvaTax");
  csr_jw_kstr(jw, "ItemTaxGroupId", "ALL");
  empty_array(jw, "DiscountLines");
  empty_array(jw, "ChargeLines");
  empty_array(jw, "ExtensionProperties");
  csr_jw_obj_end(jw);
}

static void write_tenders(struct csr_jw *jw, const struct order *o) {
  char mask[24];
  snprintf(mask, sizeof(mask), "************%04u", o->card_last4);
  open_one(jw, "TenderLines", true);
  csr_jw_kstr(jw, "TenderLineId", "1");
  csr_jw_kstr(jw, "TenderTypeId", o->card ? "3" : "1");
  kmoney(jw, "Amount", o->total, 16);
  kmoney(jw, "AmountInTenderedCurrency", o->total, 16);
  csr_jw_kstr(jw, "Currency", "USD");
  csr_jw_knum_text(jw, "ExchangeRate", "1.0000000000000000");
  csr_jw_kstr(jw, "MaskedCardNumber", o->card ? mask : "");
  csr_jw_kint(jw, "StatusValue", 7);
  empty_array(jw, "ExtensionProperties");
  close_one(jw, true);
}

static void write_totals(struct csr_jw *jw, const struct order *o) {
  kmoney(jw, "GrossAmount", o->total, 17);
  kmoney(jw, "SubtotalAmount", o->subtotal, 17);
  kmoney(jw, "TaxAmount", o->tax, 16);
  kmoney(jw, "DiscountAmount", o->disc, 16);
  kmoney(jw, "ChargeAmount", o->charge, 16);
  kmoney(jw, "TotalAmount", o->total, 16);
  kmoney(jw, "AmountPaid", o->total, 16);
  csr_jw_kint(jw, "AmountDue", 0);
  kmoney(jw, "NumberOfItems", o->qty * 100, 16);
}

static void write_arrays(struct csr_jw *jw, const struct order *o) {
  csr_jw_key(jw, "SalesLines");
  csr_jw_arr(jw);
  for (unsigned i = 0; i < o->n; i++)
    write_sales_line(jw, &o->lines[i], i + 1);
  csr_jw_arr_end(jw);
  write_tenders(jw, o);
  open_one(jw, "TaxLines", true);
  csr_jw_kstr(jw, "TaxCode", "SALESTAX");
  kmoney(jw, "Amount", o->tax, 16);
  kmoney(jw, "TaxBasis", o->subtotal, 16);
  csr_jw_knum_text(jw, "Percentage", "6.2500000000000000");
  empty_array(jw, "ExtensionProperties");
  close_one(jw, true);
  bool charge = o->charge > 0;
  open_one(jw, "ChargeLines", charge);
  if (charge) {
    csr_jw_kstr(jw, "ChargeCode", o->plan.channel == 2 ? "FREIGHT" : "SERVICE");
    kmoney(jw, "CalculatedAmount", o->charge, 16);
    csr_jw_kstr(jw, "ModuleTypeValue", "1");
    empty_array(jw, "ExtensionProperties");
  }
  close_one(jw, charge);
  bool phone = o->cust != NULL && o->cust->phone[0];
  open_one(jw, "ContactInformationCollection", phone);
  if (phone) {
    csr_jw_kstr(jw, "Value", o->cust->phone);
    csr_jw_kint(jw, "ContactInformationTypeValue", 1);
  }
  close_one(jw, phone);
  empty_array(jw, "DiscountCodes");
  empty_array(jw, "AttributeValues");
  empty_array(jw, "ExtensionProperties");
}

static void write_order_ids(struct csr_jw *jw, struct sim__csu *u, const struct sim__cart *k,
                            const struct order *o) {
  char name[80], store[16];
  full_name(o->cust, name, sizeof(name));
  snprintf(store, sizeof(store), k->channel == 1 ? "%s2" : "%s", u->store);
  csr_jw_kstr(jw, "Id", sim__str(&u->pool, k->txn));
  csr_jw_kstr(jw, "SalesId", o->sales_id);
  csr_jw_kstr(jw, "ChannelReferenceId", o->ref);
  csr_jw_kstr(jw, "ReceiptId", o->receipt_id);
  csr_jw_kstr(jw, "CustomerId", sim__str(&u->pool, k->customer));
  csr_jw_kstr(jw, "CustomerName", name);
  csr_jw_kstr(jw, "Name", name);
  csr_jw_kstr(jw, "ReceiptEmail", o->receipt);
  csr_jw_kint(jw, "ChannelId", k->channel_id);
  csr_jw_kstr(jw, "StoreId", k->channel == 2 ? "" : store);
  csr_jw_kstr(jw, "TerminalId", sim__str(&u->pool, k->terminal));
  csr_jw_kstr(jw, "StaffId", sim__str(&u->pool, k->staff));
  csr_jw_kstr(jw, "InventoryLocationId", k->channel == 2 ? "WH-ONLINE" : store);
  csr_jw_kstr(jw, "CurrencyCode", "USD");
  csr_jw_kstr(jw, "LanguageId", "en-us");
  csr_jw_kstr(jw, "LoyaltyCardId", "");
  csr_jw_kstr(jw, "DeliveryMode", k->channel == 2 ? "60" : "");
  csr_jw_kstr(jw, "InternalTransactionId", o->guid);
}

void sim__write_order(struct sim_csus *c, struct sim__csu *u, const struct sim__cart *k,
                      struct csr_jw *jw) {
  struct order o;
  char created[CSR_TIME_BUF], day[40];
  order_build(c, u, k, &o);
  csr_time_format(k->time_ms, created, sizeof(created));
  snprintf(day, sizeof(day), "%.10sT00:00:00+00:00", created);
  csr_jw_obj(jw);
  sim__jw_context(jw, c, u, "Microsoft.Dynamics.Commerce.Runtime.DataModel.SalesOrder");
  write_order_ids(jw, u, k, &o);
  write_totals(jw, &o);
  csr_jw_kint(jw, "TransactionTypeValue", 2);
  csr_jw_kint(jw, "StatusValue", k->channel == 2 ? 1 : 4);
  csr_jw_kint(jw, "DocumentStatusValue", 0);
  csr_jw_kbool(jw, "IsTaxIncludedInPrice", false);
  csr_jw_kbool(jw, "IsRequiredAmountPaid", false);
  csr_jw_kstr(jw, "CreatedDateTime", created);
  csr_jw_kstr(jw, "BeginDateTime", created);
  csr_jw_kstr(jw, "BusinessDate", day);
  csr_jw_kstr(jw, "ModifiedDateTime", "1900-01-01T00:00:00Z");
  write_arrays(jw, &o);
  csr_jw_obj_end(jw);
}

/* ---------------------------------------------------------------------------------------------- */
/* Customer entities */
/* ---------------------------------------------------------------------------------------------- */

static void write_address(struct csr_jw *jw, const struct sim__cust *k) {
  char name[80];
  full_name(k, name, sizeof(name));
  bool one = k->street[0] != '\0';
  open_one(jw, "Addresses", one);
  if (one) {
    csr_jw_kstr(jw, "Name", name);
    csr_jw_kstr(jw, "Street", k->street);
    csr_jw_kstr(jw, "City", k->city);
    csr_jw_kstr(jw, "State", k->state);
    csr_jw_kstr(jw, "ZipCode", k->zip);
    csr_jw_kstr(jw, "ThreeLetterISORegionName", "USA");
    csr_jw_kint(jw, "AddressTypeValue", 1);
    csr_jw_kbool(jw, "IsPrimary", true);
    csr_jw_kint(jw, "RecordId", k->recid + 3);
    empty_array(jw, "ExtensionProperties");
  }
  close_one(jw, one);
}

static void write_customer_ids(struct csr_jw *jw, const struct sim__cust *k) {
  char name[80], created[CSR_TIME_BUF];
  full_name(k, name, sizeof(name));
  csr_time_format(k->created_ms, created, sizeof(created));
  csr_jw_kstr(jw, "AccountNumber", k->account);
  csr_jw_kint(jw, "RecordId", k->recid);
  csr_jw_kstr(jw, "CreatedDateTime", created);
  csr_jw_kstr(jw, "Name", name);
  csr_jw_kint(jw, "PersonNameId", k->person_name_id);
  csr_jw_kstr(jw, "FirstName", k->first);
  csr_jw_kstr(jw, "MiddleName", k->middle);
  csr_jw_kstr(jw, "LastName", k->last);
  csr_jw_kint(jw, "DirectoryPartyRecordId", k->party_recid);
  csr_jw_kstr(jw, "PartyNumber", k->party);
  csr_jw_kint(jw, "CustomerTypeValue", k->type);
  csr_jw_kstr(jw, "Language", k->language);
  csr_jw_kstr(jw, "CustomerGroup", k->group);
  csr_jw_kstr(jw, "CurrencyCode", "USD");
  csr_jw_kstr(jw, "Email", k->email);
  csr_jw_kint(jw, "EmailRecordId", k->email[0] ? k->recid + 5 : 0);
  csr_jw_kstr(jw, "ReceiptEmail", k->receipt_email);
  csr_jw_kstr(jw, "Phone", k->phone);
  csr_jw_kint(jw, "PhoneRecordId", k->phone[0] ? k->recid + 6 : 0);
  csr_jw_kstr(jw, "PhoneExt", "");
  csr_jw_kstr(jw, "Cellphone", "");
  csr_jw_kstr(jw, "Url", "");
}

void sim__write_customer(struct sim_csus *c, struct sim__csu *u, const struct sim__cust *k,
                         struct csr_jw *jw) {
  csr_jw_obj(jw);
  sim__jw_context(jw, c, u, "Customers/$entity");
  write_customer_ids(jw, k);
  csr_jw_kstr(jw, "InvoiceAccount", "");
  csr_jw_knum_text(jw, "CreditLimit", "0.0000000000000000");
  csr_jw_knum_text(jw, "Balance", "0.0000000000000000");
  csr_jw_kbool(jw, "Blocked", false);
  csr_jw_kint(jw, "BlockedType", 0);
  csr_jw_kstr(jw, "TaxGroup", "AvaTax");
  csr_jw_kstr(jw, "PriceGroup", "");
  csr_jw_kbool(jw, "IsCustomerTaxInclusive", false);
  csr_jw_kint(jw, "ReceiptSettings", 0);
  csr_jw_kbool(jw, "OptOutPersonalization", false);
  csr_jw_kbool(jw, "OptOutWebActivityTracking", false);
  csr_jw_kint(jw, "RetailCustomerTableRecordId", k->recid + 7);
  csr_jw_kbool(jw, "IsAsyncCustomer", false);
  csr_jw_kint(jw, "TitleRecordId", 0);
  csr_jw_kbool(jw, "IsFloorLimitBlocked", false);
  csr_jw_kbool(jw, "IsB2b", false);
  csr_jw_kbool(jw, "IsB2bAdmin", false);
  csr_jw_kstr(jw, "BusinessPartnerId", "");
  csr_jw_kbool(jw, "AllowOnAccountPayment", false);
  write_address(jw, k);
  empty_array(jw, "CustomerAffiliations");
  empty_array(jw, "Attributes");
  empty_array(jw, "Images");
  empty_array(jw, "Contacts");
  empty_array(jw, "ExtensionProperties");
  csr_jw_obj_end(jw);
}

void sim__write_global_customer(const struct sim__cust *k, struct csr_jw *jw) {
  char name[80], addr[160];
  full_name(k, name, sizeof(name));
  snprintf(addr, sizeof(addr), "%s%s%s %s %s%sUSA", k->street, k->street[0] ? "\n" : "", k->city,
           k->state, k->zip, k->street[0] ? "\n" : "");
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "PartyNumber", k->party);
  csr_jw_kint(jw, "RecordId", k->party_recid);
  csr_jw_kbool(jw, "IsAsyncCustomer", false);
  csr_jw_kstr(jw, "AccountNumber", k->account);
  csr_jw_kstr(jw, "FullName", name);
  csr_jw_kstr(jw, "FullAddress", k->street[0] ? addr : "");
  csr_jw_kstr(jw, "Phone", k->phone);
  csr_jw_kstr(jw, "Email", k->email);
  csr_jw_kint(jw, "CustomerTypeValue", k->type);
  csr_jw_kstr(jw, "OfflineImage", "");
  csr_jw_kbool(jw, "IsB2b", false);
  empty_array(jw, "Images");
  empty_array(jw, "ExtensionProperties");
  csr_jw_obj_end(jw);
}
