// TLS recognised without loading node:tls (~10 ms of boot CPU, https ~11):
// a worker of a plain HTTP app never loads them. A tls.Server has
// setSecureContext and a TLSSocket sets `encrypted`, so either already exists
// only if the application loaded tls; only then is instanceof asked.
import type * as tls from 'node:tls';

/** True for a tls.Server (so also https and an http2 secure server). */
export function isTlsServer(server: object): server is tls.Server {
  return typeof (server as { setSecureContext?: unknown }).setSecureContext === 'function' &&
    server instanceof (require('node:tls') as typeof tls).Server;
}

/** True for a tls.TLSSocket. */
export function isTlsSocket(socket: object): socket is tls.TLSSocket {
  return (socket as { encrypted?: unknown }).encrypted === true &&
    socket instanceof (require('node:tls') as typeof tls).TLSSocket;
}

/** True for an https.Server. */
export function isHttpsServer(server: object): boolean {
  return isTlsServer(server) && server instanceof (require('node:https') as typeof import('node:https')).Server;
}
