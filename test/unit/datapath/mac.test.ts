import { describe, expect, it } from 'vitest';
import { randomMac } from '../../../pkg/datapath/mac.ts';

describe('randomMac', () => {
  it('gives locally administered unicast MACs in lower-case colon form, different each time', () => {
    const macs = Array.from({ length: 200 }, randomMac);
    for (const mac of macs) {
      expect(mac).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
      const first = Number.parseInt(mac.slice(0, 2), 16);
      expect(first & 0x01).toBe(0); // unicast
      expect(first & 0x02).toBe(2); // locally administered
    }
    expect(new Set(macs).size).toBe(macs.length);
  });
});
