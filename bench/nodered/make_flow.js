#!/usr/bin/env node
// Writes bench/nodered/flows.json, the Node-RED peer's flow, from the function bodies in
// functions/*.js (kept as files so they can be read and reviewed as code). The flow has no
// run-time values in it: the CSU URLs, counts, ports and poll schedule come from the environment
// bench/run sets (${BENCH_...} in node properties, env via lib.js in the functions).
//
//   node bench/nodered/make_flow.js          rewrites flows.json
//   node bench/nodered/make_flow.js --check  exits 1 when flows.json is not what it would write
//
// The flow does the sample's job (commerce-event-sample.md section 3) as a Node-RED user would
// build and tune it: cron inject per poll interval -> plan one Search per (CSU, type) -> token
// from flow context -> POST Search with paging -> split -> dedupe -> order and customer GETs
// (customers cached) -> contact lookup or create (cached, single-flight per email) -> POST the
// Journeys trigger; the webhook POST and an mqtt out (QoS 1) with the same topic scheme as the
// relay. Every http request node keeps connections alive; failed calls go through one retry loop
// (a delay node with msg.delay, then a switch on msg.target back to the stage).
'use strict';
const fs = require('fs');
const path = require('path');

const dir = __dirname;
const TAB = 'bench-tab';
const nodes = [];
let row = 0;

// Every function node creates the flow-context collections it may touch, whichever starts first.
const INIT = `for (const k of ['cursors', 'seen', 'customers', 'contacts', 'contactPending']) {
  if (!flow.get(k)) flow.set(k, new Map());
}
if (!flow.get('busy')) flow.set('busy', new Set());`;

// Flow nodes get the tab and a place on it; the tab and config nodes get neither (Node-RED takes a
// node with x and y for a flow node).
function add(node, col) {
  if (node.type !== 'tab' && node.type !== 'mqtt-broker') {
    node.z = TAB;
    node.x = 150 + 220 * (col || 0);
    node.y = 40 + 60 * row;
  }
  nodes.push(node);
  return node;
}

function fn(id, file, outputs, wires, col) {
  return add({
    id, type: 'function', name: file.replace(/\.js$/, '').replace(/_/g, ' '),
    func: fs.readFileSync(path.join(dir, 'functions', file), 'utf8'),
    outputs, timeout: 0, noerr: 0, initialize: INIT, finalize: '', libs: [], wires,
  }, col);
}

function http(id, name, ret, next, col) {
  return add({
    id, type: 'http request', name, method: 'use', ret, paytoqs: 'ignore', url: '', tls: '',
    persist: true, proxy: '', insecureHTTPParser: false, authType: '', senderr: false, headers: [],
    wires: [[next]],
  }, col);
}

// The stages a failed call goes back to after its wait (msg.target), in the retry switch's order.
const STAGES = ['tokens', 'search', 'order', 'customer', 'contact-lookup', 'contact-create', 'trigger', 'webhook'];

// One stage: build request (outputs: request, wait for token) -> http -> result.
function stage(name, ret, resultOutputs, resultWires, opts = {}) {
  row++;
  const reqWires = opts.noToken ? [['http-' + name]] : [['http-' + name], ['retry']];
  fn('req-' + name, name.replace(/-/g, '_') + '_request.js', reqWires.length, reqWires, 1);
  http('http-' + name, name, ret, 'res-' + name, 2);
  fn('res-' + name, opts.result || name.replace(/-/g, '_') + '_result.js', resultOutputs, resultWires, 3);
}

add({ id: TAB, type: 'tab', label: 'csurelay peer: CSU events', disabled: false, info: 'bench/nodered (issue 7)' });
add({
  id: 'broker', type: 'mqtt-broker', name: 'bench broker', broker: '${BENCH_MQTT_HOST}', port: '${BENCH_MQTT_PORT}',
  clientid: 'nodered-bench', autoConnect: true, usetls: false, protocolVersion: '4', keepalive: '60',
  cleansession: true, autoUnsubscribe: true, birthTopic: '', closeTopic: '', willTopic: '', sessionExpiry: '',
});

// Tokens: at start and every 50 min, or on a 401 (the retry switch's stage:tokens).
add({
  id: 'tokens-tick', type: 'inject', name: 'tokens: at start, every 50 min', props: [], repeat: '3000',
  crontab: '', once: true, onceDelay: 0.1, topic: '', wires: [['req-tokens']],
});
fn('req-tokens', 'token_requests.js', 1, [['http-tokens']], 1);
http('http-tokens', 'token', 'obj', 'res-tokens', 2);
fn('res-tokens', 'token_cache.js', 1, [['retry']], 3);

// Polling: a cron inject (whole seconds, like the relay's polls just past each second) plans one
// Search per (CSU, type).
row++;
add({
  id: 'poll-tick', type: 'inject', name: 'poll tick', props: [], repeat: '', crontab: '${BENCH_POLL_CRON}',
  once: false, onceDelay: 0.1, topic: '', wires: [['plan']],
});
fn('plan', 'poll_plan.js', 1, [['req-search']], 1);
stage('search', 'obj', 3, [['split'], ['req-search'], ['retry']], { result: 'search_page.js' });
row++;
add({ id: 'split', type: 'split', name: 'rows', splt: '\\n', spltType: 'str', arraySplt: 1, arraySpltType: 'len',
  stream: false, addname: '', property: 'payload', wires: [['dedupe']] }, 0);
fn('dedupe', 'dedupe.js', 1, [['route']], 1);
fn('route', 'route.js', 3, [['req-order'], ['req-customer'], ['fanout']], 2);

// Enrichment.
stage('order', 'txt', 3, [['req-customer'], ['fanout'], ['retry']]);
row++;
fn('req-customer', 'customer_request.js', 3, [['http-customer'], ['fanout'], ['retry']], 1);
http('http-customer', 'customer', 'txt', 'res-customer', 2);
fn('res-customer', 'customer_result.js', 2, [['fanout'], ['retry']], 3);

// Delivery.
row++;
fn('fanout', 'fanout.js', 3, [['contact'], ['req-webhook'], ['mqtt-out']], 0);
add({ id: 'mqtt-out', type: 'mqtt out', name: 'stores (QoS 1)', topic: '', qos: '1', retain: 'false',
  respTopic: '', contentType: '', userProps: '', correl: '', expiry: '', broker: 'broker', wires: [] }, 1);
row++;
fn('req-webhook', 'webhook_request.js', 1, [['http-webhook']], 1);
http('http-webhook', 'webhook', 'txt', 'res-webhook', 2);
fn('res-webhook', 'webhook_result.js', 1, [['retry']], 3);
row++;
fn('contact', 'contact.js', 2, [['req-trigger'], ['req-contact-lookup']], 0);
stage('contact-lookup', 'obj', 3, [['req-trigger'], ['req-contact-create'], ['retry']]);
stage('contact-create', 'obj', 2, [['req-trigger'], ['retry']]);
stage('trigger', 'txt', 1, [['retry']]);

// The retry loop: wait msg.delay, then back to the stage msg.target names.
row++;
add({ id: 'retry', type: 'delay', name: 'retry wait (msg.delay)', pauseType: 'delayv', timeout: '1',
  timeoutUnits: 'seconds', rate: '1', nbRateUnits: '1', rateUnits: 'second', randomFirst: '1', randomLast: '5',
  randomUnits: 'seconds', drop: false, allowrate: false, outputs: 1, wires: [['back']] }, 0);
add({ id: 'back', type: 'switch', name: 'back to msg.target', property: 'target', propertyType: 'msg',
  rules: STAGES.map((st) => ({ t: 'eq', v: 'stage:' + st, vt: 'str' })), checkall: 'false', repair: false,
  outputs: STAGES.length, wires: STAGES.map((st) => ['req-' + st]) }, 1);

const text = JSON.stringify(nodes.map((n) => JSON.parse(JSON.stringify(n))), null, 1) + '\n';
const out = path.join(dir, 'flows.json');
if (process.argv.includes('--check')) {
  const same = fs.existsSync(out) && fs.readFileSync(out, 'utf8') === text;
  if (!same) console.error('bench/nodered/flows.json is stale: run node bench/nodered/make_flow.js');
  process.exit(same ? 0 : 1);
}
fs.writeFileSync(out, text);
