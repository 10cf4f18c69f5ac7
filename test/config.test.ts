// Config files: what each pm2 key becomes on the master's command line (the
// same flags a user would type, so checked by the same code), the file
// formats pm2 users have, and the warnings for what does not translate.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { UsageError } from '../src/cli/args';
import { isConfigFile, loadConfig } from '../src/cli/config';
import { parseWorkers } from '../src/cli/option-flags';
import { ROOT, cleanUp, scratch } from './helpers/processes';

afterEach(cleanUp);

function write(name: string, content: string): string {
  const dir = scratch('handover-config-');
  fs.writeFileSync(path.join(dir, name), content);
  return path.join(dir, name);
}

describe('config files', () => {
  it('every common pm2 key maps to its handover flag', async () => {
    const file = write('ecosystem.config.js', `module.exports = { apps: [{
      name: 'api', script: 'server.js', cwd: 'srv', args: '--port 3000 "a b"', instances: 4, exec_mode: 'cluster',
      node_args: '--max-old-space-size=512', interpreter_args: ['--enable-source-maps'],
      max_memory_restart: '1G', kill_timeout: 8000, listen_timeout: 12000, wait_ready: true, watch: ['lib', 'conf'],
      pid_file: '/run/api.pid', env: { A: 1, B: 'x' }, env_staging: { B: 'y' },
    }] };`);
    const { apps, warnings } = await loadConfig(file, 'staging');
    const dir = path.dirname(file);
    expect(apps).toEqual([{
      name: 'api',
      cwd: path.join(dir, 'srv'),
      env: { A: '1', B: 'y' },
      argv: [
        '--name', 'api', '--workers', '4', '--max-memory', '1gb', '--stop-timeout', '8000', '--start-timeout', '12000',
        '--pid-file', '/run/api.pid', '--wait-ready', `--watch=${path.join(dir, 'srv/lib')},${path.join(dir, 'srv/conf')}`,
        '--', '--max-old-space-size=512', '--enable-source-maps', path.join(dir, 'srv/server.js'), '--port', '3000', 'a b',
      ],
    }]);
    expect(warnings).toEqual([]);
  });

  it("instances 'max', 0 and -1 are one worker per CPU (less one for -1), as in pm2", () => {
    const cpus = (require('node:os') as typeof import('node:os')).availableParallelism();
    expect(parseWorkers('workers', 'max')).toBe(cpus);
    expect(parseWorkers('workers', '0')).toBe(cpus);
    expect(parseWorkers('workers', '-1')).toBe(Math.max(1, cpus - 1));
    expect(parseWorkers('workers', '3')).toBe(3);
  });

  it('ecosystem.config.mjs, .cjs, .json and handover.config with its own option names', async () => {
    // ESM is loaded with import(), which vitest's module runner does not provide: through the built CLI module
    const mjs = write('ecosystem.config.mjs', "export default { apps: [{ name: 'm', script: 'a.js' }] };");
    const loaded = execFileSync(process.execPath, ['-e', `require(${JSON.stringify(path.join(ROOT, 'dist/cli/config.js'))}).loadConfig(${JSON.stringify(mjs)})` +
      '.then((c) => process.stdout.write(c.apps[0].name))'], { encoding: 'utf8' });
    expect(loaded).toBe('m');
    for (const [name, content] of [
      ['ecosystem.config.cjs', "module.exports = { apps: [{ name: 'a', script: 'a.js' }] };"],
      ['ecosystem.json', JSON.stringify({ apps: [{ name: 'a', script: 'a.js' }] })],
    ]) {
      expect(isConfigFile(name), name).toBe(true);
      const { apps } = await loadConfig(write(name, content));
      expect(apps.map((a) => a.name), name).toEqual(['a']);
    }
    const own = write('handover.config.json', JSON.stringify({ apps: [{ name: 'h', script: 'h.js', workers: 2, stopTimeout: 5000, rollout: 'phased', keepPrevious: 60000, shared: true }] }));
    const [app] = (await loadConfig(own)).apps;
    expect(app.argv.slice(0, -1)).toEqual(['--name', 'h', '--workers', '2', '--stop-timeout', '5000', '--rollout', 'phased', '--keep-previous', '60000', '--shared']);
    expect(isConfigFile('app.js')).toBe(false);
  });

  it('keys handover does not act on are named in warnings, with the closest one for a typo', async () => {
    const file = write('ecosystem.config.js', `module.exports = { apps: [{ name: 'api', script: 'a.js', instanses: 2, out_file: 'x.log', autorestart: false, exec_mode: 'fork' }] };`);
    const { warnings } = await loadConfig(file, 'production');
    expect(warnings).toEqual([
      'api: no env_production in the config; it runs with its env only',
      'api: instanses is not a key handover knows; ignored (did you mean instances?)',
      'api: out_file is not used: output goes to `handover logs` and, with --daemon, to the log files in the state directory',
      'api: autorestart is not used: a crashed worker is always replaced',
      'api: exec_mode fork: handover always runs a master with workers; this app gets one worker (instances sets more)',
    ]);
  });

  it('mistakes are usage errors that say what to write', async () => {
    await expect(loadConfig(write('ecosystem.config.js', 'module.exports = {};'))).rejects.toThrow(/has no apps: it must export \{ apps: \[/);
    await expect(loadConfig(write('ecosystem.config.js', "module.exports = { apps: [{ name: 'a' }] };"))).rejects.toThrow("apps[0] (a) has no script: give the file to run, e.g. script: 'app.js'");
    await expect(loadConfig(write('ecosystem.config.js', "module.exports = { apps: [{ script: 'a.js' }, { script: 'x/a.js' }] };"))).rejects.toThrow(/two apps are named a/);
    const two = write('ecosystem.config.js', "module.exports = { apps: [{ name: 'a', script: 'a.js' }] };");
    await expect(loadConfig(two, undefined, ['b'])).rejects.toThrow('--only b: ' + two + ' has no such app (its apps: a)');
    await expect(loadConfig('/nonexistent/ecosystem.config.js')).rejects.toBeInstanceOf(UsageError);
  });
});
