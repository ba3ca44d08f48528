// Client-credentials token requests: both identities at start and every 50 minutes (before the
// 3599 s lifetime ends), or the one msg.identity names after a 401. One request in flight per
// identity.
const b = global.get('bench');
const ids = msg.identity ? [msg.identity] : ['commerce', 'dataverse'];
const pending = flow.get('tokenPending') || {};
const out = [];
for (const id of ids) {
  if (pending[id]) continue;
  pending[id] = true;
  out.push(b.tokenRequest(id));
}
flow.set('tokenPending', pending);
return [out];
