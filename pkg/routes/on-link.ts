/**
 * An address held at host length (/32, /128) whose neighbours the kernel reaches on the same link
 * without a gateway: EC2's and Azure's DHCPv6 give a node its IPv6 address as a /128, and the /64 it
 * sits in is on-link only through the route a router advertisement adds (`2600:1f14:…::/64 dev eth0
 * proto ra`). As an interface address alone it names no subnet, so `auto` would tunnel the family to
 * peers on that very /64 and `host-gw` route it one way only. It counts with the length of that
 * on-link prefix instead, as the kernel treats it: found by one FIB-match lookup of a neighbour (the
 * address with its last bit flipped), never a dump of the routing table. Pure; the lookup is the
 * caller's.
 */
import type { RouteLookup } from '../datapath/ports.ts';
import { cidrContains, familyBits, formatIp, parseCidr, parseIp } from '../ip/index.ts';
import { isUnusableNodeIp } from './node-ip.ts';
import type { LocalAddress } from './types.ts';

/** The address to look up for `a`, when it is a usable host-length address; else undefined. */
export function onLinkProbe(a: LocalAddress): string | undefined {
  const ip = parseIp(a.address);
  if (ip === undefined || ip.family !== a.family || a.prefixLen !== familyBits(ip.family)) return undefined;
  if (isUnusableNodeIp(ip) !== undefined) return undefined;
  return formatIp(ip.family, ip.value ^ 1n);
}

/**
 * The prefix length `a` (on link `ifindex`) counts with, given the lookup of its probe: the matched
 * route's when it is a subnet route without a gateway through that link alone, holding `a`; otherwise
 * `a`'s own. A default route without a gateway (`default dev eth0`) is no subnet.
 */
export function onLinkPrefixLen(a: LocalAddress, ifindex: number, found: RouteLookup | undefined): number {
  if (found === undefined || found.onLink !== true || found.family !== a.family) return a.prefixLen;
  if (found.ifindexes.length !== 1 || found.ifindexes[0] !== ifindex) return a.prefixLen;
  const prefix = parseCidr(found.dst, { strict: false });
  const ip = parseIp(a.address);
  if (prefix === undefined || ip === undefined || prefix.prefixLen === 0) return a.prefixLen;
  if (prefix.prefixLen >= a.prefixLen || !cidrContains(prefix, ip)) return a.prefixLen;
  return prefix.prefixLen;
}
