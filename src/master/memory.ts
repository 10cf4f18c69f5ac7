// Keeps the master's memory flat over thousands of reloads. Two things made
// its RSS creep while its live JavaScript heap stayed the same (issue 10,
// measured with bench/soak.js):
//
// - Each generation's ChildProcess, sockets and timers live long enough to be
//   promoted to V8's old space, and V8 collects old space only once it has
//   grown past a limit, which it raises as the heap grows. Left alone, the heap
//   grew from 7 to 14 MB over 1,000 reloads.
//   The master has time to spare once a worker has exited, so it then runs one
//   full collection: about 10 ms on its small heap, off every request's path
//   (workers accept on their own sockets). Node gives that call only to a
//   process started with --expose-gc (`node --expose-gc app.js`); turning the
//   flag on at run time, inside the user's program, is what Node documents as
//   unpredictable, so without the flag the master leaves V8 to its own
//   schedule.
// - glibc raises malloc's trim threshold each time a large block is freed, so
//   the arenas of V8's helper threads keep more and more free memory at their
//   tops. The master fixes the thresholds instead (fixMallocThresholds).
import { fixMallocThresholds } from '../platform/native';

/** Free memory above this goes back to the kernel (glibc's own starting value). */
const MALLOC_THRESHOLD_BYTES = 128 * 1024;
/** How long after a worker exit the collection runs: one for a burst of exits. */
const COLLECT_DELAY_MS = 100;

/** V8's full collection, when this process was started with --expose-gc. */
function fullCollection(): (() => void) | undefined {
  const exposed = (globalThis as { gc?: unknown }).gc;
  return typeof exposed === 'function' ? (exposed as () => void) : undefined;
}

export class MasterMemory {
  private readonly collect = fullCollection();
  private timer?: NodeJS.Timeout;

  constructor() {
    fixMallocThresholds(MALLOC_THRESHOLD_BYTES);
  }

  /** After a worker exit: a full collection soon, unless one is already due. */
  collectSoon(): void {
    const collect = this.collect;
    if (!collect) return;
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      collect();
    }, COLLECT_DELAY_MS).unref();
  }

  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
