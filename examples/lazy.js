// Keeps the application out of the master. The master runs this file only to
// learn the addresses, so it requires nothing but handover; each worker loads
// ./lazy-app.js (and everything that requires: a framework, an ORM, templates)
// when it starts serving, and again from disk at each reload.
//   node examples/lazy.js        then  kill -HUP <pid>
const { Server } = require('handover');

const server = new Server({ workers: Number(process.env.WORKERS || 2) });
server.register(process.env.ADDRESS || '127.0.0.1:9226', require.resolve('./lazy-app'));
server.on('ready', ({ addresses }) => console.log(`serving on ${addresses.join(', ')}`));
server.on('reloaded', ({ generation, durationMs }) => console.log(`generation ${generation} ready in ${Math.round(durationMs)} ms`));
server.run();
