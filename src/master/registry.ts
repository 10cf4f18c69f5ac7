// The per-user registry of running masters, so the operator's command finds
// one by name (`handover reload api`) instead of by pid. One JSON file per
// master in `$XDG_RUNTIME_DIR/handover`, else in a private directory
// `handover-<uid>` under the temp dir. An entry is stale only when its
// control socket proves nobody listens there (ECONNREFUSED, ENOENT): a live
// master always listens, and a pid says nothing across pid namespaces that
// share a temp dir (invariant 13). Only then is it removed.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

export interface RegistryEntry {
  /** The name the operator uses (`--name`, else the script's base name). */
  name: string;
  pid: number;
  /** Where the master was started: the default when several run. */
  cwd: string;
  /** The master's control socket. */
  socket: string;
  /** What it runs, for `handover list`. */
  command: string;
  /** ms since the epoch. */
  started: number;
}

/** How long a liveness probe may take before the entry counts as alive (busy, not gone). */
const PROBE_TIMEOUT_MS = 2_000;

/** The registry directory; created private (0700) and checked to be ours and private. */
export function registryDir(): string {
  const uid = process.getuid!();
  const runtime = process.env.XDG_RUNTIME_DIR;
  const dir = runtime && path.isAbsolute(runtime) && fs.existsSync(runtime)
    ? path.join(runtime, 'handover')
    : path.join(os.tmpdir(), `handover-${uid}`);
  try {
    fs.mkdirSync(dir, { mode: 0o700 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new Error(`cannot create the registry directory ${dir} (${(error as NodeJS.ErrnoException).code}); set XDG_RUNTIME_DIR or TMPDIR to a writable directory`);
    }
  }
  // In a shared temp dir someone else may have made it first, to read or plant entries.
  const stat = fs.lstatSync(dir);
  if (!stat.isDirectory() || stat.uid !== uid || (stat.mode & 0o077) !== 0) {
    throw new Error(`the registry directory ${dir} is not a private directory of uid ${uid} (owner ${stat.uid}, mode ${(stat.mode & 0o777).toString(8)}); remove it, or set XDG_RUNTIME_DIR`);
  }
  return dir;
}

/** The entry of this process while it is registered. */
let registered: string | undefined;

/**
 * Adds this master to the registry. Call once its control socket listens;
 * unregister() before it stops listening, so an entry never outlives it
 * except after a SIGKILL (then the probe proves it stale).
 */
export function register(entry: RegistryEntry): void {
  const dir = registryDir();
  // pid plus random: pids repeat across pid namespaces sharing the directory.
  const file = path.join(dir, `${entry.pid}-${randomBytes(4).toString('hex')}.json`);
  const temp = `${file}.tmp`;
  fs.writeFileSync(temp, `${JSON.stringify(entry)}\n`, { mode: 0o600 });
  fs.renameSync(temp, file);
  registered = file;
}

/** Removes this master's own entry (only ever its own file). */
export function unregister(): void {
  if (registered) fs.rmSync(registered, { force: true });
  registered = undefined;
}

/** Resolves false only when nothing listens on `socket` (ECONNREFUSED, ENOENT). */
export function isListening(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const conn = net.connect(socket);
    const done = (alive: boolean) => {
      clearTimeout(timer);
      conn.destroy();
      resolve(alive);
    };
    const timer = setTimeout(() => done(true), PROBE_TIMEOUT_MS);
    conn.on('connect', () => done(true));
    conn.on('error', (error: NodeJS.ErrnoException) => done(error.code !== 'ECONNREFUSED' && error.code !== 'ENOENT'));
  });
}

/** The live masters; entries proven stale (and unreadable leftovers) are removed. */
export async function liveMasters(): Promise<RegistryEntry[]> {
  const dir = registryDir();
  const files = fs.readdirSync(dir).filter((name) => name.endsWith('.json'));
  const entries = await Promise.all(files.map(async (name): Promise<RegistryEntry | undefined> => {
    const file = path.join(dir, name);
    let entry: RegistryEntry;
    try {
      entry = JSON.parse(fs.readFileSync(file, 'utf8')) as RegistryEntry;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') fs.rmSync(file, { force: true }); // torn or foreign: no master wrote it whole
      return undefined;
    }
    if (typeof entry.socket !== 'string' || !(await isListening(entry.socket))) {
      fs.rmSync(file, { force: true });
      return undefined;
    }
    return entry;
  }));
  return entries.filter((e): e is RegistryEntry => e !== undefined).sort((a, b) => a.started - b.started);
}
