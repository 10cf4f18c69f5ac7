// The messages a user gets for a mistake made at register() or at start-up:
// each names the cause and says what to do. All checked in the master, before
// any worker or control directory exists.
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import fastify from 'fastify';
import Koa from 'koa';
import { afterAll, describe, expect, it } from 'vitest';
import { Server, isServing } from '../src/server';
import { ROOT, tempDir } from './helpers/processes';

const temps: string[] = [];
afterAll(() => {
  for (const dir of temps) fs.rmSync(dir, { recursive: true, force: true });
});

function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (error) {
    return error as Error;
  }
  throw new Error('did not throw');
}

describe('register()', () => {
  it("':P' and '127.0.0.1:P' in one program: says both are registered here and overlap, not that another process listens", () => {
    for (const [first, second] of [[':9222', '127.0.0.1:9222'], ['127.0.0.1:9222', ':9222'], ['0.0.0.0:9222', '127.0.0.1:9222'], ['[::]:9222', '[::1]:9222']]) {
      const error = thrown(() => new Server().register(first, () => {}).register(second, () => {}));
      expect(error.message).toBe(`'${first}' and '${second}' are both registered in this program and overlap: both would listen on port 9222 ` +
        "of the same address. Register one of them; ':PORT' alone listens on every address");
      expect((error as NodeJS.ErrnoException).code).toBe('ERR_HANDOVER_ADDRESS_OVERLAP');
      expect(error.message).not.toContain('another process');
    }
    // distinct addresses, ports or ephemeral ports do not overlap
    new Server().register('127.0.0.1:9222', () => {}).register('127.0.0.2:9222', () => {}).register(':9223', () => {})
      .register(':0', () => {}).register('127.0.0.1:0', () => {});
    expect(thrown(() => new Server().register(':9222', () => {}).register(':9222', () => {})).message)
      .toBe(':9222 is registered twice in this program; register each address once');
  });

  it('a Fastify instance as the handler: points to app.server and ready: () => app.ready()', async () => {
    const app = fastify();
    const error = thrown(() => new Server().register(':0', app as never));
    expect(error).toBeInstanceOf(TypeError);
    expect(error.message).toContain('handler for :0#0 must be a request listener (req, res) => void or a net.Server');
    expect(error.message).toContain('this is a Fastify instance: pass `app.server` (or `app.routing`) and the option `ready: () => app.ready()`');
    await app.close();
  });

  it('a Koa app as the handler: points to app.callback()', () => {
    const error = thrown(() => new Server().register('127.0.0.1:8080', new Koa() as never));
    expect(error).toBeInstanceOf(TypeError);
    expect(error.message).toMatch(/^handler for 127\.0\.0\.1:8080 must be .* got an object \(Application\); this is a Koa app: pass `app\.callback\(\)`$/);
  });

  it('anything else: names what it got and the usual fixes', () => {
    const error = thrown(() => new Server().register(':8080', 42 as never)); // (a string is a module path: handler-module.test.ts)
    expect(error.message).toBe('handler for :8080 must be a request listener (req, res) => void or a net.Server, got 42; ' +
      'Express: pass `app`; Koa: `app.callback()`; Fastify: `app.server` (or `app.routing`) with the option `ready: () => app.ready()`');
  });
});

describe('registerTLS()', () => {
  const dir = tempDir('handover-tls-');
  temps.push(dir);
  const cert = path.join(ROOT, 'examples', 'tls', 'cert.pem');
  const key = path.join(ROOT, 'examples', 'tls', 'key.pem');
  const garbage = path.join(dir, 'garbage.pem');
  fs.writeFileSync(garbage, 'not a pem\n');
  const otherKey = path.join(dir, 'other-key.pem');
  fs.writeFileSync(otherKey, crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));

  it('accepts a matching certificate and key', () => {
    new Server().registerTLS(':0', cert, key, () => {});
  });

  it('a bad certificate or key file is named, with what it must hold', () => {
    const badCert = thrown(() => new Server().registerTLS(':9443', garbage, key, () => {}));
    expect(badCert.message).toMatch(new RegExp(`^TLS certificate file ${garbage} for :9443 is not a PEM certificate \\(.*\\); ` +
      'it must hold a "-----BEGIN CERTIFICATE-----" block'));
    const badKey = thrown(() => new Server().registerTLS(':9443', cert, garbage, () => {}));
    expect(badKey.message).toMatch(new RegExp(`^TLS key file ${garbage} for :9443 is not a PEM key \\(.*\\); it must hold a "-----BEGIN PRIVATE KEY-----" block`));
    // swapped: the key file where the certificate belongs
    expect(thrown(() => new Server().registerTLS(':9443', key, cert, () => {})).message).toContain(`TLS certificate file ${key} for :9443 is not a PEM certificate`);
  });

  it('a key that does not belong to the certificate names both files', () => {
    expect(thrown(() => new Server().registerTLS(':9443', cert, otherKey, () => {})).message)
      .toBe(`TLS key file ${otherKey} does not belong to the certificate in ${cert} (for :9443); use the key the certificate was issued for`);
  });

  it('a missing file is named with its errno', () => {
    const missing = path.join(dir, 'missing.pem');
    const error = thrown(() => new Server().registerTLS(':9443', missing, key, () => {}));
    expect(error.message).toBe(`cannot read TLS certificate file ${missing} for :9443 (ENOENT); check the path and permissions`);
  });
});

describe('listenAndServe() twice in one program', () => {
  it('says to use one Server with two register() calls, exits 1, and leaves no control directory', () => {
    const dir = tempDir('handover-twice-');
    temps.push(dir);
    const controlDir = path.join(dir, 'control');
    fs.mkdirSync(controlDir);
    const script = path.join(dir, 'twice.js');
    fs.writeFileSync(script, `
      const { listenAndServe } = require(${JSON.stringify(ROOT)});
      const options = { controlDir: ${JSON.stringify(controlDir)} };
      listenAndServe('127.0.0.1:0', (req, res) => res.end('api'), options);
      listenAndServe('127.0.0.1:0', (req, res) => res.end('metrics'), options);
    `);
    const result = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 60_000 });
    expect(result.status, result.stderr).toBe(1);
    expect(result.stderr).toContain('listenAndServe()/listenAndServeTLS() was called 2 times in this program; each call would start its own master.');
    expect(result.stderr).toContain("serve every address from one Server: `const server = new Server(); server.register(':8080', api); " +
      "server.register(':9090', metrics); server.run();`");
    expect(result.stderr.match(/was called 2 times/g)).toHaveLength(1);
    expect(fs.readdirSync(controlDir)).toEqual([]);
  });
});

describe('isServing()', () => {
  it('is false in a master and true once a single-mode Server exists (that process serves)', () => {
    new Server();
    expect(isServing()).toBe(false);
    new Server({ mode: 'single' });
    expect(isServing()).toBe(true);
  });
});
