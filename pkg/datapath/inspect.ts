import { parseCidr } from '../ip/cidr.ts';
import type { LeasedAddress } from '../ipam/index.ts';
import {
  defaultDst,
  GATEWAY_V4,
  GATEWAY_V6,
  gatewayFor,
  gatewayPrefixLen,
  hostPrefixLen,
} from './gateway.ts';
import { hostVethName } from './names.ts';
import { isPodDefault, type PodRoute, PRIMARY_IFNAME } from './pod-routes.ts';
import { type Family, type RouteInfo, TRELLIS_ROUTE_PROTOCOL } from './ports.ts';
import type { Attachment, AttachmentKey, DatapathDeps } from './types.ts';

export interface Inspection {
  /** Present when both ends exist (even if other problems were found). */
  attachment: Attachment | undefined;
  /** Every way the kernel differs from what ADD sets up; empty when all is in place. */
  problems: string[];
  /** The pod interface's addresses ("10.244.1.5/32"), when it was found. */
  podAddresses?: string[];
  /** The pod interface and every route of the pod (all interfaces, every table but local), when it was found. */
  pod?: { index: number; mtu: number; routes: RouteInfo[] };
}

/**
 * Reads an attachment back from the kernel and lists every difference from what ADD programs.
 * Used by CHECK (report the problems) and by a repeated ADD (answer only if nothing is missing).
 * `defaultRoutes`: the families whose default route to look for (ADD sets one for each address;
 * CHECK looks only for those its prevResult still lists). `othersServe`: another interface's default
 * route counts as the pod's (hasDefaultRoute): as ADD decides it, for an interface other than eth0,
 * which adds none beside one; never for CHECK, whose prevResult lists only defaults trellis made.
 */
export async function inspectAttachment(
  deps: Pick<DatapathDeps, 'host' | 'netns'>,
  req: AttachmentKey & { netns: string },
  addresses: LeasedAddress[],
  defaultRoutes: readonly Family[] = addresses.map((a) => a.family),
  othersServe: boolean = req.ifname !== PRIMARY_IFNAME,
): Promise<Inspection> {
  const problems: string[] = [];
  const hostName = hostVethName(req.containerId, req.ifname);
  const hostLink = await deps.host.getLink(hostName);
  if (hostLink === undefined) problems.push(`host veth ${hostName} is missing`);
  else {
    if (!hostLink.up) problems.push(`host veth ${hostName} is down`);
    const [hostRoutes, hostAddrs] = await Promise.all([
      deps.host.listRoutes({ protocol: TRELLIS_ROUTE_PROTOCOL, ifindex: hostLink.index }),
      deps.host.listAddresses(undefined, hostLink.index),
    ]);
    // The pod's gateway: without it on the host end, the pod's default route of that family leads nowhere.
    for (const family of new Set(addresses.map((a) => a.family))) {
      const gw = gatewayFor(family);
      const len = gatewayPrefixLen(family);
      if (!hostAddrs.some((p) => p.address === gw && p.prefixLen === len)) {
        problems.push(`gateway address ${gw}/${len} is missing on host veth ${hostName}`);
      }
    }
    for (const a of addresses) {
      const dst = `${a.address}/${hostPrefixLen(a.family)}`;
      if (!hostRoutes.some((r) => r.dst === dst && r.ifindex === hostLink.index)) {
        problems.push(`host route ${dst} dev ${hostName} is missing`);
      }
    }
  }

  if (!deps.netns.isNetns(req.netns)) {
    problems.push(`network namespace ${req.netns} is gone`);
    return { attachment: undefined, problems };
  }
  const pod = deps.netns.openNetlinkIn(req.netns);
  try {
    const podLink = await pod.getLink(req.ifname);
    if (podLink === undefined) {
      problems.push(`interface ${req.ifname} is missing in ${req.netns}`);
      return { attachment: undefined, problems };
    }
    if (!podLink.up) problems.push(`interface ${req.ifname} in ${req.netns} is down`);
    // Every interface's routes: the pod's default route may be another interface's (hasDefaultRoute),
    // a multipath one too (listed by key). Every table's: a later plugin of the chain (sbr) may have
    // moved them out of the main one.
    const [podAddrs, allRoutes] = await Promise.all([
      pod.listAddresses(undefined, podLink.index),
      pod.listRoutes({ table: 'routing', unreadable: true }),
    ]);
    for (const a of addresses) {
      const prefixLen = hostPrefixLen(a.family);
      if (!podAddrs.some((p) => p.address === a.address && p.prefixLen === prefixLen)) {
        problems.push(`address ${a.address}/${prefixLen} is missing on ${req.ifname}`);
      }
      if (
        defaultRoutes.includes(a.family) &&
        !hasDefaultRoute(allRoutes, a.family, podLink.index, othersServe)
      ) {
        problems.push(
          `default route ${defaultDst(a.family)} via ${gatewayFor(a.family)} is missing in the pod (IPv${a.family})`,
        );
      }
    }
    const routes: PodRoute[] = [];
    for (const r of allRoutes) {
      if (r.ifindex !== podLink.index) continue;
      if (r.gateway !== GATEWAY_V4 && r.gateway !== GATEWAY_V6) continue;
      const route: PodRoute = { family: r.family, dst: r.dst, gateway: r.gateway };
      if (r.mtu !== undefined) route.mtu = r.mtu;
      routes.push(route);
    }
    // In ADD's order (pod-routes.ts): by family, the default route first.
    routes.sort((x, y) => x.family - y.family || prefixLenOf(x.dst) - prefixLenOf(y.dst));
    const attachment: Attachment | undefined =
      hostLink === undefined
        ? undefined
        : {
            containerId: req.containerId,
            ifname: req.ifname,
            netns: req.netns,
            host: { name: hostLink.name, index: hostLink.index, mac: hostLink.mac },
            pod: { name: podLink.name, index: podLink.index, mac: podLink.mac, mtu: podLink.mtu },
            addresses,
            routes,
          };
    return {
      attachment,
      problems,
      podAddresses: podAddrs.map((p) => `${p.address}/${p.prefixLen}`),
      pod: { index: podLink.index, mtu: podLink.mtu, routes: allRoutes },
    };
  } finally {
    pod.close();
  }
}

/**
 * The pod has a default route of this family: ours on this interface (in any table: sbr moves it),
 * or the pod's default route (isPodDefault: the main table's, whatever its metric) on another of its
 * interfaces or on several, which held it first: ADD adds none beside it (add.ts configurePodSide),
 * and looks for it here when it is repeated. Another interface's default route in a table of its own
 * (its sbr or VRF table) serves that interface's sources only, not the pod's default.
 */
function hasDefaultRoute(
  routes: readonly RouteInfo[],
  family: Family,
  ifindex: number,
  othersServe: boolean,
): boolean {
  const dst = defaultDst(family);
  const gw = gatewayFor(family);
  return routes.some(
    (r) =>
      r.family === family &&
      r.dst === dst &&
      (r.ifindex === ifindex ? r.gateway === gw : othersServe && isPodDefault(r)),
  );
}

/** The attachment when it is completely in place, else undefined. */
export async function readAttachment(
  deps: Pick<DatapathDeps, 'host' | 'netns'>,
  req: AttachmentKey & { netns: string },
  addresses: LeasedAddress[],
): Promise<Attachment | undefined> {
  const { attachment, problems } = await inspectAttachment(deps, req, addresses);
  return problems.length === 0 ? attachment : undefined;
}

function prefixLenOf(cidr: string): number {
  return parseCidr(cidr)?.prefixLen ?? 0;
}
