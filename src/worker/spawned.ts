// Whether this process is a master's worker, and what the master put in its
// environment. Loaded with the package in every process (it is small), so the
// variables leave process.env at once, while the worker's own code loads only
// in a worker, at run().
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
