import { CniCode, CniError, toCniError } from '../cni/errors.ts';
import type { Lease, LeasedAddress, LeaseMeta } from '../ipam/index.ts';
import { heldOwner } from './del.ts';
import { deleteLinkIfNamed } from './delete-link.ts';
import { defaultDst } from './gateway.ts';
import { hostSideSteps } from './host-side.ts';
import { readAttachment } from './inspect.ts';
import { podMac, randomMac } from './mac.ts';
import { hostVethName, otherNetworkOf } from './names.ts';
import { netnsIdentityOfFd } from './netns-identity.ts';
import { isOwnNetnsFd } from './own-netns.ts';
import { type PodRoute, PRIMARY_IFNAME, podRoutes, withoutHeldDefaults } from './pod-routes.ts';
import { podSideSteps } from './pod-side.ts';
import {
  IPV6_MIN_MTU,
  type LinkInfo,
  type NetlinkHandle,
  type PodNetlink,
  type RouteInfo,
  type SetUpStep,
} from './ports.ts';
import type { PreparedPair } from './prepared-pairs.ts';
import type { Attachment, AttachOptions, AttachRequest, DatapathDeps } from './types.ts';
import { UndoStack } from './undo.ts';
import { vethAlias } from './veth-alias.ts';
import { setVethSysctls } from './veth-sysctls.ts';

/** The loopback device's index in every network namespace (linux/netdevice.h LOOPBACK_IFINDEX). */
const LOOPBACK_IFINDEX = 1;

/**
 * ADD: lease (its fsyncs running meanwhile) -> veth pair (the one prepared when the namespace
 * appeared, else created now with its pod end directly in the pod's namespace; off the JS thread
 * unless opts.alone) -> host side, then pod side, one datagram each (renaming a prepared pair's ends
 * first) -> lease durable -> Attachment. Any failure unwinds what was done, in reverse, before the
 * error is returned, so a failed ADD leaves no lease, veth or route behind.
 */
export async function addAttachment(
  deps: DatapathDeps,
  req: AttachRequest,
  opts: AttachOptions = {},
): Promise<Attachment> {
  const nsFd = openPodNetns(deps, req.netns);
  try {
    return await addInNetns(deps, req, nsFd, opts);
  } finally {
    deps.netns.closeFd(nsFd);
  }
}

/**
 * Opens the pod's namespace once for the whole ADD (the veth's IFLA_NET_NS_FD, the pod's socket, its
 * sysctls), refusing a path that is no network namespace and the agent's own.
 */
function openPodNetns(deps: DatapathDeps, path: string): number {
  let fd: number;
  try {
    fd = deps.netns.openNetnsFd(path);
  } catch (err) {
    if (!(err instanceof CniError) || err.code !== CniCode.NETNS_NOT_FOUND) throw err;
    throw new CniError(
      CniCode.NETNS_NOT_FOUND,
      `network namespace ${path} does not exist or is not a network namespace`,
      undefined,
      { cause: err },
    );
  }
  if (isOwnNetnsFd(fd)) {
    deps.netns.closeFd(fd);
    throw new CniError(
      CniCode.INVALID_ENV,
      `invalid CNI_NETNS ${path}: it is the host's own network namespace, not a pod's`,
    );
  }
  return fd;
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

async function addInNetns(
  deps: DatapathDeps,
  req: AttachRequest,
  nsFd: number,
  opts: AttachOptions,
): Promise<Attachment> {
  const key = { containerId: req.containerId, ifname: req.ifname };
  const hostName = hostVethName(req.containerId, req.ifname);
  await deps.deleter.wait(hostName);
  await deps.deleter.waitForNetns(req.netns);

  if (req.mtu < IPV6_MIN_MTU && deps.ipam.ranges().some((r) => r.includes(':'))) {
    // The kernel takes IPv6 off a link below IPv6's minimum MTU: refuse before anything is made,
    // rather than fail half-way on a missing net/ipv6/conf entry.
    throw new CniError(
      CniCode.INVALID_CONFIG,
      `mtu ${req.mtu} is below 1280, the smallest MTU IPv6 runs on, and this node gives pods IPv6 addresses`,
    );
  }
  // A held attachment's network is checked before it is restored: restore records this ADD's.
  const owner = deps.ipam.get(key) ?? (await heldOwner(deps, key));
  // Read again after that await: the lease rebuild may have restored the held lease meanwhile, and
  // this ADD must take it as its existing lease (not allocate over it and undo it on failure).
  const leased = deps.ipam.get(key);
  const existingNetwork = otherNetworkOf(leased ?? owner, req.network, req.unrecordedNetwork);
  if (existingNetwork !== undefined) {
    // Attachments are known by container id and ifname (and so are their veth names): a second
    // network on the same pair would be handed the first one's interface, and its DEL, after this
    // failure, would take it away.
    throw new CniError(
      CniCode.INVALID_ENV,
      `${req.ifname} of container ${req.containerId} is attached to network ${JSON.stringify(existingNetwork)} already: network ${JSON.stringify(req.network)} needs a CNI_IFNAME of its own`,
    );
  }
  // Which namespace the path names now: the lease keeps it (netns-identity.ts).
  const meta = leaseMeta(req, netnsIdentityOfFd(deps.netns, nsFd, req.netns));
  const existing = leased ?? restoreHeld(deps, req, meta);
  if (existing !== undefined && existing.netns === req.netns) {
    // A repeated ADD for an attachment that is fully in place answers with what is there.
    const current = await readAttachment(deps, req, existing.addresses);
    if (current !== undefined) return current;
  }

  const undo = new UndoStack();
  try {
    // The lease's fsyncs run on the thread pool while the pod is set up; awaited before answering.
    const { lease, durable } = deps.ipam.allocateDeferred(key, meta);
    // A lease this ADD made: none before, or the one there was released during the await above (a pod
    // CIDR change) and this is a new one, which nothing else would release if the ADD fails.
    if (existing === undefined || lease.createdAt !== existing.createdAt)
      undo.push('release lease', () => void deps.ipam.release(key));
    const synced = durable.then(
      () => undefined,
      (err: unknown) => err,
    );
    undo.push('finish the lease fsync', async () => void (await synced));
    const ipv6 = lease.addresses.some((a) => a.family === 6);

    const wanted = podRoutes(familiesOf(lease.addresses), req);
    // A pair made when the namespace appeared, whose sysctls suit the lease (prepared-pairs.ts).
    const prepared = await deps.prepared?.take(nsFd, req.netns, ipv6, req.mtu);
    if (prepared !== undefined) {
      // By index, under its temporary name or the one ADD gave it.
      undo.push('delete veth', () =>
        deleteLinkIfNamed(deps.host, prepared.host.index, prepared.host.name, hostName),
      );
    }
    // After the lease, not beside it: the kernel's veth creation overlapped with IPAM's file creation
    // took 2.2-2.5 ms instead of ~1 ms here (both in the kernel at once), which made ADD no faster.
    // It overlaps with the fsyncs instead, which only wait for the disk.
    // Derived, not random: a pair made again for this attachment gives the pod the same MAC (mac.ts).
    const mac = podMac(req.containerId, req.ifname);
    const veth: Promise<Settled<LinkInfo | undefined>> =
      prepared !== undefined
        ? Promise.resolve({ ok: true, value: prepared.host })
        : createVethReplacingStale(deps, req, hostName, nsFd, mac, opts.alone === true).then(
            (value) => ({ ok: true, value }),
            (error: unknown) => ({ ok: false, error }),
          );
    if (prepared === undefined) {
      // Whatever creation answered: it can fail after the kernel made the pair (its reply lost to
      // ENOBUFS, one that does not parse). Under the attachment's lock a link of this name can only
      // be this ADD's or a stale one of the same attachment, which must not stay either.
      undo.push('delete veth', async () => {
        await veth;
        await deleteLinkByName(deps.host, hostName);
      });
    }

    // A prepared pair brings a socket it opened in the pod's namespace (nothing between take and
    // here throws, so it cannot leak). Else one is opened before the pair is waited for (while the
    // kernel makes it, unless inline): a socket does not need the interface.
    const pod = prepared?.pod ?? deps.netns.openPodNetlink(nsFd, req.netns);
    let hostLink: LinkInfo;
    let podSide: PodSide;
    try {
      const created = await veth;
      if (!created.ok) throw created.error;
      // A prepared pair has them already, written under its temporary names (a rename keeps them).
      if (prepared === undefined) {
        setVethSysctls(deps.netns, { fd: nsFd, path: req.netns, name: req.ifname }, hostName, ipv6, req.mtu);
      }
      const mtuChange = prepared !== undefined && prepared.mtu !== req.mtu ? req.mtu : undefined;
      const alias = vethAlias(req);
      [hostLink, podSide] = await Promise.all([
        prepared === undefined
          ? configureHostSide(deps.host, hostName, created.value, lease.addresses, { alias })
          : configurePreparedHostSide(
              deps.host,
              hostName,
              prepared,
              { mtu: mtuChange, alias },
              lease.addresses,
            ),
        configurePodSide(
          pod,
          req,
          prepared === undefined ? podEnd(req, created.value, mac) : preparedPodEnd(prepared, mac),
          lease.addresses,
          wanted,
          prepared === undefined ? undefined : { mtu: mtuChange, mac },
        ).catch((err: unknown) => {
          // Renaming the pod end: the pod has an interface of that name already.
          throw prepared !== undefined && (err as { errno?: unknown }).errno === 'EEXIST'
            ? podIfnameTaken(req, err)
            : err;
        }),
      ]);
    } finally {
      pod.close();
    }
    const syncError = await synced;
    if (syncError !== undefined) throw syncError;
    // The node's pod CIDRs can change while ADD runs (a Node re-created with new ones): the change
    // released this lease, outside them now, and removes its veth. Answered, the pod would run with
    // an address no route leads to; refused, the runtime asks again and gets one of the new range.
    if (!stillLeased(deps, key, lease.addresses)) {
      throw new CniError(
        CniCode.TRY_AGAIN_LATER,
        `the node's pod CIDRs changed during this ADD: ${lease.addresses.map((a) => a.address).join(', ')} is outside [${deps.ipam.ranges().join(', ')}] now; try again`,
      );
    }
    undo.commit();
    const podLink = podSide.link;
    return {
      containerId: req.containerId,
      ifname: req.ifname,
      netns: req.netns,
      host: { name: hostLink.name, index: hostLink.index, mac: hostLink.mac },
      pod: { name: podLink.name, index: podLink.index, mac: podLink.mac, mtu: podLink.mtu },
      addresses: lease.addresses,
      routes: podSide.routes,
      ...(prepared === undefined ? {} : { prepared: true }),
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
 * The lease of an attachment whose record IPAM could not read (quarantined, its addresses held: the
 * pod may still use them), made again from the held addresses: this ADD is the same attachment's
 * (container id and ifname), so it gets them back rather than new ones beside them, and a failed ADD
 * cannot free them. Undefined when nothing is held. Refused when they cannot be given back (outside
 * the pod CIDRs now, say): the runtime's DEL frees them, and its next ADD starts afresh.
 */
function restoreHeld(deps: DatapathDeps, req: AttachRequest, meta: LeaseMeta): Lease | undefined {
  const key = { containerId: req.containerId, ifname: req.ifname };
  const held = deps.ipam.heldAddresses(key);
  if (held.length === 0) return undefined;
  try {
    return deps.ipam.restore(
      key,
      held.map((a) => a.address),
      meta,
    );
  } catch (err) {
    throw new CniError(
      CniCode.IPAM_STORE_FAILED,
      `IPAM holds ${held.map((a) => a.address).join(', ')} for ${req.ifname} of container ${req.containerId} from a lease record it could not read, and cannot give them back to this ADD: DEL the attachment to free them`,
      toCniError(err).message,
      { cause: err },
    );
  }
}

/** What the lease records of the request: where the pod is and who it is. */
function leaseMeta(req: AttachRequest, netnsId: string | undefined): LeaseMeta {
  return {
    netns: req.netns,
    ...(netnsId === undefined ? {} : { netnsId }),
    podNamespace: req.pod?.namespace,
    podName: req.pod?.name,
    podUid: req.pod?.uid,
    network: req.network,
    mtu: req.configMtu,
  };
}

function stillLeased(
  deps: DatapathDeps,
  key: { containerId: string; ifname: string },
  addresses: readonly LeasedAddress[],
): boolean {
  const now = deps.ipam.get(key)?.addresses;
  return (
    now !== undefined &&
    now.length === addresses.length &&
    now.every((a, i) => a.address === addresses[i]!.address)
  );
}

function familiesOf(addresses: readonly LeasedAddress[]): (4 | 6)[] {
  return [...new Set(addresses.map((a) => a.family))];
}

/**
 * The pod end as creation left it, when the host end's echo names its index: its name and MTU are
 * what was asked for and its MAC the one ADD chose. Undefined when it has to be looked up.
 */
function podEnd(req: AttachRequest, host: LinkInfo | undefined, mac: string): LinkInfo | undefined {
  if (host?.peerIndex === undefined) return undefined;
  return { index: host.peerIndex, name: req.ifname, kind: 'veth', mac, mtu: req.mtu, up: false };
}

/** A prepared pair's pod end as it was made (down, under its temporary name), with the MAC ADD gives it. */
function preparedPodEnd(p: PreparedPair, mac: string): LinkInfo {
  return { index: p.podIndex, name: p.podName, kind: 'veth', mac, mtu: p.mtu, up: false };
}

/**
 * Creates the pair; a host end left by a crashed or abandoned ADD (same name: same container and
 * ifname) makes that fail with EEXIST, so it is deleted and creation tried once more. Checking first
 * would cost every ADD a round trip for the rare leftover. Resolves with the host end when the
 * kernel echoed it (see NetlinkHandle.createVeth).
 *
 * EEXIST with no host end of that name (or again after deleting it, which took its pod end along)
 * is the pod's: it already has an interface called CNI_IFNAME that trellis did not make ("lo", or
 * an eth0 from another plugin). That is the runtime's request at fault, so INVALID_ENV (4), naming
 * the interface and the namespace; nothing of the pod's is touched. (ptp says "container veth name
 * provided (lo) already exists" with libcni's generic 999.)
 */
async function createVethReplacingStale(
  deps: DatapathDeps,
  req: AttachRequest,
  hostName: string,
  nsFd: number,
  peerMac: string,
  inline: boolean,
): Promise<LinkInfo | undefined> {
  for (let attempt = 0; ; attempt++) {
    try {
      const created = await deps.host.createVeth(
        {
          name: hostName,
          mtu: req.mtu,
          mac: randomMac(),
          peerName: req.ifname,
          peerNetnsFd: nsFd,
          peerMtu: req.mtu,
          peerMac,
        },
        { inline },
      );
      return created ?? undefined;
    } catch (err) {
      if ((err as { errno?: unknown }).errno !== 'EEXIST') throw err;
      if (attempt > 0) throw podIfnameTaken(req, err);
      // Absent now, the stale end may have gone since the EEXIST (a DEL's deletion retried): tried
      // once more, which tells it from the pod's own interface of that name.
      const stale = await deps.host.getLink(hostName);
      if (stale !== undefined) await deleteLinkIfNamed(deps.host, stale.index, hostName);
    }
  }
}

function podIfnameTaken(req: AttachRequest, cause: unknown): CniError {
  return new CniError(
    CniCode.INVALID_ENV,
    `interface ${req.ifname} already exists in ${req.netns}: CNI_IFNAME must name an interface the pod does not have yet`,
    toCniError(cause).message,
    { cause },
  );
}

async function deleteLinkByName(host: NetlinkHandle, name: string): Promise<void> {
  const link = await host.getLink(name);
  if (link !== undefined) await host.deleteLink(link.index);
}

async function requireLink(
  handle: Pick<NetlinkHandle, 'getLink'>,
  name: string,
  where: string,
): Promise<LinkInfo> {
  const link = await handle.getLink(name);
  if (link === undefined) {
    throw new CniError(CniCode.NETLINK_FAILED, `link ${name} disappeared from the ${where} during ADD`);
  }
  return link;
}

/**
 * configureHostSide for a prepared pair, whose host end is renamed in the same datagram. A host end
 * of that name left by a crashed ADD of the same container and ifname makes the rename fail with
 * EEXIST (the later steps still apply to the prepared link: same index, now up): it is deleted and
 * the datagram sent once more, the link taken down first (kernels before 6.2 rename no link that is
 * up: EBUSY).
 */
async function configurePreparedHostSide(
  host: NetlinkHandle,
  name: string,
  prepared: PreparedPair,
  change: { mtu: number | undefined; alias: string | undefined },
  addresses: LeasedAddress[],
): Promise<LinkInfo> {
  const index = prepared.host.index;
  const { mtu, alias } = change;
  for (let attempt = 0; ; attempt++) {
    const rename: SetUpStep[] = [{ kind: 'link', index, name, mtu, alias }];
    if (attempt > 0) rename.unshift({ kind: 'down', index });
    try {
      const link = await configureHostSide(host, name, prepared.host, addresses, { first: rename });
      return { ...link, name, mtu: mtu ?? prepared.mtu };
    } catch (err) {
      if (attempt > 0 || (err as { errno?: unknown }).errno !== 'EEXIST') throw err;
      const stale = await host.getLink(name);
      if (stale?.index === index) throw err;
      // Gone since the EEXIST (stale undefined): the rename is simply sent again.
      if (stale !== undefined) await deleteLinkIfNamed(host, stale.index, name);
    }
  }
}

/**
 * Host end: its alias (veth-alias.ts), up, the link-local gateway addresses, and a /32 and /128
 * route to the pod, in one netlink datagram (the kernel applies it in order: the routes need the link
 * up). `first`: steps ahead of them (a prepared pair's rename, which carries the alias itself).
 */
async function configureHostSide(
  host: NetlinkHandle,
  name: string,
  created: LinkInfo | undefined,
  addresses: LeasedAddress[],
  opts: { first?: readonly SetUpStep[]; alias?: string | undefined },
): Promise<LinkInfo> {
  const link = created ?? (await requireLink(host, name, 'host namespace'));
  const steps: SetUpStep[] = [...(opts.first ?? [])];
  if (opts.alias !== undefined) steps.push({ kind: 'link', index: link.index, alias: opts.alias });
  await host.setUp([...steps, ...hostSideSteps(link.index, addresses)]);
  return link;
}

/**
 * The pod's main-table routes of the families `routes` has a default route of (a multipath one too):
 * what withoutHeldDefaults looks for. Undefined when there is no such family.
 */
function listDefaultHolders(pod: PodNetlink, routes: readonly PodRoute[]): Promise<RouteInfo[]> | undefined {
  const families = [...new Set(routes.filter((r) => r.dst === defaultDst(r.family)).map((r) => r.family))];
  if (families.length === 0) return undefined;
  return pod.listRoutes({ ...(families.length === 1 ? { family: families[0]! } : {}), unreadable: true });
}

/** The pod end as configurePodSide left it, and the routes of its own it holds. */
interface PodSide {
  link: LinkInfo;
  routes: PodRoute[];
}

/**
 * Pod end: lo and the interface up, /32 and /128 addresses, the routes via the link-local gateways
 * (pod-routes.ts); one datagram, like the host end, answered in the same turn (openPodNetlink).
 * With `known` (podEnd) it sends that datagram at once: lo is index 1 in every network namespace
 * (the kernel's LOOPBACK_IFINDEX), and bringing up a lo that is up changes nothing. Otherwise both
 * are looked up first.
 *
 * The routes are the pod's, not the interface's: every trellis interface of a pod (Multus: eth0,
 * net1) would write the same destinations. The first interface keeps them (keepExisting), so a
 * second one neither takes over the pod's default route (another plugin's, or eth0's, which DEL
 * of net1 would then take away) nor reports it; the kernel says which of them were taken, in the
 * same answer. That answer covers only a route of the same destination and metric, though: a
 * default route with a metric of its own (`default via … metric 100` from another plugin) would let
 * trellis's go in beside it and win. So an interface other than eth0 first lists the pod's routes
 * and adds no default route of a family the pod has one of (withoutHeldDefaults); like a kept one,
 * that route is not reported and not trellis's to remove. `rename`: the interface is a prepared
 * pair's end, renamed to CNI_IFNAME and given the attachment's MAC (and `mtu` when set) before it
 * goes up.
 */
async function configurePodSide(
  pod: PodNetlink,
  req: AttachRequest,
  known: LinkInfo | undefined,
  addresses: LeasedAddress[],
  routes: readonly PodRoute[],
  rename?: { mtu: number | undefined; mac: string },
): Promise<PodSide> {
  let link: LinkInfo;
  let loopback: number | undefined;
  // eth0, the runtime's name for the pod's primary network, comes first into a namespace with no
  // routes yet: it skips the listing, and the primary ADD stays one round trip in the pod (its
  // latency is measured against ptp's). A secondary network (Multus: net1) is added after the
  // primary one has set the pod's default routes: one more request (a dump of a few routes).
  const listing = req.ifname === PRIMARY_IFNAME ? undefined : listDefaultHolders(pod, routes);
  let present: readonly RouteInfo[] = [];
  if (known !== undefined) {
    link = known;
    loopback = LOOPBACK_IFINDEX;
    present = (await listing) ?? [];
  } else {
    const [lo, found, listed] = await Promise.all([
      pod.getLink('lo'),
      requireLink(pod, req.ifname, 'pod namespace'),
      listing,
    ]);
    link = found;
    present = listed ?? [];
    if (lo !== undefined && !lo.up) loopback = lo.index;
  }
  const toMake = listing === undefined ? routes : withoutHeldDefaults(routes, present);
  const { steps, firstRouteStep } = podSideSteps({
    index: link.index,
    loopback,
    ...(rename === undefined ? {} : { rename: { ifname: req.ifname, mtu: rename.mtu, mac: rename.mac } }),
    addresses,
    routes: toMake,
  });
  const outcomes = await pod.setUp(steps);
  return {
    link: { ...link, name: req.ifname, mtu: rename?.mtu ?? link.mtu, up: true },
    routes: toMake.filter((_, i) => outcomes[firstRouteStep + i] === 'done'),
  };
}
