// WebSocket (ws) on an http.Server. On a reload, open sockets stay with the old
// worker until the app closes them; handover emits 'handover:drain' on each upgraded
// socket, and this app then says goodbye with 1001. New upgrades reach the new worker.
//   ADDRESS=127.0.0.1:9233 node examples/websocket.js   then  kill -HUP <master pid>
const http = require('node:http');
const { WebSocketServer } = require('ws');
const { listenAndServe } = require('handover');

const server = http.createServer((req, res) => {
  res.setHeader('x-pid', String(process.pid));
  res.end(`hello from worker ${process.pid}; upgrade to a WebSocket for an echo\n`);
});
const wss = new WebSocketServer({ server });
wss.on('connection', (ws, req) => {
  ws.send(JSON.stringify({ pid: process.pid })); // which worker holds this socket
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })); // echo
  req.socket.once('handover:drain', () => ws.close(1001, 'going away')); // handover: this worker is draining
});

listenAndServe(process.env.ADDRESS || '127.0.0.1:9233', server);
