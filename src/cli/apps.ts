// `handover start` before there is a master: a config file becomes one
// master per app, --daemon detaches, and a single app in the foreground
// becomes this process's own master (so the pid a service manager started is
// the master's).
import * as path from 'node:path';
import { type ParsedArgs, UsageError, parseArgs } from './args';
import { type AppPlan, isConfigFile, loadConfig } from './config';
import { runForeground, startDetached } from './daemon';
import { START_OPTIONS, start } from './start';

/** `handover start`'s own flags for this stage, left out of the masters' command lines. */
const LAUNCH_FLAGS = new Set(['--daemon', '-d']);

function launchOnly(argv: string[], scriptIndex: number): string[] {
  return argv.filter((word, i) => (scriptIndex >= 0 && i >= scriptIndex) || !LAUNCH_FLAGS.has(word));
}

/** Every flag but the config file itself, --daemon, --env and --only. */
function sharedFlags(argv: string[], configIndex: number): string[] {
  const flags: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (i === configIndex || LAUNCH_FLAGS.has(argv[i]) || /^--(env|only)=/.test(argv[i])) continue;
    if (argv[i] === '--env' || argv[i] === '--only') i++;
    else flags.push(argv[i]);
  }
  return flags;
}

/** `--env` and `--only` values, which only a config file gives a meaning. */
function configFlag(parsed: ParsedArgs, name: string): string | undefined {
  const value = parsed.options.get(name);
  return typeof value === 'string' ? value : undefined;
}

/**
 * Runs one app in this process: its directory, its environment, and a
 * command line its workers re-run (they start from process.argv).
 */
function runHere(app: AppPlan): Promise<number> {
  process.chdir(app.cwd);
  Object.assign(process.env, app.env);
  process.argv = [process.argv[0], process.argv[1], 'start', ...app.argv];
  return start(parseArgs('start', app.argv, START_OPTIONS, true));
}

export async function startCommand(argv: string[], parsed: ParsedArgs): Promise<number> {
  const [target] = parsed.positionals;
  const daemon = parsed.options.has('daemon');
  const envName = configFlag(parsed, 'env');
  const only = configFlag(parsed, 'only');
  if (target && isConfigFile(target)) {
    const config = await loadConfig(target, envName, only?.split(',').filter(Boolean));
    for (const warning of config.warnings) process.stderr.write(`handover: warning: ${warning}\n`);
    if (parsed.nodeFlags.length > 0) throw new UsageError(`Node flags for a config file's apps go in each app's node_args (got -- ${parsed.nodeFlags.join(' ')})`);
    if (parsed.programArgs.length > 0) throw new UsageError(`${parsed.programArgs.join(' ')}: a config file takes no program arguments; give them in each app's args`);
    // flags next to the config file (before or after it) apply to every app
    const shared = sharedFlags(argv, parsed.scriptIndex);
    const apps = config.apps.map((app) => ({ ...app, argv: [...shared, ...app.argv] }));
    if (daemon) return startDetached(apps);
    return apps.length === 1 ? runHere(apps[0]) : runForeground(apps);
  }
  if (envName !== undefined || only !== undefined) {
    throw new UsageError(`--${envName !== undefined ? 'env' : 'only'} picks from a config file's apps (handover start --env production ecosystem.config.js); for a script, --env-file FILE gives it variables`);
  }
  for (const note of parsed.notes) process.stderr.write(`handover: note: ${note}\n`);
  if (!daemon) return start(parsed);
  if (!target) throw new UsageError('name the program to run: handover start --daemon [options] <script> [args...]');
  const name = (parsed.options.get('name') as string | undefined) ?? path.basename(target).replace(/\.[cm]?[jt]s$/, '');
  return startDetached([{ name, cwd: process.cwd(), env: {}, argv: launchOnly(argv, parsed.scriptIndex) }]);
}
