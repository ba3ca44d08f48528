// GET .../contacts?$select=contactid&$filter=emailaddress1 eq '...'&$top=1 (exact match).
const b = global.get('bench');
const tok = b.token(flow, 'dataverse');
if (!tok) return [null, b.wait(msg, 'contact-lookup')];
const filter = `emailaddress1 eq '${msg.email.replace(/'/g, "''")}'`;
msg.method = 'GET';
msg.url = `${b.base}/dataverse/api/data/v9.2/contacts?$select=contactid&$filter=${encodeURIComponent(filter)}&$top=1`;
msg.headers = { Authorization: 'Bearer ' + tok, Accept: 'application/json', 'OData-Version': '4.0' };
msg.payload = null;
return [msg, null];
