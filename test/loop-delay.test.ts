// The worker's event-loop delay (src/worker/loop-delay.ts): how late its probe
// timer ran, not the timer's period; a blocked loop shows.
import { describe, expect, it } from 'vitest';
import { loopDelayMs } from '../src/worker/loop-delay';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('loopDelayMs', () => {
  it('reports lateness: under the probe period when idle, more than 0 after the loop was blocked', async () => {
    expect(loopDelayMs()).toBe(0); // the first call starts the probe
    await sleep(1_500);
    const idle = loopDelayMs();
    // an idle loop runs the 200 ms probe almost on time; the period itself is not delay
    expect(idle).toBeGreaterThanOrEqual(0);
    expect(idle).toBeLessThan(200);
    await sleep(300);
    const until = Date.now() + 1_000;
    while (Date.now() < until); // blocks the loop past several probe periods
    await sleep(300);
    expect(loopDelayMs()).toBeGreaterThan(0);
  });
});
