// Keeps the customer (cached); a customer that does not exist leaves CustomerDetails null.
const b = global.get('bench');
const verdict = b.check(msg, flow, 'commerce');
if (verdict === 'fail' && msg.statusCode === 404) {
  msg.customer = null;
} else if (verdict !== 'ok') {
  return [null, b.retryOrDrop(node, msg, verdict, 'customer')];
} else {
  msg.customerText = msg.payload;
  msg.customer = JSON.parse(msg.payload);
  flow.get('customers').set(msg.customerKey, { at: Date.now(), doc: msg.customer, text: msg.customerText });
}
msg.payload = null;
msg.attempt = 0;
return [msg, null];
