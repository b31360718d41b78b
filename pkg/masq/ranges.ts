import { type Cidr, cidrRange } from '../ip/index.ts';

/**
 * Merges blocks of one family into the smallest sorted list of disjoint inclusive ranges (adjacent
 * ranges are joined). nftables rejects overlapping elements in an interval set, so the renderer merges.
 */
export function mergeRanges(blocks: readonly Cidr[]): [bigint, bigint][] {
  const ranges = blocks.map(cidrRange).sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  const out: [bigint, bigint][] = [];
  for (const [lo, hi] of ranges) {
    const last = out[out.length - 1];
    if (last !== undefined && lo <= last[1] + 1n) {
      if (hi > last[1]) last[1] = hi;
    } else {
      out.push([lo, hi]);
    }
  }
  return out;
}
