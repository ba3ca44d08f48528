// POST .../api/data/v9.2/{trigger} (a Dataverse unbound action) with the sample's checkout fields;
// AmountPaid goes in as the order's own text so its digits are kept.
const b = global.get('bench');
const tok = b.token(flow, 'dataverse');
if (!tok) return [null, b.wait(msg, 'trigger')];
const o = msg.order;
const rest = {
  msdynmkt_channelreferenceid: o.ChannelReferenceId,
  msdynmkt_createddatetime: o.CreatedDateTime,
  msdynmkt_currencycode: o.CurrencyCode,
  msdynmkt_name: o.Name,
  msdynmkt_receiptemail: msg.email,
  msdynmkt_salesid: o.SalesId,
  msdynmkt_signaltimestamp: new Date(Date.parse(msg.event.EventDateTime)).toISOString(),
  msdynmkt_signalingestiontimestamp: new Date().toISOString(),
  msdynmkt_signaluserauthid: msg.contactId,
  msdynmkt_profileid: msg.contactId,
  msdynmkt_bindingid: o.InternalTransactionId,
};
msg.method = 'POST';
msg.url = `${b.base}/dataverse/api/data/v9.2/${b.trigger}`;
msg.headers = {
  Authorization: 'Bearer ' + tok, 'Content-Type': 'application/json', Accept: 'application/json', 'OData-Version': '4.0',
};
msg.payload = '{"msdynmkt_amountpaid":' + msg.amountText + ',' + JSON.stringify(rest).slice(1);
return [msg, null];
