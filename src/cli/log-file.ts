// A background master's log file: `<name>.log` in the per-user state
// directory, rotated by size into `<name>.log.1` ... `<name>.log.<files-1>`,
// the oldest removed, so a chatty app never fills the disk: at most
// `files` x `maxBytes` per app.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const DEFAULT_LOG_BYTES = 10 * 1024 * 1024;
export const DEFAULT_LOG_FILES = 5;

/** `$XDG_STATE_HOME/handover/logs`, else `~/.local/state/handover/logs`; created private. */
export function logDir(): string {
  const state = process.env.XDG_STATE_HOME;
  const base = state && path.isAbsolute(state) ? state : path.join(os.homedir(), '.local', 'state');
  const dir = path.join(base, 'handover', 'logs');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

export function logFileOf(name: string): string {
  return path.join(logDir(), `${name.replace(/[^\w.-]/g, '_')}.log`);
}

export class RotatingFile {
  private fd: number;
  private size: number;

  constructor(readonly file: string, private readonly maxBytes = DEFAULT_LOG_BYTES, private readonly files = DEFAULT_LOG_FILES) {
    this.fd = fs.openSync(file, 'a', 0o600);
    this.size = fs.fstatSync(this.fd).size;
  }

  /** Appends; synchronous, so a line written just before an exit is on disk. A full disk loses the line, never the master. */
  write(text: string): void {
    const bytes = Buffer.byteLength(text);
    if (this.size > 0 && this.size + bytes > this.maxBytes) this.rotate();
    try {
      fs.writeSync(this.fd, text);
      this.size += bytes;
    } catch {
      // ENOSPC, EIO: dropped; the ring still has it for `handover logs`
    }
  }

  private rotate(): void {
    fs.closeSync(this.fd);
    for (let i = this.files - 1; i >= 1; i--) {
      const from = i === 1 ? this.file : `${this.file}.${i - 1}`;
      try {
        fs.renameSync(from, `${this.file}.${i}`);
      } catch {
        // not there yet
      }
    }
    if (this.files <= 1) fs.rmSync(this.file, { force: true });
    this.fd = fs.openSync(this.file, 'a', 0o600);
    this.size = 0;
  }
}
