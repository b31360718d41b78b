import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { backoffDelay } from '../../../pkg/k8s/index.ts';

describe('backoffDelay', () => {
  const opts = { initialMs: 100, maxMs: 5000 };
  it('doubles from initialMs and caps at maxMs (no jitter at random=1)', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 100].map((n) => backoffDelay(n, opts, () => 1))).toEqual([
      100, 200, 400, 800, 1600, 3200, 5000, 5000,
    ]);
  });
  it('jitter stays within [ceiling/2, ceiling]', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2000 }),
        fc.double({ min: 0, max: 0.999999, noNaN: true }),
        (n, r) => {
          const ceiling = Math.min(5000, 100 * 2 ** Math.min(n - 1, 52));
          const d = backoffDelay(n, opts, () => r);
          return d >= Math.floor(ceiling / 2) && d <= ceiling;
        },
      ),
    );
  });
});
