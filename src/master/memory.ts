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
//   is the user's program, or `handover start`), `vm.measureMemory()` with
//   eager execution, public API that measures by running one full
//   mark-compact at once: what gc() does, for about the same CPU (8-14 ms on
//   this master's heap). Turning --expose-gc on at run time is what Node
//   documents as unsafe, so the master never does. (Until issue 24 it used
//   v8.queryObjects(), which collects until nothing more is freed and then
//   walks the heap: about 100 ms a call, 5 ms of CPU per reload amortized,
//   most of what the master's side of a reload cost beyond cluster's.) The
//   growth threshold keeps it from running after every exit.
// - glibc raises malloc's trim threshold each time a large block is freed, so
//   the arenas of V8's helper threads keep more and more free memory at their
//   tops. The master fixes the thresholds instead (fixMallocThresholds), and
//   after a full collection gives back the free pages below the tops as well
//   (trimMalloc).
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { fixMallocThresholds, trimMalloc } from '../platform/native';

/** Free memory above this goes back to the kernel (glibc's own starting value). */
const MALLOC_THRESHOLD_BYTES = 128 * 1024;
/** How long after a worker exit the collection runs: one for a burst of exits. */
const COLLECT_DELAY_MS = 100;
/** Heap growth since the last full collection that makes the next one worth its CPU. */
export const COLLECT_GROWTH_BYTES = 2 * 1024 * 1024;

/** V8's full collection: gc() under --expose-gc, else the one vm.measureMemory() runs; resolves once it is done. */
export function fullCollection(): () => Promise<void> {
  const exposed = (globalThis as { gc?: unknown }).gc;
  if (typeof exposed === 'function') return async () => void (exposed as () => void)();
  return async () => {
    // It is marked experimental: the warning Node prints once would land in
    // the user's master output, for a call the user never made.
    const emitWarning = process.emitWarning;
    process.emitWarning = () => {};
    let measured: Promise<unknown>;
    try {
      measured = vm.measureMemory({ mode: 'summary', execution: 'eager' });
    } finally {
      process.emitWarning = emitWarning;
    }
    await measured;
  };
}

const heapUsed = () => v8.getHeapStatistics().used_heap_size;

export class MasterMemory {
  private readonly collect = fullCollection();
  private timer?: NodeJS.Timeout;
  private collecting = false;
  /** The heap right after the last full collection (or at start). */
  private floor = heapUsed();
  /** Full collections run, and the CPU they took (ms): part of what reloads cost (status shows both). */
  collections = 0;
  collectCpuMs = 0;

  constructor() {
    fixMallocThresholds(MALLOC_THRESHOLD_BYTES);
  }

  /** After a worker exit: a full collection soon, unless one is already due or running, or the heap has not grown. */
  collectSoon(): void {
    if (this.collecting) return;
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      if (heapUsed() < this.floor + COLLECT_GROWTH_BYTES) return;
      this.collecting = true;
      const before = process.cpuUsage();
      void this.collect().then(() => {
        trimMalloc(); // the pages the collection freed, below the arenas' tops too
        const spent = process.cpuUsage(before); // (with whatever else ran in the few ms it took)
        this.collections++;
        this.collectCpuMs += (spent.user + spent.system) / 1000;
        this.floor = heapUsed();
      }).finally(() => {
        this.collecting = false;
      });
    }, COLLECT_DELAY_MS).unref();
  }

  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
