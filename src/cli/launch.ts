// What `handover start` does in the master before it serves: refuse what
// cannot run (a .ts script without a loader), warn about the npm pid trap,
// and keep its output for `handover logs` (and, detached, in its log file).
// Its flags are in start.ts's START_OPTIONS (LAUNCH_OPTIONS).
import { captureOutput } from '../master/log-ring';
import { type ParsedArgs, parseBytes, parseCount } from './args';
import { LOG_FILE_ENV } from './daemon';
import { checkTypeScript, npmAncestor, npmWarning } from './habits';
import { DEFAULT_LOG_BYTES, DEFAULT_LOG_FILES, RotatingFile } from './log-file';

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
