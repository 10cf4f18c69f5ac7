import { defineConfig } from 'vitest/config';

// Integration tests start real masters and workers and put load on loopback.
// Two files run at a time: most of a file's time is spent waiting on events
// (a generation becoming ready, a drain, a timeout), so a second file uses
// the idle core; each file's processes carry their own run id, so reaping
// one file's processes never touches another's.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: true,
    maxWorkers: 2,
    testTimeout: 180_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
