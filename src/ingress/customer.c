/* The customer request of the sync ingress (include/csurelay/ingress.h, SPEC section 5): the body
 * of POST /v1/customers checked against its rules, its normalised form (the JOB record's "req") and
 * the Commerce Customer entity built from it (dynamics-api sections 2.3 and 5). Pure: no I/O.
 *
 * The rules live in two tables (the top level and the address), one row per key: its kind, where it
 * lands in struct cs_customer, its length bounds and its syntax check. Parsing, encoding and the
 * error messages all walk the same rows, so a field is added in one place.
 *
 * A validated request keeps the yajl tree it came from (the _mem of struct cs_customer): its
 * strings point into the tree, so a valid request costs no copies.
 *
 * Before yajl sees the body, one scan rejects what the tree would hide or make costly: bytes that
 * are not strict UTF-8 (yajl's own check lets overlong forms, surrogates and code points past
 * U+10FFFF through), \u0000 (it would cut a C string short, unseen) and nesting deeper than the
 * address (a deep tree is freed recursively, and no field of the request needs it).
 */
#include "csurelay/ingress.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

/* The top level is 1, the address 2. */
#define MAX_DEPTH 2
/* "first last" of two 60-byte names. */
#define FULL_NAME_MAX 122

enum rule_kind { RULE_TEXT, RULE_FLAG, RULE_ADDRESS };

/* Returns what is wrong with a string that passed the length and control-character checks, or NULL
 * when it is fine. */
typedef const char *(*cs_syntax_fn)(const char *s);

struct rule {
  const char *key;
  enum rule_kind kind;
  size_t offset; /* RULE_TEXT: of the char * in struct cs_customer */
  size_t max;    /* RULE_TEXT: bytes; 0 when the syntax check bounds the length itself */
  cs_syntax_fn syntax;
  bool required;
};

static const char *email_syntax(const char *s);
static const char *phone_syntax(const char *s);
static const char *language_syntax(const char *s);
static const char *currency_syntax(const char *s);
static const char *country_syntax(const char *s);

#define TEXT(key, member, max, syntax)                                                             \
  { key, RULE_TEXT, offsetof(struct cs_customer, member), max, syntax, false }

/* In SPEC order, which is also the order cs_customer_encode writes. Lengths from the F&O fields
 * the values land in (Name 60, CustGroupId 10, LanguageId 7, the address's fields). */
static const struct rule TOP_RULES[] = {
    {"email", RULE_TEXT, offsetof(struct cs_customer, email), 254, email_syntax, true},
    TEXT("firstName", first_name, 60, NULL),
    TEXT("lastName", last_name, 60, NULL),
    TEXT("phone", phone, 0, phone_syntax),
    {"optIn", RULE_FLAG, 0, 0, NULL, false},
    TEXT("language", language, 0, language_syntax),
    TEXT("currency", currency, 0, currency_syntax),
    TEXT("customerGroup", customer_group, 10, NULL),
    {"address", RULE_ADDRESS, 0, 0, NULL, false},
};

static const struct rule ADDRESS_RULES[] = {
    TEXT("street", address.street, 250, NULL),
    TEXT("city", address.city, 60, NULL),
    TEXT("state", address.state, 10, NULL),
    TEXT("zip", address.zip, 10, NULL),
    TEXT("country", address.country, 0, country_syntax),
};

#define COUNT_OF(t) (sizeof(t) / sizeof((t)[0]))
/* check_object marks the rules it has met in an unsigned mask. */
_Static_assert(COUNT_OF(TOP_RULES) <= 32 && COUNT_OF(ADDRESS_RULES) <= 32, "one bit per rule");

/* ---- character classes (ASCII only: the C library's would follow the locale) ---------------- */

static bool is_alpha(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static bool is_digit(char ch) {
  return ch >= '0' && ch <= '9';
}

static bool is_alnum(char ch) {
  return is_alpha(ch) || is_digit(ch);
}

static bool all_alpha(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!is_alpha(s[i]))
      return false;
  return true;
}

static bool all_digits(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!is_digit(s[i]))
      return false;
  return true;
}

static bool has_control(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f)
      return true;
  return false;
}

/* ---- syntax of the fields that have one ----------------------------------------------------- */

/* RFC 5322 atext, the characters of a dot-atom's parts. */
static bool is_atext(char ch) {
  return ch != '\0' && (is_alnum(ch) || strchr("!#$%&'*+-/=?^_`{|}~", ch) != NULL);
}

/* 1-64 bytes of atext parts joined by single dots. */
static bool local_part_ok(const char *s, size_t n) {
  if (n < 1 || n > 64 || s[0] == '.' || s[n - 1] == '.')
    return false;
  for (size_t i = 0; i < n; i++)
    if (s[i] == '.' ? s[i + 1] == '.' : !is_atext(s[i]))
      return false;
  return true;
}

/* 1-63 letters, digits and hyphens, a hyphen neither first nor last. */
static bool label_ok(const char *s, size_t n) {
  if (n < 1 || n > 63 || s[0] == '-' || s[n - 1] == '-')
    return false;
  for (size_t i = 0; i < n; i++)
    if (!is_alnum(s[i]) && s[i] != '-')
      return false;
  return true;
}

/* Two or more labels; the last (the TLD) of 2+ letters, which also rules out IP literals. */
static bool domain_ok(const char *s) {
  size_t labels = 0, n = 0;
  for (;; s += n + 1) {
    n = strcspn(s, ".");
    if (!label_ok(s, n))
      return false;
    labels++;
    if (s[n] == '\0')
      break;
  }
  return labels >= 2 && n >= 2 && all_alpha(s, n);
}

static const char *email_syntax(const char *s) {
  const char *at = strchr(s, '@');
  if (at == NULL || strchr(at + 1, '@') != NULL)
    return "must hold exactly one '@'";
  if (!local_part_ok(s, (size_t)(at - s)))
    return "the part before '@' must be 1-64 bytes of letters, digits, !#$%&'*+-/=?^_`{|}~ and "
           "single inner dots";
  if (!domain_ok(at + 1))
    return "the domain must be 2+ dot-separated labels of letters, digits and inner hyphens, "
           "ending in 2+ letters";
  return NULL;
}

/* ^\+[1-9][0-9]{1,14}$ */
static const char *phone_syntax(const char *s) {
  size_t digits = strlen(s) - 1;
  if (s[0] != '+' || digits < 2 || digits > 15 || s[1] == '0' || !all_digits(s + 1, digits))
    return "must be E.164: '+' and 2-15 digits, the first not 0, e.g. +16135551111";
  return NULL;
}

/* 2-3 letters, optionally '-' and 2-8 letters or digits, at most 7 bytes. */
static const char *language_syntax(const char *s) {
  size_t lang = strcspn(s, "-"), len = strlen(s);
  bool ok = lang >= 2 && lang <= 3 && all_alpha(s, lang) && len <= 7;
  if (ok && s[lang] == '-') {
    size_t sub = len - lang - 1;
    ok = sub >= 2;
    for (size_t i = lang + 1; ok && i < len; i++)
      ok = is_alnum(s[i]);
  }
  return ok ? NULL : "must be a language tag of at most 7 bytes, e.g. en, en-us, nb-NO or zh-Hans";
}

static const char *currency_syntax(const char *s) {
  return cs_iso_currency(s) ? NULL : "must be an active ISO 4217 code in uppercase, e.g. USD";
}

static const char *country_syntax(const char *s) {
  return cs_iso_country(s) ? NULL : "must be an ISO 3166-1 alpha-3 code in uppercase, e.g. USA";
}

/* ---- the body before yajl ------------------------------------------------------------------- */

/* The length of the strict UTF-8 sequence at s[0..n) (RFC 3629: no overlong forms, no surrogates,
 * nothing past U+10FFFF), or 0. s[0] is not ASCII. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  static const struct {
    unsigned char first_lo, first_hi, len, second_lo, second_hi;
  } forms[] = {
      {0xc2, 0xdf, 2, 0x80, 0xbf}, {0xe0, 0xe0, 3, 0xa0, 0xbf}, {0xe1, 0xec, 3, 0x80, 0xbf},
      {0xed, 0xed, 3, 0x80, 0x9f}, {0xee, 0xef, 3, 0x80, 0xbf}, {0xf0, 0xf0, 4, 0x90, 0xbf},
      {0xf1, 0xf3, 4, 0x80, 0xbf}, {0xf4, 0xf4, 4, 0x80, 0x8f},
  };
  for (size_t f = 0; f < COUNT_OF(forms); f++) {
    if (s[0] < forms[f].first_lo || s[0] > forms[f].first_hi)
      continue;
    size_t len = forms[f].len;
    if (n < len || s[1] < forms[f].second_lo || s[1] > forms[f].second_hi)
      return 0;
    for (size_t i = 2; i < len; i++)
      if (s[i] < 0x80 || s[i] > 0xbf)
        return 0;
    return len;
  }
  return 0;
}

/* What makes the raw body unfit for the tree (see the top of the file), or NULL. */
static const char *body_problem(const char *body, size_t len) {
  const unsigned char *s = (const unsigned char *)body;
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < len; i++) {
    if (s[i] >= 0x80) {
      size_t n = utf8_len(s + i, len - i);
      if (n == 0)
        return "the body is not valid UTF-8";
      i += n - 1;
    } else if (in_string) {
      if (s[i] == '\\' && i + 5 < len && memcmp(s + i + 1, "u0000", 5) == 0)
        return "a string holds \\u0000";
      if (s[i] == '\\')
        i++; /* the escaped byte (ASCII in valid JSON) cannot end the string */
      else if (s[i] == '"')
        in_string = false;
    } else if (s[i] == '"') {
      in_string = true;
    } else if (s[i] == '{' || s[i] == '[') {
      if (++depth > MAX_DEPTH)
        return "the body is nested deeper than the address";
    } else if (s[i] == '}' || s[i] == ']') {
      depth--;
    }
  }
  return NULL;
}

/* ---- errors --------------------------------------------------------------------------------- */

static void add_error(struct cs_field_errors *errs, const char *prefix, const char *key,
                      const char *message) {
  if (errs->n < CS_MAX_FIELD_ERRORS) {
    struct cs_field_error *e = &errs->e[errs->n];
    char field[sizeof(e->field) + 16];
    snprintf(field, sizeof(field), "%s%.*s", prefix, (int)sizeof(e->field), key);
    csr_copy_utf8(e->field, sizeof(e->field), field);
    csr_copy_utf8(e->message, sizeof(e->message), message);
  }
  errs->n++;
}

static int parse_error(struct cs_field_errors *errs, const char *reason) {
  errs->n = 0;
  add_error(errs, "", "", reason);
  return CSR_EPARSE;
}

/* ---- parsing -------------------------------------------------------------------------------- */

struct walk {
  struct cs_customer *c;
  struct cs_field_errors *errs;
};

static char **text_slot(struct cs_customer *c, const struct rule *r) {
  return (char **)(void *)((char *)c + r->offset);
}

static const char *text_of(const struct cs_customer *c, const struct rule *r) {
  return *(char *const *)(const void *)((const char *)c + r->offset);
}

/* What is wrong with a string for its rule, or NULL; `buf` holds a message made for it. */
static const char *text_problem(const struct rule *r, const char *s, char *buf, size_t size) {
  if (s[0] == '\0')
    return "must not be empty (send null to leave it alone)";
  if (has_control(s))
    return "must not hold control characters";
  if (r->max > 0 && strlen(s) > r->max) {
    snprintf(buf, size, "must be at most %zu bytes", r->max);
    return buf;
  }
  return r->syntax ? r->syntax(s) : NULL;
}

static void check_object(struct walk *w, yajl_val obj, const struct rule *rules, size_t n,
                         const char *prefix);

/* Checks one non-null value against its rule and, when it passes, keeps it in the request. */
static void check_value(struct walk *w, const struct rule *r, yajl_val v, const char *prefix) {
  char buf[64];
  const char *problem = NULL;
  if (r->kind == RULE_TEXT) {
    if (!YAJL_IS_STRING(v))
      problem = "must be a string";
    else if ((problem = text_problem(r, v->u.string, buf, sizeof(buf))) == NULL)
      *text_slot(w->c, r) = v->u.string;
  } else if (r->kind == RULE_FLAG) {
    if (!YAJL_IS_TRUE(v) && !YAJL_IS_FALSE(v))
      problem = "must be true or false";
    w->c->has_opt_in = true;
    w->c->opt_in = YAJL_IS_TRUE(v);
  } else if (!YAJL_IS_OBJECT(v)) {
    problem = "must be an object";
  } else {
    check_object(w, v, ADDRESS_RULES, COUNT_OF(ADDRESS_RULES), "address.");
  }
  if (problem)
    add_error(w->errs, prefix, r->key, problem);
}

static const struct rule *find_rule(const struct rule *rules, size_t n, const char *key) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(rules[i].key, key) == 0)
      return &rules[i];
  return NULL;
}

/* Checks every member of obj against the rules; a rule's bit in `seen` marks a key met once. */
static void check_object(struct walk *w, yajl_val obj, const struct rule *rules, size_t n,
                         const char *prefix) {
  unsigned seen = 0, given = 0;
  for (size_t i = 0; i < obj->u.object.len; i++) {
    const char *key = obj->u.object.keys[i];
    yajl_val v = obj->u.object.values[i];
    const struct rule *r = find_rule(rules, n, key);
    unsigned bit = r ? 1u << (r - rules) : 0;
    if (r == NULL) {
      add_error(w->errs, prefix, key, "unknown field");
    } else if (seen & bit) {
      add_error(w->errs, prefix, key, "duplicate field");
    } else {
      seen |= bit;
      if (YAJL_IS_NULL(v))
        continue; /* null is the same as absent */
      given |= bit;
      check_value(w, r, v, prefix);
    }
  }
  for (size_t i = 0; i < n; i++)
    if (rules[i].required && !(given & (1u << i)))
      add_error(w->errs, prefix, rules[i].key, "is required");
}

/* An address object whose fields are all null (or that has none) carries nothing: absent. */
static bool address_given(const struct cs_customer *c) {
  for (size_t i = 0; i < COUNT_OF(ADDRESS_RULES); i++)
    if (text_of(c, &ADDRESS_RULES[i]) != NULL)
      return true;
  return false;
}

int cs_customer_parse(const char *body, size_t len, struct cs_customer *out,
                      struct cs_field_errors *errs) {
  memset(out, 0, sizeof(*out));
  errs->n = 0;
  const char *problem = body ? body_problem(body, len) : "no body";
  if (problem)
    return parse_error(errs, problem);
  char why[sizeof(errs->e[0].message)];
  yajl_val tree = csr_json_parse(body, len, why, sizeof(why));
  if (tree == NULL) /* "out of memory" is the one reason csr_json_parse gives that is not ours */
    return strcmp(why, "out of memory") == 0 ? UV_ENOMEM : parse_error(errs, why);
  if (!YAJL_IS_OBJECT(tree)) {
    csr_json_free(tree);
    return parse_error(errs, "the body must be a JSON object");
  }
  struct walk w = {out, errs};
  check_object(&w, tree, TOP_RULES, COUNT_OF(TOP_RULES), "");
  if (errs->n > 0) {
    csr_json_free(tree);
    memset(out, 0, sizeof(*out));
    return CSR_EINVALID;
  }
  out->has_address = address_given(out);
  out->_mem = tree;
  return 0;
}

void cs_customer_free(struct cs_customer *c) {
  if (c == NULL)
    return;
  csr_json_free(c->_mem);
  memset(c, 0, sizeof(*c));
}

/* ---- writing -------------------------------------------------------------------------------- */

/* The request's fields in table order, as cs_customer_parse takes them back. */
static void write_fields(const struct cs_customer *c, const struct rule *rules, size_t n,
                         struct csr_jw *jw) {
  for (size_t i = 0; i < n; i++) {
    const struct rule *r = &rules[i];
    if (r->kind == RULE_TEXT && text_of(c, r) != NULL) {
      csr_jw_kstr(jw, r->key, text_of(c, r));
    } else if (r->kind == RULE_FLAG && c->has_opt_in) {
      csr_jw_kbool(jw, r->key, c->opt_in);
    } else if (r->kind == RULE_ADDRESS && c->has_address) {
      csr_jw_key(jw, r->key);
      csr_jw_obj(jw);
      write_fields(c, ADDRESS_RULES, COUNT_OF(ADDRESS_RULES), jw);
      csr_jw_obj_end(jw);
    }
  }
}

int cs_customer_encode(const struct cs_customer *c, struct csr_jw *jw) {
  if (c == NULL || c->email == NULL)
    return UV_EINVAL;
  csr_jw_obj(jw);
  write_fields(c, TOP_RULES, COUNT_OF(TOP_RULES), jw);
  csr_jw_obj_end(jw);
  return 0;
}

/* ---- the Commerce Customer ------------------------------------------------------------------ */

/* Name, the display name, is "first last". A create sends it whenever a name is given. An update
 * sends it only with both names: from one of them alone it would overwrite the stored full name
 * with half of it (Commerce keeps the name parts apart). Returns whether `buf` holds one. */
static bool full_name(const struct cs_customer *c, bool create, char *buf, size_t size) {
  const char *first = c->first_name, *last = c->last_name;
  if (create ? (first == NULL && last == NULL) : (first == NULL || last == NULL))
    return false;
  snprintf(buf, size, "%s%s%s", first ? first : "", first && last ? " " : "", last ? last : "");
  return true;
}

static void kstr_given(struct csr_jw *jw, const char *key, const char *s) {
  if (s != NULL)
    csr_jw_kstr(jw, key, s);
}

/* One primary address (AddressTypeValue 0, as the FastTrack sample sends), named after the
 * customer when the body names them. */
static void write_address(const struct cs_customer *c, const char *name, struct csr_jw *jw) {
  csr_jw_key(jw, "Addresses");
  csr_jw_arr(jw);
  csr_jw_obj(jw);
  kstr_given(jw, "Name", name);
  kstr_given(jw, "Street", c->address.street);
  kstr_given(jw, "City", c->address.city);
  kstr_given(jw, "State", c->address.state);
  kstr_given(jw, "ZipCode", c->address.zip);
  kstr_given(jw, "ThreeLetterISORegionName", c->address.country);
  csr_jw_kbool(jw, "IsPrimary", true);
  csr_jw_kint(jw, "AddressTypeValue", 0);
  csr_jw_obj_end(jw);
  csr_jw_arr_end(jw);
}

/* optIn rides as an extension property (dynamics-api section 5: not a Customer property). */
static void write_extensions(const struct cs_customer *c, struct csr_jw *jw) {
  csr_jw_key(jw, "ExtensionProperties");
  csr_jw_arr(jw);
  if (c->has_opt_in) {
    csr_jw_obj(jw);
    csr_jw_kstr(jw, "Key", "EmailOptIn");
    csr_jw_key(jw, "Value");
    csr_jw_obj(jw);
    csr_jw_kbool(jw, "BooleanValue", c->opt_in);
    csr_jw_obj_end(jw);
    csr_jw_obj_end(jw);
  }
  csr_jw_arr_end(jw);
}

/* A create sets ReceiptEmail to the email (Commerce's default for a new customer); an update
 * leaves it alone, since the customer may have chosen another receipt address since. A create
 * always carries ExtensionProperties (as the samples do), an update only for optIn. */
int cs_customer_commerce_body(const struct cs_customer *c, bool create, const char *account,
                              struct csr_jw *jw) {
  char name[FULL_NAME_MAX];
  if (c == NULL || c->email == NULL || (!create && (account == NULL || account[0] == '\0')))
    return UV_EINVAL;
  bool named = full_name(c, create, name, sizeof(name));
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "AccountNumber", create ? "" : account);
  if (create)
    csr_jw_kint(jw, "CustomerTypeValue", 1); /* a person */
  csr_jw_kstr(jw, "Email", c->email);
  if (create)
    csr_jw_kstr(jw, "ReceiptEmail", c->email);
  kstr_given(jw, "FirstName", c->first_name);
  kstr_given(jw, "LastName", c->last_name);
  kstr_given(jw, "Name", named ? name : NULL);
  kstr_given(jw, "Phone", c->phone);
  kstr_given(jw, "Language", c->language);
  kstr_given(jw, "CurrencyCode", c->currency);
  kstr_given(jw, "CustomerGroup", c->customer_group);
  if (c->has_address)
    write_address(c, named ? name : NULL, jw);
  if (create || c->has_opt_in)
    write_extensions(c, jw);
  csr_jw_obj_end(jw);
  return 0;
}

int cs_email_key(const char *email, char *buf, size_t size) {
  size_t n = email ? strlen(email) : 0;
  if (email == NULL)
    return UV_EINVAL;
  if (n >= size)
    return UV_ENOBUFS;
  for (size_t i = 0; i <= n; i++)
    buf[i] = email[i] >= 'A' && email[i] <= 'Z' ? (char)(email[i] - 'A' + 'a') : email[i];
  return 0;
}
