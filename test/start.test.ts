// `handover start` with unmodified programs (issue 11): Express, Fastify,
// Koa, raw http, net, and one with two ports, each with --workers 2 under load
// across reloads (zero failed requests, new pids each time), then `handover
// stop` (exit 0, ports free). A deploy that throws or does not parse fails the
// reload with its own error in the output while the old generation serves;
// --env-file is read again at each reload; --watch reloads on a change;
// --wait-ready keeps traffic away until the program says ready().
//
// Each test has its own registry (XDG_RUNTIME_DIR), so `handover reload`
// without a NAME finds exactly the master the test started.
//
// Sensitivity, checked by hand on a copy of the repository:
//   - intercept.ts binding directly (original listen) instead of recording:
//     every app test fails (EADDRINUSE in the second worker, or no status);
//   - spawn-self.ts not reading the env file at each spawn: the env-file test
//     fails on the greeting;
//   - worker.ts ignoring --wait-ready (settle only): the wait-ready test sees 503s.
//
// Readiness without a fixed wait (issue 24), checked the same way:
//   - worker.ts ready only by the quiet window (the code before issue 24): the
//     late-listens tests record all 10 late sockets, none refused;
//   - worker.ts not waiting for the passed-through listen()s to bind (its
//     private helper on `localhost`): both late-listens tests record all 10;
//   - worker.ts taking every entry as finished once runMain returns (no wait
//     for an ES module's evaluation): late-listens.mjs records all 10 (the
//     loop turned before the module ran, so the quiet window decided);
//   - worker.ts taking an ES module's entry as finished at its first listen()
//     (not at its top-level await): the top-level await test serves only the
//     first port (the second listen() is refused and the worker crashes);
//   - worker.ts without the quiet-window fallback: the timer and awaited-listen
//     programs never become ready;
//   - worker.ts importing the entry also under `--import` (entryStartsLater
//     false): the main-module test with that flag sees require.main false, and
//     the program never listens.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Load } from './helpers/load';
import { cleanUp, connectOutcome, pollUntil, scratch } from './helpers/processes';
import { FIXTURES, get, portOf, start } from './helpers/start';

afterEach(cleanUp);

const RELOADS = 3;

describe('handover start: unmodified programs', () => {
  const apps: [string, 'keep-alive' | 'close'][] = [
    ['express', 'keep-alive'],
    ['fastify', 'keep-alive'],
    ['koa', 'keep-alive'],
    ['http', 'keep-alive'],
    ['net', 'close'],
    ['two-ports', 'keep-alive'],
  ];
  it.each(apps)(`%s with --workers 2: ${RELOADS} reloads under load, zero failed requests, new pids; stop exits 0 and frees the ports`, async (name, mode) => {
    const app = await start(path.join(FIXTURES, `${name}.js`), ['--workers', '2']);
    let status = await app.serving(1);
    const ports = status.addresses.map(portOf);
    expect(ports).toHaveLength(name === 'two-ports' ? 2 : 1);
    const loads = ports.map((port) => new Load({ port, connections: 4, mode }));
    let previous = app.pids(status, 1);
    for (let generation = 2; generation <= RELOADS + 1; generation++) {
      const reload = await app.cli('reload');
      expect(reload, `reload to generation ${generation}`).toMatchObject({ code: 0, stdout: 'reloaded\n' });
      status = await app.serving(generation);
      const fresh = app.pids(status, generation);
      expect(fresh.filter((pid) => previous.includes(pid))).toEqual([]);
      expect(status.addresses.map(portOf), 'the ports stay the same across reloads').toEqual(ports);
      // every port is answered by the new generation
      await Promise.all(loads.map((load) => pollUntil(() => fresh.some((pid) => load.stats.pids.has(pid)), `generation ${generation} to answer`)));
      previous = fresh;
    }
    const stats = await Promise.all(loads.map((load) => load.stop()));
    for (const s of stats) {
      expect(s.failed, `failures: ${JSON.stringify(s.errors)}`).toBe(0);
      expect(s.ok).toBeGreaterThan(0);
    }
    const stop = await app.cli('stop');
    expect(stop).toMatchObject({ code: 0, stdout: 'stopped\n' });
    expect(await app.master.exited).toEqual({ code: 0, signal: null });
    for (const port of ports) expect(await connectOutcome(port)).toBe('ECONNREFUSED');
  });
});

describe('handover start: deploys, environment, watch, readiness', () => {
  it('a deploy that throws at start-up: reload exits 1 with the thrown message; the old generation keeps serving', async () => {
    const dir = scratch('handover-start-');
    const script = path.join(dir, 'app.js');
    fs.copyFileSync(path.join(FIXTURES, 'http.js'), script);
    const app = await start(script, ['--workers', '2']);
    const status = await app.serving(1);
    const port = portOf(status.addresses[0]);
    const old = app.pids(status, 1);

    fs.copyFileSync(path.join(FIXTURES, 'broken.js'), script);
    const failed = await app.cli('reload');
    expect(failed.code).toBe(1);
    expect(failed.stdout).toMatch(/^reload failed: /);
    expect(failed.stdout).toContain('Error: cannot connect to the database at db.internal:5432 (broken deploy)');
    expect(failed.stdout).toContain(`${script}:2`);
    const after = await app.serving(1);
    expect(app.pids(after, 1)).toEqual(old);
    expect(old).toContain((await get(port)).pid);

    fs.writeFileSync(script, 'const x = ;\n');
    const syntax = await app.cli('reload');
    expect(syntax.code).toBe(1);
    expect(syntax.stdout).toContain(`${script}:1`);
    expect(syntax.stdout).toContain('SyntaxError: Unexpected token');

    fs.copyFileSync(path.join(FIXTURES, 'http.js'), script);
    expect((await app.cli('reload')).code).toBe(0);
    expect((await app.status())?.generation).toBe(4);
  });

  it('--env-file is read again at each reload: a changed value reaches the new generation, a removed one is gone', async () => {
    const dir = scratch('handover-start-');
    const envFile = path.join(dir, 'app.env');
    fs.writeFileSync(envFile, 'GREETING=first\n');
    const app = await start(path.join(FIXTURES, 'http.js'), ['--env-file', envFile]);
    const port = portOf((await app.serving(1, 1)).addresses[0]);
    expect((await get(port)).body).toBe('hello from http, first\n');

    fs.writeFileSync(envFile, '# a comment\nGREETING="second one"\n');
    expect((await app.cli('reload')).code).toBe(0);
    await app.serving(2, 1);
    await pollUntil(async () => (await get(port)).body === 'hello from http, second one\n', 'the second greeting');

    fs.writeFileSync(envFile, '');
    expect((await app.cli('reload')).code).toBe(0);
    await pollUntil(async () => (await get(port)).body === 'hello from http, no greeting\n', 'the greeting to be gone');

    fs.rmSync(envFile);
    const missing = await app.cli('reload');
    expect(missing.code).toBe(1);
    // Node 20 itself checks a file named by --env-file anywhere on its command line ("node: FILE: not found")
    expect(missing.stdout).toMatch(new RegExp(`${envFile}(: not found| \\(ENOENT\\))`));
  });

  it('--watch reloads after a file under the watched directory changes', async () => {
    const dir = scratch('handover-start-');
    const script = path.join(dir, 'app.js');
    fs.copyFileSync(path.join(FIXTURES, 'http.js'), script);
    const app = await start(script, [`--watch=${dir}`]);
    const port = portOf((await app.serving(1, 1)).addresses[0]);
    const old = (await get(port)).pid;
    fs.writeFileSync(script, fs.readFileSync(script, 'utf8').replace('hello from http', 'hello from the edited http'));
    await app.serving(2, 1);
    const reply = await get(port);
    expect(reply.body).toBe('hello from the edited http, no greeting\n');
    expect(reply.pid).not.toBe(old);
    expect(app.master.stderr).toMatch(/--watch: .*app\.js changed; reloading/);
  });

  it('--wait-ready: no request reaches a worker before its program calls ready()', async () => {
    const app = await start(path.join(FIXTURES, 'wait-ready.js'), ['--workers', '2', '--wait-ready']);
    const port = portOf((await app.serving(1)).addresses[0]);
    const load = new Load({ port, connections: 4 });
    for (let generation = 2; generation <= 3; generation++) {
      expect((await app.cli('reload')).code).toBe(0);
      const fresh = app.pids(await app.serving(generation), generation);
      await pollUntil(() => fresh.some((pid) => load.stats.pids.has(pid)), `generation ${generation} to answer`);
    }
    const stats = await load.stop();
    expect(stats.failed, `failures (a 503 is a request served before ready()): ${JSON.stringify(stats.errors)}`).toBe(0);
    expect((await get(port)).body).toBe('warm, bundle loaded: false\n'); // one copy of handover in a start worker (src/main.ts)
  });

  it('a failed second start with the same --pid-file (its port taken by the running master) leaves that file to the running master', async () => {
    const pidFile = path.join(scratch('handover-start-'), 'app.pid');
    const first = await start(path.join(FIXTURES, 'http.js'), ['--pid-file', pidFile]);
    const port = portOf((await first.serving(1, 1)).addresses[0]);
    expect(fs.readFileSync(pidFile, 'utf8')).toBe(`${first.master.pid}\n`);
    const second = await start(path.join(FIXTURES, 'http.js'), ['--pid-file', pidFile], { PORT: String(port) });
    expect((await second.master.exited).code).toBe(1);
    expect(second.master.stderr).toContain(`bind EADDRINUSE 127.0.0.1:${port}`);
    expect(fs.readFileSync(pidFile, 'utf8')).toBe(`${first.master.pid}\n`);
    expect(await first.cli('stop')).toMatchObject({ code: 0, stdout: 'stopped\n' });
    expect((await first.master.exited).code).toBe(0);
    expect(fs.existsSync(pidFile), 'removed by the master that wrote it').toBe(false);
  });

  it('worker output reaches the master\'s, each line prefixed with generation and pid', async () => {
    const app = await start(path.join(FIXTURES, 'http.js'), ['--workers', '2']);
    const status = await app.serving(1);
    for (const pid of app.pids(status, 1)) {
      await pollUntil(() => app.stdout.includes(`[g1 ${pid}] listening on ${portOf(status.addresses[0])}\n`), `worker ${pid}'s line`);
    }
  });
});

describe('handover start: readiness without a fixed wait', () => {
  it.each(['late-listens.js', 'late-listens.mjs'])('%s: a program that listened at start-up is ready at the next turn of the event loop: its listen() on a 50 ms timer comes too late, in every generation', async (name) => {
    const sockets = scratch('handover-start-');
    const app = await start(path.join(FIXTURES, name), [], { SOCKET_DIR: sockets });
    for (let generation = 1; generation <= 2; generation++) {
      if (generation > 1) expect((await app.cli('reload')).code).toBe(0);
      const status = await app.serving(generation, 1);
      const [pid] = app.pids(status, generation);
      // A quiet window after the last listen() would take all 10 (they come
      // 50 ms apart); the entry returned and the loop turned long before the
      // first timer, unless this machine stalled the worker that long.
      const late = status.addresses.length - 1;
      expect(late, `late sockets served: ${status.addresses.join(', ')}`).toBeLessThan(10);
      expect(status.addresses.slice(1)).toEqual(Array.from({ length: late }, (_, i) => `unix:${path.join(sockets, `late-${i}.sock`)}`));
      await pollUntil(() => app.stdout.includes(`[g${generation} ${pid}] late listen ${late} refused: ERR_HANDOVER_LATE_LISTEN\n`), `late listen ${late} refused in generation ${generation}; stdout:\n${app.stdout}`);
      expect((await get(portOf(status.addresses[0]))).pid).toBe(pid);
    }
  });

  it.each([
    ['', {}],
    [', even when starved for longer than the quiet window after its first listen()', { STARVE_MS: '400' }],
  ])('an ES module is ready once its top-level await has settled: a listen() after `await` in the module is served too%s', async (_, env: Record<string, string>) => {
    const app = await start(path.join(FIXTURES, 'esm-top-level-await.mjs'), [], env);
    for (let generation = 1; generation <= 2; generation++) {
      if (generation > 1) expect((await app.cli('reload')).code).toBe(0);
      const status = await app.serving(generation, 1);
      expect(status.addresses).toHaveLength(2);
      const [pid] = app.pids(status, generation);
      const [api, metrics] = await Promise.all(status.addresses.map((address) => get(portOf(address))));
      expect(api).toMatchObject({ status: 200, body: `api from ${pid}\n` });
      expect(metrics).toMatchObject({ status: 200, body: `metrics from ${pid}\n` });
    }
    expect(app.master.stderr).not.toContain('LateListenError');
  });

  it.each([[[]], [['--', '--import', 'node:os']]])('require.main is the program\'s module (Node flags %j), so a server started only as the entry point serves', async (flags) => {
    const app = await start(path.join(FIXTURES, 'main-module.js'), flags);
    const status = await app.serving(1, 1);
    const [pid] = app.pids(status, 1);
    expect(await get(portOf(status.addresses[0]))).toMatchObject({ status: 200, pid, body: 'hello from the main module\n' });
    expect(app.stdout).toContain(`[g1 ${pid}] require.main is this module: true\n`);
  });

  it.each([
    ['timer-listen.js', 'no listen() when its entry returned (a listen after a timer)', 'hello after a timer\n'],
    ['esm-await-listen.mjs', 'an ES module awaiting its own listen() at top level', 'hello from an awaited listen\n'],
  ])('%s (%s): ready by the quiet window after its listen(), across a reload', async (name, _what, body) => {
    const app = await start(path.join(FIXTURES, name));
    const port = portOf((await app.serving(1, 1)).addresses[0]);
    expect(await get(port)).toMatchObject({ status: 200, body });
    expect((await app.cli('reload')).code).toBe(0);
    const [pid] = app.pids(await app.serving(2, 1), 2);
    expect(await get(port)).toMatchObject({ status: 200, body });
    await pollUntil(async () => (await get(port)).pid === pid, 'generation 2 to answer');
  });
});
