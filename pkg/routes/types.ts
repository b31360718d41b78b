/**
 * Plain data the route planner works on. The Kubernetes adapter maps Node objects to these; the agent
 * reads its own interfaces through netlink. Nothing here knows about either.
 */

import type { Family, RouteInfo } from '../datapath/ports.ts';

/** One cluster node as the planner needs it (Node.spec.podCIDRs, Node.status.addresses[type=InternalIP]). */
export interface PeerNode {
  name: string;
  podCIDRs: string[];
  internalIPs: string[];
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

export type RoutingMode = 'host-gw';

export interface DesiredRoutesOptions {
  mode: RoutingMode;
  /** Routing table for everything this planner emits; the main table (254) when unset. */
  table?: number;
}

export interface Problem {
  node: string;
  problem: string;
}

/**
 * How one peer is reached in one address family. 'direct' is host-gw: the peer's InternalIP sits in a
 * subnet connected to one of our interfaces. 'unreachable' means host-gw cannot reach it; a VXLAN mode
 * will turn those into `{ path: 'vxlan', ... }` decisions instead of problems.
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
  | { node: string; family: Family; path: 'unreachable'; nodeIP: string; podCIDRs: string[]; reason: string };

export interface DesiredRoutes {
  routes: RouteInfo[];
  problems: Problem[];
  decisions: PeerDecision[];
}
