import { defineConfig } from 'vitest/config';

// Integration tests start real masters and workers and put load on loopback;
// on a 2-core machine they run one file at a time so they do not starve each other.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 180_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
