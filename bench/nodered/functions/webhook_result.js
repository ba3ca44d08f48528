// 2xx delivers; anything else is retried or dropped.
const b = global.get('bench');
const verdict = b.check(msg, flow, 'none');
return verdict === 'ok' ? null : b.retryOrDrop(node, msg, verdict, 'webhook');
