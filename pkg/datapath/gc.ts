import type { Lease } from '../ipam/index.ts';
import { hostVethName, isHostVethName } from './names.ts';
import type { AttachmentKey, DatapathDeps } from './types.ts';

export interface GcOutcome {
  releasedLeases: Lease[];
  removedLinks: string[];
}

const keyOf = (k: AttachmentKey): string => `${k.containerId}\0${k.ifname}`;

/**
 * GC (CNI 1.1): everything trellis holds that is not a valid attachment goes: leases and host veths.
 * `busy` names attachments with a call in flight, which a concurrent GC must not touch.
 */
export async function gcAttachments(
  deps: DatapathDeps,
  valid: AttachmentKey[],
  busy: ReadonlySet<string> = new Set(),
): Promise<GcOutcome> {
  const validKeys = new Set(valid.map(keyOf));
  const keepNames = new Set(valid.map((k) => hostVethName(k.containerId, k.ifname)));
  const releasedLeases: Lease[] = [];
  for (const lease of deps.ipam.list()) {
    const k = keyOf(lease);
    if (validKeys.has(k) || busy.has(k)) {
      keepNames.add(hostVethName(lease.containerId, lease.ifname));
      continue;
    }
    if (deps.ipam.release(lease)) releasedLeases.push(lease);
  }
  const removedLinks = await removeHostVethsExcept(deps, keepNames);
  return { releasedLeases, removedLinks };
}

/** Deletes every trellis host veth whose name is not in `keep` (scheduled off the critical path). */
export async function removeHostVethsExcept(
  deps: Pick<DatapathDeps, 'host' | 'deleter'>,
  keep: ReadonlySet<string>,
): Promise<string[]> {
  const removed: string[] = [];
  for (const link of await deps.host.listLinks()) {
    if (!isHostVethName(link.name) || keep.has(link.name) || deps.deleter.isPending(link.name)) continue;
    removed.push(link.name);
    deps.deleter.schedule(link.name, async () => {
      const current = await deps.host.getLinkByIndex(link.index);
      if (current !== undefined && current.name === link.name) await deps.host.deleteLink(link.index);
    });
  }
  return removed;
}

/**
 * Start-up sweep, without a runtime's list of valid attachments: a lease whose namespace AND host veth
 * are both gone belongs to a pod that no longer exists (the kernel destroys the pair with the
 * namespace), and a trellis veth without a lease is half-done work. Requiring both signals keeps a
 * mount-propagation problem (netns path invisible to the agent) from ever releasing a live pod's IP.
 * `held` names attachments whose lease record was quarantined (corrupt on disk) while IPAM still
 * holds their addresses: their pods may be running, so their veths stay until a DEL.
 */
export async function sweepOrphans(
  deps: DatapathDeps,
  held: readonly AttachmentKey[] = [],
): Promise<GcOutcome> {
  const links = new Set((await deps.host.listLinks()).map((l) => l.name));
  const releasedLeases: Lease[] = [];
  const keep = new Set<string>(held.map((k) => hostVethName(k.containerId, k.ifname)));
  for (const lease of deps.ipam.list()) {
    const name = hostVethName(lease.containerId, lease.ifname);
    const nsGone = lease.netns === undefined || lease.netns === '' || !deps.netns.isNetns(lease.netns);
    if (nsGone && !links.has(name)) {
      if (deps.ipam.release(lease)) releasedLeases.push(lease);
    } else {
      keep.add(name);
    }
  }
  const removedLinks = await removeHostVethsExcept(deps, keep);
  return { releasedLeases, removedLinks };
}
