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
    expect(listing).toContain('package/dist/bundle/index.js');
    expect(listing.filter((f) => f.endsWith('.cache'))).toEqual([]); // a worker writes its own (src/main.ts)
  });

  it("a worker loads the API from the bundle with a code cache: the first one writes it into the package, the next use it, one V8 rejects is replaced", () => {
    const bundleDir = path.join(project, 'node_modules', 'handover', 'dist', 'bundle');
    // A process with a worker's environment (it only loads the API), alive past the moment the cache is written.
    const worker = () => execFileSync(process.execPath, ['-e', `const h = require('handover');
      setTimeout(() => console.log(typeof h.Server, Object.keys(require.cache).some((f) => f.endsWith('bundle/index.js'))), 1500)`], {
      cwd: project, encoding: 'utf8', env: { ...process.env, HANDOVER_CONTROL_SOCKET: '/nonexistent', HANDOVER_TOKEN: 'x' },
    }).trim();
    const caches = () => fs.readdirSync(bundleDir).filter((f) => f.endsWith('.cache'));
    expect(caches()).toEqual([]);
    expect(worker()).toBe('function true');
    expect(caches()).toHaveLength(1);
    const file = path.join(bundleDir, caches()[0]);
    const written = fs.statSync(file).ino;
    expect(worker()).toBe('function true');
    expect(fs.statSync(file).ino).toBe(written); // accepted: not written again
    fs.writeFileSync(file, 'not a code cache');
    expect(worker()).toBe('function true');
    expect(fs.statSync(file).size).toBeGreaterThan(1000); // rejected, then replaced
    expect(caches()).toHaveLength(1);
    // outside a worker the modules load one by one
    expect(execFileSync(process.execPath, ['-p', "require('handover'); Object.keys(require.cache).some((f) => f.endsWith('bundle/index.js'))"], {
      cwd: project, encoding: 'utf8',
    }).trim()).toBe('false');
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
