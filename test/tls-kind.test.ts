// TLS servers and sockets recognised without loading node:tls for plain ones (src/tls-kind.ts).
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as https from 'node:https';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { describe, expect, it } from 'vitest';
import { isHttpsServer, isTlsServer, isTlsSocket } from '../src/tls-kind';

describe('tls-kind', () => {
  it('tells TLS servers from plain ones', () => {
    expect(isTlsServer(http.createServer())).toBe(false);
    expect(isTlsServer(net.createServer())).toBe(false);
    expect(isTlsServer(http2.createServer())).toBe(false);
    expect(isTlsServer(tls.createServer())).toBe(true);
    expect(isTlsServer(https.createServer())).toBe(true);
    expect(isTlsServer(http2.createSecureServer())).toBe(true);
    expect(isHttpsServer(https.createServer())).toBe(true);
    expect(isHttpsServer(tls.createServer())).toBe(false);
    expect(isHttpsServer(http.createServer())).toBe(false);
  });

  it('tells TLS sockets from plain ones', () => {
    const plain = new net.Socket();
    const secure = new tls.TLSSocket(new net.Socket());
    expect(isTlsSocket(plain)).toBe(false);
    expect(isTlsSocket(secure)).toBe(true);
    plain.destroy();
    secure.destroy();
  });

  it('a process that serves plain HTTP never loads tls or https', async () => {
    const { execFileSync } = await import('node:child_process');
    const script = `
      const http = require('node:http');
      const { isTlsServer, isTlsSocket, isHttpsServer } = require(${JSON.stringify(require.resolve('../dist/tls-kind.js'))});
      const s = http.createServer();
      const loaded = [isTlsServer(s), isHttpsServer(s), isTlsSocket(new (require('node:net').Socket)())];
      const modules = process.moduleLoadList.filter((m) => /^NativeModule (tls|https|_tls_wrap)$/.test(m));
      console.log(JSON.stringify({ loaded, modules }));`;
    const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' })) as { loaded: boolean[]; modules: string[] };
    expect(out).toEqual({ loaded: [false, false, false], modules: [] });
  });
});
