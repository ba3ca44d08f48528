// Node-RED settings for the bench peer (bench/run --peer): headless (no editor, no HTTP server),
// the flow and user directory from the environment bench/run sets, the helpers of lib.js for the
// function nodes, in-memory context, and nothing that reaches outside the machine.
'use strict';
module.exports = {
  flowFile: process.env.BENCH_FLOW_FILE || 'flows.json',
  userDir: process.env.BENCH_USER_DIR,
  flowFilePretty: false,
  credentialSecret: false,
  httpAdminRoot: false, // no editor, no admin API
  httpNodeRoot: false, // no http in nodes: headless mode, no listening socket at all
  httpRequestTimeout: 10000, // as the relay's limits.http_timeout_ms
  logging: { console: { level: process.env.BENCH_NR_LOG || 'info', metrics: false, audit: false } },
  functionGlobalContext: { bench: require('./lib.js') },
  functionExternalModules: false,
  contextStorage: { default: { module: 'memory' } },
  externalModules: { autoInstall: false, palette: { allowInstall: false }, modules: { allowInstall: false } },
  diagnostics: { enabled: false, ui: false },
  runtimeState: { enabled: false, ui: false },
  telemetry: { enabled: false, updateNotification: false },
};
