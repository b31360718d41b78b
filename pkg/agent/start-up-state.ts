import { sweepOrphans } from '../datapath/gc.ts';
import { leaseLogFields } from '../datapath/names.ts';
import type { DatapathDeps } from '../datapath/types.ts';
import type { Ipam } from '../ipam/index.ts';
import type { Logger } from '../observe/logger.ts';

/** What IPAM's load could not trust of the last run's records, said as soon as it is known. */
export function logIpamLoad(ipam: Ipam, log: Logger): void {
  for (const q of ipam.loadReport.quarantined) {
    if (q.leftInPlace === undefined)
      log.warn({ file: q.file, reason: q.reason }, 'IPAM record quarantined at load');
    else {
      log.error(
        { file: q.file, reason: q.reason, error: q.leftInPlace },
        'IPAM record unreadable and could not be quarantined; left in place, its addresses held until its DEL',
      );
    }
  }
  const readOnly = ipam.loadReport.readOnly ?? [];
  if (readOnly.length > 0) {
    log.error(
      { repairs: readOnly },
      'the IPAM state directory takes no writes (read-only): load left these repairs for the next start, their addresses taken meanwhile; pods cannot be added or deleted until it is writable',
    );
  }
  const unowned = ipam.loadReport.unowned ?? [];
  if (unowned.length > 0) {
    log.warn(
      { entries: unowned },
      'IPAM reservations that name no owner: kept (something may use these addresses), but nothing frees them; remove the entries by hand once no pod has them',
    );
  }
}

/**
 * The start-up sweep of what the last run left half done (gc.ts), said in the log. Returns how many
 * leases it released.
 */
export async function sweepAtStart(
  datapath: DatapathDeps,
  ipam: Ipam,
  stateDir: string,
  log: Logger,
): Promise<number> {
  // Attachments whose lease record was quarantined keep their veths: their pods may be running.
  const swept = await sweepOrphans(datapath, ipam.heldKeys());
  if (swept.releasedLeases.length > 0 || swept.removedLinks.length > 0) {
    log.info(
      { releasedLeases: swept.releasedLeases.length, removedLinks: swept.removedLinks },
      'start-up sweep removed half-done work',
    );
  }
  for (const u of swept.unjudged ?? []) {
    log.warn(
      { ...leaseLogFields(u.lease), netns: u.lease.netns, error: u.error },
      "start-up sweep kept a lease without its veth: the agent could not tell whether its pod's namespace is gone; judged again by the next start, and in Kubernetes mode by the periodic IPAM GC",
    );
  }
  for (const u of swept.unreleased ?? []) {
    log.error(
      { ...leaseLogFields(u.lease), netns: u.lease.netns, error: u.error, stateDir },
      'start-up sweep could not release the lease of a pod that is gone (its addresses stay taken): the IPAM state directory takes no writes; the next start and, in Kubernetes mode, the periodic IPAM GC try again',
    );
  }
  for (const h of swept.heldFromKernel ?? []) {
    log.warn(
      {
        ...leaseLogFields({
          containerId: h.owner.containerId,
          ifname: h.owner.ifname,
          podNamespace: h.owner.pod?.namespace,
          podName: h.owner.pod?.name,
        }),
        hostIf: h.name,
        addresses: h.addresses,
        stateDir,
      },
      'lease record missing for a running pod (its veth routes its addresses): the addresses are held and the lease is rebuilt from the kernel',
    );
  }
  if (swept.removedRouted !== undefined) {
    // Veths ADD had finished (routed) without a lease and without an alias that names their
    // attachment (made by an earlier release), or whose addresses another lease holds: a DEL cut
    // off by a crash between its release and its route deletion, or running pods whose records are
    // gone. Their addresses were free to hand out again, so the veths could not stay; in the second
    // case the pods need recreating.
    log.warn(
      { veths: swept.removedRouted, stateDir },
      'start-up sweep removed routed pod veths that have no lease record (a DEL cut off by a crash, or a state directory lost or replaced): pods of this node without a network need recreating (kubectl delete pod)',
    );
  }
  return swept.releasedLeases.length;
}
