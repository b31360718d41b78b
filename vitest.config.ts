import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

// Unit tests run in parallel, then the integration tests (groupOrder: projects run side by side
// otherwise, and the property tests' CPU would sit beside integration tests that time backoffs and
// count lost pings). Integration files run two at a time: each builds its own namespaces under a
// unique prefix, and most of their time is spent waiting (agents' backoffs, API outages, process
// restarts), not computing. On the 2-core test VM the integration files take ~440 s one at a time
// and ~235 s two at a time.
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
    // Ctrl-C in the middle of a run undoes what the running files made (test/support/signal-undo.ts).
    setupFiles: ['test/support/undo-on-interrupt.ts'],
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
          maxWorkers: 2,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
