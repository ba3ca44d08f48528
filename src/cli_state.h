/* `csurelay state`: the durable state of a state directory, read offline (SPEC section 8). */
#ifndef CSURELAY_CLI_STATE_H
#define CSURELAY_CLI_STATE_H

/**
 * csurelay state -d DIR [--json] [--dlq] [--limit N]
 *
 * Replays {DIR}/csurelay.aof read-only (pl_store_read: it changes nothing and works beside a
 * running relay, which it reads a consistent snapshot of) and prints what it holds: the file and
 * its damage, the counts, the cursors with their lag, and the first N dead letters (default 20).
 * --dlq prints only the dead letters; --json prints the same as JSON ({"aof", "summary", "dlq"},
 * or the dlq page alone with --dlq). argv[1] is "state". Returns the exit code: 0, 1 when the
 * state cannot be read (the reason on stderr), 2 for a usage error.
 */
int csr_cmd_state(int argc, char **argv);

#endif
