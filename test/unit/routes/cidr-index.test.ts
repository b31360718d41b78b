import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type Cidr, cidrsOverlap, formatCidr, parseCidr } from '../../../pkg/ip/index.ts';
import { CidrIndex } from '../../../pkg/routes/cidr-index.ts';

const cidr = (s: string): Cidr => parseCidr(s)!;

/** Small v4 and v6 CIDRs of a few sizes, so that nesting and equality happen often. */
const cidrArb: fc.Arbitrary<Cidr> = fc.oneof(
  fc
    .tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 15 }), fc.constantFrom(16, 20, 24, 28))
    .map(([a, b, len]) => parseCidr(`10.${a}.${b * 16}.0/${len}`, { strict: false })!),
  fc
    .tuple(fc.integer({ min: 0, max: 7 }), fc.constantFrom(48, 56, 64))
    .map(([a, len]) => parseCidr(`fd00:0:${a}::/${len}`, { strict: false })!),
);

describe('CidrIndex', () => {
  it('finds containment both ways, ignores the asking owner and other families', () => {
    const idx = new CidrIndex();
    idx.add('a', [cidr('10.244.0.0/16')]);
    idx.add('b', [cidr('10.245.1.0/24'), cidr('fd00:1::/64')]);
    // Inside a's /16.
    expect(idx.firstOverlap([cidr('10.244.7.0/24')], 'x')).toMatchObject({ other: 'a' });
    // Contains b's /24.
    expect(idx.firstOverlap([cidr('10.245.0.0/16')], 'x')).toMatchObject({ other: 'b' });
    expect(formatCidr(idx.firstOverlap([cidr('10.245.0.0/16')], 'x')!.otherCidr)).toBe('10.245.1.0/24');
    // The same CIDR, its own owner: no clash.
    expect(idx.firstOverlap([cidr('10.245.1.0/24')], 'b')).toBeUndefined();
    expect(idx.firstOverlap([cidr('10.246.0.0/24'), cidr('fd00:2::/64')], 'x')).toBeUndefined();
    expect(idx.firstOverlap([cidr('fd00::/16')], 'x')).toMatchObject({ other: 'b' });
    expect(idx.firstOverlap([cidr('fd00::/32')], 'x')).toBeUndefined(); // fd00:1::/64 is fd00:0001::
    idx.remove('b', [cidr('10.245.1.0/24')]);
    expect(idx.firstOverlap([cidr('10.245.0.0/16')], 'x')).toBeUndefined();
  });

  it('agrees with the pairwise check over random claims, additions and removals', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom('a', 'b', 'c', 'd'), fc.array(cidrArb, { maxLength: 3 })), {
          maxLength: 12,
        }),
        fc.array(cidrArb, { minLength: 1, maxLength: 3 }),
        fc.constantFrom('a', 'b', 'x'),
        (claims, query, asker) => {
          // The last claim per owner wins, as commitPeerStep replaces a record.
          const idx = new CidrIndex();
          const held = new Map<string, Cidr[]>();
          for (const [owner, cidrs] of claims) {
            const old = held.get(owner);
            if (old !== undefined) idx.remove(owner, old);
            idx.add(owner, cidrs);
            held.set(owner, cidrs);
          }
          const expected = [...held].some(
            ([owner, cidrs]) => owner !== asker && cidrs.some((o) => query.some((q) => cidrsOverlap(q, o))),
          );
          const found = idx.firstOverlap(query, asker);
          expect(found !== undefined).toBe(expected);
          if (found !== undefined) {
            expect(found.other).not.toBe(asker);
            expect(cidrsOverlap(found.cidr, found.otherCidr)).toBe(true);
            expect(held.get(found.other)?.some((o) => formatCidr(o) === formatCidr(found.otherCidr))).toBe(
              true,
            );
          }
        },
      ),
      { numRuns: 500 },
    );
  });
  it('built at once (CidrIndex.of) finds what one built claim by claim finds, and keeps working after', () => {
    fc.assert(
      fc.property(
        fc.dictionary(fc.constantFrom('a', 'b', 'c', 'd', 'e'), fc.array(cidrArb, { maxLength: 3 })),
        fc.array(cidrArb, { minLength: 1, maxLength: 3 }),
        fc.constantFrom('a', 'b', 'x'),
        fc.array(cidrArb, { maxLength: 2 }),
        (claims, query, asker, later) => {
          const owned = new Map(Object.entries(claims).map(([owner, cidrs]) => [owner, { cidrs }]));
          const once = CidrIndex.of(owned, (v) => v.cidrs);
          const stepwise = new CidrIndex();
          for (const [owner, { cidrs }] of owned) stepwise.add(owner, cidrs);
          const same = (): void => {
            const a = once.firstOverlap(query, asker);
            const b = stepwise.firstOverlap(query, asker);
            expect(a === undefined).toBe(b === undefined);
            if (a !== undefined && b !== undefined) {
              // Which owner comes first among equal networks may differ; the CIDR found may not.
              expect(formatCidr(a.cidr)).toBe(formatCidr(b.cidr));
              expect(cidrsOverlap(a.cidr, a.otherCidr)).toBe(true);
              expect(a.other).not.toBe(asker);
            }
          };
          same();
          // A later step on the bulk-built index: its buckets are sorted, so inserts and removals work.
          for (const idx of [once, stepwise]) {
            idx.remove('a', claims.a ?? []);
            idx.add('f', later);
          }
          same();
        },
      ),
      { numRuns: 500 },
    );
  });
});
