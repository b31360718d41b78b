/**
 * Numeric constants of the rtnetlink wire format (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h,
 * linux/neighbour.h, linux/if_addr.h). Plain objects, not enums (erasableSyntaxOnly).
 */

export const NLMSG_HDRLEN = 16;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;

export const NLM_F = {
  REQUEST: 0x1,
  MULTI: 0x2,
  ACK: 0x4,
  DUMP_INTR: 0x10,
  DUMP: 0x300,
  REPLACE: 0x100,
  EXCL: 0x200,
  CREATE: 0x400,
  APPEND: 0x800,
} as const;

export const RTM = {
  NEWLINK: 16,
  DELLINK: 17,
  GETLINK: 18,
  SETLINK: 19,
  NEWADDR: 20,
  DELADDR: 21,
  GETADDR: 22,
  NEWROUTE: 24,
  DELROUTE: 25,
  GETROUTE: 26,
  NEWNEIGH: 28,
  DELNEIGH: 29,
  GETNEIGH: 30,
  NEWNEXTHOP: 104,
  DELNEXTHOP: 105,
  GETNEXTHOP: 106,
} as const;

export const AF = { UNSPEC: 0, INET: 2, BRIDGE: 7, INET6: 10 } as const;

export const IFF_UP = 0x1;
export const IFF_LOOPBACK = 0x8;
/** The device has carrier (operational state up below the admin flag). */
export const IFF_LOWER_UP = 0x10000;

export const IFLA = {
  ADDRESS: 1,
  IFNAME: 3,
  MTU: 4,
  LINK: 5,
  MASTER: 10,
  LINKINFO: 18,
  IFALIAS: 20,
  NET_NS_FD: 28,
  LINK_NETNSID: 37,
} as const;

export const IFLA_INFO = { KIND: 1, DATA: 2 } as const;
export const VETH_INFO_PEER = 1;

export const IFLA_VXLAN = {
  ID: 1,
  LINK: 3,
  LOCAL: 4,
  TTL: 5,
  LEARNING: 7,
  PORT: 15,
  LOCAL6: 17,
  UDP_CSUM: 18,
} as const;

export const IFA = { ADDRESS: 1, LOCAL: 2, LABEL: 3, FLAGS: 8 } as const;
export const IFA_F = { NODAD: 0x02, TENTATIVE: 0x40, PERMANENT: 0x80 } as const;

export const RTA = {
  DST: 1,
  OIF: 4,
  GATEWAY: 5,
  PRIORITY: 6,
  PREFSRC: 7,
  METRICS: 8,
  MULTIPATH: 9,
  TABLE: 15,
  VIA: 18,
  NH_ID: 30,
} as const;

/** Nexthop object attributes (include/uapi/linux/nexthop.h). */
export const NHA = { ID: 1, GROUP: 2, BLACKHOLE: 4, OIF: 5, GATEWAY: 6 } as const;

/** Route metrics nested in RTA_METRICS (include/uapi/linux/rtnetlink.h). */
export const RTAX = { MTU: 2 } as const;

export const RT_TABLE_MAIN = 254;
/** The kernel's table of local and broadcast addresses. */
export const RT_TABLE_LOCAL = 255;
export const RT_SCOPE = { UNIVERSE: 0, LINK: 253, HOST: 254, NOWHERE: 255 } as const;
export const RTN = { UNSPEC: 0, UNICAST: 1, LOCAL: 2, BLACKHOLE: 6 } as const;
export const RTNH_F_ONLINK = 0x4;
export const RTM_F_CLONED = 0x200;
/** RTM_GETROUTE for one address: answer with the FIB entry that matched, not the resolved result. */
export const RTM_F_FIB_MATCH = 0x2000;
/** RTM_GETROUTE: report the table the answer came from (IPv4 says main otherwise, whatever the rules chose). */
export const RTM_F_LOOKUP_TABLE = 0x1000;

export const NDA = { DST: 1, LLADDR: 2 } as const;
export const NUD = { REACHABLE: 0x02, NOARP: 0x40, PERMANENT: 0x80 } as const;
export const NTF_SELF = 0x02;

/** rtnetlink multicast groups (RTNLGRP_*), joined with NETLINK_ADD_MEMBERSHIP. */
export const RTNLGRP = { LINK: 1, NEIGH: 3, IPV4_ROUTE: 7, IPV6_ROUTE: 11, NEXTHOP: 32 } as const;
