// Invariant 20, a worker's label is the truth: every worker reports the
// version of the code it started with (status, the log), and after a reload
// and a rollback, a worker of the rolled-back generation that dies is not
// replaced by the newer code on disk: its slot stays covered by a sibling,
// status says why, and every answer comes from the rolled-back code. Once the
// code on disk is that generation's again, the slot's own worker returns.
import * as child from 'node:child_process';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { codeVersion, contentDigest } from '../src/master/version';
import { adminStatus, controlSocketOf } from './helpers/control';
import { Requests, app, get } from './helpers/deploys';
import { cleanUp, pollUntil } from './helpers/processes';

afterEach(cleanUp);

const CLI = path.join(__dirname, '..', 'dist', 'cli', 'cli.js');

describe('versions', () => {
  it('the default version is the package.json version plus a digest of the entry file; APP_VERSION and the option override it', () => {
    const entry = path.join(__dirname, 'fixtures', 'deploy-app.js'); // under this repository's package.json
    const pkg = require('../package.json').version as string;
    expect(codeVersion(undefined, {}, entry)).toMatch(new RegExp(`^${pkg.replace(/\./g, '\\.')}\\+[0-9a-f]{12}$`));
    expect(codeVersion(undefined, { APP_VERSION: 'abc123' }, entry)).toBe('abc123');
    expect(codeVersion('v7', { APP_VERSION: 'abc123' }, entry)).toBe('v7');
    expect(codeVersion(undefined, {}, path.join(__dirname, 'no-such-file.js'))).toBe('unknown');
  });

  it('the entry digest is the same for the same contents and differs for any one byte changed, added or removed', () => {
    const base = Buffer.from('module.exports = (req, res) => res.end("A");\n'.repeat(3)); // not a multiple of 4 bytes
    const digest = contentDigest(base);
    expect(digest).toMatch(/^[0-9a-f]{12}$/);
    expect(contentDigest(Buffer.from(base))).toBe(digest);
    const unaligned = Buffer.concat([Buffer.from('x'), base]).subarray(1); // byteOffset 1 in its ArrayBuffer
    expect(contentDigest(unaligned)).toBe(digest);
    const seen = new Set([digest]);
    for (let i = 0; i < base.length; i++) {
      const changed = Buffer.from(base);
      changed[i] ^= 1;
      seen.add(contentDigest(changed));
    }
    seen.add(contentDigest(base.subarray(0, base.length - 1)));
    seen.add(contentDigest(Buffer.concat([base, Buffer.from([0])])));
    seen.add(contentDigest(Buffer.alloc(0)));
    seen.add(contentDigest(Buffer.alloc(4)));
    expect(seen.size).toBe(base.length + 5);
  });

  it('after reload, rollback and a worker SIGKILL, every answer comes from the rolled-back code; status shows the slot held and covered', async () => {
    const { app: a, version: v1 } = app({ code: 'A' });
    const master = await a.start({ workers: 2, keepPrevious: 60_000 });
    const control = controlSocketOf(master);
    const first = await adminStatus(control);
    expect(first.workers.map((w) => w.version)).toEqual([v1, v1]);
    expect(first.versions).toEqual({ 1: v1 });
    expect(master.stderr).toContain(`runs version ${v1}`);

    const v2 = a.deploy({ code: 'B' });
    expect(v2).not.toBe(v1);
    expect((await master.reload()).event).toBe('reloaded');
    const second = await adminStatus(control);
    expect(second.workers.filter((w) => w.state === 'ready').map((w) => w.version)).toEqual([v2, v2]);

    const rolled = child.spawnSync(process.execPath, [CLI, 'rollback', '--socket', control], { encoding: 'utf8' });
    expect(rolled.status, rolled.stdout + rolled.stderr).toBe(0);
    const back = await adminStatus(control);
    expect(back.generation).toBe(1);

    const requests = new Requests(master.port);
    const victim = back.slots!.find((s) => s.slot === 1)!.pid!;
    const sibling = back.slots!.find((s) => s.slot === 0)!.pid!;
    process.kill(victim, 'SIGKILL');
    const held = await pollUntil(async () => {
      const s = await adminStatus(control);
      const slot = s.slots!.find((x) => x.slot === 1)!;
      return slot.held && slot.coveredBy === sibling ? s : undefined;
    }, 'slot 1 held and covered by slot 0');
    expect(held.slots![1].held).toContain(`must run version ${v1}, but the code on disk is now version ${v2}`);
    expect(held.slots![1].state).not.toBe('ready');
    expect(master.stderr).toMatch(/\(slot 1, generation 1\): slot 1 of generation 1 must run version \S+, but the code on disk is now version \S+ .*; not serving it: the slot stays covered by a sibling/);
    const human = child.spawnSync(process.execPath, [CLI, 'status', '--socket', control], { encoding: 'utf8' });
    expect(human.stdout).toContain(`HELD: slot 1 of generation 1 must run version ${v1}`);
    expect(human.stdout).toContain(`version ${v1}`);

    // two more respawn attempts are refused (the backoff keeps trying) while the sibling serves everything
    const restarts = held.slots![1].restarts;
    await pollUntil(async () => (await adminStatus(control)).slots![1].restarts >= restarts + 2, 'two more respawn attempts');
    const count = requests.answers.length;
    await pollUntil(() => requests.answers.length >= count + 50, '50 more answers');

    // the code of generation 1 is on disk again: the slot's own worker comes back with it
    a.deploy({ code: 'A' });
    const healed = await pollUntil(async () => {
      const s = await adminStatus(control);
      return s.slots![1].state === 'ready' && s.slots![1].held === undefined ? s : undefined;
    }, 'slot 1 ready again with generation 1\'s code');
    await requests.stop();
    expect(healed.workers.filter((w) => w.state === 'ready').map((w) => w.version)).toEqual([v1, v1]);
    expect(requests.failures).toEqual([]);
    expect(requests.answers.length).toBeGreaterThan(50);
    expect(new Set(requests.answers.map((r) => r.code))).toEqual(new Set(['A']));
    expect(requests.answers.every((r) => r.status === 200)).toBe(true);
    expect((await master.stop()).code).toBe(0);
  });

  it('workers: 1, nothing can cover the slot: the respawn serves the newer code, labelled as it is, and status and the log say so', async () => {
    const { app: a, version: v1 } = app({ code: 'A' });
    const master = await a.start({ workers: 1, keepPrevious: 60_000 });
    const control = controlSocketOf(master);
    const v2 = a.deploy({ code: 'B' });
    expect((await master.reload()).event).toBe('reloaded');
    const rolled = child.spawnSync(process.execPath, [CLI, 'rollback', '--socket', control], { encoding: 'utf8' });
    expect(rolled.status, rolled.stdout + rolled.stderr).toBe(0);
    const [victim] = (await adminStatus(control)).slots!.map((s) => s.pid!);
    process.kill(victim, 'SIGKILL');
    const status = await pollUntil(async () => {
      const s = await adminStatus(control);
      return s.slots![0].state === 'ready' && s.slots![0].pid !== victim ? s : undefined;
    }, 'the respawned worker to serve');
    expect(status.generation).toBe(1);
    expect(status.versions).toEqual({ 1: v1 });
    expect(status.workers.filter((w) => w.state === 'ready').map((w) => w.version)).toEqual([v2]);
    expect(status.slots![0].held).toContain(`must run version ${v1}, but the code on disk is now version ${v2}`);
    expect(status.slots![0].held).toContain('no sibling can cover the slot, so it serves version');
    expect(master.stderr).toContain(`no sibling can cover the slot, so it serves version ${v2} meanwhile`);
    expect((await get(master.port)).code).toBe('B');
    expect((await master.stop()).code).toBe(0);
  });
});
