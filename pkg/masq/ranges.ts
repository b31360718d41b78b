import { type Cidr, cidrRange } from '../ip/index.ts';

/**
 * Merges blocks of one family into the smallest sorted list of disjoint inclusive ranges (adjacent
 * ranges are joined). nftables rejects overlapping elements in an interval set, so the renderer merges.
 *
 * It runs over every node's pod CIDRs after each Node event, in the agent's interpreter-only V8
 * (scripts/build.ts), so the common case is kept off BigInt: IPv4 blocks are sorted and merged as
 * plain numbers (exact below 2^53), and an IPv6 block's range is computed once per parsed block.
 */
export function mergeRanges(blocks: readonly Cidr[]): [bigint, bigint][] {
  if (blocks.length > 0 && blocks.every((b) => b.family === 4)) return mergeV4(blocks);
  const ranges = blocks.map(rangeOf).sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
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

function mergeV4(blocks: readonly Cidr[]): [bigint, bigint][] {
  const n = blocks.length;
  const lo = new Float64Array(n);
  const hi = new Float64Array(n);
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const b = blocks[i]!;
    lo[i] = Number(b.network);
    hi[i] = lo[i]! + 2 ** (32 - b.prefixLen) - 1;
    order[i] = i;
  }
  order.sort((a, b) => lo[a]! - lo[b]!);
  const out: [bigint, bigint][] = [];
  let start = -1;
  let end = -2;
  for (let k = 0; k < n; k++) {
    const i = order[k]!;
    if (lo[i]! <= end + 1) {
      if (hi[i]! > end) end = hi[i]!;
      continue;
    }
    if (start >= 0) out.push([BigInt(start), BigInt(end)]);
    start = lo[i]!;
    end = hi[i]!;
  }
  if (start >= 0) out.push([BigInt(start), BigInt(end)]);
  return out;
}

/** Parsed blocks are shared (parseCidr caches them), so their ranges are too. */
const ranges = new WeakMap<Cidr, [bigint, bigint]>();

function rangeOf(c: Cidr): [bigint, bigint] {
  let r = ranges.get(c);
  if (r === undefined) {
    r = cidrRange(c);
    ranges.set(c, r);
  }
  return [r[0], r[1]];
}
