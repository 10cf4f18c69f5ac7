// `handover startup [NAME | CONFIG] [--install]`: pm2 startup's answer, a
// systemd unit per app that runs the master itself (never through npm, whose
// pid would be the one systemd signals), reloads through `handover reload`
// (which waits for the outcome, so `systemctl reload` fails when the deploy
// does), and stops within a timeout longer than the drain.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { type ParsedArgs, UsageError, parseArgs } from './args';
import { type AppPlan, isConfigFile, loadConfig } from './config';
import { locate } from './locate';
import { optionsFromFlags } from './option-flags';
import { START_OPTIONS } from './start';

const CLI = path.join(__dirname, 'cli.js');

/** Directories a Node version manager replaces or removes on upgrade. */
const VERSION_MANAGERS = /\/(\.nvm|\.volta|\.fnm|\.asdf|\.nodenv|\.nodebrew|n\/versions|\.local\/share\/(fnm|mise))\//;

/** Is this Node binary in a directory a version manager removes on upgrade (~/.nvm, ~/.volta...)? */
export function underVersionManager(node: string): boolean {
  return VERSION_MANAGERS.test(node);
}

/** Seconds systemd waits beyond the drain before it kills the rest. */
const STOP_MARGIN_S = 10;

/** systemd's version, or 0 when it cannot be told. */
function systemdVersion(): number {
  try {
    return Number(/systemd (\d+)/.exec(execFileSync('systemctl', ['--version'], { encoding: 'utf8' }))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** A word of ExecStart=, quoted when it needs to be; `%` and `$` are systemd's, so doubled. */
function quote(word: string): string {
  const escaped = word.replace(/%/g, '%%').replace(/\$/g, '$$$$');
  return /^[\w@%+=:,./-]+$/.test(escaped) ? escaped : `"${escaped.replace(/(["\\])/g, '\\$1')}"`;
}

export function unitName(name: string): string {
  return `${name.replace(/[^\w:.-]/g, '_')}.service`;
}

/** The unit for one app; its start flags decide TimeoutStopSec. */
export function unitFor(app: AppPlan, version = systemdVersion(), root = process.getuid!() === 0): string {
  const options = optionsFromFlags(parseArgs('start', app.argv, START_OPTIONS, true).options);
  const stopSeconds = Math.ceil(((options.stopTimeout ?? 20_000) + (options.stopDelay ?? 0)) / 1000) + STOP_MARGIN_S;
  const node = process.execPath;
  const start = [node, CLI, 'start', ...app.argv].map(quote).join(' ');
  const reload = [node, CLI, 'reload', app.name].map(quote).join(' ');
  const notifyReload = version >= 253;
  return [
    `# ${unitName(app.name)}: made by handover startup`,
    '[Unit]',
    `Description=${app.name} (handover)`,
    'After=network-online.target',
    'Wants=network-online.target',
    '',
    '[Service]',
    ...(notifyReload
      ? [
        '# The master sends READY=1, and RELOADING=1 then READY=1 around each reload: systemctl reload waits for them.',
        'Type=notify-reload',
        '# The reload itself is ExecReload; the signal systemd sends first must not start a second one.',
        'ReloadSignal=SIGCONT',
      ]
      : [`# systemd ${version || '< 253'}: Type=notify; ExecReload waits for the reload's outcome all the same.`, 'Type=notify']),
    'NotifyAccess=main',
    `WorkingDirectory=${app.cwd}`,
    ...Object.entries(app.env).map(([k, v]) => `Environment=${quote(`${k}=${v}`)}`),
    `ExecStart=${start}`,
    '# Exits 0 once the new generation serves, 1 with the worker\'s error while the old one keeps serving.',
    `ExecReload=${reload}`,
    '# SIGTERM to the master alone: it drains its workers itself. The default, a SIGTERM to the whole group,',
    '# reaches the workers\' own handlers at the same moment and races the drain; mixed still SIGKILLs the rest at the timeout.',
    'KillMode=mixed',
    `# Above stopTimeout (${options.stopTimeout ?? 20_000} ms)${options.stopDelay ? ` plus stopDelay (${options.stopDelay} ms)` : ''}: the drain finishes before systemd kills.`,
    `TimeoutStopSec=${stopSeconds}`,
    'Restart=on-failure',
    ...(root ? [] : ['# A user unit: enable lingering (loginctl enable-linger) so it starts at boot, not at login.']),
    '',
    '[Install]',
    `WantedBy=${root ? 'multi-user.target' : 'default.target'}`,
    '',
  ].join('\n');
}

/** The app a running master runs: its command line (from /proc) and directory. */
async function runningApp(name: string | undefined, options: Map<string, string | true>): Promise<AppPlan> {
  const target = await locate(name, options);
  if (!target.entry) throw new UsageError('handover startup needs a master started with handover start (or a config file)');
  const argv = fs.readFileSync(`/proc/${target.entry.pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  const at = argv.indexOf('start');
  if (at < 0) throw new UsageError(`master ${target.entry.name} (pid ${target.entry.pid}) was not started with handover start`);
  const rest = argv.slice(at + 1);
  // the script's path as the master resolved it, so the unit does not depend on its directory
  return { name: target.entry.name, cwd: target.entry.cwd, env: {}, argv: rest.includes('--name') ? rest : ['--name', target.entry.name, ...rest] };
}

export async function startup(parsed: ParsedArgs): Promise<number> {
  const [what] = parsed.positionals;
  const o = parsed.options;
  const env = o.get('env');
  const only = o.get('only');
  const apps = what !== undefined && isConfigFile(what)
    ? (await loadConfig(what, typeof env === 'string' ? env : undefined, typeof only === 'string' ? only.split(',') : undefined)).apps
    : [await runningApp(what, o)];
  if (underVersionManager(process.execPath)) {
    process.stderr.write(
      `handover: warning: Node is ${process.execPath}, under a version manager's directory that an upgrade or uninstall removes; ` +
        'the unit would then fail to start. Point it at a system Node (apt, nodesource, /usr/local/bin/node) or a fixed copy\n',
    );
  }
  const root = process.getuid!() === 0;
  for (const app of apps) {
    const unit = unitFor(app, systemdVersion(), root);
    if (!o.has('install')) {
      process.stdout.write(`${unit}\n`);
      continue;
    }
    const dir = root ? '/etc/systemd/system' : path.join(process.env.XDG_CONFIG_HOME ?? path.join(os.homedir(), '.config'), 'systemd', 'user');
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, unitName(app.name));
    fs.writeFileSync(file, unit);
    const user = root ? [] : ['--user'];
    try {
      execFileSync('systemctl', [...user, 'daemon-reload'], { stdio: 'inherit' });
      execFileSync('systemctl', [...user, 'enable', unitName(app.name)], { stdio: 'inherit' });
    } catch (error) {
      throw new Error(`wrote ${file}, but systemctl ${user.join(' ')} enable failed (${(error as Error).message}); run it yourself`);
    }
    process.stdout.write(`${file}: installed and enabled; stop the running master, then: systemctl ${user.join(' ')} start ${unitName(app.name)}\n`.replace('  ', ' '));
  }
  return 0;
}
