import { attachmentKey } from '../datapath/names.ts';
import type { Lease } from '../ipam/index.ts';

export interface PodOnNode {
  namespace: string;
  name: string;
  uid: string;
  /** status.phase: a Succeeded or Failed pod has no sandbox left to keep an address for. */
  phase?: string;
}

/**
 * Leases to release in IPAM garbage collection: the pod no longer runs on this node (per the API's
 * pods with spec.nodeName = this node, a finished one, Succeeded or Failed, not counting: a Job's pod
 * stays listed until it is deleted) AND its network namespace is gone. Requiring both keeps a pod
 * that the API lists late, or a netns the agent cannot see, from losing its address.
 */
export function staleLeases(
  leases: readonly Lease[],
  podsOnNode: readonly PodOnNode[],
  netnsExists: (path: string) => boolean,
  busy: ReadonlySet<string>,
  /**
   * Whether the attachment's host veth exists: a lease without a namespace path (one rebuilt from
   * the kernel, see lease-rebuild.ts) counts as gone only when its veth is gone too.
   */
  hostVethExists: (l: Lease) => boolean = () => false,
): Lease[] {
  const live = podsOnNode.filter((p) => p.phase !== 'Succeeded' && p.phase !== 'Failed');
  const running = new Set(live.map((p) => `${p.namespace}/${p.name}`));
  const runningUids = new Set(live.map((p) => p.uid));
  return leases.filter((l) => {
    if (busy.has(attachmentKey(l))) return false;
    const known = l.podNamespace !== undefined && l.podName !== undefined;
    const podRuns =
      known &&
      running.has(`${l.podNamespace}/${l.podName}`) &&
      (l.podUid === undefined || runningUids.has(l.podUid));
    if (podRuns) return false;
    if (l.netns === undefined || l.netns === '') return !hostVethExists(l);
    return !netnsExists(l.netns);
  });
}
