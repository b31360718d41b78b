import { defineConfig } from 'vitest/config';

// Unit tests run in parallel; integration tests share the kernel (namespaces, veths) and
// real processes, so they run one file at a time to keep timing and resource use sane.
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts', 'test/e2e/**/*.test.ts'],
          fileParallelism: false,
        },
      },
    ],
  },
});
