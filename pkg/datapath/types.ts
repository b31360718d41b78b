import type { Ipam, LeasedAddress } from '../ipam/index.ts';
import type { BackgroundDeleter } from './background-deleter.ts';
import type { PodRoute } from './pod-routes.ts';
import type { NetlinkHandle, NetnsPort } from './ports.ts';
import type { PreparedPairs } from './prepared-pairs.ts';

/** What the datapath needs from IPAM: a narrow view of the agent's store. */
export type IpamPort = Pick<
  Ipam,
  | 'allocate'
  | 'allocateDeferred'
  | 'release'
  | 'releaseDeferred'
  | 'get'
  | 'list'
  | 'heldKeys'
  | 'heldAddresses'
  | 'hold'
  | 'restore'
  | 'ranges'
>;

export interface DatapathDeps {
  /** rtnetlink in the agent's own namespace, which trellis treats as the host. */
  host: NetlinkHandle;
  netns: NetnsPort;
  ipam: IpamPort;
  deleter: BackgroundDeleter;
  /** Veth pairs made when a pod's namespace appeared, before its ADD (absent: ADD makes its own). */
  prepared?: Pick<PreparedPairs, 'take'>;
}

export interface AttachmentKey {
  containerId: string;
  ifname: string;
}

export interface PodRef {
  namespace?: string;
  name?: string;
  uid?: string;
}

export interface AttachRequest extends AttachmentKey {
  netns: string;
  /** The pod interface's MTU (both veth ends). */
  mtu: number;
  /** The network config's own `mtu`, when it sets one (then `mtu` too): recorded in the lease. */
  configMtu?: number;
  /**
   * The MTU of traffic leaving the node, when below `mtu` (the overlay's): the pod's default routes
   * carry it, and routes to `nodeCidrs` keep the full `mtu` (pod-routes.ts).
   */
  routeMtu?: number;
  /** This node's pod CIDRs, for those routes. */
  nodeCidrs?: readonly string[];
  pod?: PodRef;
  /** The CNI network (config list name) the call is for; recorded in the lease for GC. */
  network?: string;
  /**
   * The network of a lease that records none (written before leases did, or rebuilt from a pod's
   * namespace): the published one, as GC takes it.
   */
  unrecordedNetwork?: string;
}

/** How ADD may spend the agent's JS thread. */
export interface AttachOptions {
  /**
   * No other CNI call is being served: the kernel's veth creation runs on this thread instead of
   * being handed to another and back (~0.15 ms less per ADD here; NetlinkHandle.createVeth).
   */
  alone?: boolean;
}

export interface LinkRef {
  name: string;
  index: number;
  mac: string;
}

/** A pod attachment as it exists in the kernel after ADD. */
export interface Attachment extends AttachmentKey {
  netns: string;
  host: LinkRef;
  pod: LinkRef & { mtu: number };
  addresses: LeasedAddress[];
  /** The pod's routes via its gateways, as the result reports them. */
  routes: PodRoute[];
  /** The veth pair was made when the pod's namespace appeared (prepared-pairs.ts), not by this ADD. */
  prepared?: boolean;
}
