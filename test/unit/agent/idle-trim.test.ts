import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { IdleTrim } from '../../../pkg/agent/idle-trim.ts';

/** The trim's schedule on fake timers; the trims are recorded. */
describe('IdleTrim', () => {
  let rss = 100e6;
  let trims: number[];
  let outcomes: {
    durationMs: number;
    rssBefore: number;
    rssAfter: number;
    detail: Record<string, number> | undefined;
  }[];
  let errors: unknown[];
  const make = (trim?: () => Record<string, number> | undefined) =>
    new IdleTrim({
      trim:
        trim ??
        (() => {
          trims.push(Date.now());
          rss -= 1e6;
          return { fileMbUnmapped: 3 };
        }),
      idleMs: 2000,
      minIntervalMs: 10_000,
      rss: () => rss,
      onTrim: (o) => outcomes.push(o),
      onError: (e) => errors.push(e),
      now: () => Date.now(),
    });

  beforeEach(() => {
    vi.useFakeTimers({ now: 0 });
    rss = 100e6;
    trims = [];
    outcomes = [];
    errors = [];
  });
  afterEach(() => vi.useRealTimers());

  it('trims once the work has been quiet for idleMs; more work pushes it back', () => {
    const trim = make();
    trim.noteWork();
    vi.advanceTimersByTime(1500);
    trim.noteWork();
    vi.advanceTimersByTime(1999);
    expect(trims).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(trims).toEqual([3500]);
    expect(outcomes).toEqual([
      { durationMs: 0, rssBefore: 100e6, rssAfter: 99e6, detail: { fileMbUnmapped: 3 } },
    ]);
    vi.advanceTimersByTime(60_000);
    expect(trims).toEqual([3500]); // nothing without new work
  });

  it('waits out minIntervalMs after the last trim', () => {
    const trim = make();
    trim.noteWork();
    vi.advanceTimersByTime(2000); // first trim at t=2 s
    trim.noteWork();
    vi.advanceTimersByTime(9999); // quiet since t=4 s, but the interval runs to t=12 s
    expect(trims).toEqual([2000]);
    vi.advanceTimersByTime(1);
    expect(trims).toEqual([2000, 12_000]);
  });

  it('work during the interval wait still counts: the trim waits for both the interval and the quiet time', () => {
    const trim = make();
    trim.noteWork();
    vi.advanceTimersByTime(3000); // first trim at t=2 s
    trim.noteWork(); // t=3 s
    vi.advanceTimersByTime(8000);
    trim.noteWork(); // t=11 s: the interval ends at 12 s, the quiet time at 13 s
    vi.advanceTimersByTime(1999);
    expect(trims).toEqual([2000]);
    vi.advanceTimersByTime(1);
    expect(trims).toEqual([2000, 13_000]);
  });

  it('a failing trim is reported once and not tried again', () => {
    const trim = make(() => {
      throw new Error('malloc_trim: no such symbol');
    });
    trim.noteWork();
    vi.advanceTimersByTime(2000);
    trim.noteWork();
    vi.advanceTimersByTime(60_000);
    expect(errors).toEqual([new Error('malloc_trim: no such symbol')]);
    expect(outcomes).toEqual([]);
  });

  it('stop cancels a pending trim and ignores later work', () => {
    const trim = make();
    trim.noteWork();
    trim.stop();
    trim.noteWork();
    vi.advanceTimersByTime(60_000);
    expect(trims).toEqual([]);
  });
});
