// Starting masters for tests, waiting on their events, and reaping every
// process a test started (masters, workers, orphans) by an env marker.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { ENV } from '../../src/protocol';

export const ROOT = path.resolve(__dirname, '..', '..');

const MARKER = 'HANDOVER_TEST_RUN';
const RUN_ID = randomUUID();

export interface MasterEvent {
  event: string;
  generation?: number;
  error?: string;
  code?: string;
  addresses?: string[];
  durationMs?: number;
  pid?: number;
  /** full-gc events (fixture option reportGc): whether something forced the collection. */
  forced?: boolean;
  status?: {
    pid: number;
    generation: number;
    addresses: string[];
    workers: { pid: number; slot: number; generation: number; state: string }[];
  };
}

/** Polls `check` until it returns a truthy value; throws naming `what` at the deadline. */
export async function pollUntil<T>(check: () => T | Promise<T>, what: string, timeoutMs = 30_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    // a zombie still answers kill(0); it is dead for our purposes
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Live (not zombie) children of `pid`, from /proc. */
export function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
    const text = fs.readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
    if (text) children.push(...text.split(/\s+/).map(Number));
  }
  return children.filter(isAlive);
}

/**
 * A master's children that are workers already: they have exec'd (their
 * environment has the worker's token). A child between fork and exec is
 * still a copy of the master, and the master's spawn waits on it: stopping it
 * with SIGSTOP there would freeze the master, not a worker.
 */
export function workerProcessesOf(masterPid: number): number[] {
  return childrenOf(masterPid).filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').some((v) => v.startsWith(`${ENV.token}=`));
    } catch {
      return false; // gone
    }
  });
}

/** Writes JSON atomically (a worker starting meanwhile reads the old file or the new one, never half). */
export function writeJson(file: string, value: unknown): void {
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(value));
  fs.renameSync(`${file}.tmp`, file);
}

export function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

export function tempDir(prefix = 'handover-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

const afterTest: (() => void)[] = [];

/** A temp directory that cleanUp() removes. */
export function scratch(prefix = 'handover-test-'): string {
  const dir = tempDir(prefix);
  afterTest.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs `undo` at the next cleanUp(). */
export function onCleanUp(undo: () => void): void {
  afterTest.push(undo);
}

/** For afterEach: reaps every process the test started, then undoes what it asked to, last first. */
export async function cleanUp(): Promise<void> {
  await reapAll();
  for (const undo of afterTest.splice(0).reverse()) undo();
}

export class Master {
  readonly events: MasterEvent[] = [];
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private waiters: (() => void)[] = [];

  constructor(readonly proc: ChildProcess) {
    let buffered = '';
    proc.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      buffered += chunk;
      let newline: number;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        try {
          this.events.push(JSON.parse(line));
        } catch {
          // a line an example printed; not an event
        }
        this.wake();
      }
    });
    proc.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr += chunk;
      if (process.env.HANDOVER_TEST_VERBOSE) process.stderr.write(chunk);
      this.wake();
    });
    this.exited = new Promise((resolve) => proc.once('exit', (code, signal) => {
      this.wake();
      resolve({ code, signal });
    }));
  }

  get pid(): number {
    return this.proc.pid!;
  }

  /** The port of the first bound address. */
  get port(): number {
    const ready = this.events.find((e) => e.event === 'ready');
    const address = ready?.addresses?.[0] ?? '';
    return Number(address.slice(address.lastIndexOf(':') + 1));
  }

  /** Pids of the workers the master last reported. */
  get workerPids(): number[] {
    const last = [...this.events].reverse().find((e) => e.status);
    return last?.status?.workers.map((w) => w.pid) ?? [];
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** Resolves with the n-th (from `from`) event matching; rejects at the deadline or if the master exits. */
  async waitFor(match: (e: MasterEvent) => boolean, what: string, timeoutMs = 60_000): Promise<MasterEvent> {
    const deadline = Date.now() + timeoutMs;
    let exited = false;
    void this.exited.then(() => (exited = true));
    for (;;) {
      const found = this.events.find(match);
      if (found) return found;
      if (exited) throw new Error(`master exited while waiting for ${what}; stderr:\n${this.stderr}`);
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`timed out waiting for ${what}; stderr:\n${this.stderr}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(remaining, 1000));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  count(event: string): number {
    return this.events.filter((e) => e.event === event).length;
  }

  /** Sends `signal` and waits for the outcome event of the reload it starts. */
  async reload(signal: NodeJS.Signals = 'SIGHUP'): Promise<MasterEvent> {
    const before = this.count('reloaded') + this.count('reload-failed');
    this.proc.kill(signal);
    await this.waitFor(() => this.count('reloaded') + this.count('reload-failed') > before, `reload after ${signal}`);
    return this.events.filter((e) => e.event === 'reloaded' || e.event === 'reload-failed')[before];
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    this.proc.kill(signal);
    return this.exited;
  }
}

export interface StartOptions {
  /** Script to run, relative to the repository root. Default the test fixture. */
  script?: string;
  /** FIXTURE_OPTIONS for test/fixtures/app.js. */
  fixture?: Record<string, unknown>;
  env?: Record<string, string>;
  args?: string[];
  /** Wait for the `ready` event (default true). */
  waitReady?: boolean;
}

/** Starts a master as the user would (`node script`), tagged for reaping. */
export async function startMaster(options: StartOptions = {}): Promise<Master> {
  const script = path.join(ROOT, options.script ?? 'test/fixtures/app.js');
  const proc = spawn(process.execPath, [script, ...(options.args ?? [])], {
    cwd: ROOT,
    env: {
      ...process.env,
      ...options.env,
      FIXTURE_OPTIONS: JSON.stringify(options.fixture ?? {}),
      [MARKER]: RUN_ID,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const master = new Master(proc);
  if (options.waitReady !== false) await master.waitFor((e) => e.event === 'ready', 'the master to be ready');
  return master;
}

/** The environment entry that tags a process (and its children) for reaping, for tests that spawn their own. */
export const REAP_TAG: Record<string, string> = { [MARKER]: RUN_ID };

/** Every live process this test run started, found by its environment marker. */
export function ourProcesses(): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (fs.readFileSync(`/proc/${entry}/environ`, 'utf8').includes(`${MARKER}=${RUN_ID}`)) pids.push(Number(entry));
    } catch {
      // gone, or not ours to read
    }
  }
  return pids.filter(isAlive);
}

/** SIGKILLs every process this run started and waits until they are gone. */
export async function reapAll(): Promise<void> {
  for (const pid of ourProcesses()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await pollUntil(() => ourProcesses().length === 0, 'every test process to be reaped', 10_000);
}

/** The error code of a connection attempt ('ECONNREFUSED' once nothing listens), or 'connected'. */
export function connectOutcome(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
}

/** Why a test needing `command` must skip (it is not installed, and how to get it), or undefined. */
export function missingTool(command: string, versionFlag: string, install: string): string | undefined {
  try {
    execFileSync(command, [versionFlag], { stdio: 'ignore' });
    return undefined;
  } catch {
    return `${command} is not installed (${install})`;
  }
}
