// Run-time validation of every option (JavaScript users have no type checker):
// the error's class, that it names the option, and that it says what to do.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MAX_DURATION_MS, OPTIONS, optionsTable, resolveOptions, type ServerOptions } from '../src/options';
import { optionsFromFlags } from '../src/cli/option-flags';
import { START_OPTIONS, START_USAGE } from '../src/cli/start';

function rejects(options: unknown): Error {
  try {
    resolveOptions(options as ServerOptions);
  } catch (error) {
    return error as Error;
  }
  throw new Error(`resolveOptions accepted ${JSON.stringify(options)}`);
}

describe('options', () => {
  it('defaults', () => {
    expect(resolveOptions()).toMatchObject({
      mode: 'master', stopTimeout: 20_000, startTimeout: 30_000, workers: 1, heartbeatTimeout: 5_000, stopDelay: 0,
      backlog: 1024, shared: false, reloadSignals: ['SIGHUP', 'SIGUSR1'], stopSignals: ['SIGTERM', 'SIGINT'],
    });
    // an explicit undefined is the default, as when options are spread from a config object
    expect(resolveOptions({ stopTimeout: undefined }).stopTimeout).toBe(20_000);
  });

  it('closeSpread defaults to half of stopTimeout, at most 10 s, and may not exceed stopTimeout; ticketKeyRotation to 1 hour, at least 1 s', () => {
    expect(resolveOptions()).toMatchObject({ closeSpread: 10_000, ticketKeyRotation: 3_600_000 });
    expect(resolveOptions({ stopTimeout: 6_000 }).closeSpread).toBe(3_000);
    expect(resolveOptions({ stopTimeout: 6_000, closeSpread: 0 }).closeSpread).toBe(0);
    const tooLong = rejects({ stopTimeout: 6_000, closeSpread: 7_000 });
    expect(tooLong).toBeInstanceOf(RangeError);
    expect(tooLong.message).toBe('closeSpread (7000 ms) must be at most stopTimeout (6000 ms): connections still open at stopTimeout are cut, not closed gently');
    const tooOften = rejects({ ticketKeyRotation: 500 });
    expect(tooOften).toBeInstanceOf(RangeError);
    expect(tooOften.message).toMatch(/^ticketKeyRotation must be at least 1000 ms/);
    expect(rejects({ closeSpread: '5s' })).toBeInstanceOf(TypeError);
  });

  it('an unknown option is a TypeError that suggests the closest known one', () => {
    for (const [key, suggestion] of [['stopTimout', 'stopTimeout'], ['worker', 'workers'], ['startTimeOut', 'startTimeout'],
      ['reloadSignal', 'reloadSignals'], ['heartbeat', 'heartbeatTimeout'], ['pidfile', 'pidFile']] as const) {
      const error = rejects({ [key]: 1 });
      expect(error).toBeInstanceOf(TypeError);
      expect(error.message).toBe(`unknown option \`${key}\`: did you mean \`${suggestion}\`?`);
    }
    // nothing close: the list of options instead of a wild guess
    expect(rejects({ port: 80 }).message).toMatch(/^unknown option `port`: the options are mode, stopTimeout, .*group$/);
  });

  it('logger: true is rejected with what the option takes', () => {
    const error = rejects({ logger: true });
    expect(error).toBeInstanceOf(TypeError);
    expect(error.message).toContain('logger must be an object with info, warn and error methods');
    expect(error.message).toContain('or false to silence');
    expect(error.message).toContain('leave the option out for the default');
    expect(rejects({ logger: { info() {} } }).message).toMatch(/^logger must be/);
    expect(resolveOptions({ logger: console }).logger).toBe(console);
    expect(resolveOptions({ logger: false }).logger).toBe(false);
  });

  it('a duration above 2^31-1 ms is a RangeError that names the limit, not a 1 ms timer', () => {
    for (const name of ['stopTimeout', 'startTimeout', 'heartbeatTimeout', 'stopDelay'] as const) {
      const error = rejects({ [name]: MAX_DURATION_MS + 1 });
      expect(error, name).toBeInstanceOf(RangeError);
      expect(error.message).toContain(`${name} is ${MAX_DURATION_MS + 1} ms, more than Node's timers can wait`);
      expect(error.message).toContain(`use at most ${MAX_DURATION_MS}`);
      expect(resolveOptions({ [name]: MAX_DURATION_MS })[name]).toBe(MAX_DURATION_MS);
    }
    expect(rejects({ stopTimeout: Infinity })).toBeInstanceOf(RangeError);
  });

  it('each option: a wrong type is a TypeError, a value out of range a RangeError, naming the option', () => {
    const cases: [Record<string, unknown>, typeof TypeError | typeof RangeError, RegExp][] = [
      [{ mode: 'cluster' }, TypeError, /^mode must be 'master' or 'single', got "cluster"/],
      [{ stopTimeout: '5s' }, TypeError, /^stopTimeout must be a number of milliseconds, got "5s"/],
      [{ stopTimeout: 0 }, RangeError, /^stopTimeout must be > 0 ms, got 0/],
      [{ startTimeout: NaN }, TypeError, /^startTimeout must be a number/],
      [{ heartbeatTimeout: -1 }, RangeError, /^heartbeatTimeout must be > 0 ms/],
      [{ stopDelay: -1 }, RangeError, /^stopDelay must be >= 0 ms, got -1/],
      [{ reloadSignals: 'SIGHUP' }, TypeError, /^reloadSignals must be an array of signal names/],
      [{ reloadSignals: ['HUP'] }, TypeError, /^reloadSignals: "HUP" is not a signal name/],
      [{ stopSignals: ['SIGKILL'] }, TypeError, /^stopSignals: SIGKILL cannot be caught/],
      [{ reloadSignals: ['SIGTERM'] }, TypeError, /^SIGTERM cannot both reload and stop/],
      [{ workers: '2' }, TypeError, /^workers must be an integer, got "2"/],
      [{ workers: 0 }, RangeError, /^workers must be an integer from 1 to 1024, got 0/],
      [{ workers: 1.5 }, RangeError, /^workers must be an integer from 1/],
      [{ mode: 'single', workers: 2 }, TypeError, /^mode: 'single' serves in one process; leave workers at 1/],
      [{ ready: 'app.ready' }, TypeError, /^ready must be a function/],
      [{ pidFile: '' }, TypeError, /^pidFile must be a non-empty string/],
      [{ backlog: 0 }, RangeError, /^backlog must be an integer from 1/],
      [{ shared: 'yes' }, TypeError, /^shared must be true or false, got "yes"/],
      [{ unixSocketMode: '660' }, TypeError, /^unixSocketMode must be a file mode such as 0o660, got "660"/],
      [{ unixSocketMode: 0o1777 }, RangeError, /^unixSocketMode must be a file mode such as 0o660 from 0 to 511/],
      [{ controlDir: 42 }, TypeError, /^controlDir must be a non-empty string, got 42/],
      [{ user: -1 }, RangeError, /^user must be a user name or a numeric id/],
      [{ group: {} }, TypeError, /^group must be a non-empty string, got an object/],
    ];
    for (const [options, type, message] of cases) {
      const error = rejects(options);
      expect(error, JSON.stringify(options)).toBeInstanceOf(type);
      expect(error.message).toMatch(message);
    }
    expect(rejects(null)).toBeInstanceOf(TypeError);
    expect(rejects(3).message).toBe('options must be an object such as { workers: 2 }, got 3');
  });
});

describe('the options table', () => {
  it("the README's options table is the one src/options.ts makes", () => {
    const readme = fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8');
    const start = readme.indexOf('| option |');
    const end = readme.indexOf('\n\n', start);
    expect(readme.slice(start, end)).toBe(optionsTable());
  });

  it('every option with a flag is in `handover start --help` and parses to the option', () => {
    for (const [name, row] of Object.entries(OPTIONS)) {
      if (!row.cli) continue;
      expect(START_USAGE, name).toContain(`--${row.cli.flag}`);
      expect(START_OPTIONS.some((spec) => spec.name === row.cli!.flag), name).toBe(true);
    }
    const given = new Map<string, string | true>([['workers', '3'], ['stop-timeout', '2s'], ['shared', true], ['unix-socket-mode', '660'], ['max-memory', '512mb']]);
    expect(optionsFromFlags(given)).toEqual({ workers: 3, stopTimeout: 2000, shared: true, unixSocketMode: 0o660, maxMemory: 512 * 2 ** 20 });
  });

  it('a flag value the table refuses names the flag, not the library option', () => {
    expect(() => optionsFromFlags(new Map([['workers', '2000']]))).toThrow('--workers must be an integer from 1 to 1024, got 2000');
    expect(() => optionsFromFlags(new Map([['max-memory', '10kb']]))).toThrow(/^--max-memory must be a number of bytes from 1048576/);
    expect(() => optionsFromFlags(new Map([['rollout', 'rolling']]))).toThrow('--rollout is parallel or phased or canary (got "rolling")');
  });
});
