// A Search page: its rows go to split; a full page asks for the next one; the last page advances
// the cursor and frees the (CSU, type) for the next tick. A failed page is retried; one that keeps
// failing ends the poll without moving the cursor (the next tick searches the window again).
const b = global.get('bench');
const p = msg.poll;
const verdict = b.check(msg, flow, 'commerce');
const done = (advance) => {
  if (advance) flow.get('cursors').set(p.key, p.to);
  flow.get('busy').delete(p.key);
};
if (verdict !== 'ok') {
  msg.attempt = p.attempt;
  const retry = b.retryOrDrop(node, msg, verdict, 'search');
  if (retry) p.attempt = msg.attempt;
  else done(false);
  return [null, null, retry];
}
const rows = (msg.payload && msg.payload.value) || [];
let next = null;
if (rows.length === b.pageSize) next = { poll: Object.assign({}, p, { skip: p.skip + b.pageSize, attempt: 0 }) };
else done(true);
return [rows.length ? { poll: p, payload: rows } : null, next, null];
