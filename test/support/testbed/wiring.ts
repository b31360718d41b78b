import { existsSync } from 'node:fs';
import { ip, nsSysctl } from '../netns.ts';
import { INTERNET, routerAddr, UNDERLAY } from './plan.ts';

/**
 * The test bed's kernel wiring: bridges, veths, addresses and routes, always inside the test bed's
 * own namespaces (every command is `ip -n NS ...`). IPv6 addresses skip DAD so they are usable at once.
 */

export function segmentBridge(segment: number): string {
  return `br${segment}`;
}

/** A veth from `ns` (named `inner`) to a segment's bridge in the fabric (that end named `outer`). */
export function plugIn(fabricNs: string, ns: string, inner: string, outer: string, segment: number): void {
  ip(ns, 'link', 'add', inner, 'type', 'veth', 'peer', 'name', outer, 'netns', fabricNs);
  ip(fabricNs, 'link', 'set', outer, 'master', segmentBridge(segment), 'up');
  // No DAD for the link-local the kernel generates at link up either: the kernel sends a Neighbor
  // Solicitation for a forwarded packet only from a non-tentative link-local, so a node forwarding a
  // pod's IPv6 reply within ~2 s of joining would silently drop it (a real NIC has been up long).
  nsSysctl(ns, `net.ipv6.conf.${inner}.accept_dad`, '0');
  ip(ns, 'link', 'set', inner, 'up');
}

/**
 * The fabric is the segments' switches, and a switch does not run netfilter: with br_netfilter loaded
 * (Docker loads it) a new namespace's bridges pass every frame through its IP hooks, an skb extension
 * and a route lookup each, ~4 % of a node-to-node TCP stream here. Set in the fabric's namespace only.
 */
function plainSwitches(fabricNs: string): void {
  if (!existsSync('/proc/sys/net/bridge')) return; // no br_netfilter: bridges skip netfilter already
  for (const call of ['iptables', 'ip6tables', 'arptables']) {
    nsSysctl(fabricNs, `net.bridge.bridge-nf-call-${call}`, '0');
  }
}

/** A bridge for the segment in the fabric, and the router's leg on it (.1 / ::1). */
export function addSegment(fabricNs: string, routerNs: string, segment: number): void {
  const br = segmentBridge(segment);
  plainSwitches(fabricNs);
  ip(fabricNs, 'link', 'add', br, 'type', 'bridge', 'mcast_snooping', '0');
  ip(fabricNs, 'link', 'set', br, 'up');
  plugIn(fabricNs, routerNs, `eth${segment}`, `r${segment}`, segment);
  ip(routerNs, 'addr', 'add', `${routerAddr(segment, 4)}/24`, 'dev', `eth${segment}`);
  ip(routerNs, 'addr', 'add', `${routerAddr(segment, 6)}/64`, 'dev', `eth${segment}`, 'nodad');
}

/** The "internet" behind the router; it routes back to the underlay only, never to pod CIDRs. */
export function wireInternet(internetNs: string, routerNs: string): void {
  ip(internetNs, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'up0', 'netns', routerNs);
  ip(internetNs, 'addr', 'add', `${INTERNET.v4}/${INTERNET.prefix4}`, 'dev', 'eth0');
  ip(internetNs, 'addr', 'add', `${INTERNET.v6}/${INTERNET.prefix6}`, 'dev', 'eth0', 'nodad');
  ip(internetNs, 'link', 'set', 'eth0', 'up');
  ip(routerNs, 'addr', 'add', `${INTERNET.router4}/${INTERNET.prefix4}`, 'dev', 'up0');
  ip(routerNs, 'addr', 'add', `${INTERNET.router6}/${INTERNET.prefix6}`, 'dev', 'up0', 'nodad');
  ip(routerNs, 'link', 'set', 'up0', 'up');
  // Pod addresses must be masqueraded to get answers from here.
  ip(internetNs, 'route', 'add', UNDERLAY.v4, 'via', INTERNET.router4);
  ip(internetNs, '-6', 'route', 'add', UNDERLAY.v6, 'via', INTERNET.router6);
}

export interface HostWiring {
  /** The fabric-side veth name (<= 15 chars, unique in the fabric). */
  outer: string;
  segment: number;
  /** The host's address of each family it has (a single-stack node has one). */
  v4?: string | undefined;
  v6?: string | undefined;
}

/**
 * A host (node or control plane) on a segment: eth0 with its addresses and, for each of their
 * families, a default route via the router. A host without IPv6 still has eth0's link-local.
 */
export function wireHost(fabricNs: string, ns: string, host: HostWiring): void {
  plugIn(fabricNs, ns, 'eth0', host.outer, host.segment);
  if (host.v4 !== undefined) {
    ip(ns, 'addr', 'add', `${host.v4}/24`, 'dev', 'eth0');
    ip(ns, 'route', 'add', 'default', 'via', routerAddr(host.segment, 4));
  }
  if (host.v6 !== undefined) {
    ip(ns, 'addr', 'add', `${host.v6}/64`, 'dev', 'eth0', 'nodad');
    ip(ns, '-6', 'route', 'add', 'default', 'via', routerAddr(host.segment, 6));
  }
}
