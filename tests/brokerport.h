/* A loopback port for a test's mosquitto, which the test may stop and start again on that port. */
#ifndef CSR_TESTS_BROKERPORT_H
#define CSR_TESTS_BROKERPORT_H

#include <stdbool.h>

/* Whether 127.0.0.1:port can be bound now. */
bool tp_port_free(int port);

/*
 * A free port below the kernel's ephemeral range (ip_local_port_range), so that while the broker
 * is down no listener bound to port 0 and no outgoing connection of a test running alongside can
 * take it. Seen once under ASan with a port from that range: the restarted mosquitto found its
 * port taken, and the port still accepted connections. An ephemeral port when there is no room
 * below the range.
 */
int tp_broker_port(void);

#endif
