// Helpers shared by the function nodes of the Node-RED peer (bench/nodered/flows.json), handed to
// them through settings.js functionGlobalContext as global.get('bench'): what a Node-RED user puts
// in a small module rather than copying into every function node. Run-time values come from the
// environment bench/run sets (the csusim base URL, the CSU count, the sinks, the start instant).
'use strict';

const env = (name, def) => (process.env[name] !== undefined ? process.env[name] : def);

const base = env('BENCH_BASE', 'http://127.0.0.1:8080');
const csus = Number(env('BENCH_CSUS', '1'));
const sinks = env('BENCH_SINKS', 'cij,webhook,mqtt').split(',').filter(Boolean);
const types = sinks.some((s) => s !== 'cij') ? ['Checkout', 'AddCartLines'] : ['Checkout'];
const startMs = Number(env('BENCH_START_MS', String(Date.now() - 1000)));
const overlapMs = 1000 * Number(env('BENCH_OVERLAP_S', '3'));
const secret = env('BENCH_CLIENT_SECRET', 'csusim-secret');
const pageSize = 250;
const maxAttempts = 10; // as the relay's retry.max_attempts default (Service Bus MaxDeliveryCount)
const seenHorizonMs = 120 * 1000; // ids re-read by the overlap are a few seconds old at most
const customerTtlMs = 300 * 1000;
const trigger = 'msdynmkt_csucheckouteventtrigger_144841371';
const scopes = { commerce: 'api://commerce/.default', dataverse: 'api://dataverse/.default' };

// csusim's CSU i has OUN "128 + i" (bench/csusim/sim.h).
const oun = (csu) => String(128 + csu);

// Search takes DateTimes; the server truncates them to whole seconds anyway.
const iso = (ms) => new Date(ms).toISOString();

// The relay's event id (SPEC section 3), so the ledger and the MQTT recorder match the peer's
// deliveries exactly as they match the relay's.
const eventId = (csu, row) =>
  `csu${csu}|${row.EventDataAreaId}|${row.EventType}|${row.EventTransactionId}|${row.EventDateTime}`;

// A number member's text as the server wrote it (JSON.parse would turn 184.2200000000000000 into
// 184.22; the trigger must carry the digits as received, SPEC section 4).
function rawNumber(text, key) {
  const m = new RegExp(`"${key}"\\s*:\\s*(-?[0-9][0-9.eE+-]*)`).exec(text);
  return m ? m[1] : 'null';
}

function tokenRequest(identity) {
  const form = new URLSearchParams({
    client_id: 'csurelay',
    client_secret: secret,
    scope: scopes[identity],
    grant_type: 'client_credentials',
  });
  return {
    identity,
    method: 'POST',
    url: `${base}/csusim.onmicrosoft.com/oauth2/v2.0/token`,
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    payload: form.toString(),
  };
}

// The cached token of an identity, or null while none is there yet.
function token(flow, identity) {
  const t = flow.get('token_' + identity);
  return t ? t.value : null;
}

// A message that waits for a token: the retry loop brings it back to its stage in 200 ms.
function wait(msg, stage) {
  msg.target = 'stage:' + stage;
  msg.delay = 200;
  return msg;
}

// How an HTTP answer goes on: 'ok' (2xx), 'retry' (transport error, 401, 408, 429, 5xx) or
// 'fail'. A 401 drops the cached token; retryOrDrop asks for a new one.
function check(msg, flow, identity) {
  const s = msg.statusCode;
  if (typeof s === 'number' && s >= 200 && s < 300) return 'ok';
  if (s === 401) {
    flow.set('token_' + identity, null);
    msg.refresh = identity;
    return 'retry';
  }
  if (typeof s !== 'number' || s === 408 || s === 429 || s >= 500) return 'retry';
  return 'fail';
}

// The message for the retry output after a failed call at `stage`: exponential backoff with full
// jitter (1 s base, 30 s cap, Retry-After honoured), at most maxAttempts; null (dropped, logged)
// after that or on a permanent error. A 401 also sends a token refresh.
function retryOrDrop(node, msg, verdict, stage) {
  msg.attempt = (msg.attempt || 0) + 1;
  if (verdict !== 'retry' || msg.attempt >= maxAttempts) {
    node.error(`${stage}: HTTP ${msg.statusCode} after ${msg.attempt} attempt(s), dropped ${msg.eventId || ''}`);
    return null;
  }
  const after = Number(msg.headers && msg.headers['retry-after']) * 1000;
  const backoff = Math.random() * Math.min(30000, 1000 * 2 ** (msg.attempt - 1));
  msg.delay = Math.max(after || 0, backoff);
  msg.target = 'stage:' + stage;
  const out = [msg];
  if (msg.refresh) {
    out.push({ identity: msg.refresh, target: 'stage:tokens', delay: 0 });
    delete msg.refresh;
  }
  return out;
}

// Forgets ids older than the horizon, at most once every 10 s.
function pruneSeen(flow, seen) {
  const now = Date.now();
  if (now - (flow.get('seenPruned') || 0) < 10000) return;
  flow.set('seenPruned', now);
  for (const [id, at] of seen) {
    if (now - at < seenHorizonMs) break; // a Map iterates in insertion order: the rest is newer
    seen.delete(id);
  }
}

module.exports = {
  base, csus, sinks, types, startMs, overlapMs, pageSize, maxAttempts, customerTtlMs, trigger,
  oun, iso, eventId, rawNumber, tokenRequest, token, wait, check, retryOrDrop, pruneSeen,
};
