// Command-line parsing for `handover`: `--opt VALUE`, `--opt=VALUE`, short
// aliases (`-p 123`), flags, and for `start` the program and its arguments
// (everything from the script on belongs to the program) with Node flags
// after `--`. Mistakes are UsageErrors that say what to type instead.

/** A mistake on the command line; the message says what to do. Exit status 2. */
export class UsageError extends Error {}

export interface OptionSpec {
  name: string;
  alias?: string;
  /** 'none': a flag. 'required': `--x V` or `--x=V`. 'optional': a flag, or `--x=V`. */
  value: 'none' | 'required' | 'optional';
}

export interface ParsedArgs {
  options: Map<string, string | true>;
  positionals: string[];
  /** start only: Node flags given after `--`, before the script. */
  nodeFlags: string[];
  /** start only: the program's own arguments (after the script). */
  programArgs: string[];
  /** start only: where the script is in argv (-1: none). */
  scriptIndex: number;
  /** Things applied that the user may not have meant (a handover option after the script), to print. */
  notes: string[];
}

/** Node flags whose value is the next word (`-r dotenv/config`). */
const NODE_FLAGS_WITH_VALUE = new Set(['-r', '--require', '--import', '--loader', '--experimental-loader', '-C', '--conditions', '--env-file']);

/** Edit distance counting a swap of neighbours as one edit (optimal string alignment), so 'stauts' is 'status'. */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/** The candidate closest to `word`, if it is close enough to be a typo of it. */
export function closest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const d = distance(word, candidate);
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

/**
 * Parses `argv` for `command`. With `program` (start), the first positional
 * is the script and everything after it is the program's.
 */
export function parseArgs(command: string, argv: string[], specs: OptionSpec[], program = false): ParsedArgs {
  const parsed: ParsedArgs = { options: new Map(), positionals: [], nodeFlags: [], programArgs: [], scriptIndex: -1, notes: [] };
  const byName = new Map(specs.map((s) => [s.name, s]));
  const byAlias = new Map(specs.filter((s) => s.alias).map((s) => [s.alias!, s]));
  const specOf = (key: string) => (key.startsWith('--') ? byName.get(key.slice(2)) : byAlias.get(key.slice(1)));
  /** Reads the option at argv[i]; returns the index of its last word. */
  const take = (i: number, spec: OptionSpec, word: string, eq: number): number => {
    if (eq > 0) {
      if (spec.value === 'none') throw new UsageError(`--${spec.name} takes no value (got ${word})`);
      parsed.options.set(spec.name, word.slice(eq + 1));
      return i;
    }
    if (spec.value === 'required') {
      const value = argv[i + 1];
      // a negative number is a value (pm2's -i -1), not an option
      if (value === undefined || (value.startsWith('-') && value !== '-' && !/^-\d+$/.test(value))) {
        throw new UsageError(`--${spec.name} needs a value: --${spec.name} VALUE`);
      }
      parsed.options.set(spec.name, value);
      return i + 1;
    }
    parsed.options.set(spec.name, true);
    return i;
  };
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i];
    if (program && parsed.positionals.length > 0) {
      // After the script: `--` hands the rest to the program as is; before it, a
      // handover option (pm2's `app.js -i 2`) is handover's, and said so.
      if (word === '--') {
        parsed.programArgs.push(...argv.slice(i + 1));
        break;
      }
      const eq = word.indexOf('=');
      const spec = word.startsWith('-') ? specOf(eq > 0 ? word.slice(0, eq) : word) : undefined;
      if (!spec || spec.name === 'help') {
        parsed.programArgs.push(word);
        continue;
      }
      const last = take(i, spec, word, eq);
      const words = argv.slice(i, last + 1).join(' ');
      const script = parsed.positionals[0];
      parsed.notes.push(
        `${words} after the script is handover's option --${spec.name}, applied; handover's options go before the script ` +
          `(handover start ${words} ${script} ...); to pass it to ${script} instead, put it after --: handover start ${script} -- ${words}`,
      );
      i = last;
      continue;
    }
    if (word === '--' && program) {
      for (i++; i < argv.length && argv[i].startsWith('-'); i++) {
        parsed.nodeFlags.push(argv[i]);
        if (NODE_FLAGS_WITH_VALUE.has(argv[i]) && i + 1 < argv.length) parsed.nodeFlags.push(argv[++i]);
      }
      i--;
      if (i + 1 >= argv.length) throw new UsageError('no script after the Node flags: handover start [options] -- NODE_FLAGS... SCRIPT [ARGS...]');
      continue;
    }
    if (!word.startsWith('-') || word === '-') {
      if (program && parsed.positionals.length === 0) parsed.scriptIndex = i;
      parsed.positionals.push(word);
      continue;
    }
    const eq = word.indexOf('=');
    const key = eq > 0 ? word.slice(0, eq) : word;
    const spec = specOf(key);
    if (!spec) {
      if (program && (NODE_FLAGS_WITH_VALUE.has(key) || process.allowedNodeEnvironmentFlags.has(key))) {
        const flag = NODE_FLAGS_WITH_VALUE.has(key) && eq < 0 && argv[i + 1] !== undefined ? `${word} ${argv[i + 1]}` : word;
        const others = [...argv.slice(0, i), ...argv.slice(i + flag.split(' ').length)];
        const firstPlain = others.findIndex((w, j) => !w.startsWith('-') && !(j > 0 && specOf(others[j - 1])?.value === 'required'));
        const corrected = firstPlain < 0 ? [...others, '--', flag, 'SCRIPT'] : [...others.slice(0, firstPlain), '--', flag, ...others.slice(firstPlain)];
        throw new UsageError(`${key} is a Node flag, not handover's: Node flags for the workers go after --, before the script: handover ${command} ${corrected.join(' ')}`);
      }
      const names = specs.map((s) => `--${s.name}`);
      const guess = closest(key, names);
      throw new UsageError(`unknown option ${key} for \`handover ${command}\`${guess ? `; did you mean ${guess}?` : ''} (handover ${command} --help lists them)`);
    }
    i = take(i, spec, word, eq);
  }
  return parsed;
}

/** A count or a duration option's value: `30000`, `30s`, `500ms`, `2m` (ms). */
export function parseDuration(name: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text);
  if (!m) throw new UsageError(`--${name} must be a duration such as 30000, 500ms, 30s or 2m (got ${JSON.stringify(text)})`);
  const scale = { ms: 1, s: 1000, m: 60_000 }[m[2] ?? 'ms']!;
  const value = Number(m[1]) * scale;
  if (value <= 0 || value > 2 ** 31 - 1) throw new UsageError(`--${name} must be between 1 ms and 24 days (got ${text})`);
  return Math.round(value);
}

/** '512mb', '1gb', '800000000': bytes. */
export function parseBytes(name: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)(b|kb|mb|gb)?$/i.exec(text);
  if (!m) throw new UsageError(`--${name} must be a size such as 512mb, 1gb or a number of bytes (got ${JSON.stringify(text)})`);
  const unit = { b: 1, kb: 2 ** 10, mb: 2 ** 20, gb: 2 ** 30 }[(m[2] ?? 'b').toLowerCase() as 'b']!;
  return Math.round(Number(m[1]) * unit);
}

export function parseCount(name: string, text: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1) throw new UsageError(`--${name} must be a whole number >= 1 (got ${JSON.stringify(text)})`);
  return Number(text);
}
