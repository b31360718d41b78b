import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { cidrContains, formatIp, parseCidr, parseIp } from '../../../pkg/ip/index.ts';
import { mergeRanges } from '../../../pkg/masq/ranges.ts';

describe('mergeRanges', () => {
  it('joins overlapping and adjacent blocks', () => {
    const blocks = ['10.0.1.0/24', '10.0.0.0/24', '10.0.0.128/25', '10.0.3.0/24'].map((s) => parseCidr(s)!);
    const r = mergeRanges(blocks).map(
      ([lo, hi]) => `${formatIp({ family: 4, value: lo })}-${formatIp({ family: 4, value: hi })}`,
    );
    expect(r).toEqual(['10.0.0.0-10.0.1.255', '10.0.3.0-10.0.3.255']);
  });

  it('covers exactly the union of the inputs (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 24, max: 32 })), {
          maxLength: 12,
        }),
        fc.integer({ min: 0, max: 511 }),
        (specs, probe) => {
          const blocks = specs.map(([n, len]) => parseCidr(`10.0.${n}.0/${len}`, { strict: false })!);
          const ranges = mergeRanges(blocks);
          const ip = { family: 4 as const, value: parseIp('10.0.0.0')!.value + BigInt(probe * 131) };
          const inBlocks = blocks.some((b) => cidrContains(b, ip));
          const inRanges = ranges.some(([lo, hi]) => ip.value >= lo && ip.value <= hi);
          expect(inRanges).toBe(inBlocks);
          for (let i = 1; i < ranges.length; i++) expect(ranges[i]![0] > ranges[i - 1]![1] + 1n).toBe(true);
        },
      ),
    );
  });
});
