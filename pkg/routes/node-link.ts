/**
 * Which of this node's interfaces carries its traffic to the other nodes: the pod MTU (pkg/agent/mtu.ts)
 * and the VXLAN devices' MTU (pkg/vxlan/device.ts) derive from it. Pure.
 */

import type { Family, LinkInfo, RouteInfo } from '../datapath/ports.ts';
import { canonicalIp, parseIp } from '../ip/index.ts';
import type { LocalLink } from './types.ts';

/**
 * The interface holding one of the InternalIPs on a subnet: the first such link (ifindex order of
 * localLinks). A host-length address (/32, /128) or a loopback device does not make one: an InternalIP
 * on lo (announced by BGP or reached through a host route) says nothing about the way out, and lo's MTU
 * (65536) is not the network's. Callers take the default route's device instead (defaultRouteLink).
 */
export function nodeLinkOf(
  localLinks: readonly LocalLink[],
  internalIPs: readonly string[],
  links: readonly LinkInfo[],
): LocalLink | undefined {
  const wanted = new Set(internalIPs.map((t) => canonicalIp(t) ?? t));
  const loopbacks = new Set(links.filter((l) => l.loopback === true).map((l) => l.index));
  return localLinks.find(
    (l) =>
      !loopbacks.has(l.ifindex) &&
      l.addresses.some(
        (a) => !isHostLength(a.family, a.prefixLen) && wanted.has(canonicalIp(a.address) ?? a.address),
      ),
  );
}

function isHostLength(family: Family, prefixLen: number): boolean {
  return prefixLen >= (family === 4 ? 32 : 128);
}

/** The device of the first default route (of the family, if given) that names an existing link. */
export function defaultRouteLink(
  defaultRoutes: readonly RouteInfo[],
  links: readonly LinkInfo[],
  family?: Family,
): LinkInfo | undefined {
  for (const r of defaultRoutes) {
    if (family !== undefined && r.family !== family) continue;
    const link = r.ifindex === undefined ? undefined : links.find((l) => l.index === r.ifindex);
    if (link !== undefined) return link;
  }
  return undefined;
}

/** The InternalIPs of one family, canonical; unparsable ones are left out. */
export function internalIPsOf(internalIPs: readonly string[], family: Family): string[] {
  return internalIPs.filter((t) => parseIp(t)?.family === family).map((t) => canonicalIp(t)!);
}
