import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type Cidr, parseCidr } from '../../../pkg/ip/index.ts';
import { RangeUnion } from '../../../pkg/masq/range-union.ts';
import { mergeRanges } from '../../../pkg/masq/ranges.ts';

const c = (s: string): Cidr => parseCidr(s)!;
const text = (rs: readonly (readonly [bigint, bigint])[]): string[] => rs.map(([lo, hi]) => `${lo}-${hi}`);

describe('RangeUnion', () => {
  it('joins touching blocks, splits a range when a block in its middle goes, keeps duplicates counted', () => {
    const u = new RangeUnion(4, [c('10.0.0.0/24'), c('10.0.1.0/24'), c('10.0.1.0/24')]);
    expect(u.ranges()).toEqual([[0x0a000000n, 0x0a0001ffn]]);
    expect(u.add(c('10.0.2.0/24'))).toEqual({
      remove: [[0x0a000000n, 0x0a0001ffn]],
      add: [[0x0a000000n, 0x0a0002ffn]],
    });
    // Added twice: the first removal changes nothing.
    expect(u.remove(c('10.0.1.0/24'))).toEqual({ remove: [], add: [] });
    expect(u.remove(c('10.0.1.0/24'))).toEqual({
      remove: [[0x0a000000n, 0x0a0002ffn]],
      add: [
        [0x0a000000n, 0x0a0000ffn],
        [0x0a000200n, 0x0a0002ffn],
      ],
    });
    // Not there: nothing.
    expect(u.remove(c('10.0.9.0/24'))).toEqual({ remove: [], add: [] });
  });

  it('a block inside another changes nothing either way; the outer one removed leaves the inner', () => {
    const u = new RangeUnion(4, [c('10.0.0.0/16')]);
    expect(u.add(c('10.0.5.0/24'))).toEqual({ remove: [], add: [] });
    expect(u.remove(c('10.0.0.0/16'))).toEqual({
      remove: [[0x0a000000n, 0x0a00ffffn]],
      add: [[0x0a000500n, 0x0a0005ffn]],
    });
    // Two halves filling a block: the block itself adds nothing.
    const h = new RangeUnion(4, [c('10.1.0.0/25'), c('10.1.0.128/25')]);
    expect(h.add(c('10.1.0.0/24'))).toEqual({ remove: [], add: [] });
  });

  it('IPv6, and a block of the other family is refused', () => {
    const u = new RangeUnion(6, [c('fd00::/64')]);
    expect(text(u.add(c('fd00:0:0:1::/64')).add)).toEqual([
      `${0xfd00n << 112n}-${(0xfd00n << 112n) + (2n << 64n) - 1n}`,
    ]);
    expect(() => u.add(c('10.0.0.0/8'))).toThrow(/IPv4 block given to an IPv6 union/);
  });

  it('always equals the merge of what it holds, and each change turns the old union into the new (property)', () => {
    const block = fc
      .tuple(fc.integer({ min: 0, max: 63 }), fc.integer({ min: 26, max: 32 }))
      .map(([n, len]) => parseCidr(`10.0.0.${n * 4}/${len}`, { strict: false })!);
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.boolean(), block), { maxLength: 40 }),
        fc.array(block, { maxLength: 6 }),
        (ops, start) => {
          const held: Cidr[] = [...start];
          const u = new RangeUnion(4, start);
          let before = text(u.ranges());
          expect(before).toEqual(text(mergeRanges(held)));
          for (const [isAdd, b] of ops) {
            let change: ReturnType<RangeUnion['add']>;
            if (isAdd) {
              held.push(b);
              change = u.add(b);
            } else {
              const i = held.findIndex((h) => h.network === b.network && h.prefixLen === b.prefixLen);
              if (i >= 0) held.splice(i, 1);
              change = u.remove(b);
            }
            const after = text(u.ranges());
            expect(after).toEqual(text(mergeRanges(held)));
            const removed = text(change.remove);
            for (const r of removed) expect(before).toContain(r);
            const applied = [...before.filter((r) => !removed.includes(r)), ...text(change.add)];
            expect(applied.sort()).toEqual([...after].sort());
            before = after;
          }
        },
      ),
      { numRuns: 400 },
    );
  });
});
