// Keeps the token in flow context; a failed request is tried again in 1 s.
const pending = flow.get('tokenPending') || {};
pending[msg.identity] = false;
if (msg.statusCode === 200 && msg.payload && msg.payload.access_token) {
  flow.set('token_' + msg.identity, { value: msg.payload.access_token });
  return null;
}
node.warn(`token ${msg.identity}: HTTP ${msg.statusCode}`);
return { identity: msg.identity, target: 'stage:tokens', delay: 1000 };
