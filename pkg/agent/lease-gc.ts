import { attachmentKey } from '../datapath/names.ts';
import type { Lease } from '../ipam/index.ts';

export interface PodOnNode {
  namespace: string;
  name: string;
  uid: string;
  /** A static pod's UID as its sandbox has it (PodView.kubeletUid): what its leases record. */
  kubeletUid?: string;
  /** status.phase: a Succeeded or Failed pod has no sandbox left to keep an address for. */
  phase?: string;
}

/**
 * Leases to release in IPAM garbage collection: the pod no longer runs on this node (per the API's
 * pods with spec.nodeName = this node, a finished one, Succeeded or Failed, not counting: a Job's pod
 * stays listed until it is deleted) AND its network namespace or its host veth is gone. Requiring the
 * pod gone too keeps a pod that the API lists late, or a netns the agent cannot see, from losing its
 * address; the veth catches a namespace path that names a namespace again. A lease without
 * a pod uid whose pod name runs, or of a running pod's earlier sandbox (same uid), goes only when its
 * host veth is gone too.
 */
export function staleLeases(
  leases: readonly Lease[],
  podsOnNode: readonly PodOnNode[],
  /** Whether the lease's pod namespace is still there (leaseNetnsLive: its path names the one ADD used). */
  netnsLive: (l: Lease) => boolean,
  busy: ReadonlySet<string>,
  /**
   * Whether the attachment's host veth exists: a lease without a namespace path (one rebuilt from
   * the kernel, see lease-rebuild.ts) counts as gone only when its veth is gone too.
   */
  hostVethExists: (l: Lease) => boolean,
): Lease[] {
  const live = podsOnNode.filter((p) => p.phase !== 'Succeeded' && p.phase !== 'Failed');
  const running = new Set(live.map((p) => `${p.namespace}/${p.name}`));
  // A static pod's lease records the UID the kubelet runs it under, not its mirror's metadata.uid.
  const runningUids = new Set(
    live.flatMap((p) => (p.kubeletUid === undefined ? [p.uid] : [p.uid, p.kubeletUid])),
  );
  return leases.filter((l) => {
    if (busy.has(attachmentKey(l))) return false;
    const known = l.podNamespace !== undefined && l.podName !== undefined;
    const nameRuns = known && running.has(`${l.podNamespace}/${l.podName}`);
    const netnsGone = l.netns !== undefined && l.netns !== '' && !netnsLive(l);
    if (nameRuns && l.podUid !== undefined && runningUids.has(l.podUid)) {
      // The pod runs, but this may be a sandbox before its current one (the runtime recreated it and
      // never sent DEL for the old). Its namespace AND its host veth both gone: no sandbox of the pod
      // uses this attachment any more. Either still there (or no path to judge by), it may be the
      // running one's: a netns path the agent cannot see alone never frees a running pod's address.
      return netnsGone && !hostVethExists(l);
    }
    if (nameRuns && l.podUid === undefined) {
      // No uid (the runtime sent no K8S_POD_UID): a pod of that name may be a later one (a StatefulSet's
      // pod deleted and created again). The attachment is dead when its namespace AND its host veth are
      // gone; either still there, it may be the running pod's.
      return netnsGone && !hostVethExists(l);
    }
    // The pod left. Its host veth gone settles it: the kernel removes the pair with the namespace, so
    // nothing can use the address through this attachment. That also frees a lease whose path names
    // a namespace again (a /proc/PID/ns/net path whose PID was reused) and one without a path.
    return netnsGone || !hostVethExists(l);
  });
}
