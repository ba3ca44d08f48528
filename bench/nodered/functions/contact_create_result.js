// The new contact's id (from the representation, else from OData-EntityId) is cached and releases
// the events waiting for it.
const b = global.get('bench');
const verdict = b.check(msg, flow, 'dataverse');
const key = msg.email.toLowerCase();
if (verdict !== 'ok') {
  const retry = b.retryOrDrop(node, msg, verdict, 'contact-create');
  if (!retry) flow.get('contactPending').delete(key);
  return [null, retry];
}
let id = msg.payload && msg.payload.contactid;
if (!id) {
  const m = /contacts\(([^)]+)\)/.exec((msg.headers && msg.headers['odata-entityid']) || '');
  id = m && m[1];
}
flow.get('contacts').set(key, id);
const waiting = flow.get('contactPending').get(key) || [];
flow.get('contactPending').delete(key);
for (const m of waiting) m.contactId = id;
msg.contactId = id;
msg.attempt = 0;
return [[msg].concat(waiting), null];
