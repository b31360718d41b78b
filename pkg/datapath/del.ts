import type { LeasedAddress } from '../ipam/index.ts';
import { deleteLinkIfNamed } from './delete-link.ts';
import { hostPrefixLen } from './gateway.ts';
import { hostVethName, otherNetworkOf } from './names.ts';
import { TRELLIS_ROUTE_PROTOCOL } from './ports.ts';
import type { AttachmentKey, DatapathDeps } from './types.ts';

export interface DelOutcome {
  released: LeasedAddress[];
  /** The host veth existed and its deletion was scheduled. */
  vethScheduled: boolean;
  /** The attachment is another network's (its lease says which): nothing was touched. */
  otherNetwork?: string;
}

/**
 * DEL: idempotent, and independent of the pod's namespace still existing (containerd's second DEL
 * has no CNI_NETNS). Releases the lease first (durable before DEL answers: its directory fsyncs run
 * on the thread pool, not on the agent's JS thread), removes the host routes, then deletes the veth
 * pair off the critical path (see BackgroundDeleter). Success when any part is already gone.
 * `network`: the DEL's network; an attachment whose lease records another (or none, and `unrecorded`
 * is another) is left alone: a runtime cleaning up after another network's failed ADD on the same
 * container id and ifname.
 */
export async function delAttachment(
  deps: DatapathDeps,
  key: AttachmentKey,
  opts: { netns?: string; network?: string; unrecorded?: string } = {},
): Promise<DelOutcome> {
  // A lease's addresses, or those a quarantined record kept held: what this DEL frees either way.
  const lease = deps.ipam.get(key);
  const otherNetwork = otherNetworkOf(lease, opts.network, opts.unrecorded);
  if (otherNetwork !== undefined) {
    return { released: [], vethScheduled: false, otherNetwork };
  }
  const released = lease?.addresses ?? deps.ipam.heldAddresses(key);
  // Where the pod end is: the lease knows the ADD's namespace; containerd's second DEL names none.
  const podNetns = lease?.netns || opts.netns;
  await deps.ipam.releaseDeferred(key).durable;

  const hostName = hostVethName(key.containerId, key.ifname);
  await deps.deleter.wait(hostName);
  const link = await deps.host.getLink(hostName);
  if (link === undefined) return { released, vethScheduled: false };

  // Routes first: the released address is unreachable through the old veth before DEL answers.
  await Promise.all(
    released.map((a) =>
      deps.host.deleteRoute({
        family: a.family,
        dst: `${a.address}/${hostPrefixLen(a.family)}`,
        ifindex: link.index,
        scope: 'link',
        protocol: TRELLIS_ROUTE_PROTOCOL,
      }),
    ),
  );
  deps.deleter.schedule(
    hostName,
    // Re-resolved: the index may have been reused if a new ADD recreated the name meanwhile (it waits
    // for us, so it cannot), but a deleted-by-someone-else link must not fail the work.
    () => deleteLinkIfNamed(deps.host, link.index, hostName),
    podNetns,
  );
  return { released, vethScheduled: true };
}
