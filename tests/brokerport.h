/* Loopback ports for the tests' mosquitto brokers, which a test may stop and start again on the
 * same port, and for "nothing listens here". */
#ifndef CSR_TESTS_BROKERPORT_H
#define CSR_TESTS_BROKERPORT_H

#include <stdbool.h>

/* Whether 127.0.0.1:port can be bound now. */
bool tp_port_free(int port);

/* Whether something accepts connections on 127.0.0.1:port now. */
bool tp_port_accepts(int port);

/* A port the kernel hands out as free right now (bound to port 0, then closed); -1 on failure. */
int tp_free_port(void);

/*
 * A free port below the kernel's ephemeral range (ip_local_port_range), so that while the broker
 * is down no listener bound to port 0 and no outgoing connection of a test running alongside can
 * take it. Seen once under ASan with a port from that range: the restarted mosquitto found its
 * port taken, and the port still accepted connections. An ephemeral port when there is no room
 * below the range.
 */
int tp_broker_port(void);

#endif
