/* The Customers endpoints under /csu{i}/Commerce/ (dynamics-api section 2.4): GET Customers('id'),
 * POST Customers/SearchByFields, POST Customers and PATCH Customers('id'). csu.c routes them here;
 * the entities themselves are written by orders.c.
 *
 * Choices where the references are silent:
 * - An unknown customer (also Customers('')): 404 CustomerNotFound.
 * - POST Customers answers 201 with the Customer and a Location header; Email and LastName are
 *   required (400 RequiredValueNotFound), an Email without '@' is 400 InvalidFormat, an
 *   AccountNumber already taken is 400 InvalidRequest. PATCH merges the given fields (Email and
 *   LastName cannot be emptied). Customers are per CSU.
 */
#include "csu_internal.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The key of Customers('1002') (or the unquoted Customers(1002) of customers.overview.md). */
static bool customer_key(struct sim_req *r, char *out, size_t len) {
  char rest[SIM_MAX_PATH_BYTES];
  const char *open = strchr(sim__rest_of(r, rest, sizeof(rest)), '(');
  size_t n = open ? strlen(open + 1) - 1 : 0; /* without the ')' */
  if (open == NULL || n >= len)
    return false;
  if (open[1] == '\'')
    return sim__unquote(open + 1, n, out, len);
  snprintf(out, len, "%.*s", (int)n, open + 1);
  return true;
}

static void no_customer(struct sim_req *r) {
  sim__fail(r, 404, SIM_E_NO_CUSTOMER,
            "No customer found using the specified customer account number.", SIM_X_VALIDATION);
}

#define CUST_FIELD(name, m)                                                                        \
  { name, offsetof(struct sim__cust, m), sizeof(((struct sim__cust *)0)->m) }

static const struct {
  const char *name;
  size_t off, size;
} CUST_FIELDS[] = {CUST_FIELD("FirstName", first),
                   CUST_FIELD("MiddleName", middle),
                   CUST_FIELD("LastName", last),
                   CUST_FIELD("Email", email),
                   CUST_FIELD("ReceiptEmail", receipt_email),
                   CUST_FIELD("Phone", phone),
                   CUST_FIELD("CustomerGroup", group),
                   CUST_FIELD("Language", language)};

static int customer_string(struct sim_req *r, yajl_val v, const char *name, char *dst,
                           size_t size) {
  char msg[96];
  const char *s = csr_json_str(v);
  if (v == NULL || YAJL_IS_NULL(v))
    return 0;
  if (s == NULL || strlen(s) >= size) {
    snprintf(msg, sizeof(msg), "%s must be a string of fewer than %zu characters.", name, size);
    return sim__bad(r, SIM_E_INVALID, msg);
  }
  snprintf(dst, size, "%s", s);
  return 0;
}

static int customer_address(struct sim_req *r, yajl_val doc, struct sim__cust *k) {
  yajl_val a = csr_json_at(csr_json_get(doc, "Addresses"), 0);
  char street[48] = "", number[16] = "";
  if (!YAJL_IS_OBJECT(a))
    return 0;
  if (customer_string(r, csr_json_get(a, "Street"), "Street", street, sizeof(street)) < 0 ||
      customer_string(r, csr_json_get(a, "StreetNumber"), "StreetNumber", number, sizeof(number)) <
          0 ||
      customer_string(r, csr_json_get(a, "City"), "City", k->city, sizeof(k->city)) < 0 ||
      customer_string(r, csr_json_get(a, "State"), "State", k->state, sizeof(k->state)) < 0 ||
      customer_string(r, csr_json_get(a, "ZipCode"), "ZipCode", k->zip, sizeof(k->zip)) < 0)
    return -1;
  char full[80];
  snprintf(full, sizeof(full), "%s%s%s", number, number[0] ? " " : "", street);
  if (strlen(full) >= sizeof(k->street))
    return sim__bad(r, SIM_E_INVALID, "The street address is too long.");
  memcpy(k->street, full, strlen(full) + 1);
  return 0;
}

/* Merges the body's fields into k; checks what every customer needs. */
static int customer_fields(struct sim_req *r, yajl_val doc, struct sim__cust *k) {
  for (size_t i = 0; i < sizeof(CUST_FIELDS) / sizeof(CUST_FIELDS[0]); i++)
    if (customer_string(r, csr_json_get(doc, CUST_FIELDS[i].name), CUST_FIELDS[i].name,
                        (char *)k + CUST_FIELDS[i].off, CUST_FIELDS[i].size) < 0)
      return -1;
  yajl_val type = csr_json_get(doc, "CustomerTypeValue");
  if (type != NULL && !(YAJL_IS_INTEGER(type) && (type->u.number.i == 1 || type->u.number.i == 2)))
    return sim__bad(r, SIM_E_INVALID, "CustomerTypeValue must be 1 (person) or 2 (organization).");
  if (type != NULL)
    k->type = (int)type->u.number.i;
  if (customer_address(r, doc, k) < 0)
    return -1;
  if (k->last[0] == '\0')
    return sim__bad(r, SIM_E_REQUIRED, "A value is required for LastName.");
  if (k->email[0] == '\0')
    return sim__bad(r, SIM_E_REQUIRED, "A value is required for Email.");
  const char *at = strchr(k->email, '@');
  if (at == NULL || at == k->email || strchr(at, '.') == NULL)
    return sim__bad(r, SIM_E_FORMAT, "Email is not a valid email address.");
  return 0;
}

static void reply_customer(struct sim_req *r, struct sim__csu *u, const struct sim__cust *k,
                           int status, bool created) {
  struct sim_csus *c = r->arg;
  char loc[200];
  if (c->sim->ledger != NULL)
    sim_ledger_customer(c->sim->ledger, k->email, k->account, created);
  snprintf(loc, sizeof(loc), "Location: %s/csu%u/Commerce/Customers('%s')\r\n", c->sim->base_url,
           u->index, k->account);
  sim__write_customer(c, u, k, &c->jw);
  sim__reply_jw(r, status, created ? loc : NULL, &c->jw);
}

void sim__on_customer_get(struct sim_req *r) {
  char id[64];
  struct sim__csu *u = sim__csu_begin(r, true);
  if (u == NULL)
    return;
  struct sim__cust *k = customer_key(r, id, sizeof(id)) ? sim__cust_find(u, id) : NULL;
  if (k == NULL) {
    no_customer(r);
    return;
  }
  struct sim_csus *c = r->arg;
  sim__write_customer(c, u, k, &c->jw);
  sim__reply_jw(r, 200, NULL, &c->jw);
}

static int customer_create(struct sim_req *r, struct sim__csu *u, yajl_val doc) {
  struct sim_csus *c = r->arg;
  struct sim__cust k;
  memset(&k, 0, sizeof(k));
  snprintf(k.language, sizeof(k.language), "en-us");
  snprintf(k.group, sizeof(k.group), "10");
  k.type = 1;
  if (customer_string(r, csr_json_get(doc, "AccountNumber"), "AccountNumber", k.account,
                      sizeof(k.account)) < 0 ||
      customer_fields(r, doc, &k) < 0)
    return -1;
  if (k.account[0] && sim__cust_find(u, k.account) != NULL)
    return sim__bad(r, SIM_E_INVALID, "The account number is already in use.");
  if (k.account[0] == '\0') /* "" asks the server to assign one */
    sim__cust_next_account(u, k.account, sizeof(k.account));
  k.recid = 5637144576LL + (int64_t)u->index * 1000000 + 500000 + (int64_t)u->ncust * 8;
  k.party_recid = k.recid + 1;
  k.person_name_id = k.recid + 2;
  snprintf(k.party, sizeof(k.party), "%09lld", (long long)(k.party_recid % 1000000000));
  k.created_ms = sim__now(c);
  struct sim__cust *added = sim__cust_add(u, &k);
  if (added == NULL)
    return sim__fail(r, 500, SIM_E_APPLICATION, "Out of memory.", "CommerceException");
  reply_customer(r, u, added, 201, true);
  return 0;
}

void sim__on_customer_create(struct sim_req *r) {
  sim__with_body(r, true, customer_create);
}

static int customer_update(struct sim_req *r, struct sim__csu *u, yajl_val doc) {
  char id[64];
  struct sim__cust *k = customer_key(r, id, sizeof(id)) ? sim__cust_find(u, id) : NULL;
  if (k == NULL) {
    no_customer(r);
    return -1;
  }
  struct sim__cust t = *k;
  const char *acct = csr_json_get_str(doc, "AccountNumber");
  if (acct != NULL && acct[0] && strcmp(acct, k->account) != 0)
    return sim__bad(r, SIM_E_INVALID, "AccountNumber in the body does not match the key.");
  if (customer_fields(r, doc, &t) < 0)
    return -1;
  bool moved = strcmp(t.email, k->email) != 0;
  *k = t;
  if (moved && sim__cust_reindex(u, k) < 0)
    return sim__fail(r, 500, SIM_E_APPLICATION, "Out of memory.", "CommerceException");
  reply_customer(r, u, k, 200, false);
  return 0;
}

void sim__on_customer_update(struct sim_req *r) {
  sim__with_body(r, true, customer_update);
}

enum { F_DEFAULT = 0, F_ACCOUNT = 1, F_EMAIL = 3, F_NAME = 5, F_PHONE = 6 };

static bool contains_ci(const char *hay, const char *needle) {
  size_t n = strlen(needle);
  for (; *hay; hay++)
    if (strncasecmp(hay, needle, n) == 0)
      return true;
  return n == 0;
}

static bool crit_match(const struct sim__cust *k, int field, const char *term) {
  char name[80];
  snprintf(name, sizeof(name), "%s %s", k->first, k->last);
  switch (field) {
    case F_ACCOUNT:
      return strcmp(k->account, term) == 0;
    case F_EMAIL:
      return strcasecmp(k->email, term) == 0;
    case F_NAME:
      return contains_ci(name, term);
    case F_PHONE:
      return contains_ci(k->phone, term);
    case F_DEFAULT:
      return crit_match(k, F_ACCOUNT, term) || crit_match(k, F_EMAIL, term) ||
             crit_match(k, F_NAME, term) || crit_match(k, F_PHONE, term);
    default:
      return false;
  }
}

struct crit {
  int field[8];
  const char *term[8];
  size_t n;
};

static int search_criteria(struct sim_req *r, yajl_val doc, struct crit *cr) {
  static const char *const NAMES[] = {"Default",           "AccountNumber", "Address",    "Email",
                                      "LoyaltyCardNumber", "Name",          "PhoneNumber"};
  yajl_val list =
      csr_json_get_ci(csr_json_get_ci(doc, "CustomerSearchByFieldCriteria"), "Criteria");
  cr->n = csr_json_len(list) < 8 ? csr_json_len(list) : 8;
  if (cr->n == 0)
    return sim__bad(r, SIM_E_REQUIRED,
                    "A value is required for CustomerSearchByFieldCriteria.Criteria.");
  for (size_t i = 0; i < cr->n; i++) {
    yajl_val one = csr_json_at(list, i), f = csr_json_get_ci(one, "SearchField");
    const char *name = csr_json_get_str(f, "Name");
    yajl_val value = csr_json_get(f, "Value");
    cr->term[i] = csr_json_get_str(one, "SearchTerm");
    cr->field[i] = YAJL_IS_INTEGER(value) ? (int)value->u.number.i : -1;
    for (int j = 0; name != NULL && cr->field[i] < 0 && j < 7; j++)
      cr->field[i] = strcasecmp(name, NAMES[j]) == 0 ? j : -1;
    if (cr->term[i] == NULL || cr->field[i] < 0)
      return sim__bad(r, SIM_E_REQUIRED, "Each criterion needs a SearchTerm and a SearchField.");
  }
  return 0;
}

static void search_customers(struct sim_req *r, struct sim__csu *u, const struct crit *cr,
                             const struct sim__query *q) {
  struct sim_csus *c = r->arg;
  struct sim__cust *hits[256];
  size_t nhits = 0, total = 0;
  for (size_t i = 0; i < cr->n && nhits == 0; i++)
    if (cr->field[i] == F_EMAIL) /* the index answers an email criterion without a scan */
      nhits = sim__cust_by_email(u, cr->term[i], hits, 256) + 1;
  size_t n = nhits ? nhits - 1 : u->ncust;
  csr_jw_obj(&c->jw);
  sim__jw_context(&c->jw, c, u,
                  "Collection(Microsoft.Dynamics.Commerce.Runtime.DataModel.GlobalCustomer)");
  for (int pass = q->count ? 0 : 1; pass < 2; pass++) {
    if (pass == 1 && q->count)
      csr_jw_kint(&c->jw, "@odata.count", (int64_t)total);
    if (pass == 1) {
      csr_jw_key(&c->jw, "value");
      csr_jw_arr(&c->jw);
    }
    total = 0;
    for (size_t i = 0; i < n; i++) {
      const struct sim__cust *k = nhits ? hits[i] : &u->cust[i];
      bool ok = true;
      for (size_t j = 0; j < cr->n && ok; j++)
        ok = crit_match(k, cr->field[j], cr->term[j]);
      if (ok && total++ >= q->skip && total - q->skip <= q->top && pass == 1)
        sim__write_global_customer(k, &c->jw);
    }
  }
  csr_jw_arr_end(&c->jw);
  csr_jw_obj_end(&c->jw);
  sim__reply_jw(r, 200, NULL, &c->jw);
}

void sim__on_customer_search(struct sim_req *r) {
  struct sim__csu *u = sim__csu_begin(r, true);
  struct sim__query q;
  struct crit cr;
  if (u == NULL || sim__paging(r, &q) < 0)
    return;
  yajl_val doc = sim__body_json(r);
  if (doc != NULL && search_criteria(r, doc, &cr) == 0)
    search_customers(r, u, &cr, &q);
  csr_json_free(doc);
}
