import { removeHostVethsExcept } from '../datapath/gc.ts';
import { hostVethName } from '../datapath/names.ts';
import type { DatapathDeps } from '../datapath/types.ts';
import type { Lease } from '../ipam/index.ts';
import type { K8sClient } from '../k8s/index.ts';
import type { Logger } from '../observe/logger.ts';
import { staleLeases } from './lease-gc.ts';

/** Deletes the host veths of these (released) leases, off the critical path. */
export async function removeAttachments(datapath: DatapathDeps, leases: readonly Lease[]): Promise<void> {
  const gone = new Set(leases.map((l) => hostVethName(l.containerId, l.ifname)));
  const keep = new Set(
    (await datapath.host.listLinks()).map((l) => l.name).filter((name) => !gone.has(name)),
  );
  await removeHostVethsExcept(datapath, keep);
}

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
}): Promise<number> {
  const { datapath, log } = opts;
  try {
    const pods = await opts.kube.listPodsOnNode(opts.nodeName);
    const links = new Set((await datapath.host.listLinks()).map((l) => l.name));
    const stale = staleLeases(
      datapath.ipam.list(),
      pods.items,
      (p) => datapath.netns.isNetns(p),
      opts.busy,
      (l) => links.has(hostVethName(l.containerId, l.ifname)),
    );
    if (stale.length === 0) return 0;
    for (const l of stale) datapath.ipam.release(l);
    await removeAttachments(datapath, stale);
    log.info(
      {
        released: stale.map((l) => ({
          containerId: l.containerId.slice(0, 12),
          pod: `${l.podNamespace}/${l.podName}`,
        })),
      },
      'IPAM garbage collection released leases of pods gone from this node',
    );
    return stale.length;
  } catch (err) {
    log.warn({ error: (err as Error).message }, 'IPAM garbage collection failed; will retry');
    return 0;
  }
}
