import { removeHostVeths } from '../datapath/gc.ts';
import { hostVethName, leaseLogFields, shortId } from '../datapath/names.ts';
import { judgeLeaseNetns } from '../datapath/netns-identity.ts';
import type { DatapathDeps } from '../datapath/types.ts';
import type { Lease } from '../ipam/index.ts';
import type { K8sClient } from '../k8s/index.ts';
import type { Logger } from '../observe/logger.ts';
import { staleLeases } from './lease-gc.ts';

/**
 * Deletes the host veths of these (released) leases, off the critical path: exactly those, never
 * "every veth but the others", which would take a veth an ADD made meanwhile; and none whose
 * attachment has a lease again by the time the links are listed (a runtime reusing a container ID:
 * its ADD made the veth anew under the same name).
 */
export async function removeAttachments(datapath: DatapathDeps, leases: readonly Lease[]): Promise<void> {
  const keys = new Map(leases.map((l) => [hostVethName(l.containerId, l.ifname), l]));
  await removeHostVeths(
    datapath,
    new Set(keys.keys()),
    (name) => {
      const l = keys.get(name);
      return (
        l !== undefined && datapath.ipam.get({ containerId: l.containerId, ifname: l.ifname }) !== undefined
      );
    },
    (name) => keys.get(name)?.netns,
  );
}

/** A lease younger than this when the pods are listed is left to the next pass. */
export const FRESH_LEASE_MS = 60_000;

/**
 * IPAM GC with the API: leases of pods that left this node and whose netns is gone (see staleLeases).
 * Returns how many were released; failures are logged and retried on the next period.
 */
export async function collectLeases(opts: {
  kube: Pick<K8sClient, 'listPodsOnNode'>;
  nodeName: string;
  datapath: DatapathDeps;
  busy: ReadonlySet<string>;
  log: Logger;
  /** Date.now by default. */
  now?: () => number;
}): Promise<number> {
  const { datapath, log } = opts;
  try {
    const asked = (opts.now ?? Date.now)();
    const pods = await opts.kube.listPodsOnNode(opts.nodeName);
    // Leases made shortly before the pods were listed, or after, are not judged by that list: it
    // comes from the API server's watch cache, which may not show a pod bound a moment ago yet.
    // A createdAt far ahead of the clock (the clock stepped back since) is no fresh lease: judged.
    const fresh = (l: Lease): boolean => {
      const t = Date.parse(l.createdAt);
      return t > asked - FRESH_LEASE_MS && t <= asked + FRESH_LEASE_MS;
    };
    const leases = datapath.ipam.list().filter((l) => !fresh(l));
    // Busy when the leases were read, or when judged: an ADD that ends while the links are listed
    // (its veth made after the listing) is out of this pass, not judged against a list without it.
    const busyThen = new Set(opts.busy);
    const links = new Set((await datapath.host.listLinks()).map((l) => l.name));
    const busy = new Set([...busyThen, ...opts.busy]);
    const unjudged: { lease: Lease; error: string }[] = [];
    // No verdict (the agent out of descriptors or memory) is taken for "there": such a lease goes only
    // where its veth alone settles it (gone with its pair), and the others are judged next period.
    const netnsLive = (l: Lease): boolean => {
      const verdict = judgeLeaseNetns(l, datapath.netns);
      if ('live' in verdict) return verdict.live;
      unjudged.push({ lease: l, error: verdict.unjudged });
      return true;
    };
    const stale = staleLeases(leases, pods.items, netnsLive, busy, (l) =>
      links.has(hostVethName(l.containerId, l.ifname)),
    );
    if (unjudged.length > 0) {
      log.warn(
        {
          leases: unjudged.slice(0, 5).map((u) => ({ ...leaseLogFields(u.lease), netns: u.lease.netns })),
          unjudged: unjudged.length,
          error: unjudged[0]!.error,
        },
        "IPAM garbage collection could not tell whether these leases' pod namespaces are there: kept unless their veth is gone; judged again next period",
      );
    }
    if (stale.length === 0) {
      // Debug only: a pass every few minutes that finds nothing is not news, but tests and a curious
      // operator at debug level can see that it ran.
      log.debug(
        { leases: datapath.ipam.list().length, pods: pods.items.length },
        'IPAM garbage collection released nothing',
      );
      return 0;
    }
    // Each on its own: a lease the store fails to release is logged and tried again next period,
    // and does not keep the others (and their veths) from going.
    const released: Lease[] = [];
    for (const l of stale) {
      // The lease judged, not one a new ADD of the same key made meanwhile.
      if (datapath.ipam.get(l)?.createdAt !== l.createdAt) continue;
      try {
        datapath.ipam.release(l);
        released.push(l);
      } catch (err) {
        log.warn(
          {
            containerId: shortId(l.containerId),
            pod: `${l.podNamespace}/${l.podName}`,
            error: (err as Error).message,
          },
          'IPAM garbage collection could not release a lease; will retry',
        );
      }
    }
    if (released.length === 0) return 0;
    await removeAttachments(datapath, released);
    log.info(
      {
        released: released.map((l) => ({
          containerId: shortId(l.containerId),
          pod: `${l.podNamespace}/${l.podName}`,
        })),
      },
      'IPAM garbage collection released leases of pods gone from this node',
    );
    return released.length;
  } catch (err) {
    log.warn({ error: (err as Error).message }, 'IPAM garbage collection failed; will retry');
    return 0;
  }
}
