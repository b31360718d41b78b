/**
 * Which of this node's interfaces carries its traffic to the other nodes: the pod MTU (pkg/agent/mtu.ts)
 * and the VXLAN devices' MTU (pkg/vxlan/device.ts) derive from it. Pure.
 */

import type { Family, LinkInfo, RouteLookup } from '../datapath/ports.ts';
import { canonicalIp, parseIp } from '../ip/index.ts';
import { isUnusableNodeIp } from './node-ip.ts';
import type { LocalLink } from './types.ts';

/**
 * The interface holding one of the InternalIPs on a subnet: the first such link (ifindex order of
 * localLinks). A host-length address (/32, /128) or a loopback device does not make one: an InternalIP
 * on lo (announced by BGP or reached through a host route) says nothing about the way out, and lo's MTU
 * (65536) is not the network's. Callers take the way out instead (wayOutLink).
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

/**
 * The link that bounds traffic leaving the node by these ways out (the routes the kernel chose for an
 * address off the node, one per family: local-links.ts findWaysOut), of the family when given: among
 * every device their routes send through, the one with the smallest MTU, since a multipath route
 * spreads flows over all of its nexthops and each must carry them. `via` says which route it was
 * for logs and status: "default route", or "default route, smallest MTU of up1, up2".
 */
export function wayOutLink(
  waysOut: readonly RouteLookup[],
  links: readonly LinkInfo[],
  family?: Family,
): { link: LinkInfo; via: string } | undefined {
  let best: { link: LinkInfo; via: string } | undefined;
  for (const way of waysOut) {
    if (family !== undefined && way.family !== family) continue;
    const devices = way.ifindexes
      .map((i) => links.find((l) => l.index === i))
      .filter((l): l is LinkInfo => l !== undefined);
    for (const link of devices) {
      if (best !== undefined && link.mtu >= best.link.mtu) continue;
      const route = way.dst.endsWith('/0') ? 'default route' : `route ${way.dst}`;
      const via =
        devices.length > 1 ? `${route}, smallest MTU of ${devices.map((l) => l.name).join(', ')}` : route;
      best = { link, via };
    }
  }
  return best;
}

/**
 * The family's InternalIPs a tunnel can leave from and peers can reach (canonical), and the others
 * with why not: a link-local one (fe80::, listed first by some kubelets) must never become a VXLAN
 * device's local address, as the peers already refuse it as a destination (desired.ts).
 */
export function usableInternalIPsOf(
  internalIPs: readonly string[],
  family: Family,
): { usable: string[]; unusable: { ip: string; why: string }[] } {
  const usable: string[] = [];
  const unusable: { ip: string; why: string }[] = [];
  for (const text of internalIPs) {
    const ip = parseIp(text);
    if (ip?.family !== family) continue;
    const why = isUnusableNodeIp(ip);
    if (why === undefined) usable.push(canonicalIp(text)!);
    else unusable.push({ ip: canonicalIp(text)!, why });
  }
  return { usable, unusable };
}
