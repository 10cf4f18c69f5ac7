// Uses the public API as a strict TypeScript project would. Each
// `@ts-expect-error` line must be an error, or tsc fails ("unused directive").
import * as http from 'node:http';
import { Server, isMaster, isServing, isWorker, listenAndServe, type Handler, type ServerOptions } from 'handover';

const options: ServerOptions = { workers: 2, stopTimeout: 30_000, reloadSignals: ['SIGHUP'], logger: console };
const server = new Server(options);
const handler: Handler = (req: http.IncomingMessage, res: http.ServerResponse) => res.end(req.url);
server.register(':0', handler).register('unix:/tmp/x.sock', http.createServer(handler));
server.registerTLS(':0', 'cert.pem', 'key.pem', (_req, res) => res.end('hi'));

server.on('reloaded', (e) => {
  const ms: number = e.durationMs;
  const generation: number = e.generation;
  console.log(ms, generation);
});
server.on('reload-failed', ({ error }) => console.error(error.message));
server.on('worker-exit', ({ pid, signal }) => console.log(pid, signal ?? 'exit'));
server.once('ready', ({ addresses }) => console.log(addresses.join()));
server.on('drain', () => {});

// @ts-expect-error a misspelt event name
server.on('reloded', () => {});
// @ts-expect-error the payload has no such field
server.on('reloaded', (e) => e.duration);
// @ts-expect-error a misspelt option
new Server({ stopTimout: 5000 });
// @ts-expect-error a wrong option type
new Server({ workers: '2' });
// @ts-expect-error logger takes an object or false
new Server({ logger: true });

if (isServing() || isWorker() || isMaster()) console.log(server.addresses);
void listenAndServe;
void server.run().then(() => server.status().generation);
