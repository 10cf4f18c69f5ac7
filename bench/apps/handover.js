// The hello app under handover. ADDRESS (default 127.0.0.1:0), WORKERS (default 1),
// KEEPALIVE_MS (the http server's keepAliveTimeout; Node's 5000 by default).
const http = require('node:http');
const { listenAndServe } = require('handover');
const hello = require('./handler');

let handler = hello;
if (process.env.KEEPALIVE_MS) {
  handler = http.createServer(hello);
  handler.keepAliveTimeout = Number(process.env.KEEPALIVE_MS);
}
listenAndServe(process.env.ADDRESS || '127.0.0.1:0', handler, { workers: Number(process.env.WORKERS || 1) });
