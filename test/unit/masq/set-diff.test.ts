import { describe, expect, it } from 'vitest';
import type { MasqSet } from '../../../pkg/masq/render.ts';
import { diffSets, rangesMoved } from '../../../pkg/masq/set-diff.ts';

const set = (name: string, ranges: [number, number][], family: 4 | 6 = 4): MasqSet => ({
  name,
  family,
  ranges: ranges.map(([lo, hi]) => [BigInt(lo), BigInt(hi)]),
});
const r = (lo: number, hi: number): [bigint, bigint] => [BigInt(lo), BigInt(hi)];

describe('diffSets', () => {
  it('lists nothing for equal sets and only the sets that changed', () => {
    const a = [
      set('pods_v4', [[0, 9]]),
      set('nomasq_v4', [
        [0, 9],
        [20, 29],
      ]),
    ];
    expect(diffSets(a, a)).toEqual([]);
    const b = [
      set('pods_v4', [[0, 9]]),
      set('nomasq_v4', [
        [0, 9],
        [20, 29],
        [40, 49],
      ]),
    ];
    expect(diffSets(a, b)).toEqual([{ set: 'nomasq_v4', family: 4, remove: [], add: [r(40, 49)] }]);
    expect(diffSets(b, a)).toEqual([{ set: 'nomasq_v4', family: 4, remove: [r(40, 49)], add: [] }]);
  });

  it('removes and adds whole a range that grew, shrank, split or merged', () => {
    const from = [
      set('nomasq_v4', [
        [0, 9],
        [20, 29],
        [40, 49],
      ]),
    ];
    const to = [
      set('nomasq_v4', [
        [0, 19 + 10],
        [40, 44],
        [46, 49],
        [60, 69],
      ]),
    ];
    const d = diffSets(from, to)!;
    expect(d).toEqual([
      {
        set: 'nomasq_v4',
        family: 4,
        remove: [r(0, 9), r(20, 29), r(40, 49)],
        add: [r(0, 29), r(40, 44), r(46, 49), r(60, 69)],
      },
    ]);
    expect(rangesMoved(d)).toBe(7);
  });

  it('same start, other end: one removal and one addition', () => {
    expect(diffSets([set('s', [[10, 19]])], [set('s', [[10, 29]])])).toEqual([
      { set: 's', family: 4, remove: [r(10, 19)], add: [r(10, 29)] },
    ]);
    expect(diffSets([set('s', [])], [set('s', [[1, 1]])])).toEqual([
      { set: 's', family: 4, remove: [], add: [r(1, 1)] },
    ]);
  });

  it('is undefined for sets of another name, family or number', () => {
    expect(diffSets([set('a', [])], [set('b', [])])).toBeUndefined();
    expect(diffSets([set('a', [])], [set('a', [], 6)])).toBeUndefined();
    expect(diffSets([set('a', [])], [])).toBeUndefined();
  });
});
