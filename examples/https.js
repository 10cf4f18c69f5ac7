// An https.Server you build yourself (here with the demo certificate in
// examples/tls/): pass the server instead of a handler. Each worker runs this
// file, so it reads the certificate at start and a reload picks up renewed files.
//   ADDRESS=127.0.0.1:9234 node examples/https.js   then  curl -k -i https://127.0.0.1:9234/
const fs = require('node:fs');
const https = require('node:https');
const path = require('node:path');
const { listenAndServe } = require('handover');

const dir = path.join(__dirname, 'tls'); // a self-signed demo certificate for localhost
const server = https.createServer({
  cert: fs.readFileSync(path.join(dir, 'cert.pem')),
  key: fs.readFileSync(path.join(dir, 'key.pem')),
}, (req, res) => {
  res.setHeader('x-pid', String(process.pid));
  res.end(`hello over TLS from worker ${process.pid}\n`);
});

listenAndServe(process.env.ADDRESS || '127.0.0.1:9234', server);
