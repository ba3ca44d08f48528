// GET .../SalesOrders/GetSalesOrderDetailsByTransactionId(...) for a Checkout (answer kept as text).
const b = global.get('bench');
const tok = b.token(flow, 'commerce');
if (!tok) return [null, b.wait(msg, 'order')];
const p1 = "'" + msg.event.EventTransactionId.replace(/'/g, "''") + "'";
msg.method = 'GET';
msg.url = `${b.base}/csu${msg.csu}/Commerce/SalesOrders/GetSalesOrderDetailsByTransactionId` +
  `(transactionId=@p1,searchLocationValue=1)?@p1=${encodeURIComponent(p1)}&api-version=7.3`;
msg.headers = { OUN: b.oun(msg.csu), Authorization: 'Bearer ' + tok };
msg.payload = null;
return [msg, null];
