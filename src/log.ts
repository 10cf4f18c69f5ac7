// Lifecycle lines. Default: one line each to stderr, prefixed with role and pid.

/** Anything with info/warn/error taking one string plugs in (console, pino, winston...). */
export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

const silent: Logger = { info() {}, warn() {}, error() {} };

function stderrLogger(role: string): Logger {
  const line = (level: string) => (message: string) => {
    process.stderr.write(`handover[${process.pid}] ${role} ${level}: ${message}\n`);
  };
  return { info: line('info'), warn: line('warn'), error: line('error') };
}

export function createLogger(option: Logger | false | undefined, role: 'master' | 'worker' | 'single'): Logger {
  if (option === false) return silent;
  return option ?? stderrLogger(role);
}
