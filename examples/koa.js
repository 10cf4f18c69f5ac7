// Koa: app.callback() is the request listener handover serves.
//   ADDRESS=127.0.0.1:9232 node examples/koa.js     then  curl -i http://127.0.0.1:9232/
//   kill -HUP <master pid> reloads (new code, no dropped request); kill -TERM stops.
const Koa = require('koa');
const { listenAndServe } = require('handover');

const app = new Koa();
app.use(async (ctx) => {
  ctx.set('x-pid', String(process.pid)); // which worker answered
  ctx.body = `hello from koa, worker ${process.pid}\n`;
});

listenAndServe(process.env.ADDRESS || '127.0.0.1:9232', app.callback());
