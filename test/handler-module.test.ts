// A handler registered as a module path stays out of the master: the master
// runs the program only to learn its addresses, the workers load the module
// (and whatever it requires) when they start serving, and a reload loads it
// again from disk. Also: a worker loads none of the master's code, and the
// master none of the worker's.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Server } from '../src/server';
import { ROOT, pollUntil, reapAll, scratch, startMaster } from './helpers/processes';

afterEach(reapAll);

function get(port: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve(JSON.parse(body) as Record<string, unknown>));
    }).on('error', reject);
  });
}

function loadedBy(file: string): number[] {
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map(Number);
}

describe('a handler module', () => {
  it('is loaded by each worker, never by the master, before and after a reload', async () => {
    const loadedFile = path.join(scratch('handover-module-'), 'loaded');
    fs.writeFileSync(loadedFile, '');
    const master = await startMaster({ script: 'test/fixtures/module-app.js', fixture: { workers: 2 }, env: { LOADED_FILE: loadedFile } });
    const first = master.workerPids;
    expect(first).toHaveLength(2);
    const answer = await get(master.port);
    expect(first).toContain(answer.pid);
    expect(answer).toMatchObject({ masterCode: false, workerCode: true, bundled: true });

    const reloaded = await master.reload();
    expect(reloaded.event).toBe('reloaded');
    const second = reloaded.status!.workers.filter((w) => w.generation === reloaded.generation).map((w) => w.pid);
    expect(second).toHaveLength(2);
    expect(second.some((pid) => first.includes(pid))).toBe(false);
    expect(second).toContain((await get(master.port)).pid);

    expect(loadedBy(loadedFile).sort()).toEqual([...first, ...second].sort());
    expect(loadedBy(loadedFile)).not.toContain(master.pid);
    expect((await master.stop()).code).toBe(0);
  });

  it("serves a module's default export (compiled TypeScript, ES modules)", async () => {
    const master = await startMaster({ script: 'test/fixtures/module-app.js', fixture: { module: 'module-default.js' } });
    expect(await get(master.port)).toMatchObject({ from: 'default' });
    expect((await master.stop()).code).toBe(0);
  });

  it('a module that exports no handler: the start fails naming the module and what it exports', async () => {
    const master = await startMaster({ script: 'test/fixtures/module-app.js', fixture: { module: 'module-not-handler.js' }, waitReady: false });
    const fatal = await master.waitFor((e) => e.event === 'fatal', 'the start to fail');
    const file = path.join(ROOT, 'test', 'fixtures', 'module-not-handler.js');
    expect(master.stderr).toContain(`handler for 127.0.0.1:0#0 must be a request listener (req, res) => void or a net.Server, module ${file} exports an object (Object)`);
    expect(fatal.error).toBeTruthy();
    expect((await master.exited).code).not.toBe(0);
  });
});

describe('examples/lazy.js', () => {
  it('serves from its workers, reloads and stops', async () => {
    const master = await startMaster({ script: 'examples/lazy.js', env: { ADDRESS: '127.0.0.1:0', WORKERS: '1' }, waitReady: false });
    let stdout = '';
    master.proc.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    const port = Number((await pollUntil(() => /serving on 127\.0\.0\.1:(\d+)/.exec(stdout), `the example to serve; stderr:\n${master.stderr}`))[1]);
    const hello = (): Promise<string> => new Promise((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk)).on('end', () => resolve(body));
      }).on('error', reject);
    });
    const before = await hello();
    expect(before).toMatch(/^hello from worker \d+\n$/);
    expect(before).not.toContain(String(master.pid));
    master.proc.kill('SIGHUP');
    await pollUntil(() => stdout.includes('generation 2 ready'), `the reload; stderr:\n${master.stderr}`);
    expect(await hello()).not.toBe(before);
    expect((await master.stop()).code).toBe(0);
  });
});

describe('register() with a module path, in the master', () => {
  it('a relative path: asks for an absolute one and shows require.resolve', () => {
    expect(() => new Server().register(':0', './app')).toThrow(
      "handler module for :0#0 must be an absolute path, got \"./app\"; pass `require.resolve('./app')` (or path.join(__dirname, ...)) from your program");
  });

  it('a missing file: names it, before any worker starts', () => {
    const missing = path.join(ROOT, 'test', 'fixtures', 'no-such-app.js');
    expect(() => new Server().register(':0', missing)).toThrow(`cannot find the handler module ${missing} for :0#0 (MODULE_NOT_FOUND); check the path`);
  });

  it('resolves without loading: the module is not in require.cache after register()', () => {
    const file = path.join(ROOT, 'test', 'fixtures', 'module-not-handler.js');
    new Server().register(':0', file.replace(/\.js$/, ''));
    expect(require.cache[file]).toBeUndefined();
  });
});
