// Whether this process is a master's worker, and what the master put in its
// environment. Loaded with the package in every process (it is small), so the
// variables leave process.env at once, while the worker's own code loads only
// in a worker, at run().
import { rememberEntry } from '../master/version';
import { ENV } from '../protocol';

/**
 * What the master put in this worker's environment, taken out of process.env
 * at load so a child the application spawns does not mistake itself for a
 * worker (and never sees the token).
 */
export const spawnedWith = Object.fromEntries(Object.values(ENV).map((name) => {
  const value = process.env[name];
  delete process.env[name];
  return [name, value];
})) as Record<(typeof ENV)[keyof typeof ENV], string | undefined>;

/** True in a process the master spawned as a worker. */
export function isWorkerProcess(): boolean {
  return spawnedWith[ENV.socket] !== undefined && spawnedWith[ENV.token] !== undefined;
}

// A worker's program has just been read from disk (handover loads as it
// starts): its version is read now, not at the hello (`handover start`'s
// worker reads its program's again just before running it: run/worker.ts).
if (isWorkerProcess()) rememberEntry(process.argv[1]);
