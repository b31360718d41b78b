import type { ClusterNode } from './cluster.ts';

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
  synced(nodes: readonly ClusterNode[]): void {
    this.given = new Map(nodes.map((n) => [n.name, n.podCIDRs]));
  }

  /** Node `name`'s pod CIDRs changed (added, deleted, or other CIDRs). */
  markChanged(name: string): void {
    this.changed.add(name);
  }

  /**
   * The pod CIDRs that left and joined since, from the Nodes as `get` has them now (which they are
   * then taken to have given); undefined when only a whole sync will do: nothing synced yet, or this
   * node itself changed (its CIDRs are the sources as well).
   */
  take(
    get: (name: string) => ClusterNode | undefined,
    self: string,
  ): { removed: string[]; added: string[] } | undefined {
    const given = this.given;
    if (given === undefined || this.changed.has(self)) return undefined;
    const removed: string[] = [];
    const added: string[] = [];
    for (const name of this.changed) {
      // Multisets: the sets count a CIDR once per listing.
      const left = [...(given.get(name) ?? [])];
      const now = get(name)?.podCIDRs ?? [];
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
