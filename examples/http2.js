// HTTP/2 over TLS (demo certificate in examples/tls/). On a reload every open
// session gets GOAWAY: its streams in flight finish, new ones go to a new session.
//   ADDRESS=127.0.0.1:9235 node examples/http2.js   then  curl -k --http2 -i https://127.0.0.1:9235/
//   kill -HUP <master pid> reloads; a POST /echo streams its body back until the client ends it.
const fs = require('node:fs');
const http2 = require('node:http2');
const path = require('node:path');
const { listenAndServe } = require('handover');

const dir = path.join(__dirname, 'tls'); // a self-signed demo certificate for localhost
const server = http2.createSecureServer({
  cert: fs.readFileSync(path.join(dir, 'cert.pem')),
  key: fs.readFileSync(path.join(dir, 'key.pem')),
}, (req, res) => {
  res.setHeader('x-pid', String(process.pid));
  if (req.url === '/echo') {
    res.writeHead(200);
    req.pipe(res); // a long-lived stream: open until the client ends its request
  } else {
    res.end(`hello over HTTP/2 from worker ${process.pid}\n`);
  }
});

listenAndServe(process.env.ADDRESS || '127.0.0.1:9235', server);
