// Facts about a process the master's status does not carry, read from
// /proc (Linux; elsewhere they are absent): resident memory, start time and CPU time.
import * as fs from 'node:fs';

/** Clock ticks per second in /proc/<pid>/stat: USER_HZ, 100 on every Linux ABI. */
const USER_HZ = 100;

/** Resident set size in bytes (VmRSS), or undefined. */
export function rssBytes(pid: number): number | undefined {
  try {
    const kb = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb === undefined ? undefined : Number(kb) * 1024;
  } catch {
    return undefined;
  }
}

/** When the process started (ms since the epoch), or undefined. */
export function startedAt(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // field 22, counted after the command name (which may hold spaces and parens)
    const ticks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    const bootSeconds = Number(/^btime (\d+)$/m.exec(fs.readFileSync('/proc/stat', 'utf8'))?.[1]);
    return Number.isFinite(ticks) && bootSeconds ? bootSeconds * 1000 + (ticks * 1000) / USER_HZ : undefined;
  } catch {
    return undefined;
  }
}

/** CPU time the process has used (user + system), in ms, or undefined. */
export function cpuMs(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime: fields 14 and 15, counted after the command name
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / USER_HZ;
  } catch {
    return undefined;
  }
}

/** CPU % of each pid over `windowMs` (100 = one core busy), undefined for a gone pid. */
export async function cpuPercent(pids: number[], windowMs: number): Promise<Map<number, number | undefined>> {
  const before = pids.map((pid) => [pid, cpuMs(pid), performance.now()] as const);
  await new Promise((resolve) => setTimeout(resolve, windowMs));
  return new Map(before.map(([pid, used, at]) => {
    const now = cpuMs(pid);
    return [pid, used === undefined || now === undefined ? undefined : ((now - used) * 100) / (performance.now() - at)];
  }));
}
