// The published types compile in a strict user project (test/types/: the
// tsconfig `tsc --init` writes, with no `types` listed) under the TypeScript
// 5.x line and under `typescript@latest`, and they catch a misspelt event, a
// wrong payload field and a misspelt option (the fixture's @ts-expect-error
// lines fail the compile if they stop being errors).
//
// Each version is installed from the registry into a temp copy of the fixture,
// with the packed tarball; without the registry the test says so and skips.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, tempDir } from './helpers/processes';

const FIXTURE = path.join(ROOT, 'test', 'types');
const temps: string[] = [];
let tarball = '';
let offline: string | undefined;

function npm(args: string[], cwd: string): string {
  return execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

beforeAll(() => {
  try {
    npm(['view', 'typescript', 'version'], ROOT);
  } catch (error) {
    offline = `the npm registry is unreachable (${(error as Error).message.split('\n')[0]}): cannot install TypeScript versions`;
    return;
  }
  const packDir = tempDir('handover-types-pack-');
  temps.push(packDir);
  tarball = path.join(packDir, JSON.parse(npm(['pack', '--ignore-scripts', '--json', '--pack-destination', packDir], ROOT))[0].filename);
}, 120_000);

afterAll(() => {
  for (const dir of temps) fs.rmSync(dir, { recursive: true, force: true });
});

/** tsc --noEmit on a fresh copy of the fixture with `typescript@<version>`; returns tsc's version line. */
function typecheck(version: string): string {
  const project = tempDir('handover-types-');
  temps.push(project);
  fs.cpSync(FIXTURE, project, { recursive: true });
  npm(['install', '--no-audit', '--no-fund', '--ignore-scripts', tarball, `typescript@${version}`, '@types/node@20'], project);
  const tsc = path.join(project, 'node_modules', '.bin', 'tsc');
  try {
    execFileSync(tsc, ['--noEmit', '-p', project], { cwd: project, encoding: 'utf8' });
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string };
    throw new Error(`tsc ${version} found errors:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
  return execFileSync(tsc, ['--version'], { encoding: 'utf8' }).trim();
}

describe('types in a strict user project', () => {
  it('compile with TypeScript 5.x', (ctx) => {
    ctx.skip(offline !== undefined, offline);
    expect(typecheck('5')).toMatch(/^Version 5\./);
  }, 180_000);

  it('compile with typescript@latest', (ctx) => {
    ctx.skip(offline !== undefined, offline);
    expect(typecheck('latest')).toMatch(/^Version \d+\./);
  }, 180_000);
});
