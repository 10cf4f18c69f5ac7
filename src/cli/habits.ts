// Start-up checks for habits that work under pm2 and quietly fail here: a
// master started through npm or npx (the pid a service manager signals is
// npm's), and a TypeScript script on a Node that cannot run it.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UsageError } from './args';

/** How far up the process tree npm is looked for (npm -> sh -c -> node). */
const ANCESTORS = 4;

function parentOf(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

function commandLine(pid: number): string[] {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

/** The npm or npx process this one runs under, if any (Linux; elsewhere undefined). */
export function npmAncestor(): { pid: number; command: string } | undefined {
  let pid: number | undefined = process.ppid;
  for (let depth = 0; depth < ANCESTORS && pid !== undefined && pid > 1; depth++) {
    const argv = commandLine(pid);
    // npm runs as `npm ...` or `node /usr/lib/node_modules/npm/bin/npm-cli.js ...`
    const tool = argv.slice(0, 2).map((a) => path.basename(a)).find((a) => /^(npm|npx)(-cli\.js)?$/.test(a));
    if (tool) return { pid, command: tool.replace('-cli.js', '') };
    pid = parentOf(pid);
  }
  return undefined;
}

/** The warning for a master under npm: what a service manager would signal, and what to run instead. */
export function npmWarning(ancestor: { pid: number; command: string }, argv: string[]): string {
  return (
    `this master (pid ${process.pid}) runs under ${ancestor.command} (pid ${ancestor.pid}): a service manager holds ${ancestor.command}'s pid, ` +
    `so systemd's kill -HUP $MAINPID or docker stop signal ${ancestor.command}, which exits or ignores it, and the master keeps the old code. ` +
    `Run the master directly: node_modules/.bin/handover ${argv.join(' ')} (in a Dockerfile: CMD ["node_modules/.bin/handover", ...]; ` +
    `in an npm script: exec handover ...), or reload with handover reload, which finds the master itself`
  );
}

const TYPESCRIPT = /\.[cm]?ts$/;
/** Node flags that make Node run TypeScript (a loader, or Node's own type stripping). */
const TS_FLAGS = /^(--import|--loader|--experimental-loader|--require|-r|--experimental-strip-types|--experimental-transform-types)(=|$)/;

/** Refuses a .ts script this Node cannot run, with the command line that runs it. */
export function checkTypeScript(script: string, nodeFlags: string[], argv: string[]): void {
  if (!TYPESCRIPT.test(script)) return;
  if ((process.features as { typescript?: unknown }).typescript) return; // Node >= 22.18 strips types by default
  if (nodeFlags.some((f) => TS_FLAGS.test(f)) || process.execArgv.some((f) => TS_FLAGS.test(f))) return;
  const at = argv.indexOf(script);
  const loader = nodeFlags.length > 0 ? ['--import', 'tsx'] : ['--', '--import', 'tsx']; // after the `--` there is, or with one
  const corrected = [...argv.slice(0, at), ...loader, ...argv.slice(at)].join(' ');
  throw new UsageError(
    `${script} is TypeScript, which Node ${process.version} cannot run by itself; give the workers a loader: ` +
      `handover start ${corrected} (after npm install tsx), or use Node >= 22.18`,
  );
}
