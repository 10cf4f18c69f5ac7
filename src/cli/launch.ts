// What `handover start` does in the master before it serves: refuse what
// cannot run (a .ts script without a loader), warn about the npm pid trap,
// and keep its output for `handover logs` (and, detached, in its log file).
import { captureOutput } from '../master/log-ring';
import { type OptionSpec, type ParsedArgs, parseBytes, parseCount } from './args';
import { LOG_FILE_ENV } from './daemon';
import { checkTypeScript, npmAncestor, npmWarning } from './habits';
import { DEFAULT_LOG_BYTES, DEFAULT_LOG_FILES, RotatingFile } from './log-file';

/** Flags about how the masters are started, not what they serve. */
export const LAUNCH_OPTIONS: OptionSpec[] = [
  { name: 'daemon', alias: 'd', value: 'none' },
  { name: 'env', value: 'required' },
  { name: 'only', value: 'required' },
  { name: 'log-size', value: 'required' },
  { name: 'log-files', value: 'required' },
];

export const LAUNCH_USAGE = `  -d, --daemon           run in the background; returns once every app serves (exit 0, names and
                         pids) or one failed (exit 1, its error); output to rotated log files
                         in $XDG_STATE_HOME/handover/logs (default ~/.local/state/handover/logs)
  --log-size SIZE        with --daemon: rotate the log file at this size (default 10mb)
  --log-files N          with --daemon: files kept per app, the current one included (default 5)
  --env NAME             with a config file: lay each app's env_NAME over its env
  --only NAME[,NAME]     with a config file: start only these apps`;

export function prepareMaster(parsed: ParsedArgs): void {
  const argv = process.argv.slice(3);
  checkTypeScript(parsed.positionals[0], parsed.nodeFlags, argv);
  const logFile = process.env[LOG_FILE_ENV];
  delete process.env[LOG_FILE_ENV]; // the workers write through the master
  if (logFile === undefined) {
    const npm = npmAncestor();
    if (npm) process.stderr.write(`handover: warning: ${npmWarning(npm, ['start', ...argv])}\n`);
    captureOutput();
    return;
  }
  const size = parsed.options.get('log-size');
  const files = parsed.options.get('log-files');
  const file = new RotatingFile(
    logFile,
    typeof size === 'string' ? parseBytes('log-size', size) : DEFAULT_LOG_BYTES,
    typeof files === 'string' ? parseCount('log-files', files) : DEFAULT_LOG_FILES,
  );
  captureOutput((text) => file.write(text));
}
