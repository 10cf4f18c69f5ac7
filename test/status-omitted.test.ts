// `handover status` on a master whose reply was cut to fit one frame
// (fitFrame, MAX_FRAME_BYTES): the text says how many workers and slots are
// not shown, so a reader never takes the list for the whole.
import { describe, expect, it } from 'vitest';
import { formatStatus } from '../src/cli/admin';
import { fitFrame } from '../src/master/master';
import type { MasterStatus } from '../src/protocol';

function bigStatus(workers: number): MasterStatus {
  return {
    pid: 1, generation: 1, uptimeMs: 1_000, reloading: false, addresses: ['127.0.0.1:8080'],
    workers: Array.from({ length: workers }, (_, i) => ({ pid: 10_000 + i, slot: i, generation: 1, state: 'ready', version: 'v'.repeat(40) })),
    slots: Array.from({ length: workers }, (_, i) => ({ slot: i, state: 'backing-off', restarts: 3, recycles: 0 })),
  };
}

describe('status omitted', () => {
  it('a status reply cut to fit one frame prints how many workers and slots it left out', () => {
    const fitted = fitFrame(bigStatus(1_024));
    const omitted = fitted.omitted!;
    expect(omitted.workers).toBeGreaterThan(0);
    expect(omitted.slots).toBeGreaterThan(0);
    const text = formatStatus({ ...fitted, workers: fitted.workers.map((w) => ({ ...w })) });
    expect(text).toContain(`... and ${omitted.workers} more worker(s) and ${omitted.slots} more slot(s) not shown`);
    expect(text.match(/^ {2}worker pid /gm)).toHaveLength(fitted.workers.length);
  });

  it('a whole reply says nothing is missing', () => {
    const text = formatStatus({ ...bigStatus(2) });
    expect(text).not.toContain('not shown');
  });
});
