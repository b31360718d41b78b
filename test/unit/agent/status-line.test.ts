import { describe, expect, it } from 'vitest';
import { StatusLineLevel } from '../../../pkg/agent/status-line.ts';
import { FAILURE_REPEAT_MS } from '../../../pkg/observe/failure-log.ts';

describe('StatusLineLevel', () => {
  it('repeats a lasting failure every FAILURE_REPEAT_MS with the count of calls not said', () => {
    let now = 0;
    const s = new StatusLineLevel(() => now);
    expect(s.level('warn', false, 'not ready')).toEqual({ level: 'warn', fields: {} });
    for (let i = 0; i < 4; i++) {
      now += 5000;
      expect(s.level('warn', false, 'not ready').level).toBe('debug');
    }
    now = FAILURE_REPEAT_MS + 1;
    expect(s.level('warn', false, 'not ready')).toEqual({
      level: 'warn',
      fields: { failedSinceLastSaid: 4 },
    });
  });

  it('an internal error is always said; a ready answer that went without something keeps its warning', () => {
    const s = new StatusLineLevel(() => 0);
    expect(s.level('error', false, 'bug').level).toBe('error');
    expect(s.level('error', false, 'bug').level).toBe('error');
    expect(s.level('warn', true, undefined)).toEqual({ level: 'warn', fields: { failedBefore: true } });
    expect(s.level('warn', true, undefined).level).toBe('warn');
    expect(s.level('info', true, undefined).level).toBe('debug');
  });
});
