/**
 * What the node's own interfaces say, read through the netlink port: its links and their addresses
 * (readLocalLinks), the way traffic leaves the node (findWaysOut), and the devices a plan's gateway
 * routes leave by (gatewayDevices).
 */

import type { Family, LinkInfo, NetlinkHandle, RouteInfo, RouteLookup } from '../datapath/ports.ts';
import { onLinkPrefixLen, onLinkProbe } from './on-link.ts';
import type { LocalLink } from './types.ts';

/** The devices routes through a gateway leave by: distinct ifindexes, ascending. */
export function gatewayDevices(routes: readonly RouteInfo[]): number[] {
  const devices = new Set<number>();
  for (const r of routes) {
    if (r.gateway !== undefined && r.gateway !== '' && r.ifindex !== undefined) devices.add(r.ifindex);
  }
  return [...devices].sort((a, b) => a - b);
}

/**
 * The agent's interfaces and their addresses. A usable host-length address inside an on-link prefix
 * of its own link (an RA's /64 beside a DHCPv6 /128) is given that prefix's length (on-link.ts): one
 * route lookup per such address, usually none.
 */
export async function readLocalLinks(
  handle: NetlinkHandle,
  /** The links, when the caller has just listed them for itself (one listing less a pass). */
  listed?: readonly LinkInfo[],
): Promise<LocalLink[]> {
  const [links, addresses] = await Promise.all([listed ?? handle.listLinks(), handle.listAddresses()]);
  // An address on lo or a dummy device (a BGP-announced /32) is on no link, whatever routes lead
  // elsewhere; a VXLAN device's host-length address is its VTEP address, never a node's. None is
  // looked up: kube-proxy's IPVS mode puts every Service's ClusterIP on its dummy kube-ipvs0, which
  // was one lookup per Service, twice a pass.
  const unprobed = new Set(
    links.filter((l) => l.loopback === true || l.kind === 'vxlan' || l.kind === 'dummy').map((l) => l.index),
  );
  // Grouped by link in one walk: every pass reads them, and a filter per link walked every address
  // once per link (a hundred pod veths, three addresses each: ~30,000 steps a pass).
  const byLink = new Map<number, LocalLink['addresses']>();
  for (const a of addresses) {
    if (a.scope === 'host') continue;
    const list = byLink.get(a.ifindex);
    const entry = { family: a.family, address: a.address, prefixLen: a.prefixLen };
    if (list === undefined) byLink.set(a.ifindex, [entry]);
    else list.push(entry);
  }
  const local = links
    .map((l) => ({ ifindex: l.index, name: l.name, addresses: byLink.get(l.index) ?? [] }))
    .sort((a, b) => a.ifindex - b.ifindex);
  const widen: Promise<void>[] = [];
  for (const link of local) {
    if (unprobed.has(link.ifindex)) continue;
    for (const a of link.addresses) {
      const probe = onLinkProbe(a);
      if (probe === undefined) continue;
      widen.push(
        handle.routeTo(probe).then(
          (found) => {
            a.prefixLen = onLinkPrefixLen(a, link.ifindex, found);
          },
          // The lookup is a refinement: the address keeps its own length when it fails.
          () => undefined,
        ),
      );
    }
  }
  await Promise.all(widen);
  return local;
}

/**
 * An address of each family that no network of a node holds and no route of a node's own networks
 * covers, so the kernel's route to it is the one it takes for traffic leaving the node: the default
 * route's choice. Public addresses (Google's public DNS), not documentation prefixes (192.0.2.0/24,
 * 2001:db8::/32): labs and test beds number their networks from those, and bogon filters blackhole
 * them. They are only looked up: nothing is ever sent to them.
 */
const OFF_NODE: Readonly<Record<Family, string>> = { 4: '8.8.8.8', 6: '2001:4860:4860::8888' };

/**
 * How traffic leaves the node, per family asked: the route the kernel would take to OFF_NODE, for
 * callers whose InternalIP no interface holds on a subnet (a /32 on lo, announced by BGP). One lookup
 * each (NetlinkHandle.routeTo) rather than a dump of both route tables searched for a default route:
 * such nodes' default route is usually multipath (ECMP over their uplinks) or on a nexthop group
 * (FRR), neither of which names a device a dump's RouteInfo can carry, while the kernel's lookup
 * resolves both, follows policy rules as a packet would, and costs a few requests instead of 5,000
 * routes at 5,000 nodes every pass. A family without a way out is left out, and so is one whose lookup
 * fails (a kernel without IPv6 answers EOPNOTSUPP): the MTU it serves must never fail a pass, and the
 * caller keeps the last one found.
 */
export async function findWaysOut(
  handle: NetlinkHandle,
  families: readonly Family[],
): Promise<RouteLookup[]> {
  const found = await Promise.all(families.map((f) => handle.routeTo(OFF_NODE[f]).catch(() => undefined)));
  return found.filter((w): w is RouteLookup => w !== undefined);
}
