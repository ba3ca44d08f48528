// POST .../CommerceEventsController/Search for one page of one poll.
const b = global.get('bench');
const tok = b.token(flow, 'commerce');
if (!tok) return [null, b.wait(msg, 'search')];
const p = msg.poll;
msg.method = 'POST';
msg.url = `${b.base}/csu${p.csu}/Commerce/CommerceEventsController/Search` +
  `?$top=${b.pageSize}&$skip=${p.skip}&$count=true&api-version=7.3`;
msg.headers = { OUN: b.oun(p.csu), Authorization: 'Bearer ' + tok, 'Content-Type': 'application/json' };
msg.payload = {
  commerceEventSearchCriteria: { EventType: p.type, EventDateTimeFrom: b.iso(p.from), EventDateTimeTo: b.iso(p.to) },
};
return [msg, null];
