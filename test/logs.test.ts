// The bounds on what handover keeps of an app's output: the log file rotates
// by size into a fixed number of files (the disk never fills), and the
// master's ring keeps a bounded number of lines.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { RotatingFile } from '../src/cli/log-file';
import { cleanUp, scratch } from './helpers/processes';

afterEach(cleanUp);

describe('log files', () => {
  it('rotate at the size given into at most N files; the newest lines are in the current file', () => {
    const dir = scratch('handover-logfile-');
    const file = path.join(dir, 'api.log');
    const log = new RotatingFile(file, 1_000, 3);
    const line = (i: number) => `line ${String(i).padStart(5, '0')} ${'x'.repeat(80)}\n`;
    for (let i = 0; i < 2_000; i++) log.write(line(i)); // about 190 kB through a 3 x 1 kB budget
    expect(fs.readdirSync(dir).sort()).toEqual(['api.log', 'api.log.1', 'api.log.2']);
    for (const name of fs.readdirSync(dir)) expect(fs.statSync(path.join(dir, name)).size, name).toBeLessThanOrEqual(1_000);
    expect(fs.readFileSync(file, 'utf8').trimEnd().split('\n').at(-1)).toBe(line(1_999).trimEnd());
    // the rotated files hold the lines just before, in order
    const all = ['api.log.2', 'api.log.1', 'api.log'].map((n) => fs.readFileSync(path.join(dir, n), 'utf8')).join('').trimEnd().split('\n');
    const numbers = all.map((l) => Number(l.split(' ')[1]));
    expect(numbers).toEqual(numbers.map((_, i) => numbers[0] + i));
  });

  it('a master restarted on the same file appends and keeps rotating', () => {
    const dir = scratch('handover-logfile-');
    const file = path.join(dir, 'api.log');
    new RotatingFile(file, 100, 2).write('a'.repeat(60) + '\n');
    new RotatingFile(file, 100, 2).write('b'.repeat(60) + '\n');
    expect(fs.readFileSync(file, 'utf8')).toBe('b'.repeat(60) + '\n');
    expect(fs.readFileSync(`${file}.1`, 'utf8')).toBe('a'.repeat(60) + '\n');
  });
});
