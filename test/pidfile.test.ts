// The pid file (src/platform/pidfile.ts): written atomically; removed only by
// the process that wrote it, and only while it is still the file it wrote
// (invariant 13: a failed second start must not delete a running master's).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { adoptPidFile, removePidFile, writePidFile } from '../src/platform/pidfile';

let dir: string;
let pidFile: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handover-pidfile-'));
  pidFile = path.join(dir, 'app.pid');
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Another process's atomic write: a new file renamed over the path. */
function writtenByAnother(content: string): void {
  fs.writeFileSync(`${pidFile}.other`, content);
  fs.renameSync(`${pidFile}.other`, pidFile);
}

describe('writePidFile', () => {
  it('writes the pid and a newline, replacing what was there, and leaves no temporary file', () => {
    fs.writeFileSync(pidFile, '1\n');
    writePidFile(pidFile, 4242);
    expect(fs.readFileSync(pidFile, 'utf8')).toBe('4242\n');
    expect(fs.readdirSync(dir)).toEqual(['app.pid']);
    writePidFile(pidFile);
    expect(fs.readFileSync(pidFile, 'utf8')).toBe(`${process.pid}\n`);
  });

  it('is atomic: the path names a new file, so a reader holding the old one never sees it half written', () => {
    writtenByAnother('1\n');
    const before = fs.statSync(pidFile).ino;
    const reader = fs.openSync(pidFile, 'r');
    try {
      writePidFile(pidFile, 4242);
      expect(fs.statSync(pidFile).ino).not.toBe(before);
      expect(fs.readFileSync(reader, 'utf8')).toBe('1\n');
    } finally {
      fs.closeSync(reader);
    }
  });

  it('fails with a Node-style error naming the path when its directory is missing, leaving nothing', () => {
    const missing = path.join(dir, 'no-such-dir', 'app.pid');
    expect(() => writePidFile(missing)).toThrow(expect.objectContaining({ code: 'ENOENT', syscall: 'open' }));
    expect(fs.readdirSync(dir)).toEqual([]);
  });
});

describe('removePidFile', () => {
  it('removes the file this process wrote', () => {
    writePidFile(pidFile);
    expect(removePidFile(pidFile)).toBe(true);
    expect(fs.existsSync(pidFile)).toBe(false);
  });

  it('leaves a pid file this process never wrote (a failed second start)', () => {
    writtenByAnother('4242\n');
    expect(removePidFile(pidFile)).toBe(false);
    expect(fs.readFileSync(pidFile, 'utf8')).toBe('4242\n');
  });

  it('leaves a file another process wrote over ours since (a successor in single mode)', () => {
    writePidFile(pidFile);
    writtenByAnother('4242\n');
    expect(removePidFile(pidFile)).toBe(false);
    expect(fs.readFileSync(pidFile, 'utf8')).toBe('4242\n');
  });

  it('leaves our file when its content was rewritten in place', () => {
    writePidFile(pidFile);
    fs.writeFileSync(pidFile, '4242\n'); // same inode, new content
    expect(removePidFile(pidFile)).toBe(false);
    expect(fs.readFileSync(pidFile, 'utf8')).toBe('4242\n');
  });

  it('leaves whatever else now sits at the path (a symlink to our file)', () => {
    writePidFile(pidFile);
    const moved = path.join(dir, 'moved.pid');
    fs.renameSync(pidFile, moved);
    fs.symlinkSync(moved, pidFile);
    expect(removePidFile(pidFile)).toBe(false);
    expect(fs.lstatSync(pidFile).isSymbolicLink()).toBe(true);
  });

  it('is a no-op when the file is already gone', () => {
    writePidFile(pidFile);
    fs.unlinkSync(pidFile);
    expect(removePidFile(pidFile)).toBe(false);
  });
});

describe('adoptPidFile', () => {
  it('takes over a file naming this process (single mode: the predecessor wrote our pid), so our stop removes it', () => {
    writtenByAnother(`${process.pid}\n`);
    expect(adoptPidFile(pidFile)).toBe(true);
    expect(removePidFile(pidFile)).toBe(true);
    expect(fs.existsSync(pidFile)).toBe(false);
  });

  it('refuses a file naming another process, which then stays', () => {
    writtenByAnother('4242\n');
    expect(adoptPidFile(pidFile)).toBe(false);
    expect(removePidFile(pidFile)).toBe(false);
    expect(fs.readFileSync(pidFile, 'utf8')).toBe('4242\n');
  });
});
