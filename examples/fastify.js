// Fastify: hand handover the app's own http.Server (`app.server`) instead of
// calling app.listen(), and let each worker finish booting the app (plugins,
// routes) with `ready: () => app.ready()` before it accepts a connection.
//   ADDRESS=127.0.0.1:9231 node examples/fastify.js   then  curl -i http://127.0.0.1:9231/
//   kill -HUP <master pid> reloads (new code, no dropped request); kill -TERM stops.
const fastify = require('fastify');
const { listenAndServe } = require('handover');

const app = fastify();
app.addHook('onSend', async (request, reply) => {
  reply.header('x-pid', String(process.pid)); // which worker answered
});
app.get('/', async () => `hello from fastify, worker ${process.pid}\n`);

listenAndServe(process.env.ADDRESS || '127.0.0.1:9231', app.server, { ready: () => app.ready() });
