// The hello app as plain Node: http.createServer(handler).listen(PORT). Also the
// worker of the cluster and pm2 peers. A stop signal closes the server the
// usual way (server.close(), then exit), as a typical app does. FAULT_DIR:
// fault injection (apps/fault.js), by slot: SLOT under the cluster peer,
// NODE_APP_INSTANCE under pm2. APP_MODULE: the handler's module instead of
// ./handler (the memory scenario's heavy app, bench/lib/heavy.js).
require('./fault')(process.env.SLOT ?? process.env.NODE_APP_INSTANCE);
const cluster = require('node:cluster');
const http = require('node:http');
const hello = require(process.env.APP_MODULE || './handler');

const server = http.createServer(hello);
if (process.env.KEEPALIVE_MS) server.keepAliveTimeout = Number(process.env.KEEPALIVE_MS);
server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  if (cluster.isPrimary) console.log(`listening on 127.0.0.1:${server.address().port}`);
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => server.close(() => process.exit(0)));
