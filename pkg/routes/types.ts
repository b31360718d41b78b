/**
 * Plain data the route planner works on. The Kubernetes adapter maps Node objects to these; the agent
 * reads its own interfaces through netlink. Nothing here knows about either.
 */

import type { Family, RouteInfo } from '../datapath/ports.ts';

/** One cluster node as the planner needs it (Node.spec.podCIDRs, Node.status.addresses[type=InternalIP]). */
export interface PeerNode {
  name: string;
  podCIDRs: readonly string[];
  internalIPs: readonly string[];
  /**
   * The MAC of the node's VXLAN device per underlay family, as its agent published it (pkg/vxlan reads
   * the Node annotations). Absent: the node has no VTEP (yet), so VXLAN to it would go nowhere.
   */
  vtepMacs?: Partial<Record<Family, string>>;
  /**
   * The subnets its agent routes peers directly on, per family, as it published them (the annotations'
   * text: pkg/routes/direct-subnets.ts). Absent: it publishes none, and only this node's rule decides.
   */
  directSubnets?: Partial<Record<Family, string>>;
}

/** The node this agent runs on: same shape, its pod CIDRs become blackhole routes. */
export type SelfNode = PeerNode;

export interface LocalAddress {
  family: Family;
  address: string;
  prefixLen: number;
}

/** One of the agent's own interfaces with its addresses (the connected subnets that reach peers). */
export interface LocalLink {
  ifindex: number;
  name: string;
  addresses: LocalAddress[];
}

/**
 * host-gw: direct routes only, a peer on another subnet is unreachable. auto: direct routes to peers whose
 * longest-prefix connected subnet holds this node's own InternalIP too, VXLAN to the rest (and to every
 * peer when this node's InternalIP is on no connected subnet: see desired.ts). vxlan: every peer through
 * VXLAN.
 */
export type RoutingMode = 'host-gw' | 'auto' | 'vxlan';
export const ROUTING_MODES: readonly RoutingMode[] = Object.freeze(['host-gw', 'auto', 'vxlan']);

/** A VXLAN device of this node the planner may route a family's pod traffic through. */
export interface OverlayDevice {
  family: Family;
  ifindex: number;
  name: string;
}

export interface DesiredRoutesOptions {
  mode: RoutingMode;
  /** Routing table for everything this planner emits; the main table (254) when unset. */
  table?: number;
  /** The usable VXLAN devices (auto and vxlan modes); a family without one cannot use VXLAN. */
  overlay?: readonly OverlayDevice[];
  /**
   * Keep, on each peer auto mode tunnels to, why it is not routed directly (PeerDecision.why): for the
   * operator's `trellis routes`, not the agent's passes, which would hold thousands of such strings.
   */
  explain?: boolean;
}

export interface Problem {
  node: string;
  problem: string;
  /**
   * The pod CIDR (canonical text) the problem keeps from being routed: a claim that overlaps this
   * node's pod CIDRs, holds the underlay, or holds or equals another node's. Masquerade does not
   * count it among the cluster's destinations either (pkg/agent/masq-given.ts).
   */
  refusedCidr?: string;
  /**
   * Said only: the node's routes are planned all the same (an InternalIP another node claims too, a
   * pod CIDR nested in another of its own, a malformed VTEP MAC routed directly). Not "skipped".
   */
  routed?: true;
}

/**
 * How one peer is reached in one address family. 'direct' is host-gw: the peer's InternalIP sits in a
 * subnet connected to one of our interfaces. 'vxlan': through our VXLAN device of that family; the kernel
 * needs (in this order) a permanent neighbour vtepIP -> vtepMac on the device, an FDB entry vtepMac ->
 * nodeIP, and then onlink routes podCIDRs via vtepIP. 'unreachable': neither works (reason says why).
 */
export type PeerDecision =
  | {
      node: string;
      family: Family;
      path: 'direct';
      nodeIP: string;
      ifindex: number;
      linkName: string;
      podCIDRs: string[];
    }
  | {
      node: string;
      family: Family;
      path: 'vxlan';
      /** The peer's underlay address (its InternalIP of this family): where the FDB sends frames. */
      nodeIP: string;
      /** The peer's VTEP address: the network address of its first pod CIDR of this family (flannel's scheme). */
      vtepIP: string;
      vtepMac: string;
      ifindex: number;
      linkName: string;
      podCIDRs: string[];
      /** auto mode, asked for (DesiredRoutesOptions.explain): why the peer is not routed directly. */
      why?: string;
    }
  | { node: string; family: Family; path: 'unreachable'; nodeIP: string; podCIDRs: string[]; reason: string };

export interface DesiredRoutes {
  routes: RouteInfo[];
  problems: Problem[];
  decisions: PeerDecision[];
}
