import { afterEach, describe, expect, it, vi } from 'vitest';
import { StopDeadline } from '../../../pkg/agent/stop-deadline.ts';

const settleIn = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const never = new Promise<void>(() => {});

/** Whether `p` has settled, after the microtasks queued so far. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(() => {
    done = true;
  });
  await vi.advanceTimersByTimeAsync(0);
  return done;
}

describe('StopDeadline: the waits of a stop share one deadline', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('waits that end in time are not named; one that hangs uses up the rest, and every wait after it returns at once, named', async () => {
    vi.useFakeTimers();
    const deadline = new StopDeadline(300, () => Date.now());
    const quick = deadline.within('quick', settleIn(20));
    await vi.advanceTimersByTimeAsync(20);
    expect(await settled(quick)).toBe(true);
    await deadline.within('absent', undefined);
    // The hung wait gets what is left (280 ms), not a fresh 300.
    const hung = deadline.within('hung', never);
    await vi.advanceTimersByTimeAsync(279);
    expect(await settled(hung)).toBe(false);
    expect(deadline.left()).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(await settled(hung)).toBe(true);
    expect(deadline.left()).toBe(0);
    // Past the deadline: nothing is waited for any more.
    expect(await settled(deadline.within('also hung', never))).toBe(true);
    expect(await settled(deadline.within('slow', settleIn(200)))).toBe(true);
    expect(deadline.unfinished).toEqual(['hung', 'also hung', 'slow']);
  });

  it('a wait whose work fails counts as ended (the stop goes on to release the lock and say it stopped)', async () => {
    const deadline = new StopDeadline(1000);
    await deadline.within('failed', Promise.reject(new Error('EIO')));
    deadline.stillRunning('background work');
    expect(deadline.unfinished).toEqual(['background work']);
  });
});
