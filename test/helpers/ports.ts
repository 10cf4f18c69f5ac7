// A free TCP port on 127.0.0.1, for programs that must listen on a fixed one
// (under `handover start`, port 0 stays private to each worker).
import * as net from 'node:net';

/** A port nothing listens on now (the kernel's pick, released again). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
