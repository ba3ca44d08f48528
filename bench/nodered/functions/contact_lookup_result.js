// A contact found is cached and releases the events waiting for it; none found: create one.
const b = global.get('bench');
const verdict = b.check(msg, flow, 'dataverse');
const key = msg.email.toLowerCase();
if (verdict !== 'ok') {
  const retry = b.retryOrDrop(node, msg, verdict, 'contact-lookup');
  if (!retry) flow.get('contactPending').delete(key); // the waiting events are dropped with it
  return [null, null, retry];
}
const found = msg.payload && msg.payload.value && msg.payload.value[0];
msg.attempt = 0;
if (!found) return [null, msg, null];
flow.get('contacts').set(key, found.contactid);
const waiting = flow.get('contactPending').get(key) || [];
flow.get('contactPending').delete(key);
for (const m of waiting) m.contactId = found.contactid;
msg.contactId = found.contactid;
return [[msg].concat(waiting), null, null];
