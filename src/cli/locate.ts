// Which master a command is for: by NAME (the registry), by --pid, by
// --socket, or, with none of them, the only master this user runs (or the one
// started from the current directory).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { type RegistryEntry, liveMasters } from '../master/registry';
import { UsageError } from './args';

export interface Target {
  socket: string;
  /** The registry entry, when the master was found there. */
  entry?: RegistryEntry;
}

function describe(entries: RegistryEntry[]): string {
  return entries.map((e) => `${e.name} (pid ${e.pid}, in ${e.cwd})`).join(', ');
}

/** A master started from code registers nowhere; it is found by its control directory. */
function bySocketDirectory(pid: string, controlDir: string | undefined): string {
  const dir = controlDir ?? os.tmpdir();
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new UsageError(`cannot read the control directory ${dir} (${code}); give the directory the master was started with (its controlDir option) to --control-dir`);
  }
  const match = names.find((name) => name.startsWith(`handover-${pid}-`));
  if (!match) throw new UsageError(`no control socket for master pid ${pid} in ${dir} (is it running, as this user? --control-dir?)`);
  return path.join(dir, match, 'control.sock');
}

export async function locate(name: string | undefined, options: Map<string, string | true>): Promise<Target> {
  const socket = options.get('socket');
  if (typeof socket === 'string') return { socket };
  const pid = options.get('pid');
  const controlDir = options.get('control-dir');
  if (pid !== undefined) {
    if (typeof pid !== 'string' || !/^\d+$/.test(pid)) throw new UsageError(`--pid needs a process id, e.g. --pid 1234 (got ${pid === true ? 'nothing' : pid})`);
    const entry = controlDir === undefined ? (await liveMasters()).find((e) => e.pid === Number(pid)) : undefined;
    if (entry) return { socket: entry.socket, entry };
    return { socket: bySocketDirectory(pid, typeof controlDir === 'string' ? controlDir : undefined) };
  }
  const live = await liveMasters();
  if (name !== undefined) {
    let matches = live.filter((e) => e.name === name);
    if (matches.length === 0 && /^\d+$/.test(name)) matches = live.filter((e) => e.pid === Number(name));
    if (matches.length === 1) return { socket: matches[0].socket, entry: matches[0] };
    if (matches.length > 1) throw new UsageError(`${matches.length} masters are named ${name}: ${describe(matches)}; give --pid PID`);
    throw new UsageError(
      `no master named ${name} is running as this user${live.length ? `; running: ${describe(live)}` : ''} ` +
        '(`handover list` shows them; a master started from code is found with --pid PID; ' +
        'one another user started is administered by root or that user)',
    );
  }
  if (live.length === 1) return { socket: live[0].socket, entry: live[0] };
  const here = live.filter((e) => e.cwd === process.cwd());
  if (here.length === 1) return { socket: here[0].socket, entry: here[0] };
  if (live.length === 0) {
    throw new UsageError('no master is running as this user (start one with `handover start app.js`; a master started from code is found with --pid PID or --socket PATH)');
  }
  throw new UsageError(`${live.length} masters are running: ${describe(live)}; name one (handover status NAME) or give --pid PID`);
}
