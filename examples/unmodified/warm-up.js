// A program that must warm up before it takes traffic: run it with
// --wait-ready and call ready() from start-up code once warm (listen
// callbacks run after ready(), so not from there).
//   npx handover start --wait-ready examples/unmodified/warm-up.js
const http = require('node:http');
const { ready } = require('handover');

const cache = new Map();
http.createServer((req, res) => res.end(`${cache.size} entries warm\n`)).listen(3002);

setTimeout(() => {
  for (let i = 0; i < 1000; i++) cache.set(i, i * i);
  ready();
}, 500);
