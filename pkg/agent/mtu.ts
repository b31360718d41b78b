import { IPV6_MIN_MTU, type LinkInfo, type RouteLookup } from '../datapath/ports.ts';
import { vtepAddress } from '../routes/desired.ts';
import { nodeLinkOf, usableInternalIPsOf, wayOutLink } from '../routes/node-link.ts';
import type { LocalLink } from '../routes/types.ts';
import { VXLAN_OVERHEAD } from '../vxlan/constants.ts';

export interface MtuChoice {
  mtu: number;
  /** Where it came from, for the start-up log and `trellis-agent status`. */
  source: string;
  /** Nothing told the MTU: 1500 was assumed (or nothing was detected yet). Never kept. */
  fallback?: true;
  /** Nothing tells the MTU now: the last one found is kept. */
  kept?: true;
  /** The links it was read from, with the MTU read (LinkMtuWatch follows them); absent when none. */
  links?: readonly Pick<LinkInfo, 'index' | 'mtu' | 'name'>[];
}

/**
 * Why pods cannot get `podMtu` on this node, or undefined: IPv6 needs 1280, and the kernel takes IPv6
 * off a smaller link, so every ADD of a node with an IPv6 pod CIDR would fail.
 */
export function ipv6MtuProblem(
  podMtu: number,
  podCIDRs: readonly string[],
  source: string,
): string | undefined {
  const v6 = podCIDRs.find((c) => c.includes(':'));
  if (v6 === undefined || podMtu >= IPV6_MIN_MTU) return undefined;
  return `pod MTU ${podMtu} (${source}) is below ${IPV6_MIN_MTU}, the smallest MTU IPv6 runs on, and pod CIDR ${v6} is IPv6: set --mtu to ${IPV6_MIN_MTU} or more, or raise the uplink's MTU`;
}

/**
 * The MTU of pod traffic that leaves the node (the pod routes' RTAX_MTU): an explicit setting wins;
 * otherwise the MTU of the interface that carries this node's InternalIP on a subnet (the one that
 * reaches the other nodes; not lo, see nodeLinkOf; the smaller of two when the families' InternalIPs
 * sit on different interfaces), else the smallest of the devices traffic leaves
 * the node through (waysOut: the kernel's route off the node, local-links.ts findWaysOut), minus the
 * encapsulation overhead when all of that traffic is tunnelled (encapOverhead). The pod interfaces get this
 * plus the overhead (Agent.mtu).
 *
 * When neither tells (no way out found: a default route learned by BGP and not there yet, or gone
 * for a moment), the last choice is kept rather than dropped to 1500 and back: pods started meanwhile
 * get the MTU the others have. Only without one (the first pass, or after a fallback) is 1500
 * assumed, which drops large packets on a fabric below it and wastes a jumbo one.
 */
export function chooseMtu(opts: {
  configured: number;
  internalIPs: readonly string[];
  localLinks: readonly LocalLink[];
  links: readonly LinkInfo[];
  waysOut: readonly RouteLookup[];
  overhead: number;
  /** The previous choice, with the overhead it was made with. */
  last?: MtuChoice & { overhead: number };
}): MtuChoice {
  if (opts.configured > 0) return { mtu: opts.configured, source: 'configured' };
  // Each InternalIP's own interface: a dual-stack node may hold its IPv4 and IPv6 InternalIPs on
  // different links, and the pods' one MTU must fit the smaller (as the VXLAN devices, sized per
  // family, do).
  const nodeLinks = new Map<number, { name: string; mtu: number }>();
  for (const ip of opts.internalIPs) {
    const nodeLink = nodeLinkOf(opts.localLinks, [ip], opts.links);
    const mtu = opts.links.find((l) => l.index === nodeLink?.ifindex)?.mtu;
    if (nodeLink !== undefined && mtu !== undefined)
      nodeLinks.set(nodeLink.ifindex, { name: nodeLink.name, mtu });
  }
  if (nodeLinks.size > 0) {
    const smallest = [...nodeLinks.values()].reduce((a, b) => (b.mtu < a.mtu ? b : a));
    const names = [...nodeLinks.values()].map((l) => l.name);
    const via = names.length > 1 ? `InternalIPs, smallest MTU of ${names.join(', ')}` : 'InternalIP';
    return {
      mtu: smallest.mtu - opts.overhead,
      source: `${smallest.name} (${via})${overheadNote(opts.overhead)}`,
      links: [...nodeLinks].map(([index, l]) => ({ index, mtu: l.mtu, name: l.name })),
    };
  }
  const out = wayOutLink(opts.waysOut, opts.links);
  if (out !== undefined) {
    // Every device of the ways out: a change on any of them can make it the smallest.
    const indexes = new Set(opts.waysOut.flatMap((w) => w.ifindexes));
    return {
      mtu: out.link.mtu - opts.overhead,
      source: `${out.link.name} (${out.via})${overheadNote(opts.overhead)}`,
      links: opts.links
        .filter((l) => indexes.has(l.index))
        .map((l) => ({ index: l.index, mtu: l.mtu, name: l.name })),
    };
  }
  const last = opts.last;
  if (last !== undefined && last.fallback !== true && last.overhead === opts.overhead) {
    const source = last.kept === true ? last.source : `${last.source}, kept: no way out of the node found`;
    return { mtu: last.mtu, source, kept: true };
  }
  return { mtu: 1500 - opts.overhead, source: `fallback 1500${overheadNote(opts.overhead)}`, fallback: true };
}

function overheadNote(overhead: number): string {
  return overhead > 0 ? ` minus ${overhead} bytes of encapsulation` : '';
}

/**
 * Bytes to subtract from the underlay MTU for pod traffic that leaves the node (the pods' RTAX_MTU).
 * vxlan: the VXLAN overhead of the largest underlay this node tunnels over (50 for IPv4, 70 for IPv6; a
 * node tunnelling both uses 70: one route MTU serves both families' routes), since every peer is
 * tunnelled. A family is tunnelled where the node has both a pod CIDR and an InternalIP of it (the VXLAN
 * devices: pkg/vxlan device.ts): a node with dual-stack InternalIPs and IPv4 pods only tunnels over IPv4.
 * host-gw never encapsulates: 0. auto: 0 as well, so direct peers get the full MTU: TCP into a VXLAN
 * device is clamped by the node (table-rules.ts), and a larger packet of another protocol is answered
 * by the node, its first hop ("fragmentation needed" / "packet too big"), or fragmented (IPv4 without
 * DF). A pod's routes are fixed when it starts, so auto cannot follow which peers are tunnelled.
 */
export function encapOverhead(
  mode: 'auto' | 'host-gw' | 'vxlan',
  internalIPs: readonly string[],
  podCIDRs: readonly string[],
): number {
  // Without an InternalIP (standalone mode) there is no VXLAN device and no peer: nothing to subtract.
  if (mode !== 'vxlan' || internalIPs.length === 0) return 0;
  // As device.ts decides which devices to make: a pod CIDR and a usable InternalIP of the family.
  const tunnelled = ([4, 6] as const).filter(
    (f) => vtepAddress(podCIDRs, f) !== undefined && usableInternalIPsOf(internalIPs, f).usable.length > 0,
  );
  if (tunnelled.length === 0) return 0;
  return tunnelled.includes(6) ? VXLAN_OVERHEAD[6] : VXLAN_OVERHEAD[4];
}
