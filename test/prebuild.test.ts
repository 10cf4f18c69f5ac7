// The committed prebuild (prebuilds/linux-x64/handover.glibc.node) is what
// linux-x64 users load, with no compiler. It must load where no build/
// directory exists and no compiler is on PATH, and it must not be stale: its
// exports must match a fresh compile of the current native/ sources and the
// Binding interface src/platform/native.ts declares.
//
// Nothing else compiles the addon (`npm run build` and `npm test` run tsc only;
// `npm run build:prebuilds` rewrites prebuilds/), so a native change without a
// prebuild rebuild fails here. The fresh compile happens in a temp dir and
// needs a compiler; without one (a prebuild-only run) that test says so and skips.
//
// Sensitivity, checked by hand: registering one more function in the temp copy
// of native/process.cc fails the fresh-build comparison; leaving prebuilds/ out
// of the temp package fails the load test; one more name in the parsed Binding
// interface fails the last test.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '..');
const PREBUILD = path.join(ROOT, 'prebuilds', 'linux-x64', 'handover.glibc.node');
const SUPPORTED = process.platform === 'linux' && process.arch === 'x64';
const SKIP_REASON = `this test checks the linux-x64 prebuild (this is ${process.platform}-${process.arch})`;
/** A C++ compiler node-gyp would find (CXX, or c++/g++/clang++ on PATH). */
const COMPILER = [process.env.CXX, 'c++', 'g++', 'clang++'].find((cxx) => cxx && onPath(cxx));
const NO_COMPILER = 'no C++ compiler on PATH (a prebuild-only run): cannot compile native/ to compare';

function onPath(command: string): boolean {
  if (command.includes('/')) return fs.existsSync(command);
  return (process.env.PATH ?? '').split(path.delimiter).some((dir) => dir && fs.existsSync(path.join(dir, command)));
}

const execFileAsync = promisify(execFile);
const temps: string[] = [];

function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(fs.realpathSync(os.tmpdir()), prefix));
  temps.push(dir);
  return dir;
}

/** Runs this same node binary; rejects with its stderr in the message. */
async function runNode(args: string[], cwd: string, extraEnv: NodeJS.ProcessEnv = {}): Promise<string> {
  const env = { ...process.env, ...extraEnv };
  delete env.HANDOVER_PREBUILD; // node-gyp-build would load from there instead
  try {
    const { stdout } = await execFileAsync(process.execPath, args, { cwd, env, encoding: 'utf8', maxBuffer: 16 << 20 });
    return stdout;
  } catch (error) {
    const e = error as Error & { stderr?: string; stdout?: string };
    throw new Error(`node ${args.join(' ')} failed in ${cwd}: ${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
}

/** The sorted export names of a .node file, loaded in a child process of its own. */
async function exportNames(addon: string): Promise<string[]> {
  const out = await runNode(['-p', 'JSON.stringify(Object.keys(require(process.argv[1])).sort())', addon], ROOT);
  return JSON.parse(out) as string[];
}

/** The function names of `interface Binding` in src/platform/native.ts. */
function declaredNames(): string[] {
  const source = fs.readFileSync(path.join(ROOT, 'src', 'platform', 'native.ts'), 'utf8');
  const body = /interface Binding \{([\s\S]*?)\n\}/.exec(source);
  if (!body) throw new Error('no `interface Binding` in src/platform/native.ts');
  return [...body[1].matchAll(/^\s+(\w+)\(/gm)].map((m) => m[1]).sort();
}

/**
 * A build of the current native/ sources: build/Release/handover.node when it
 * is newer than every source (CI's `npm run build:native` just made it),
 * otherwise a compile into a temp dir.
 */
async function freshBuild(): Promise<string> {
  const local = path.join(ROOT, 'build', 'Release', 'handover.node');
  const sources = [path.join(ROOT, 'binding.gyp'), ...fs.readdirSync(path.join(ROOT, 'native')).map((f) => path.join(ROOT, 'native', f))];
  if (fs.existsSync(local) && sources.every((f) => fs.statSync(f).mtimeMs <= fs.statSync(local).mtimeMs)) return local;
  const dir = tempDir('handover-fresh-build-');
  fs.copyFileSync(path.join(ROOT, 'binding.gyp'), path.join(dir, 'binding.gyp'));
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(dir, 'package.json'));
  fs.cpSync(path.join(ROOT, 'native'), path.join(dir, 'native'), { recursive: true });
  // binding.gyp asks node-addon-api for its include dir from the build's cwd
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  const args = [path.join(ROOT, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'), 'rebuild', '--release', '--jobs', 'max'];
  // Use the headers installed with this node when there are some: no download needed.
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);
  await runNode(args, dir);
  return path.join(dir, 'build', 'Release', 'handover.node');
}

afterAll(() => {
  for (const dir of temps) fs.rmSync(dir, { recursive: true, force: true });
});

describe('the linux-x64 prebuild', () => {
  let fresh: string;
  beforeAll(async () => {
    if (SUPPORTED && COMPILER) fresh = await freshBuild();
  }, 170_000);

  it('loads with no build/ directory and no compiler on PATH: bindTcp, localAddress and closeFd work through dist/platform/native.js', async (ctx) => {
    ctx.skip(!SUPPORTED, SKIP_REASON);
    if (!fs.existsSync(path.join(ROOT, 'dist', 'platform', 'native.js'))) throw new Error('dist/ is missing: run `npm run build` first');
    // a package as installed: package.json, dist/, prebuilds/ and node-gyp-build, nothing else
    const app = tempDir('handover-prebuild-');
    fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(app, 'package.json'));
    fs.cpSync(path.join(ROOT, 'dist'), path.join(app, 'dist'), { recursive: true });
    fs.cpSync(path.join(ROOT, 'prebuilds'), path.join(app, 'prebuilds'), { recursive: true });
    fs.mkdirSync(path.join(app, 'node_modules'));
    fs.symlinkSync(path.join(ROOT, 'node_modules', 'node-gyp-build'), path.join(app, 'node_modules', 'node-gyp-build'));
    expect(fs.existsSync(path.join(app, 'build'))).toBe(false);

    const script = `
      const native = require('./dist/platform/native.js');
      const fd = native.bindTcp({ host: '127.0.0.1', port: 0 });
      const address = native.localAddress(fd);
      native.closeFd(fd);
      let closed = false;
      try { require('node:fs').fstatSync(fd); } catch (e) { closed = e.code === 'EBADF'; }
      const loaded = require('node-gyp-build').resolve(process.cwd());
      console.log(JSON.stringify({ loaded, address, closed }));
    `;
    // PATH holds node and nothing else; PREBUILDS_ONLY makes node-gyp-build ignore any build/ (classic-level's check)
    const bin = tempDir('handover-prebuild-path-');
    fs.symlinkSync(process.execPath, path.join(bin, 'node'));
    const result = JSON.parse(await runNode(['-e', script], app, { PATH: bin, PREBUILDS_ONLY: '1' })) as {
      loaded: string;
      address: { family: string; address: string; port: number };
      closed: boolean;
    };
    expect(result.loaded).toBe(path.join(app, 'prebuilds', 'linux-x64', 'handover.glibc.node'));
    expect(result.address).toMatchObject({ family: 'IPv4', address: '127.0.0.1' });
    expect(result.address.port).toBeGreaterThan(0);
    expect(result.closed).toBe(true);
  });

  it('exports the same functions as a fresh build of native/ (a stale prebuild fails here)', async (ctx) => {
    ctx.skip(!SUPPORTED, SKIP_REASON);
    ctx.skip(!COMPILER, NO_COMPILER);
    const [prebuilt, built] = await Promise.all([exportNames(PREBUILD), exportNames(fresh)]);
    expect(built.length).toBeGreaterThan(0);
    expect(prebuilt).toEqual(built);
  });

  it('exports every function the Binding interface in src/platform/native.ts declares, and no others', async (ctx) => {
    ctx.skip(!SUPPORTED, SKIP_REASON);
    expect(await exportNames(PREBUILD)).toEqual(declaredNames());
  });
});
