import { canonicalCidr } from '../ip/index.ts';
import type { Problem } from '../routes/types.ts';
import type { ClusterNode } from './cluster.ts';

/** Per node, the pod CIDRs (canonical text) the route planner refused (Problem.refusedCidr). */
export type RefusedCidrs = ReadonlyMap<string, ReadonlySet<string>>;

export function refusedCidrs(problems: readonly Problem[]): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const p of problems) {
    if (p.refusedCidr === undefined) continue;
    const set = out.get(p.node) ?? new Set<string>();
    set.add(p.refusedCidr);
    out.set(p.node, set);
  }
  return out;
}

/** Whether two of a node's refusals hold the same CIDRs (undefined: none). */
export function sameRefusal(a: ReadonlySet<string> | undefined, b: ReadonlySet<string> | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  if (a.size !== b.size) return false;
  for (const c of a) if (!b.has(c)) return false;
  return true;
}

/**
 * The pod CIDRs node `n` gives the masquerade's cluster destinations: all of them but those the route
 * planner refused. A claim that is not routed is no cluster destination either: a Node given a /8 by
 * mistake (or a CIDR holding the underlay) would otherwise stop every node masquerading its pods'
 * traffic to that whole range, whose answers then cannot find the way back.
 */
export function clusterCidrsOf(n: ClusterNode, refused: RefusedCidrs): readonly string[] {
  const mine = refused.get(n.name);
  if (mine === undefined) return n.podCIDRs;
  return n.podCIDRs.filter((text) => !mine.has(canonicalCidr(text) ?? text));
}

/**
 * Which pod CIDRs each Node gave the masquerade sets at the last sync, and which Nodes changed since
 * (per-node steps): what a Node event adds to and takes from the sets, without reading the other
 * 4,999 Nodes (MasqSyncer.changeCluster). A full pass starts it over from the whole list.
 */
export class MasqGiven {
  private given: Map<string, readonly string[]> | undefined;
  private readonly changed = new Set<string>();

  /**
   * A whole sync has read its list of Nodes: that list covers every change marked so far, and until
   * the sync succeeds (synced) what the kernel holds is not known.
   */
  forget(): void {
    this.changed.clear();
    this.given = undefined;
  }

  /** The whole sync from `nodes` succeeded. Changes marked while it ran stay marked: the list predates them. */
  synced(nodes: readonly ClusterNode[], refused: RefusedCidrs): void {
    this.given = new Map(nodes.map((n) => [n.name, clusterCidrsOf(n, refused)]));
  }

  /** Node `name`'s pod CIDRs changed (added, deleted, or other CIDRs). */
  markChanged(name: string): void {
    this.changed.add(name);
  }

  /**
   * The pod CIDRs that left and joined since, from the Nodes as `get` has them now, less the
   * planner's refusals as `refused` has them (which they are then taken to have given); undefined
   * when only a whole sync will do: nothing synced yet, or this node itself changed (its CIDRs are
   * the sources as well).
   */
  take(
    get: (name: string) => ClusterNode | undefined,
    self: string,
    refused: RefusedCidrs,
  ): { removed: string[]; added: string[] } | undefined {
    const given = this.given;
    if (given === undefined || this.changed.has(self)) return undefined;
    const removed: string[] = [];
    const added: string[] = [];
    for (const name of this.changed) {
      // Multisets: the sets count a CIDR once per listing.
      const left = [...(given.get(name) ?? [])];
      const node = get(name);
      const now = node === undefined ? [] : clusterCidrsOf(node, refused);
      for (const c of now) {
        const i = left.indexOf(c);
        if (i >= 0) left.splice(i, 1);
        else added.push(c);
      }
      removed.push(...left);
      if (now.length === 0) given.delete(name);
      else given.set(name, now);
    }
    this.changed.clear();
    return { removed, added };
  }
}
