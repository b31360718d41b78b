/**
 * This node's InternalIP off its interface for a moment (a DHCP renewal, NetworkManager re-applying a
 * profile, `ip addr flush` and add): the pass plans as if it were still there, on the link that had it,
 * until it is back. Planned from the links as they are, every peer on that subnet would move to the
 * tunnel (auto) or lose its route (host-gw), this node's published direct subnets would change and every
 * peer act on that, and all of it would be undone seconds later. Meanwhile the routes through that
 * subnet wait (the kernel refuses a gateway it cannot reach and drops the IPv4 ones itself); the
 * connected route's return wakes the pass that writes them. Pure.
 */

import type { RouteInfo } from '../datapath/ports.ts';
import { type Cidr, canonicalIp, cidrContains, formatCidr, parseCidr, parseIp } from '../ip/index.ts';
import type { LocalAddress, LocalLink, Problem, SelfNode } from './types.ts';

/** An InternalIP of this node as the last pass found it on one of its links. */
export interface HomeAddress {
  ifindex: number;
  linkName: string;
  address: LocalAddress;
}

export interface AbsentInternalIPs {
  /** The links to plan with: as read, plus every held address on its link (copies where changed). */
  links: LocalLink[];
  /** What the next pass remembers: every InternalIP found now, and every one held. */
  homes: HomeAddress[];
  /** The InternalIPs planned as still there. */
  held: HomeAddress[];
  problems: Problem[];
}

/**
 * `links` with each of the node's InternalIPs that is on none of them put back where `last` (the last
 * pass's homes) had it, provided that link is still there (same index and name). An InternalIP the
 * Node no longer lists is not held: a new address is the Node's news, followed at once.
 */
export function holdAbsentInternalIPs(
  self: SelfNode,
  links: readonly LocalLink[],
  last: readonly HomeAddress[],
): AbsentInternalIPs {
  const homes: HomeAddress[] = [];
  const held: HomeAddress[] = [];
  for (const text of self.internalIPs) {
    const ip = canonicalIp(text);
    if (ip === undefined) continue;
    const found = homeOf(links, ip);
    if (found !== undefined) {
      homes.push(found);
      continue;
    }
    const was = last.find(
      (h) =>
        canonicalIp(h.address.address) === ip &&
        links.some((l) => l.ifindex === h.ifindex && l.name === h.linkName),
    );
    if (was !== undefined) held.push(was);
  }
  if (held.length === 0) return { links: [...links], homes, held, problems: [] };
  homes.push(...held);
  const out = links.map((l) => {
    const mine = held.filter((h) => h.ifindex === l.ifindex);
    return mine.length === 0 ? l : { ...l, addresses: [...l.addresses, ...mine.map((h) => h.address)] };
  });
  const problems = held.map((h) => ({
    node: self.name,
    problem: `InternalIP ${h.address.address} is not an address of this node's interfaces: routes are planned as when it was on ${h.linkName} (${subnetText(h.address)}), and those through that subnet wait until it is back`,
  }));
  return { links: out, homes, held, problems };
}

/** Whether the route's gateway lies in a held address's subnet on its link: it waits for the address. */
export function waitsForHeldAddress(route: RouteInfo, held: readonly HomeAddress[]): boolean {
  if (route.gateway === undefined || route.ifindex === undefined) return false;
  const gateway = parseIp(route.gateway);
  if (gateway === undefined) return false;
  return held.some((h) => {
    if (h.ifindex !== route.ifindex || h.address.family !== gateway.family) return false;
    const subnet = subnetOf(h.address);
    return subnet !== undefined && cidrContains(subnet, gateway);
  });
}

function homeOf(links: readonly LocalLink[], ip: string): HomeAddress | undefined {
  for (const l of links) {
    const a = l.addresses.find((x) => canonicalIp(x.address) === ip);
    if (a !== undefined) return { ifindex: l.ifindex, linkName: l.name, address: { ...a } };
  }
  return undefined;
}

function subnetOf(a: LocalAddress): Cidr | undefined {
  return parseCidr(`${a.address}/${a.prefixLen}`, { strict: false });
}

function subnetText(a: LocalAddress): string {
  const subnet = subnetOf(a);
  return subnet === undefined ? `${a.address}/${a.prefixLen}` : formatCidr(subnet);
}
