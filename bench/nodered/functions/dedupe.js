// Drops the rows already seen (the overlap re-reads them), by the relay's event id, kept in flow
// context for two minutes.
const b = global.get('bench');
const seen = flow.get('seen');
const id = b.eventId(msg.poll.csu, msg.payload);
if (seen.has(id)) return null;
seen.set(id, Date.now());
b.pruneSeen(flow, seen);
return { eventId: id, csu: msg.poll.csu, event: msg.payload, attempt: 0 };
