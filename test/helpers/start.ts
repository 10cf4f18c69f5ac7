// `handover start` as a test drives it: a master running a program, the
// `handover` command against it (with the test's own registry), its status.
import { execFile } from 'node:child_process';
import * as http from 'node:http';
import * as path from 'node:path';
import { adminStatus, controlSocketOf } from './control';
import { freePort } from './ports';
import { type Master, ROOT, pollUntil, scratch, startMaster } from './processes';

export const CLI = path.join(ROOT, 'dist/cli/cli.js');
export const FIXTURES = path.join(ROOT, 'test/fixtures/unmodified');

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface Status {
  generation: number;
  addresses: string[];
  workers: { pid: number; slot: number; generation: number; state: string; rssBytes?: number; uptimeMs?: number }[];
}

export class App {
  /** What the master wrote to stdout: its workers' stdout, prefixed. */
  stdout = '';

  /** `masterPid`: the master's, when `master` is a launcher that started it. */
  constructor(readonly master: Master, private readonly runtime: string, private readonly masterPid = master.pid) {
    master.proc.stdout!.on('data', (chunk: string) => (this.stdout += chunk));
  }

  /** `handover ...args` as the same user, with this app's registry. */
  cli(...args: string[]): Promise<Run> {
    return new Promise((resolve) => {
      execFile(process.execPath, [CLI, ...args], { cwd: ROOT, timeout: 120_000, env: { ...process.env, XDG_RUNTIME_DIR: this.runtime } },
        (error, stdout, stderr) => resolve({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout, stderr }));
    });
  }

  async status(): Promise<Status | undefined> {
    const run = await this.cli('status', '--json');
    return run.code === 0 ? JSON.parse(run.stdout) as Status : undefined;
  }

  /**
   * Waits until `generation` serves with `workers` ready workers; returns that
   * status. Polls over the control socket, as `handover status` does, rather
   * than starting a CLI process every 20 ms.
   */
  async serving(generation: number, workers = 2): Promise<Status> {
    return pollUntil(async () => {
      if (this.master.proc.exitCode !== null) throw new Error(`the master exited; its output:\n${this.master.stderr}`);
      const s = await this.quickStatus();
      const ready = s?.workers.filter((w) => w.generation === generation && w.state === 'ready') ?? [];
      return s && s.generation === generation && ready.length === workers ? s : undefined;
    }, `generation ${generation} to serve with ${workers} workers; output:\n${this.master.stderr}`, 90_000);
  }

  private controlSocket?: string;

  /** The master's status over its control socket; undefined until it has a worker to name that socket. */
  private async quickStatus(): Promise<Status | undefined> {
    try {
      this.controlSocket ??= controlSocketOf(this.masterPid);
      return await adminStatus(this.controlSocket);
    } catch {
      return undefined;
    }
  }

  pids(status: Status, generation: number): number[] {
    return status.workers.filter((w) => w.generation === generation).map((w) => w.pid).sort();
  }
}

/**
 * `handover start ...args script` with its own registry. The fixtures listen
 * on PORT and METRICS_PORT (port 0 would stay private to each worker); each
 * gets a free port unless `env` names one.
 */
export async function start(script: string, args: string[] = [], env: Record<string, string> = {}): Promise<App> {
  const runtime = scratch('handover-start-');
  env = { PORT: String(await freePort()), METRICS_PORT: String(await freePort()), ...env };
  const master = await startMaster({
    script: 'dist/cli/cli.js',
    args: ['start', ...args, script],
    env: { XDG_RUNTIME_DIR: runtime, ...env },
    waitReady: false,
  });
  return new App(master, runtime);
}

export function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(':') + 1));
}

export function get(port: number): Promise<{ status: number; pid: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 20_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, pid: Number(res.headers['x-pid']), body }));
    }).on('error', reject);
  });
}

