import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { IdleTidy, type TidyOutcome } from '../../../pkg/agent/idle-tidy.ts';

/** The tidy's schedule and its choice to collect, on fake timers; the actions are recorded. */
describe('IdleTidy', () => {
  let rss = 100e6;
  let actions: string[];
  let outcomes: TidyOutcome[];
  let errors: unknown[];
  const make = (over: { collect?: (() => void) | undefined; trim?: () => void } = {}) =>
    new IdleTidy({
      actions: {
        collectGarbage:
          'collect' in over
            ? over.collect
            : () => {
                actions.push('collect');
                rss -= 10e6;
              },
        trimMalloc:
          over.trim ??
          (() => {
            actions.push('trim');
            rss -= 1e6;
          }),
      },
      idleMs: 2000,
      minIntervalMs: 10_000,
      collectAfterGrowth: 4e6,
      rss: () => rss,
      onTidy: (o) => outcomes.push(o),
      onError: (e) => errors.push(e),
      now: () => Date.now(),
    });

  beforeEach(() => {
    vi.useFakeTimers();
    rss = 100e6;
    actions = [];
    outcomes = [];
    errors = [];
  });
  afterEach(() => vi.useRealTimers());

  it('tidies once the work has been quiet for idleMs; more work pushes it back', () => {
    const tidy = make();
    tidy.noteWork();
    vi.advanceTimersByTime(1500);
    tidy.noteWork();
    vi.advanceTimersByTime(1500);
    expect(actions).toEqual([]);
    vi.advanceTimersByTime(500);
    expect(actions).toEqual(['collect', 'trim']);
    expect(outcomes).toEqual([{ collected: true, durationMs: 0, rssBefore: 100e6, rssAfter: 89e6 }]);
    vi.advanceTimersByTime(60_000);
    expect(actions).toHaveLength(2); // nothing without new work
  });

  it('waits out minIntervalMs after the last tidy, then trims; collects again only after 4 MB of growth', () => {
    const tidy = make();
    tidy.noteWork();
    vi.advanceTimersByTime(2000); // first tidy at t=2 s: collect + trim, rss 89 MB
    tidy.noteWork();
    vi.advanceTimersByTime(2000); // t=4 s: quiet, but only 2 s after the last tidy
    expect(actions).toEqual(['collect', 'trim']);
    vi.advanceTimersByTime(7999);
    expect(actions).toEqual(['collect', 'trim']);
    vi.advanceTimersByTime(1); // t=12 s: the interval is over; grown by 0, so the trim alone
    expect(actions).toEqual(['collect', 'trim', 'trim']);
    rss += 5e6; // 88 -> 93 MB, 4 MB over the 89 MB after the collection
    tidy.noteWork();
    vi.advanceTimersByTime(10_000);
    expect(actions).toEqual(['collect', 'trim', 'trim', 'collect', 'trim']);
    expect(outcomes.map((o) => o.collected)).toEqual([true, false, true]);
  });

  it('trims alone when the runtime exposes no collection', () => {
    const tidy = make({ collect: undefined });
    tidy.noteWork();
    vi.advanceTimersByTime(2000);
    expect(actions).toEqual(['trim']);
    expect(outcomes[0]).toMatchObject({ collected: false, rssBefore: 100e6, rssAfter: 99e6 });
  });

  it('a failing tidy is reported once and not tried again', () => {
    const tidy = make({
      trim: () => {
        throw new Error('malloc_trim: no such symbol');
      },
    });
    tidy.noteWork();
    vi.advanceTimersByTime(2000);
    tidy.noteWork();
    vi.advanceTimersByTime(60_000);
    expect(errors).toEqual([new Error('malloc_trim: no such symbol')]);
    expect(outcomes).toEqual([]);
  });

  it('stop cancels a pending tidy and ignores later work', () => {
    const tidy = make();
    tidy.noteWork();
    tidy.stop();
    tidy.noteWork();
    vi.advanceTimersByTime(60_000);
    expect(actions).toEqual([]);
  });
});
