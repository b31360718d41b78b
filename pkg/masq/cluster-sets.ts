import type { IntervalSetChange } from '../datapath/ports.ts';
import { parseCidr } from '../ip/index.ts';
import { RangeUnion, type UnionChange } from './range-union.ts';
import type { MasqPlan, MasqSet } from './render.ts';

/**
 * The nomasq sets (destinations that keep the pod's address) as unions of their blocks, so that a
 * Node added, deleted or given other pod CIDRs changes them in steps of its own size (RangeUnion)
 * rather than re-planning the whole cluster. Built from a plan; the pods sets never change here.
 */
export class ClusterSets {
  private readonly unions: Map<string, RangeUnion>;

  private constructor(unions: Map<string, RangeUnion>) {
    this.unions = unions;
  }

  static fromPlan(plan: MasqPlan): ClusterSets {
    const unions = new Map<string, RangeUnion>();
    for (const s of plan.sets) {
      if (s.name.startsWith('nomasq_')) unions.set(s.name, new RangeUnion(s.family, plan.nomasqBlocks));
    }
    return new ClusterSets(unions);
  }

  /**
   * Cluster pod CIDRs that left and joined (as Nodes spell them; text that is not a CIDR is skipped,
   * as the plan skips it): the set element changes, netted (a range that came and went in the same
   * call is in neither list), one entry per set that changed.
   */
  change(removed: readonly string[], added: readonly string[]): IntervalSetChange[] {
    const steps = new Map<string, UnionChange[]>();
    const apply = (texts: readonly string[], op: 'add' | 'remove'): void => {
      for (const t of texts) {
        const block = parseCidr(t);
        if (block === undefined) continue;
        const name = `nomasq_v${block.family}`;
        const union = this.unions.get(name);
        if (union === undefined) continue; // no pods of that family here: no such set
        const list = steps.get(name) ?? [];
        list.push(union[op](block));
        steps.set(name, list);
      }
    };
    apply(removed, 'remove');
    apply(added, 'add');
    const out: IntervalSetChange[] = [];
    for (const [set, list] of steps) {
      const net = netted(list);
      if (net.remove.length > 0 || net.add.length > 0)
        out.push({ set, family: this.unions.get(set)!.family, ...net });
    }
    return out;
  }

  /** `sets` with each nomasq set's ranges as the unions hold them now. */
  current(sets: readonly MasqSet[]): MasqSet[] {
    return sets.map((s) => {
      const union = this.unions.get(s.name);
      return union === undefined ? s : { ...s, ranges: union.ranges() };
    });
  }
}

/** Successive changes as one: what the first state lacks of the last, and what it has that the last lacks. */
function netted(changes: readonly UnionChange[]): UnionChange {
  const key = (r: readonly [bigint, bigint]): string => `${r[0]}-${r[1]}`;
  const remove = new Map<string, [bigint, bigint]>();
  const add = new Map<string, [bigint, bigint]>();
  for (const c of changes) {
    for (const r of c.remove) {
      if (!add.delete(key(r))) remove.set(key(r), r);
    }
    for (const r of c.add) {
      if (!remove.delete(key(r))) add.set(key(r), r);
    }
  }
  return { remove: [...remove.values()], add: [...add.values()] };
}
