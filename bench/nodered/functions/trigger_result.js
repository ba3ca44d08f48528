// 2xx (204) delivers; anything else is retried or dropped.
const b = global.get('bench');
const verdict = b.check(msg, flow, 'dataverse');
return verdict === 'ok' ? null : b.retryOrDrop(node, msg, verdict, 'trigger');
