import type {
  AddAddress,
  AddressInfo,
  CreateVeth,
  CreateVxlan,
  Family,
  FdbEntry,
  LinkInfo,
  NeighbourEntry,
  RouteInfo,
  VxlanParams,
} from '../datapath/ports.ts';
import {
  AF,
  IFA,
  IFA_F,
  IFF_LOOPBACK,
  IFF_LOWER_UP,
  IFF_UP,
  IFLA,
  IFLA_INFO,
  IFLA_VXLAN,
  NDA,
  NTF_SELF,
  NUD,
  RT_SCOPE,
  RT_TABLE_MAIN,
  RTA,
  RTAX,
  RTM_F_CLONED,
  RTM_F_FIB_MATCH,
  RTM_F_LOOKUP_TABLE,
  RTN,
  RTNH_F_ONLINK,
  VETH_INFO_PEER,
} from './constants.ts';
import { bytesToIp, bytesToMac, familyOf, ipToBytes, macToBytes, parsePrefix } from './ip.ts';
import { ipv4PrefixTextAt, ipv4TextAt, rememberIpv4PrefixText, rememberIpv4Text } from './ipv4-texts.ts';
import {
  attr,
  decodeAttrs,
  i32le,
  NLA_TYPE_MASK,
  nested,
  putAttrHeader,
  putU32le,
  strAttr,
  u8,
  u8Attr,
  u16BeAttr,
  u16be,
  u16le,
  u32Attr,
  u32AttrIn,
  u32le,
  zeroed,
} from './wire.ts';

/**
 * Bodies of rtnetlink requests (fixed header struct + attributes) and parsers of the kernel's
 * answers into the plain port types. Pure: unit-tested byte for byte without root.
 */

export type Body = Buffer[];
type Scope = 'universe' | 'link' | 'host';

const afOf = (family: Family): number => (family === 4 ? AF.INET : AF.INET6);
const familyOfAf = (af: number): Family | undefined => (af === AF.INET ? 4 : af === AF.INET6 ? 6 : undefined);

const scopeNumber = (s: Scope): number =>
  s === 'link' ? RT_SCOPE.LINK : s === 'host' ? RT_SCOPE.HOST : RT_SCOPE.UNIVERSE;
const scopeName = (n: number): Scope =>
  n === RT_SCOPE.LINK ? 'link' : n === RT_SCOPE.HOST ? 'host' : 'universe';

// ---------------------------------------------------------------------------------------------- links

/** struct ifinfomsg (16 bytes). */
export function ifinfomsg(index = 0, flags = 0, change = 0, family: number = AF.UNSPEC): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt8(family, 0);
  b.writeInt32LE(index, 4);
  b.writeUInt32LE(flags, 8);
  b.writeUInt32LE(change, 12);
  return b;
}

export function getLinkByNameBody(name: string): Body {
  return [ifinfomsg(), strAttr(IFLA.IFNAME, name)];
}

export function setLinkUpBody(index: number, up: boolean): Body {
  return [ifinfomsg(index, up ? IFF_UP : 0, IFF_UP)];
}

export function setLinkMacBody(index: number, mac: string): Body {
  return [ifinfomsg(index), attr(IFLA.ADDRESS, macToBytes(mac))];
}

export function setLinkMtuBody(index: number, mtu: number): Body {
  return [ifinfomsg(index), u32Attr(IFLA.MTU, mtu)];
}

/**
 * A new name, MTU, MAC and alias for a link in one RTM_NEWLINK (kernels before 6.2 rename no link that is
 * up: EBUSY). The alias only here: a creating RTM_NEWLINK ignores IFLA_IFALIAS.
 */
export function setLinkNameMtuBody(
  index: number,
  change: { name?: string; mtu?: number; alias?: string; mac?: string },
): Body {
  const body: Body = [ifinfomsg(index)];
  if (change.name !== undefined) body.push(strAttr(IFLA.IFNAME, change.name));
  if (change.mtu !== undefined) body.push(u32Attr(IFLA.MTU, change.mtu));
  if (change.mac !== undefined) body.push(attr(IFLA.ADDRESS, macToBytes(change.mac)));
  // Without a NUL, as iproute2 sends it: the kernel keeps the attribute's bytes as the alias.
  if (change.alias !== undefined) body.push(attr(IFLA.IFALIAS, Buffer.from(change.alias, 'utf8')));
  return body;
}

/**
 * A veth pair whose peer is created directly inside another namespace (IFLA_NET_NS_FD in the
 * peer's ifinfomsg): one request, no move afterwards, no window where the peer is visible on the host.
 * spec.peerMac, when set, is the peer's MAC (so the caller knows it without asking); spec.mac the
 * near end's (CreateVeth.mac: no udev rewrite).
 */
export function createVethBody(spec: CreateVeth): Body {
  const peerParts = [
    ifinfomsg(),
    strAttr(IFLA.IFNAME, spec.peerName),
    u32Attr(IFLA.MTU, spec.peerMtu),
    u32Attr(IFLA.NET_NS_FD, spec.peerNetnsFd),
  ];
  if (spec.peerMac !== undefined) peerParts.push(attr(IFLA.ADDRESS, macToBytes(spec.peerMac)));
  const peer = Buffer.concat(peerParts);
  return [
    ifinfomsg(),
    strAttr(IFLA.IFNAME, spec.name),
    u32Attr(IFLA.MTU, spec.mtu),
    ...(spec.mac === undefined ? [] : [attr(IFLA.ADDRESS, macToBytes(spec.mac))]),
    nested(IFLA.LINKINFO, [
      strAttr(IFLA_INFO.KIND, 'veth'),
      nested(IFLA_INFO.DATA, [attr(VETH_INFO_PEER, peer)]),
    ]),
  ];
}

export function createVxlanBody(spec: CreateVxlan): Body {
  if (!Number.isInteger(spec.vni) || spec.vni < 0 || spec.vni > 0xffffff) {
    throw new RangeError(`VNI ${spec.vni} outside 0..16777215`);
  }
  const local = ipToBytes(spec.localIp);
  const data = [
    u32Attr(IFLA_VXLAN.ID, spec.vni),
    attr(local.length === 4 ? IFLA_VXLAN.LOCAL : IFLA_VXLAN.LOCAL6, local),
    u16BeAttr(IFLA_VXLAN.PORT, spec.port),
    u8Attr(IFLA_VXLAN.LEARNING, spec.learning === true ? 1 : 0),
  ];
  if (spec.dev !== undefined) data.push(u32Attr(IFLA_VXLAN.LINK, spec.dev));
  return [
    ifinfomsg(),
    strAttr(IFLA.IFNAME, spec.name),
    u32Attr(IFLA.MTU, spec.mtu),
    ...(spec.mac === undefined ? [] : [attr(IFLA.ADDRESS, macToBytes(spec.mac))]),
    nested(IFLA.LINKINFO, [strAttr(IFLA_INFO.KIND, 'vxlan'), nested(IFLA_INFO.DATA, data)]),
  ];
}

/** RTM_NEWLINK payload -> LinkInfo. */
export function parseLink(payload: Buffer): LinkInfo {
  const index = i32le(payload, 4);
  const flags = u32le(payload, 8);
  // One walk, values read in place: a link carries ~50 attributes (statistics, queues, ...) and a
  // view per attribute made every listing of a node's hundred veths ~0.5 MB of garbage.
  let name = '';
  let kind: string | undefined;
  let mac = '';
  let mtu = 0;
  let peer = 0;
  let alias: string | undefined;
  for (let off = 16; off + 4 <= payload.length; ) {
    // By index, as parseRoute reads: ~50 attributes a link, every pass lists every veth.
    const len = u16le(payload, off);
    if (len < 4 || off + len > payload.length) break;
    const at = off + 4;
    switch (u16le(payload, off + 2) & NLA_TYPE_MASK) {
      case IFLA.IFNAME:
        name = cStringAt(payload, at, off + len);
        break;
      case IFLA.ADDRESS:
        mac = bytesToMac(payload.subarray(at, off + len));
        break;
      case IFLA.MTU:
        if (len >= 8) mtu = u32le(payload, at);
        break;
      case IFLA.LINK:
        if (len >= 8) peer = i32le(payload, at);
        break;
      case IFLA.LINKINFO:
        kind = linkKind(payload, at, off + len);
        break;
      case IFLA.IFALIAS:
        alias = cStringAt(payload, at, off + len);
        break;
    }
    off += (len + 3) & ~3;
  }
  const link: LinkInfo = { index, name, kind, mac, mtu, up: (flags & IFF_UP) !== 0 };
  // The kernel reports IFLA_LINK only when it means something (a veth peer, possibly in another
  // namespace, where it may even equal our own index; a VXLAN's underlay device).
  if (peer !== 0) link.peerIndex = peer;
  if ((flags & IFF_LOOPBACK) !== 0) link.loopback = true;
  if ((flags & IFF_LOWER_UP) !== 0) link.lowerUp = true;
  if (alias !== undefined && alias !== '') link.alias = alias;
  return link;
}

/**
 * RTM_NEWLINK payload -> the VXLAN parameters in its IFLA_LINKINFO (null: not a VXLAN device). A
 * parameter the kernel leaves out reads as -1 (VNI, port) or absent (local address), so that it never
 * matches what trellis wants.
 */
export function parseVxlanParams(payload: Buffer): VxlanParams | null {
  const linkinfo = decodeAttrs(payload, 16).get(IFLA.LINKINFO);
  if (linkinfo === undefined) return null;
  const info = decodeAttrs(linkinfo, 0);
  const kind = info.get(IFLA_INFO.KIND);
  if (kind === undefined || cStringAt(kind, 0, kind.length) !== 'vxlan') return null;
  const data = decodeAttrs(info.get(IFLA_INFO.DATA) ?? Buffer.alloc(0), 0);
  const id = data.get(IFLA_VXLAN.ID);
  const port = data.get(IFLA_VXLAN.PORT);
  const local = data.get(IFLA_VXLAN.LOCAL) ?? data.get(IFLA_VXLAN.LOCAL6);
  const learning = data.get(IFLA_VXLAN.LEARNING);
  return {
    vni: id !== undefined && id.length >= 4 ? u32le(id, 0) : -1,
    port: port !== undefined && port.length >= 2 ? u16be(port, 0) : -1, // network byte order
    localIp:
      local !== undefined && (local.length === 4 || local.length === 16) ? bytesToIp(local) : undefined,
    learning: learning !== undefined && learning.length >= 1 && u8(learning, 0) !== 0,
  };
}

/** IFLA_INFO_KIND inside an IFLA_LINKINFO nest that spans [start, end). */
function linkKind(buf: Buffer, start: number, end: number): string | undefined {
  for (let off = start; off + 4 <= end; ) {
    const len = u16le(buf, off);
    if (len < 4 || off + len > end) break;
    if ((u16le(buf, off + 2) & NLA_TYPE_MASK) === IFLA_INFO.KIND) return cStringAt(buf, off + 4, off + len);
    off += (len + 3) & ~3;
  }
  return undefined;
}

/** A NUL-terminated string in [start, end). */
function cStringAt(buf: Buffer, start: number, end: number): string {
  const nul = buf.indexOf(0, start);
  return buf.toString('utf8', start, nul < 0 || nul > end ? end : nul);
}

// ------------------------------------------------------------------------------------------ addresses

/** struct ifaddrmsg (8 bytes). */
function ifaddrmsg(af: number, prefixLen: number, flags: number, scope: number, index: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt8(af, 0);
  b.writeUInt8(prefixLen, 1);
  b.writeUInt8(flags & 0xff, 2);
  b.writeUInt8(scope, 3);
  b.writeUInt32LE(index, 4);
  return b;
}

export function addAddressBody(spec: AddAddress): Body {
  const bytes = ipToBytes(spec.address);
  if ((bytes.length === 4 ? 4 : 6) !== spec.family) {
    throw new TypeError(`address ${spec.address} is not IPv${spec.family}`);
  }
  const flags = spec.noDad === true ? IFA_F.NODAD : 0;
  const body = [
    ifaddrmsg(afOf(spec.family), spec.prefixLen, flags, scopeNumber(spec.scope ?? 'universe'), spec.ifindex),
    attr(IFA.LOCAL, bytes),
    attr(IFA.ADDRESS, bytes),
  ];
  // IFA_FLAGS (u32) is the modern carrier; the u8 in ifaddrmsg is kept for old kernels.
  if (flags !== 0) body.push(u32Attr(IFA.FLAGS, flags));
  return body;
}

export function dumpAddressesBody(family?: Family): Body {
  return [ifaddrmsg(family === undefined ? AF.UNSPEC : afOf(family), 0, 0, 0, 0)];
}

export function parseAddress(payload: Buffer): AddressInfo | undefined {
  const family = familyOfAf(u8(payload, 0));
  if (family === undefined) return undefined;
  // IFA_LOCAL is the address when there is one, IFA_ADDRESS then the peer (point-to-point): IPv4
  // always sends IFA_LOCAL, IPv6 only for an address with a peer (else IFA_ADDRESS is the address).
  // Read in place like parseRoute: every pass lists the addresses of every veth.
  let local: string | undefined;
  let address: string | undefined;
  for (let off = 8; off + 4 <= payload.length; ) {
    const len = u16le(payload, off);
    if (len < 4 || off + len > payload.length) break;
    const type = u16le(payload, off + 2) & NLA_TYPE_MASK;
    if (type === IFA.LOCAL) local = ipAt(payload, off + 4, len - 4);
    else if (type === IFA.ADDRESS) address = ipAt(payload, off + 4, len - 4);
    off += (len + 3) & ~3;
  }
  const chosen = local ?? address;
  if (chosen === undefined) return undefined;
  return {
    family,
    ifindex: u32le(payload, 4),
    address: chosen,
    prefixLen: u8(payload, 1),
    scope: scopeName(u8(payload, 3)),
  };
}

// --------------------------------------------------------------------------------------------- routes

/** struct rtmsg (12 bytes). */
function rtmsg(
  af: number,
  dstLen: number,
  table: number,
  protocol: number,
  scope: number,
  type: number,
  flags: number,
): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(af, 0);
  b.writeUInt8(dstLen, 1);
  b.writeUInt8(table < 256 ? table : 0, 4);
  b.writeUInt8(protocol, 5);
  b.writeUInt8(scope, 6);
  b.writeUInt8(type, 7);
  b.writeUInt32LE(flags, 8);
  return b;
}

const typeNumber = (t: RouteInfo['type']): number =>
  t === 'blackhole' ? RTN.BLACKHOLE : t === 'local' ? RTN.LOCAL : RTN.UNICAST;

/** The scope `ip route` would pick: host for local, link for a device route, universe otherwise. */
export function defaultScope(r: RouteInfo): Scope {
  if (r.type === 'local') return 'host';
  if (r.type === 'blackhole') return 'universe';
  return r.gateway === undefined && r.ifindex !== undefined ? 'link' : 'universe';
}

/** "10.244.2.0/24 via 10.0.0.2 dev 5 table 254": the op string of errors. */
export function describeRoute(r: RouteInfo): string {
  let s = r.type === 'blackhole' ? `blackhole ${r.dst}` : r.dst;
  if (r.gateway !== undefined) s += ` via ${r.gateway}`;
  if (r.ifindex !== undefined) s += ` dev #${r.ifindex}`;
  if (r.table !== undefined && r.table !== RT_TABLE_MAIN) s += ` table ${r.table}`;
  return s;
}

/** Writes a dotted quad or an IPv6 address at off (the hot path avoids an intermediate Buffer). */
function writeIp(out: Buffer, off: number, address: string, family: Family): void {
  if (family === 4) {
    let octet = 0;
    let n = 0;
    for (let i = 0; i < address.length; i++) {
      const c = address.charCodeAt(i);
      if (c === 46) {
        out[off + n++] = octet;
        octet = 0;
      } else octet = octet * 10 + c - 48;
    }
    out[off + n] = octet;
  } else out.set(ipToBytes(address), off);
}

/**
 * RTM_NEWROUTE / RTM_DELROUTE body, written into one buffer (bursts encode thousands). For deletes
 * the scope defaults to RT_SCOPE_NOWHERE and the type to unspecified (match any), as iproute2 does;
 * protocol, when given, is part of the match, so a delete tagged with our protocol never removes
 * someone else's route.
 *
 * With nhid, the route points at that nexthop object: the kernel refuses RTA_GATEWAY, RTA_OIF and
 * the onlink flag beside RTA_NH_ID (they belong to the nexthop), so they are left out; r's gateway
 * still decides the default scope.
 */
export function routeBody(r: RouteInfo, forDelete = false, nhid?: number): Body {
  const dst = parsePrefix(r.dst);
  if (dst.family !== r.family) throw new TypeError(`route ${r.dst} is not IPv${r.family}`);
  if (r.gateway !== undefined && familyOf(r.gateway) !== r.family) {
    throw new TypeError(`gateway ${r.gateway} is not IPv${r.family}`);
  }
  if (r.src !== undefined && familyOf(r.src) !== r.family)
    throw new TypeError(`src ${r.src} is not IPv${r.family}`);
  const alen = r.family === 4 ? 4 : 16;
  const table = r.table ?? RT_TABLE_MAIN;
  const scope =
    r.scope !== undefined
      ? scopeNumber(r.scope)
      : forDelete
        ? RT_SCOPE.NOWHERE
        : scopeNumber(defaultScope(r));
  const type = forDelete && r.type === undefined ? RTN.UNSPEC : typeNumber(r.type);
  const viaNexthop = nhid !== undefined;
  const gateway = viaNexthop ? undefined : r.gateway;
  const ifindex = viaNexthop ? undefined : r.ifindex;
  const size =
    12 +
    8 +
    (dst.prefixLen > 0 ? 4 + alen : 0) +
    (gateway !== undefined ? 4 + alen : 0) +
    (ifindex !== undefined ? 8 : 0) +
    (viaNexthop ? 8 : 0) +
    (r.src !== undefined ? 4 + alen : 0) +
    (r.metric !== undefined ? 8 : 0) +
    (r.mtu !== undefined ? 12 : 0);
  const out = zeroed(size);
  out[0] = afOf(r.family);
  out[1] = dst.prefixLen;
  out[4] = table < 256 ? table : 0;
  out[5] = r.protocol ?? 0;
  out[6] = scope;
  out[7] = type;
  putU32le(out, 8, r.onlink === true && !viaNexthop ? RTNH_F_ONLINK : 0);
  let off = 12;
  putAttrHeader(out, off, 8, RTA.TABLE);
  putU32le(out, off + 4, table);
  off += 8;
  const ipAttr = (type: number, address: string): void => {
    putAttrHeader(out, off, 4 + alen, type);
    writeIp(out, off + 4, address, r.family);
    off += 4 + alen;
  };
  const u32 = (type: number, v: number): void => {
    putAttrHeader(out, off, 8, type);
    putU32le(out, off + 4, v);
    off += 8;
  };
  if (dst.prefixLen > 0) ipAttr(RTA.DST, dst.address);
  if (gateway !== undefined) ipAttr(RTA.GATEWAY, gateway);
  if (r.family === 4 && !forDelete) {
    // The next dump reads these back as the strings given here (ipv4-texts.ts).
    if (dst.prefixLen > 0) rememberIpv4PrefixText(r.dst, dst.address, dst.prefixLen);
    if (gateway !== undefined) rememberIpv4Text(gateway);
  }
  if (ifindex !== undefined) u32(RTA.OIF, ifindex);
  if (nhid !== undefined) u32(RTA.NH_ID, nhid);
  if (r.src !== undefined) ipAttr(RTA.PREFSRC, r.src);
  if (r.metric !== undefined) u32(RTA.PRIORITY, r.metric);
  if (r.mtu !== undefined) {
    putAttrHeader(out, off, 12, RTA.METRICS);
    off += 4;
    u32(RTAX.MTU, r.mtu);
  }
  return [out];
}

export function dumpRoutesBody(family?: Family): Body {
  return [rtmsg(family === undefined ? AF.UNSPEC : afOf(family), 0, 0, 0, 0, 0, 0)];
}

/**
 * RTM_NEWROUTE payload -> RouteInfo. Returns undefined for what is not a configured route (other
 * families, cached clones) and for what the port cannot express (multipath, types other than
 * unicast/blackhole/local), unless `keyOfUnreadable`: such a route then comes back by key only
 * (family, dst, protocol, table; RouteInfo.unreadable). `table` is omitted for the main table so a
 * listed route equals the RouteInfo that created it; protocol, scope and type are always set on a
 * readable one. onNexthop hears the id of the nexthop object the route points at (RTA_NH_ID), which
 * RouteInfo does not carry.
 */
export function parseRoute(
  payload: Buffer,
  onNexthop?: (id: number) => void,
  keyOfUnreadable = false,
): RouteInfo | undefined {
  // Bytes read by index, not through Buffer's read methods: a resync parses thousands of routes in
  // an agent without V8's optimizing tiers, where each method call cost more than the parse itself.
  if (payload.length < 12) return undefined;
  const family = familyOfAf(payload[0]!);
  if (family === undefined) return undefined;
  const flags = u32le(payload, 8);
  if ((flags & RTM_F_CLONED) !== 0) return undefined;
  const typeN = payload[7]!;
  const type =
    typeN === RTN.UNICAST
      ? 'unicast'
      : typeN === RTN.BLACKHOLE
        ? 'blackhole'
        : typeN === RTN.LOCAL
          ? 'local'
          : undefined;
  let unreadable = type === undefined;
  if (unreadable && !keyOfUnreadable) return undefined;
  // One walk over the attributes, reading values in place: a resync parses every route of the table,
  // and a Map plus a Buffer view per attribute came to ~13 MB of garbage at 5,000 routes.
  let dst: string | undefined;
  let gateway: string | undefined;
  let ifindex: number | undefined;
  let table = payload[4]!;
  let src: string | undefined;
  let metric: number | undefined;
  let nhid: number | undefined;
  let mtu: number | undefined;
  const end = payload.length;
  for (let off = 12; off + 4 <= end; ) {
    const len = u16le(payload, off);
    if (len < 4 || off + len > end) break;
    const at = off + 4;
    // The u32 attributes are read only when the attribute holds one (a malformed one is skipped).
    const u32 = len >= 8;
    switch (u16le(payload, off + 2) & NLA_TYPE_MASK) {
      case RTA.MULTIPATH:
        if (!keyOfUnreadable) return undefined;
        unreadable = true;
        break;
      case RTA.DST:
        dst = prefixAt(payload, at, len - 4, payload[1]!);
        break;
      case RTA.GATEWAY:
        gateway = ipAt(payload, at, len - 4);
        break;
      case RTA.OIF:
        if (u32) ifindex = u32le(payload, at);
        break;
      case RTA.TABLE:
        if (u32) table = u32le(payload, at);
        break;
      case RTA.PREFSRC:
        src = ipAt(payload, at, len - 4);
        break;
      case RTA.PRIORITY:
        if (u32) metric = u32le(payload, at);
        break;
      case RTA.NH_ID:
        if (u32) nhid = u32le(payload, at);
        break;
      case RTA.METRICS:
        mtu = u32AttrIn(payload, at, off + len, RTAX.MTU); // nested: RTA_METRICS holds RTAX_*
        break;
    }
    off += (len + 3) & ~3;
  }
  dst ??= `${family === 4 ? '0.0.0.0' : '::'}/${payload[1]!}`;
  if (unreadable || type === undefined) {
    const key: RouteInfo = { family, dst, protocol: payload[5]!, unreadable: true };
    if (table !== RT_TABLE_MAIN) key.table = table;
    return key;
  }
  const route: RouteInfo = {
    family,
    dst,
    protocol: payload[5]!,
    scope: scopeName(payload[6]!),
    type,
  };
  if (gateway !== undefined) route.gateway = gateway;
  if (ifindex !== undefined) route.ifindex = ifindex;
  if (table !== RT_TABLE_MAIN) route.table = table;
  if ((flags & RTNH_F_ONLINK) !== 0) route.onlink = true;
  if (src !== undefined) route.src = src;
  if (metric !== undefined) route.metric = metric;
  if (mtu !== undefined) route.mtu = mtu;
  if (nhid !== undefined) onNexthop?.(nhid);
  return route;
}

/**
 * RTM_GETROUTE for one address (no NLM_F_DUMP). fibMatch: the kernel answers with the FIB entry the
 * lookup matched (prefix, every nexthop of a multipath route), else with the resolved result (the one
 * device and gateway a packet would take: a multipath route's nexthop chosen by the flow hash).
 */
export function routeLookupBody(address: string, fibMatch: boolean, reportTable = false): Body {
  const bytes = ipToBytes(address);
  const af = bytes.length === 4 ? AF.INET : AF.INET6;
  const flags = (fibMatch ? RTM_F_FIB_MATCH : 0) | (reportTable ? RTM_F_LOOKUP_TABLE : 0);
  return [rtmsg(af, bytes.length * 8, 0, 0, 0, 0, flags), attr(RTA.DST, bytes)];
}

/** The kernel's answer to routeLookupBody, as far as finding the way out needs it. */
export interface RouteAnswer {
  family: Family;
  /** The route's prefix: the matched entry's with fibMatch ("0.0.0.0/0": the default route). */
  dst: string;
  unicast: boolean;
  /**
   * The devices it sends through, each once, in the route's order: RTA_OIF, or every nexthop's of
   * RTA_MULTIPATH (a multipath route, or one on a nexthop group as nexthop_compat_mode=1 shows it).
   * Empty for a route on a nexthop object the kernel does not expand (nexthop_compat_mode=0).
   */
  ifindexes: number[];
  nexthopId?: number;
  /** rtm_protocol: who put the route there (126 trellis, 4 static, 3 boot, 2 kernel...). */
  protocol: number;
  /** RTA_TABLE, else rtm_table: the table that answered when asked with reportTable (IPv4 says main otherwise). */
  table: number;
  /**
   * The route sends straight to the destination on its one device: no gateway (RTA_GATEWAY, RTA_VIA),
   * no multipath, no nexthop object (whose gateway this answer does not show).
   */
  onLink: boolean;
  /** RTA_MULTIPATH without a nexthop object: several nexthops of a plain route (an ECMP `append`). */
  multipath?: true;
}

export function parseRouteAnswer(payload: Buffer): RouteAnswer | undefined {
  const family = familyOfAf(u8(payload, 0));
  if (family === undefined) return undefined;
  const prefixLen = u8(payload, 1);
  let dst = `${family === 4 ? '0.0.0.0' : '::'}/${prefixLen}`;
  const ifindexes: number[] = [];
  const add = (ifindex: number): void => {
    if (ifindex > 0 && !ifindexes.includes(ifindex)) ifindexes.push(ifindex);
  };
  let nexthopId: number | undefined;
  let viaSomewhere = false;
  let multipath = false;
  for (const [type, value] of decodeAttrs(payload, 12)) {
    if (type === RTA.GATEWAY || type === RTA.VIA) viaSomewhere = true;
    if (type === RTA.DST) dst = `${bytesToIp(value)}/${prefixLen}`;
    else if (type === RTA.OIF && value.length >= 4) add(u32le(value, 0));
    else if (type === RTA.NH_ID && value.length >= 4) nexthopId = u32le(value, 0);
    else if (type === RTA.MULTIPATH) {
      viaSomewhere = true;
      multipath = true;
      // struct rtnexthop { u16 len; u8 flags; u8 hops; s32 ifindex; } then its attributes, 4-aligned.
      for (let off = 0; off + 8 <= value.length; ) {
        const len = u16le(value, off);
        if (len < 8 || off + len > value.length) break;
        add(i32le(value, off + 4));
        off += (len + 3) & ~3;
      }
    }
  }
  const answer: RouteAnswer = {
    family,
    dst,
    unicast: u8(payload, 7) === RTN.UNICAST,
    ifindexes,
    protocol: u8(payload, 5),
    table: routeTable(payload),
    onLink: !viaSomewhere && nexthopId === undefined,
  };
  if (nexthopId !== undefined) answer.nexthopId = nexthopId;
  else if (multipath) answer.multipath = true;
  return answer;
}

/** RTA_NH_ID of a route message: the nexthop object it points at, if any. */
export function routeNexthopId(payload: Buffer): number | undefined {
  return routeU32(payload, RTA.NH_ID);
}

/** Table of a route message without building the whole RouteInfo (dump filtering). */
export function routeTable(payload: Buffer): number {
  return routeU32(payload, RTA.TABLE) ?? u8(payload, 4);
}

/** A u32 attribute of a route message, found without decoding the others. */
function routeU32(payload: Buffer, type: number): number | undefined {
  return u32AttrIn(payload, 12, payload.length, type);
}

/** An address of len bytes at off in buf; IPv4 through the remembered texts, without a view on it. */
function ipAt(buf: Buffer, off: number, len: number): string {
  return len === 4 ? ipv4TextAt(buf, off) : bytesToIp(buf.subarray(off, off + len));
}

/** "address/len" of a route's destination, the same way. */
function prefixAt(buf: Buffer, off: number, len: number, prefixLen: number): string {
  return len === 4
    ? ipv4PrefixTextAt(buf, off, prefixLen)
    : `${bytesToIp(buf.subarray(off, off + len))}/${prefixLen}`;
}

// ------------------------------------------------------------------------------ neighbours and the FDB

/** struct ndmsg (12 bytes). */
function ndmsg(af: number, ifindex: number, state: number, flags: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(af, 0);
  b.writeInt32LE(ifindex, 4);
  b.writeUInt16LE(state, 8);
  b.writeUInt8(flags, 10);
  return b;
}

export function neighbourBody(e: NeighbourEntry, forDelete = false): Body {
  if (familyOf(e.address) !== e.family) throw new TypeError(`neighbour ${e.address} is not IPv${e.family}`);
  const state = e.permanent === false ? NUD.REACHABLE : NUD.PERMANENT;
  const body = [
    ndmsg(afOf(e.family), e.ifindex, forDelete ? 0 : state, 0),
    attr(NDA.DST, ipToBytes(e.address)),
  ];
  if (!forDelete) body.push(attr(NDA.LLADDR, macToBytes(e.mac)));
  return body;
}

export function dumpNeighboursBody(family: number = AF.UNSPEC): Body {
  return [ndmsg(family, 0, 0, 0)];
}

/** Neighbour entries with a link-layer address (incomplete/failed entries have none). */
export function parseNeighbour(payload: Buffer): NeighbourEntry | undefined {
  const family = familyOfAf(u8(payload, 0));
  if (family === undefined) return undefined;
  const a = decodeAttrs(payload, 12);
  const dst = a.get(NDA.DST);
  const ll = a.get(NDA.LLADDR);
  if (dst === undefined || ll === undefined || ll.length !== 6) return undefined;
  return {
    family,
    ifindex: i32le(payload, 4),
    address: bytesToIp(dst),
    mac: bytesToMac(ll),
    permanent: (u16le(payload, 8) & NUD.PERMANENT) !== 0,
  };
}

/** Bridge FDB entry on a VXLAN device: MAC -> remote VTEP (AF_BRIDGE, NTF_SELF, NDA_DST). */
export function fdbBody(e: FdbEntry): Body {
  return [
    ndmsg(AF.BRIDGE, e.ifindex, NUD.PERMANENT, NTF_SELF),
    attr(NDA.LLADDR, macToBytes(e.mac)),
    attr(NDA.DST, ipToBytes(e.dst)),
  ];
}

/** FDB entries that name a remote (NDA_DST); local/bridge-port entries have none and are skipped. */
export function parseFdb(payload: Buffer): FdbEntry | undefined {
  if (u8(payload, 0) !== AF.BRIDGE) return undefined;
  const a = decodeAttrs(payload, 12);
  const dst = a.get(NDA.DST);
  const ll = a.get(NDA.LLADDR);
  if (dst === undefined || ll === undefined || ll.length !== 6) return undefined;
  return { ifindex: i32le(payload, 4), mac: bytesToMac(ll), dst: bytesToIp(dst) };
}
