import type { IntervalSetChange } from '../datapath/ports.ts';
import type { MasqSet } from './render.ts';

/**
 * What turns the sets `from` into the sets `to` (the same sets, by name and family: plans of one
 * shape): per set, the ranges to remove and the ranges to add. A range that grew or shrank is
 * removed and added whole, as nft's own auto-merge does: the kernel stores a range as a start and
 * an end element, and moving only its end is not a change it accepts. Both range lists are sorted
 * and disjoint (mergeRanges), so one walk compares them. undefined when the sets differ in name or
 * family (the caller applies the table whole).
 */
export function diffSets(from: readonly MasqSet[], to: readonly MasqSet[]): IntervalSetChange[] | undefined {
  if (from.length !== to.length) return undefined;
  const changes: IntervalSetChange[] = [];
  for (let s = 0; s < to.length; s++) {
    const a = from[s]!;
    const b = to[s]!;
    if (a.name !== b.name || a.family !== b.family) return undefined;
    const remove: [bigint, bigint][] = [];
    const add: [bigint, bigint][] = [];
    let i = 0;
    let j = 0;
    while (i < a.ranges.length || j < b.ranges.length) {
      const x = a.ranges[i];
      const y = b.ranges[j];
      if (x !== undefined && y !== undefined && x[0] === y[0] && x[1] === y[1]) {
        i++;
        j++;
      } else if (y === undefined || (x !== undefined && x[0] <= y[0])) {
        remove.push(x!);
        i++;
      } else {
        add.push(y);
        j++;
      }
    }
    if (remove.length > 0 || add.length > 0) changes.push({ set: b.name, family: b.family, remove, add });
  }
  return changes;
}

/** How many ranges the changes move (removed plus added). */
export function rangesMoved(changes: readonly IntervalSetChange[]): number {
  let n = 0;
  for (const c of changes) n += c.remove.length + c.add.length;
  return n;
}
