// HTTPS: each worker reads the certificate when it starts, so renewing the
// files and sending SIGHUP serves the new certificate with no dropped request.
//   node examples/tls.js   then   curl -k https://127.0.0.1:9443/
const path = require('node:path');
const { listenAndServeTLS } = require('handover');

const dir = path.join(__dirname, 'tls'); // a self-signed demo certificate for localhost
listenAndServeTLS(
  process.env.ADDRESS || '127.0.0.1:9443',
  process.env.CERT || path.join(dir, 'cert.pem'),
  process.env.KEY || path.join(dir, 'key.pem'),
  (req, res) => res.end(`hello over TLS from ${process.pid}\n`),
);
