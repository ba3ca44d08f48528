// The routes of csusim --print-config: a Checkout needs its order (then its customer), an
// AddCartLines its customer; an event of a guest has no customer to fetch.
if (msg.event.EventType === 'Checkout') return [msg, null, null];
return msg.event.EventCustomerId ? [null, msg, null] : [null, null, msg];
