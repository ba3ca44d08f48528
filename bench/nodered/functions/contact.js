// The contact of the order's email (ReceiptEmail, else the customer's Email; none: no trigger):
// from flow context, else one lookup per email at a time (events of the same email wait for it,
// so two never create two contacts).
const email = ((msg.order.ReceiptEmail || '').trim() || ((msg.customer && msg.customer.Email) || '').trim());
if (!email) return [null, null];
msg.email = email;
const id = flow.get('contacts').get(email.toLowerCase());
if (id) {
  msg.contactId = id;
  return [msg, null];
}
const pending = flow.get('contactPending');
const key = email.toLowerCase();
if (pending.has(key)) {
  pending.get(key).push(msg);
  return [null, null];
}
pending.set(key, []);
return [null, msg];
