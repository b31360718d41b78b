import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { hostVethName, isHostVethName } from '../../../pkg/datapath/names.ts';

/** The name is state: an agent finds veths an earlier release made by it, so it must never change. */
describe('hostVethName', () => {
  it('is "trl" and the first 12 hex digits of sha256(containerId NUL ifname)', () => {
    expect(hostVethName('abc', 'eth0')).toBe('trld887cd286879');
    expect(hostVethName('abc', 'net1')).toBe('trl52d61308fc78');
  });

  it('gives the same answers past the size of its memory (cleared when full)', () => {
    const hash = (id: string): string =>
      `trl${createHash('sha256').update(id).update('\0').update('eth0').digest('hex').slice(0, 12)}`;
    for (let i = 0; i < 10_000; i++) {
      const name = hostVethName(`pod-${i}`, 'eth0');
      if (i % 997 === 0) expect(name).toBe(hash(`pod-${i}`));
      expect(isHostVethName(name)).toBe(true);
    }
    expect(hostVethName('pod-1', 'eth0')).toBe(hash('pod-1'));
    expect(hostVethName('abc', 'eth0')).toBe('trld887cd286879');
  });
});
