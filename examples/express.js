// Express: the app is a request listener, so it is the handler as is.
//   ADDRESS=127.0.0.1:9230 node examples/express.js     then  curl -i http://127.0.0.1:9230/
//   kill -HUP <master pid> reloads (new code, no dropped request); kill -TERM stops.
const express = require('express');
const { listenAndServe } = require('handover');

const app = express();
app.use((req, res, next) => {
  res.set('x-pid', String(process.pid)); // which worker answered
  next();
});
app.get('/', (req, res) => res.send(`hello from express, worker ${process.pid}\n`));

listenAndServe(process.env.ADDRESS || '127.0.0.1:9230', app);
