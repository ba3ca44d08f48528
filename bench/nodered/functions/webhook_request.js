// POST the body to the audit webhook, keyed by the event id.
const b = global.get('bench');
msg.method = 'POST';
msg.url = `${b.base}/hooks/audit`;
msg.headers = { 'Content-Type': 'application/json', 'Idempotency-Key': msg.eventId };
msg.payload = msg.body;
return msg;
