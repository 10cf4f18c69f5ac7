// The drop-in: `node examples/hello.js`, then `kill -HUP <pid>` to reload.
const { listenAndServe } = require('handover');

listenAndServe(process.env.ADDRESS || ':9222', (req, res) => {
  res.setHeader('X-Worker-Pid', String(process.pid));
  res.end('hello\n');
});
