/* Custom-trigger actions for csusim's Dataverse: the registry of unbound actions with their
 * declared parameters (customapirequestparameter, dynamics-api.md section 4.2), the checks of a
 * call's members against them, and the handler of POST /dataverse/api/data/v9.2/{action}
 * (commerce-event-sample.md 6.1 declares the default, SIM_DEFAULT_TRIGGER). A call passes the same
 * admission as every Dataverse request (dataverse.c); one that passes validation is answered 204
 * and handed to the ledger.
 *
 * Choices where the references are silent (UNCONFIRMED there; the error codes are dataverse.c's):
 *   - The 29-attribute cap counts every member of a trigger call, system attributes included.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/timefmt.h"
#include "dataverse_internal.h"

#define NS_PREFIX "Microsoft.Dynamics.CRM."
#define MAX_ATTRS 29

/* ---------------------------------------------------------------------------------------------- */
/* Parameter validation */
/* ---------------------------------------------------------------------------------------------- */

static const char *edm_type(enum sim_param_type t) {
  static const char *const names[] = {
      [SIM_PT_BOOLEAN] = "Edm.Boolean",
      [SIM_PT_DATETIME] = "Edm.DateTimeOffset",
      [SIM_PT_DECIMAL] = "Edm.Decimal",
      [SIM_PT_ENTITY] = "mscrm.crmbaseentity",
      [SIM_PT_ENTITYCOLLECTION] = "Collection(mscrm.crmbaseentity)",
      [SIM_PT_ENTITYREFERENCE] = "mscrm.crmbaseentity",
      [SIM_PT_FLOAT] = "Edm.Double",
      [SIM_PT_INTEGER] = "Edm.Int32",
      [SIM_PT_MONEY] = "Edm.Decimal",
      [SIM_PT_PICKLIST] = "Edm.Int32",
      [SIM_PT_STRING] = "Edm.String",
      [SIM_PT_STRINGARRAY] = "Collection(Edm.String)",
      [SIM_PT_GUID] = "Edm.Guid",
  };
  return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "Edm.Untyped";
}

static bool is_int32(yajl_val v) {
  const char *t = csr_json_num_text(v);
  char *end = NULL;
  if (t == NULL || strpbrk(t, ".eE") != NULL)
    return false;
  long long n = strtoll(t, &end, 10);
  return *end == '\0' && n >= INT32_MIN && n <= INT32_MAX;
}

static bool all_of(yajl_val arr, bool (*pred)(yajl_val)) {
  for (size_t i = 0; i < csr_json_len(arr); i++)
    if (!pred(csr_json_at(arr, i)))
      return false;
  return YAJL_IS_ARRAY(arr);
}

static bool is_str(yajl_val v) {
  return YAJL_IS_STRING(v);
}

static bool is_obj(yajl_val v) {
  return YAJL_IS_OBJECT(v);
}

/* JSON encodings per type: DateTime an ISO-8601 string, Decimal/Float/Money a JSON number (a
 * numeric string is not one), Guid a string in 8-4-4-4-12 form. */
static bool value_fits(enum sim_param_type t, yajl_val v) {
  int64_t ms;
  switch (t) {
    case SIM_PT_BOOLEAN:
      return YAJL_IS_TRUE(v) || YAJL_IS_FALSE(v);
    case SIM_PT_DATETIME:
      return YAJL_IS_STRING(v) && csr_time_parse(v->u.string, &ms) == 0;
    case SIM_PT_DECIMAL:
    case SIM_PT_FLOAT:
    case SIM_PT_MONEY:
      return YAJL_IS_NUMBER(v);
    case SIM_PT_INTEGER:
    case SIM_PT_PICKLIST:
      return is_int32(v);
    case SIM_PT_STRING:
      return YAJL_IS_STRING(v);
    case SIM_PT_GUID:
      return YAJL_IS_STRING(v) && sim__dv_is_guid(v->u.string);
    case SIM_PT_STRINGARRAY:
      return all_of(v, is_str);
    case SIM_PT_ENTITYCOLLECTION:
      return all_of(v, is_obj);
    case SIM_PT_ENTITY:
    case SIM_PT_ENTITYREFERENCE:
      return YAJL_IS_OBJECT(v);
  }
  return false;
}

static const struct sim_trigger_param *param_of(const struct sim__dv_trigger *tr,
                                                const char *name) {
  for (size_t i = 0; i < tr->n; i++)
    if (strcmp(tr->params[i].name, name) == 0)
      return &tr->params[i];
  return NULL;
}

/* The members as a whole: the cap, repeats, names the action does not declare. */
static int check_members(struct sim_req *r, const struct sim__dv_trigger *tr, yajl_val body) {
  size_t n = body->u.object.len;
  const char *const *keys = body->u.object.keys;
  if (n > MAX_ATTRS) {
    char count[24];
    snprintf(count, sizeof(count), "%zu", n);
    sim__dv_fail(r, 400, DV_E_ARGUMENT,
                 "The request carries %s attributes; a custom trigger takes at most 29.", count,
                 NULL);
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; j < i; j++)
      if (strcmp(keys[i], keys[j]) == 0) {
        sim__dv_fail(r, 400, DV_E_PAYLOAD,
                     "Multiple parameters with the name '%s' were found in the request payload.",
                     keys[i], NULL);
        return -1;
      }
    if (param_of(tr, keys[i]) == NULL) {
      sim__dv_fail(
          r, 400, DV_E_PAYLOAD,
          "The parameter '%s' in the request payload is not a valid parameter for the operation "
          "'%s'.",
          keys[i], tr->name);
      return -1;
    }
  }
  return 0;
}

/* Each declared parameter: present when required, not null when required, of its type. */
static int check_params(struct sim_req *r, const struct sim__dv_trigger *tr, yajl_val body) {
  for (size_t i = 0; i < tr->n; i++) {
    const struct sim_trigger_param *p = &tr->params[i];
    yajl_val v = csr_json_get(body, p->name);
    if (v == NULL && !p->optional) {
      sim__dv_fail(r, 400, DV_E_ARGUMENT,
                   "The required parameter '%s' is missing from the request to '%s'.", p->name,
                   tr->name);
      return -1;
    }
    if (v == NULL || (YAJL_IS_NULL(v) && p->optional))
      continue;
    if (YAJL_IS_NULL(v)) {
      sim__dv_fail(r, 400, DV_E_ARGUMENT, "The required parameter '%s' cannot be null.", p->name,
                   NULL);
      return -1;
    }
    if (!value_fits(p->type, v)) {
      sim__dv_fail(r, 400, DV_E_PAYLOAD,
                   "Cannot convert the value of parameter '%s' to the expected type '%s'.", p->name,
                   edm_type(p->type));
      return -1;
    }
  }
  return 0;
}

/* The contact ids the trigger names must exist (sim_dv_limits.require_known_contact). */
static int check_contacts(struct sim_req *r, struct sim_dataverse *d, yajl_val body) {
  static const char *const refs[] = {"msdynmkt_signaluserauthid", "msdynmkt_profileid"};
  if (!sim_faults_dv(d->sim->faults)->require_known_contact)
    return 0;
  for (size_t i = 0; i < sizeof(refs) / sizeof(refs[0]); i++) {
    const char *id = csr_json_get_str(body, refs[i]);
    if (id != NULL && !sim__dv_has_contact(d, id)) {
      sim__dv_fail(r, 400, DV_E_NOTFOUND, "contact With Id = %s Does Not Exist", id, NULL);
      return -1;
    }
  }
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* The handler and the registry */
/* ---------------------------------------------------------------------------------------------- */

static const struct sim__dv_trigger *trigger_find(const struct sim_dataverse *d, const char *name) {
  if (strncmp(name, NS_PREFIX, strlen(NS_PREFIX)) == 0)
    name += strlen(NS_PREFIX);
  for (size_t i = 0; i < d->ntriggers; i++)
    if (strcmp(d->triggers[i].name, name) == 0)
      return &d->triggers[i];
  return NULL;
}

void sim__dv_on_trigger(struct sim_req *r) {
  const char *seg;
  struct sim_dataverse *d = sim__dv_admit(r, &seg);
  if (d == NULL)
    return;
  const struct sim__dv_trigger *tr = trigger_find(d, seg);
  yajl_val body = NULL;
  if (tr == NULL || strcmp(r->http->method, "POST") != 0) {
    sim__dv_fail(r, tr ? 405 : 404, DV_E_SEGMENT,
                 tr ? "The requested resource does not support http method '%s'."
                    : "Resource not found for the segment '%s'.",
                 tr ? r->http->method : seg, NULL);
    return;
  }
  if (!sim__dv_json_body(r) || (body = sim__dv_parse_body(r, tr->name)) == NULL) {
    d->stats.triggers_rejected++;
    return;
  }
  if (check_members(r, tr, body) == 0 && check_params(r, tr, body) == 0 &&
      check_contacts(r, d, body) == 0) {
    d->stats.triggers_accepted++;
    sim_ledger_trigger(d->sim->ledger, tr->name, body, rx_wall_ms());
    sim_reply(r, 204, DV_ODATA_HDRS, NULL, NULL, 0);
  } else {
    d->stats.triggers_rejected++;
  }
  csr_json_free(body);
}

/* commerce-event-sample.md 6.1, in its order. */
static const struct sim_trigger_param checkout_params[] = {
    {"msdynmkt_amountpaid", SIM_PT_DECIMAL, false},
    {"msdynmkt_bindingid", SIM_PT_STRING, true},
    {"msdynmkt_channelreferenceid", SIM_PT_STRING, false},
    {"msdynmkt_createddatetime", SIM_PT_STRING, false},
    {"msdynmkt_currencycode", SIM_PT_STRING, false},
    {"msdynmkt_name", SIM_PT_STRING, false},
    {"msdynmkt_profileid", SIM_PT_STRING, false},
    {"msdynmkt_receiptemail", SIM_PT_STRING, false},
    {"msdynmkt_salesid", SIM_PT_STRING, false},
    {"msdynmkt_signalingestiontimestamp", SIM_PT_DATETIME, false},
    {"msdynmkt_signaltimestamp", SIM_PT_DATETIME, false},
    {"msdynmkt_signaluserauthid", SIM_PT_STRING, false},
};

static void trigger_free(struct sim__dv_trigger *tr) {
  for (size_t i = 0; i < tr->n; i++)
    free((char *)tr->params[i].name);
  free(tr->params);
  free(tr->name);
}

int sim_dataverse_register_trigger(struct sim_dataverse *d, const char *name,
                                   const struct sim_trigger_param *params, size_t n) {
  if (d == NULL || name == NULL || name[0] == '\0' || strchr(name, '/') || (n && !params))
    return -EINVAL;
  if (n > MAX_ATTRS)
    return -E2BIG;
  struct sim__dv_trigger tr = {.name = strdup(name), .params = calloc(n ? n : 1, sizeof(*params))};
  bool oom = tr.name == NULL || tr.params == NULL;
  tr.n = tr.params != NULL ? n : 0;
  for (size_t i = 0; i < n && !oom; i++) {
    tr.params[i] = params[i];
    oom = (tr.params[i].name = strdup(params[i].name)) == NULL;
  }
  struct sim__dv_trigger *slot = (struct sim__dv_trigger *)trigger_find(d, name);
  struct sim__dv_trigger *grown =
      slot || oom ? NULL : realloc(d->triggers, (d->ntriggers + 1) * sizeof(tr));
  if (oom || (slot == NULL && grown == NULL)) {
    trigger_free(&tr);
    return -ENOMEM;
  }
  if (slot != NULL) {
    trigger_free(slot); /* registering a name again replaces its parameter list */
  } else {
    d->triggers = grown;
    slot = &d->triggers[d->ntriggers++];
  }
  *slot = tr;
  return 0;
}

int sim__dv_triggers_init(struct sim_dataverse *d) {
  return sim_dataverse_register_trigger(d, SIM_DEFAULT_TRIGGER, checkout_params,
                                        sizeof(checkout_params) / sizeof(checkout_params[0]));
}

void sim__dv_triggers_free(struct sim_dataverse *d) {
  for (size_t i = 0; i < d->ntriggers; i++)
    trigger_free(&d->triggers[i]);
  free(d->triggers);
  d->triggers = NULL;
  d->ntriggers = 0;
}
