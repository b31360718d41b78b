import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

// Unit tests run in parallel; integration tests share the kernel (namespaces, veths) and
// real processes, so they run one file at a time to keep timing and resource use sane, and only
// after the unit tests (groupOrder: projects run side by side otherwise, and the property tests'
// CPU would sit beside integration tests that time backoffs and count lost pings).
//
// Unit workers: at least two. Vitest's default leaves one core to its main process, which on a
// 2-core machine runs the unit files one at a time; many of them wait on sockets, child processes
// and timers rather than the CPU. On the 2-core test VM: 175 s with one worker, 88 with two, 90
// with three.
const unitWorkers = Math.max(2, availableParallelism() - 1);

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          maxWorkers: unitWorkers,
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts', 'test/e2e/**/*.test.ts'],
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
