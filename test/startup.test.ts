// `handover startup`: the systemd unit it prints for each app of a config
// file passes `systemd-analyze verify`, runs the master directly with an
// absolute Node, reloads through `handover reload`, and stops within a
// timeout above the app's drain.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { underVersionManager } from '../src/cli/startup';
import { REAP_TAG, ROOT, cleanUp, missingTool, scratch } from './helpers/processes';

const CLI = path.join(ROOT, 'dist/cli/cli.js');

afterEach(cleanUp);

const noAnalyzer = missingTool('systemd-analyze', '--version', 'apt-get install systemd');

function run(cwd: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { cwd, env: { ...process.env, ...REAP_TAG }, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? Number(error.code) : 0, stdout, stderr });
    });
  });
}

/** The units in `handover startup` output, by the name in their first line. */
function units(output: string): Map<string, string> {
  const found = new Map<string, string>();
  for (const unit of output.split(/(?=^# \S+\.service: made by handover startup$)/m).filter((u) => u.trim())) {
    found.set(/^# (\S+\.service)/.exec(unit)![1], unit);
  }
  return found;
}

describe('handover startup', () => {
  it.skipIf(noAnalyzer !== undefined)(`prints one unit per app that systemd-analyze verify accepts${noAnalyzer ? ` (skipped: ${noAnalyzer})` : ''}`, async () => {
    const dir = scratch('handover-startup-');
    fs.writeFileSync(path.join(dir, 'app.js'), "require('node:http').createServer((q, s) => s.end('ok')).listen(3000);\n");
    fs.writeFileSync(path.join(dir, 'ecosystem.config.js'), `module.exports = { apps: [
      { name: 'api', script: 'app.js', instances: 2, kill_timeout: 45000, env: { NODE_ENV: 'development' }, env_production: { NODE_ENV: 'production' } },
      { name: 'worker', script: 'app.js' },
    ] };`);
    const out = await run(dir, 'startup', '--env', 'production', 'ecosystem.config.js');
    expect(out.code, out.stderr).toBe(0);
    const found = units(out.stdout);
    expect([...found.keys()]).toEqual(['api.service', 'worker.service']);
    const api = found.get('api.service')!;
    // the master itself, by absolute paths, not through npm
    expect(api).toContain(`ExecStart=${process.execPath} ${CLI} start --name api --workers 2 --stop-timeout 45000 ${path.join(dir, 'app.js')}\n`);
    expect(api).toContain(`ExecReload=${process.execPath} ${CLI} reload api\n`);
    expect(api).toContain('Environment=NODE_ENV=production\n');
    expect(api).toContain(`WorkingDirectory=${dir}\n`);
    expect(api).toMatch(/^Type=notify(-reload)?$/m);
    expect(api).toMatch(/^KillMode=mixed$/m);
    expect(api).toMatch(/^# SIGTERM to the master alone: it drains its workers itself/m);
    expect(api).toMatch(/^Restart=on-failure$/m);
    expect(api).toMatch(/^TimeoutStopSec=55$/m); // kill_timeout 45 s, plus the margin
    expect(found.get('worker.service')).toMatch(/^TimeoutStopSec=30$/m); // the default stopTimeout, 20 s
    for (const [name, unit] of found) {
      const file = path.join(dir, name);
      fs.writeFileSync(file, unit);
      const verify = await new Promise<{ code: number; stderr: string }>((resolve) => {
        execFile('systemd-analyze', ['verify', file], (error, _stdout, stderr) => resolve({ code: error ? Number(error.code) : 0, stderr }));
      });
      expect(verify.code, verify.stderr).toBe(0);
      // warnings about the unit itself (an unknown key, a bad value) do not fail verify; they are failures here
      expect(verify.stderr.split('\n').filter((l) => l.includes(file)), verify.stderr).toEqual([]);
    }
  });

  it('recognises a Node under a version manager (the unit would break at its next upgrade)', () => {
    for (const node of ['/home/u/.nvm/versions/node/v20.11.0/bin/node', '/home/u/.volta/tools/image/node/20.0.0/bin/node', '/usr/local/n/versions/node/20/bin/node']) {
      expect(underVersionManager(node), node).toBe(true);
    }
    for (const node of ['/usr/bin/node', '/usr/local/bin/node', '/opt/node-v20/bin/node']) expect(underVersionManager(node), node).toBe(false);
  });
});
