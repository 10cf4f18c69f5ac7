// ServerDrain (src/worker/drain.ts) in-process, on servers a test builds:
//   - a socket handed to an http.Server with `server.emit('connection', socket)`
//     (as a worker accepting on an extra listener does) is not in the server's
//     own connection count, yet the drain waits for it: its request in flight
//     finishes with `Connection: close`, and only then does drain() resolve;
//   - on a plain tls.Server the 'handover:drain' event reaches the TLS socket
//     the application holds, so it can say goodbye (not the raw TCP socket).
// HTTP/2's GOAWAY is proved at process level in frameworks.test.ts.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { SOCKET_DRAIN_EVENT, ServerDrain } from '../src/worker/drain';
import { within } from './helpers/wait';

const closers: (() => void)[] = [];
afterEach(() => {
  for (const close of closers.splice(0)) close();
});

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => server.close());
  return (server.address() as net.AddressInfo).port;
}

/** Lets every callback queued so far run (timers and I/O callbacks included). */
const turn = () => new Promise((resolve) => setImmediate(resolve));

describe('ServerDrain', () => {
  it('waits for a socket handed over with emit(\'connection\') until its request in flight has finished', async () => {
    let finish!: () => void;
    let arrived!: () => void;
    const inFlight = new Promise<void>((resolve) => (arrived = resolve));
    // The application server never listens itself: another listener hands it sockets.
    const app = http.createServer((_req, res) => {
      finish = () => res.end('done');
      arrived();
    });
    const drain = new ServerDrain(app);
    const acceptor = net.createServer((socket) => app.emit('connection', socket));
    const port = await listen(acceptor);

    const response = new Promise<http.IncomingMessage & { body: string }>((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, path: '/', agent: new http.Agent({ keepAlive: true }) }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve(Object.assign(res, { body })));
      });
      req.on('error', reject);
    });
    await within(inFlight, 10_000, 'the request to arrive');
    acceptor.close(); // the worker stops accepting on its extra listener too

    let drained = false;
    const draining = drain.drain().then(() => (drained = true));
    await new Promise((resolve) => app.once('close', resolve)); // the server's own close is done
    await turn();
    expect(drained).toBe(false); // the handed-over socket is still open, its request in flight
    finish();
    const res = await within(response, 10_000, 'the response');
    expect(res.body).toBe('done');
    expect(res.headers.connection).toBe('close');
    await within(draining, 10_000, 'the drain to end once the socket has closed');
    expect(drain.connections).toBe(0);
  });

  it('sends handover:drain on a plain tls.Server to the TLS socket the application holds', async () => {
    const dir = path.join(__dirname, '..', 'examples', 'tls');
    const server = tls.createServer({
      cert: fs.readFileSync(path.join(dir, 'cert.pem')),
      key: fs.readFileSync(path.join(dir, 'key.pem')),
    }, (socket) => {
      socket.on('error', () => {});
      socket.write('hello\n');
      socket.on(SOCKET_DRAIN_EVENT, () => socket.end('bye\n'));
    });
    const drain = new ServerDrain(server);
    const port = await listen(server);
    const client = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false });
    closers.push(() => client.destroy());
    let received = '';
    client.setEncoding('utf8').on('data', (chunk: string) => (received += chunk));
    const ended = new Promise((resolve) => client.once('end', resolve));
    await within(new Promise<void>((resolve) => {
      const check = () => (received.includes('hello\n') ? resolve() : client.once('data', check));
      check();
    }), 10_000, 'the greeting');
    const draining = drain.drain();
    await within(ended, 10_000, 'the application to say bye and end its TLS socket');
    expect(received).toBe('hello\nbye\n');
    await within(draining, 10_000, 'the drain to end');
  });
});
