/**
 * This node's InternalIP off its interface for a moment (NetworkManager re-applying a profile, a DHCP
 * client re-adding its lease, `ip addr flush` and add): for up to HOLD_MS the pass plans as if it were
 * still there, on the link that had it. Planned from the links as they are, every peer on that subnet
 * would move to the tunnel (auto) or lose its route (host-gw), this node's published direct subnets
 * would change and every peer act on that, and all of it would be undone seconds later. Meanwhile the
 * routes through that subnet that no address of the link reaches wait (the kernel refuses such a
 * gateway, and drops the IPv4 ones itself): the pass reports them held back, and is retried with
 * backoff until the address is back or the hold ends. After HOLD_MS the links are taken as they are:
 * an address gone for good (the Node still listing it) must not keep a plan that no longer holds. Pure.
 */

import type { RouteInfo } from '../datapath/ports.ts';
import { type Cidr, canonicalIp, cidrContains, formatCidr, parseCidr, parseIp } from '../ip/index.ts';
import type { LocalAddress, LocalLink, Problem, SelfNode } from './types.ts';

/** How long an absent InternalIP is planned as present: a profile re-applied or a lease re-added. */
export const HOLD_MS = 30_000;

/** An InternalIP of this node as a pass found it on one of its links. */
export interface HomeAddress {
  ifindex: number;
  linkName: string;
  address: LocalAddress;
  /** When a pass first found it gone (held since): absent while it is there. */
  absentSince?: number;
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
 * pass's homes) had it, provided that link is still there (same index and name), for HOLD_MS from the
 * first pass that found it gone (`now`, in ms). Not held: an InternalIP the Node no longer lists (a new
 * address is the Node's news, followed at once), nor one a connected subnet of the links as read still
 * holds (another address of that subnet: the planner finds this node's place on it without help).
 */
export function holdAbsentInternalIPs(
  self: SelfNode,
  links: readonly LocalLink[],
  last: readonly HomeAddress[],
  now: number,
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
    if (was === undefined || onConnectedSubnet(links, ip)) continue;
    const since = was.absentSince ?? now;
    if (now - since >= HOLD_MS) continue;
    held.push({ ...was, absentSince: since });
  }
  if (held.length === 0) return { links: [...links], homes, held, problems: [] };
  homes.push(...held);
  const out = links.map((l) => {
    const mine = held.filter((h) => h.ifindex === l.ifindex);
    return mine.length === 0 ? l : { ...l, addresses: [...l.addresses, ...mine.map((h) => h.address)] };
  });
  const problems = held.map((h) => ({
    node: self.name,
    problem: `InternalIP ${h.address.address} is not an address of this node's interfaces: routes are planned as when it was on ${h.linkName} (${subnetText(h.address)}) for up to ${HOLD_MS / 1000} s, and those through that subnet wait for it`,
  }));
  return { links: out, homes, held, problems };
}

/**
 * The held address a route waits for: its gateway lies in that address's subnet on its link, and no
 * address of the link as read (`links`) reaches it. Undefined when it need not wait.
 */
export function heldAddressOf(
  route: RouteInfo,
  held: readonly HomeAddress[],
  links: readonly LocalLink[],
): HomeAddress | undefined {
  if (held.length === 0 || route.gateway === undefined || route.ifindex === undefined) return undefined;
  const gateway = parseIp(route.gateway);
  if (gateway === undefined) return undefined;
  const waitsFor = held.find((h) => {
    if (h.ifindex !== route.ifindex || h.address.family !== gateway.family) return false;
    const subnet = subnetOf(h.address);
    return subnet !== undefined && cidrContains(subnet, gateway);
  });
  if (waitsFor === undefined) return undefined;
  const reached = links
    .find((l) => l.ifindex === route.ifindex)
    ?.addresses.some((a) => {
      const subnet = a.family === gateway.family ? subnetOf(a) : undefined;
      return subnet !== undefined && cidrContains(subnet, gateway);
    });
  return reached === true ? undefined : waitsFor;
}

/** Why a route waits, for reports and the peers' coverage. */
export function heldReason(h: HomeAddress): string {
  return `waits for this node's InternalIP ${h.address.address} back on ${h.linkName} (up to ${HOLD_MS / 1000} s)`;
}

function homeOf(links: readonly LocalLink[], ip: string): HomeAddress | undefined {
  for (const l of links) {
    const a = l.addresses.find((x) => canonicalIp(x.address) === ip);
    if (a !== undefined) return { ifindex: l.ifindex, linkName: l.name, address: { ...a } };
  }
  return undefined;
}

function onConnectedSubnet(links: readonly LocalLink[], ip: string): boolean {
  const addr = parseIp(ip);
  if (addr === undefined) return false;
  return links.some((l) =>
    l.addresses.some((a) => {
      const subnet = a.family === addr.family ? subnetOf(a) : undefined;
      // A host-length address (a /32 on lo, a VTEP's) connects no subnet.
      return subnet !== undefined && a.prefixLen < (a.family === 4 ? 32 : 128) && cidrContains(subnet, addr);
    }),
  );
}

function subnetOf(a: LocalAddress): Cidr | undefined {
  return parseCidr(`${a.address}/${a.prefixLen}`, { strict: false });
}

function subnetText(a: LocalAddress): string {
  const subnet = subnetOf(a);
  return subnet === undefined ? `${a.address}/${a.prefixLen}` : formatCidr(subnet);
}
