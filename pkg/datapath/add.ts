import { CniCode, CniError, toCniError } from '../cni/errors.ts';
import type { LeasedAddress } from '../ipam/index.ts';
import { defaultDst, GATEWAY_V4, GATEWAY_V6, gatewayFor, hostPrefixLen } from './gateway.ts';
import { readAttachment } from './inspect.ts';
import { hostVethName } from './names.ts';
import { isOwnNetns } from './own-netns.ts';
import { type LinkInfo, type NetlinkHandle, type SetUpStep, TRELLIS_ROUTE_PROTOCOL } from './ports.ts';
import type { Attachment, AttachRequest, DatapathDeps } from './types.ts';
import { UndoStack } from './undo.ts';

/**
 * ADD: lease -> veth pair (pod end created directly in the pod's namespace) -> host side and pod side
 * configured concurrently -> Attachment. Any failure unwinds what was done, in reverse, before the
 * error is returned, so a failed ADD leaves no lease, veth or route behind.
 */
export async function addAttachment(deps: DatapathDeps, req: AttachRequest): Promise<Attachment> {
  if (!deps.netns.isNetns(req.netns)) {
    throw new CniError(
      CniCode.NETNS_NOT_FOUND,
      `network namespace ${req.netns} does not exist or is not a network namespace`,
    );
  }
  if (isOwnNetns(req.netns)) {
    throw new CniError(
      CniCode.INVALID_ENV,
      `invalid CNI_NETNS ${req.netns}: it is the host's own network namespace, not a pod's`,
    );
  }
  const key = { containerId: req.containerId, ifname: req.ifname };
  const hostName = hostVethName(req.containerId, req.ifname);
  await deps.deleter.wait(hostName);

  const existing = deps.ipam.get(key);
  if (existing !== undefined && existing.netns === req.netns) {
    // A repeated ADD for an attachment that is fully in place answers with what is there.
    const current = await readAttachment(deps, req, existing.addresses);
    if (current !== undefined) return current;
  }

  const undo = new UndoStack();
  try {
    // The lease's fsyncs run on the thread pool while the veth is made; awaited before answering.
    const { lease, durable } = deps.ipam.allocateDeferred(key, {
      netns: req.netns,
      podNamespace: req.pod?.namespace,
      podName: req.pod?.name,
      podUid: req.pod?.uid,
    });
    if (existing === undefined) undo.push('release lease', () => void deps.ipam.release(key));
    const synced = durable.then(
      () => undefined,
      (err: unknown) => err,
    );
    undo.push('finish the lease fsync', async () => void (await synced));

    await createVethReplacingStale(deps, req, hostName);
    undo.push('delete veth', () => deleteLinkByName(deps.host, hostName));

    const hasV6 = lease.addresses.some((a) => a.family === 6);
    if (hasV6) {
      // DAD off: the pod's link-local and global addresses are usable at once (no 1-2 s wait).
      deps.netns.writeSysctlIn(req.netns, `net/ipv6/conf/${req.ifname}/accept_dad`, '0');
      deps.netns.writeSysctl(`net/ipv6/conf/${hostName}/accept_dad`, '0');
    }

    const pod = deps.netns.openNetlinkIn(req.netns);
    let hostLink: LinkInfo;
    let podLink: LinkInfo;
    try {
      [hostLink, podLink] = await Promise.all([
        configureHostSide(deps.host, hostName, lease.addresses),
        configurePodSide(pod, req.ifname, lease.addresses),
      ]);
    } finally {
      pod.close();
    }
    const syncError = await synced;
    if (syncError !== undefined) throw syncError;
    undo.commit();
    return {
      containerId: req.containerId,
      ifname: req.ifname,
      netns: req.netns,
      host: { name: hostLink.name, index: hostLink.index, mac: hostLink.mac },
      pod: { name: podLink.name, index: podLink.index, mac: podLink.mac, mtu: podLink.mtu },
      addresses: lease.addresses,
    };
  } catch (error) {
    const failures = await undo.unwind();
    const err = toCniError(error);
    if (failures.length === 0) throw err;
    const undoText = failures.map((f) => `${f.what}: ${toCniError(f.error).message}`).join('; ');
    throw new CniError(err.code, err.message, `${err.details ?? ''}\nundo failed: ${undoText}`.trim(), {
      cause: error,
    });
  }
}

/**
 * Creates the pair; a host end left by a crashed or abandoned ADD (same name: same container and
 * ifname) makes that fail with EEXIST, so it is deleted and creation tried once more. Checking first
 * would cost every ADD a round trip for the rare leftover.
 */
async function createVethReplacingStale(
  deps: DatapathDeps,
  req: AttachRequest,
  hostName: string,
): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const nsFd = deps.netns.openNetnsFd(req.netns);
    try {
      await deps.host.createVeth({
        name: hostName,
        mtu: req.mtu,
        peerName: req.ifname,
        peerNetnsFd: nsFd,
        peerMtu: req.mtu,
      });
      return;
    } catch (err) {
      if (attempt > 0 || (err as { errno?: unknown }).errno !== 'EEXIST') throw err;
      // EEXIST may also be the pod's ifname taken by someone else: then there is no stale host end
      // and the error stands.
      const stale = await deps.host.getLink(hostName);
      if (stale === undefined) throw err;
      await deps.host.deleteLink(stale.index);
    } finally {
      deps.netns.closeFd(nsFd);
    }
  }
}

async function deleteLinkByName(host: NetlinkHandle, name: string): Promise<void> {
  const link = await host.getLink(name);
  if (link !== undefined) await host.deleteLink(link.index);
}

async function requireLink(handle: NetlinkHandle, name: string, where: string): Promise<LinkInfo> {
  const link = await handle.getLink(name);
  if (link === undefined) {
    throw new CniError(CniCode.NETLINK_FAILED, `link ${name} disappeared from the ${where} during ADD`);
  }
  return link;
}

/**
 * Host end: up, the link-local gateway addresses, and a /32 and /128 route to the pod, in one
 * netlink datagram (the kernel applies it in order: the routes need the link up).
 */
async function configureHostSide(
  host: NetlinkHandle,
  name: string,
  addresses: LeasedAddress[],
): Promise<LinkInfo> {
  const link = await requireLink(host, name, 'host namespace');
  const steps: SetUpStep[] = [{ kind: 'up', index: link.index }];
  for (const a of addresses) {
    steps.push({
      kind: 'address',
      address:
        a.family === 4
          ? { family: 4, ifindex: link.index, address: GATEWAY_V4, prefixLen: 32, scope: 'link' }
          : {
              family: 6,
              ifindex: link.index,
              address: GATEWAY_V6,
              prefixLen: 64,
              scope: 'link',
              noDad: true,
            },
    });
  }
  for (const a of addresses) {
    steps.push({
      kind: 'route',
      route: {
        family: a.family,
        dst: `${a.address}/${hostPrefixLen(a.family)}`,
        ifindex: link.index,
        scope: 'link',
        protocol: TRELLIS_ROUTE_PROTOCOL,
      },
    });
  }
  await host.setUp(steps);
  return link;
}

/**
 * Pod end: lo and the interface up, /32 and /128 addresses, default routes via the link-local
 * gateways; one datagram, like the host end.
 */
async function configurePodSide(
  pod: NetlinkHandle,
  ifname: string,
  addresses: LeasedAddress[],
): Promise<LinkInfo> {
  const [lo, link] = await Promise.all([pod.getLink('lo'), requireLink(pod, ifname, 'pod namespace')]);
  const steps: SetUpStep[] = [];
  if (lo !== undefined && !lo.up) steps.push({ kind: 'up', index: lo.index });
  steps.push({ kind: 'up', index: link.index });
  for (const a of addresses) {
    steps.push({
      kind: 'address',
      address: {
        family: a.family,
        ifindex: link.index,
        address: a.address,
        prefixLen: hostPrefixLen(a.family),
        noDad: a.family === 6,
      },
    });
  }
  for (const a of addresses) {
    if (a.family === 4) {
      steps.push(
        { kind: 'route', route: { family: 4, dst: `${GATEWAY_V4}/32`, ifindex: link.index, scope: 'link' } },
        // onlink: valid before (and independent of) the link route above.
        {
          kind: 'route',
          route: { family: 4, dst: defaultDst(4), gateway: gatewayFor(4), ifindex: link.index, onlink: true },
        },
      );
    } else {
      steps.push({
        kind: 'route',
        route: { family: 6, dst: defaultDst(6), gateway: gatewayFor(6), ifindex: link.index },
      });
    }
  }
  await pod.setUp(steps);
  return { ...link, up: true };
}
