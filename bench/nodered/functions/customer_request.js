// GET .../Customers('{id}'), unless flow context holds it from the last five minutes.
const b = global.get('bench');
const id = msg.event.EventCustomerId || (msg.order && msg.order.CustomerId);
const key = msg.csu + '|' + id;
const hit = flow.get('customers').get(key);
if (hit && Date.now() - hit.at < b.customerTtlMs) {
  msg.customer = hit.doc;
  msg.customerText = hit.text;
  return [null, msg, null];
}
const tok = b.token(flow, 'commerce');
if (!tok) return [null, null, b.wait(msg, 'customer')];
msg.customerKey = key;
msg.method = 'GET';
msg.url = `${b.base}/csu${msg.csu}/Commerce/Customers('${encodeURIComponent(id.replace(/'/g, "''"))}')?api-version=7.3`;
msg.headers = { OUN: b.oun(msg.csu), Authorization: 'Bearer ' + tok };
msg.payload = null;
return [msg, null, null];
