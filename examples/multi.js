// Several servers in one program, reloaded together:
//   node examples/multi.js        then  kill -HUP <pid>
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { Server, isWorker } = require('handover');

const api = (req, res) => res.end(JSON.stringify({ pid: process.pid, url: req.url }) + '\n');
const admin = http.createServer((req, res) => res.end('admin ok\n'));
const echo = net.createServer((socket) => {
  socket.pipe(socket);
  socket.on('handover:drain', () => socket.end('bye\n')); // handover asks raw sockets to finish on reload
});

if (isWorker()) {
  // heavy start-up (connection pools, caches) belongs in workers only
}

const server = new Server({ workers: Number(process.env.WORKERS || 2), stopTimeout: 30_000 });
server.register(process.env.API_ADDRESS || '127.0.0.1:9223', api);
server.register(process.env.ADMIN_ADDRESS || '127.0.0.1:9224', admin);
server.register(process.env.ECHO_ADDRESS || '127.0.0.1:9225', echo);
server.registerUnix(process.env.SOCKET_PATH || path.join(os.tmpdir(), 'handover-multi.sock'), api);
server.on('ready', ({ addresses }) => console.log(`serving on ${addresses.join(', ')}`));
server.on('reloaded', ({ generation, durationMs }) => console.log(`generation ${generation} ready in ${Math.round(durationMs)} ms`));
server.run();
