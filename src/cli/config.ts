// Config files: pm2's ecosystem.config.{js,cjs,mjs,json}, unchanged, and
// handover.config.{js,mjs,json} (the same shape; handover's own option names
// work there too). Each app in `apps` becomes the command line of its own
// master, `handover start [flags] [-- node flags] script [args]`, so a config
// file means exactly what the flags mean and is checked by the same code. A
// key handover does not act on is named in a warning, never dropped silently.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { OPTIONS, type ServerOptions } from '../options';
import { UsageError, closest } from './args';
import { importEsm } from '../platform/import-esm';

/** One app of a config file, ready to run. */
export interface AppPlan {
  name: string;
  cwd: string;
  /** Added to the master's (and so its workers') environment. */
  env: Record<string, string>;
  /** `handover start`'s arguments for this app. */
  argv: string[];
}

export interface Loaded {
  file: string;
  apps: AppPlan[];
  /** Keys that mean nothing to handover, and other things the user should know. */
  warnings: string[];
}

/** Is this `handover start` argument a config file rather than a program? */
export function isConfigFile(file: string): boolean {
  return /(^|[\\/])[^\\/]*\.config\.(js|cjs|mjs|json)$/.test(file) || /\.json$/.test(file);
}

type AppConfig = Record<string, unknown>;

/** pm2 keys and what they become; `undefined`: accepted, nothing to do. */
const PM2_FLAGS: Record<string, string | undefined> = {
  kill_timeout: 'stop-timeout',
  listen_timeout: 'start-timeout',
  max_memory_restart: 'max-memory',
  pid_file: 'pid-file',
  instances: 'workers',
  exec_mode: undefined, // cluster is what handover does; fork is one worker, which `instances` says
  merge_logs: undefined, // worker output is always merged into the master's
  combine_logs: undefined,
};

/** pm2 keys handover does its own way: accepted, with a warning that says how. */
const PM2_OWN_WAY: Record<string, string> = {
  max_restarts: 'handover respawns a crashed worker with its own backoff (the slot shows backing-off in handover status) and never gives up',
  min_uptime: 'handover respawns a crashed worker with its own backoff and never gives up',
  restart_delay: 'handover respawns a crashed worker with its own backoff',
  exp_backoff_restart_delay: 'handover respawns a crashed worker with its own backoff',
  autorestart: 'a crashed worker is always replaced',
  ignore_watch: 'handover --watch watches the paths `watch` names; list only those',
  out_file: 'output goes to `handover logs` and, with --daemon, to the log files in the state directory',
  error_file: 'output goes to `handover logs` and, with --daemon, to the log files in the state directory',
  log_file: 'output goes to `handover logs` and, with --daemon, to the log files in the state directory',
  log_date_format: 'every line in `handover logs --json` has its time',
  time: 'every line in `handover logs --json` has its time',
  cron_restart: 'run `handover reload NAME` from cron instead (zero downtime)',
};

/** handover's own keys (handover.config) that are `handover start` flags but not Server options. */
const OWN_FLAGS: Record<string, string> = { envFile: 'env-file', waitReady: 'wait-ready', jsonLogs: 'json-logs', user: 'user', group: 'group', pidFile: 'pid-file' };

/** Every Server option with a flag, by its camelCase name. */
const OPTION_KEYS = Object.fromEntries(
  (Object.keys(OPTIONS) as (keyof ServerOptions)[]).filter((k) => OPTIONS[k].cli).map((k) => [k, OPTIONS[k].cli!.flag]),
);

const HANDLED = ['name', 'script', 'args', 'cwd', 'env', 'node_args', 'interpreter_args', 'interpreter', 'wait_ready', 'watch', 'nodeArgs'];

/** pm2's "300M", "1G", "200K" or a number of bytes, as --max-memory takes it. */
function memory(value: unknown): string {
  if (typeof value === 'number') return String(value);
  const m = /^(\d+(?:\.\d+)?)\s*([KMG])B?$/i.exec(String(value));
  return m ? `${m[1]}${m[2].toLowerCase()}b` : String(value);
}

/** A string of words (pm2 splits on spaces, keeping quoted ones whole) or an array. */
function words(value: unknown): string[] {
  if (Array.isArray(value)) return value.map(String);
  if (typeof value !== 'string') return [];
  return (value.match(/"[^"]*"|'[^']*'|\S+/g) ?? []).map((w) => w.replace(/^(["'])(.*)\1$/, '$2'));
}

function stringEnv(env: unknown, where: string): Record<string, string> {
  if (env === undefined) return {};
  if (typeof env !== 'object' || env === null || Array.isArray(env)) throw new UsageError(`${where} must be an object of variables, e.g. { NODE_ENV: 'production' }`);
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)]));
}

/** Loads the file: JSON, CommonJS, or ESM (an .mjs file, or a .js file under "type": "module"). */
async function read(file: string): Promise<unknown> {
  if (file.endsWith('.json')) {
    try {
      return JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (error) {
      throw new UsageError(`cannot read ${file}: ${(error as Error).message}`);
    }
  }
  if (!file.endsWith('.mjs')) {
    try {
      delete require.cache[file];
      return require(file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ERR_REQUIRE_ESM') throw new UsageError(`cannot load ${file}: ${(error as Error).message}`);
    }
  }
  try {
    const module = await importEsm(pathToFileURL(file).href);
    return module.default ?? module;
  } catch (error) {
    throw new UsageError(`cannot load ${file}: ${(error as Error).message}`);
  }
}

/** One app's `handover start` arguments; `warn` collects what does not translate. */
function plan(app: AppConfig, index: number, dir: string, envName: string | undefined, warn: (w: string) => void): AppPlan {
  const where = `apps[${index}]${typeof app.name === 'string' ? ` (${app.name})` : ''}`;
  if (typeof app.script !== 'string' || app.script === '') throw new UsageError(`${where} has no script: give the file to run, e.g. script: 'app.js'`);
  const cwd = path.resolve(dir, typeof app.cwd === 'string' ? app.cwd : '.');
  const script = path.resolve(cwd, app.script);
  const name = typeof app.name === 'string' && app.name !== '' ? app.name : path.basename(script).replace(/\.[cm]?[jt]s$/, '');
  const flags: string[] = ['--name', name];
  const nodeFlags = [...words(app.node_args), ...words(app.interpreter_args), ...words(app.nodeArgs)];
  const env = stringEnv(app.env, `${where}.env`);
  if (envName !== undefined) {
    const key = `env_${envName}`;
    if (app[key] === undefined) warn(`${name}: no ${key} in the config; it runs with its env only`);
    Object.assign(env, stringEnv(app[key], `${where}.${key}`));
  }
  for (const [key, value] of Object.entries(app)) {
    if (value === undefined || HANDLED.includes(key) || key.startsWith('env_')) continue;
    if (key in PM2_FLAGS) {
      const flag = PM2_FLAGS[key];
      if (key === 'exec_mode' && value !== 'cluster' && value !== 'cluster_mode' && app.instances === undefined) {
        warn(`${name}: exec_mode ${String(value)}: handover always runs a master with workers; this app gets one worker (instances sets more)`);
      }
      if (flag) flags.push(`--${flag}`, key === 'max_memory_restart' ? memory(value) : String(value));
    } else if (key in PM2_OWN_WAY) {
      if (!(key === 'autorestart' && value === true)) warn(`${name}: ${key} is not used: ${PM2_OWN_WAY[key]}`);
    } else if (key in OPTION_KEYS || key in OWN_FLAGS) {
      const flag = OPTION_KEYS[key] ?? OWN_FLAGS[key];
      if (value === true) flags.push(`--${flag}`);
      else if (value !== false) flags.push(`--${flag}`, String(value));
    } else {
      const guess = closest(key, [...Object.keys(PM2_FLAGS), ...Object.keys(OPTION_KEYS), ...Object.keys(OWN_FLAGS), ...HANDLED]);
      warn(`${name}: ${key} is not a key handover knows; ignored${guess ? ` (did you mean ${guess}?)` : ''}`);
    }
  }
  if (app.interpreter !== undefined && !/(^|\/)node$/.test(String(app.interpreter))) {
    warn(`${name}: interpreter ${String(app.interpreter)}: handover runs Node programs with this Node; for TypeScript use node_args: '--import tsx'`);
  }
  if (app.wait_ready === true) flags.push('--wait-ready');
  if (app.watch === true) flags.push('--watch');
  else if (typeof app.watch === 'string' || Array.isArray(app.watch)) flags.push(`--watch=${words(app.watch).map((p) => path.resolve(cwd, p)).join(',')}`);
  const argv = [...flags, ...(nodeFlags.length > 0 ? ['--', ...nodeFlags] : []), script, ...words(app.args)];
  return { name, cwd, env, argv };
}

/**
 * Reads a config file into one plan per app. `only`: the names to keep
 * (--only a,b); `envName`: `--env NAME`, whose `env_NAME` is laid over `env`.
 */
export async function loadConfig(file: string, envName?: string, only?: string[]): Promise<Loaded> {
  const absolute = path.resolve(file);
  if (!fs.existsSync(absolute)) throw new UsageError(`cannot find the config file ${file} (in ${process.cwd()})`);
  const content = await read(absolute);
  const apps = Array.isArray(content) ? content : (content as { apps?: unknown })?.apps;
  if (!Array.isArray(apps) || apps.length === 0) {
    throw new UsageError(`${file} has no apps: it must export { apps: [{ name: 'api', script: 'app.js' }, ...] } as pm2's ecosystem file does`);
  }
  const warnings: string[] = [];
  const plans = apps.map((app, i) => {
    if (typeof app !== 'object' || app === null) throw new UsageError(`${file}: apps[${i}] is not an object`);
    return plan(app as AppConfig, i, path.dirname(absolute), envName, (w) => warnings.push(w));
  });
  const names = plans.map((p) => p.name);
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice) throw new UsageError(`${file}: two apps are named ${twice}; each app is its own master, found by its name: give each a different name`);
  if (only) {
    const unknown = only.filter((n) => !names.includes(n));
    if (unknown.length > 0) throw new UsageError(`--only ${unknown.join(',')}: ${file} has no such app (its apps: ${names.join(', ')})`);
  }
  return { file: absolute, apps: only ? plans.filter((p) => only.includes(p.name)) : plans, warnings };
}
