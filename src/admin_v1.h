/* The admin API's pipeline routes (admin_v1.c): status, events, dead letters. */
#ifndef CSURELAY_ADMIN_V1_H
#define CSURELAY_ADMIN_V1_H

#include "admin.h"
#include "relay.h"

struct csr_admin_v1 {
  struct csr_admin *admin;
  struct csr_relay **relay; /* the running relay, NULL between two (main.c swaps it on reload) */
};

/** Adds the routes to a started admin server. */
CSR_NODISCARD int csr_admin_v1_start(struct csr_admin_v1 *v, struct csr_admin *admin,
                                     struct csr_relay **relay);

#endif
