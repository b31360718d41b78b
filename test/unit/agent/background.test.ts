import { describe, expect, it, vi } from 'vitest';
import { Background } from '../../../pkg/agent/background.ts';
import { capturedLog } from '../../support/captured-log.ts';

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

describe('Background', () => {
  it('logs a failed task with its name and the error, at warn', async () => {
    const { log, lines } = capturedLog();
    const bg = new Background(log, new AbortController().signal);
    bg.track("checking the pods' host ends", Promise.reject(new Error('EPERM listing links')));
    bg.track('fine', Promise.resolve(1));
    expect(await bg.stop(1000)).toBe(true);
    await tick();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 'warn',
      msg: 'background task failed',
      task: "checking the pods' host ends",
      error: 'EPERM listing links',
    });
  });

  it('runs a periodic task until stopped or aborted, each run tracked', async () => {
    const { log, lines } = capturedLog();
    const abort = new AbortController();
    const bg = new Background(log, abort.signal);
    let runs = 0;
    bg.every(
      'counting',
      5,
      async () => {
        runs++;
        if (runs === 2) throw new Error('second run fails');
      },
      true,
    );
    expect(runs).toBe(1);
    // Past the failed second run (a stalled loop fires a late interval once, not each one it missed).
    await vi.waitFor(() => expect(runs).toBeGreaterThanOrEqual(3), { timeout: 5000, interval: 5 });
    abort.abort();
    const at = runs;
    await tick(30);
    expect(runs).toBe(at);
    expect(await bg.stop(1000)).toBe(true);
    await tick();
    expect(lines.filter((l) => l.task === 'counting' && l.error === 'second run fails')).toHaveLength(1);
  });

  it('a periodic task runs one at a time: ticks while a run lasts are skipped, not piled up', async () => {
    const { log } = capturedLog();
    const abort = new AbortController();
    const bg = new Background(log, abort.signal);
    let started = 0;
    let release: (() => void) | undefined;
    bg.every(
      'draining spooled DELs',
      5,
      () => {
        started++;
        return new Promise<void>((r) => (release = r));
      },
      true,
    );
    await tick(50); // ten periods while the first run hangs
    expect(started).toBe(1);
    release!();
    await tick(30);
    expect(started).toBeGreaterThanOrEqual(2);
    abort.abort();
    release!();
    expect(await bg.stop(1000)).toBe(true);
  });

  it('stop waits for work in flight (and the extra promises), within the time given', async () => {
    const { log } = capturedLog();
    const bg = new Background(log, new AbortController().signal);
    let finished = false;
    bg.track(
      'slow',
      tick(30).then(() => {
        finished = true;
      }),
    );
    expect(await bg.stop(1000, [undefined, tick(10)])).toBe(true);
    expect(finished).toBe(true);
    const hung = new Background(log, new AbortController().signal);
    hung.track('never ends', new Promise(() => {}));
    expect(await hung.stop(20)).toBe(false);
  });
});
