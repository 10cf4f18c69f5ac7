// `handover start`'s flags for the library's options, read off the options
// table (src/options.ts): each row with a `cli` entry is a flag, its --help
// line, and its parsing, and a value out of range is refused naming the flag.
import * as os from 'node:os';
import { type Check, OPTIONS, type ServerOptions, checkValue } from '../options';
import { type OptionSpec, UsageError, parseBytes, parseCount, parseDuration } from './args';

const ROWS = (Object.keys(OPTIONS) as (keyof ServerOptions)[])
  .filter((name) => OPTIONS[name].cli)
  .map((name) => ({ name, check: OPTIONS[name].check, cli: OPTIONS[name].cli! }));

/** pm2's `-i N` / `--instances N`: the same as --workers. */
const INSTANCES: OptionSpec = { name: 'instances', alias: 'i', value: 'required' };

export const OPTION_FLAGS: OptionSpec[] = [
  ...ROWS.map(({ check, cli }) => ({ name: cli.flag, alias: cli.alias, value: check.kind === 'boolean' ? 'none' as const : 'required' as const })),
  INSTANCES,
];

/** The --help lines of these flags, aligned like the hand-written ones. */
export function optionFlagsUsage(): string {
  return ROWS.map(({ cli }) => {
    const head = `  ${cli.alias ? `-${cli.alias}, ` : ''}--${cli.flag}${cli.arg ? ` ${cli.arg}` : ''}`;
    const [first, ...more] = cli.help.split('\n');
    return [`${head.padEnd(24)} ${first}`, ...more.map((line) => `${' '.repeat(25)}${line}`)].join('\n');
  }).join('\n');
}

/**
 * A worker count: N, or pm2's `max` (and `0`/`-1` in a config file: one per
 * CPU, less one for -1), which is the number of CPUs this process may use.
 */
export function parseWorkers(flag: string, text: string): number {
  const cpus = os.availableParallelism();
  if (text === 'max' || text === '0') return cpus;
  if (text === '-1') return Math.max(1, cpus - 1);
  return parseCount(flag, text);
}

function parse(flag: string, check: Check, text: string): unknown {
  switch (check.kind) {
    case 'duration': return parseDuration(flag, text);
    case 'bytes': return parseBytes(flag, text);
    case 'integer': return flag === 'workers' ? parseWorkers(flag, text) : parseCount(flag, text);
    case 'mode':
      if (!/^(0o?)?[0-7]{1,4}$/.test(text)) throw new UsageError(`--${flag} must be an octal file mode such as 660 (got ${JSON.stringify(text)})`);
      return parseInt(text.replace(/^0o/, ''), 8);
    case 'choice':
      if (!check.values.includes(text)) throw new UsageError(`--${flag} is ${check.values.join(' or ')} (got ${JSON.stringify(text)})`);
      return text;
    default: return text;
  }
}

/** The options these flags give; a value the table refuses is a UsageError naming the flag. */
export function optionsFromFlags(given: Map<string, string | true>): ServerOptions {
  const options: Record<string, unknown> = {};
  if (given.has('instances')) {
    if (given.has('workers')) throw new UsageError('give --workers or -i/--instances, not both (they are the same)');
    given.set('workers', given.get('instances')!);
  }
  for (const { name, check, cli } of ROWS) {
    const text = given.get(cli.flag);
    if (text === undefined) continue;
    const value = text === true ? true : parse(cli.flag, check, text);
    try {
      options[name] = checkValue(`--${cli.flag}`, check, value);
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
  }
  return options as ServerOptions;
}
