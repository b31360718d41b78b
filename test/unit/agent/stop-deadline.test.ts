import { describe, expect, it } from 'vitest';
import { StopDeadline } from '../../../pkg/agent/stop-deadline.ts';

const settleIn = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const never = new Promise<void>(() => {});

describe('StopDeadline: the waits of a stop share one deadline', () => {
  it('waits that end in time are not named; one that hangs uses up the rest, and every wait after it returns at once, named', async () => {
    const deadline = new StopDeadline(300);
    const started = performance.now();
    await deadline.within('quick', settleIn(20));
    await deadline.within('absent', undefined);
    await deadline.within('hung', never);
    const hungEnded = performance.now() - started;
    // The hung wait got what was left (about 280 ms), not a fresh 300 ms.
    expect(hungEnded).toBeGreaterThanOrEqual(290);
    expect(hungEnded).toBeLessThan(600);
    expect(deadline.left()).toBe(0);
    await deadline.within('also hung', never);
    await deadline.within('slow', settleIn(200));
    expect(performance.now() - started - hungEnded).toBeLessThan(100);
    expect(deadline.over).toEqual(['hung', 'also hung', 'slow']);
  });

  it('a wait whose work fails counts as ended (the stop goes on to release the lock and say it stopped)', async () => {
    const deadline = new StopDeadline(1000);
    await deadline.within('failed', Promise.reject(new Error('EIO')));
    deadline.stillRunning('background work');
    expect(deadline.over).toEqual(['background work']);
  });
});
