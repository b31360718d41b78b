import type { LeasedAddress } from '../ipam/index.ts';
import { deleteLinkIfNamedInBackground } from './delete-link.ts';
import { hostPrefixLen } from './gateway.ts';
import { hostVethName, otherNetworkOf } from './names.ts';
import { type Family, type RouteInfo, TRELLIS_ROUTE_PROTOCOL } from './ports.ts';
import type { AttachmentKey, DatapathDeps } from './types.ts';
import { ownerOfAlias } from './veth-alias.ts';

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
  const otherNetwork = otherNetworkOf(lease ?? (await heldOwner(deps, key)), opts.network, opts.unrecorded);
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
  // Without a lease (a DEL again after one that released it and then failed) the veth's own host
  // routes say which: left until the veth goes, the address could already be another pod's.
  const routes: RouteInfo[] =
    released.length > 0
      ? released.map((a) => ({
          family: a.family,
          dst: `${a.address}/${hostPrefixLen(a.family)}`,
          ifindex: link.index,
          scope: 'link',
          protocol: TRELLIS_ROUTE_PROTOCOL,
        }))
      : await podRoutesVia(deps, link.index);
  await Promise.all(routes.map((r) => deps.host.deleteRoute(r)));
  deps.deleter.schedule(
    hostName,
    // Re-resolved: the index may have been reused if a new ADD recreated the name meanwhile (it waits
    // for us, so it cannot), but a deleted-by-someone-else link must not fail the work.
    () => deleteLinkIfNamedInBackground(deps.host, link.index, hostName),
    podNetns,
  );
  return { released, vethScheduled: true };
}

/** The host routes ADD gave a pod through its host veth: trellis's, to one address, no gateway. */
async function podRoutesVia(deps: DatapathDeps, ifindex: number): Promise<RouteInfo[]> {
  const lists = await Promise.all(
    ([4, 6] as Family[]).map((family) =>
      deps.host.listRoutes({ family, protocol: TRELLIS_ROUTE_PROTOCOL, ifindex }),
    ),
  );
  return lists
    .flat()
    .filter(
      (r) =>
        r.ifindex === ifindex &&
        (r.gateway === undefined || r.gateway === '') &&
        r.dst.endsWith(`/${hostPrefixLen(r.family)}`),
    );
}

/**
 * Whose a held attachment is (Ipam.heldKeys: no lease, its record quarantined or lost) for the
 * network check of ADD and DEL, read off its host veth's alias as GC reads it (gc.ts): the record that
 * said it is unreadable. `{}` (the unrecorded network's, as a lease that records none) when the veth
 * has no alias naming one; undefined when the key holds nothing, or has no host veth (no pod of any
 * network has its addresses then: veth pairs die together).
 */
export async function heldOwner(
  deps: Pick<DatapathDeps, 'ipam' | 'host'>,
  key: AttachmentKey,
): Promise<{ network?: string } | undefined> {
  if (deps.ipam.heldAddresses(key).length === 0) return undefined;
  const name = hostVethName(key.containerId, key.ifname);
  const link = await deps.host.getLink(name);
  if (link === undefined) return undefined;
  const network = ownerOfAlias(name, link.alias)?.network;
  return network === undefined ? {} : { network };
}
