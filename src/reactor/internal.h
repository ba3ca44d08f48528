/* Declarations shared between the reactor's files, not part of the public API. */
#ifndef CSURELAY_REACTOR_INTERNAL_H
#define CSURELAY_REACTOR_INTERNAL_H

#include "csurelay/reactor.h"

/* Runs every future queued on the ready list (including ones queued while draining). */
void rx__fut_drain(struct rx_loop *loop);

#endif
