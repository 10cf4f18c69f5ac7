// Keeps the master's memory flat over thousands of reloads. Two things made
// its RSS creep while its live JavaScript heap stayed the same (issue 10,
// measured with bench/soak.js):
//
// - Each generation's ChildProcess, sockets and timers live long enough to be
//   promoted to V8's old space, and V8 collects old space only once it has
//   grown past a limit, which it raises as the heap grows. Left alone, the heap
//   grew from 7 to 14 MB over 1,000 reloads.
//   The master has time to spare once a worker has exited, so it then runs a
//   full collection, off every request's path (workers accept on their own
//   sockets), whenever its heap has grown by COLLECT_GROWTH_BYTES since the
//   last one. With --expose-gc that is `gc()`; without it (the usual case: it
//   is the user's program, or `handover start`), `v8.queryObjects()` (Node
//   22+ and later 20.x; 20.20 has it), public API whose search runs V8's full collection first.
//   Turning --expose-gc on at run time is what Node documents as unsafe, so
//   the master never does; on an older Node without the flag it leaves V8 to
//   its own schedule. queryObjects costs about ten times a plain gc() (it
//   collects until nothing more is freed, then walks the heap), hence the
//   growth threshold rather than a collection after every exit.
// - glibc raises malloc's trim threshold each time a large block is freed, so
//   the arenas of V8's helper threads keep more and more free memory at their
//   tops. The master fixes the thresholds instead (fixMallocThresholds), and
//   after a full collection gives back the free pages below the tops as well
//   (trimMalloc): queryObjects' heap walk alone left 3 MB there.
import * as v8 from 'node:v8';
import { fixMallocThresholds, trimMalloc } from '../platform/native';

/** Free memory above this goes back to the kernel (glibc's own starting value). */
const MALLOC_THRESHOLD_BYTES = 128 * 1024;
/** How long after a worker exit the collection runs: one for a burst of exits. */
const COLLECT_DELAY_MS = 100;
/** Heap growth since the last full collection that makes the next one worth its CPU. */
export const COLLECT_GROWTH_BYTES = 2 * 1024 * 1024;

/** No instance of it ever exists: queryObjects() finds nothing, after its full collection. */
class NoInstances {}

type QueryObjects = (ctor: new () => unknown, options: { format: 'count' }) => number;

/** V8's full collection: gc() under --expose-gc, else v8.queryObjects() where Node has it. */
export function fullCollection(): (() => void) | undefined {
  const exposed = (globalThis as { gc?: unknown }).gc;
  if (typeof exposed === 'function') return exposed as () => void;
  const query = (v8 as { queryObjects?: QueryObjects }).queryObjects;
  if (typeof query !== 'function') return undefined;
  return () => {
    // It is marked experimental: the warning Node prints once would land in
    // the user's master output, for a call the user never made.
    const emitWarning = process.emitWarning;
    process.emitWarning = () => {};
    try {
      query(NoInstances, { format: 'count' });
    } finally {
      process.emitWarning = emitWarning;
    }
  };
}

const heapUsed = () => v8.getHeapStatistics().used_heap_size;

export class MasterMemory {
  private readonly collect = fullCollection();
  private timer?: NodeJS.Timeout;
  /** The heap right after the last full collection (or at start). */
  private floor = heapUsed();
  /** Full collections run, and the CPU they took (ms): part of what reloads cost (status shows both). */
  collections = 0;
  collectCpuMs = 0;

  constructor() {
    fixMallocThresholds(MALLOC_THRESHOLD_BYTES);
  }

  /** After a worker exit: a full collection soon, unless one is already due or the heap has not grown. */
  collectSoon(): void {
    const collect = this.collect;
    if (!collect) return;
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      if (heapUsed() < this.floor + COLLECT_GROWTH_BYTES) return;
      const before = process.cpuUsage();
      collect();
      trimMalloc(); // what the collection itself allocated (queryObjects' heap walk) is freed below the arenas' tops
      const spent = process.cpuUsage(before);
      this.collections++;
      this.collectCpuMs += (spent.user + spent.system) / 1000;
      this.floor = heapUsed();
    }, COLLECT_DELAY_MS).unref();
  }

  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
