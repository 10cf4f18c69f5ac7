// Every accept queue has an acceptor (invariant 11), one socket per slot
// (invariant 2), and the lifecycle races of issue 9, with real processes,
// real sockets and real signals. test/lifecycle-machine.test.ts pins the same
// races down in the state machine with fakes; these prove the outcome a user
// sees: fresh connections answered, zero failed requests, and a status that
// tells the truth.
//
// A "fresh connection" here is one request with Connection: close on its own
// socket. A slot whose socket nobody accepts from leaves such a connection
// hanging forever, so the client timeout (CLIENT_TIMEOUT_MS) only tells a hang
// from an answer; it is far beyond any wait a healthy slot needs.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { MasterStatus } from '../src/protocol';
import { adminStatus, controlSocketOf } from './helpers/control';
import { Load } from './helpers/load';
import { childrenOf, cleanUp, isAlive, type Master, ourProcesses, pollUntil, scratch, startMaster, writeJson } from './helpers/processes';

const APP = 'test/fixtures/fault-app.js';
const CLIENT_TIMEOUT_MS = 20_000;

afterEach(cleanUp);

interface Fresh {
  ok: number;
  failed: number;
  errors: string[];
  pids: Set<number>;
}

/** `total` requests, `concurrency` at a time, each on a fresh connection with Connection: close. */
async function fresh(port: number, total = 60, concurrency = 20, urlPath = '/'): Promise<Fresh & { bodies: string[] }> {
  const result = { ok: 0, failed: 0, errors: [] as string[], pids: new Set<number>(), bodies: [] as string[] };
  let next = 0;
  const one = () => new Promise<void>((resolve) => {
    const req = http.request({
      host: '127.0.0.1', port, path: urlPath, agent: false, headers: { connection: 'close' }, timeout: CLIENT_TIMEOUT_MS,
    }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        if (res.statusCode === 200) {
          result.ok++;
          result.pids.add(Number(res.headers['x-pid']));
          result.bodies.push(body);
        } else {
          result.failed++;
          result.errors.push(`status ${res.statusCode}`);
        }
        resolve();
      });
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('no answer (a hang)'), { code: 'TIMEOUT' })));
    req.on('error', (error: NodeJS.ErrnoException) => {
      result.failed++;
      result.errors.push(error.code ?? error.message);
      resolve();
    });
    req.end();
  });
  const loop = async () => {
    while (next < total) {
      next++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
  return result;
}





function slotPid(status: MasterStatus, slot: number): number {
  return status.slots!.find((s) => s.slot === slot)!.pid!;
}

/** Every slot has a ready worker of the newest generation, and no other worker is alive. */
async function settled(control: string): Promise<MasterStatus> {
  return pollUntil(async () => {
    const status = await adminStatus(control);
    const allReady = status.slots!.every((s) => s.state === 'ready');
    const newest = status.workers.every((w) => w.generation === status.generation && w.state === 'ready');
    return !status.reloading && allReady && newest ? status : undefined;
  }, 'every slot to have a ready worker of the newest generation', 60_000);
}

async function startFault(fixture: Record<string, unknown>): Promise<{ master: Master; behaviour: string; dir: string; control: string }> {
  const dir = scratch('handover-queues-');
  const behaviour = path.join(dir, 'behaviour.json');
  writeJson(behaviour, {});
  const master = await startMaster({ script: APP, fixture: { behaviourFile: behaviour, stopTimeout: 3_000, ...fixture } });
  return { master, behaviour, dir, control: controlSocketOf(master) };
}

describe('a slot without a ready worker is served by a sibling (invariant 11)', () => {
  it('workers: 2 with slot 1 crash-looping: 60 fresh connections, 20 at a time, are all answered', async () => {
    const { master, behaviour, control } = await startFault({ workers: 2 });
    const before = await adminStatus(control);
    writeJson(behaviour, { crashSlots: [1] });
    process.kill(slotPid(before, 1), 'SIGKILL');
    // a crash loop: its respawns have failed at least twice
    const looping = await pollUntil(async () => {
      const status = await adminStatus(control);
      return status.slots![1].restarts >= 2 ? status : undefined;
    }, 'slot 1 to crash-loop', 60_000);
    expect(['backing-off', 'starting']).toContain(looping.slots![1].state);
    expect(looping.slots![1].coveredBy).toBe(slotPid(before, 0));

    const result = await fresh(master.port);
    expect(result.errors).toEqual([]);
    expect(result.ok).toBe(60);

    // fixed: the slot gets its own worker again
    writeJson(behaviour, {});
    const healed = await pollUntil(async () => {
      const status = await adminStatus(control);
      return status.slots![1].state === 'ready' ? status : undefined;
    }, 'slot 1 to have a ready worker again', 60_000);
    expect(healed.slots![1].coveredBy).toBeUndefined();
    const after = await fresh(master.port, 40);
    expect(after.errors).toEqual([]);
  });

  it('connections queued on a frozen worker\'s socket are answered by its sibling once heartbeatTimeout passes, and the frozen worker is replaced', async () => {
    const { master, control, behaviour } = await startFault({ workers: 2, heartbeatTimeout: 1_000 });
    const before = await adminStatus(control);
    const frozen = slotPid(before, 1);
    const sibling = slotPid(before, 0);
    // Slot 1's respawns fail until the end: only the sibling's cover can answer what queues there.
    writeJson(behaviour, { crashSlots: [1] });
    process.kill(frozen, 'SIGSTOP');
    // These start at once: about half queue on the frozen worker's socket
    // before the master notices, and must still be answered.
    const queued = fresh(master.port);
    // the log keeps the evidence (a status poll can miss a short window)
    await pollUntil(() => new RegExp(`worker pid ${frozen} .*has not answered a heartbeat`).test(master.stderr),
      'the master to take the frozen worker out of service', 60_000);
    await pollUntil(() => new RegExp(`slot 1 has no ready worker; worker pid ${slotPid(before, 0)} `).test(master.stderr),
      'its sibling to cover slot 1', 60_000);
    const result = await queued;
    expect(result.errors).toEqual([]);
    expect(result.ok).toBe(60);
    expect([...result.pids], 'who answered').toEqual([sibling]);
    const later = await fresh(master.port);
    expect(later.errors).toEqual([]);
    expect([...later.pids], 'who answered').toEqual([sibling]);

    writeJson(behaviour, {});
    const replaced = await settled(control);
    expect(slotPid(replaced, 1)).not.toBe(frozen);
    await pollUntil(() => !isAlive(frozen), 'the frozen worker to be killed at stopTimeout', 30_000);
    expect(master.stderr).toMatch(/has not answered a heartbeat/);
  });
});

describe('lifecycle races, under load: zero failed requests', () => {
  it('a new worker that is ready and then dies while its sibling is still starting fails the reload; the old generation keeps serving every slot', async () => {
    const { master, behaviour, dir, control } = await startFault({ workers: 2 });
    const gate = path.join(dir, 'gate');
    // Keep-alive connections made before the reload stay with the old
    // workers: a request in flight on the worker this test kills would be
    // lost by any server, so no new connection is opened until it is dead.
    const load = new Load({ port: master.port, connections: 8 });
    await pollUntil(() => load.stats.ok > 100, 'the load to be under way');
    writeJson(behaviour, { gateFile: gate, gateSlots: [1] });
    master.proc.kill('SIGHUP');
    const readyNew = await pollUntil(async () => {
      const status = await adminStatus(control);
      return status.workers.find((w) => w.generation === 2 && w.slot === 0 && w.state === 'ready');
    }, 'the new slot-0 worker to be ready', 60_000);
    process.kill(readyNew.pid, 'SIGKILL');
    await pollUntil(() => !isAlive(readyNew.pid), 'the ready new worker to be dead');
    fs.writeFileSync(gate, '');
    await master.waitFor((e) => e.event === 'reload-failed', 'the reload to fail');
    const status = await settled(control);
    expect(status.generation).toBe(1);
    const after = await fresh(master.port, 40);
    expect(after.errors).toEqual([]);
    expect(after.pids.size).toBe(2);

    // and the next reload is a normal one
    writeJson(behaviour, {});
    expect((await master.reload()).event).toBe('reloaded');
    const stats = await load.stop();
    expect(stats.errors).toEqual({});
    expect((await settled(control)).generation).toBe(3);
  });

  it('a reload signal during start-up waits for start-up, then runs: no generation is orphaned', async () => {
    const dir = scratch('handover-queues-');
    const behaviour = path.join(dir, 'behaviour.json');
    const gate = path.join(dir, 'gate');
    writeJson(behaviour, { gateFile: gate });
    const master = await startMaster({ script: APP, fixture: { workers: 2, behaviourFile: behaviour }, waitReady: false });
    await pollUntil(() => childrenOf(master.pid).length === 2, 'generation 1 to be spawned');
    const control = controlSocketOf(master);
    master.proc.kill('SIGHUP');
    await pollUntil(() => /SIGHUP: reload requested/.test(master.stderr), 'the master to take the SIGHUP');
    fs.writeFileSync(gate, '');
    await master.waitFor((e) => e.event === 'ready', 'generation 1');
    await master.waitFor((e) => e.event === 'reloaded', 'the early reload');
    const status = await settled(control);
    expect(status.generation).toBe(2);
    await pollUntil(() => childrenOf(master.pid).length === 2, 'generation 1 to be gone');
    expect(await master.reload()).toMatchObject({ event: 'reloaded', generation: 3 });
    const last = await settled(control);
    await pollUntil(() => childrenOf(master.pid).length === 2, 'generation 2 to be gone');
    const answers = await fresh(master.port, 40);
    expect(answers.errors).toEqual([]);
    expect([...answers.pids].sort()).toEqual(last.workers.map((w) => w.pid).sort());
  });
});

describe('one accept queue per slot (invariant 2)', () => {
  /** Inodes of the TCP listening sockets a process holds for `port`. */
  function listeningInodes(pid: number, port: number): Set<string> {
    const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
    const listening = new Set<string>();
    for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 9 && cols[1].endsWith(`:${hexPort}`) && cols[3] === '0A') listening.add(cols[9]);
    }
    const held = new Set<string>();
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      try {
        const inode = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1];
        if (inode && listening.has(inode)) held.add(inode);
      } catch {
        // closed meanwhile
      }
    }
    return held;
  }

  it.runIf(process.platform === 'linux')('the master binds one socket per slot; a replacement gets its slot\'s socket; the group never shrinks', async () => {
    const { master, control } = await startFault({ workers: 3 });
    const sockets = listeningInodes(master.pid, master.port);
    expect(sockets.size).toBe(3);

    /** The inode each slot's own worker accepts from, asked of the worker itself. */
    const ownSockets = async (): Promise<string[]> => {
      const status = await adminStatus(control);
      return Promise.all([0, 1, 2].map(async (slot) => {
        const pid = slotPid(status, slot);
        for (;;) {
          const reply = await fresh(master.port, 1, 1, '/socket');
          if ([...reply.pids][0] === pid) return /socket:\[(\d+)\]/.exec(reply.bodies[0])![1];
        }
      }));
    };
    const first = await ownSockets();
    expect(new Set(first)).toEqual(sockets);

    const status = await adminStatus(control);
    process.kill(slotPid(status, 1), 'SIGKILL');
    await pollUntil(async () => {
      const s = await adminStatus(control);
      return s.slots![1].state === 'ready' && slotPid(s, 1) !== slotPid(status, 1);
    }, 'slot 1 to be respawned');
    await master.reload();
    await settled(control);
    expect(await ownSockets()).toEqual(first);
    expect(listeningInodes(master.pid, master.port)).toEqual(sockets);
    expect(ourProcesses()).toContain(master.pid);
  });
});
