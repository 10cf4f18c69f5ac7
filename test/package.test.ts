// The published package: `npm pack` makes a tarball that installs into an
// empty project, loads from `require` and `import` (with types), ships the
// prebuild so no compiler runs, and serves the drop-in example.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, reapAll, startMaster, tempDir } from './helpers/processes';

let project: string;
let tarball: string;

beforeAll(() => {
  const packDir = tempDir('handover-pack-');
  const out = execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', packDir], { cwd: ROOT, encoding: 'utf8' });
  tarball = path.join(packDir, JSON.parse(out)[0].filename);
  project = tempDir('handover-consumer-');
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }));
  execFileSync('npm', ['install', '--no-audit', '--no-fund', tarball], { cwd: project, stdio: 'pipe' });
}, 180_000);

afterAll(reapAll);

describe('npm pack', () => {
  it('ships the compiled JS, types, native sources, the prebuild and the examples, and no tests', () => {
    const listing = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).split('\n');
    for (const file of ['package/dist/index.js', 'package/dist/index.d.ts', 'package/binding.gyp',
      'package/native/fdpass.cc', 'package/prebuilds/linux-x64/handover.glibc.node', 'package/prebuilds/linux-arm64/handover.glibc.node',
      'package/examples/hello.js']) {
      expect(listing, file).toContain(file);
    }
    expect(listing.filter((f) => f.startsWith('package/test/') || f.startsWith('package/src/'))).toEqual([]);
  });

  it('installs without compiling: the prebuild is what loads', () => {
    const installed = path.join(project, 'node_modules', 'handover');
    expect(fs.existsSync(path.join(installed, 'build'))).toBe(false);
    const resolved = execFileSync(process.execPath, ['-p', `require('node-gyp-build').resolve(${JSON.stringify(installed)})`], {
      cwd: project, encoding: 'utf8',
    }).trim();
    expect(resolved).toBe(path.join(installed, 'prebuilds', 'linux-x64', 'handover.glibc.node'));
  });

  it('loads from require and from import', () => {
    const names = "['Server','listenAndServe','listenAndServeTLS','isMaster','isWorker'].map((n) => typeof h[n]).join()";
    const expected = 'function,function,function,function,function';
    expect(execFileSync(process.execPath, ['-e', `const h = require('handover'); console.log(${names})`], { cwd: project, encoding: 'utf8' }).trim())
      .toBe(expected);
    expect(execFileSync(process.execPath, ['--input-type=module', '-e', `import * as h from 'handover'; console.log(${names})`], { cwd: project, encoding: 'utf8' }).trim())
      .toBe(expected);
    expect(fs.readFileSync(path.join(project, 'node_modules/handover/dist/index.d.ts'), 'utf8')).toContain('listenAndServe');
  });

  it('serves the drop-in example from the installed package and stops cleanly', async () => {
    const master = await startMaster({
      script: path.relative(ROOT, path.join(project, 'node_modules/handover/examples/hello.js')),
      env: { ADDRESS: '127.0.0.1:0' },
      waitReady: false,
    });
    const port = await new Promise<number>((resolve, reject) => {
      const check = setInterval(() => {
        const m = /serving on 127\.0\.0\.1:(\d+)/.exec(master.stderr);
        if (m) {
          clearInterval(check);
          resolve(Number(m[1]));
        }
      }, 20);
      void master.exited.then(() => {
        clearInterval(check);
        reject(new Error(`master exited: ${master.stderr}`));
      });
    });
    const res = await fetch(`http://127.0.0.1:${port}/`);
    expect(await res.text()).toBe('hello\n');
    expect((await master.stop()).code).toBe(0);
  });
});
