// handover under a real process manager (issue 6): Debian's supervisord runs
// test/fixtures/app.js as a program. The process manager only ever sees the
// master: `supervisorctl signal HUP` reloads it under load with zero failed
// requests while the pid supervisord tracks never changes, and
// `supervisorctl stop` (SIGTERM, then SIGKILL after stopwaitsecs) drains it:
// a request in flight completes. supervisord runs in a private directory
// (config, socket, pidfile, logs) and is shut down and reaped at the end.
//
// Needs the `supervisor` package (supervisord, supervisorctl); skipped with a
// printed reason where it is not installed.
//
// Sensitivity, checked by hand on a private copy of the repository (dist/
// edited, then this file run against it); each mutation made the test fail:
//   - the master's reload-signal handlers not installed (SIGHUP is fatal): the reload
//   - shutdown() SIGKILLing the workers instead of draining them:        the stop
import { execFile, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { adminStatus } from './helpers/control';
import { Load } from './helpers/load';
import { type MasterEvent, ROOT, isAlive, ourProcesses, pollUntil, reapAll, startMaster, tempDir } from './helpers/processes';

const hasSupervisord = ['supervisord', 'supervisorctl'].every((tool) => spawnSync(tool, ['--help'], { stdio: 'ignore' }).status === 0);
if (!hasSupervisord) {
  console.warn('supervisor.test.ts: skipped: supervisord/supervisorctl not found (install the `supervisor` package, e.g. apt-get install -y supervisor)');
}

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await reapAll();
});

// ---------------------------------------------------------------- helpers

interface Ctl {
  code: number;
  out: string;
}

/** Runs supervisorctl against our private supervisord (never blocks the event loop: the load runs here too). */
function supervisorctl(config: string, ...args: string[]): Promise<Ctl> {
  return new Promise((resolve) => {
    execFile('supervisorctl', ['-c', config, ...args], { timeout: 120_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
      resolve({ code, out: `${stdout}${stderr}`.trim() });
    });
  });
}

/** The JSON events app.js printed on stdout, as supervisord logged them. */
function appEvents(logFile: string): MasterEvent[] {
  let text = '';
  try {
    text = fs.readFileSync(logFile, 'utf8');
  } catch {
    return [];
  }
  const events: MasterEvent[] = [];
  for (const line of text.split('\n')) {
    try {
      events.push(JSON.parse(line));
    } catch {
      // not an event (or the last line, half written)
    }
  }
  return events;
}

function controlSocketOf(workerPid: number): string {
  const entry = fs.readFileSync(`/proc/${workerPid}/environ`, 'utf8').split('\0').find((e) => e.startsWith('HANDOVER_CONTROL_SOCKET='));
  expect(entry).toBeTruthy();
  return entry!.slice(entry!.indexOf('=') + 1);
}

function get(port: number, urlPath: string): Promise<{ status: number; body: string; pid: number }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: urlPath, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => (res.complete
        ? resolve({ status: res.statusCode!, body, pid: Number(res.headers['x-pid']) })
        : reject(new Error(`response cut short after ${JSON.stringify(body)}`))));
      res.on('error', reject);
    });
    req.setTimeout(60_000, () => req.destroy(new Error(`no answer to GET ${urlPath} within 60 s`)));
    req.on('error', reject);
    req.end();
  });
}

function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(':') + 1));
}

// ---------------------------------------------------------------- tests

describe('under supervisord', () => {
  it.skipIf(!hasSupervisord)('signal HUP reloads under load with zero failures and a stable pid; stop drains; shutdown leaves nothing', async () => {
    const dir = tempDir('handover-supervisor-');
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const config = path.join(dir, 'supervisord.conf');
    const appLog = path.join(dir, 'app.out.log');
    const stopTimeout = 10_000;
    // JSON in single quotes: supervisor's environment= parser keeps the double
    // quotes and commas inside; the options hold no '%' or single quote.
    const fixture = JSON.stringify({ stopTimeout });
    expect(fixture).not.toMatch(/[%']/);
    fs.writeFileSync(config, [
      '[unix_http_server]',
      `file=${dir}/supervisor.sock`,
      'chmod=0700',
      '',
      '[supervisord]',
      `logfile=${dir}/supervisord.log`,
      `pidfile=${dir}/supervisord.pid`,
      `childlogdir=${dir}`,
      'nodaemon=true',
      '',
      '[rpcinterface:supervisor]',
      'supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface',
      '',
      '[supervisorctl]',
      `serverurl=unix://${dir}/supervisor.sock`,
      '',
      '[program:app]',
      `command=${process.execPath} ${path.join(ROOT, 'test/fixtures/app.js')}`,
      `directory=${ROOT}`,
      `environment=FIXTURE_OPTIONS='${fixture}',HANDOVER_TEST_RUN="%(ENV_HANDOVER_TEST_RUN)s"`,
      'autostart=true',
      'autorestart=false',
      'startsecs=1',
      'stopsignal=TERM',
      `stopwaitsecs=${stopTimeout / 1000 + 20}`,
      `stdout_logfile=${appLog}`,
      `stderr_logfile=${dir}/app.err.log`,
      '',
    ].join('\n'));

    const launcher = await startMaster({ script: 'test/fixtures/supervisor-launch.js', args: [config], waitReady: false });
    const supervisord = (await launcher.waitFor((e) => e.event === 'launched', 'supervisord to start')).pid!;
    cleanups.push(async () => {
      if (!isAlive(supervisord)) return;
      await supervisorctl(config, 'shutdown');
      await pollUntil(() => !isAlive(supervisord), 'supervisord to shut down', 30_000).catch(() => undefined); // reapAll next
    });

    const ready = await pollUntil(() => appEvents(appLog).find((e) => e.event === 'ready'), 'the app under supervisord to be ready', 60_000)
      .catch((error: Error) => {
        const logs = ['supervisord.log', 'app.err.log'].map((f) => fs.existsSync(path.join(dir, f)) ? fs.readFileSync(path.join(dir, f), 'utf8') : '');
        throw new Error(`${error.message}\n${logs.join('\n')}`);
      });
    const masterPid = ready.status!.pid;
    const port = portOf(ready.addresses![0]);
    await pollUntil(async () => /RUNNING/.test((await supervisorctl(config, 'status', 'app')).out), 'supervisord to report app RUNNING', 30_000);
    expect(await supervisorctl(config, 'pid', 'app')).toEqual({ code: 0, out: String(masterPid) });
    // the program got its environment from the environment= line
    const environ = fs.readFileSync(`/proc/${masterPid}/environ`, 'utf8').split('\0');
    expect(environ).toContain(`FIXTURE_OPTIONS=${fixture}`);
    expect(environ.filter((e) => e.startsWith('HANDOVER_TEST_RUN='))).toEqual(
      fs.readFileSync(`/proc/${supervisord}/environ`, 'utf8').split('\0').filter((e) => e.startsWith('HANDOVER_TEST_RUN=')),
    );
    // supervisord's child is the master itself (no wrapper in between)
    expect(Number(fs.readFileSync(`/proc/${masterPid}/stat`, 'utf8').split(') ')[1].split(' ')[1])).toBe(supervisord);

    const load = new Load({ port, connections: 16 });
    const served = [ready.status!.workers[0].pid];
    await load.servedBy(served[0]);
    for (let i = 0; i < 3; i++) {
      const before = appEvents(appLog).filter((e) => e.event === 'reloaded' || e.event === 'reload-failed').length;
      const signalled = await supervisorctl(config, 'signal', 'HUP', 'app');
      expect(signalled.code, signalled.out).toBe(0);
      const outcome = await pollUntil(() => {
        if (!isAlive(masterPid)) throw new Error(`the master died after supervisorctl signal HUP:\n${fs.readFileSync(path.join(dir, 'app.err.log'), 'utf8')}`);
        return appEvents(appLog).filter((e) => e.event === 'reloaded' || e.event === 'reload-failed')[before];
      }, `reload ${i + 1} after supervisorctl signal HUP`, 60_000);
      expect(outcome.event, outcome.error).toBe('reloaded');
      const fresh = outcome.status!.workers.filter((w) => w.generation === outcome.generation).map((w) => w.pid);
      expect(fresh).toHaveLength(1);
      expect(served).not.toContain(fresh[0]);
      await load.servedBy(fresh[0]); // a new worker serves before the next reload
      served.push(fresh[0]);
      expect(await supervisorctl(config, 'pid', 'app'), 'the pid supervisord tracks').toEqual({ code: 0, out: String(masterPid) });
    }
    const stats = await load.stop();
    expect(stats.errors).toEqual({});
    expect(stats.failed).toBe(0);
    for (const pid of served) expect(stats.pids.get(pid), `responses from worker ${pid}`).toBeGreaterThan(0);
    expect(/RUNNING/.test((await supervisorctl(config, 'status', 'app')).out)).toBe(true);

    // A request in flight in the worker when supervisord stops the program.
    const current = served[served.length - 1];
    const control = controlSocketOf(current);
    const slow = get(port, '/slow?ms=1500');
    slow.catch(() => {});
    await pollUntil(async () => {
      const status = await adminStatus(control);
      return status.workers.find((w) => w.pid === current)?.connections === 1; // the load's connections are closed: this one is the slow request
    }, 'the slow request to be accepted by the worker', 30_000);
    const stopped = await supervisorctl(config, 'stop', 'app');
    expect(stopped.code, stopped.out).toBe(0);
    expect(stopped.out).toMatch(/app: stopped/);
    expect(await slow).toMatchObject({ status: 200, body: 'slow done', pid: current });
    expect(appEvents(appLog).filter((e) => e.event === 'stop')).toHaveLength(1);
    const exits = appEvents(appLog).filter((e) => e.event === 'worker-exit') as unknown as { pid: number; code: number | null; signal: string | null }[];
    expect(exits.find((e) => e.pid === current), 'the last worker drained and exited').toMatchObject({ code: 0, signal: null });
    expect(isAlive(masterPid)).toBe(false);
    for (const pid of served) expect(isAlive(pid), `worker ${pid}`).toBe(false);
    // supervisord saw a clean exit of the program it started (not a SIGKILL at stopwaitsecs)
    expect(fs.readFileSync(path.join(dir, 'supervisord.log'), 'utf8')).toMatch(/stopped: app \(exit status 0\)/);

    const shutdown = await supervisorctl(config, 'shutdown');
    expect(shutdown.code, shutdown.out).toBe(0);
    expect(await launcher.waitFor((e) => e.event === 'launched-exit', 'supervisord to exit', 30_000)).toMatchObject({ code: 0 });
    await launcher.exited;
    await pollUntil(() => ourProcesses().length === 0, 'every process to be gone', 10_000);
    expect(isAlive(supervisord)).toBe(false);
  });
});
