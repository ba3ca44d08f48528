// Keeps the order (its text, to forward it as received, and the parsed object), then the customer
// if the event or the order names one.
const b = global.get('bench');
const verdict = b.check(msg, flow, 'commerce');
if (verdict !== 'ok') return [null, null, b.retryOrDrop(node, msg, verdict, 'order')];
msg.orderText = msg.payload;
msg.order = JSON.parse(msg.payload);
msg.amountText = b.rawNumber(msg.payload, 'AmountPaid');
msg.payload = null;
msg.attempt = 0;
const customer = msg.event.EventCustomerId || msg.order.CustomerId;
return customer ? [msg, null, null] : [null, msg, null];
