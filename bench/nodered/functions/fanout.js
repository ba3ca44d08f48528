// One message per sink of the run: the Journeys trigger for a Checkout, and the body of SPEC
// section 4 (EventId, EventDetails = the Search row, OrderDetails and CustomerDetails as received)
// for the webhook and for MQTT (topic commerce/{csu}/{channel}/{type}, QoS 1).
const b = global.get('bench');
const body = '{"EventId":' + JSON.stringify(msg.eventId) + ',"EventDetails":' + JSON.stringify(msg.event) +
  ',"OrderDetails":' + (msg.orderText || 'null') + ',"CustomerDetails":' + (msg.customerText || 'null') + '}';
const e = msg.event;
const cij = b.sinks.includes('cij') && e.EventType === 'Checkout'
  ? { eventId: msg.eventId, event: e, order: msg.order, amountText: msg.amountText, customer: msg.customer, attempt: 0 }
  : null;
const hook = b.sinks.includes('webhook') ? { eventId: msg.eventId, body, attempt: 0 } : null;
const mqtt = b.sinks.includes('mqtt')
  ? { topic: `commerce/csu${msg.csu}/${e.EventChannelId}/${e.EventType}`, qos: 1, retain: false, payload: body }
  : null;
return [cij, hook, mqtt];
