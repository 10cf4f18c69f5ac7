// The hello app under handover. ADDRESS (default 127.0.0.1:0), WORKERS (default 1),
// KEEPALIVE_MS (the http server's keepAliveTimeout; Node's 5000 by default),
// ROLLOUT (parallel or phased), MAX_MEMORY (bytes; recycle a worker above it),
// NO_MIGRATE (migrate: false: keep-alive connections drain instead of moving).
// METRICS (an address for the master's /metrics).
// BENCH_HANDOVER: the handover package to load (a directory; default the one
// this repository builds), so a run can measure another checkout's code.
// FAULT_DIR: fault injection (apps/fault.js). MEMORY_FILE: memory probe (apps/memory.js).
// APP_MODULE: the handler's module instead of ./handler (the memory scenario's
// heavy app); with APP_LAZY=1 it is registered as a module path, so only the
// workers load it (README, "Keeping the application out of the master").
require('./fault')(process.env.HANDOVER_SLOT); // before handover takes HANDOVER_* out of process.env
const http = require('node:http');
const { listenAndServe, isMaster } = require(process.env.BENCH_HANDOVER || 'handover');
const appModule = process.env.APP_MODULE || require.resolve('./handler');
const hello = process.env.APP_LAZY === '1' ? appModule : require(appModule);

if (process.env.MEMORY_FILE && isMaster()) require('./memory')(process.env.MEMORY_FILE);
let handler = hello;
if (process.env.KEEPALIVE_MS) {
  handler = http.createServer(hello);
  handler.keepAliveTimeout = Number(process.env.KEEPALIVE_MS);
}
const options = { workers: Number(process.env.WORKERS || 1) };
if (process.env.ROLLOUT) options.rollout = process.env.ROLLOUT;
if (process.env.MAX_MEMORY) options.maxMemory = Number(process.env.MAX_MEMORY);
if (process.env.NO_MIGRATE) options.migrate = false;
if (process.env.METRICS) options.metrics = process.env.METRICS;
listenAndServe(process.env.ADDRESS || '127.0.0.1:0', handler, options);
