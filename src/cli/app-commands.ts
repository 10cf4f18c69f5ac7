// reload, restart and stop as a pm2 user types them: a config file names its
// apps (`handover stop ecosystem.config.js`), `restart` is a reload (zero
// downtime) and says so, and stopping an app that is not running succeeds
// with a note, so `set -e` deploy scripts go on.
import { liveMasters } from '../master/registry';
import { reload, stop } from './admin';
import { isConfigFile, loadConfig } from './config';

type Options = Map<string, string | true>;

/** The app names a NAME stands for: a config file's apps (--only applies), else NAME itself. */
async function namesOf(name: string | undefined, options: Options): Promise<(string | undefined)[]> {
  if (name === undefined || !isConfigFile(name)) return [name];
  const only = options.get('only');
  const config = await loadConfig(name, undefined, typeof only === 'string' ? only.split(',') : undefined);
  return config.apps.map((app) => app.name);
}

async function each(name: string | undefined, options: Options, run: (name: string | undefined) => Promise<number>): Promise<number> {
  let worst = 0;
  for (const each of await namesOf(name, options)) worst = Math.max(worst, await run(each));
  return worst;
}

export function reloadCommand(name: string | undefined, options: Options, command: 'reload' | 'restart'): Promise<number> {
  if (command === 'restart') {
    process.stderr.write('handover: note: restart is a reload here: new workers start, then the old ones drain, and no request fails (handover reload)\n');
  }
  return each(name, options, (app) => {
    if (app !== undefined && name !== app) process.stdout.write(`${app}: `);
    return reload(app, options);
  });
}

export function stopCommand(name: string | undefined, options: Options): Promise<number> {
  return each(name, options, async (app) => {
    const byAddress = options.has('pid') || options.has('socket');
    if (!byAddress) {
      const live = await liveMasters();
      if (app !== undefined ? !live.some((e) => e.name === app || String(e.pid) === app) : live.length === 0) {
        const what = app === undefined ? 'no master is running' : `${app} is not running`;
        if (!options.has('if-running')) process.stderr.write(`handover: note: ${what}; nothing to stop\n`);
        return 0;
      }
    }
    if (app !== undefined && name !== app) process.stdout.write(`${app}: `);
    return stop(app, options);
  });
}
