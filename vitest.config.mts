import { defineConfig } from 'vitest/config';

// Integration tests start real masters and workers and put load on loopback.
// Three files run at a time, even on 2 cores: much of a file's time is spent
// waiting on events (a generation becoming ready, a drain, a timeout), and
// every wait has a generous deadline, so a busy machine slows a file but does
// not fail it. Each file's processes carry their own run id, so reaping one
// file's processes never touches another's.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: true,
    maxWorkers: 3,
    testTimeout: 180_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
