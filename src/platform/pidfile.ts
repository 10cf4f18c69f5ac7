// The pid file (the `pidFile` option): written atomically, removed only by the
// process that wrote (or adopted) it (invariant 13). A second copy started by mistake that
// fails on its way up, or a predecessor in single mode whose successor has
// written its own pid, must leave the file that names the live process alone.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** What this process wrote at each path: the file's identity and its content. */
const written = new Map<string, { dev: number; ino: number; content: string }>();

/**
 * Writes `pid` and a newline to `filePath` atomically: a temporary file in the
 * same directory, renamed over the path, so a reader never sees it half
 * written. Remembers the file so removePidFile can tell it is still ours.
 */
export function writePidFile(filePath: string, pid: number = process.pid): void {
  const target = path.resolve(filePath);
  const temporary = `${target}.${process.pid}.tmp`;
  const content = `${pid}\n`;
  fs.rmSync(temporary, { force: true }); // left by a crashed process that had our pid
  const fd = fs.openSync(temporary, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o644);
  try {
    fs.writeSync(fd, content);
    fs.fsyncSync(fd);
    const { dev, ino } = fs.fstatSync(fd);
    fs.renameSync(temporary, target);
    written.set(target, { dev, ino, content });
  } catch (error) {
    fs.rmSync(temporary, { force: true });
    throw error;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Takes over the pid file at `filePath` if it names this process: in single
 * mode the predecessor writes its successor's pid when the handover commits,
 * and the successor adopts that file so its own final stop may remove it.
 * Returns whether it did.
 */
export function adoptPidFile(filePath: string): boolean {
  const target = path.resolve(filePath);
  try {
    const stat = fs.lstatSync(target);
    const content = fs.readFileSync(target, 'utf8');
    if (!stat.isFile() || content !== `${process.pid}\n`) return false;
    const { dev, ino } = stat;
    written.set(target, { dev, ino, content });
    return true;
  } catch {
    return false;
  }
}

/**
 * Removes the pid file at `filePath` only if it is still the one this process
 * wrote (same file, same content): not one another process wrote since, nor
 * whatever else now sits at that path. Returns whether it removed it.
 */
export function removePidFile(filePath: string): boolean {
  const target = path.resolve(filePath);
  const mine = written.get(target);
  if (!mine) return false;
  written.delete(target);
  try {
    const stat = fs.lstatSync(target);
    if (!stat.isFile() || stat.dev !== mine.dev || stat.ino !== mine.ino) return false;
    if (fs.readFileSync(target, 'utf8') !== mine.content) return false;
    fs.unlinkSync(target);
    return true;
  } catch {
    return false; // already gone
  }
}
