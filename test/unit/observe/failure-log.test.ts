import { describe, expect, it } from 'vitest';
import { FAILURE_REPEAT_MS, FailureLog } from '../../../pkg/observe/failure-log.ts';
import { capturedLog } from '../../support/captured-log.ts';

const settle = () => new Promise((r) => setImmediate(r));

describe('FailureLog', () => {
  it('warns when a failure starts, again only when it changes or every FAILURE_REPEAT_MS, and says when it is over', async () => {
    const { log, lines } = capturedLog();
    let now = 1000;
    const f = new FailureLog(log, 'could not set NetworkUnavailable=False', () => now);
    f.succeeded('set'); // nothing was failing: nothing to say
    for (let i = 0; i < 5; i++) {
      f.failed(new Error('nodes "n1" is forbidden'), { retryInMs: 500 });
      now += 1000;
    }
    f.failed(new Error('connect ECONNREFUSED'));
    now += FAILURE_REPEAT_MS;
    f.failed(new Error('connect ECONNREFUSED'));
    f.failed(new Error('connect ECONNREFUSED'));
    expect(f.failing).toBe(true);
    now += 500;
    f.succeeded('NetworkUnavailable=False set');
    await settle();
    expect(lines.map((l) => [l.level, l.msg, l.error])).toEqual([
      ['warn', 'could not set NetworkUnavailable=False', 'nodes "n1" is forbidden'],
      ['warn', 'could not set NetworkUnavailable=False', 'connect ECONNREFUSED'],
      ['warn', 'could not set NetworkUnavailable=False', 'connect ECONNREFUSED'],
      ['info', 'NetworkUnavailable=False set', undefined],
    ]);
    expect(lines[0]).toMatchObject({ retryInMs: 500 });
    expect(lines[2]).toMatchObject({ failedSinceLastSaid: 1, failingForMs: 5000 + FAILURE_REPEAT_MS });
    expect(lines[3]).toMatchObject({ failedAttempts: 8, failingForMs: 5500 + FAILURE_REPEAT_MS });
    expect(f.failing).toBe(false);
  });
});
