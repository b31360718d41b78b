import { describe, expect, it } from 'vitest';
import { GroupSync } from '../../../pkg/ipam/group-sync.ts';

/** A sync whose runs the test finishes by hand, recording when each started. */
function manualSync() {
  const runs: { finish: (err?: Error) => void; startedAfter: number }[] = [];
  let requestsSoFar = 0;
  const sync = (): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      runs.push({ finish: (err) => (err ? reject(err) : resolve()), startedAfter: requestsSoFar });
    });
  return { runs, sync, requested: () => requestsSoFar++ };
}

const settle = () => new Promise((r) => setImmediate(r));

describe('GroupSync', () => {
  it('starts at once when idle; callers that ask while one runs share ONE next run, started after it', async () => {
    const m = manualSync();
    const g = new GroupSync(m.sync);
    const ask = () => {
      m.requested();
      return g.request();
    };
    const first = ask();
    expect(m.runs).toHaveLength(1);
    const waiting = [ask(), ask(), ask()];
    await settle();
    expect(m.runs).toHaveLength(1); // not started while the first runs: it may predate their changes
    let done = 0;
    for (const w of waiting) void w.then(() => done++);
    m.runs[0]!.finish();
    await first;
    await settle();
    expect(done).toBe(0); // the first run does not count for them
    expect(m.runs).toHaveLength(2);
    expect(m.runs[1]!.startedAfter).toBe(4); // after all four requests
    // Asking while the shared run is going gets a run of its own after it.
    const late = ask();
    await settle();
    expect(m.runs).toHaveLength(2);
    m.runs[1]!.finish();
    await Promise.all(waiting);
    expect(done).toBe(3);
    await settle();
    expect(m.runs).toHaveLength(3);
    m.runs[2]!.finish();
    await late;
    // Idle again: the next request starts at once.
    void g.request();
    expect(m.runs).toHaveLength(4);
    m.runs[3]!.finish();
  });

  it('a failed run rejects its own callers only; the shared next run still happens', async () => {
    const m = manualSync();
    const g = new GroupSync(m.sync);
    const first = g.request();
    const next = g.request();
    m.runs[0]!.finish(new Error('EIO'));
    await expect(first).rejects.toThrow('EIO');
    await settle();
    expect(m.runs).toHaveLength(2);
    m.runs[1]!.finish();
    await expect(next).resolves.toBeUndefined();
  });
});
