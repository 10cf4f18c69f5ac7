// ServerDrain (src/worker/drain.ts) in-process, on servers a test builds:
//   - a socket handed to an http.Server with `server.emit('connection', socket)`
//     (as a worker accepting on an extra listener does) is not in the server's
//     own connection count, yet the drain waits for it: its request in flight
//     finishes with `Connection: close`, and only then does drain() resolve;
//   - on a plain tls.Server the 'handover:drain' event reaches the TLS socket
//     the application holds, so it can say goodbye (not the raw TCP socket);
//   - an HTTP/2 session gets the two-phase GOAWAY: first the largest stream
//     id (refusing nothing), so a stream the client opened before it saw it
//     is served, not refused; the session then closes and the drain ends.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as http2 from 'node:http2';
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

describe('ServerDrain on HTTP/2', () => {
  it('announces the largest stream id first and serves the streams sent meanwhile; then the session closes', async () => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let draining: Promise<void> | undefined;
    const server = http2.createServer((req, res) => {
      req.resume();
      if (req.url === '/first') {
        // The drain starts while the client's next stream is already on its way:
        // a single GOAWAY naming the last stream received (this one) refuses it.
        draining = drain.drain();
        void held.then(() => res.end('first done'));
      } else {
        res.end('ok');
      }
    });
    const drain = new ServerDrain(server);
    const port = await listen(server);
    const client = http2.connect(`http://127.0.0.1:${port}`);
    closers.push(() => client.destroy());
    const goaways: number[] = [];
    client.on('goaway', (_code: number, last: number) => goaways.push(last));
    const closed = new Promise((resolve) => client.once('close', resolve));
    const get = (urlPath: string) => new Promise<string>((resolve, reject) => {
      const stream = client.request({ ':path': urlPath });
      let body = '';
      stream.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      stream.on('end', () => resolve(body));
      stream.on('error', reject);
      stream.end();
    });
    expect(await get('/')).toBe('ok'); // the session is up
    // Both in one write: the server reads the second right after the first.
    const first = get('/first');
    const second = get('/second');
    expect(await within(second, 10_000, 'the stream sent meanwhile')).toBe('ok');
    expect(goaways[0]).toBe(2 ** 31 - 1);
    release();
    expect(await within(first, 10_000, 'the stream in flight')).toBe('first done');
    await within(closed, 10_000, 'the session to close');
    await within(draining!, 10_000, 'the drain to end');
  });
});
