/**
 * The kernel as the datapath sees it: small interfaces implemented by the netlink adapter
 * (pkg/netlink) and the netns adapter (pkg/netns). Everything above them is testable without root.
 *
 * Addresses are strings ("10.244.1.5", "fd00::5"); prefixes are numbers; MACs are lower-case
 * "aa:bb:cc:dd:ee:ff". Families are 4 or 6.
 */

import type { Family } from '../ip/address.ts';

// One Family type for the whole agent: the IP library's.
export type { Family };

export interface LinkInfo {
  index: number;
  name: string;
  /** e.g. 'veth', 'bridge', 'vxlan'; undefined for devices without IFLA_INFO_KIND (lo, physical). */
  kind: string | undefined;
  mac: string;
  mtu: number;
  /** Administratively up (IFF_UP). */
  up: boolean;
  /** IFLA_LINK_NETNSID / peer index when the kernel reports them (veth). */
  peerIndex?: number;
  /** IFF_LOOPBACK (lo); absent on every other link. */
  loopback?: true;
  /** IFF_LOWER_UP: the device has carrier; absent when it has not (or the source does not say). */
  lowerUp?: true;
  /** IFLA_IFALIAS (`ip link set … alias`), when the link has one. */
  alias?: string;
}

export interface AddressInfo {
  family: Family;
  ifindex: number;
  address: string;
  prefixLen: number;
  /** 'universe' | 'link' | 'host' */
  scope: 'universe' | 'link' | 'host';
}

export interface AddAddress {
  family: Family;
  ifindex: number;
  address: string;
  prefixLen: number;
  scope?: 'universe' | 'link' | 'host';
  /** IFA_F_NODAD: skip IPv6 duplicate address detection so the address is usable at once. */
  noDad?: boolean;
}

/** A route; its identity is family + dst/prefix + gateway + device + table. */
export interface RouteInfo {
  family: Family;
  /** Destination prefix "10.244.2.0/24"; "0.0.0.0/0" or "::/0" for default. */
  dst: string;
  gateway?: string;
  ifindex?: number;
  /** Main table (254) when unset. */
  table?: number;
  /** rtm_protocol; trellis tags its own routes with TRELLIS_ROUTE_PROTOCOL. */
  protocol?: number;
  scope?: 'universe' | 'link' | 'host';
  type?: 'unicast' | 'blackhole' | 'local';
  /** RTNH_F_ONLINK: gateway reachable on the device without a connected route (VXLAN). */
  onlink?: boolean;
  /** Preferred source address. */
  src?: string;
  metric?: number;
  /** RTAX_MTU: the path MTU for this destination, below the device's (traffic that leaves the node). */
  mtu?: number;
  /**
   * A route of a kind RouteInfo cannot express (multipath, unreachable, prohibit, throw): only its
   * family, dst, protocol and table are set. Listed only when a RouteFilter asks for them; route
   * notifications carry them too.
   */
  unreadable?: true;
}

/** Who holds a route key, as far as one lookup tells: nothing, a route, or not plain to see. */
export type KeyHolder =
  | { kind: 'free' }
  | { kind: 'route'; protocol: number; table: number }
  | { kind: 'unknown'; why: string };

/** NetlinkHandle.routeTo's answer: the route the kernel's lookup matched and where it sends. */
export interface RouteLookup {
  family: Family;
  /** The matched route's prefix: "0.0.0.0/0" or "::/0" for a default route. */
  dst: string;
  /**
   * The devices the route sends through, each once: one, or every nexthop's of a multipath route
   * (flows are spread over all of them). Never empty.
   */
  ifindexes: number[];
  /** The route has no gateway: the address is on the link of its one device (an on-link prefix). */
  onLink?: true;
}

export interface NeighbourEntry {
  family: Family;
  ifindex: number;
  address: string;
  mac: string;
  /** NUD_PERMANENT when true. */
  permanent?: boolean;
}

export interface FdbEntry {
  ifindex: number;
  mac: string;
  /** Remote VTEP IP (NDA_DST). */
  dst: string;
}

export interface CreateVeth {
  /** Name of the end that stays in the handle's namespace. */
  name: string;
  mtu: number;
  /**
   * That end's MAC, set in the creating request. Without one the kernel picks a random MAC
   * (addr_assign_type RANDOM), which systemd-udevd's MACAddressPolicy=persistent (the default since
   * systemd 242) rewrites on the device's "add" event, some time after the pod may have learnt the
   * old one for its gateway: its packets then go to a MAC no device has until its ARP entry is
   * replaced (seconds).
   */
  mac?: string;
  /** Name of the peer inside the target namespace. */
  peerName: string;
  /** An open fd of the target network namespace (IFLA_NET_NS_FD). */
  peerNetnsFd: number;
  peerMtu: number;
  /**
   * The peer's MAC ("aa:bb:cc:dd:ee:ff"); the kernel picks a random one when unset. Applied only by
   * an implementation whose createVeth resolves with the created link (see NetlinkHandle.createVeth).
   */
  peerMac?: string;
}

export interface CreateVxlan {
  name: string;
  /** 0..16777215 */
  vni: number;
  /** UDP destination port (8472 Linux default, 4789 IANA). */
  port: number;
  /** Source address of encapsulated packets (this node's VTEP address). */
  localIp: string;
  /** Underlay device index (IFLA_VXLAN_LINK). */
  dev?: number;
  /** Learn the FDB from received packets; trellis programs it itself, so false when unset. */
  learning?: boolean;
  mtu: number;
  /**
   * The device's MAC, set in the creating request. Without one the kernel picks a random MAC
   * (addr_assign_type RANDOM) that systemd-udevd's MACAddressPolicy=persistent rewrites on the
   * device's "add" event, racing any MAC set afterwards (flannel#1155).
   */
  mac?: string;
}

/** A VXLAN device's parameters as the kernel reports them (IFLA_INFO_DATA). */
export interface VxlanParams {
  vni: number;
  port: number;
  /** IFLA_VXLAN_LOCAL / LOCAL6; undefined when the device has none. */
  localIp: string | undefined;
  learning: boolean;
}

export interface RouteFilter {
  family?: Family;
  protocol?: number;
  /**
   * Main table (254) when unset: listRoutes lists one table. 'routing': every table but the local
   * one (255), where a source-based routing plugin (sbr) moves a pod's routes.
   */
  table?: number | 'routing';
  ifindex?: number;
  /** Also the routes RouteInfo cannot express, by key (RouteInfo.unreadable): to see what holds a prefix. */
  unreadable?: boolean;
}

/**
 * rtnetlink operations bound to ONE network namespace (the one the socket was opened in).
 * Errors are typed (see pkg/netlink/errors.ts): LinkNotFoundError, ExistsError, NetlinkError(errno, op).
 */
export interface NetlinkHandle {
  getLink(name: string): Promise<LinkInfo | undefined>;
  getLinkByIndex(index: number): Promise<LinkInfo | undefined>;
  listLinks(): Promise<LinkInfo[]>;
  /**
   * Resolves with the end in this namespace as the kernel reports it (its peerIndex is the peer's
   * index in the target namespace, absent when the two indexes are equal) when the implementation
   * asks the kernel to echo the new link (NLM_F_ECHO, Linux 6.3+); such an implementation also
   * applies spec.peerMac. Resolves with nothing otherwise: then look the links up. `inline`: the
   * caller may block this thread for the kernel's work (~0.7 ms) rather than hand it to another
   * thread and back (~0.15 ms more), because nothing else waits for it; implementations without
   * another thread ignore it.
   */
  // biome-ignore lint/suspicious/noConfusingVoidType: `void` lets the handle's own createVeth (which echoes nothing) implement this unchanged.
  createVeth(spec: CreateVeth, opts?: { inline?: boolean }): Promise<LinkInfo | void>;
  setLinkUp(index: number): Promise<void>;
  setLinkMtu(index: number, mtu: number): Promise<void>;
  /** Throws LinkNotFoundError when absent. */
  deleteLink(index: number): Promise<void>;
  /**
   * deleteLink for deletions nobody waits for (BackgroundDeleter's): where an implementation has
   * another thread, through one of their own, so the ones a caller waits for (ADD replacing a
   * stale pair or undoing itself) never queue behind a burst of them (a node drain: 15-33 ms each)
   * or behind one the kernel holds (a device that does not become free). deleteLink without it.
   */
  deleteLinkInBackground?(index: number): Promise<void>;

  listAddresses(family?: Family, ifindex?: number): Promise<AddressInfo[]>;
  /** Succeeds when the same address already exists (idempotent). */
  addAddress(spec: AddAddress): Promise<void>;

  listRoutes(filter?: RouteFilter): Promise<RouteInfo[]>;
  /**
   * The unicast route the kernel would send traffic to `address` by: RTM_GETROUTE for the one
   * address (policy rules, multipath routes and nexthop objects resolved as for a packet; no dump,
   * nothing sent). Undefined when there is none: no route, unreachable, prohibit, blackhole, local.
   */
  routeTo(address: string): Promise<RouteLookup | undefined>;
  /**
   * Whether the FIB entry the kernel's lookup of `route`'s address matches (RTM_F_FIB_MATCH) is that
   * route, straight out of its device: one small request where a dump reads every route. False says
   * only that the lookup cannot vouch for it (another entry answers, or none).
   */
  answersFor?(route: RouteInfo): Promise<boolean>;
  /** NLM_F_CREATE|NLM_F_REPLACE: idempotent. */
  replaceRoute(route: RouteInfo): Promise<void>;
  /** Succeeds when the route is already gone. */
  deleteRoute(route: RouteInfo): Promise<void>;
  /**
   * True when a route of ours was written through nexthop object id and this handle has not deleted
   * it since: the object's deletion then took a live route with it (adapters without objects omit it).
   */
  routesNexthop?(id: number): boolean;
  /**
   * Link up, address and route changes sent together (one datagram), which the kernel applies in
   * the given order: one round trip for what would take one per step. An address that exists
   * already counts as added (like addAddress), and so does a route with keepExisting whose
   * destination is taken: both resolve as 'kept'. Throws the first failure; the steps after a failed
   * one were still attempted.
   */
  setUp(steps: readonly SetUpStep[]): Promise<SetUpOutcome[]>;
  /** Several routes in one burst (pipelined requests); resolves when the kernel acked all. */
  replaceRoutes?(routes: RouteInfo[]): Promise<void>;
  /** VXLAN backend: creates the device (down) and returns it as the kernel reports it. */
  createVxlan?(spec: CreateVxlan): Promise<LinkInfo>;
  /** VXLAN backend: a device's parameters; undefined when no link has the name, null when it is no VXLAN. */
  vxlanParams?(name: string): Promise<VxlanParams | undefined | null>;
  /** VXLAN backend: sets a link's MAC (IFLA_ADDRESS). */
  setLinkMac?(index: number, mac: string): Promise<void>;

  replaceNeighbour(entry: NeighbourEntry): Promise<void>;
  deleteNeighbour(entry: NeighbourEntry): Promise<void>;
  listNeighbours(ifindex?: number): Promise<NeighbourEntry[]>;
  /**
   * Points the (unicast) MAC's FDB entry at entry.dst, creating it when missing. A unicast MAC has one
   * remote, which NLM_F_REPLACE moves in place: no moment without an entry, as a delete and add has.
   */
  replaceFdb(entry: FdbEntry): Promise<void>;
  deleteFdb(entry: FdbEntry): Promise<void>;
  listFdb(ifindex?: number): Promise<FdbEntry[]>;

  close(): void;
}

/**
 * ADD's handle in a pod's namespace: its links looked up, its routes listed (for an interface other
 * than eth0: which default routes the pod has), its configuration sent (setUp).
 */
export type PodNetlink = Pick<NetlinkHandle, 'getLink' | 'listRoutes' | 'setUp' | 'close'>;

/** Network namespaces and the few libc calls the datapath needs. */
export interface NetnsPort {
  /** True when path exists and is a network namespace (nsfs). */
  isNetns(path: string): boolean;
  /**
   * Opens a rtnetlink handle bound to the namespace at path (setns in, open, setns back).
   * Throws NetnsNotFoundError when the path is missing or not a netns.
   */
  openNetlinkIn(path: string): NetlinkHandle;
  /**
   * Opens an fd for IFLA_NET_NS_FD, openPodNetlink and writeSysctlsInFd; the caller closes it with
   * closeFd. Throws NetnsNotFoundError when the path is missing or not a netns.
   */
  openNetnsFd(path: string): number;
  /**
   * What ADD needs in the pod's namespace, through an fd from openNetnsFd (still the caller's): one
   * open serves a whole ADD.
   */
  openPodNetlink(fd: number, path: string): PodNetlink;
  closeFd(fd: number): void;
  /** The namespace an fd from openNetnsFd is open on, as "dev:ino" of its nsfs inode. */
  namespaceId(fd: number): string;
  /**
   * This boot's id (/proc/sys/kernel/random/boot_id): with namespaceId, which namespace a lease's
   * path named at ADD (netns-identity.ts). Undefined where it cannot be read (and in test doubles).
   */
  readonly bootId?: string;
  /**
   * For a path named by process id (/proc/PID/ns/net, netns-identity.ts's namedByPid): when that
   * process started (field 22 of /proc/PID/stat, in clock ticks since boot), read where the agent reads
   * the path (--host-proc); undefined when it cannot be read. A PID is reused, its start never is.
   */
  processStart?(path: string): string | undefined;
  /** Synchronous /proc/sys write inside the namespace at path, e.g. ('net/ipv6/conf/eth0/accept_dad', '0'). */
  writeSysctlIn(path: string, key: string, value: string): void;
  /** writeSysctlIn of each [key, value] in turn through an fd from openNetnsFd, one entry into the namespace. */
  writeSysctlsInFd(
    fd: number,
    path: string,
    entries: readonly (readonly [key: string, value: string])[],
  ): void;
  /** The same, in the agent's own namespace (the "host"). */
  writeSysctl(key: string, value: string): void;
  readSysctl(key: string): string;
}

/** One step of NetlinkHandle.setUp. */
export type SetUpStep =
  | { kind: 'up'; index: number }
  | { kind: 'down'; index: number }
  /** A new name, MTU, MAC and/or alias for a link (kernels before 6.2 rename no link that is up: EBUSY). */
  | { kind: 'link'; index: number; name?: string; mtu?: number; alias?: string; mac?: string }
  | { kind: 'address'; address: AddAddress }
  | {
      kind: 'route';
      route: RouteInfo;
      /**
       * Create the route only if its destination is free (NLM_F_EXCL) and otherwise keep the route
       * that holds it, whatever its device: the kernel refuses with EEXIST a second IPv4 route of the
       * same destination, tos and priority, or IPv6 route of the same destination and metric. Unset,
       * the route is created or replaces that one (NLM_F_REPLACE).
       */
      keepExisting?: boolean;
    };

/**
 * What a setUp step came to, in the order of the steps: 'done', or 'kept' when what it would add was
 * there already and stays (an address; a keepExisting route, maybe another device's).
 */
export type SetUpOutcome = 'done' | 'kept';

/** rtm_protocol value that marks routes trellis created (RTPROT values < 20 are reserved by the kernel). */
export const TRELLIS_ROUTE_PROTOCOL = 0x7e; // 126

/** The netlink adapter's streamed listing (ExtendedNetlinkHandle.scanRoutes); optional in the port. */
export interface RouteScan {
  scanRoutes(filter: RouteFilter, visit: (r: RouteInfo) => void, restart?: () => void): Promise<void>;
}

/** Whether `h` streams route dumps (a whole listing of thousands of routes is garbage at every pass). */
export function hasRouteScan<H extends object>(h: H): h is H & RouteScan {
  return typeof (h as Partial<RouteScan>).scanRoutes === 'function';
}

/** RFC 8200: every link that carries IPv6 takes packets of 1280 bytes; the kernel takes IPv6 off a smaller one. */
export const IPV6_MIN_MTU = 1280;

/**
 * Kernel change notifications (pkg/netlink subscribeRouteEvents / subscribeLinkEvents), bound to the
 * namespace of the caller. Events only say "look again": consumers re-list (level-triggered), and
 * 'overflow' (the kernel dropped notifications: ENOBUFS) means "resync everything".
 */
export type RouteEvent =
  | {
      type: 'add' | 'delete';
      route: RouteInfo;
      /** Routing table (254 = main). */
      table: number;
      /**
       * The nexthop object the route names (RTA_NH_ID). With net.ipv4.nexthop_compat_mode=0 the
       * kernel leaves the gateway and device out of the notification: this is all there is.
       */
      nexthopId?: number;
    }
  /**
   * A nexthop object was deleted. The kernel removes the IPv4 routes that named it without a route
   * notification, so for our gateway routes (written through objects) this is the only sign.
   */
  | { type: 'nexthop-deleted'; id: number; protocol: number }
  | { type: 'overflow' };

/**
 * 'add' is RTM_NEWLINK: a link made or changed. `wentDown`: the change set it down (`ip link set
 * down`; not the close before a deletion, whose 'delete' follows), which takes its IPv4 routes
 * without a route notification.
 */
export type LinkEvent = { type: 'add' | 'delete'; link: LinkInfo; wentDown?: true } | { type: 'overflow' };

/** A deleted VXLAN entry as its notification names it: a neighbour by address, an FDB entry by MAC and remote. */
export type DeletedEntry =
  | { ifindex: number; address: string }
  | { ifindex: number; mac: string; dst: string };

/**
 * A neighbour or (a VXLAN device's) FDB entry deleted on link `ifindex`; family 7 (AF_BRIDGE) for FDB.
 * `entry`: what was deleted, where the notification says.
 */
export type NeighbourDeletion =
  | { type: 'deleted'; ifindex: number; family: number; entry?: DeletedEntry }
  | { type: 'overflow' };

/** Ranges [lo, hi] (inclusive) to take out of and put into one interval set of an inet table. */
export interface IntervalSetChange {
  set: string;
  family: Family;
  remove: readonly (readonly [bigint, bigint])[];
  add: readonly (readonly [bigint, bigint])[];
}

export type NftObjectKind = 'table' | 'chain' | 'rule' | 'set' | 'element' | 'object' | 'flowtable';

/**
 * An nf_tables change: one object of a table added or deleted ('change'), or a transaction committed
 * ('generation', after the changes it made).
 */
export type NftablesEvent =
  | {
      type: 'change';
      change: 'new' | 'del';
      object: NftObjectKind;
      family: number;
      table: string;
      /** The netlink port (usually the pid) of the process whose transaction it is. */
      portid: number;
    }
  | { type: 'generation'; portid: number };

export interface Subscription {
  close(): void;
}

/**
 * The notifications a subscriber acts on, so that the kernel drops the rest before they are queued
 * (a socket filter on the subscription's socket). Only a saving: the callback must still check
 * each event, and may see more than it asked for. Absent, every notification is delivered.
 */
export interface RouteEventInterest {
  /** Route changes kept: each entry matches the change and, where given, table, protocol and type. */
  routes: readonly {
    change: 'add' | 'delete' | 'any';
    /** 1-255 (a table above 255 is reported as 252, RT_TABLE_COMPAT, in the header the filter sees). */
    table?: number;
    protocol?: number;
    type?: NonNullable<RouteInfo['type']>;
  }[];
  /** Deleted nexthop objects kept, those with this protocol; none when absent. */
  nexthopDeletions?: { protocol: number };
}

export interface LinkEventInterest {
  /** 'down': only the RTM_NEWLINKs that set a link down ('add' events with `wentDown`). */
  changes: readonly ('add' | 'delete' | 'down')[];
  /** Only these links' notifications (by ifindex); all links' when absent. */
  links?: readonly number[];
}

export interface NetlinkEventsPort {
  subscribeRouteEvents(cb: (ev: RouteEvent) => void, interest?: RouteEventInterest): Subscription;
  subscribeLinkEvents(cb: (ev: LinkEvent) => void, interest?: LinkEventInterest): Subscription;
  /**
   * nf_tables changes (pkg/netlink subscribeNftablesEvents); with `table`, other tables' set element
   * changes are dropped in the kernel (cb still checks each event). Absent where not wired.
   */
  subscribeNftablesEvents?(
    cb: (ev: NftablesEvent | { type: 'overflow' }) => void,
    table?: { family: number; name: string },
  ): Subscription;
  /** Neighbour and FDB entries deleted on these links (pkg/netlink subscribeNeighbourDeletions). Absent where not wired. */
  subscribeNeighbourDeletions?(cb: (ev: NeighbourDeletion) => void, links: readonly number[]): Subscription;
}
