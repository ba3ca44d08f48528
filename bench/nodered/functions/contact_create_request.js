// POST .../contacts with the customer's names (else the order's Name) and account number.
const b = global.get('bench');
const tok = b.token(flow, 'dataverse');
if (!tok) return [null, b.wait(msg, 'contact-create')];
const c = msg.customer || {};
let first = c.FirstName || '';
let last = c.LastName || '';
if (!first && !last) {
  const name = (msg.order.Name || '').trim();
  const sp = name.indexOf(' ');
  if (sp < 0) last = name;
  else [first, last] = [name.slice(0, sp), name.slice(sp + 1).trim()];
}
msg.method = 'POST';
msg.url = `${b.base}/dataverse/api/data/v9.2/contacts`;
msg.headers = {
  Authorization: 'Bearer ' + tok, 'Content-Type': 'application/json', Accept: 'application/json',
  'OData-Version': '4.0', Prefer: 'return=representation',
};
msg.payload = { firstname: first, lastname: last, emailaddress1: msg.email, msdyn_contactnumber: c.AccountNumber || '' };
return [msg, null];
