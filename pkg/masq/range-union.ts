import type { Family } from '../datapath/ports.ts';
import { type Cidr, cidrRange } from '../ip/index.ts';
import { mergeRanges } from './ranges.ts';

/** A change of a union: ranges that left it and ranges that joined it (inclusive). */
export interface UnionChange {
  remove: [bigint, bigint][];
  add: [bigint, bigint][];
}

interface Block {
  lo: bigint;
  hi: bigint;
}

/**
 * The union of a multiset of CIDR blocks of one family as merged, sorted, disjoint ranges (what
 * mergeRanges gives), kept up to date one block at a time in O(log n) steps instead of a pass over
 * all of them: a Node event must not cost a pass over every pod CIDR of the cluster (the agent's JS
 * runs in the interpreter, scripts/build.ts, where such a pass at 5,000 nodes took ~5-10 ms, and
 * its garbage brought the old generation's collections, 15-30 ms pauses, around more often).
 *
 * What makes removal cheap: CIDR blocks are laminar (two blocks are disjoint or one contains the
 * other). A block removed leaves the union as it was when a block containing it remains; otherwise
 * it takes out exactly its own range minus what the blocks inside it cover, and the rest of the
 * merged range it was part of stays, covered by blocks disjoint from it.
 */
export class RangeUnion {
  readonly family: Family;
  private readonly bits: bigint;
  /** prefix length -> network -> how many times that block was added. */
  private readonly counts = new Map<number, Map<bigint, number>>();
  /** The distinct blocks, sorted by start, the larger first at one start. */
  private readonly blocks: Block[] = [];
  /** The union. */
  private readonly merged: [bigint, bigint][];

  constructor(family: Family, blocks: readonly Cidr[] = []) {
    this.family = family;
    this.bits = family === 4 ? 32n : 128n;
    // Built in one sort and one merge, not block by block: a full pass hands over thousands.
    const mine = blocks.filter((b) => b.family === family);
    for (const b of mine) if (this.count(b, 1) === 1) this.blocks.push(blockOf(b));
    this.blocks.sort((x, y) => (x.lo < y.lo ? -1 : x.lo > y.lo ? 1 : x.hi > y.hi ? -1 : x.hi < y.hi ? 1 : 0));
    this.merged = mergeRanges(mine);
  }

  /** The union as merged ranges (a copy). */
  ranges(): [bigint, bigint][] {
    return this.merged.map(([lo, hi]) => [lo, hi]);
  }

  /** Adds one block (of this union's family); what the union gained. */
  add(block: Cidr): UnionChange {
    if (this.count(block, 1)! > 1) return none();
    const { lo, hi } = blockOf(block);
    this.blocks.splice(this.blockIndex(lo, hi), 0, { lo, hi });
    if (this.hasSupernet(block)) return none();
    // The merged ranges that overlap or touch [lo, hi] become one with it.
    const i = this.firstEndingAtOrAfter(lo === 0n ? 0n : lo - 1n);
    let j = i;
    let start = lo;
    let end = hi;
    for (; j < this.merged.length && this.merged[j]![0] <= hi + 1n; j++) {
      if (this.merged[j]![0] < start) start = this.merged[j]![0];
      if (this.merged[j]![1] > end) end = this.merged[j]![1];
    }
    // Already covered by smaller blocks that fill it: nothing changes.
    if (j === i + 1 && this.merged[i]![0] === start && this.merged[i]![1] === end) return none();
    const removed = this.merged.splice(i, j - i, [start, end]);
    // `removed` left `merged` (the caller's now); the range added is a copy of the one kept.
    return { remove: removed, add: [[start, end]] };
  }

  /** Removes one block (of this union's family); what the union lost. */
  remove(block: Cidr): UnionChange {
    const left = this.count(block, -1);
    if (left === undefined || left > 0) return none();
    const { lo, hi } = blockOf(block);
    const at = this.blockIndex(lo, hi);
    this.blocks.splice(at, 1);
    if (this.hasSupernet(block)) return none();
    const m = this.firstEndingAtOrAfter(lo);
    const [start, end] = this.merged[m]!;
    // What is left of its merged range: the parts outside the block, and inside it the union of the
    // blocks it contains (they follow it in `blocks`), joined where they touch.
    const pieces: [bigint, bigint][] = start < lo ? [[start, lo - 1n]] : [];
    for (let k = at; k < this.blocks.length && this.blocks[k]!.lo <= hi; k++) {
      const b = this.blocks[k]!;
      const last = pieces[pieces.length - 1];
      if (last !== undefined && b.lo <= last[1] + 1n) {
        if (b.hi > last[1]) last[1] = b.hi;
      } else {
        pieces.push([b.lo, b.hi]);
      }
    }
    if (hi < end) {
      const last = pieces[pieces.length - 1];
      if (last !== undefined && last[1] === hi) last[1] = end;
      else pieces.push([hi + 1n, end]);
    }
    this.merged.splice(m, 1, ...pieces.map(([a, b]): [bigint, bigint] => [a, b]));
    return { remove: [[start, end]], add: pieces };
  }

  /**
   * Changes the block's count by delta; the new count (undefined: it was not there to remove). A
   * block of another family is an error: the caller sorts blocks by family.
   */
  private count(block: Cidr, delta: 1 | -1): number | undefined {
    if (block.family !== this.family) {
      throw new RangeError(`an IPv${block.family} block given to an IPv${this.family} union`);
    }
    let byNetwork = this.counts.get(block.prefixLen);
    if (byNetwork === undefined) {
      if (delta < 0) return undefined;
      byNetwork = new Map();
      this.counts.set(block.prefixLen, byNetwork);
    }
    const n = (byNetwork.get(block.network) ?? 0) + delta;
    if (n < 0) return undefined;
    if (n === 0) byNetwork.delete(block.network);
    else byNetwork.set(block.network, n);
    return n;
  }

  /** Whether a block strictly containing `block` is in the multiset (a few prefix lengths to try). */
  private hasSupernet(block: Cidr): boolean {
    for (const [len, byNetwork] of this.counts) {
      if (len >= block.prefixLen || byNetwork.size === 0) continue;
      const shift = this.bits - BigInt(len);
      if (byNetwork.has((block.network >> shift) << shift)) return true;
    }
    return false;
  }

  /** Where the block [lo, hi] is, or goes, in `blocks`. */
  private blockIndex(lo: bigint, hi: bigint): number {
    let a = 0;
    let b = this.blocks.length;
    while (a < b) {
      const mid = (a + b) >> 1;
      const x = this.blocks[mid]!;
      if (x.lo < lo || (x.lo === lo && x.hi > hi)) a = mid + 1;
      else b = mid;
    }
    return a;
  }

  /** The first merged range whose end is at or after `addr`. */
  private firstEndingAtOrAfter(addr: bigint): number {
    let a = 0;
    let b = this.merged.length;
    while (a < b) {
      const mid = (a + b) >> 1;
      if (this.merged[mid]![1] < addr) a = mid + 1;
      else b = mid;
    }
    return a;
  }
}

function blockOf(c: Cidr): Block {
  const [lo, hi] = cidrRange(c);
  return { lo, hi };
}

function none(): UnionChange {
  return { remove: [], add: [] };
}
