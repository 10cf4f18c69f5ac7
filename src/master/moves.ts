// What each reload did with the connections of the workers it drained: how
// many moved to the new generation, how many closed, and why the others did
// not move, summed over the drained workers' reports (`moves` frames; each
// report is that worker's running total, so the latest one counts). Bounded:
// one tally per worker drained since the reload began (invariant 18).
import type { ConnectionTally } from '../protocol';

/** How long a reload's outcome waits for the first report of each worker it drained. */
export const FIRST_REPORT_WAIT_MS = 10_000;

export function sumTallies(tallies: Iterable<ConnectionTally>): ConnectionTally {
  const sum: ConnectionTally = { moved: 0, closed: 0, notMoved: {} };
  for (const t of tallies) {
    sum.moved += t.moved;
    sum.closed += t.closed;
    if (t.open) sum.open = (sum.open ?? 0) + t.open;
    for (const [reason, n] of Object.entries(t.notMoved)) sum.notMoved[reason] = (sum.notMoved[reason] ?? 0) + n;
  }
  return sum;
}

/** "200 moved, 3 closed (tls: 2, closed by the client or its timeout: 1), 1 still open" */
export function describeTally(t: ConnectionTally): string {
  const reasons = Object.entries(t.notMoved).map(([reason, n]) => `${reason}: ${n}`).join(', ');
  return `${t.moved} moved, ${t.closed} closed${reasons ? ` (${reasons})` : ''}${t.open ? `, ${t.open} still open` : ''}`;
}

export class ReloadConnections {
  private tallies = new Map<number, ConnectionTally>();
  /** Drained workers (pid) whose first report has not come yet, each with what wakes its waiter. */
  private awaited = new Map<number, () => void>();

  /** A reload begins: its count starts from zero. */
  begin(): void {
    this.tallies = new Map();
    for (const wake of this.awaited.values()) wake();
    this.awaited.clear();
  }

  /** Worker `pid` was told to drain with a successor: its report is awaited. */
  expect(pid: number): void {
    if (!this.tallies.has(pid)) this.awaited.set(pid, () => {});
  }

  report(pid: number, tally: ConnectionTally): void {
    this.tallies.set(pid, tally);
    this.settle(pid);
  }

  /** A worker exited: nothing more will come from it. */
  gone(pid: number): void {
    this.settle(pid);
  }

  private settle(pid: number): void {
    const wake = this.awaited.get(pid);
    this.awaited.delete(pid);
    wake?.();
  }

  /** Resolves once every awaited worker has reported (or exited), or after `timeoutMs`. */
  firstReports(timeoutMs = FIRST_REPORT_WAIT_MS): Promise<void> {
    const pending = [...this.awaited.keys()].map((pid) => new Promise<void>((resolve) => this.awaited.set(pid, resolve)));
    if (pending.length === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      void Promise.all(pending).then(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** The sum so far. */
  get summary(): ConnectionTally {
    return sumTallies(this.tallies.values());
  }
}
